"""The MIME an e-mail goes out as: each text part in the smaller transfer encoding
(quoted-printable for mostly-ASCII text, base64 for Cyrillic), lines within SMTP's limit,
and the parts read back exactly by the standard library's parser."""

from __future__ import annotations

import binascii
import email
import email.policy
from email.message import EmailMessage

import pytest

from tactful.messaging.channels.base import OutboundMessage, Sender
from tactful.messaging.channels.email import build_email

ENGLISH = "Hello Anna,\nyour cart is waiting: garden hose, 2 × 1,490 RUB.\n" * 40
RUSSIAN = "Здравствуйте, Анна!\nВ корзине ждут: садовый шланг, 2 × 1 490 ₽.\n" * 40


def _built(text: str, html: str | None) -> tuple[bytes, EmailMessage]:
    raw = build_email(
        OutboundMessage(
            delivery_id=1,
            channel="email",
            address="anna@example.com",
            idempotency_key="d1-k",
            sender=Sender(address="news@shop.example", name="Сад и огород"),
            text=text,
            subject="Корзина ждёт",
            html=html,
        ),
        dkim_config=None,
    )
    parsed = email.message_from_bytes(raw, policy=email.policy.default)
    assert isinstance(parsed, EmailMessage)
    return raw, parsed


def _crlf(text: str) -> str:
    return "\n".join(text.splitlines()) + "\n"


@pytest.mark.parametrize(("text", "encoding"), [(ENGLISH, "quoted-printable"), (RUSSIAN, "base64")])
def test_each_part_in_the_smaller_encoding_reads_back_exactly(text: str, encoding: str) -> None:
    html = "<html><body>" + text.replace("\n", "<br>\n") + "</body></html>"
    raw, parsed = _built(text, html)
    plain_part, html_part = parsed.iter_parts()
    for part, original in ((plain_part, text), (html_part, html)):
        assert part["Content-Transfer-Encoding"] == encoding
        assert part.get_content_charset() == "utf-8"
        assert _crlf(part.get_content()) == _crlf(original)
    assert all(len(line) <= 78 for line in raw.split(b"\r\n"))
    assert b"\n" not in raw.replace(b"\r\n", b"")


def test_russian_is_smaller_in_base64_than_it_would_be_in_quoted_printable() -> None:
    raw, parsed = _built(RUSSIAN, None)
    assert parsed["Content-Transfer-Encoding"] == "base64"
    assert _crlf(parsed.get_content()) == _crlf(RUSSIAN)
    body = raw.split(b"\r\n\r\n", 1)[1]
    data = "\r\n".join(RUSSIAN.splitlines()).encode()
    assert len(body) < len(binascii.b2a_qp(data, istext=True)) * 3 // 4
