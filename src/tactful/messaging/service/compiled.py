"""E-mail templates compiled once per version: what is the same for every recipient is done
once, and each message only runs Liquid.

The master layout, the message body and the blocks are put together as one MJML document
whose Liquid markup is swapped for inert tokens; MJML turns it into HTML once; the markup
is put back, giving one Liquid template of the finished HTML. Markup that sits between MJML
elements (a ``{% for %}`` around sections or texts) is carried through MJML in an
``<mj-raw>``, which MJML emits as it is. The plain-text part is derived from that HTML once,
as a Liquid template too. When MJML moves or drops a token, or the template uses Liquid that
cannot be carried this way, compiling gives up and each message is rendered whole (Liquid,
then MJML) as before.
"""

from __future__ import annotations

import re
import threading
from collections import OrderedDict
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

from liquid import BoundTemplate
from liquid.exceptions import LiquidError
from mjml import mjml2html

from tactful.messaging.service.rendering import (
    LIQUID_MARKUP,
    Rendered,
    Renderer,
    html_to_text,
    tidy_text,
    wrap_mjml,
)

TOKEN = "LQ{:05d}QL"  # noqa: S105 - a placeholder, not a secret
TOKEN_RE = re.compile(r"LQ(\d{5})QL")
# MJML elements whose content is HTML that MJML keeps as written
ENDING = re.compile(
    r"<(/?)(mj-text|mj-button|mj-raw|mj-table|mj-navbar-link|mj-accordion-title|"
    r"mj-accordion-text|mj-social-element|mj-title|mj-preview|mj-style)\b[^>]*?(/?)>",
    re.IGNORECASE,
)
RENDER_TAG = re.compile(r"\{%-?\s*render\s+(['\"])([\w\-]+)\1\s*-?%\}")
CONTENT_TAG = re.compile(r"\{\{-?\s*content\s*-?\}\}")
# markup whose meaning a token cannot carry: raw text, comments, partials with arguments
UNSUPPORTED = re.compile(r"\{%-?\s*(raw|comment|render|include)\b|\{#")
MAX_NESTING = 4


# variables that differ from one recipient to the next; everything else in a message's
# context (the triggering event, products, the brand) is shared by a send's recipients
PER_RECIPIENT = re.compile(r"(?<![\w.])(customer|links|message|items|forloop)\b")
BLOCK_TAG = re.compile(r"\{%-?\s*(end)?(\w+)")
BLOCKS = frozenset({"for", "if", "unless", "case", "tablerow"})
# tags whose effect outlives their own output: a template using them is rendered whole
STATEFUL = frozenset({"assign", "capture", "increment", "decrement", "cycle", "liquid"})
SHARED_RENDERS = 64
SEPARATOR = "\x00"
# an output of a variable, or of a variable with a quoted default: the only markup whose
# value is the same with and without autoescape, but for the escaping itself (other filters,
# ``append`` say, escape their arguments when autoescape is on)
PLAIN_OUTPUT = re.compile(
    r"""\{\{-?\s*[A-Za-z_][\w-]*(?:\.[A-Za-z_][\w-]*)*"""
    r"""(?:\s*\|\s*default\s*:\s*(?:"[^"{}|]*"|'[^'{}|]*'))?\s*-?\}\}"""
)


class SharedPieces:
    """The pieces of a segmented template that read only the shared context, rendered
    once for it (what is derived from them may be kept against this object)."""

    def __init__(self, values: list[str]) -> None:
        self.values = values


class Segmented:
    """A Liquid template cut at its top level into pieces that use a recipient's own
    variables and pieces that do not. The latter are rendered once per shared context, the
    former for each recipient, all pieces of a kind in one render (joined by a separator
    no rendered value holds; if one does, the whole template is rendered instead)."""

    def __init__(
        self,
        whole: BoundTemplate,
        own: list[bool],
        per_recipient: BoundTemplate,
        shared: BoundTemplate,
        own_source: str = "",
    ) -> None:
        self.whole = whole
        self.own = own
        self.per_recipient = per_recipient
        self.shared = shared
        self.own_source = own_source  # the source of ``per_recipient``
        self._done: OrderedDict[bytes, SharedPieces] = OrderedDict()
        self._lock = threading.Lock()

    def render(self, context: Mapping[str, Any], shared: bytes) -> str:
        """Render for one recipient; ``shared`` identifies the context's shared part (empty:
        unknown, render the whole template)."""
        split = self.split(context, shared) if shared else None
        if split is None:
            return self.whole.render(**context)
        return self.join(*split)

    def split(
        self, context: Mapping[str, Any], shared: bytes, *, mine: list[str] | None = None
    ) -> tuple[list[str], SharedPieces] | None:
        """The recipient's own pieces and the shared ones, in the template's order within
        each kind (None: a rendered value holds the separator). ``mine``: the own pieces,
        rendered already (by a template of the same own source)."""
        with self._lock:
            done = self._done.get(shared)
        if done is None:
            done = SharedPieces(self.shared.render(**context).split(SEPARATOR))
            with self._lock:
                self._done[shared] = done
                while len(self._done) > SHARED_RENDERS:
                    self._done.popitem(last=False)
        if mine is None:
            mine = self.per_recipient.render(**context).split(SEPARATOR)
        if len(mine) != self.own.count(True) or len(done.values) != self.own.count(False):
            return None
        return mine, done

    def join(self, mine: list[str], shared: SharedPieces) -> str:
        """The document from its pieces."""
        own, theirs = iter(mine), iter(shared.values)
        return "".join(next(own) if is_own else next(theirs) for is_own in self.own)


def segment(renderer: Renderer, source: str, *, escape: bool) -> Segmented | BoundTemplate | None:
    """The source cut into pieces (or one template when it cannot be cut; None when it
    does not parse)."""
    try:
        whole = renderer.parse(source, escape=escape)
    except LiquidError:
        return None
    pieces: list[tuple[int, int]] = []
    depth, start = 0, 0
    for match in LIQUID_MARKUP.finditer(source):
        tag = BLOCK_TAG.match(match.group(0))
        if tag is not None and tag.group(2) in STATEFUL:
            return whole
        if tag is not None and tag.group(2) in BLOCKS:
            if tag.group(1):
                depth -= 1
                if depth == 0:
                    pieces.append((start, match.end()))
                    start = match.end()
            else:
                if depth == 0:
                    pieces.append((start, match.start()))
                    start = match.start()
                depth += 1
        elif depth == 0 and match.group(0).startswith("{{"):
            pieces.extend([(start, match.start()), (match.start(), match.end())])
            start = match.end()
    pieces.append((start, len(source)))
    if depth != 0:
        return whole
    merged: list[tuple[bool, str]] = []
    for low, high in pieces:
        text = source[low:high]
        own = any(PER_RECIPIENT.search(m.group(0)) for m in LIQUID_MARKUP.finditer(text))
        if merged and merged[-1][0] == own:
            merged[-1] = (own, merged[-1][1] + text)
        elif text:
            merged.append((own, text))
    try:
        own_source = SEPARATOR.join(t for own, t in merged if own)
        return Segmented(
            whole,
            [own for own, _text in merged],
            renderer.parse(own_source, escape=escape),
            renderer.parse(SEPARATOR.join(t for own, t in merged if not own), escape=escape),
            own_source,
        )
    except LiquidError:  # the pieces of a kind together do not parse (whitespace control …)
        return whole


def _render(template: Segmented | BoundTemplate, context: Mapping[str, Any], shared: bytes) -> str:
    if isinstance(template, Segmented):
        return template.render(context, shared)
    return template.render(**context)


@dataclass(frozen=True)
class CompiledEmail:
    """An e-mail part ready to render per recipient with Liquid only."""

    subject: BoundTemplate
    html: Segmented | BoundTemplate
    # None: the text part is generated from each message's HTML
    text: Segmented | BoundTemplate | None
    own_text: bool
    # the HTML's and the text's own pieces have the same source, plain outputs only: the
    # text's render serves the HTML too when its values hold nothing HTML escapes
    same_own: bool = False

    def render(self, context: Mapping[str, Any], *, shared: bytes = b"") -> Rendered:
        """The message for one recipient. ``shared`` names the part of the context that
        recipients share (e.g. its JSON without the recipient's own variables); pieces
        that read only that part are rendered once for it. Empty: render everything."""
        return self.finish(_render(self.html, context, shared), context, shared=shared)

    def finish(
        self,
        document: str,
        context: Mapping[str, Any],
        *,
        shared: bytes,
        text_split: tuple[list[str], SharedPieces] | None = None,
    ) -> Rendered:
        """The message around its rendered HTML: the text part (from ``text_split``, the
        text's pieces split already, if given) and the subject."""
        if self.text is None:
            text = html_to_text(document)
        else:
            if text_split is not None and isinstance(self.text, Segmented):
                raw = self.text.join(*text_split)
            else:
                raw = _render(self.text, context, shared)
            text = raw.strip() if self.own_text else tidy_text(raw)
        subject = self.subject.render(**context).strip()
        return Rendered("email", text=text, subject=subject, html=document)


def inline_source(body: str, layout: str | None, blocks: Mapping[str, str]) -> str | None:
    """The body inside its layout with blocks written in place (None: cannot be inlined)."""
    source = body
    if layout:
        if len(CONTENT_TAG.findall(layout)) != 1:
            return None
        source = CONTENT_TAG.sub(lambda _m: body, layout)
    for _ in range(MAX_NESTING):
        if not RENDER_TAG.search(source):
            break
        missing = [m.group(2) for m in RENDER_TAG.finditer(source) if m.group(2) not in blocks]
        if missing:
            return None
        source = RENDER_TAG.sub(lambda m: blocks[m.group(2)], source)
    if UNSUPPORTED.search(source):
        return None
    return source


def _protect(document: str) -> tuple[str, list[str]] | None:
    """The document with each piece of Liquid markup replaced by a token."""
    events = sorted(
        [(m.start(), "markup", m) for m in LIQUID_MARKUP.finditer(document)]
        + [(m.start(), "ending", m) for m in ENDING.finditer(document)],
        key=lambda e: e[0],
    )
    markup: list[str] = []
    pieces: list[str] = []
    depth, last = 0, 0
    for start, kind, match in events:
        if start < last:
            continue  # inside markup already replaced (an MJML tag written in a Liquid string)
        if kind == "ending":
            closing, self_closing = bool(match.group(1)), bool(match.group(3))
            if not self_closing:
                depth = max(0, depth - 1) if closing else depth + 1
            continue
        text = match.group(0)
        token = TOKEN.format(len(markup))
        markup.append(text)
        pieces.append(document[last:start])
        so_far = "".join(pieces)  # tokens hold no angle brackets, Liquid markup may
        in_tag = so_far.rfind("<") > so_far.rfind(">")
        if in_tag or depth > 0:
            pieces.append(token)
        elif text.startswith("{%"):
            pieces.append(f"<mj-raw>{token}</mj-raw>")
        else:
            return None  # output between MJML elements would itself be MJML
        last = match.end()
    pieces.append(document[last:])
    return "".join(pieces), markup


def compile_email(
    renderer: Renderer, part: Mapping[str, str], *, layout: str | None, blocks: Mapping[str, str]
) -> CompiledEmail | None:
    """Compile an e-mail part once, or None when it must be rendered whole per message."""
    source = inline_source(part.get("body", ""), layout, blocks)
    if source is None:
        return None
    document = source if "<mjml" in source else wrap_mjml(source)
    if TOKEN_RE.search(document):
        return None
    protected = _protect(document)
    if protected is None:
        return None
    tokens, markup = protected
    try:
        html = mjml2html(tokens)
    except Exception:  # mjml raises plain exceptions; validation reports them
        return None
    if [int(m.group(1)) for m in TOKEN_RE.finditer(html)] != list(range(len(markup))):
        return None  # MJML moved or dropped markup

    def restore(text: str) -> str:
        return TOKEN_RE.sub(lambda m: markup[int(m.group(1))], text)

    compiled_html = segment(renderer, restore(html), escape=True)
    try:
        subject = renderer.parse(part.get("subject", ""), escape=False)
    except LiquidError:
        return None
    if compiled_html is None:
        return None
    own_text = bool(part.get("text"))
    source = part["text"] if own_text else restore(html_to_text(html, is_link=_is_link))
    text = segment(renderer, source, escape=False)
    same_own = (
        isinstance(compiled_html, Segmented)
        and isinstance(text, Segmented)
        and compiled_html.own_source == text.own_source != ""
        and all(PLAIN_OUTPUT.fullmatch(m.group(0)) for m in LIQUID_MARKUP.finditer(text.own_source))
    )
    return CompiledEmail(
        subject=subject, html=compiled_html, text=text, own_text=own_text, same_own=same_own
    )


def _is_link(href: str) -> bool:
    return href.startswith(("http://", "https://")) or TOKEN_RE.fullmatch(href) is not None


_COMPILED: OrderedDict[tuple[Any, ...], CompiledEmail | None] = OrderedDict()
_LOCK = threading.Lock()


def compiled_email(
    renderer: Renderer,
    part: Mapping[str, str],
    *,
    layout: str | None,
    blocks: Mapping[str, str],
) -> CompiledEmail | None:
    """``compile_email`` cached in this process under what it compiles (the sources, not a
    template's id and version: a process may serve more than one database, whose templates
    share ids)."""
    key = (tuple(sorted(part.items())), layout, tuple(sorted(blocks.items())))
    with _LOCK:
        if key in _COMPILED:
            _COMPILED.move_to_end(key)
            return _COMPILED[key]
    found = compile_email(renderer, part, layout=layout, blocks=blocks)
    with _LOCK:
        _COMPILED[key] = found
        while len(_COMPILED) > 256:
            _COMPILED.popitem(last=False)
    return found
