"""Hostile and broken markup in CMS exports: over-deep HTML is read by a linear extractor (lexbor
is quadratic in the nesting depth), and the other readers stay linear on crafted input.

These are behaviour tests, with no assertion on seconds. The documents are sized so that the
quadratic paths would take from seconds to minutes each (100,000 nested elements: 20 s to 90 s for
lexbor, by shape; a 100,000-part TOML key or 100,000 unclosed "{{": minutes), while the linear
paths read each in well under two seconds: a regression shows as a stalled test.
"""

from __future__ import annotations

import random
import re
from pathlib import Path

import pytest

from synthfilter.io.cms import (
    _strip_template_tags,
    _wp_text,
    _yaml_flow_depth,
    html_to_text,
    markdown_to_text,
    read_exports,
    read_wxr,
)
from synthfilter.io.deephtml import flat_text, html_depth, html_too_deep
from synthfilter.io.shards import InputError

DEEP = 100_000


def _lexbor_text(markup: str) -> str:
    """What html_to_text gives through the parser (for markup it reads that way)."""
    from selectolax.lexbor import LexborHTMLParser

    from synthfilter.io.cms import _walk_text

    tree = LexborHTMLParser(markup)
    return _walk_text(tree.body if tree.body is not None else tree.root)


# -- over-deep HTML --------------------------------------------------------------------------------


def test_a_100000_deep_page_gives_its_words_in_order_with_paragraph_breaks() -> None:
    words = [f"word{i}" for i in range(100)]
    markup = "".join("<div>" * (DEEP // 100) + f"<p>{w}</p>" for w in words) + "</div>" * DEEP
    assert html_too_deep(markup)
    assert html_to_text(markup) == "\n\n".join(words)
    # Lines, cells, preformatted text and inline markup deep down follow the parser's rules.
    tail = ("<ul><li>one</li><li>two</li></ul><table><tr><td>a</td><td>b</td></tr></table>"
            "<pre>\n  keep  this\n</pre><p>x<b>y</b>z<br>next</p>")
    deep_tail = "<section>" * DEEP + tail + "</section>" * DEEP
    assert html_to_text(deep_tail) == "one\ntwo\n\na | b\n\n  keep  this\n\nxyz\nnext"
    assert html_to_text(deep_tail) == _lexbor_text("<section>" * 50 + tail)


def test_deep_scripts_styles_templates_and_comments_are_not_text() -> None:
    hidden = ("<script>var t = '<div>' + '</div></div>'; // </scrip></script>"
              "<script><!-- document.write('<script>x()</script></div>') --></script>"
              "<style>div > p { color: red }</style><template><p>template text</p></template>"
              "<noscript><p>enable javascript</p></noscript><!-- a <div> comment --><title>head title</title>")
    markup = "<div>" * DEEP + "<p>before</p>" + hidden + "<p>after</p>" + "</div>" * DEEP
    assert html_to_text(markup) == "before\n\nafter"
    # A <script> whose end tag never comes hides the rest of the page, as in a browser.
    assert html_to_text("<div>" * DEEP + "seen<script>x = 1;<p>unseen</p>") == "seen"


def test_deep_markup_decodes_entities() -> None:
    markup = "<div>" * DEEP + "Ferry &amp; tides &lt;b&gt; caf&eacute; &#x41;&#66; &copy 2025&nbsp;end" + "</div>" * DEEP
    assert html_to_text(markup) == "Ferry & tides <b> café AB © 2025 end"


@pytest.mark.parametrize("shape, text", [
    pytest.param(lambda n: "".join(f'<b id="{i}">' for i in range(n)) + "x", "x", id="unclosed-formatting"),
    pytest.param(lambda n: "<ul><li>" * (n // 2) + "x", "x", id="nested-lists"),
    pytest.param(lambda n: "<table><tr><td>" * (n // 3) + "x", "x", id="nested-tables"),
    pytest.param(lambda n: "<b><div>" * (n // 2) + "x", "x", id="misnested-formatting"),
    pytest.param(lambda n: "<b><div></b></div><span></b>x" * (n // 4), "\n\n".join(["x"] * (DEEP // 4)),
                 id="reparented-formatting"),
    pytest.param(lambda n: "<p><i></p>x" * (n // 3), "\n\n".join(["x"] * (DEEP // 3)), id="reopened-formatting"),
    pytest.param(lambda n: "<div/>" * n + "x", "x", id="self-closing-div"),
    pytest.param(lambda n: "<svg><g>" * (n // 2) + "<p>x", "x", id="svg-then-html"),
    pytest.param(lambda n: "<object><select>" * (n // 2) + "x", "", id="select-in-object"),
])
def test_hostile_shapes_take_the_linear_path(shape: object, text: str) -> None:
    markup = shape(DEEP)  # type: ignore[operator]
    assert html_too_deep(markup)
    assert html_to_text(markup) == text
    assert flat_text(markup[:2000]) == _lexbor_text(markup[:2000])  # as the parser reads the start


def test_ordinary_pages_stay_with_the_parser_and_the_extractor_agrees_with_it() -> None:
    paragraphs = "".join(
        f"<h2>Part {i}</h2><p>The tide <b>comes</b> in <a href='/t{i}'>crooked</a> on day {i}.<br>Again.</p>"
        f"<ul><li>one<li>two</ul><table><tr><td>a<td>b</table><!-- note {i} --><script>x({i})</script>"
        for i in range(300))
    page = f"<html><head><title>T</title></head><body><main>{paragraphs}</main></body></html>"
    assert page.count("<") > 5000 and not html_too_deep(page)
    assert html_to_text(page) == _lexbor_text(page) == flat_text(page)
    sloppy = "<p>unclosed <b>bold<p>next <i>italic" * 400 + "<table><tr><td>cell<td>cell" * 100
    assert not html_too_deep(sloppy)
    assert flat_text(sloppy) == _lexbor_text(sloppy)


def test_the_depth_model_follows_the_parser_on_random_markup() -> None:
    """The pre-scan's estimate is at least the depth lexbor builds, or it gives up (and the
    extractor reads the page): on random tag soup, repeated or not."""
    from selectolax.lexbor import LexborHTMLParser

    names = ("div p span b i a li ul table tr td caption select option button form svg math path foreignObject "
             "title style script textarea h1 pre nobr font template dd dt noscript col colgroup ruby rt html body "
             "head hr img input br").split()
    pieces = ["x", " ", "\n", "<!--", "-->", "<![CDATA[", "]]>", "<!--<script>", "&amp;", "<"]
    rng = random.Random(7)

    def token() -> str:
        r, name = rng.random(), rng.choice(names)
        if r < 0.45:
            return f"<{name}{rng.choice(['', '', ' id=1', ' color=red'])}{'/' if rng.random() < 0.1 else ''}>"
        return f"</{name}>" if r < 0.8 else rng.choice(pieces)

    def dom_depth(markup: str) -> int:
        deepest, stack = 0, [(LexborHTMLParser(markup).root, 0)]
        while stack:
            node, depth = stack.pop()
            deepest = max(deepest, depth)
            stack.extend((child, depth + 1) for child in node.iter())
        return deepest - 2  # <html> and <body>

    for _ in range(300):
        motif = "".join(token() for _ in range(rng.randint(1, 8)))
        markup = motif * rng.randint(1, 120)
        estimate = html_depth(markup, limit=None)
        assert estimate < 0 or dom_depth(markup) <= estimate + 2, markup[:200]


def test_unterminated_markup_is_read_once() -> None:
    """Constructs cut by the end of the input (a tag, a comment, a script) end the text."""
    assert html_to_text("<div>" * 600 + "words <a " + '<a href="x' * DEEP) == "words"
    assert html_to_text("<div>" * 600 + "words <!--" + "<!-- <div>" * DEEP) == "words"
    assert html_to_text("<div>" * 600 + "a < b" + "</ " * DEEP) == "a < b"
    assert html_to_text("<div>" * 600 + "words" + "<?x " * DEEP) == "words"


def test_an_over_deep_html_page_keeps_title_meta_link_and_main(tmp_path: Path) -> None:
    page = tmp_path / "deep.html"
    page.write_text(
        "<!doctype html><html><head><title>Deep &amp; dark</title><meta name='generated_by' content='gpt-4o'>"
        "<link rel='canonical' href='https://x.example/deep/'></head><body><nav>Home</nav><main>"
        + "<div>" * DEEP + "<p>The well</p><nav>skip</nav><p>is deep.</p>" + "</div>" * DEEP
        + "</main><footer>(c)</footer></body></html>", encoding="utf-8")
    (rec,) = read_exports([page]).records
    assert rec.title == "Deep & dark" and rec.text == "The well\n\nis deep."
    assert rec.lookup("generated_by") == "gpt-4o" and rec.link == "https://x.example/deep/"


# -- the other readers -----------------------------------------------------------------------------

_TEMPLATE_RE = re.compile(r"\{\{[<%].*?[%>]\}\}|\{%.*?%\}|\{\{.*?\}\}", re.DOTALL)


def test_template_tags_are_stripped_as_before_and_unclosed_ones_once() -> None:
    rng = random.Random(3)
    alphabet = ["{", "}", "%", "<", ">", "{{", "}}", "{%", "%}", "{{<", ">}}", "{{%", "%}}", "a", " ", "\n"]
    for _ in range(20000):
        source = "".join(rng.choice(alphabet) for _ in range(rng.randint(0, 14)))
        assert _strip_template_tags(source) == _TEMPLATE_RE.sub(" ", source)
    unclosed = "Intro {{ " + "{{ {% {{< " * DEEP
    assert _strip_template_tags(unclosed) == unclosed
    text, _ = markdown_to_text("# T\n\nwords {{< figure >}} more {% raw %}\n\n" + "{{ " * DEEP)
    assert text.startswith("T\n\nwords more")


def test_unclosed_wordpress_shortcodes_are_read_once() -> None:
    body = "<p>[vc_row][vc_column]Kept text.[/vc_column][/vc_row]</p><p>Tail " + "[vc_row " * DEEP + "</p>"
    text = _wp_text(body)
    assert text.startswith("Kept text.\n\nTail [vc_row [vc_row")


def _wxr(items: str, channel_extra: str = "") -> str:
    return ('<?xml version="1.0" encoding="UTF-8"?><rss version="2.0" '
            'xmlns:content="http://purl.org/rss/1.0/modules/content/" xmlns:wp="http://wordpress.org/export/1.2/">'
            f"<channel><title>t</title>{channel_extra}{items}</channel></rss>")


def _item(i: int, body: str, attrs: str = "") -> str:
    return (f"<item{attrs}><title>Post {i}</title><content:encoded><![CDATA[{body}]]></content:encoded>"
            f"<wp:post_id>{i}</wp:post_id><wp:status>publish</wp:status><wp:post_type>post</wp:post_type></item>")


def test_wxr_with_many_channel_children_and_huge_tokens_reads_every_item(tmp_path: Path) -> None:
    terms = "".join(f"<wp:term><wp:term_id>{i}</wp:term_id></wp:term>" for i in range(20000))
    items = "".join(_item(i, f"<p>Body {i}</p>") for i in range(20000))
    path = tmp_path / "big.xml"
    path.write_text(_wxr(items, terms), encoding="utf-8")
    records = list(read_wxr(path, "big.xml"))
    assert len(records) == 20000 and records[-1].text == "Body 19999"
    # An 8 MB attribute and an 8 MB comment: expat re-reads an unfinished token with each chunk.
    huge = tmp_path / "huge.xml"
    huge.write_text(_wxr("<!--" + "c" * 8_000_000 + "-->" + _item(1, "<p>Still read.</p>", f' data-x="{"a" * 8_000_000}"')),
                    encoding="utf-8")
    assert [r.text for r in read_wxr(huge, "huge.xml")] == ["Still read."]


@pytest.mark.parametrize("front, message", [
    ("+++\n" + "a." * 60 + "b = 1\n+++\n", "front matter nested more than 50 levels deep"),
    ("+++\n" + "a." * DEEP + "b = 1\n+++\n", "front matter nested more than 50 levels deep"),
    ("+++\n[" + "t." * DEEP + "u]\nx = 1\n+++\n", "front matter nested more than 50 levels deep"),
    ("+++\nx = {" + "a." * DEEP + "b = 1}\n+++\n", "front matter nested more than 50 levels deep"),
    ("+++\nx = " + "[" * 5000 + "]" * 5000 + "\n+++\n", "TOML front matter is nested too deeply"),
    ("+++\nx = " + "{a = " * 5000 + "1" + "}" * 5000 + "\n+++\n", "TOML front matter is nested too deeply"),
    ("---\nk: " + "[" * DEEP + "]" * DEEP + "\n---\n", "front matter nested more than 50 levels deep"),
    ("---\nk: " + '[ "]", ' * DEEP + "\n---\n", "front matter nested more than 50 levels deep"),
])
def test_front_matter_nested_beyond_the_limit_is_refused_before_parsing(tmp_path: Path, front: str, message: str) -> None:
    path = tmp_path / "post.md"
    path.write_text(front + "Body.\n", encoding="utf-8")
    with pytest.raises(InputError, match=re.escape(message)):
        read_exports([path])


def test_front_matter_within_the_limit_is_read() -> None:
    assert _yaml_flow_depth("tags: [a, b]\ntitle: \"x ]]] [\"\nk: {a: [1, [2]]}\n# ]]]\nq: 'it''s ]'\n") == 3
    assert _yaml_flow_depth("k: " + "[" * 50 + "]" * 50) == 50


def test_markdown_nested_beyond_the_parsers_limit_keeps_its_text() -> None:
    # markdown-it stops at 20 levels of lists or quotes and drops the rest of the body without a
    # word: a post could hide its text from the gate behind 21 "- " or ">". Such a body is read as
    # it stands, marks and all; an ordinary nested list is read as Markdown still.
    for body in ("- " * 21 + "The hidden paragraph is here.\n\nAnd one more after it.",
                 ">" * 25 + " The hidden paragraph is here.\n\nAnd one more after it."):
        text, heading = markdown_to_text(body)
        assert "The hidden paragraph is here." in text and text.endswith("And one more after it."), body[:30]
        assert heading is None
    assert markdown_to_text("# Notes\n\n- one\n  - two\n    - three\n\nClosing *words*.") == (
        "Notes\n\none\n\ntwo\n\nthree\n\nClosing words.", "Notes")
