"""E-mail HTML put together from pieces (``service.wire``): the same document as tracking
the whole rendered HTML, and a quoted-printable body that reads back as it."""

from __future__ import annotations

import binascii
from typing import Any

import pytest
from tests.messaging.conftest import LAYOUT

from tactful.core.security import Signer
from tactful.messaging.channels import qp
from tactful.messaging.service.compiled import (
    CompiledEmail,
    Segmented,
    compile_email,
    compiled_email,
)
from tactful.messaging.service.rendering import Rendered, renderer_for
from tactful.messaging.service.tracking import Links, links_for, track_html
from tactful.messaging.service.wire import assemble, make_plan, render_email

BODY = """<mj-section><mj-column>
<mj-text>Hello {{ customer.first_name | default: "friend" }}, your cart is waiting.</mj-text>
{% for item in event.items %}<mj-text>{{ item.name }}: {{ item.price }} ₽</mj-text>{% endfor %}
<mj-text>{% for item in items %}<a href="{{ item.url }}">{{ item.name }}</a> {% endfor %}</mj-text>
<mj-button href="https://shop.example/cart?c={{ customer.id }}&amp;s=1">Back to the cart</mj-button>
<mj-text><a href="https://shop.example/sale">Sale</a> <a href="mailto:help@shop.example">Help</a>
<a href="#top">Top</a></mj-text>
</mj-column></mj-section>"""
FOOTER = (
    '<a href="{{ links.unsubscribe }}">Unsubscribe</a> · '
    '<a href="{{ links.preferences }}">Preferences</a>'
)
SIGNER = Signer("test")
EVENT = {"items": [{"name": "Rake", "price": 990}, {"name": "Hose", "price": 1490}]}


def _compiled(body: str = BODY) -> CompiledEmail:
    blocks = {"footer": FOOTER}
    compiled = compile_email(
        renderer_for(blocks),
        {"subject": "{{ customer.first_name }}, your cart", "body": body},
        layout=LAYOUT,
        blocks=blocks,
    )
    assert compiled is not None
    assert isinstance(compiled.html, Segmented)
    return compiled


def _links(delivery_id: int) -> Links:
    return links_for(
        SIGNER,
        "http://t.example",
        delivery_id=delivery_id,
        workspace_id=1,
        brand_id=1,
        customer_id=delivery_id,
    )


def _context(n: int, links: Links, **customer: Any) -> dict[str, Any]:
    return {
        "event": EVENT,
        "customer": {"id": n, "first_name": f"Name{n}" * (n % 4), **customer},
        "brand": {"id": 1, "name": "Garden & Co"},
        "links": links.as_context(),
        "message": {"id": n, "channel": "email"},
        "items": [
            {"name": f"Item {i}", "url": f"https://shop.example/p/{i}?n={n}"} for i in range(n % 3)
        ],
    }


def _as_whole(
    compiled: CompiledEmail, context: dict[str, Any], links: Links, *, shared: bytes
) -> tuple[Rendered, bytes]:
    """The message rendered for a send (``shared``), checked against the whole template
    rendered and tracked for the same context: the same document, text and subject, and a
    quoted-printable body that reads back as the document."""
    whole = compiled.render(context)  # rendered whole, no piece shared
    assert whole.html is not None
    rendered, body = render_email(compiled, context, shared=shared, links=links)
    assert rendered.html == qp.crlf(track_html(whole.html, links))
    assert (rendered.text, rendered.subject) == (whole.text, whole.subject)
    assert body is not None
    assert binascii.a2b_qp(body) == rendered.html.encode()
    return rendered, body


@pytest.mark.parametrize("n", range(1, 9))
def test_the_document_is_the_whole_tracked_and_its_body_reads_back_as_it(n: int) -> None:
    compiled = _compiled()
    # the first recipient of a shared context is rendered whole, the plan is made for the next
    first_links = _links(100)
    first, first_body = render_email(
        compiled, _context(100, first_links), shared=b"send-1", links=first_links
    )
    assert first_body is None
    assert first.html == track_html(
        compiled.render(_context(100, first_links)).html or "", first_links
    )
    links = _links(n)

    rendered, body = _as_whole(compiled, _context(n, links), links, shared=b"send-1")

    assert max(len(line) for line in body.split(b"\r\n")) <= 76
    # the cart button, the sale link and the recipient's items go through the redirect
    assert rendered.html.count('href="http://t.example/t/c/') == 2 + n % 3
    assert 'href="mailto:help@shop.example"' in rendered.html
    assert 'href="#top"' in rendered.html
    assert f'href="{links.unsubscribe}"' in rendered.html
    assert rendered.html.count(links.open) == 1


# a recipient's own pieces are plain outputs only: the text's render serves the HTML too
PLAIN_BODY = """<mj-section><mj-column>
<mj-text>Hello {{ customer.first_name | default: "friend" }}, your cart is waiting.</mj-text>
{% for item in event.items %}<mj-text>{{ item.name }}: {{ item.price }} ₽</mj-text>{% endfor %}
<mj-button href="https://shop.example/cart?c={{ customer.id }}">Back to the cart</mj-button>
</mj-column></mj-section>"""


# a first name, and how the HTML greets its holder
GREETINGS = {
    "": "friend",
    "Tom & Jerry": "Tom &amp; Jerry",
    "<b>Bo</b>": "&lt;b&gt;Bo&lt;/b&gt;",
    'Say "hi"': "Say &#34;hi&#34;",
    "O'Neil": "O&#39;Neil",
}


@pytest.mark.parametrize("name", ["Anna", "Ёлка", *GREETINGS])
def test_plain_outputs_render_once_for_text_and_html_unless_escaping_would_change_them(
    name: str,
) -> None:
    compiled = _compiled(PLAIN_BODY)
    assert compiled.same_own is True
    render_email(compiled, _context(50, _links(50)), shared=b"send-3", links=_links(50))
    links = _links(7)

    rendered, _body = _as_whole(
        compiled, _context(7, links, first_name=name), links, shared=b"send-3"
    )

    assert f"Hello {GREETINGS.get(name, name)}, your cart" in rendered.html
    assert f"Hello {name or 'friend'}, your cart" in rendered.text


@pytest.mark.parametrize(
    "output",
    [
        "{{ customer.first_name | upcase }}",
        '{{ customer.first_name | append: "!" }}',
        "{% if customer.id %}{{ customer.first_name }}{% endif %}",
    ],
)
def test_other_markup_in_a_recipients_pieces_is_rendered_for_the_html_apart(output: str) -> None:
    body = PLAIN_BODY.replace('{{ customer.first_name | default: "friend" }}', output)
    compiled = _compiled(body)
    assert compiled.same_own is False


def test_a_send_in_russian_is_tracked_the_same_and_left_to_the_channel_to_encode() -> None:
    compiled, links = (
        _compiled(BODY.replace("your cart is waiting", "ваша корзина ждёт " * 80)),
        _links(5),
    )
    context = _context(5, links)
    whole = compiled.render(context)
    assert whole.html is not None

    render_email(compiled, _context(6, _links(6)), shared=b"send-2", links=_links(6))
    rendered, body = render_email(compiled, context, shared=b"send-2", links=links)

    assert body is None  # base64 suits it better: the channel encodes the whole
    assert rendered.html == qp.crlf(track_html(whole.html, links))


def test_a_recipients_piece_inside_a_tag_other_than_a_link_address_has_no_plan() -> None:
    assert make_plan([False, True, False], ['<p style="color:', '">hi</p>']) is None
    assert make_plan([False, True, False], ['<a href="https://x.example/', '">hi</a>']) is not None
    assert make_plan([False, True, False], ["<p>", "</p>"]) is not None


def test_a_piece_that_would_change_the_tags_is_not_assembled() -> None:
    links = _links(3)
    plan = make_plan([False, True, False], ["<body><p>", "</p></body>"])
    assert plan is not None
    assert assemble(plan, ['<a href="https://x.example/"'], links) is None  # left open
    assert assemble(plan, ["</body>"], links) is None

    assembled = assemble(plan, ['<a href="https://x.example/">x</a>'], links)

    assert assembled is not None
    document, body = assembled
    expected = track_html('<body><p><a href="https://x.example/">x</a></p></body>', links)
    assert document == expected
    assert body is not None
    assert binascii.a2b_qp(body) == document.encode()


def test_a_quote_in_a_link_address_is_not_assembled() -> None:
    plan = make_plan([False, True, False], ['<a href="https://x.example/', '">x</a>'])
    assert plan is not None
    assert assemble(plan, ['a" onclick="x'], _links(4)) is None
    assembled = assemble(plan, ["a?b=1&amp;c=2"], _links(4))
    assert assembled is not None
    assert assembled[0] == track_html('<a href="https://x.example/a?b=1&amp;c=2">x</a>', _links(4))


def test_compiled_templates_are_kept_by_their_sources_not_by_a_template_id() -> None:
    """Two databases served by one process (tests, a restored copy) have templates with the
    same id and version: each gets its own compiled template."""
    blocks = {"footer": FOOTER}
    first = compiled_email(
        renderer_for(blocks), {"subject": "A", "body": PLAIN_BODY}, layout=LAYOUT, blocks=blocks
    )
    second = compiled_email(
        renderer_for(blocks),
        {"subject": "B", "body": PLAIN_BODY.replace("cart", "basket")},
        layout=LAYOUT,
        blocks=blocks,
    )
    again = compiled_email(
        renderer_for(blocks), {"subject": "A", "body": PLAIN_BODY}, layout=LAYOUT, blocks=blocks
    )
    assert first is not None
    assert second is not None
    assert again is first
    context = _context(3, _links(3))
    assert (first.render(context).subject, second.render(context).subject) == ("A", "B")
    assert "basket" in (second.render(context).html or "")
    assert "basket" not in (first.render(context).html or "")
