"""Quoted-printable written piece by piece (``channels.qp``)."""

from __future__ import annotations

import binascii

from hypothesis import given
from hypothesis import strategies as st

from tactful.messaging.channels import qp

CHARACTERS = st.one_of(
    st.sampled_from(list("= \t\r\n.aZ09é₽\x00\x7f")), st.characters(codec="utf-8")
)
PIECES = st.lists(st.text(alphabet=CHARACTERS, max_size=300), max_size=6)


def _check_lines(encoded: bytes) -> None:
    for line in encoded.split(b"\r\n"):
        assert len(line) <= 76, line
        assert not line.endswith((b" ", b"\t")), line
        assert all(b == 9 or 32 <= b < 127 for b in line), line


@given(pieces=PIECES, column=st.integers(min_value=0, max_value=75))
def test_pieces_encoded_one_after_another_read_back_as_the_whole(
    pieces: list[str], column: int
) -> None:
    before = b"x" * column  # what the line already holds
    out, at = [before], column
    for piece in pieces:
        chunk, at = qp.encode(qp.crlf(piece), at)
        out.append(chunk)
    encoded = b"".join(out)
    assert binascii.a2b_qp(encoded) == before + qp.crlf("".join(pieces)).encode()
    _check_lines(encoded)
    assert at == len(encoded.rpartition(b"\r\n")[2])


@given(text=st.text(alphabet=CHARACTERS, max_size=2000))
def test_one_piece_takes_as_many_lines_as_the_standard_library(text: str) -> None:
    encoded, _column = qp.encode(qp.crlf(text))
    reference = binascii.b2a_qp(qp.crlf(text).encode(), istext=True)
    assert binascii.a2b_qp(encoded) == binascii.a2b_qp(reference)
    # our last line of a paragraph holds at most 75 characters, the standard library's 76
    lines = qp.crlf(text).count("\r\n") + 1
    # (the standard library ends soft breaks with LF alone in text without CR LF)
    assert encoded.count(b"\n") <= reference.count(b"\n") + lines


def test_escapes_are_never_cut_and_whitespace_never_ends_a_line() -> None:
    encoded, column = qp.encode("=" * 100 + " \r\nend\t")
    assert encoded == (b"=3D" * 25 + b"=\r\n") * 4 + b"=20\r\nend=09"
    assert column == len("end=09")
    # a line at column 74 can take one plain character, but no escape
    assert qp.encode("a=", 74) == (b"a=\r\n=3D", 3)
    assert qp.encode("=", 75) == (b"=\r\n=3D", 3)


def test_line_ends_become_crlf() -> None:
    assert qp.crlf("a\nb\r\nc\rd") == "a\r\nb\r\nc\r\nd"
    assert qp.encode("€\r\n") == (b"=E2=82=AC\r\n", 0)
