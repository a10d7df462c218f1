"""Over-deep HTML, read in time linear in its size (``synthfilter.io.cms.html_to_text``).

lexbor's parser checks "has an element in scope" by walking its stack of open elements, so its
time is the number of tags times the nesting depth: "<div>" * 64,000 takes seconds, a megabyte
of it hours. ``html_too_deep`` models the standard's tree building in one pass over the tags to
tell whether a page would nest deeper than browsers do; such a page is read by ``flat_text`` /
``flat_page``, one pass over its tokens with ``_walk_text``'s rules. tests/io/test_cms_deep.py
checks the model against lexbor on random tag soup.
"""

from __future__ import annotations

import re
from collections import Counter
from typing import Any, Iterator

from synthfilter.io.cms import _DROP, _LINE, _MAIN_DROP, _PAGE_DROP, _PARAGRAPH, _str_or_none, _TextBuilder

# -- over-deep HTML: a linear pre-scan, and a linear extractor ------------------------------------
#
# lexbor checks "has an element in scope" (as Chromium's parser does, which caps its tree at 512
# levels) by walking the stack of open elements, so its time is the number of tags times the
# depth. A page goes to lexbor only when a model of the standard's tree building (``_DepthModel``)
# says the stack stays within the bound; else ``flat_text`` reads it, one pass over its tokens.

_MAX_HTML_DEPTH = 512
# Unclosed formatting elements (<b>, <font>, <a> ...) are re-opened by the parser after every
# block that closed them: 8 of them add 8 elements to every later paragraph. Pages keep 1 to 3.
_MAX_HTML_FORMATTING = 8
_QUICK_TAGS = 256

# The start of every markup construct: a tag, a comment, CDATA, a bogus comment or doctype, "</".
# A tag is read whole, as the tokenizer reads it: its name, its attributes (quotes only after
# "="), "/" when it is self-closing, then ">" (absent at the end of the input: the tag is then
# dropped). Every character but ">" continues the attributes, so once "<" and a letter match,
# the match never fails nor backtracks: the search is linear.
_MARKUP = re.compile(
    r"<(?:(/?)([A-Za-z][^\t\n\f\r />]*)((?:[\t\n\f\r ]+|/(?!>)|[^\t\n\f\r />][^\t\n\f\r />=]*"
    r"(?:[\t\n\f\r ]*=[\t\n\f\r ]*(?:\"[^\"]*\"?|'[^']*'?|[^\t\n\f\r >]*))?)*)(/?)(>?)"
    r"|!--|!\[CDATA\[|[!?]|/)"
)
_ATTRIBUTE_PAIR = re.compile(
    r"([^\t\n\f\r />][^\t\n\f\r />=]*)(?:[\t\n\f\r ]*=[\t\n\f\r ]*(\"[^\"]*\"?|'[^']*'?|[^\t\n\f\r >]*))?"
)
_COMMENT_END = re.compile(r"--!?>")
_SCRIPT_MARKS = re.compile(r"<!--(-*>)?|-->|<(/?)script(?=[\t\n\f\r />])", re.IGNORECASE)
_RAWTEXT, _RCDATA, _SCRIPT, _PLAINTEXT = 1, 2, 3, 4
# Elements whose content the tokenizer does not read as markup (in HTML content; in SVG and
# MathML they are ordinary elements). <noscript> is markup: lexbor parses with scripting off.
_RAW = {"style": _RAWTEXT, "xmp": _RAWTEXT, "iframe": _RAWTEXT, "noembed": _RAWTEXT, "noframes": _RAWTEXT,
        "title": _RCDATA, "textarea": _RCDATA, "script": _SCRIPT, "plaintext": _PLAINTEXT}
_RAW_END = {name: re.compile(rf"</{name}[\t\n\f\r />]", re.IGNORECASE) for name in _RAW}
_VOID = frozenset({"area", "base", "basefont", "bgsound", "br", "col", "embed", "frame", "hr", "image", "img",
                   "input", "keygen", "link", "meta", "param", "source", "track", "wbr"})
_FORMATTING = frozenset({"a", "b", "big", "code", "em", "font", "i", "nobr", "s", "small", "strike", "strong",
                         "tt", "u"})
_HEADINGS = ("h1", "h2", "h3", "h4", "h5", "h6")
# Start tags that close an open <p> (in button scope); <table> does not in quirks mode, which
# is how lexbor reads a fragment without a doctype.
_CLOSES_P = frozenset({"address", "article", "aside", "blockquote", "center", "details", "dialog", "dir", "div",
                       "dl", "fieldset", "figcaption", "figure", "footer", "header", "hgroup", "main", "menu", "nav",
                       "ol", "p", "search", "section", "summary", "ul", "pre", "listing", "form", "li", "dd", "dt",
                       "plaintext", "hr", "xmp", *_HEADINGS})
# End tags that pop up to their element when it is in scope (else are ignored).
_BLOCK_END = frozenset({"address", "article", "aside", "blockquote", "button", "center", "details", "dialog",
                        "dir", "div", "dl", "fieldset", "figcaption", "figure", "footer", "header", "hgroup",
                        "listing", "main", "menu", "nav", "ol", "pre", "search", "section", "summary", "ul",
                        "applet", "marquee", "object", "dd", "dt"})
# Start tags that end SVG or MathML content (the parser pops back to HTML first).
_BREAKOUT = frozenset({"b", "big", "blockquote", "body", "br", "center", "code", "dd", "div", "dl", "dt", "em",
                       "embed", "head", "hr", "i", "img", "li", "listing", "menu", "meta", "nobr", "ol", "p", "pre",
                       "ruby", "s", "small", "span", "strong", "strike", "sub", "sup", "table", "tt", "u", "ul",
                       "var", *_HEADINGS})
_FONT_BREAKOUT = re.compile(r"(?:^|[\t\n\f\r /])(?:color|face|size)[\t\n\f\r ]*=", re.IGNORECASE)
_MARKERS = frozenset({"td", "th", "caption", "applet", "marquee", "object", "template"})
_TABLE_SECTIONS = ("tbody", "thead", "tfoot")
_TABLE_PARTS = frozenset({"caption", "col", "colgroup", "tbody", "thead", "tfoot", "tr", "td", "th"})
_IN_TABLE = frozenset({"table", "tbody", "thead", "tfoot", "tr"})
# Void elements that re-open formatting elements before they are inserted.
_RECONSTRUCT_VOID = frozenset({"area", "br", "embed", "img", "image", "keygen", "wbr", "input"})
_BOTTOM = (None, None, 0, -1, -1, -1, -1, -1, -1, -1, None, -1)
# Start and end tags with rules of their own (the others push, or pop their open element).
_SLOW_START = frozenset({*_FORMATTING, *_VOID, *_RAW, *_CLOSES_P, *_TABLE_PARTS, "html", "body", "head",
                         "frameset", "svg", "math", "table", "select", "button", "option", "optgroup", "rb", "rp",
                         "rt", "rtc", "template"})
_SLOW_END = frozenset({*_MARKERS, "form"})
# What "generate implied end tags" pops; the nodes under which blank text stays in a table.
_IMPLIED_END = frozenset({"dd", "dt", "li", "optgroup", "option", "p", "rb", "rp", "rt", "rtc"})
_TABLE_TEXT = frozenset({"table", "tbody", "template", "tfoot", "thead", "tr"})

# Element categories, as bits: the standard's "special" elements; the boundaries of the default
# scope, of button scope (and <button>), of list item scope (and <ol>, <ul>), of table scope;
# the special elements that stop the search for an open <li> (all but address, div and p).
_SPECIAL, _SCOPE, _BUTTON, _LIST, _TABLE, _LI_STOP, _TABLE_MODE, _MARKER = 1, 2, 4, 8, 16, 32, 64, 128
_HTML_SPECIAL = ("address applet area article aside base basefont bgsound blockquote body br button caption "
                 "center col colgroup dd details dialog dir div dl dt embed fieldset figcaption figure footer form "
                 "frame frameset h1 h2 h3 h4 h5 h6 head header hgroup hr html iframe img input keygen li link "
                 "listing main marquee menu meta nav noembed noframes noscript object ol p param plaintext pre "
                 "script search section select source style summary table tbody td template textarea tfoot th "
                 "thead title tr track ul wbr xmp").split()
_CATEGORY: dict[str, int] = {}
for _name in _HTML_SPECIAL:
    _CATEGORY[_name] = _SPECIAL | (0 if _name in ("address", "div", "p") else _LI_STOP)
# lexbor follows the standard's customizable <select>: its content is parsed as in the body, and
# the select bounds the default scope (a <p> or <div> outside it is not closed from within).
for _name in ("applet", "caption", "html", "table", "td", "th", "marquee", "object", "template", "select"):
    _CATEGORY[_name] |= _SCOPE
for _name in ("html", "table", "template"):
    _CATEGORY[_name] |= _TABLE
for _name in ("table", "tbody", "thead", "tfoot", "tr", "td", "th", "caption", "colgroup", "template"):
    _CATEGORY[_name] |= _TABLE_MODE  # the elements that set a table insertion mode
for _name in _MARKERS:
    _CATEGORY[_name] |= _MARKER
_CATEGORY["button"] |= _BUTTON
_CATEGORY["ol"] |= _LIST
_CATEGORY["ul"] |= _LIST
_FOREIGN_BOUNDARY = _SPECIAL | _SCOPE | _LI_STOP
# SVG and MathML elements that are special, scope boundaries, and where HTML content resumes.
_FOREIGN_CATEGORY = {1: {"foreignobject": _FOREIGN_BOUNDARY, "desc": _FOREIGN_BOUNDARY, "title": _FOREIGN_BOUNDARY},
                     2: {name: _FOREIGN_BOUNDARY for name in ("mi", "mo", "mn", "ms", "mtext", "annotation-xml")}}
_INTEGRATION_POINTS = {1: frozenset({"foreignobject", "desc", "title"}),
                       2: frozenset({"mi", "mo", "mn", "ms", "mtext"})}
_INTEGRATION_NAMES = _INTEGRATION_POINTS[1] | _INTEGRATION_POINTS[2]
del _name

_TEXT, _START, _END, _RAW_TEXT = 0, 1, 2, 3


class _ScanState:
    """What the consumer of ``_html_tokens`` knows of the tree and the tokenizer needs: whether
    the last start tag went into SVG / MathML (its content is then markup, not raw text), and
    whether the current node is foreign (``<![CDATA[`` is then a text section); and where the
    last tag is."""

    __slots__ = ("foreign_tag", "foreign", "tag_start", "tag_end")

    def __init__(self) -> None:
        self.foreign_tag = False
        self.foreign = False
        self.tag_start = self.tag_end = 0  # where the last tag yielded starts and ends


def _comment_end(s: str, j: int) -> int:
    """Where the comment whose text starts at ``j`` (after ``<!--``) ends."""
    if s.startswith(">", j):
        return j + 1
    if s.startswith("->", j):
        return j + 2
    m = _COMMENT_END.search(s, j)
    return m.end() if m is not None else len(s)


def _script_end(s: str, j: int) -> int:
    """Where the text of a <script> starting at ``j`` ends: its ``</script``, with the
    tokenizer's escaped states (``<!--`` then ``<script>`` hides the next ``</script>``)."""
    state = 0  # 0: script data, 1: escaped (after <!--), 2: double escaped (after <!--<script>)
    for m in _SCRIPT_MARKS.finditer(s, j):
        mark = m.group(0)
        if mark[1] == "!":
            if m.group(1) is not None:
                state = 0
            elif state == 0:
                state = 1
        elif mark[0] == "-":
            state = 0
        elif m.group(2):
            if state != 2:
                return m.start()
            state = 1
        elif state == 1:
            state = 2
    return len(s)


def _html_tokens(s: str, st: _ScanState) -> Iterator[tuple[int, str, str, bool]]:
    """The tokens of ``s`` as an HTML tokenizer reads them, in one pass: ``(_TEXT, "", text,
    decode)``, ``(_START, name, attributes, self_closing)``, ``(_END, name, attributes, _)`` and
    ``(_RAW_TEXT, name, text, decode)`` for the content of <script>, <style>, <title> ... .
    Comments, doctypes and processing instructions are skipped; a tag cut by the end of the input
    is dropped, as the tokenizer does. The consumer updates ``st`` after each tag."""
    n = len(s)
    pos = 0
    search = _MARKUP.search
    raw = _RAW
    while pos < n:
        m = search(s, pos)
        if m is None:
            yield _TEXT, "", s[pos:], True
            return
        i = m.start()
        if i > pos:
            yield _TEXT, "", s[pos:i], True
        closing, name, attrs, slash, gt = m.groups()
        if name is not None:
            if not gt:
                return  # the input ends inside the tag
            pos = m.end()
            st.tag_start = i
            st.tag_end = pos
            name = name.lower()
            if closing:
                yield _END, name, attrs, False
                continue
            yield _START, name, attrs, bool(slash)
            kind = raw.get(name)
            if kind is not None and not st.foreign_tag:
                stop = _raw_stop(s, pos, kind, name)
                if stop > pos:
                    yield _RAW_TEXT, name, s[pos:stop], kind == _RCDATA
                pos = stop
            continue
        if m.group(0) == "<![CDATA[" and st.foreign:
            j = s.find("]]>", m.end())
            yield _TEXT, "", s[m.end(): j if j >= 0 else n], False
        elif m.group(0) == "</" and i + 2 >= n:
            yield _TEXT, "", "</", False
        pos = _skip_markup(s, m, st.foreign)


class _GiveUp(Exception):
    """The markup does something ``_DepthModel`` does not follow exactly."""


class _DepthModel:
    """The stack of open elements as the HTML standard's tree builder grows it (lexbor's, which
    follows the standard's customizable <select>), kept to what decides its depth: the rules that
    push and pop (implied end tags, scopes, the table insertion modes, SVG and MathML, <select>,
    <form>) and the list of active formatting elements, whose entries the parser re-opens when
    text or an inline tag follows a block that closed them.

    The model follows the parser exactly or gives up (``_GiveUp``): an end tag must never pop in
    the model what the parser keeps, or a crafted page could look shallow while the parser nests
    it deeply. It gives up where the parser moves elements in ways it does not follow: the
    adoption agency algorithm with a special element inside the formatting element (``<b><p>x</b>``),
    a ``</form>`` that closes a form below other elements, table parts directly in a <template>,
    framesets, MathML annotations (which may hold HTML), formatting elements whose attributes it
    cannot compare as the parser does (an entity, a repeated name). Then ``flat_text`` reads the
    page: the cost of giving up is only that its text comes from the extractor.
    """

    def __init__(self) -> None:
        # Each element: (key, name, namespace, then the index of the nearest element at or below
        # it that is special, a default / button / list / table scope boundary, a stop for <li>,
        # an HTML element), its formatting-list entry (or None), the nearest table-mode element.
        self.stack: list[tuple[Any, ...]] = []
        self.where: dict[str, list[int]] = {}  # indices of the open elements, by key
        # Active formatting elements: [name, attributes, state], state being the element's index
        # on the stack, -1 when it is not on the stack, -2 once it left the list; None: a marker.
        self.formatting: list[Any] = []
        self.markers: list[int] = []  # where the markers are in ``formatting``
        self.form: tuple[Any, ...] | None = None  # the form element pointer
        self.skip_newline = False  # a newline right after <pre> or <listing> is not text
        self.max_depth = 0

    # -- the stack ---------------------------------------------------------------------------

    def top(self, key: str) -> int:
        at = self.where.get(key)
        return at[-1] if at else -1

    def push(self, name: str, ns: int = 0, entry: list[Any] | None = None) -> tuple[Any, ...]:
        stack = self.stack
        i = len(stack)
        if ns:
            key = f"{ns}:{name}"
            bits = _FOREIGN_CATEGORY[ns].get(name, 0)
        else:
            key = name
            bits = _CATEGORY.get(name, 0)
        prev = stack[-1] if stack else _BOTTOM
        item = (key, name, ns,
                i if bits & _SPECIAL else prev[3],
                i if bits & _SCOPE else prev[4],
                i if bits & (_SCOPE | _BUTTON) else prev[5],
                i if bits & (_SCOPE | _LIST) else prev[6],
                i if bits & _TABLE else prev[7],
                i if bits & _LI_STOP else prev[8],
                i if ns == 0 else prev[9],
                entry,
                i if bits & _TABLE_MODE else prev[11])
        stack.append(item)
        if entry is not None:
            entry[2] = i
        at = self.where.get(key)
        if at is None:
            self.where[key] = [i]
        else:
            at.append(i)
        if bits & _MARKER:
            self.markers.append(len(self.formatting))
            self.formatting.append(None)
        if i >= self.max_depth:
            self.max_depth = i + 1
        return item

    def pop_to(self, p: int) -> None:
        """Pop the element at index ``p`` and everything above it."""
        stack = self.stack
        where = self.where
        for j in range(p, len(stack)):
            item = stack[j]
            where[item[0]].pop()
            entry = item[10]
            if entry is not None and entry[2] >= 0:
                entry[2] = -1
        del stack[p:]

    def clear_to_marker(self) -> None:
        """Closing a cell, caption, object or template clears the formatting list up to its last
        marker (popping such an element otherwise, as a template's end tag does with an object
        inside, leaves the marker: the parser does the same)."""
        if self.markers:
            at = self.markers.pop()
            for entry in self.formatting[at + 1:]:
                entry[2] = -2
            del self.formatting[at:]

    def current(self) -> str | None:
        """The current node's name, when it is an HTML element."""
        return self.stack[-1][0] if self.stack and not self.stack[-1][2] else None

    def in_scope(self, key: str, boundary: int) -> int:
        """The index of the topmost ``key`` when it is in the scope whose nearest boundary is kept
        in field ``boundary`` of an element (4: default, 5: button, 6: list item, 7: table), else -1."""
        p = self.top(key)
        return p if p >= 0 and self.stack[-1][boundary] <= p else -1

    def implied_end_tags(self, keep: str | None = None) -> None:
        """Pop <p>, <li>, <option> ... from the top (all but ``keep``)."""
        stack = self.stack
        p = len(stack)
        while p > 0 and stack[p - 1][0] in _IMPLIED_END and stack[p - 1][0] != keep:
            p -= 1
        if p < len(stack):
            self.pop_to(p)

    def close_p(self) -> None:
        p = self.in_scope("p", 5)
        if p >= 0:
            self.pop_to(p)

    def table_mode(self) -> str | None:
        """The element that sets the insertion mode among the table ones (None: in body)."""
        stack = self.stack
        return stack[stack[-1][11]][1] if stack and stack[-1][11] >= 0 else None

    def leave_colgroup(self) -> None:
        """In a column group, anything but <col> and <template> closes it first."""
        if self.stack and self.stack[-1][0] == "colgroup":
            self.pop_to(len(self.stack) - 1)

    # -- the list of active formatting elements -----------------------------------------------

    def open_formatting(self) -> int:
        """Entries of the list of active formatting elements after its last marker."""
        return len(self.formatting) - (self.markers[-1] + 1 if self.markers else 0)

    def reconstruct(self) -> None:
        """Re-open the formatting elements after the last marker that are not on the stack."""
        f = self.formatting
        if not f or f[-1] is None or f[-1][2] >= 0:
            return
        j = len(f) - 1
        while j > 0 and f[j - 1] is not None and f[j - 1][2] < 0:
            j -= 1
        for entry in f[j:]:
            self.push(entry[0], 0, entry)

    def add_formatting(self, name: str, attrs: str) -> None:
        """Push a formatting element and add it to the list: a fourth identical entry (same name
        and attributes) after the last marker drops the earliest ("Noah's Ark")."""
        f = self.formatting
        start = self.markers[-1] + 1 if self.markers else 0
        entry: list[Any] = [name, attrs, -1]
        same = [k for k in range(start, len(f)) if f[k][0] == name]
        if len(same) >= 3:
            key = _attribute_key(attrs)
            same = [k for k in same if _attribute_key(f[k][1]) == key]
            if len(same) >= 3:
                f[same[0]][2] = -2
                del f[same[0]]
        f.append(entry)
        self.push(name, 0, entry)

    def adoption_agency(self, name: str) -> None:
        """The end tag of a formatting element (and what <a> and <nobr> do to an open one)."""
        stack = self.stack
        top = stack[-1] if stack else None
        if top is not None and top[0] == name and (top[10] is None or top[10][2] == -2):
            self.pop_to(len(stack) - 1)  # the current node, not in the list: popped
            return
        f = self.formatting
        start = self.markers[-1] + 1 if self.markers else 0
        k = len(f) - 1
        while k >= start and f[k][0] != name:
            k -= 1
        if k < start:
            self.any_other_end(name)
            return
        entry = f[k]
        p = entry[2]
        if p < 0:  # not open: it only leaves the list
            entry[2] = -2
            del f[k]
        elif stack[-1][4] > p:
            return  # not in scope: ignored
        elif stack[-1][3] > p:
            raise _GiveUp  # a special element inside: the parser moves elements around
        else:
            entry[2] = -2
            del f[k]
            self.pop_to(p)

    def any_other_end(self, name: str) -> None:
        """The standard's "any other end tag": pops to the element unless a special one is above it."""
        p = self.top(name)
        if p >= 0 and self.stack[-1][3] <= p:
            self.pop_to(p)

    # -- SVG and MathML ------------------------------------------------------------------------

    def foreign_current(self, name: str | None) -> int:
        """The namespace a start tag ``name`` (None: an end tag) is handled in: 0 for HTML rules,
        else that of the current node."""
        if not self.stack:
            return 0
        item = self.stack[-1]
        ns = item[2]
        if ns and name is not None and item[1] in _INTEGRATION_POINTS[ns] and name not in ("mglyph", "malignmark"):
            return 0
        return ns

    def leave_foreign(self) -> None:
        """Pop SVG / MathML elements until the current node is HTML or an integration point."""
        stack = self.stack
        p = len(stack)
        while p > 0 and stack[p - 1][2] and stack[p - 1][1] not in _INTEGRATION_POINTS[stack[p - 1][2]]:
            p -= 1
        if p < len(stack):
            self.pop_to(p)

    # -- tokens ----------------------------------------------------------------------------------

    def text(self, text: str) -> None:
        """Text re-opens the formatting elements, but for blank text where a table holds it
        directly, text in SVG / MathML, and text the parser drops."""
        if self.skip_newline:
            self.skip_newline = False
            if text.startswith("\n"):
                text = text[1:]
        f = self.formatting
        if not f or f[-1] is None or f[-1][2] >= 0 or not text.strip("\x00"):
            return
        stack = self.stack
        if stack:
            if stack[-1][2]:
                return
            mode = self.table_mode()
            blank = not text.strip("\t\n\f\r ")
            if mode == "colgroup" and stack[-1][0] == "colgroup":
                if blank:
                    return
                self.leave_colgroup()
            elif mode in _IN_TABLE and blank and stack[-1][0] in _TABLE_TEXT:
                return
        self.reconstruct()

    def start(self, name: str, attrs: str, self_closing: bool) -> bool:
        """Apply a start tag; True when it was handled as SVG / MathML content."""
        self.skip_newline = False
        stack = self.stack
        if stack and self.foreign_current(name):
            if name == "annotation-xml":
                raise _GiveUp  # it may hold HTML (by its encoding attribute)
            if name in _BREAKOUT or (name == "font" and _FONT_BREAKOUT.search(attrs)):
                self.leave_foreign()
            else:
                if not self_closing:
                    self.push(name, stack[-1][2])
                return True
        if name == "frameset":
            raise _GiveUp
        if stack and stack[-1][0] == "colgroup" and name not in ("col", "template"):
            self.leave_colgroup()
        if name in _FORMATTING:
            if name == "a":
                f = self.formatting
                start = self.markers[-1] + 1 if self.markers else 0
                k = next((k for k in range(len(f) - 1, start - 1, -1) if f[k][0] == "a"), -1)
                if k >= 0:
                    entry = f[k]
                    self.adoption_agency("a")
                    if entry[2] != -2:
                        raise _GiveUp  # still listed: the parser takes it out of the list and the stack
            elif name == "nobr":
                self.reconstruct()
                if self.in_scope("nobr", 4) >= 0:
                    self.adoption_agency("nobr")
            self.reconstruct()
            self.add_formatting(name, attrs)
            return False
        if name == "col":
            self.table_part(name)
            return False
        if name in _VOID or name in ("html", "body", "head"):
            if name == "hr":
                self.close_p()
                if self.in_scope("select", 4) >= 0:
                    self.implied_end_tags()
            elif name == "input":  # (lexbor reads <keygen> as <img>)
                p = self.in_scope("select", 4)
                if p >= 0:
                    self.pop_to(p)
            if name in _RECONSTRUCT_VOID:
                self.reconstruct()
            return False
        if name in _RAW:
            if name in ("xmp", "plaintext"):
                self.close_p()
            if name == "xmp":
                self.reconstruct()
            if name == "plaintext":
                self.push(name)
            return False
        if name in ("svg", "math"):
            self.reconstruct()
            if not self_closing:
                self.push(name, 1 if name == "svg" else 2)
            return False
        if name in _CLOSES_P:
            if name == "form":
                template = self.top("template") >= 0
                if self.form is not None and not template:
                    return False  # a form inside a form is ignored
                if self.table_mode() in _IN_TABLE:
                    if not template:
                        self.form = ()  # inserted and popped at once; the pointer is set
                    return False
            elif name == "li":  # closes an open <li> unless a special element is in between
                p = self.top("li")
                if p >= 0 and stack[-1][8] <= p:
                    self.pop_to(p)
            elif name in ("dd", "dt"):
                p = max(self.top("dd"), self.top("dt"))
                if p >= 0 and stack[-1][8] <= p:
                    self.pop_to(p)
            self.close_p()
            if name in _HEADINGS and self.current() in _HEADINGS:
                self.pop_to(len(stack) - 1)
            item = self.push(name)
            if name == "form" and self.top("template") < 0:
                self.form = item
            elif name in ("pre", "listing"):
                self.skip_newline = True
            return False
        if name in _TABLE_PARTS:
            self.table_part(name)
            return False
        if name == "table":
            if self.table_mode() in _IN_TABLE:
                p = self.in_scope("table", 7)
                if p < 0:
                    return False
                self.pop_to(p)
        elif name == "select":
            p = self.in_scope("select", 4)
            if p >= 0:  # a select inside a select closes it
                self.pop_to(p)
                return False
            self.reconstruct()
        elif name == "button":
            p = self.in_scope("button", 4)
            if p >= 0:
                self.pop_to(p)
            self.reconstruct()
        elif name in ("option", "optgroup"):
            if self.in_scope("select", 4) >= 0:
                self.implied_end_tags("optgroup" if name == "option" else None)
            elif self.current() == "option":
                self.pop_to(len(stack) - 1)
            self.reconstruct()
        elif name in ("rb", "rtc", "rp", "rt"):
            if self.in_scope("ruby", 4) >= 0:
                self.implied_end_tags("rtc" if name in ("rp", "rt") else None)
        elif name != "template":  # applet, marquee, object, and any other element
            self.reconstruct()
        self.push(name)
        return False

    def table_part(self, name: str) -> None:
        """A caption, column group, row group, row or cell start tag, by the table insertion modes:
        it closes the open cell, row, row group or caption it cannot go in, opens the row group
        and row it needs, and is ignored outside a table."""
        for _ in range(6):
            stack = self.stack
            mode = self.table_mode()
            if mode is None:
                return  # in the body: ignored
            at = stack[-1][11]
            if mode == "template":
                raise _GiveUp  # a template's own insertion modes, not followed here
            if mode in ("td", "th"):
                p = max(self.in_scope("td", 7), self.in_scope("th", 7))
                if p < 0:
                    return
                self.pop_to(p)
                self.clear_to_marker()
            elif mode == "caption":
                p = self.in_scope("caption", 7)
                if p < 0:
                    return
                self.pop_to(p)
                self.clear_to_marker()
            elif mode == "colgroup":
                if stack[-1][0] != "colgroup":
                    return
                self.pop_to(len(stack) - 1)
            elif mode == "tr":
                if name in ("td", "th"):
                    self.pop_to(at + 1)
                    self.push(name)
                    return
                self.pop_to(at)
            elif mode in _TABLE_SECTIONS:
                if name in ("tr", "td", "th"):
                    self.pop_to(at + 1)
                    self.push("tr")
                    if name != "tr":
                        self.push(name)
                    return
                self.pop_to(at)
            else:  # in table
                self.pop_to(at + 1)
                if name in ("tr", "td", "th"):
                    self.push("tbody")
                    self.push("tr")
                    if name != "tr":
                        self.push(name)
                elif name == "col":
                    self.push("colgroup")
                else:
                    self.push(name)
                return

    def end(self, name: str) -> None:
        """Apply an end tag."""
        self.skip_newline = False
        stack = self.stack
        if stack and stack[-1][2]:  # the current node is SVG / MathML
            if name in ("br", "p"):
                self.leave_foreign()
            else:
                p = max(self.top(f"1:{name}"), self.top(f"2:{name}"))
                if p > stack[-1][9]:  # an SVG / MathML element above the nearest HTML one
                    self.pop_to(p)
                    return
                if stack[-1][9] < 0:
                    return
        if name == "br":  # read as <br>
            self.reconstruct()
            return
        if not stack:
            return
        if stack[-1][0] == "colgroup" and name not in ("colgroup", "col", "template"):
            self.leave_colgroup()
            if not stack:
                return
        if name == "p":
            self.close_p()
        elif name == "li":
            p = self.in_scope("li", 6)
            if p >= 0:
                self.pop_to(p)
        elif name in _HEADINGS:
            p = max(self.in_scope(h, 4) for h in _HEADINGS)
            if p >= 0:
                self.pop_to(p)
        elif name in _BLOCK_END or name == "select":
            p = self.in_scope(name, 4)
            if p >= 0:
                self.pop_to(p)
                if name in _MARKERS:
                    self.clear_to_marker()
        elif name in _FORMATTING:
            self.adoption_agency(name)
        elif name in ("td", "th", "caption"):
            p = self.in_scope(name, 7)
            if p >= 0:
                self.pop_to(p)
                self.clear_to_marker()
        elif name in ("tr", "table", *_TABLE_SECTIONS):
            p = self.in_scope(name, 7)
            if p >= 0:
                mode = self.table_mode()
                if mode in ("td", "th") or (mode == "caption" and name == "table"):
                    self.pop_to(stack[-1][11])  # the open cell (or caption) is closed first
                    self.clear_to_marker()
                self.pop_to(p)
        elif name == "template":
            p = self.top(name)
            if p >= 0:
                self.pop_to(p)
                self.clear_to_marker()
        elif name == "form":
            self.end_form()
        elif name == "colgroup":
            if stack[-1][0] == name:
                self.pop_to(len(stack) - 1)
        elif name not in ("html", "body", "head", "col"):
            self.any_other_end(name)

    def end_form(self) -> None:
        stack = self.stack
        if self.top("template") >= 0:
            p = self.in_scope("form", 4)
            if p >= 0:
                self.pop_to(p)
            return
        form, self.form = self.form, None
        if not form:
            return
        p = self.top("form")
        while p >= 0 and stack[p] is not form:
            p = next((q for q in reversed(self.where["form"]) if q < p), -1)
        if p < 0 or stack[-1][4] > p:
            return  # not open, or not in scope: ignored
        self.implied_end_tags()
        if stack[-1] is not form:
            raise _GiveUp  # the parser removes the form from below other elements
        self.pop_to(len(stack) - 1)


def _attribute_key(raw: str) -> tuple[tuple[str, str], ...]:
    """A formatting element's attributes as the parser compares them (names and values, in any
    order); ``_GiveUp`` where this reading could differ from the parser's (a repeated name, an
    entity in a value)."""
    if "&" in raw:
        raise _GiveUp
    seen: dict[str, str] = {}
    for m in _ATTRIBUTE_PAIR.finditer(raw):
        name = m.group(1).lower()
        if name in seen:
            raise _GiveUp
        value = m.group(2) or ""
        if value[:1] in ("'", '"'):
            value = value[1:-1] if len(value) > 1 and value[-1] == value[0] else value[1:]
        seen[name] = value
    return tuple(sorted(seen.items()))


def _raw_stop(s: str, pos: int, kind: int, name: str) -> int:
    """Where the raw text of a <script>, <style>, <title> ... opened at ``pos`` ends."""
    if kind == _PLAINTEXT:
        return len(s)
    if kind == _SCRIPT:
        return _script_end(s, pos)
    e = _RAW_END[name].search(s, pos)
    return e.start() if e is not None else len(s)


def _skip_markup(s: str, m: Any, foreign: bool) -> int:
    """Where a comment, doctype, bogus comment or CDATA section (``m``, not a tag) ends."""
    mark = m.group(0)
    n = len(s)
    if mark == "<!--":
        return _comment_end(s, m.end())
    if mark == "<![CDATA[" and foreign:
        j = s.find("]]>", m.end())
        return j + 3 if j >= 0 else n
    i = m.start()
    if mark == "</" and s.startswith(">", i + 2):
        return i + 3
    if mark == "</" and i + 2 >= n:
        return n
    j = s.find(">", i + 2)  # a doctype, a processing instruction, "<!x" or "</1": up to ">"
    return j + 1 if j >= 0 else n


def html_depth(markup: str, limit: int | None = _MAX_HTML_DEPTH) -> int:
    """The deepest the parser's stack of open elements gets on ``markup``, as ``_DepthModel``
    estimates it; once past ``limit`` (or past ``_MAX_HTML_FORMATTING`` formatting elements to
    re-open), the scan stops and says ``limit + 1``. The tags are read as ``_html_tokens`` reads
    them, inline: this runs on every large page."""
    model = _DepthModel()
    stack = model.stack
    where = model.where
    formatting = model.formatting
    markers = model.markers
    s = markup
    n = len(s)
    pos = 0
    search = _MARKUP.search
    bound = limit if limit is not None else n + 1
    foreign_tag = False
    try:
        while pos < n:
            m = search(s, pos)
            i = m.start() if m is not None else n
            if i > pos and formatting and formatting[-1] is not None and formatting[-1][2] < 0:
                model.text(s[pos:i])  # text re-opens formatting elements
            if m is None:
                break
            closing, name, attrs, slash, gt = m.groups()
            if name is None:
                pos = _skip_markup(s, m, bool(stack) and stack[-1][2] != 0)
                continue
            if not gt:
                break  # the input ends inside the tag
            pos = m.end()
            name = name.lower()
            if closing:
                top = stack[-1] if stack else _BOTTOM
                at = where.get(name)
                # the common cases first: the end tag of the current HTML element, not a
                # formatting one, or of the formatting element last opened
                if top[0] == name and at and at[-1] == len(stack) - 1 and (
                        (top[10] is None and name not in _SLOW_END)
                        or (top[10] is not None and formatting and top[10] is formatting[-1])):
                    at.pop()
                    del stack[-1]
                    if top[10] is not None:
                        formatting.pop()[2] = -2
                    model.skip_newline = False
                else:
                    model.end(name)
                foreign_tag = False
                continue
            foreign_tag = False
            top = stack[-1] if stack else _BOTTOM
            if not top[2] and top[0] != "colgroup":
                if name not in _SLOW_START:  # any other element: re-open formatting ones, push it
                    if formatting and formatting[-1] is not None and formatting[-1][2] < 0:
                        model.reconstruct()
                        top = stack[-1]
                    if name in _CATEGORY:
                        model.push(name)
                    else:  # model.push, for an element of no category
                        k = len(stack)
                        stack.append((name, name, 0, top[3], top[4], top[5], top[6], top[7], top[8], k, None, top[11]))
                        at = where.get(name)
                        if at is None:
                            where[name] = [k]
                        else:
                            at.append(k)
                        if k >= model.max_depth:
                            model.max_depth = k + 1
                            if k >= bound:
                                return bound + 1
                    model.skip_newline = False
                    continue
                if name in _FORMATTING and name != "nobr" and len(formatting) == (markers[-1] + 1 if markers else 0):
                    # nothing to re-open, no <a> to close, nothing identical: push it and list it
                    entry = [name, attrs, -1]
                    formatting.append(entry)
                    model.push(name, 0, entry)
                    model.skip_newline = False
                    if model.max_depth > bound:
                        return bound + 1
                    continue
            foreign_tag = model.start(name, attrs, bool(slash))
            kind = _RAW.get(name)
            if kind is not None and not foreign_tag:
                pos = _raw_stop(s, pos, kind, name)
            if model.max_depth > bound or (
                    len(formatting) - (markers[-1] + 1 if markers else 0) > _MAX_HTML_FORMATTING and limit is not None):
                return bound + 1
    except _GiveUp:
        return bound + 1 if limit is not None else -1
    return model.max_depth


def html_too_deep(markup: str) -> bool:
    """Whether ``markup`` may nest deeper than lexbor reads in linear time (see ``_DepthModel``)."""
    # A page of few tags costs the parser little however it nests them: no scan. (256 tags can
    # still make lexbor build ~6,000 elements: 128 unclosed <b id=...>s re-opened in 40
    # paragraphs; 512 tags ~25,000, so the bound is kept low.)
    if markup.count("<") <= _QUICK_TAGS:
        return False
    return html_depth(markup) > _MAX_HTML_DEPTH


def _decode_text(text: str) -> str:
    import html

    if "&" in text:
        text = html.unescape(text)
    return text.replace("\x00", "") if "\x00" in text else text


def flat_text(markup: str, drop: frozenset[str] = _DROP) -> str:
    """Visible text of any markup in one linear pass over its tokens, without building a tree:
    the rules of ``_walk_text`` applied to tags as they come (elements in ``drop`` and comments
    skipped, block tags as line and paragraph breaks, <pre> kept as it is, entities decoded)."""
    markup = markup.replace("\r\n", "\n").replace("\r", "\n")
    out = _TextBuilder()
    st = _ScanState()
    hiding: list[str] = []  # the open elements of ``drop``, outermost first
    count: Counter[str] = Counter()  # ... by name
    foreign: list[str] = []  # the elements open in SVG / MathML, from its root
    integration = 0  # how many of them hold HTML (<foreignObject>, <mi> ...)
    foreign_at = 0  # where the SVG / MathML root is in ``hiding``
    pre = 0
    skip_newline = False  # the parser drops a newline right after <pre>, <listing>, <textarea>

    def close(at: int) -> None:  # close the element at ``at`` in ``hiding``, and all inside it
        for closed in hiding[at:]:
            count[closed] -= 1
        del hiding[at:]

    for kind, name, value, flag in _html_tokens(markup, st):
        if kind == _TEXT or kind == _RAW_TEXT:
            if skip_newline and value.startswith("\n"):
                value = value[1:]
            skip_newline = False
            if hiding or foreign or (kind == _RAW_TEXT and name in drop) or not value:
                continue
            out.text(_decode_text(value) if flag else value, pre > 0 or name in ("xmp", "plaintext"))
            continue
        skip_newline = False
        if kind == _START:
            svg_rules = bool(foreign) and not integration
            if svg_rules and (name in _BREAKOUT or (name == "font" and _FONT_BREAKOUT.search(value))):
                close(foreign_at)  # HTML again: the SVG / MathML is closed
                foreign.clear()
                svg_rules = False
            st.foreign_tag = svg_rules
            if foreign and not flag:
                foreign.append(name)
                integration += name in _INTEGRATION_NAMES
            elif name in ("svg", "math") and not flag:
                foreign.append(name)
                foreign_at = len(hiding)
            if name in drop:
                if name not in _VOID and (svg_rules or name not in _RAW) and not (flag and svg_rules):
                    hiding.append(name)
                    count[name] += 1
                continue
            if hiding or foreign:
                continue
            out.start(name)
            if name in ("pre", "listing", "textarea"):
                skip_newline = True
                pre += name != "textarea"
        else:
            st.foreign_tag = False
            if foreign and name in foreign:
                while foreign:
                    closed = foreign.pop()
                    integration -= closed in _INTEGRATION_NAMES
                    if closed == name:
                        break
            elif foreign and not integration and name in ("br", "p"):
                close(foreign_at)
                foreign.clear()
            if count[name] > 0:
                at = len(hiding) - 1
                while hiding[at] != name:
                    at -= 1
                close(at)
                continue
            if hiding or foreign:
                continue
            if name == "br":
                out.brk(1)
            elif name in _PARAGRAPH:
                out.brk(2)
            elif name in _LINE:
                out.brk(1)
            if name in ("pre", "listing") and pre:
                pre -= 1
        if not foreign:
            integration = 0
        st.foreign = bool(foreign)
    return out.result()


def _attributes(raw: str) -> dict[str, str]:
    """The attributes of a tag (names lowercased, values decoded; the first of a name wins)."""
    out: dict[str, str] = {}
    for m in _ATTRIBUTE_PAIR.finditer(raw):
        name = m.group(1).lower()
        if name in out:
            continue
        value = m.group(2) or ""
        if value[:1] in ("'", '"'):
            value = value[1:-1] if len(value) > 1 and value[-1] == value[0] else value[1:]
        out[name] = _decode_text(value)
    return out


def flat_page(markup: str) -> tuple[dict[str, Any], str | None, str | None, str]:
    """``(meta, title, canonical link, text)`` of an over-deep page, as ``read_html_file`` takes
    them from the parsed tree, in linear passes: ``<meta>`` names and contents, the first
    ``<title>`` (else the first ``<h1>``), and the text of ``<main>`` (else of the only
    ``<article>``, else of the page without navigation, header, footer and aside)."""
    markup = markup.replace("\r\n", "\n").replace("\r", "\n")
    st = _ScanState()
    meta: dict[str, Any] = {}
    title: str | None = None
    canonical: str | None = None
    spans: dict[str, list[tuple[int, int]]] = {"main": [], "article": [], "h1": []}
    open_at: dict[str, list[int]] = {"main": [], "article": [], "h1": []}
    foreign = 0  # open <svg> / <math>: their <title>, <style> ... are markup
    for kind, name, value, flag in _html_tokens(markup, st):
        if kind == _START:
            if foreign and name in _BREAKOUT:
                foreign = 0
            st.foreign_tag = foreign > 0
            if name in ("svg", "math") and not flag and not foreign:
                foreign = 1
            elif foreign and not flag:
                foreign += 1
            if name == "meta" or name == "link":
                attrs = _attributes(value)
                if name == "meta":
                    key = attrs.get("name") or attrs.get("property")
                    if key and "content" in attrs:
                        meta[key] = attrs["content"]
                elif canonical is None and attrs.get("rel") == "canonical" and attrs.get("href"):
                    canonical = attrs["href"]
            elif name in open_at:
                open_at[name].append(st.tag_end)
        elif kind == _END:
            st.foreign_tag = False
            if foreign:
                foreign -= 1
            if name in open_at and open_at[name]:
                start = open_at[name].pop()
                if not open_at[name]:  # the outermost one closes
                    spans[name].append((start, st.tag_start))
        elif kind == _RAW_TEXT and name == "title" and title is None:
            title = _str_or_none(_decode_text(value))
        st.foreign = foreign > 0
    for name, starts in open_at.items():  # unclosed: to the end of the page
        if starts:
            spans[name].append((starts[0], len(markup)))
    if spans["main"]:
        a, b = spans["main"][0]
        text = flat_text(markup[a:b], _MAIN_DROP)
    elif len(spans["article"]) == 1:
        a, b = spans["article"][0]
        text = flat_text(markup[a:b], _MAIN_DROP)
    else:
        text = flat_text(markup, _PAGE_DROP)
    if title is None and spans["h1"]:
        a, b = spans["h1"][0]
        title = _str_or_none(flat_text(markup[a:b]))
    return meta, title, canonical, text
