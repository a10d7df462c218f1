"""CMS exports -> records: WordPress WXR, CSV, JSONL, and folders of HTML / Markdown files.

Every reader turns an export into ``CmsRecord``s (id, text, title, link, path, metadata) and
raises a one-line ``InputError`` naming the file and the position (line, column or item) for
anything it cannot read. XML goes through defusedxml (no DTD, no entity expansion, no external
entity), HTML through selectolax (lexbor), Markdown through markdown-it-py, YAML front matter
through ``yaml.safe_load`` semantics without aliases, TOML front matter through tomllib.
"""

from __future__ import annotations

import csv
import datetime as dt
import os
import re
import sys
from collections import Counter
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Iterator, Mapping, Sequence

from synthfilter.io.shards import InputError, Shard, file_sha256, shard_format, special_file
from synthfilter.records import FieldSpec, get_path, is_missing

if sys.version_info >= (3, 11):
    import tomllib
else:  # pragma: no cover - exercised only on 3.10
    import tomli as tomllib

FORMATS = ("jsonl", "csv", "wxr", "markdown", "html")
MARKDOWN_SUFFIXES = (".md", ".markdown", ".mdown", ".mkd")
HTML_SUFFIXES = (".html", ".htm")
CSV_SUFFIXES = (".csv", ".tsv")
XML_SUFFIXES = (".xml", ".wxr")
JSONL_SUFFIXES = (".jsonl", ".jsonl.gz", ".jsonl.zst", ".ndjson")

# WordPress bookkeeping post types: menus, media, templates and styles are not writing.
WP_INTERNAL_TYPES = frozenset({
    "attachment", "nav_menu_item", "revision", "custom_css", "customize_changeset", "oembed_cache",
    "user_request", "wp_block", "wp_global_styles", "wp_navigation", "wp_template", "wp_template_part",
    "wp_font_family", "wp_font_face",
})
WP_SKIPPED_STATUSES = frozenset({"trash", "auto-draft"})
# What is gated by default: published writing only. Drafts, pending reviews, scheduled and private
# posts, and password-protected ones ("protected"), are not for training unless listed.
DEFAULT_POST_STATUSES = ("publish",)

# Column names tried, in order, when a CSV option is not given (matched case-insensitively).
CSV_TEXT_COLUMNS = ("text", "content", "body", "post_content", "content:encoded", "markdown", "html")
CSV_TITLE_COLUMNS = ("title", "post_title", "headline", "name")
CSV_ID_COLUMNS = ("id", "post_id", "guid", "uuid", "slug")
CSV_LINK_COLUMNS = ("link", "url", "permalink", "path")


@dataclass
class CmsRecord:
    """One item of an export.

    ``text`` is None when the item has no usable text (``error`` says why); ``excluded`` says
    why an item is not gated at all (a WordPress attachment, a trashed post). ``meta`` holds
    the rest: author, date, type, status, categories, custom fields, front matter. ``record``
    is the object as given (JSONL input, Python mappings): approved output writes it as it is,
    and ``raw`` is its line as read, so JSONL output stays byte-identical.
    """

    id: str
    text: str | None
    title: str | None = None
    link: str | None = None
    path: str | None = None
    source: str = ""
    meta: dict[str, Any] = field(default_factory=dict)
    error: str | None = None
    excluded: str | None = None
    record: dict[str, Any] | None = None
    raw: bytes | None = None

    def lookup(self, path: str) -> Any:
        """A field by dotted path: in ``record`` when there is one; else the record's own fields,
        then ``meta``, then WordPress custom fields (so ``ai_generated`` finds a front-matter key
        or a custom field of that name)."""
        if self.record is not None:
            value = get_path(self.record, path)
            return None if is_missing(value) else value
        if path in ("id", "title", "link", "path", "text"):
            return getattr(self, path)
        for root, p in ((self.meta, path), (self.meta, path[5:] if path.startswith("meta.") else None),
                        (self.meta.get("custom_fields"), path)):
            if p and isinstance(root, dict):
                value = get_path(root, p)
                if not is_missing(value):
                    return value
        return None

    def to_dict(self) -> dict[str, Any]:
        """The JSON object written for this record (``record`` when there is one)."""
        if self.record is not None:
            return dict(self.record)
        return {"id": self.id, "title": self.title, "link": self.link, "path": self.path, "text": self.text,
                "source": self.source, "meta": self.meta}


@dataclass
class ReadOptions:
    """How to read exports: the format (None: detect per file) and the fields or columns."""

    format: str | None = None
    text_field: str = "text"
    id_field: str | None = None
    text_column: str | None = None
    title_column: str | None = None
    id_column: str | None = None
    link_column: str | None = None
    post_types: Sequence[str] = ()
    post_statuses: Sequence[str] = DEFAULT_POST_STATUSES
    max_line_bytes: int = 50 * 1024 * 1024


@dataclass
class ExportInput:
    """One file that was read, for the manifest."""

    path: str
    format: str
    size: int
    sha256: str
    records: int = 0
    excluded: int = 0

    def to_dict(self) -> dict[str, Any]:
        return {"path": self.path, "format": self.format, "size": self.size, "sha256": self.sha256,
                "records": self.records, "excluded": self.excluded}


@dataclass
class ExportRead:
    records: list[CmsRecord]
    inputs: list[ExportInput]
    ignored_files: list[str]


# -- HTML and Markdown to text ----------------------------------------------------------------

# Elements whose content is never text a reader sees.
_DROP = frozenset({"script", "style", "noscript", "template", "iframe", "object", "embed", "svg", "math",
                   "canvas", "head", "title", "meta", "link", "select", "button"})
# Elements that end a paragraph (blank line) or a line.
_PARAGRAPH = frozenset({"p", "div", "section", "article", "main", "header", "footer", "aside", "blockquote",
                        "pre", "table", "ul", "ol", "dl", "figure", "form", "fieldset", "details", "address",
                        "h1", "h2", "h3", "h4", "h5", "h6", "hr", "center"})
_LINE = frozenset({"li", "dt", "dd", "tr", "figcaption", "summary", "caption", "legend", "option", "br"})
_CELL = frozenset({"td", "th"})
_SPACE_RUN = re.compile(r"(\s+)")
_BLANK_LINES = re.compile(r"\n[ \t]*\n\s*\n")
# WordPress shortcodes that wrap or stand for media, forms and page-builder layout (WPBakery vc_,
# Divi et_pb_, Avada fusion_, Enfold av_, Cornerstone cs_, Shortcodes Ultimate su_, ...): their
# brackets are markup, not prose; the text a layout shortcode wraps is kept.
_WP_SHORTCODE = re.compile(
    r"\[/?(?:caption|wp_caption|gallery|embed|audio|video|playlist|contact-form-7|contact-form|gravityforms?|"
    r"wpforms|ninja_forms?|mc4wp_form|rev_slider|layerslider|elementor-template|fl_builder_insert_layout|"
    r"(?:vc|et_pb|fusion|av|cs|su)_[a-z0-9_]+)(?:\s[^\]]*)?/?\]"
)
# Hugo shortcodes ({{< x >}}, {{% x %}}) and Liquid tags ({% x %}, {{ x }}): template syntax, as
# the regular expression r"\{\{[<%].*?[%>]\}\}|\{%.*?%\}|\{\{.*?\}\}" (DOTALL) finds them, which
# ``_strip_template_tags`` applies in linear time.
_TEMPLATE_OPEN = re.compile(r"\{[{%]")
_HUGO_CLOSE = re.compile(r"[%>]\}\}")


class _TextBuilder:
    """Collects text runs and breaks: whitespace collapses to one space, blocks become line or
    paragraph breaks, and a blank line inside running text stays a paragraph break (WordPress
    stores paragraphs as blank lines, not ``<p>``)."""

    def __init__(self) -> None:
        self.parts: list[str] = []
        self.pending = 0  # 1: a line break, 2: a paragraph break before the next text
        self.space = False

    def brk(self, n: int) -> None:
        self.pending = max(self.pending, n)
        self.space = False

    def _emit(self, s: str) -> None:
        if self.parts:
            if self.pending:
                self.parts.append("\n" * self.pending)
            elif self.space:
                self.parts.append(" ")
        self.pending = 0
        self.space = False
        self.parts.append(s)

    def text(self, s: str, pre: bool) -> None:
        if pre:
            # Preformatted text keeps its spaces and line breaks exactly.
            if s and (self.parts or s.strip()):
                self._emit(s)
            return
        for piece in _SPACE_RUN.split(s):
            if not piece:
                continue
            if piece.isspace():
                if piece.count("\n") >= 2:
                    self.brk(2)
                elif not self.pending:
                    self.space = True
            else:
                self._emit(piece)

    def start(self, tag: str) -> None:
        """The break an element's start makes: a paragraph, a line, or a table cell's bar."""
        if tag in _PARAGRAPH:
            self.brk(2)
        elif tag in _LINE:
            self.brk(1)
        elif tag in _CELL:
            self.cell()

    def cell(self) -> None:
        if not self.pending and self.parts:
            self.parts.append(" | ")
            self.space = False

    def result(self) -> str:
        return _BLANK_LINES.sub("\n\n", "".join(self.parts)).strip()


def _walk_text(root: Any, drop: frozenset[str] = _DROP) -> str:
    """Visible text of a lexbor node, with an explicit stack (deeply nested markup is fine)."""
    out = _TextBuilder()
    pre = 0
    stack: list[tuple[Any, bool]] = [(root, False)]
    while stack:
        node, leaving = stack.pop()
        tag = node.tag
        if leaving:
            if tag == "pre":
                pre -= 1
            if tag in _PARAGRAPH:
                out.brk(2)
            elif tag in _LINE:
                out.brk(1)
            continue
        if tag == "-text":
            out.text(node.text_content or "", pre > 0)
            continue
        if tag is None or tag.startswith("-") or tag in drop:
            continue  # comments, doctype, and elements whose content is not text
        if tag == "br":
            out.brk(1)
            continue
        out.start(tag)
        if tag == "pre":
            pre += 1
        stack.append((node, True))
        children = list(node.iter(include_text=True))
        stack.extend((c, False) for c in reversed(children))
    return out.result()


def html_to_text(markup: str) -> str:
    """Readable text of an HTML fragment: scripts, styles and comments dropped, block elements
    as line and paragraph breaks, entities decoded, whitespace collapsed.

    Over-deep markup is not given to the parser (lexbor), whose time grows with the square of
    the nesting depth ("<div>" * 64,000 takes seconds, a megabyte of it hours). Markup with more
    than 256 tags is first scanned once (``html_depth``, linear): when the parser would hold
    more than 512 open elements (Chromium's cap on the depth of its tree), or re-open more than
    8 unclosed formatting elements after every block, or the scan cannot follow how the parser
    would nest it (misnested formatting such as ``<b><p>x</b>``), a linear extractor reads it
    instead (``flat_text``), with the same rules: the words in order, block elements as line
    and paragraph breaks, <pre> as it is, scripts, styles, templates and comments dropped,
    entities decoded. On ordinary pages its text is the parser's.
    """
    from selectolax.lexbor import LexborHTMLParser

    if not markup or not markup.strip():
        return ""
    from synthfilter.io.deephtml import flat_text, html_too_deep  # it imports this module's rules

    if html_too_deep(markup):
        return flat_text(markup)
    tree = LexborHTMLParser(markup)
    root = tree.body if tree.body is not None else tree.root
    return _walk_text(root) if root is not None else ""



def _wp_text(markup: str) -> str:
    # A shortcode ends at a "]": none can start after the last one. Leaving that tail out of the
    # search keeps it linear ("[vc_row " * n with no "]" would be tried n times to the end).
    end = markup.rfind("]") + 1
    return html_to_text(_WP_SHORTCODE.sub(" ", markup[:end]) + markup[end:])


def _strip_template_tags(source: str) -> str:
    r"""``source`` with its Hugo shortcodes and Liquid tags replaced by a space, as
    ``re.sub(r"\{\{[<%].*?[%>]\}\}|\{%.*?%\}|\{\{.*?\}\}", " ", source, flags=re.DOTALL)`` does, in
    linear time: the expression looks for a closing mark from every opening one, and an opening
    mark with no closing mark after it is looked for once, not again from each later opening."""
    out: list[str] = []
    kept = pos = 0
    missing: set[str] = set()  # closing marks that no longer occur from where they were looked for
    while True:
        m = _TEMPLATE_OPEN.search(source, pos)
        if m is None:
            break
        i = m.start()
        end = -1
        if source[i + 1] == "{":
            if source[i + 2:i + 3] in ("<", "%") and i + 2 < len(source) and "hugo" not in missing:
                close = _HUGO_CLOSE.search(source, i + 3)
                if close is not None:
                    end = close.end()
                else:
                    missing.add("hugo")
            if end < 0 and "}}" not in missing:
                j = source.find("}}", i + 2)
                if j >= 0:
                    end = j + 2
                else:
                    missing.add("}}")
        elif "%}" not in missing:
            j = source.find("%}", i + 2)
            if j >= 0:
                end = j + 2
            else:
                missing.add("%}")
        if end < 0:
            pos = i + 1
            continue
        out.append(source[kept:i])
        out.append(" ")
        kept = pos = end
    out.append(source[kept:])
    return "".join(out)


def _markdown_parser() -> Any:
    from markdown_it import MarkdownIt

    # CommonMark plus GFM tables and strikethrough; raw HTML is parsed (then scripts are dropped).
    return MarkdownIt("commonmark", {"html": True}).enable(["table", "strikethrough"])


def markdown_to_text(source: str) -> tuple[str, str | None]:
    """Text of a Markdown body and its first level-1 heading (None when there is none)."""
    md = _markdown_parser()
    source = _strip_template_tags(source)
    tokens = md.parse(source)
    if tokens and max(tok.level for tok in tokens) >= md.options["maxNesting"] - 1:
        # markdown-it stops at its nesting limit (20 levels of lists or quotes) and drops the
        # rest of the document without a word: such a body is read as it stands, its marks
        # left in, so that nothing in it is hidden from the checks.
        return html_to_text(source), None
    heading = None
    for i, tok in enumerate(tokens):
        if tok.type == "heading_open" and tok.tag == "h1" and i + 1 < len(tokens):
            heading = html_to_text(md.renderer.render([tokens[i + 1]], md.options, {})) or None
            break
    return html_to_text(md.renderer.render(tokens, md.options, {})), heading


# -- front matter -------------------------------------------------------------------------------


def _yaml_loader() -> Any:
    import yaml

    class NoAliasLoader(yaml.SafeLoader):
        """safe_load without aliases: a few anchors can stand for an exponential amount of data."""

        def compose_node(self, parent: Any, index: Any) -> Any:
            if self.check_event(yaml.AliasEvent):
                event = self.peek_event()
                raise yaml.composer.ComposerError(
                    None, None, f"YAML alias *{event.anchor} is not allowed in front matter", event.start_mark
                )
            return super().compose_node(parent, index)

    return NoAliasLoader


def _plain(value: Any, depth: int = 0) -> Any:
    """JSON-ready metadata: dates and times as ISO strings, keys as strings."""
    if depth > _MAX_FRONT_MATTER_DEPTH:
        raise ValueError(f"nested more than {_MAX_FRONT_MATTER_DEPTH} levels deep")
    if isinstance(value, dict):
        return {str(k): _plain(v, depth + 1) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [_plain(v, depth + 1) for v in value]
    if isinstance(value, (dt.date, dt.time)):
        return value.isoformat()
    if isinstance(value, (str, int, float, bool)) or value is None:
        return value
    return str(value)


def split_front_matter(text: str, path: Path) -> tuple[dict[str, Any], str, int]:
    """``(metadata, body, line of the body)`` from a file that may open with YAML (``---``) or
    TOML (``+++``) front matter, Hugo and Jekyll style."""
    first, _, rest = text.partition("\n")
    fence = first.rstrip("\r").rstrip()
    if fence not in ("---", "+++"):
        return {}, text, 1
    lines = rest.split("\n")
    closers = ("---", "...") if fence == "---" else ("+++",)
    for i, line in enumerate(lines):
        if line.rstrip("\r").rstrip() in closers:
            block = "\n".join(lines[:i])
            body = "\n".join(lines[i + 1:])
            meta = _parse_front_matter(block, fence, path)
            return meta, body, i + 3
    raise InputError(path, f"front matter opened with {fence!r} is never closed (no {closers[0]!r} line follows)", 1)


# Front matter nested deeper than ``_plain`` accepts is refused before it is parsed: tomllib
# takes time in the square of a dotted key's length (a.a.a... = 1), PyYAML in the square of a flow
# collection's depth ([[[...), both far beyond what a refusal at 50 levels needs.
_MAX_FRONT_MATTER_DEPTH = 50
_TOML_KEY_PART = r"""(?:[A-Za-z0-9_-]+|"(?:[^"\\\n]|\\.)*"|'[^'\n]*')"""
# A key where TOML has keys: at the start of a line or of a table header, in an inline table.
_TOML_DOTTED_KEY = re.compile(
    rf"(?:^[ \t]*\[{{0,2}}|[{{,])[ \t]*({_TOML_KEY_PART}(?:[ \t]*\.[ \t]*{_TOML_KEY_PART})+)", re.MULTILINE
)
_TOML_KEY_DOT = re.compile(r"""\.|"(?:[^"\\\n]|\\.)*"|'[^'\n]*'""")
_YAML_FLOW_MARKS = re.compile(r"""\\.|["'\[\]{}#\n]""")


def _toml_key_depth(block: str) -> int:
    """The most parts a dotted key or table header of a TOML block has."""
    deepest = 0
    for m in _TOML_DOTTED_KEY.finditer(block):
        parts = 1 + sum(1 for t in _TOML_KEY_DOT.findall(m.group(1)) if t == ".")
        deepest = max(deepest, parts)
    return deepest


def _yaml_flow_depth(block: str) -> int:
    """An upper bound on how deep a YAML block nests flow collections ([ and {): every opening
    bracket counts, a closing one only outside a quoted scalar and a comment (a quote counts as
    one where a scalar can start)."""
    depth = deepest = 0
    quote = ""
    comment = False
    for m in _YAML_FLOW_MARKS.finditer(block):
        c = m.group(0)
        if c == "\n":
            comment = False
            if quote == "'":
                continue
        if comment:
            continue
        if quote:
            if c == quote:
                quote = ""
            continue
        if c in "[{":
            depth += 1
            deepest = max(deepest, depth)
        elif c in "]}":
            depth = max(depth - 1, 0)
        elif c in "\"'" or c == "#":
            i = m.start()
            before = block[i - 1] if i > 0 else "\n"
            if before in " \t\n[{,:" or (c == "#" and before in " \t\n"):
                if c == "#":
                    comment = True
                else:
                    quote = c
    return deepest


def _parse_front_matter(block: str, fence: str, path: Path) -> dict[str, Any]:
    too_deep = f"front matter nested more than {_MAX_FRONT_MATTER_DEPTH} levels deep"
    if fence == "+++":
        if _toml_key_depth(block) > _MAX_FRONT_MATTER_DEPTH:
            raise InputError(path, too_deep, 2)
        try:
            data: Any = tomllib.loads(block)
        except tomllib.TOMLDecodeError as e:
            m = re.search(r"line (\d+)", str(e))
            line = int(m.group(1)) + 1 if m else 2
            raise InputError(path, f"malformed TOML front matter ({str(e).splitlines()[0]})", line) from None
        except RecursionError:
            raise InputError(path, "TOML front matter is nested too deeply", 2) from None
    else:
        import yaml

        if _yaml_flow_depth(block) > _MAX_FRONT_MATTER_DEPTH:
            raise InputError(path, too_deep, 2)
        try:
            data = yaml.load(block, Loader=_yaml_loader())  # noqa: S506 - a SafeLoader subclass
        except yaml.YAMLError as e:
            mark = getattr(e, "problem_mark", None)
            line = mark.line + 2 if mark is not None else 2
            col = f" at column {mark.column + 1}" if mark is not None else ""
            what = getattr(e, "problem", None) or str(e).splitlines()[0]
            raise InputError(path, f"malformed YAML front matter: {what}{col}", line) from None
        except RecursionError:
            raise InputError(path, "YAML front matter is nested too deeply", 2) from None
    if data is None:
        return {}
    if not isinstance(data, dict):
        raise InputError(path, f"front matter must be a mapping of keys to values, got a {type(data).__name__}", 2)
    try:
        return _plain(data)
    except ValueError as e:
        raise InputError(path, f"front matter {e}", 2) from None


# -- decoding -----------------------------------------------------------------------------------


_UTF16_BOMS = (b"\xff\xfe", b"\xfe\xff")  # what Windows tools ("Unicode text") write
_META_CHARSET = re.compile(rb"""<meta[^>]+charset\s*=\s*["']?\s*([a-zA-Z0-9_.:-]+)""", re.IGNORECASE)


def _declared_charset(data: bytes) -> str | None:
    """The encoding an HTML page declares in a ``<meta>`` of its first 4 KB, when Python knows it."""
    import codecs

    m = _META_CHARSET.search(data[:4096])
    if m is None:
        return None
    try:
        info = codecs.lookup(m.group(1).decode("ascii"))
    except (LookupError, UnicodeDecodeError):
        return None
    return info.name if getattr(info, "_is_text_encoding", True) else None


def _decode(data: bytes, path: Path, what: str) -> str:
    """UTF-8 (a BOM allowed), UTF-16 with its BOM, or (an HTML page) the charset its ``<meta>``
    declares; anything else is an error naming the first bad byte's line."""
    if data.startswith(_UTF16_BOMS):
        try:
            return data.decode("utf-16")
        except UnicodeDecodeError as e:
            raise _not_utf16(path, f"{e.reason} at byte {e.start:,}") from None
    try:
        return data.decode("utf-8-sig")
    except UnicodeDecodeError as e:
        declared = _declared_charset(data) if what == "HTML" else None
        if declared is not None and declared not in ("utf-8", "utf-8-sig"):
            try:
                return data.decode(declared)
            except (UnicodeDecodeError, LookupError):  # LookupError: a codec that is not a text encoding
                pass
        line = data[: e.start].count(b"\n") + 1
        raise InputError(path, f"not UTF-8 text (byte 0x{data[e.start]:02x}){_resave(what)}", line) from None


def _not_utf16(path: Path, why: str) -> InputError:
    return InputError(path, f"not valid UTF-16 text, though it starts with a UTF-16 byte order mark ({why}); "
                            "re-save it as UTF-8")


def _resave(what: str) -> str:
    article = "an" if what in ("HTML", "XML") else "a"
    return (f"; if it is {article} {what} file, re-save it as UTF-8 (a UTF-16 file with its byte order mark, and an "
            "HTML page that declares its charset, are read as they are)")


def _str_or_none(value: Any) -> str | None:
    if value is None or is_missing(value) or isinstance(value, (dict, list)):
        return None
    s = str(value).strip()
    return s or None


# -- Markdown and HTML files ---------------------------------------------------------------------


def read_markdown_file(path: Path, rel: str, post_statuses: Sequence[str] = DEFAULT_POST_STATUSES) -> CmsRecord:
    text = _decode(path.read_bytes(), path, "Markdown")
    meta, body, _ = split_front_matter(text, path)
    body_text, heading = markdown_to_text(body)
    return _file_record(path, rel, meta, body_text, heading, post_statuses)


def read_html_file(path: Path, rel: str, post_statuses: Sequence[str] = DEFAULT_POST_STATUSES) -> CmsRecord:
    """A page: front matter (Jekyll) and ``<meta>`` tags as metadata; the text of ``<main>`` (or
    the only ``<article>``, or ``<body>`` without navigation, header, footer and aside)."""
    from synthfilter.io.deephtml import flat_page, html_too_deep

    text = _decode(path.read_bytes(), path, "HTML")
    front, body, _ = split_front_matter(text, path)
    # An over-deep page is read in one linear pass, as html_to_text reads such markup.
    meta, title, canonical, body_text = flat_page(body) if html_too_deep(body) else _parsed_page(body)
    meta.update(front)
    if canonical is not None and "url" not in meta:
        meta["url"] = canonical
    return _file_record(path, rel, meta, body_text, title, post_statuses)


# What a page's text leaves out inside its <main> (or only <article>), and in the page as a whole.
_MAIN_DROP = _DROP | {"nav"}
_PAGE_DROP = _DROP | {"nav", "header", "footer", "aside"}


def _parsed_page(markup: str) -> tuple[dict[str, Any], str | None, str | None, str]:
    """``(meta, title, canonical link, text)`` of a page from its parsed tree: ``<meta>`` names
    and contents, the first ``<title>`` (else the first ``<h1>``), and the text of ``<main>``
    (else of the only ``<article>``, else of the page without ``_PAGE_DROP``)."""
    from selectolax.lexbor import LexborHTMLParser

    tree = LexborHTMLParser(markup)
    meta: dict[str, Any] = {}
    for node in tree.css("meta"):
        attrs = node.attributes
        key = attrs.get("name") or attrs.get("property")
        if key and attrs.get("content") is not None:
            meta[key] = attrs.get("content")
    title_node = tree.css_first("title")
    title = _str_or_none(title_node.text()) if title_node is not None else None
    link = tree.css_first('link[rel="canonical"]')
    canonical = (link.attributes.get("href") or None) if link is not None else None
    main = tree.css_first("main")
    articles = tree.css("article") if main is None else []
    if main is not None:
        root, drop = main, _MAIN_DROP
    elif len(articles) == 1:
        root, drop = articles[0], _MAIN_DROP
    else:
        root, drop = tree.body, _PAGE_DROP
    body_text = _walk_text(root, drop) if root is not None else ""
    if title is None:
        h1 = tree.css_first("h1")
        title = _str_or_none(h1.text()) if h1 is not None else None
    return meta, title, canonical, body_text


def _unpublished(meta: Mapping[str, Any]) -> bool:
    """Front matter marking a draft: Hugo's ``draft: true``, Jekyll's ``published: false``."""
    def flag(key: str) -> bool | None:
        v = meta.get(key)
        if isinstance(v, bool):
            return v
        if isinstance(v, str) and v.strip().lower() in ("true", "false", "yes", "no"):
            return v.strip().lower() in ("true", "yes")
        return None

    return flag("draft") is True or flag("published") is False


def _file_record(path: Path, rel: str, meta: dict[str, Any], text: str, fallback_title: str | None,
                 post_statuses: Sequence[str] = DEFAULT_POST_STATUSES) -> CmsRecord:
    title = _str_or_none(meta.get("title")) or fallback_title
    link = _str_or_none(meta.get("url")) or _str_or_none(meta.get("permalink"))
    excluded = None
    if _unpublished(meta) and "draft" not in {x.strip().lower() for x in post_statuses}:
        excluded = "draft (front matter; --post-statuses draft gates it)"
    return CmsRecord(id=rel, text=(text or None) if excluded is None else None, title=title, link=link, path=rel,
                     source=rel, meta=meta, error=None if text or excluded else "no text (empty body)",
                     excluded=excluded)


def _refuse_special(path: Path) -> None:
    """An export that is a named pipe, a device or a socket is refused: the gate reads each one
    more than once (its format is sniffed, then it is read), and a pipe read again would hang."""
    kind = special_file(path)
    if kind is not None:
        raise InputError(path, f"{kind}, not a regular file: the gate reads each export more than once, so it takes "
                               "files only; write the export to a file first")


def _folder_files(folder: Path, fmt: str | None, ignored: list[str]) -> list[tuple[Path, str, str]]:
    out = []
    for dirpath, dirnames, filenames in os.walk(folder):
        dirnames[:] = sorted(d for d in dirnames if not d.startswith("."))
        for name in sorted(filenames):
            p = Path(dirpath) / name
            low = name.lower()
            kind = "markdown" if low.endswith(MARKDOWN_SUFFIXES) else "html" if low.endswith(HTML_SUFFIXES) else None
            if kind is None or (fmt is not None and kind != fmt):
                if not name.startswith("."):
                    ignored.append(str(p))
                continue
            _refuse_special(p)
            out.append((p, p.relative_to(folder).as_posix(), kind))
    return out


# -- WordPress WXR -------------------------------------------------------------------------------

_NS_PREFIX = (
    (re.compile(r"^http://wordpress\.org/export/[\d.]+/excerpt/$"), "excerpt"),
    (re.compile(r"^http://wordpress\.org/export/[\d.]+/$"), "wp"),
    (re.compile(r"^http://purl\.org/rss/1\.0/modules/content/$"), "content"),
    (re.compile(r"^http://purl\.org/dc/elements/1\.1/$"), "dc"),
)


def _not_utf8_hint(path: Path, message: str) -> str:
    """For an XML error an encoding can cause: say so when the file is not UTF-8 (an export
    re-saved as Latin-1 keeps its ``encoding="UTF-8"`` declaration)."""
    if "invalid token" not in message:
        return ""
    import codecs

    decoder = codecs.getincrementaldecoder("utf-8")()
    offset = 0
    try:
        with open(path, "rb") as f:
            while chunk := f.read(1 << 20):
                try:
                    decoder.decode(chunk)
                except UnicodeDecodeError as e:
                    return (f" (the file is not UTF-8: byte 0x{chunk[e.start]:02x} at byte offset {offset + e.start:,}; "
                            "re-save it as UTF-8)")
                offset += len(chunk)
    except OSError:
        pass
    return ""


def _qname(tag: str) -> str:
    """``{namespace}local`` -> ``prefix:local`` for the namespaces WXR uses (else the local name)."""
    if not tag.startswith("{"):
        return tag
    ns, _, local = tag[1:].partition("}")
    for pattern, prefix in _NS_PREFIX:
        if pattern.match(ns):
            return f"{prefix}:{local}"
    return local


def read_wxr(path: Path, rel: str, post_types: Sequence[str] = (),
             post_statuses: Sequence[str] = DEFAULT_POST_STATUSES) -> Iterator[CmsRecord]:
    """Stream the ``<item>``s of a WordPress export (or an RSS 2.0 feed) without building the tree.

    No DTD is accepted (WordPress never writes one), so entity expansion ("billion laughs") and
    external entities are refused as soon as the declaration is seen, before any expansion.
    """
    import xml.etree.ElementTree as ET

    import defusedxml
    from defusedxml.ElementTree import DefusedXMLParser

    parser = DefusedXMLParser(target=ET.TreeBuilder(), forbid_dtd=True, forbid_entities=True, forbid_external=True)
    expat = parser.parser

    def where() -> tuple[int, str]:
        return expat.CurrentLineNumber, f" at column {expat.CurrentColumnNumber + 1}"

    wanted = {t.strip().lower() for t in post_types if t.strip()}
    statuses = {t.strip().lower() for t in post_statuses if t.strip()}
    f = _GrowingReader(open(path, "rb"))
    try:
        events = ET.iterparse(f, events=("start", "end"), parser=parser)
        # Events arrive a chunk late; note where the root element starts while expat is on it.
        root_at: list[tuple[int, str]] = []
        on_start = expat.StartElementHandler

        def first_start(*args: Any) -> Any:
            root_at.append(where())
            expat.StartElementHandler = on_start
            return on_start(*args)

        expat.StartElementHandler = first_start
        depth = 0
        channel: Any = None
        n = 0
        for event, el in events:
            f.progress = True
            if event == "start":
                depth += 1
                if depth == 1 and _qname(el.tag) != "rss":
                    line, col = root_at[0] if root_at else where()
                    raise InputError(path, f"not a WordPress WXR export: the root element is <{_qname(el.tag)}>, "
                                     f"expected <rss>{col}", line)
                if depth == 2 and _qname(el.tag) == "channel":
                    channel = el
                continue
            depth -= 1
            if depth == 2 and channel is not None:
                if _qname(el.tag) == "item":
                    n += 1
                    yield _wxr_record(el, rel, n, wanted, statuses)
                # Nothing of the channel but its items is read: drop each child once read (from the
                # end, where it is: removing it by search would take time in the children kept).
                el.clear()
                if len(channel) and channel[-1] is el:
                    del channel[-1]
                else:
                    channel.remove(el)
        if channel is None:
            raise InputError(path, "not a WordPress WXR export: no <channel> inside <rss>")
    except ET.ParseError as e:
        line, col = e.position
        message = re.sub(r": line \d+, column \d+$", "", str(e))
        raise InputError(path, f"malformed XML: {message} at column {col + 1}{_not_utf8_hint(path, message)}",
                         line) from None
    except defusedxml.DTDForbidden as e:
        line, col = where()
        raise InputError(path, f"refused: the XML declares a document type (<!DOCTYPE {e.name}>){col}; WordPress "
                         "exports never do, and a DTD can define entities that expand without bound "
                         "('billion laughs') or read external files", line) from None
    except (defusedxml.EntitiesForbidden, defusedxml.ExternalReferenceForbidden) as e:
        line, col = where()
        raise InputError(path, f"refused: the XML declares or references an entity ({e!r}){col}; entity "
                         "expansion and external entities are not allowed", line) from None
    finally:
        f.close()


class _GrowingReader:
    """A binary file whose ``read`` returns more each time the XML parser got no event from the
    last chunk (and 64 KiB again once it does). expat before 2.6 parses an unfinished token (a
    long attribute, comment or tag) again from its start with every chunk fed: with chunks of a
    fixed size that is quadratic in the token's length, with doubling chunks linear."""

    _BASE = 1 << 16
    _MAX = 1 << 26

    def __init__(self, f: Any) -> None:
        self.f = f
        self.size = self._BASE
        self.progress = True  # set by the reader on every event

    def read(self, _n: int = -1) -> bytes:
        self.size = self._BASE if self.progress else min(self.size * 2, self._MAX)
        self.progress = False
        return self.f.read(self.size)

    def close(self) -> None:
        self.f.close()


def _wxr_record(item: Any, rel: str, n: int, wanted: set[str], statuses: set[str]) -> CmsRecord:
    fields: dict[str, str] = {}
    categories: list[str] = []
    tags: list[str] = []
    custom: dict[str, Any] = {}
    for child in item:
        name = _qname(child.tag)
        if name == "category":
            (tags if child.get("domain") == "post_tag" else categories).append((child.text or "").strip())
        elif name == "wp:postmeta":
            key = value = None
            for part in child:
                if _qname(part.tag) == "wp:meta_key":
                    key = (part.text or "").strip()
                elif _qname(part.tag) == "wp:meta_value":
                    value = part.text or ""
            if key:
                custom[key] = value
        elif name not in fields:
            fields[name] = child.text or ""
    post_id = fields.get("wp:post_id", "").strip()
    guid = fields.get("guid", "").strip()
    post_type = fields.get("wp:post_type", "").strip() or None
    status = fields.get("wp:status", "").strip() or None
    meta: dict[str, Any] = {
        "author": _str_or_none(fields.get("dc:creator")),
        "date": _str_or_none(fields.get("wp:post_date")) or _str_or_none(fields.get("pubDate")),
        "type": post_type,
        "status": status,
        "slug": _str_or_none(fields.get("wp:post_name")),
        "post_id": post_id or None,
        "guid": guid or None,
        "categories": categories,
        "tags": tags,
        "custom_fields": custom,
    }
    protected = bool(fields.get("wp:post_password", "").strip())
    if protected:
        meta["password_protected"] = True  # the password itself is never kept
    excerpt = _str_or_none(fields.get("excerpt:encoded"))
    if excerpt:
        meta["excerpt"] = _wp_text(excerpt)
    excluded = None
    kind = (post_type or "post").lower()
    if wanted and kind not in wanted:
        excluded = f"post type {kind} not in --post-types"
    elif not wanted and kind in WP_INTERNAL_TYPES:
        excluded = f"WordPress {kind} item (not writing)"
    elif status and status.lower() in WP_SKIPPED_STATUSES:
        excluded = f"status {status}"
    elif status and statuses and status.lower() not in statuses:
        excluded = f"status {status} (not in --post-statuses)"
    elif protected and "protected" not in statuses:
        excluded = "password-protected (--post-statuses protected gates it)"
    markup = fields.get("content:encoded")
    if markup is None:
        markup = fields.get("description", "")
    text = _wp_text(markup) if excluded is None else None
    rid = post_id or guid or f"{rel}#item{n}"
    return CmsRecord(
        id=rid, text=text or None, title=_str_or_none(fields.get("title")), link=_str_or_none(fields.get("link")),
        path=rel, source=f"{rel} item {n}", meta=meta,
        error=None if text or excluded else "no text (empty content)", excluded=excluded,
    )


# -- CSV -----------------------------------------------------------------------------------------


def _pick_column(header: Sequence[str], given: str | None, candidates: Sequence[str], path: Path,
                 what: str, option: str, required: bool) -> int | None:
    if given is not None:
        if given in header:
            return header.index(given)
        lowered = [h.lower() for h in header]
        if given.lower() in lowered:
            return lowered.index(given.lower())
        raise InputError(path, f"no {what} column {given!r} (columns: {', '.join(header[:20])}); check {option}", 1)
    lowered = [h.strip().lower() for h in header]
    for c in candidates:
        if c in lowered:
            return lowered.index(c)
    if required:
        raise InputError(path, f"no {what} column found (columns: {', '.join(header[:20])}); pass {option}", 1)
    return None


def _delimiter(header: str, path: Path) -> str:
    if path.name.lower().endswith(".tsv"):
        return "\t"
    counts = {d: header.count(d) for d in (",", ";", "\t", "|")}
    best = max(counts, key=lambda d: counts[d])
    return best if counts[best] else ","


# Elements a CMS body holds. A cell is HTML only when it has a whole tag of one of them (or a
# comment; see ``_HTML_TAG``): plain text with "a<b" or "<Enter>" in it is not, and parsing it as HTML would lose
# what follows the "<" ("If a<b and b<c ..." read as "If a").
_HTML_ELEMENTS = (
    "a|abbr|address|article|aside|audio|b|blockquote|body|br|button|caption|center|cite|code|col|colgroup|dd|del|"
    "details|div|dl|dt|em|embed|figcaption|figure|font|footer|form|h[1-6]|head|header|hr|html|i|iframe|img|input|"
    "ins|kbd|label|li|link|main|mark|meta|nav|noscript|object|ol|option|p|picture|pre|q|s|samp|script|section|"
    "select|small|source|span|strike|strong|style|sub|summary|sup|table|tbody|td|textarea|tfoot|th|thead|time|"
    "title|tr|u|ul|var|video|wbr"
)
_ATTRIBUTE = r"""\s+[a-zA-Z_:][-a-zA-Z0-9_:.]*(?:\s*=\s*(?:"[^"]*"|'[^']*'|[^\s"'=<>`]+))?"""
_VOID_ELEMENTS = "br|hr|img|wbr|input|meta|link|source|embed|col"
# A comment, a closing tag, a void element's tag, or an opening tag with attributes: a bare
# "<S>" or "<b>" alone is as likely a key name or a typo as markup, "</b>" or '<b class="x">' is not.
_HTML_TAG = re.compile(
    rf"<!--|</(?:{_HTML_ELEMENTS})\s*>|<(?:{_VOID_ELEMENTS})(?:{_ATTRIBUTE})*\s*/?>"
    rf"|<(?:{_HTML_ELEMENTS})(?:{_ATTRIBUTE})+\s*/?>",
    re.IGNORECASE,
)


def _looks_like_html(text: str) -> bool:
    return _HTML_TAG.search(text) is not None


def read_csv(path: Path, rel: str, opts: ReadOptions) -> Iterator[CmsRecord]:
    """Rows of a CSV (or TSV) file with a header, read row by row; text cells holding HTML are
    converted to text."""
    limit = max(csv.field_size_limit(), opts.max_line_bytes)
    csv.field_size_limit(limit)
    with open(path, "rb") as probe:
        encoding = "utf-16" if probe.read(2) in _UTF16_BOMS else "utf-8-sig"  # Excel's "Unicode text"
    try:
        with open(path, encoding=encoding, newline="") as f:
            first = f.readline()
            if not first.strip() and not _any_text_after(f):
                raise InputError(path, "empty file: no header and no rows")
            f.seek(0)
            yield from _csv_rows(f, path, rel, opts, _delimiter(first.split("\n", 1)[0], path))
    except UnicodeDecodeError as e:
        if encoding == "utf-16":
            raise _not_utf16(path, e.reason) from None
        raise _not_utf8(path, "CSV") from None


def _any_text_after(f: Any) -> bool:
    while True:
        chunk = f.read(1 << 16)
        if not chunk:
            return False
        if chunk.strip():
            return True


def _csv_rows(f: Any, path: Path, rel: str, opts: ReadOptions, delimiter: str) -> Iterator[CmsRecord]:
    reader = csv.reader(f, delimiter=delimiter, strict=True)
    try:
        header = next(reader)
        header = [h.strip() for h in header]
        if not any(header):
            raise InputError(path, "the first row (the header) is empty", 1)
        ti = _pick_column(header, opts.text_column, CSV_TEXT_COLUMNS, path, "text", "--text-column", True)
        hi = _pick_column(header, opts.title_column, CSV_TITLE_COLUMNS, path, "title", "--title-column", False)
        ii = _pick_column(header, opts.id_column, CSV_ID_COLUMNS, path, "id", "--id-column", False)
        li = _pick_column(header, opts.link_column, CSV_LINK_COLUMNS, path, "link", "--link-column", False)
        start = reader.line_num + 1
        for row in reader:
            line = start
            start = reader.line_num + 1
            if not row or (len(row) == 1 and not row[0].strip()):
                continue
            if len(row) != len(header):
                raise InputError(path, f"row has {len(row)} fields but the header has {len(header)} "
                                 "(an unquoted delimiter or newline?)", line)
            cell = row[ti]
            body = html_to_text(cell) if _looks_like_html(cell) else cell.strip()
            meta = {h: v for j, (h, v) in enumerate(zip(header, row)) if j not in (ti, hi, ii) and h}
            rid = _str_or_none(row[ii]) if ii is not None else None
            yield CmsRecord(
                id=rid or f"{rel}:{line}", text=body or None,
                title=_str_or_none(row[hi]) if hi is not None else None,
                link=_str_or_none(row[li]) if li is not None else None,
                path=rel, source=f"{rel}:{line}", meta=meta, error=None if body else "no text (empty cell)",
            )
    except csv.Error as e:
        raise InputError(path, f"unreadable CSV ({e})", reader.line_num or 1) from None


def _not_utf8(path: Path, what: str) -> InputError:
    """The error for a file that is not UTF-8, naming the first bad byte's line (found by
    decoding the file again in chunks: never the whole file in memory)."""
    import codecs

    decoder = codecs.getincrementaldecoder("utf-8-sig")()
    lines = 0
    with open(path, "rb") as f:
        while True:
            chunk = f.read(1 << 20)
            try:
                decoder.decode(chunk, final=not chunk)
            except UnicodeDecodeError as e:
                data = e.object
                line = lines + data[: e.start].count(b"\n") + 1
                return InputError(path, f"not UTF-8 text (byte 0x{data[e.start]:02x}){_resave(what)}", line)
            if not chunk:
                return InputError(path, f"not UTF-8 text{_resave(what)}")
            lines += chunk.count(b"\n")


# -- JSONL ---------------------------------------------------------------------------------------


def read_jsonl(path: Path, rel: str, opts: ReadOptions) -> Iterator[CmsRecord]:
    """Records of a JSONL(.gz/.zst) export, read as ``synthfilter run`` reads them, but for a text
    field holding HTML (a CMS's API export): converted to text as a CSV cell is, for the checks
    (the record itself, and so an approved line, stays as read)."""
    from synthfilter.io.shards import ShardReader

    fmt = shard_format(path)
    compression = fmt[1] if fmt else None
    spec = FieldSpec(opts.text_field, opts.id_field)
    reader = ShardReader(Shard(path=path, rel=rel, format="jsonl", compression=compression),
                         max_line_bytes=opts.max_line_bytes, fields=(opts.text_field, opts.id_field or "id"))
    for rec in reader:
        if rec.error is not None:
            raise InputError(path, rec.error, rec.line)
        rid, text, _, error = spec.extract(rec.obj, rel, rec.line)
        if text is not None and _looks_like_html(text):
            text = html_to_text(text)
            if not text:
                text, error = None, "no text (the HTML in the text field holds none)"
        obj = rec.obj
        yield CmsRecord(
            id=rid, text=text, title=_str_or_none(obj.get("title")),
            link=_str_or_none(obj.get("url")) or _str_or_none(obj.get("link")),
            path=rel, source=f"{rel}:{rec.line}", error=error, record=obj, raw=rec.raw,
        )


# -- detection and the whole read ---------------------------------------------------------------


def _first_line_is_json(head: bytes) -> bool:
    """Whether the first non-blank line of ``head`` (a file's first bytes) is a JSON object; a
    line longer than ``head`` counts when it opens like one."""
    import orjson

    rest = head.lstrip(b"\xef\xbb\xbf")
    while rest:
        line, newline, rest = rest.partition(b"\n")
        line = line.strip()
        if not line:
            continue
        if not newline:  # cut by the end of head: decide by how it opens
            return line.startswith(b"{")
        try:
            return isinstance(orjson.loads(line), dict)
        except orjson.JSONDecodeError:
            return False
    return True  # nothing but blank lines: read as JSONL, which says the file has no record


_JSON_DOCUMENT = ("a JSON document (an API or CMS export), not JSON Lines: write one object per line first, e.g. "
                  "jq -c '.[]' posts.json > posts.jsonl (or the list that holds the posts, jq -c "
                  "'.db[0].data.posts[]' for a Ghost export), then pass --text-field (e.g. content.rendered)")


def detect_format(path: Path) -> str:
    """The export format of a file, from its name, else from its first bytes."""
    low = path.name.lower()
    for suffixes, fmt in ((JSONL_SUFFIXES, "jsonl"), (CSV_SUFFIXES, "csv"), (XML_SUFFIXES, "wxr"),
                          (MARKDOWN_SUFFIXES, "markdown"), (HTML_SUFFIXES, "html")):
        if low.endswith(suffixes):
            if fmt == "jsonl" and low.endswith(".jsonl") and path.is_file():
                # A JSON array saved under a .jsonl name is the same export as a .json one.
                with open(path, "rb") as f:
                    if f.read(1024).lstrip(b"\xef\xbb\xbf \t\r\n").startswith(b"["):
                        raise InputError(path, _JSON_DOCUMENT)
            return fmt
    with open(path, "rb") as f:
        raw_head = f.read(1 << 16)
    head = raw_head[:1024].lstrip(b"\xef\xbb\xbf \t\r\n").lower()
    if raw_head.startswith((b"\x1f\x8b", b"PK\x03\x04", b"\x28\xb5\x2f\xfd")):
        kind = {b"\x1f": "gzip", b"P": "zip", b"\x28": "zstd"}[raw_head[:1]]
        raise InputError(path, f"a {kind}-compressed file whose name does not say what it holds: decompress it "
                               "first (JSONL is read compressed when named .jsonl.gz or .jsonl.zst)")
    if head.startswith(b"[") or (low.endswith(".json") and not _first_line_is_json(raw_head)):
        raise InputError(path, _JSON_DOCUMENT)
    if head.startswith((b"<?xml", b"<rss")):
        return "wxr"
    if head.startswith((b"<!doctype html", b"<html")):
        return "html"
    if head.startswith(b"{"):
        return "jsonl"
    if head.startswith((b"---", b"+++")):
        return "markdown"
    raise InputError(path, f"cannot tell the export format from the name or the content; pass --format ({', '.join(FORMATS)})")


def read_exports(paths: Sequence[str | os.PathLike[str]], opts: ReadOptions | None = None) -> ExportRead:
    """Read every export (files and folders) into records, in a stable order.

    Ids are unique across the whole read: an id seen in two inputs is qualified with its
    file (``<file>:<id>``). Holds every record: ``iter_exports`` streams them instead.
    """
    inputs: list[ExportInput] = []
    ignored: list[str] = []
    records = list(iter_exports(paths, opts, inputs, ignored))
    make_ids_unique(records)
    return ExportRead(records=records, inputs=inputs, ignored_files=ignored)


def iter_exports(paths: Sequence[str | os.PathLike[str]], opts: ReadOptions | None = None,
                 inputs: list[ExportInput] | None = None, ignored: list[str] | None = None) -> Iterator[CmsRecord]:
    """The records of every export, one at a time, as ``read_exports`` orders them (ids as
    read, not yet made unique). ``inputs`` gets each file's entry once its records are read,
    ``ignored`` the files of a folder that are not Markdown or HTML."""
    opts = opts or ReadOptions()
    inputs = inputs if inputs is not None else []
    ignored = ignored if ignored is not None else []
    if opts.format is not None and opts.format not in FORMATS:
        raise InputError(None, f"unknown --format {opts.format!r}; choose from {', '.join(FORMATS)}")
    if not paths:
        raise InputError(None, "no EXPORT given: pass WXR (.xml), CSV, JSONL files or folders of Markdown / HTML files")
    for raw in paths:
        if not Path(raw).exists():
            raise InputError(Path(raw), "path does not exist")
        _refuse_special(Path(raw))
    for raw in paths:
        p = Path(raw)
        if p.is_dir():
            if opts.format not in (None, "markdown", "html"):
                raise InputError(p, f"is a folder; --format {opts.format} reads files (folders hold Markdown or HTML)")
            files = _folder_files(p, opts.format, ignored)
            if not files:
                raise InputError(p, "no Markdown (.md) or HTML (.html) files in this folder")
            for fp, rel, kind in files:
                rec = (read_markdown_file(fp, rel, opts.post_statuses) if kind == "markdown"
                       else read_html_file(fp, rel, opts.post_statuses))
                yield rec
                inputs.append(_input(fp, kind, 1, 1 if rec.excluded else 0))
            continue
        fmt = opts.format or detect_format(p)
        rel = p.name
        if fmt == "wxr":
            got: Iterator[CmsRecord] = read_wxr(p, rel, opts.post_types, opts.post_statuses)
        elif fmt == "csv":
            got = read_csv(p, rel, opts)
        elif fmt == "jsonl":
            got = read_jsonl(p, rel, opts)
        elif fmt == "markdown":
            got = iter([read_markdown_file(p, rel, opts.post_statuses)])
        else:
            got = iter([read_html_file(p, rel, opts.post_statuses)])
        n = excluded = with_text = 0
        first_error = None
        for rec in got:
            n += 1
            excluded += rec.excluded is not None
            if rec.text is not None:
                with_text += 1
            elif first_error is None:
                first_error = rec.error
            yield rec
        if fmt in ("csv", "jsonl") and n and not with_text:
            field_name = opts.text_column or "text" if fmt == "csv" else opts.text_field
            raise InputError(p, f"no record has text ({first_error}); is {field_name!r} the right "
                             f"{'column' if fmt == 'csv' else 'field'}?")
        inputs.append(_input(p, fmt, n, excluded))


def _input(path: Path, fmt: str, records: int, excluded: int) -> ExportInput:
    return ExportInput(path=str(path), format=fmt, size=path.stat().st_size, sha256=file_sha256(path),
                       records=records, excluded=excluded)


def make_ids_unique(records: list[CmsRecord]) -> None:
    """Qualify ids that occur more than once with their file (``<file>:<id>``, then ``#2``...)."""
    counts = Counter(r.id for r in records)
    if all(c == 1 for c in counts.values()):
        return
    seen: Counter[str] = Counter()
    for r in records:
        if counts[r.id] > 1:
            base = f"{r.path or r.source}:{r.id}"
            seen[base] += 1
            r.id = base if seen[base] == 1 else f"{base}#{seen[base]}"
