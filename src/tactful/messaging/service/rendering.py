"""Rendering without the database: Liquid for content, MJML for e-mail layout, the generated
plain-text part, template validation (syntax errors with line and column, unknown
variables), and the content-reads-as-a-test check."""

from __future__ import annotations

import html
import re
import threading
from collections import OrderedDict
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from html.parser import HTMLParser
from typing import Any

from liquid import BoundTemplate, DictLoader, Environment, Markup
from liquid.exceptions import LiquidError
from mjml import mjml2html

# Which fields each channel's part has (Liquid sources). E-mail ``body`` is MJML.
PART_FIELDS: dict[str, tuple[str, ...]] = {
    "email": ("subject", "body", "text"),
    "sms": ("text",),
    "push": ("title", "text", "image", "url"),
    "viber": ("text", "image"),
    "telegram": ("text", "image"),
    "webhook": ("subject", "text"),
    "call": ("text",),
}
REQUIRED_FIELDS: dict[str, tuple[str, ...]] = {
    "email": ("subject", "body"),
    "push": ("title", "text"),
}
HTML_FIELDS = frozenset({("email", "body")})
LAYOUT_FIELD = "body"

# The variables a template may use: everything else is flagged.
CUSTOMER_FIELDS = frozenset(
    {
        "id",
        "first_name",
        "last_name",
        "name",
        "gender",
        "birthday",
        "age",
        "city",
        "locale",
        "timezone",
        "email",
        "phone",
        "attributes",
    }
)
ROOTS = frozenset({"customer", "event", "products", "items", "brand", "links", "message"})
LINKS = frozenset({"unsubscribe", "preferences"})
LAYOUT_ROOTS = ROOTS | {"content"}

TEST_WORDS = re.compile(
    r"(?<![\w-])(test|testing|tests|тест\w*|проверка|do not send|не отправлять)(?![\w-])",
    re.IGNORECASE,
)
LIQUID_MARKUP = re.compile(r"\{\{.*?\}\}|\{%.*?%\}", re.DOTALL)
TAGS = re.compile(r"<[^>]+>")
BLANK_LINES = re.compile(r"\n{3,}")


@dataclass(frozen=True)
class Problem:
    """A syntax error or an unknown variable, with where it is."""

    part: str
    field: str
    message: str
    line: int | None = None
    column: int | None = None
    variable: str | None = None

    def as_dict(self) -> dict[str, Any]:
        return {
            "field": f"parts.{self.part}.{self.field}" if self.part else self.field,
            "reason": self.message,
            "line": self.line,
            "column": self.column,
            **({"variable": self.variable} if self.variable else {}),
        }


def line_column(source: str, index: int) -> tuple[int, int]:
    """1-based line and column of a character offset."""
    index = max(0, min(index, len(source)))
    line = source.count("\n", 0, index) + 1
    column = index - (source.rfind("\n", 0, index) + 1) + 1
    return line, column


def _environments(blocks: Mapping[str, str]) -> tuple[Environment, Environment]:
    loader = DictLoader(dict(blocks))
    return Environment(autoescape=True, loader=loader), Environment(loader=loader)


class Renderer:
    """Parsed templates for one brand's set of blocks (parsing happens once per source)."""

    def __init__(self, blocks: Mapping[str, str]) -> None:
        self.html_env, self.text_env = _environments(blocks)
        self._parsed: OrderedDict[tuple[bool, str], BoundTemplate] = OrderedDict()
        self._lock = threading.Lock()

    def parse(self, source: str, *, escape: bool) -> BoundTemplate:
        key = (escape, source)
        with self._lock:
            found = self._parsed.get(key)
            if found is not None:
                return found
        template = (self.html_env if escape else self.text_env).from_string(source)
        with self._lock:
            self._parsed[key] = template
            while len(self._parsed) > 512:
                self._parsed.popitem(last=False)
        return template

    def render(self, source: str, context: Mapping[str, Any], *, escape: bool = False) -> str:
        return self.parse(source, escape=escape).render(**context)


_RENDERERS: OrderedDict[tuple[tuple[str, str], ...], Renderer] = OrderedDict()
_RENDERERS_LOCK = threading.Lock()


def renderer_for(blocks: Mapping[str, str]) -> Renderer:
    """A shared renderer for a set of blocks (kept while the blocks stay the same)."""
    key = tuple(sorted(blocks.items()))
    with _RENDERERS_LOCK:
        found = _RENDERERS.get(key)
        if found is None:
            found = _RENDERERS[key] = Renderer(blocks)
            while len(_RENDERERS) > 64:
                _RENDERERS.popitem(last=False)
        return found


@dataclass
class Rendered:
    """One channel's rendered message."""

    channel: str
    text: str
    subject: str | None = None
    html: str | None = None
    title: str | None = None
    data: dict[str, Any] = field(default_factory=dict)


def render_part(
    renderer: Renderer,
    channel: str,
    part: Mapping[str, str],
    context: Mapping[str, Any],
    *,
    layout: str | None = None,
) -> Rendered:
    """Render a template's part for one channel."""

    def text_of(name: str) -> str:
        source = part.get(name)
        return renderer.render(source, context).strip() if source else ""

    if channel == "email":
        body = renderer.render(part.get("body", ""), context, escape=True)
        if layout:
            body = renderer.render(layout, {**context, "content": Markup(body)}, escape=True)
        document = mjml2html(body if "<mjml" in body else wrap_mjml(body))
        text = text_of("text") or html_to_text(document)
        return Rendered(channel, text=text, subject=text_of("subject"), html=document)
    data = {name: value for name in ("image", "url") if (value := text_of(name)) and name in part}
    return Rendered(
        channel,
        text=text_of("text"),
        subject=text_of("subject") or None,
        title=text_of("title") or None,
        data=data,
    )


def wrap_mjml(body: str) -> str:
    """A body of MJML sections becomes a whole MJML document."""
    if "<mj-body" in body:
        return f"<mjml>{body}</mjml>"
    return f"<mjml><mj-body>{body}</mj-body></mjml>"


def _is_web_link(href: str) -> bool:
    return href.startswith(("http://", "https://"))


class _TextExtractor(HTMLParser):
    """The readable text of an HTML e-mail, with links as ``label (url)``."""

    BLOCK = frozenset(
        {"p", "div", "br", "tr", "h1", "h2", "h3", "h4", "h5", "h6", "li", "table", "hr"}
    )
    SKIP = frozenset({"style", "script", "head", "title"})

    def __init__(self, is_link: Callable[[str], bool] = _is_web_link) -> None:
        super().__init__(convert_charrefs=True)
        self.is_link = is_link
        self.out: list[str] = []
        self.skip = 0
        self.href: list[str | None] = []
        self.label_start: list[int] = []

    def handle_starttag(self, tag: str, attrs: list[tuple[str, str | None]]) -> None:
        if tag in self.SKIP:
            self.skip += 1
        elif tag in self.BLOCK:
            self.out.append("\n")
        if tag == "a":
            self.href.append(dict(attrs).get("href"))
            self.label_start.append(len(self.out))
        elif tag == "img" and (alt := dict(attrs).get("alt")):
            self.out.append(f"[{alt}]")

    def handle_endtag(self, tag: str) -> None:
        if tag in self.SKIP:
            self.skip = max(0, self.skip - 1)
        elif tag in self.BLOCK:
            self.out.append("\n")
        if tag == "a" and self.href:
            href, start = self.href.pop(), self.label_start.pop()
            label = "".join(self.out[start:]).strip()
            if href and self.is_link(href) and href != label:
                self.out.append(f" ({href})" if label else href)

    def handle_data(self, data: str) -> None:
        if not self.skip:
            self.out.append(re.sub(r"\s+", " ", data))


def html_to_text(document: str, *, is_link: Callable[[str], bool] = _is_web_link) -> str:
    """A plain-text part generated from the HTML part."""
    parser = _TextExtractor(is_link)
    parser.feed(document)
    parser.close()
    return tidy_text("".join(parser.out))


def tidy_text(text: str) -> str:
    """Lines without outer spaces, at most one blank line in a row."""
    lines = (line.strip() for line in text.splitlines())
    return BLANK_LINES.sub("\n\n", "\n".join(lines)).strip()


def reads_as_test(parts: Mapping[str, Mapping[str, str]]) -> bool:
    """True when a subject, title or text says the message is a test."""
    for part in parts.values():
        for name, source in part.items():
            if name in ("image", "url") or not source:
                continue
            visible = TAGS.sub(" ", LIQUID_MARKUP.sub(" ", source))
            if TEST_WORDS.search(html.unescape(visible)):
                return True
    return False


# -- validation ---------------------------------------------------------------------------


def check_source(
    renderer: Renderer,
    source: str,
    *,
    part: str,
    field_name: str,
    escape: bool,
    roots: frozenset[str] = ROOTS,
    attributes: frozenset[str] | None = None,
) -> tuple[list[Problem], list[Problem]]:
    """Syntax errors and unknown variables of one Liquid source."""
    try:
        template = renderer.parse(source, escape=escape)
    except LiquidError as exc:
        return [_syntax_problem(exc, source, part, field_name)], []
    try:
        analysis = template.analyze(include_partials=True)
    except LiquidError as exc:
        return [_syntax_problem(exc, source, part, field_name)], []
    unknown: list[Problem] = []
    for name, uses in analysis.globals.items():
        for use in uses:
            segments = [str(s) for s in use.segments]
            problem = _unknown(segments, roots, attributes)
            if problem is None:
                continue
            line, column = (
                line_column(source, use.span.index) if not use.span.template_name else (None, None)
            )
            where = f" (in block {use.span.template_name!r})" if use.span.template_name else ""
            unknown.append(
                Problem(part, field_name, problem + where, line, column, ".".join(segments))
            )
        del name
    return [], unknown


def _unknown(
    segments: list[str], roots: frozenset[str], attributes: frozenset[str] | None
) -> str | None:
    root = segments[0]
    if root not in roots:
        return f"unknown variable {root!r}; known: {', '.join(sorted(roots))}"
    if root == "customer" and len(segments) > 1:
        name = segments[1]
        if name not in CUSTOMER_FIELDS:
            return f"customers have no field {name!r}"
        if (
            name == "attributes"
            and len(segments) > 2
            and attributes is not None
            and segments[2] not in attributes
        ):
            return f"no customer has the attribute {segments[2]!r}"
    if root == "links" and len(segments) > 1 and segments[1] not in LINKS:
        return f"unknown link {segments[1]!r}; known: {', '.join(sorted(LINKS))}"
    return None


def _syntax_problem(exc: LiquidError, source: str, part: str, field_name: str) -> Problem:
    token = getattr(exc, "token", None)
    index = getattr(token, "start_index", None)
    line, column = line_column(source, index) if isinstance(index, int) else (None, None)
    message = getattr(exc, "message", None) or str(exc).splitlines()[0]
    where = f" (line {line}, column {column})" if line is not None else ""
    name = exc.template_name
    if name:
        where += f" in block {name!r}"
    return Problem(part, field_name, f"{message}{where}", line, column)


def check_mjml(source: str, *, part: str, field_name: str) -> Problem | None:
    """An MJML document (with Liquid markup blanked out) that does not compile."""
    blank = LIQUID_MARKUP.sub(lambda m: " " * len(m.group(0)), source)
    try:
        mjml2html(blank if "<mjml" in blank else wrap_mjml(blank))
    except Exception as exc:  # mjml raises plain exceptions with the parser's message
        return Problem(part, field_name, f"MJML: {exc}")
    return None
