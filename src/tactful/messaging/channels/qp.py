"""Quoted-printable (RFC 2045) written piece by piece, so that what recipients share is
encoded once.

An e-mail's HTML part is mostly the same for every recipient of a send; only a few pieces
differ (a name, signed links). ``encode`` takes one piece and the column the line so far
has reached, and gives the piece's encoding and the column after it; a piece encoded for
one column is valid wherever a line is at that column, so the shared pieces' encodings
can be kept per column and only the recipient's pieces encoded per message. Every line
holds at most 75 characters before its soft break (``=``), 76 with it; escapes are never
split; whitespace is escaped at the end of a line and at the end of a piece (the next
piece may start a line). Pieces must have CRLF line ends (``crlf``).
"""

from __future__ import annotations

LIMIT = 75  # characters on a line before its soft break
EQUALS = 61
# bytes written as they are, besides "=" (escaped on its own) and CR LF (line ends)
_PLAIN = bytes([9]) + bytes(range(32, 61)) + bytes(range(62, 127))
_KEPT = _PLAIN + b"=\r\n"
_ESCAPES = [bytes([b]) if b in _PLAIN or b in b"\r\n" else b"=%02X" % b for b in range(256)]
_WHITESPACE = {32: b"=20", 9: b"=09"}


def crlf(text: str) -> str:
    """The text with every line end (CR LF, CR or LF) as CR LF."""
    if "\r" in text:
        text = text.replace("\r\n", "\n").replace("\r", "\n")
    return text.replace("\n", "\r\n")


def escape(data: bytes) -> bytes:
    """The bytes with everything but printable ASCII, tabs and line ends escaped, and
    whitespace escaped before a line end and at the end."""
    if data.translate(None, _KEPT):
        data = b"".join([_ESCAPES[b] for b in data])
    else:
        data = data.replace(b"=", b"=3D")
    if b" \r\n" in data or b"\t\r\n" in data:
        lines = data.split(b"\r\n")
        data = b"\r\n".join(_escape_last(line) for line in lines)
    return _escape_last(data)


def _escape_last(line: bytes) -> bytes:
    """The line with its last character escaped when it is a space or a tab."""
    if line and line[-1] in _WHITESPACE:
        return line[:-1] + _WHITESPACE[line[-1]]
    return line


def wrap(escaped: bytes, column: int) -> tuple[bytes, int]:
    """Escaped bytes cut into lines by soft breaks, the first line continuing one that
    holds ``column`` characters; returns the lines and the column after them."""
    out: list[bytes] = []
    for number, line in enumerate(escaped.split(b"\r\n")):
        if number:
            out.append(b"\r\n")
            column = 0
        start, end = 0, len(line)
        while end - start > LIMIT - column:
            cut = start + LIMIT - column
            if cut > start and line[cut - 1] == EQUALS:
                cut -= 1
            elif cut - 1 > start and line[cut - 2] == EQUALS:
                cut -= 2
            out.append(line[start:cut])
            out.append(b"=\r\n")
            start, column = cut, 0
        out.append(line[start:] if start else line)
        column += end - start
    return b"".join(out), column


def encode(text: str, column: int = 0) -> tuple[bytes, int]:
    """A piece of text (CR LF line ends) as quoted-printable from ``column`` on, and the
    column after it."""
    return wrap(escape(text.encode()), column)


def non_ascii(data: bytes) -> int:
    """How many of the bytes are not ASCII."""
    return 0 if data.isascii() else len(data.translate(None, _ASCII))


_ASCII = bytes(range(128))
