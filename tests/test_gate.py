"""synthfilter gate: verdicts, exit codes, reports and approved output on exports the tests build
(WordPress WXR, CSV, Markdown and HTML folders, JSONL) with known synthetic and duplicate items."""

from __future__ import annotations

import csv
import json
import random
import re
from pathlib import Path
from typing import Any

import orjson
import pytest

import synthfilter
from synthfilter.cli import main
from synthfilter.config import ConfigError
from synthfilter.gate import GatePolicy, GateResult
from textgen import assistant_text, human_text

NO_DETECTOR = ["--no-detector"]
WXR_PROVENANCE = ["--provenance-field", "ai_generated", "--provenance-map", "1=machine,0=human"]


# -- exports with known synthetic and duplicate items ---------------------------------------------


def make_posts(n_human: int = 20, n_machine: int = 10, exact: int = 2, near: int = 1, seed: int = 5) -> list[dict[str, Any]]:
    """Posts with known labels: ``exact`` verbatim copies and ``near`` one-word edits of human posts.

    Every post opens with its own sentence, so no two distinct posts are near-duplicates by accident.
    """
    rng = random.Random(seed)
    posts = []
    for i in range(n_human + n_machine):
        machine = i >= n_human
        body = assistant_text(rng, sentences=7) if machine else human_text(rng, sentences=12)
        posts.append({"id": str(100 + i), "title": f"Post {i}", "label": "machine" if machine else "human",
                      "text": f"Entry number {i} of the {rng.choice(['spring', 'autumn'])} series. {body}", "copy_of": None})
    for k in range(exact):
        src = posts[k]
        posts.append({**src, "id": str(200 + k), "title": f"{src['title']} (again)", "copy_of": src["id"]})
    for k in range(near):
        src = posts[exact + k]
        words = src["text"].split()
        words[-3] = "harbourside"
        posts.append({**src, "id": str(300 + k), "title": f"{src['title']} (edited)", "text": " ".join(words),
                      "copy_of": src["id"]})
    return posts


def wxr(path: Path, posts: list[dict[str, Any]], extra_items: str = "") -> Path:
    items = []
    for p in posts:
        paragraphs = "".join(f"<p>{s}.</p>" for s in p["text"].split(". ") if s)
        items.append(f"""
  <item>
    <title><![CDATA[{p['title']}]]></title>
    <link>https://blog.example/?p={p['id']}</link>
    <dc:creator><![CDATA[editor]]></dc:creator>
    <content:encoded><![CDATA[<!-- wp:paragraph -->{paragraphs}<!-- /wp:paragraph --><script>track({p['id']})</script>]]></content:encoded>
    <wp:post_id>{p['id']}</wp:post_id>
    <wp:post_date><![CDATA[2025-01-02 03:04:05]]></wp:post_date>
    <wp:status><![CDATA[publish]]></wp:status>
    <wp:post_type><![CDATA[post]]></wp:post_type>
    <wp:postmeta><wp:meta_key><![CDATA[ai_generated]]></wp:meta_key><wp:meta_value><![CDATA[{int(p['label'] == 'machine')}]]></wp:meta_value></wp:postmeta>
  </item>""")
    path.write_text(
        '<?xml version="1.0" encoding="UTF-8" ?>\n<rss version="2.0" xmlns:content="http://purl.org/rss/1.0/modules/content/" '
        'xmlns:dc="http://purl.org/dc/elements/1.1/" xmlns:wp="http://wordpress.org/export/1.2/">\n<channel>\n'
        + "".join(items) + extra_items + "\n</channel>\n</rss>\n", encoding="utf-8")
    return path


ATTACHMENT = """
  <item><title>harbour.jpg</title><wp:post_id>900</wp:post_id><wp:post_type>attachment</wp:post_type>
  <wp:status>inherit</wp:status><content:encoded><![CDATA[]]></content:encoded></item>
  <item><title>Old</title><wp:post_id>901</wp:post_id><wp:post_type>post</wp:post_type>
  <wp:status>trash</wp:status><content:encoded><![CDATA[<p>Trashed words.</p>]]></content:encoded></item>"""


def gate_cli(args: list[str], capsys: pytest.CaptureFixture[str]) -> tuple[int, str, str]:
    """The real CLI entry point, in process; returns (exit code, stdout, stderr)."""
    with pytest.raises(SystemExit) as exc:
        main(["gate", *args])
    out = capsys.readouterr()
    return int(exc.value.code), out.out, out.err


def ids_of(posts: list[dict[str, Any]], pred: Any) -> set[str]:
    return {p["id"] for p in posts if pred(p)}


# -- WXR: verdicts, exit codes, JSON, approved output ------------------------------------------------


def test_wxr_export_fails_on_synthetic_share_and_passes_a_looser_policy(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    posts = make_posts()
    export = wxr(tmp_path / "blog.xml", posts, ATTACHMENT)
    base = [str(export), *NO_DETECTOR, *WXR_PROVENANCE]

    code, out, err = gate_cli([*base, "--max-synthetic", "0.25", "--max-duplicates", "0.2",
                               "--json", str(tmp_path / "gate.json")], capsys)
    assert code == 1 and err == ""
    assert out.startswith("synthfilter gate: FAIL")
    assert "failed: max_synthetic: estimated synthetic share 33.3 % > 25.0 %" in out
    assert "duplicates  9.1 %  (2 exact, 1 near copies)   limit 20.0 %   ok" in out
    assert "2 not gated (WordPress attachment item 1, status trash 1)" in out
    assert len(out.splitlines()) <= 24  # one screen

    doc = json.loads((tmp_path / "gate.json").read_text())
    assert doc["verdict"] == "fail" and doc["failed_rules"] == ["max_synthetic"]
    assert doc["policy"] == {"max_synthetic": 0.25, "max_duplicates": 0.2, "min_records": None,
                             "require_provenance": None, "strict": False}
    m = doc["measured"]
    assert (m["records"], m["with_text"], m["excluded"]) == (35, 33, 2)
    assert m["synthetic_share"] == pytest.approx(10 / 30) and m["duplicate_share"] == pytest.approx(3 / 33)
    assert m["known_provenance"] == {"human": 23, "machine": 10}
    machine = ids_of(posts, lambda p: p["label"] == "machine")
    copies = ids_of(posts, lambda p: p["copy_of"])
    assert set(doc["offending_ids"]) == machine | copies
    # Worst first: the certainly-synthetic items, then the copies.
    assert set(doc["offending_ids"][:10]) == machine
    dup = {o["id"]: o for o in doc["offending"] if o["duplicate_of"]}
    assert {k: v["duplicate_of"] for k, v in dup.items()} == {"200": "100", "201": "101", "300": "102"}
    assert dup["300"]["problems"] == ["near_duplicate"] and dup["200"]["problems"] == ["exact_duplicate"]

    code, out, _ = gate_cli([*base, "--max-synthetic", "0.4", "--max-duplicates", "0.1"], capsys)
    assert code == 0 and out.startswith("synthfilter gate: PASS")
    code, out, _ = gate_cli([*base, "--max-duplicates", "0.05"], capsys)
    assert code == 1 and "failed: max_duplicates: 9.1 % of records are copies of another" in out
    code, out, _ = gate_cli([*base, "--min-records", "40"], capsys)
    assert code == 1 and "min_records: 33 records with text, at least 40 required" in out


def test_write_approved_removes_copies_downsamples_to_the_limit_and_loses_nothing(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    posts = make_posts()
    export = wxr(tmp_path / "blog.xml", posts, ATTACHMENT)
    out_dir = tmp_path / "approved"
    args = [str(export), *NO_DETECTOR, *WXR_PROVENANCE, "--max-synthetic", "0.25", "--write-approved", str(out_dir)]
    code, out, _ = gate_cli(args, capsys)
    assert code == 1  # the export as delivered fails; the approved subset meets the limit
    approved = [orjson.loads(x) for x in (out_dir / "approved.jsonl").read_bytes().splitlines()]
    rejected = [orjson.loads(x) for x in (out_dir / "rejected.jsonl").read_bytes().splitlines()]
    manifest = json.loads((out_dir / "manifest.json").read_text())

    assert len(approved) + len(rejected) == 35
    assert manifest["conservation"] == {"checked": True, "ok": True, "records": 35, "approved": len(approved),
                                        "rejected": len(rejected), "by_reason": manifest["conservation"]["by_reason"]}
    label = {p["id"]: p["label"] for p in posts}
    kept_ids = [r["id"] for r in approved]
    assert ids_of(posts, lambda p: p["label"] == "human" and not p["copy_of"]) <= set(kept_ids)
    n_machine = sum(label[i] == "machine" for i in kept_ids)
    assert n_machine / len(kept_ids) <= 0.25 and n_machine == 6  # the largest share within the limit
    assert len({r["text"] for r in approved}) == len(approved)
    assert all("track(" not in r["text"] and "<p>" not in r["text"] for r in approved)
    assert approved[0]["title"] == "Post 0" and approved[0]["link"] == "https://blog.example/?p=100"
    assert approved[0]["meta"]["custom_fields"] == {"ai_generated": "0"}

    why = {r["id"]: r["synthfilter"] for r in rejected}
    assert why["200"]["reason"] == "exact_duplicate" and why["200"]["duplicate_of"] == "100"
    assert why["300"]["reason"] == "near_duplicate" and why["300"]["duplicate_of"] == "102"
    assert why["900"] == {"decision": "rejected", "reason": "excluded", "score": None, "provenance": "unknown",
                          "excluded": "WordPress attachment item (not writing)", "source": "blog.xml item 34"}
    assert why["901"]["excluded"] == "status trash"
    assert sum(w["reason"] == "synthetic_downsampled" for w in why.values()) == 4
    assert manifest["verdict"] == "fail" and manifest["inputs"][0]["records"] == 35
    assert f"approved: {out_dir / 'approved.jsonl'} (26 records)" in out

    # A second gate into the same directory needs --overwrite; with it, the outputs are identical.
    before = (out_dir / "approved.jsonl").read_bytes()
    code, _, err = gate_cli(args, capsys)
    assert code == 2 and "directory is not empty; pass --overwrite" in err
    code, _, _ = gate_cli([*args, "--overwrite"], capsys)
    assert code == 1 and (out_dir / "approved.jsonl").read_bytes() == before


def test_excluded_items_keep_the_provenance_their_field_gives(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    trashed = ("\n  <item><title>Draft</title><wp:post_id>902</wp:post_id><wp:post_type>post</wp:post_type>"
               "<wp:status>trash</wp:status><content:encoded><![CDATA[<p>Old words.</p>]]></content:encoded>"
               "<wp:postmeta><wp:meta_key><![CDATA[ai_generated]]></wp:meta_key><wp:meta_value><![CDATA[1]]>"
               "</wp:meta_value></wp:postmeta></item>")
    export = wxr(tmp_path / "blog.xml", make_posts(n_human=6, n_machine=2, exact=0, near=0), trashed)
    out_dir = tmp_path / "approved"
    gate_cli([str(export), *NO_DETECTOR, *WXR_PROVENANCE, "--write-approved", str(out_dir)], capsys)
    why = {r["id"]: r["synthfilter"] for r in map(orjson.loads, (out_dir / "rejected.jsonl").read_bytes().splitlines())}
    # Never scored, it was written as "unknown" whatever its field said.
    assert why["902"]["reason"] == "excluded" and why["902"]["provenance"] == "machine"


# -- CSV, HTML report ----------------------------------------------------------------------------------


def write_csv(path: Path, posts: list[dict[str, Any]]) -> Path:
    with open(path, "w", newline="", encoding="utf-8") as f:
        w = csv.writer(f)
        w.writerow(["ID", "post_title", "post_content", "permalink", "generated_by"])
        for p in posts:
            w.writerow([p["id"], p["title"], f"<div><p>{p['text']}</p><style>.x{{}}</style></div>",
                        f"https://site.example/{p['id']}/", "gpt-4o" if p["label"] == "machine" else "human"])
    return path


def test_csv_export_html_report_lists_offending_items_worst_first(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    posts = make_posts(n_human=12, n_machine=3, exact=3, near=0)
    posts[1]["title"] = "<script>alert('title')</script> Ferry"  # a hostile title must stay text
    posts[12]["text"] = posts[0]["text"]  # a machine post copying a human one: two problems, the worst
    export = write_csv(tmp_path / "posts.csv", posts)
    report = tmp_path / "out" / "gate.html"
    code, out, _ = gate_cli([str(export), *NO_DETECTOR, "--text-column", "post_content", "--id-column", "ID",
                             "--provenance-field", "generated_by", "--provenance-map", "human=human,gpt-*=machine",
                             "--max-duplicates", "0.1", "--report", str(report)], capsys)
    assert code == 1 and "failed: max_duplicates: 22.2 % of records are copies of another (4 exact, 0 near)" in out
    page = report.read_text()
    assert page.startswith("<!DOCTYPE html>") and ">FAIL<" in page
    assert "<script>" not in page and "&lt;script&gt;alert(" in page
    rows = re.findall(r"<tr><td class=\"num\">(\d+)</td><td>([^<]*)</td><td>([^<]*)</td>", page)
    assert [r[0] for r in rows] == [str(i) for i in range(1, len(rows) + 1)]
    assert rows[0][1:] == ("synthetic, exact duplicate", "Post 12")
    assert {r[2] for r in rows[1:3]} == {"Post 13", "Post 14"}  # synthetic only
    assert {r[1] for r in rows[3:]} == {"exact duplicate"}
    assert 'href="https://site.example/201/"' in page and "101 (&lt;script&gt;alert(" in page
    assert "(again)" in page and "P(synthetic)" in page


def test_html_report_shows_the_warnings(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    # A failed check says "see the warning": the page must hold it (it was only in --json).
    export = write_csv(tmp_path / "posts.csv", make_posts(n_human=8, n_machine=4, exact=0, near=0))
    report = tmp_path / "gate.html"
    code, out, _ = gate_cli([str(export), *NO_DETECTOR, "--text-column", "post_content", "--id-column", "ID",
                             "--provenance-field", "generated_by", "--max-duplicates", "0.5",
                             "--report", str(report)], capsys)
    assert code == 0 and "warning: provenance field 'generated_by'" in out
    page = report.read_text()
    assert 'class="callout warn"' in page and "provenance field &#x27;generated_by&#x27;: 4 of its 12 values" in page


# -- Markdown folder with a TOML config, provenance rules --------------------------------------------


def test_markdown_site_with_config_file_requires_provenance(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    posts = make_posts(n_human=8, n_machine=4, exact=1, near=0)
    site = tmp_path / "content" / "posts"
    site.mkdir(parents=True)
    for i, p in enumerate(posts):
        front = f"title: \"{p['title']}\"\ndate: 2025-02-0{1 + i % 9}\n"
        if i % 5 != 4:  # every fifth post says nothing about who wrote it
            front += f"ai_generated: {'true' if p['label'] == 'machine' else 'false'}\n"
        (site / f"post-{p['id']}.md").write_text(f"---\n{front}---\n\n## {p['title']}\n\n{p['text']}\n")
    config = tmp_path / "synthfilter.toml"
    config.write_text('[gate]\nrequire_provenance = 0.1\nmax_duplicates = 0.2\n\n'
                      '[ratio]\nprovenance_field = "ai_generated"\nprovenance_map = { "true" = "machine", "false" = "human" }\n')
    code, out, _ = gate_cli([str(tmp_path / "content"), "--config", str(config), *NO_DETECTOR,
                             "--json", str(tmp_path / "g.json")], capsys)
    assert code == 1
    assert "provenance  missing on 15.4 % (2 records, field 'ai_generated')   limit 10.0 %   FAIL" in out
    assert "synthetic share cannot be estimated" in out  # labelled and unlabelled posts, no detector
    doc = json.loads((tmp_path / "g.json").read_text())
    assert doc["failed_rules"] == ["require_provenance"]
    unlabelled = {f"posts/post-{p['id']}.md" for i, p in enumerate(posts) if i % 5 == 4}
    missing = {o["id"] for o in doc["offending"] if "missing_provenance" in o["problems"]}
    assert missing == unlabelled
    # The same policy from flags overrides the file: a looser provenance rule passes.
    code, out, _ = gate_cli([str(tmp_path / "content"), "--config", str(config), *NO_DETECTOR,
                             "--require-provenance", "0.3"], capsys)
    assert code == 0
    # A synthetic limit cannot be checked on half-labelled posts without the detector: the rule
    # fails (exit 1), as on an export none of whose records can be estimated.
    code, out, _ = gate_cli([str(tmp_path / "content"), "--config", str(config), *NO_DETECTOR,
                             "--require-provenance", "0.3", "--max-synthetic", "0.5"], capsys)
    assert code == 1
    assert "failed: max_synthetic: the synthetic share cannot be estimated (see the note)" in out
    assert "note: 2 records have neither a provenance label nor a detector score" in out and "enable the detector" in out
    # An approved subset at an explicit target cannot be made at all: a usage error.
    code, _, err = gate_cli([str(tmp_path / "content"), "--config", str(config), *NO_DETECTOR,
                             "--target-ratio", "0.2", "--write-approved", str(tmp_path / "ap")], capsys)
    assert code == 2 and "cannot be estimated" in err and "enable the detector" in err


def test_html_folder_and_jsonl_approved_lines_stay_byte_identical(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    posts = make_posts(n_human=6, n_machine=2, exact=1, near=0)
    site = tmp_path / "public"
    site.mkdir()
    for p in posts:
        (site / f"{p['id']}.html").write_text(
            f"<!doctype html><html><head><title>{p['title']}</title>"
            f"<meta name='generated_by' content='{'gpt-4o' if p['label'] == 'machine' else 'human'}'></head>"
            f"<body><nav>Home · Archive</nav><main><p>{p['text']}</p></main></body></html>")
    flags = [*NO_DETECTOR, "--provenance-field", "generated_by", "--provenance-map", "human=human,gpt-*=machine"]
    code, out, _ = gate_cli([str(site), *flags, "--max-synthetic", "0.3", "--max-duplicates", "0.2"], capsys)
    assert code == 0 and "synthetic   25.0 %" in out

    export = tmp_path / "posts.jsonl"
    lines = [json.dumps({"id": p["id"], "text": p["text"], "generated_by": "gpt-4o" if p["label"] == "machine" else "human"},
                        ensure_ascii=False, indent=None, separators=(" , ", " : ")) for p in posts]
    export.write_text("\n".join(lines) + "\n", encoding="utf-8")
    code, _, _ = gate_cli([str(export), *flags, "--max-synthetic", "0.3", "--write-approved", str(tmp_path / "ok")], capsys)
    assert code == 0
    approved = (tmp_path / "ok" / "approved.jsonl").read_text(encoding="utf-8").splitlines()
    assert approved == [line for line, p in zip(lines, posts) if not p["copy_of"]]


# -- bad input: exit 2, one line naming file and position ---------------------------------------------


def test_bad_input_and_usage_exit_2_with_one_line(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    posts = make_posts(n_human=3, n_machine=0, exact=0, near=0)
    good = wxr(tmp_path / "blog.xml", posts)
    broken = tmp_path / "broken.xml"
    broken.write_text(good.read_text().replace("</wp:post_type>", "</wp:post_typ>", 1))
    bomb = tmp_path / "bomb.xml"
    bomb.write_text('<?xml version="1.0"?>\n<!DOCTYPE rss [<!ENTITY a "aaaaaaaaaa"><!ENTITY b "&a;&a;&a;&a;&a;&a;">]>\n'
                    "<rss><channel><item><title>&b;</title></item></channel></rss>\n")
    bad_csv = tmp_path / "bad.csv"
    bad_csv.write_text('id,text\n1,"ok"\n2,"unclosed\n')
    repeated = tmp_path / "repeated.jsonl"  # which text counts would be the JSON parser's silent choice
    repeated.write_text('{"id": "a", "text": "The mayor opened the new bridge with a short speech."}\n'
                        '{"id": "b", "text": "The first body of the post.", "text": "The second body."}\n')
    import os

    pipe = tmp_path / "pipe.jsonl"  # nothing writes to it: reading it would hang (it is read twice)
    os.mkfifo(pipe)
    (tmp_path / "site").mkdir()
    os.mkfifo(tmp_path / "site" / "post.md")
    cases = [
        ([str(pipe)], rf"^error: {re.escape(str(pipe))}: a named pipe \(FIFO\), not a regular file: .*to a file first$"),
        ([str(tmp_path / "site")], r"site/post\.md: a named pipe \(FIFO\), not a regular file"),
        ([str(repeated)], rf'^error: {re.escape(str(repeated))}:2: the record repeats the key "text" \(2 values\)'),
        ([str(broken)], rf"^error: {re.escape(str(broken))}:\d+: malformed XML: mismatched tag at column \d+$"),
        ([str(bomb)], rf"^error: {re.escape(str(bomb))}:2: refused: .*billion laughs"),
        ([str(bad_csv)], rf"^error: {re.escape(str(bad_csv))}:\d+: unreadable CSV"),
        ([str(bad_csv), "--format", "wxr"], rf"^error: {re.escape(str(bad_csv))}:1: malformed XML: syntax error"),
        ([str(tmp_path / "missing.xml")], "path does not exist"),
        ([str(good), "--require-provenance", "0.1"], "--require-provenance needs a provenance field"),
        ([str(good), "--max-synthetic", "1.5"], r"gate\.max_synthetic must be a share in \[0, 1\]"),
        ([str(good), "--provenance-field", "x", "--provenance-map", "oops"], "expected VALUE=LABEL pairs"),
        ([str(good), "--max-synthetic", "0.5"], "--max-synthetic needs a synthetic-share estimate"),
    ]
    for args, pattern in cases:
        code, out, err = gate_cli([*args, *NO_DETECTOR], capsys)
        assert code == 2, (args, out, err)
        assert out == "" and len(err.strip().splitlines()) == 1 and re.search(pattern, err.strip()), (args, err)


# -- Python API ---------------------------------------------------------------------------------------


def test_python_gate_on_records_and_policy_validation() -> None:
    posts = make_posts(n_human=10, n_machine=0, exact=2, near=1)
    records = [{"id": p["id"], "text": p["text"], "title": p["title"]} for p in posts]
    result = synthfilter.gate(records, GatePolicy(max_duplicates=0.25, min_records=5), {"detector": {"enabled": False}})
    assert isinstance(result, GateResult) and result.passed and result.exit_code == 0
    assert result.measured["duplicate_share"] == pytest.approx(3 / 13)
    strict = synthfilter.gate(records, {"max_duplicates": 0.1}, {"detector": {"enabled": False}})
    assert not strict.passed and [c.rule for c in strict.failed] == ["max_duplicates"]
    assert set(strict.offending_ids) == {"200", "201", "300"}
    assert [r.id for r in strict.approved] == [p["id"] for p in posts if not p["copy_of"]]
    assert strict.reasons[-1] == "near_duplicate" and strict.duplicate_of[-1] == "102"
    # Same records, same config: the same decisions.
    again = synthfilter.gate(records, {"max_duplicates": 0.1}, {"detector": {"enabled": False}})
    assert again.reasons == strict.reasons and again.to_dict()["offending"] == strict.to_dict()["offending"]

    with pytest.raises(ConfigError, match="max_synthetic must be a share"):
        GatePolicy(max_synthetic=2)
    with pytest.raises(ConfigError, match="unknown rule"):
        synthfilter.gate(records, {"max_synthetics": 0.1}, {"detector": {"enabled": False}})


def test_an_export_with_nothing_to_gate_fails_the_synthetic_rule(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    # Nothing read has text: no records, empty bodies, or every item excluded by a misspelt
    # --post-types. A gate that passed here would let a broken export through.
    for records in ([], [{"id": "a", "text": ""}, {"id": "b", "text": "   "}]):
        result = synthfilter.gate(records, {"max_synthetic": 0.2})
        assert not result.passed and result.exit_code == 1
        assert [c.rule for c in result.failed] == ["max_synthetic"]
        assert "nothing to check" in result.failed[0].detail
    posts = make_posts(n_human=6, n_machine=0, exact=0, near=0)
    export = wxr(tmp_path / "site.xml", posts)
    code, out, _ = gate_cli([str(export), "--post-types", "pots", "--max-synthetic", "0.2", *NO_DETECTOR,
                             *WXR_PROVENANCE], capsys)
    assert code == 1
    assert "not estimated (no record with text)" in out
    assert re.search(r"failed: max_synthetic: nothing to check: none of the 6 records read has text; 6 not gated "
                     r"\(post type post not in --post-types 6\)", out), out
    # The same export with the right post type passes.
    code, out, _ = gate_cli([str(export), "--max-synthetic", "0.2", *NO_DETECTOR, *WXR_PROVENANCE], capsys)
    assert code == 0, out


# -- with a detector: estimate, interval, --strict, worst-first by score --------------------------------


@pytest.fixture(scope="module")
def tiny_model(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A small detector trained here on the two textgen registers (the shipped one is not needed)."""
    from synthfilter.detect.train import TrainParams, train_command

    d = tmp_path_factory.mktemp("detector")
    rng = random.Random(77)
    rows = [{"text": human_text(rng, sentences=12), "label": "human"} for _ in range(60)]  # as make_posts writes
    rows += [{"text": assistant_text(rng, sentences=7), "label": "machine"} for _ in range(60)]
    rng.shuffle(rows)
    data = d / "train.jsonl"
    data.write_text("".join(json.dumps(r) + "\n" for r in rows), encoding="utf-8")
    fast = TrainParams(
        folds=2, calibration_share=0.25, head=dict(buckets=2**16, min_df=1, c=4.0),
        trees=dict(learning_rate=0.1, max_iter=30, max_leaf_nodes=7, min_samples_leaf=5, l2_regularization=1.0),
    )
    assert train_command([data], d / "model", seed=1, quiet=True, params=fast) == 0
    return d / "model"


def test_detector_scored_export_interval_strict_and_worst_first(tmp_path: Path, tiny_model: Path,
                                                               capsys: pytest.CaptureFixture[str]) -> None:
    posts = make_posts(n_human=24, n_machine=8, exact=0, near=0, seed=9)
    export = wxr(tmp_path / "blog.xml", posts)
    base = [str(export), "--model", str(tiny_model), "--json", str(tmp_path / "g.json")]
    code, out, err = gate_cli([*base, "--max-synthetic", "0.9"], capsys)
    assert code == 0 and err == "", (out, err)
    doc = json.loads((tmp_path / "g.json").read_text())
    m = doc["measured"]
    share, (lo, hi) = m["synthetic_share"], m["synthetic_ci95"]
    assert m["detector_scored"] == 32 and m["known_provenance"] == {"human": 0, "machine": 0}
    assert 0.1 < share < 0.45 and lo <= share < hi  # truth 0.25; a real interval around it
    machine = ids_of(posts, lambda p: p["label"] == "machine")
    top = doc["offending_ids"][:8]
    assert len(machine & set(top)) >= 6, (top, machine)
    scores = [o["p_synthetic"] for o in doc["offending"]]
    assert scores == sorted(scores, reverse=True)

    # A limit between the estimate and the interval's upper bound: passes, but not under --strict.
    limit = f"{(share + hi) / 2:.6f}"
    code, out, _ = gate_cli([*base, "--max-synthetic", limit], capsys)
    assert code == 0, out
    code, out, _ = gate_cli([*base, "--max-synthetic", limit, "--strict"], capsys)
    assert code == 1 and "failed: max_synthetic: upper bound of the synthetic share" in out

    # Approved output meets the synthetic limit, drops the likeliest-synthetic posts first.
    code, out, _ = gate_cli([*base, "--max-synthetic", "0.1", "--write-approved", str(tmp_path / "ok")], capsys)
    assert code == 1
    approved = json.loads((tmp_path / "g.json").read_text())["approved"]
    assert approved["target_ratio"] == 0.1 and approved["estimated_share_after"] <= 0.1 + 1e-9
    kept = [orjson.loads(x)["id"] for x in (tmp_path / "ok" / "approved.jsonl").read_bytes().splitlines()]
    assert len(kept) == approved["records"] and len(machine - set(kept)) >= 6


def test_labelled_and_unlabelled_posts_mix_with_the_detector(tmp_path: Path, tiny_model: Path) -> None:
    posts = make_posts(n_human=10, n_machine=6, exact=1, near=0, seed=4)
    records = [{"id": p["id"], "text": p["text"], **({"who": p["label"]} if i % 2 else {})} for i, p in enumerate(posts)]
    cfg = {"detector": {"model": str(tiny_model)}, "ratio": {"provenance_field": "who"}}
    result = synthfilter.gate(records, {"max_duplicates": 0.1, "require_provenance": 0.6}, cfg)
    m = result.measured
    assert m["known_provenance"] == {"human": sum(p["label"] == "human" for p in posts[1::2]),
                                     "machine": sum(p["label"] == "machine" for p in posts[1::2])}
    assert m["synthetic_share"] is not None and m["detector_scored"] > 0 and not result.messages
    assert result.passed and m["provenance_missing"] == 9  # the 9 even-numbered of 17 posts


def test_an_unreliable_detector_fails_the_synthetic_rule_unless_allowed(tmp_path: Path, tiny_model: Path,
                                                                     capsys: pytest.CaptureFixture[str]) -> None:
    # A card whose calibration contradicts its operating point: the estimators disagree, so the
    # detector's share is not to be trusted against --max-synthetic.
    model = tmp_path / "model"
    model.mkdir()
    for f in tiny_model.iterdir():
        (model / f.name).symlink_to(f)
    card = json.loads((tiny_model / "card.json").read_text())
    (model / "card.json").unlink()
    card["train_prior"] = 0.02
    card["operating_points_measured_on"] = "held-out split"
    for point in card["operating_points"]:  # rates no calibrated score of this model can have
        point.update(tpr=0.4, fpr=0.25)
    card.pop("score_distribution", None)
    (model / "card.json").write_text(json.dumps(card))
    posts = make_posts(n_human=120, n_machine=60, exact=0, near=0, seed=3)
    export = wxr(tmp_path / "blog.xml", posts)
    base = [str(export), "--model", str(model), "--json", str(tmp_path / "g.json"), "--max-synthetic", "1.0"]
    code, out, err = gate_cli(base, capsys)
    doc = json.loads((tmp_path / "g.json").read_text())
    assert doc["measured"]["synthetic_reliability"] == "unreliable", doc["measured"]
    assert code == 1 and "the detector looks unreliable on this export" in out
    code, out, err = gate_cli([*base, "--allow-unreliable-detector"], capsys)
    assert code == 0, out


# -- languages: as run identifies them, --languages -------------------------------------------------


def multilingual_posts() -> list[dict[str, Any]]:
    """English, French and German posts (tests/langtext.py), one French and one English copy."""
    from langtext import document

    posts = [{"id": f"{lang}-{k}", "text": document(lang, 4, seed=k)}
             for lang, n in (("en", 10), ("fr", 4), ("de", 3)) for k in range(n)]
    posts += [{"id": "fr-copy", "text": posts[10]["text"]}, {"id": "en-copy", "text": posts[0]["text"]}]
    return posts


def test_other_languages_are_not_scored_and_counted_as_run_counts_them(tmp_path: Path, tiny_model: Path) -> None:
    from synthfilter.config import Config
    from synthfilter.pipeline.run import run_pipeline

    posts = multilingual_posts()
    for p in posts[11:13]:
        p["who"] = "machine"  # fr-1, fr-2: provenance still decides for them
    options = {"detector": {"model": str(tiny_model)}, "report": {"diversity": False, "html": False},
               "ratio": {"provenance_field": "who", "provenance_map": {"machine": "machine"}}}
    result = synthfilter.gate(posts, {"max_synthetic": 1.0}, options)
    english = [i for i, p in enumerate(posts) if p["id"].startswith("en")]
    assert all((result.scores[i] is not None) == (i in english) for i in range(len(posts)))
    m = result.measured
    assert m["detector_scored"] == len(english) - 1 and m["synthetic_share"] is not None  # the copy is not estimated
    assert m["known_provenance"]["machine"] == 2 and result.report["languages"]["by_language"]["fr"]["in_estimate"] == 2
    assert "5 in other languages left out" in m["synthetic_basis"]  # 2 French labelled; fr-copy is a duplicate
    (tmp_path / "in").mkdir()
    (tmp_path / "in" / "posts.jsonl").write_text("".join(json.dumps(p) + "\n" for p in posts), encoding="utf-8")
    run = run_pipeline([str(tmp_path / "in")], tmp_path / "out", Config.from_dict({**options, "quiet": True, "workers": 1}))
    assert result.report["languages"] == run.report["languages"]
    assert result.report["synthetic"]["scope"] == run.report["synthetic"]["scope"]
    assert result.reasons == _run_reasons(tmp_path / "out", posts)
    assert "languages: en 11, fr 5, de 3" in result.summary()

    # No record the detector may score, none labelled: the share is unknown, so the rule fails.
    others = synthfilter.gate([p for p in posts if p["id"][:2] != "en" and "who" not in p], {"max_synthetic": 1.0}, options)
    assert not others.passed and others.measured["synthetic_estimable"] is False
    assert "cannot be estimated" in others.failed[0].detail and "trusted on (en)" in others.messages[0]


def _run_reasons(out: Path, posts: list[dict[str, Any]]) -> list[str]:
    why = {json.loads(line)["id"]: "kept" for line in (out / "kept" / "posts.jsonl").read_text().splitlines()}
    for line in (out / "rejected" / "posts.jsonl").read_text().splitlines():
        rec = json.loads(line)
        why[rec["id"]] = rec["synthfilter"]["reason"]
    return [why[p["id"]] for p in posts]


def test_languages_option_rejects_other_languages_before_dedup(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    posts = multilingual_posts()
    export = tmp_path / "posts.jsonl"
    export.write_text("".join(json.dumps(p) + "\n" for p in posts), encoding="utf-8")
    args = [str(export), *NO_DETECTOR, "--languages", "en,de", "--max-duplicates", "0.05", "--json", str(tmp_path / "g.json"),
            "--report", str(tmp_path / "g.html"), "--write-approved", str(tmp_path / "ok")]
    code, out, err = gate_cli(args, capsys)
    assert code == 1 and err == "", (out, err)  # en-copy: 1 of 14 English and German posts
    assert "14 with text, 0 without text, 5 in other languages (--languages)" in out
    doc = json.loads((tmp_path / "g.json").read_text())
    assert doc["measured"]["language_rejected"] == 5 and doc["measured"]["duplicate_share"] == pytest.approx(1 / 14)
    langs = doc["report"]["languages"]
    assert langs["keep"] == ["en", "de"] and langs["detector_languages"] == []
    assert langs["by_language"]["fr"] == {"records": 5, "kept": 0, "rejected_by_reason": {"language": 5},
                                          "detector_scored": 0, "in_estimate": 0}
    assert doc["offending_ids"] == ["en-copy"]  # the French copy is set aside for its language, not a duplicate
    rejected = {r["id"]: r["synthfilter"] for r in map(json.loads, (tmp_path / "ok" / "rejected.jsonl").read_text().splitlines())}
    assert {i for i, s in rejected.items() if s["reason"] == "language"} == {p["id"] for p in posts if p["id"].startswith("fr")}
    assert rejected["fr-copy"]["language"] == "fr" and "duplicate_of" not in rejected["fr-copy"]
    assert rejected["en-copy"] == {**rejected["en-copy"], "reason": "exact_duplicate", "duplicate_of": "en-0", "language": "en"}
    assert ">Languages<" in (tmp_path / "g.html").read_text(encoding="utf-8")


def test_a_human_loss_limit_fails_a_rule_and_the_outputs_are_still_written(tmp_path: Path) -> None:
    """ratio.max_human_loss made the gate stop like `run` (exit 1, no report, no approved subset):
    a gate never refuses, so the limit is a rule that fails, and the plan goes on without it."""
    import synthfilter

    posts = make_posts(n_human=40, n_machine=40, exact=0, near=0)
    records = [{"id": p["id"], "text": p["text"]} for p in posts]
    result = synthfilter.gate(records, {"max_duplicates": 0.5},
                              {"ratio": {"max_human_loss": 0.0, "target_ratio": 0.05}})
    (check,) = [c for c in result.checks if c.rule == "max_human_loss"]
    assert not result.passed and not check.passed and check.limit == 0.0 and check.measured > 0
    assert "more than ratio.max_human_loss 0" in check.detail and "--max-human-loss" not in check.detail
    assert result.measured["human_loss"] == check.measured
    assert sum(r == "kept" for r in result.reasons) < len(records)  # downsampled to the target all the same
    loose = synthfilter.gate(records, {"max_duplicates": 0.5}, {"ratio": {"target_ratio": 0.05}})
    assert loose.passed and list(loose.reasons) == list(result.reasons)


def test_an_export_with_nothing_to_gate_fails_whatever_the_rules(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    # A duplicates-only gate passed an export whose items were all excluded (a misspelt
    # --post-types), an export with no items, and one with no rules at all.
    posts = make_posts(n_human=6, n_machine=0, exact=0, near=0)
    export = wxr(tmp_path / "site.xml", posts)
    code, out, _ = gate_cli([str(export), "--post-types", "pots", "--max-duplicates", "0.05", *NO_DETECTOR], capsys)
    assert code == 1
    assert re.search(r"failed: min_records: none of the 6 items read has text to gate; 6 not gated \(post type post", out)
    empty = wxr(tmp_path / "empty.xml", [])
    code, out, _ = gate_cli([str(empty), *NO_DETECTOR], capsys)
    assert code == 1 and "failed: min_records: no item was read" in out
    assert synthfilter.gate([], {"min_records": 0}, {"detector": {"enabled": False}}).passed  # asked for


def test_items_without_text_are_named_in_the_json_and_the_page(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    # They were only counted ("2 without text"): an editor could not find which posts came out empty.
    posts = make_posts(n_human=6, n_machine=0, exact=0, near=0)
    posts[2]["text"] = ""
    posts[4]["text"] = ""
    export = wxr(tmp_path / "site.xml", posts)
    report, doc = tmp_path / "g.html", tmp_path / "g.json"
    code, _, _ = gate_cli([str(export), *NO_DETECTOR, "--max-duplicates", "0.5", "--report", str(report),
                           "--json", str(doc)], capsys)
    assert code == 0
    named = json.loads(doc.read_text())["without_text"]
    assert [e["id"] for e in named] == [posts[2]["id"], posts[4]["id"]]
    assert named[0]["title"] == posts[2]["title"] and named[0]["where"].startswith("https://")
    page = report.read_text()
    assert "Items without text" in page and f"<code>{posts[4]['id']}</code>" in page


def test_items_are_ranked_by_every_problem_they_are_listed_with() -> None:
    # "Sorted by the number of problems", but missing provenance was not counted: an unlabelled
    # copy (2 problems) ranked below posts already labelled machine (1 problem).
    posts = make_posts(n_human=4, n_machine=3, exact=0, near=0)
    records = [{"id": p["id"], "text": p["text"], "who": p["label"]} for p in posts]
    records.append({"id": "copy", "text": posts[0]["text"]})  # no provenance, and a copy of a human post
    result = synthfilter.gate(records, {"require_provenance": 0.5},
                              {"detector": {"enabled": False}, "ratio": {"provenance_field": "who"}})
    ranked = result.to_dict()["offending"]
    assert ranked[0]["id"] == "copy" and sorted(ranked[0]["problems"]) == ["exact_duplicate", "missing_provenance"]
    assert [o["problems"] for o in ranked[1:]] == [["synthetic"]] * 3
