"""CMS export readers: WXR (and its refusals), CSV, JSONL, Markdown / HTML files, detection."""

from __future__ import annotations

import gzip
import json
import time
import tracemalloc
from pathlib import Path

import pytest

from synthfilter.io.cms import (
    ReadOptions,
    detect_format,
    html_to_text,
    markdown_to_text,
    read_csv,
    read_exports,
    read_jsonl,
    read_wxr,
)
from synthfilter.io.shards import InputError

WXR_HEAD = """<?xml version="1.0" encoding="UTF-8" ?>
<rss version="2.0"
  xmlns:excerpt="http://wordpress.org/export/1.2/excerpt/"
  xmlns:content="http://purl.org/rss/1.0/modules/content/"
  xmlns:dc="http://purl.org/dc/elements/1.1/"
  xmlns:wp="http://wordpress.org/export/1.2/">
<channel>
  <title>Harwick Notes</title>
  <link>https://harwick.example</link>
  <wp:wxr_version>1.2</wp:wxr_version>
"""


def wxr_item(post_id: int, title: str, content: str, *, post_type: str = "post", status: str = "publish",
             meta: dict[str, str] | None = None, author: str = "mara") -> str:
    metas = "".join(
        f"<wp:postmeta><wp:meta_key><![CDATA[{k}]]></wp:meta_key><wp:meta_value><![CDATA[{v}]]></wp:meta_value></wp:postmeta>"
        for k, v in (meta or {}).items()
    )
    return f"""
  <item>
    <title><![CDATA[{title}]]></title>
    <link>https://harwick.example/?p={post_id}</link>
    <pubDate>Tue, 04 Mar 2025 10:00:00 +0000</pubDate>
    <dc:creator><![CDATA[{author}]]></dc:creator>
    <guid isPermaLink="false">https://harwick.example/?p={post_id}</guid>
    <content:encoded><![CDATA[{content}]]></content:encoded>
    <excerpt:encoded><![CDATA[]]></excerpt:encoded>
    <wp:post_id>{post_id}</wp:post_id>
    <wp:post_date><![CDATA[2025-03-04 10:00:00]]></wp:post_date>
    <wp:post_name><![CDATA[post-{post_id}]]></wp:post_name>
    <wp:status><![CDATA[{status}]]></wp:status>
    <wp:post_type><![CDATA[{post_type}]]></wp:post_type>
    <category domain="category" nicename="town"><![CDATA[Town]]></category>
    <category domain="post_tag" nicename="ferry"><![CDATA[ferry]]></category>
    {metas}
  </item>"""


def write_wxr(path: Path, items: list[str]) -> Path:
    path.write_text(WXR_HEAD + "".join(items) + "\n</channel>\n</rss>\n", encoding="utf-8")
    return path


# -- HTML and Markdown to text --------------------------------------------------------------------


def test_html_to_text_drops_scripts_styles_comments_and_keeps_structure() -> None:
    markup = (
        "<h2>Ferry &amp; tides</h2><p>The captain <b>swore</b> it.<!-- internal: do not publish -->"
        "<script>document.write('tracking pixel')</script><style>p { color: red }</style></p>"
        "<noscript>enable javascript</noscript><template><p>hidden template</p></template>"
        "<ul><li>first</li><li>second</li></ul><p>Line one<br>line two</p>"
        "<pre>def f():\n    return 1</pre><p>after&nbsp;code</p>"
    )
    text = html_to_text(markup)
    assert text == ("Ferry & tides\n\nThe captain swore it.\n\nfirst\nsecond\n\nLine one\nline two\n\n"
                    "def f():\n    return 1\n\nafter code")
    for hidden in ("tracking", "color", "internal", "javascript", "hidden template"):
        assert hidden not in text


def test_html_to_text_keeps_wordpress_blank_line_paragraphs_and_survives_deep_nesting() -> None:
    assert html_to_text("First line\nsame paragraph.\n\nSecond <em>one</em>.") == "First line same paragraph.\n\nSecond one."
    deep = "<div>" * 5000 + "bottom of the well" + "</div>" * 5000
    assert html_to_text(deep) == "bottom of the well"


def test_wordpress_shortcodes_of_media_forms_and_page_builders_are_not_text(tmp_path: Path) -> None:
    body = ('[vc_row][vc_column width="1/2"][vc_column_text]The tide comes in.[/vc_column_text][/vc_column][/vc_row]'
            '[contact-form-7 id="12" title="Contact"][gallery ids="1,2"]\n\n[et_pb_section fb_built="1"][et_pb_text]'
            'Second part.[/et_pb_text][/et_pb_section] A [citation needed] stays.')
    (rec,) = read_wxr(write_wxr(tmp_path / "site.xml", [wxr_item(1, "Builder", body)]), "site.xml")
    assert rec.text == "The tide comes in.\n\nSecond part. A [citation needed] stays."


def test_markdown_to_text_strips_markup_and_keeps_words() -> None:
    source = (
        "# The Harbour Master\n\nHe said *the tide* comes in **crooked** on [Tuesdays](https://example.com).\n\n"
        "{{< figure src=\"boat.jpg\" >}}\n\n- one\n- two\n\n| a | b |\n|---|---|\n| 1 | 2 |\n\n"
        "<script>alert('x')</script>\n\n```\ncode stays\n```\n"
    )
    text, heading = markdown_to_text(source)
    assert heading == "The Harbour Master"
    assert "He said the tide comes in crooked on Tuesdays." in text
    assert "one\ntwo" in text and "1 | 2" in text and "code stays" in text
    for markup in ("*", "#", "](", "figure", "alert", "{{"):
        assert markup not in text


# -- WXR -------------------------------------------------------------------------------------------


def test_wxr_items_become_records_with_metadata(tmp_path: Path) -> None:
    path = write_wxr(tmp_path / "site.xml", [
        wxr_item(11, "Tides", "<p>The tide comes in <em>crooked</em>.</p><script>x()</script>", meta={"ai_generated": "0"}),
        wxr_item(12, "About", "Plain text page.\n\nSecond paragraph.", post_type="page"),
        wxr_item(13, "boat.jpg", "", post_type="attachment", status="inherit"),
        wxr_item(14, "Old draft", "<p>Gone.</p>", status="trash"),
        wxr_item(15, "Empty post", ""),
    ])
    recs = list(read_wxr(path, "site.xml"))
    assert [r.id for r in recs] == ["11", "12", "13", "14", "15"]
    tides = recs[0]
    assert tides.text == "The tide comes in crooked."
    assert tides.title == "Tides" and tides.link == "https://harwick.example/?p=11"
    assert tides.meta["author"] == "mara" and tides.meta["date"] == "2025-03-04 10:00:00"
    assert tides.meta["type"] == "post" and tides.meta["status"] == "publish"
    assert tides.meta["categories"] == ["Town"] and tides.meta["tags"] == ["ferry"]
    assert tides.lookup("ai_generated") == "0"  # a custom field, found by its bare name
    assert tides.source == "site.xml item 1"
    assert recs[1].text == "Plain text page.\n\nSecond paragraph." and recs[1].meta["type"] == "page"
    assert recs[2].excluded and "attachment" in recs[2].excluded and recs[2].text is None
    assert recs[3].excluded == "status trash"
    assert recs[4].excluded is None and recs[4].text is None and "no text" in recs[4].error
    # Only the post types asked for are gated.
    only_pages = list(read_wxr(path, "site.xml", post_types=["page"]))
    assert [r.id for r in only_pages if r.excluded is None] == ["12"]


def test_only_published_posts_are_gated_unless_more_statuses_are_asked_for(tmp_path: Path) -> None:
    # Drafts, pending reviews, scheduled, private and password-protected posts are not for training
    # by default (a private "salaries memo" used to be approved like any post).
    protected = wxr_item(26, "Board minutes", "<p>Members only.</p>").replace(
        "<wp:post_type>", "<wp:post_password><![CDATA[s3cret]]></wp:post_password>\n    <wp:post_type>")
    path = write_wxr(tmp_path / "site.xml", [
        wxr_item(21, "Out now", "<p>Published.</p>"),
        wxr_item(22, "Half done", "<p>TODO: ending.</p>", status="draft"),
        wxr_item(23, "For review", "<p>Pending.</p>", status="pending"),
        wxr_item(24, "Salaries memo", "<p>Private.</p>", status="private"),
        wxr_item(25, "Next week", "<p>Scheduled.</p>", status="future"),
        protected,
    ])
    recs = {r.id: r for r in read_wxr(path, "site.xml")}
    assert [i for i, r in recs.items() if r.excluded is None] == ["21"]
    assert recs["22"].excluded == "status draft (not in --post-statuses)" and recs["22"].text is None
    assert recs["26"].excluded.startswith("password-protected") and recs["26"].meta["password_protected"] is True
    assert "s3cret" not in json.dumps(recs["26"].to_dict())
    more = {r.id: r for r in read_wxr(path, "site.xml", post_statuses=["publish", "draft", "protected"])}
    assert [i for i, r in more.items() if r.excluded is None] == ["21", "22", "26"]
    assert more["22"].text == "TODO: ending."
    # Markdown / HTML drafts by front matter: Hugo's draft: true, Jekyll's published: false.
    site = tmp_path / "content"
    site.mkdir()
    (site / "a.md").write_text("---\ntitle: A\ndraft: true\n---\nDraft words.\n")
    (site / "b.md").write_text("---\ntitle: B\npublished: false\n---\nUnpublished words.\n")
    (site / "c.md").write_text("---\ntitle: C\ndraft: false\n---\nPublished words.\n")
    read = read_exports([site])
    assert {r.id: r.excluded is None for r in read.records} == {"a.md": False, "b.md": False, "c.md": True}
    read = read_exports([site], ReadOptions(post_statuses=["publish", "draft"]))
    assert all(r.excluded is None for r in read.records)


def _bounded(fn: object) -> tuple[InputError, float, int]:
    tracemalloc.start()
    t0 = time.perf_counter()
    try:
        with pytest.raises(InputError) as exc:
            fn()  # type: ignore[operator]
    finally:
        seconds = time.perf_counter() - t0
        peak = tracemalloc.get_traced_memory()[1]
        tracemalloc.stop()
    return exc.value, seconds, peak


def test_billion_laughs_is_refused_fast_without_memory_blow_up(tmp_path: Path) -> None:
    levels = "".join(f'<!ENTITY lol{i} "{f"&lol{i - 1};" * 10}">' for i in range(1, 10))
    bomb = tmp_path / "bomb.xml"
    # Nine levels of ten: 10^9 copies of "lol" (3 GB) if expanded.
    bomb.write_text(f'<?xml version="1.0"?>\n<!DOCTYPE rss [\n<!ENTITY lol0 "lol">{levels}\n]>\n'
                    "<rss><channel><item><title>&lol9;</title></item></channel></rss>\n")
    err, seconds, peak = _bounded(lambda: list(read_wxr(bomb, "bomb.xml")))
    assert seconds < 1.0 and peak < 20 * 2**20
    assert str(err).startswith(f"{bomb}:2: refused")
    assert "billion laughs" in str(err) and "\n" not in str(err)


def test_external_entities_are_refused_and_never_read(tmp_path: Path) -> None:
    secret = tmp_path / "secret.txt"
    secret.write_text("TOP-SECRET-VALUE")
    xxe = tmp_path / "xxe.xml"
    xxe.write_text(f'<?xml version="1.0"?>\n<!DOCTYPE rss [ <!ENTITY xxe SYSTEM "file://{secret}"> ]>\n'
                   "<rss><channel><item><title>&xxe;</title><content:encoded>&xxe;</content:encoded>"
                   "</item></channel></rss>\n")
    with pytest.raises(InputError) as exc:
        list(read_wxr(xxe, "xxe.xml"))
    assert "refused" in str(exc.value) and "external" in str(exc.value)
    assert "TOP-SECRET" not in str(exc.value)
    # A parameter entity pointing outside (the usual XXE exfiltration shape) is refused too.
    param = tmp_path / "param.xml"
    param.write_text('<?xml version="1.0"?>\n<!DOCTYPE rss [ <!ENTITY % ext SYSTEM "http://127.0.0.1:9/x.dtd"> %ext; ]>\n'
                     "<rss><channel/></rss>\n")
    with pytest.raises(InputError, match="refused"):
        list(read_wxr(param, "param.xml"))


def test_malformed_and_foreign_xml_name_file_and_position(tmp_path: Path) -> None:
    bad = tmp_path / "bad.xml"
    bad.write_text(WXR_HEAD + "  <item>\n    <title>Broken</titel>\n  </item>\n</channel></rss>\n")
    with pytest.raises(InputError) as exc:
        list(read_wxr(bad, "bad.xml"))
    title_line = WXR_HEAD.count("\n") + 2
    assert str(exc.value) == f"{bad}:{title_line}: malformed XML: mismatched tag at column 20"

    truncated = tmp_path / "cut.xml"
    truncated.write_text((WXR_HEAD + wxr_item(1, "A", "<p>a</p>"))[:-40])
    with pytest.raises(InputError, match=r"cut\.xml:\d+: malformed XML"):
        list(read_wxr(truncated, "cut.xml"))

    feed = tmp_path / "page.xml"
    feed.write_text("<?xml version='1.0'?>\n<html><body>not an export</body></html>\n")
    with pytest.raises(InputError, match=r"page\.xml:2: not a WordPress WXR export: the root element is <html>"):
        list(read_wxr(feed, "page.xml"))

    csv_file = tmp_path / "posts.csv"
    csv_file.write_text("id,text\n1,hello\n")
    with pytest.raises(InputError, match=r"posts\.csv:1: malformed XML: syntax error"):
        read_exports([csv_file], ReadOptions(format="wxr"))

    # Re-saved as Latin-1 under its UTF-8 declaration: the error says it is the encoding.
    latin = tmp_path / "latin.xml"
    text = WXR_HEAD + wxr_item(1, "Café", "<p>A café by the river.</p>") + "</channel></rss>\n"
    latin.write_bytes(text.encode("latin-1"))
    offset = text.encode("latin-1").index("é".encode("latin-1"))
    with pytest.raises(InputError, match=rf"latin\.xml:\d+: malformed XML: not well-formed \(invalid token\) at column "
                                         rf"\d+ \(the file is not UTF-8: byte 0xe9 at byte offset {offset:,}; re-save it "
                                         r"as UTF-8\)"):
        list(read_wxr(latin, "latin.xml"))


# -- CSV -------------------------------------------------------------------------------------------


def test_csv_rows_columns_html_cells_and_multiline_positions(tmp_path: Path) -> None:
    path = tmp_path / "export.csv"
    path.write_text(
        'post_id,post_title,post_content,url,generated_by\n'
        '7,Tides,"<p>The tide <b>comes</b> in.</p><script>bad()</script>",https://x.example/7,human\n'
        '8,Two lines,"first line\nsecond line",https://x.example/8,gpt-4o\n'
        '9,No body,,https://x.example/9,human\n',
        encoding="utf-8",
    )
    recs = list(read_csv(path, "export.csv", ReadOptions()))
    assert [r.id for r in recs] == ["7", "8", "9"]
    assert recs[0].text == "The tide comes in." and recs[0].title == "Tides" and recs[0].link == "https://x.example/7"
    assert recs[1].text == "first line\nsecond line" and recs[1].lookup("generated_by") == "gpt-4o"
    assert [r.source for r in recs] == ["export.csv:2", "export.csv:3", "export.csv:5"]
    assert recs[2].text is None and recs[2].error == "no text (empty cell)"


@pytest.mark.parametrize("cell", [
    "If a<b and b<c then a<c, said the maths club, and argued about pizza for an hour.",
    "Press <Enter> to save your draft, then <Ctrl>+<S> to be sure.",
    "A List<String> of names, and if x < 3 and y > 2 then stop.",
])
def test_plain_text_cells_with_angle_brackets_are_kept_whole(tmp_path: Path, cell: str) -> None:
    # Read as HTML, "a<b and ..." became a tag and the text after it was lost ("If a").
    path = tmp_path / "plain.csv"
    path.write_text('id,text\n1,"' + cell + '"\n', encoding="utf-8")
    (rec,) = read_csv(path, "plain.csv", ReadOptions())
    assert rec.text == cell


def test_csv_options_delimiters_and_errors(tmp_path: Path) -> None:
    semi = tmp_path / "semi.csv"
    semi.write_text("slug;headline;body\na;Alpha;alpha text\n")
    (rec,) = read_csv(semi, "semi.csv", ReadOptions(id_column="slug"))
    assert (rec.id, rec.title, rec.text) == ("a", "Alpha", "alpha text")

    with pytest.raises(InputError, match=r"semi\.csv:1: no text column 'words' \(columns: slug, headline, body\)"):
        list(read_csv(semi, "semi.csv", ReadOptions(text_column="words")))

    nocol = tmp_path / "nocol.csv"
    nocol.write_text("a,b\n1,2\n")
    with pytest.raises(InputError, match="no text column found .*--text-column"):
        list(read_csv(nocol, "nocol.csv", ReadOptions()))

    ragged = tmp_path / "ragged.csv"
    ragged.write_text("id,text\n1,fine\n2,too,many\n")
    with pytest.raises(InputError, match=r"ragged\.csv:3: row has 3 fields but the header has 2"):
        list(read_csv(ragged, "ragged.csv", ReadOptions()))

    quote = tmp_path / "quote.csv"
    quote.write_text('id,text\n1,"never closed\n2,x\n')
    with pytest.raises(InputError, match=r"quote\.csv:\d+: unreadable CSV"):
        list(read_csv(quote, "quote.csv", ReadOptions()))

    latin = tmp_path / "latin.csv"
    latin.write_bytes("id,text\n1,ok\n2,caf\xe9\n".encode("latin-1"))
    with pytest.raises(InputError, match=r"latin\.csv:3: not UTF-8 text \(byte 0xe9\); if it is a CSV file, re-save"):
        list(read_csv(latin, "latin.csv", ReadOptions()))
    # Excel's "Unicode text" (UTF-16 with a byte order mark, tab-separated) is read as it is.
    utf16 = tmp_path / "excel.tsv"
    utf16.write_bytes("id\ttext\n1\tcafé crème\n".encode("utf-16"))
    assert [r.text for r in read_csv(utf16, "excel.tsv", ReadOptions())] == ["café crème"]


def test_html_pages_in_their_declared_charset_and_utf16_files_are_read(tmp_path: Path) -> None:
    site = tmp_path / "site"
    site.mkdir()
    (site / "old.html").write_bytes('<html><head><meta charset="iso-8859-1"><title>Caf\u00e9</title></head>'
                                    '<body><main><p>Le caf\u00e9 du port.</p></main></body></html>'.encode("latin-1"))
    (site / "note.md").write_bytes("# Crème\n\nUne note en UTF-16.\n".encode("utf-16"))
    by_id = {r.id: r for r in read_exports([site]).records}
    assert by_id["old.html"].text == "Le café du port." and by_id["old.html"].title == "Café"
    assert by_id["note.md"].text == "Crème\n\nUne note en UTF-16." and by_id["note.md"].title == "Crème"
    # A broken UTF-16 file, or a page declaring a codec that is not a text encoding: one-line errors.
    broken = tmp_path / "broken.md"
    broken.write_bytes(b"\xff\xfeH\x00i\x00\x0a")
    with pytest.raises(InputError, match=r"broken\.md: not valid UTF-16 text, though it starts with a UTF-16 byte order"):
        read_exports([broken])
    odd = tmp_path / "odd.html"
    odd.write_bytes(b'<html><head><meta charset="base64"></head><body><main>caf\xe9</main></body></html>')
    with pytest.raises(InputError, match=r"odd\.html:1: not UTF-8 text \(byte 0xe9\)"):
        read_exports([odd])
    (site / "bad.md").write_bytes("caf\u00e9\n".encode("latin-1"))
    with pytest.raises(InputError, match=r"bad\.md:1: not UTF-8 text \(byte 0xe9\); if it is a Markdown file"):
        read_exports([site])


# -- JSONL -----------------------------------------------------------------------------------------


def test_jsonl_html_bodies_are_read_as_text_and_the_record_stays_as_read(tmp_path: Path) -> None:
    path = tmp_path / "api.jsonl"
    rows = [{"id": 1, "text": '<p>The tide <b>comes</b> in.</p><script>trackView()</script>'},
            {"id": 2, "text": "If a<b and b<c then a<c."},
            {"id": 3, "text": "<script>trackView()</script><!-- nothing else -->"}]
    path.write_text("".join(json.dumps(r) + "\n" for r in rows))
    recs = list(read_jsonl(path, "api.jsonl", ReadOptions()))
    assert [r.text for r in recs] == ["The tide comes in.", "If a<b and b<c then a<c.", None]
    assert recs[2].error == "no text (the HTML in the text field holds none)"
    assert recs[0].raw == json.dumps(rows[0]).encode()  # an approved line is the line as read


def test_jsonl_records_keep_their_object_and_bad_lines_name_the_line(tmp_path: Path) -> None:
    path = tmp_path / "posts.jsonl"
    path.write_text(json.dumps({"id": "p1", "body": {"text": "hello there"}, "title": "Hi", "ai": True}) + "\n")
    (rec,) = read_jsonl(path, "posts.jsonl", ReadOptions(text_field="body.text"))
    assert (rec.id, rec.text, rec.title) == ("p1", "hello there", "Hi")
    assert rec.lookup("ai") is True and rec.to_dict()["body"] == {"text": "hello there"}
    assert rec.raw == path.read_bytes().rstrip(b"\n")
    path.write_text('{"id": "ok", "text": "fine"}\n{"id": oops}\n')
    with pytest.raises(InputError, match=r"posts\.jsonl:2: malformed JSON"):
        list(read_jsonl(path, "posts.jsonl", ReadOptions()))


# -- Markdown and HTML files -------------------------------------------------------------------------


def test_markdown_folder_with_yaml_and_toml_front_matter_and_html_pages(tmp_path: Path) -> None:
    site = tmp_path / "content"
    (site / "posts").mkdir(parents=True)
    (site / "posts" / "tides.md").write_text(
        "---\ntitle: Crooked tides\ndate: 2025-03-04\ngenerated_by: human\ntags: [sea, town]\n"
        "url: /posts/tides/\n---\n\nThe tide comes in **crooked** on Tuesdays.\n", encoding="utf-8")
    (site / "posts" / "energy.md").write_text(
        '+++\ntitle = "Renewable energy"\nai_generated = true\n+++\n\n# Heading\n\nIn today\'s world...\n')
    (site / "posts" / "untitled.md").write_text("# Only a heading title\n\nBody words.\n")
    (site / "about.html").write_text(
        "<!doctype html><html><head><title>About us</title><meta name='generated_by' content='gpt-4o'>"
        "<link rel='canonical' href='https://x.example/about/'><script>track()</script></head>"
        "<body><nav>Home | Posts</nav><main><h1>About</h1><p>We write about the town.</p></main>"
        "<footer>(c) 2025</footer></body></html>")
    (site / "logo.png").write_bytes(b"\x89PNG")
    (site / ".hidden").mkdir()
    (site / ".hidden" / "x.md").write_text("not read")

    read = read_exports([site])
    by_id = {r.id: r for r in read.records}
    assert sorted(by_id) == ["about.html", "posts/energy.md", "posts/tides.md", "posts/untitled.md"]
    tides = by_id["posts/tides.md"]
    assert tides.title == "Crooked tides" and tides.text == "The tide comes in crooked on Tuesdays."
    assert tides.meta["date"] == "2025-03-04" and tides.meta["tags"] == ["sea", "town"]
    assert tides.link == "/posts/tides/" and tides.lookup("generated_by") == "human"
    assert by_id["posts/energy.md"].lookup("ai_generated") is True
    assert by_id["posts/untitled.md"].title == "Only a heading title"
    about = by_id["about.html"]
    assert about.title == "About us" and about.text == "About\n\nWe write about the town."
    assert about.lookup("generated_by") == "gpt-4o" and about.link == "https://x.example/about/"
    assert read.ignored_files == [str(site / "logo.png")]
    json.dumps([r.to_dict() for r in read.records])  # metadata is JSON-ready (dates as strings)


@pytest.mark.parametrize("content, message, line", [
    ("---\ntitle: x\nbody without a closing fence\n", "front matter opened with '---' is never closed", 1),
    ("---\ntitle: [unclosed\nauthor: me\n---\nbody\n", "malformed YAML front matter", 3),
    ("---\na: &x [1, 2]\nb: *x\n---\nbody\n", "malformed YAML front matter: YAML alias *x is not allowed", 3),
    ("---\n- just\n- a list\n---\nbody\n", "front matter must be a mapping", 2),
    ("+++\ntitle = \n+++\nbody\n", "malformed TOML front matter", 2),
])
def test_bad_front_matter_names_file_and_line(tmp_path: Path, content: str, message: str, line: int) -> None:
    path = tmp_path / "post.md"
    path.write_text(content)
    with pytest.raises(InputError) as exc:
        read_exports([path])
    assert str(exc.value).startswith(f"{path}:{line}: {message}")


# -- detection and the whole read ---------------------------------------------------------------


def test_format_detection_ids_and_input_errors(tmp_path: Path) -> None:
    assert detect_format(write_wxr(tmp_path / "site.xml", [])) == "wxr"
    sniffed = tmp_path / "export.dat"
    sniffed.write_text(WXR_HEAD + "</channel></rss>")
    assert detect_format(sniffed) == "wxr"
    mystery = tmp_path / "notes.dat"
    mystery.write_text("just some words")
    with pytest.raises(InputError, match=r"notes\.dat: cannot tell the export format .*--format"):
        read_exports([mystery])
    with pytest.raises(InputError, match="path does not exist"):
        read_exports([tmp_path / "nope.xml"])
    # A JSON document (an API export) and a compressed file with a bare name get the way out, not
    # "pass --format", which could not help.
    rest = tmp_path / "posts.json"
    rest.write_text(json.dumps([{"id": 1, "content": {"rendered": "<p>Hi</p>"}}], indent=1))
    with pytest.raises(InputError, match=r"posts\.json: a JSON document .* not JSON Lines: .*jq -c '\.\[\]'"):
        read_exports([rest])
    # The same array saved as .jsonl (pretty-printed or on one line) gets the same way out.
    for i, indent in enumerate((1, None)):
        misnamed = tmp_path / f"posts{i}.jsonl"
        misnamed.write_text(json.dumps([{"id": 1, "content": {"rendered": "<p>Hi</p>"}}], indent=indent))
        with pytest.raises(InputError, match=rf"posts{i}\.jsonl: a JSON document .* jq -c '\.\[\]'"):
            read_exports([misnamed])
    lines = tmp_path / "lines.json"
    lines.write_text(json.dumps({"id": "a", "text": "one object per line"}) + "\n")
    assert [r.text for r in read_exports([lines]).records] == ["one object per line"]
    # JSON Lines opening with a blank line, or with a first record longer than the bytes sniffed.
    blank = tmp_path / "blank.json"
    blank.write_text("\n" + json.dumps({"id": "b", "text": "after a blank line"}) + "\n")
    assert [r.text for r in read_exports([blank]).records] == ["after a blank line"]
    long = tmp_path / "long.json"
    long.write_text(json.dumps({"id": "c", "text": "word " * 20000}) + "\n" + json.dumps({"id": "d", "text": "short"}) + "\n")
    assert [r.id for r in read_exports([long]).records] == ["c", "d"]
    packed = tmp_path / "site.xml.gz"
    packed.write_bytes(gzip.compress(WXR_HEAD.encode()))
    with pytest.raises(InputError, match=r"site\.xml\.gz: a gzip-compressed file .* decompress it first"):
        read_exports([packed])
    empty = tmp_path / "empty_site"
    empty.mkdir()
    with pytest.raises(InputError, match="no Markdown"):
        read_exports([empty])
    wrong = tmp_path / "wrong.csv"
    wrong.write_text("id,text\n1,\n2,\n")
    with pytest.raises(InputError, match=r"wrong\.csv: no record has text"):
        read_exports([wrong])

    # The same post id in two exports stays two records, qualified by file.
    a = write_wxr(tmp_path / "a.xml", [wxr_item(1, "A", "<p>alpha</p>")])
    b = write_wxr(tmp_path / "b.xml", [wxr_item(1, "B", "<p>beta</p>")])
    read = read_exports([a, b])
    assert [r.id for r in read.records] == ["a.xml:1", "b.xml:1"]
    assert [i.format for i in read.inputs] == ["wxr", "wxr"] and len(read.inputs[0].sha256) == 64
