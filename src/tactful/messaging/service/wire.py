"""An e-mail's HTML put together from pieces, tracked and encoded for the wire.

A compiled template (``compiled``) renders the pieces that read only the shared context
once per send; the recipient's own pieces are rendered per message. From the shared
pieces this module derives, once, a plan of the finished HTML: the text between the
places that differ per message (the recipient's pieces, links that the click redirect
signs per message, the open pixel), with that text's quoted-printable encoding kept per
column it starts at. A message then costs only its own pieces: they are put in place,
their links signed and encoded (``channels.qp``), and the HTML part's encoded body is
joined from the kept encodings and theirs.

The result is the document ``track_html`` makes of the whole rendered HTML, with CR LF
line ends. The first recipient of a shared context is rendered whole; the plan is made for
the second. A
template whose recipient's pieces sit inside a tag other than in a link's address (a
personal ``style``, say) has no plan, and a message whose pieces would change the
document's tags (a piece that opens a tag and leaves it open, a quote in a link's
address) is not assembled: both are rendered, tracked and encoded whole as before.
"""

from __future__ import annotations

import re
import threading
import weakref
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any

from tactful.messaging.channels import qp
from tactful.messaging.channels.email import prefers_base64
from tactful.messaging.service.compiled import CompiledEmail, Segmented, SharedPieces
from tactful.messaging.service.rendering import Rendered
from tactful.messaging.service.tracking import (
    LINK_OPENING,
    WEB_ADDRESS,
    Links,
    pixel,
    track_html,
    track_links,
    tracked_address,
)

# any link's address, and whether one is tracked (the rules of ``tracking.HREF``)
HREF_VALUE = re.compile(rf'{LINK_OPENING}([^"]*)"', re.IGNORECASE)
WEB = re.compile(WEB_ADDRESS, re.IGNORECASE)
MARK = "\x00{}\x00"  # a recipient's piece in the plan's text (no rendered piece holds NUL)
MARKS = re.compile(r"\x00(\d+)\x00")
ESCAPED = re.compile("[&<>\"']")  # what HTML escaping changes

# what a step of a plan puts in the document
TEXT, OWN, LINK, PIXEL = range(4)


@dataclass
class Plan:
    """The finished HTML of one send's shared pieces, with the places that differ per
    message. Steps: ``(TEXT, index of a constant)``, ``(OWN, index of a recipient's
    piece)``, ``(LINK, parts of the address: constants and indexes of pieces)``,
    ``(PIXEL, None)``."""

    steps: list[tuple[int, Any]]
    constants: list[str]
    size: int  # bytes of the constants
    non_ascii: int  # of which not ASCII
    # a constant's quoted-printable encoding by the column it starts at: (bytes, column after)
    encoded: dict[tuple[int, int], tuple[bytes, int]] = field(default_factory=dict)

    def encoding(self, index: int, column: int) -> tuple[bytes, int]:
        found = self.encoded.get((index, column))
        if found is None:
            found = self.encoded[(index, column)] = qp.encode(self.constants[index], column)
        return found


_PLANS: weakref.WeakKeyDictionary[SharedPieces, Plan | None] = weakref.WeakKeyDictionary()
_SEEN_ONCE: weakref.WeakSet[SharedPieces] = weakref.WeakSet()
_LOCK = threading.Lock()


def plan_for(template: Segmented, shared: SharedPieces) -> Plan | None:
    """The plan of a send's shared pieces (kept as long as they are), or None. A plan is
    made when a second recipient shares them: a context only one recipient has (a
    triggered message's own event) costs no more than rendering whole."""
    with _LOCK:
        if shared in _PLANS:
            return _PLANS[shared]
        if shared not in _SEEN_ONCE:
            _SEEN_ONCE.add(shared)
            return None
    found = make_plan(template.own, shared.values)
    with _LOCK:
        _PLANS[shared] = found
        _SEEN_ONCE.discard(shared)
    return found


def make_plan(own: list[bool], values: list[str]) -> Plan | None:
    """The plan of a document made of pieces (``own``: the recipient's) whose shared ones
    are ``values``; None when a recipient's piece sits inside a tag but in a link's
    address."""
    theirs, count = iter(values), 0
    pieces = []
    for is_own in own:
        if is_own:
            pieces.append(MARK.format(count))
            count += 1
        else:
            pieces.append(next(theirs))
    text = qp.crlf("".join(pieces))
    places: list[tuple[int, int, int, Any]] = []  # start, end, kind, what
    for match in HREF_VALUE.finditer(text):
        address = match.group(2)
        parts: list[str | int] = []
        for number, part in enumerate(MARKS.split(address)):
            if number % 2:
                parts.append(int(part))
            elif part:
                parts.append(part)
        if len(parts) == 1 and isinstance(parts[0], str) and not WEB.match(address):
            continue  # a constant address that is not tracked (mailto:, a page anchor …)
        places.append((match.start(2), match.end(2), LINK, tuple(parts)))
    in_links = [(start, end) for start, end, _kind, _what in places]
    for match in MARKS.finditer(text):
        if any(start <= match.start() < end for start, end in in_links):
            continue
        if text.rfind("<", 0, match.start()) > text.rfind(">", 0, match.start()):
            return None  # inside a tag: the document's tags would depend on the recipient
        places.append((match.start(), match.end(), OWN, int(match.group(1))))
    body_end = text.find("</body>")
    at = body_end if body_end >= 0 else len(text)
    if any(start < at < end for start, end, _kind, _what in places):
        return None
    places.append((at, at, PIXEL, None))
    places.sort(key=lambda place: (place[0], place[2] != PIXEL))
    steps: list[tuple[int, Any]] = []
    constants: list[str] = []
    position = 0
    for start, end, kind, what in places:
        if start > position:
            steps.append((TEXT, len(constants)))
            constants.append(text[position:start])
        steps.append((kind, what))
        position = end
    if position < len(text):
        steps.append((TEXT, len(constants)))
        constants.append(text[position:])
    data = "".join(constants).encode()
    return Plan(steps, constants, len(data), qp.non_ascii(data))


def assemble(plan: Plan, mine: list[str], links: Links) -> tuple[str, bytes | None] | None:
    """One message's tracked HTML and, when quoted-printable suits it, the HTML part's
    encoded body; None when its pieces would change the document's tags."""
    pieces: list[str] = []
    constant: list[int | None] = []
    for kind, what in plan.steps:
        if kind == TEXT:
            pieces.append(plan.constants[what])
            constant.append(what)
            continue
        if kind == OWN:
            value = qp.crlf(mine[what])
            if "<" in value or "</body>" in value:
                if value.rfind("<") > value.rfind(">") or "</body>" in value:
                    return None
                value = track_links(value, links)
        elif kind == LINK:
            address = "".join(part if isinstance(part, str) else mine[part] for part in what)
            if '"' in address or "\r" in address or "\n" in address:
                return None
            value = tracked_address(address, links) if WEB.match(address) else address
        else:
            value = pixel(links)
        pieces.append(value)
        constant.append(None)
    document = "".join(pieces)
    # the recipient's pieces as bytes: whether quoted-printable suits the whole, and theirs
    own = [
        piece.encode() if index is None else b""
        for piece, index in zip(pieces, constant, strict=True)
    ]
    size = plan.size + sum(map(len, own))
    if prefers_base64(plan.non_ascii + sum(map(qp.non_ascii, own)), size):
        return document, None
    out: list[bytes] = []
    column = 0
    for data, index in zip(own, constant, strict=True):
        if index is None:
            chunk, column = qp.wrap(qp.escape(data), column)
        else:
            chunk, column = plan.encoding(index, column)
        out.append(chunk)
    return document, b"".join(out)


def render_email(
    compiled: CompiledEmail, context: Mapping[str, Any], *, shared: bytes, links: Links
) -> tuple[Rendered, bytes | None]:
    """The e-mail for one recipient with its links tracked and the open pixel in, and the
    HTML part's quoted-printable body when it was put together from pieces (None: the
    channel encodes ``html`` itself)."""
    template = compiled.html
    if isinstance(template, Segmented) and shared:
        text_split = None
        if compiled.same_own and isinstance(compiled.text, Segmented):
            text_split = compiled.text.split(context, shared)
        # the text's own pieces are the HTML's when HTML escaping would not change them
        reused = None
        if text_split is not None and not ESCAPED.search("".join(text_split[0])):
            reused = text_split[0]
        split = template.split(context, shared, mine=reused)
        if split is not None:
            mine, common = split
            plan = plan_for(template, common)
            assembled = assemble(plan, mine, links) if plan is not None else None
            if assembled is not None and compiled.text is not None:
                # the untracked document is needed only to derive a text part
                tracked, body = assembled
                finished = compiled.finish(tracked, context, shared=shared, text_split=text_split)
                return finished, body
            document = template.join(mine, common)
            rendered = compiled.finish(document, context, shared=shared, text_split=text_split)
            if assembled is not None:
                rendered.html, body = assembled
                return rendered, body
            rendered.html = track_html(document, links)
            return rendered, None
    rendered = compiled.render(context, shared=shared)
    assert rendered.html is not None
    rendered.html = track_html(rendered.html, links)
    return rendered, None
