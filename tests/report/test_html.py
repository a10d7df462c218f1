"""report.html: content, self-containment, edge cases, and a real headless Chromium rendering it."""

from __future__ import annotations

import copy
import os
import re
import shutil
from pathlib import Path
from typing import Any

import numpy as np
import pytest

from synthfilter.diversity import diversity_section
from synthfilter.pipeline.stages import REASONS
from synthfilter.report import charts
from synthfilter.report.html import (
    REASON_NAMES,
    Html,
    Stat,
    chart,
    chart_svg,
    headline,
    kv_table,
    page,
    render_gate_report,
    reliability_block,
    render_run_report,
    section,
    table,
)
from textgen import corpus

KEPT, MALFORMED, EXACT, NEAR, DOWN = range(5)


def make_run(n: int = 3000, seed: int = 0) -> tuple[dict[str, Any], dict[str, Any], np.ndarray, np.ndarray, np.ndarray]:
    """A report/manifest pair as a target-ratio run writes them, with per-record arrays that agree."""
    rng = np.random.default_rng(seed)
    machine = rng.random(n) < 0.4
    scores = np.where(machine, rng.beta(6, 2, n), rng.beta(2, 6, n)).astype(np.float32)
    reasons = np.full(n, KEPT, dtype=np.int8)
    reasons[rng.random(n) < 0.06] = EXACT
    reasons[(reasons == KEPT) & (rng.random(n) < 0.03)] = NEAR
    reasons[(reasons == KEPT) & machine & (scores > 0.6)] = DOWN
    reasons[:5] = MALFORMED
    scores[:5] = np.nan
    c = np.bincount(reasons, minlength=len(REASON_NAMES))
    cluster_sizes = np.array([2] * 150 + [3] * 20 + [4] * 5 + [9, 25], dtype=np.int64)
    texts = [t for _, t in corpus(600, seed=seed, machine_share=0.4)]
    groups = [f"part-{i % 3}.jsonl" for i in range(600)]
    kept = [i for i in range(600) if i % 5]
    report = {
        "version": "0.1.0",
        "input": {"records": n, "bytes": 1_234_567, "shards": 3, "malformed": int(c[MALFORMED])},
        "output": {"kept": int(c[KEPT]), "rejected": int(n - c[KEPT]),
                   "rejected_by_reason": {r: int(c[i]) for i, r in enumerate(REASON_NAMES) if i},
                   "dry_run": False},
        "duplicates": {"exact": int(c[EXACT]), "near": int(c[NEAR]), "clusters": len(cluster_sizes),
                       "largest_cluster": 25, "bands": 14, "rows": 9, "threshold": 0.8},
        "synthetic": {"known_provenance": {"human": 0, "machine": 0}, "detector_scored": n - 5,
                      "estimated_share_before": 0.4123, "ci95_before": [0.395, 0.43],
                      "estimated_share_after": 0.0987, "ci95_after": [0.09, 0.108], "target_ratio": 0.1,
                      "downsampled": int(c[DOWN]), "method": "prior_shift", "strategy": "threshold"},
        "warnings": ["the detector's accuracy on this corpus is unknown"],
        "timing": {"seconds": 12.5, "records_per_s": n / 12.5},
        "diversity": diversity_section([texts[i] for i in range(600)], [texts[i] for i in kept],
                                       groups, [groups[i] for i in kept]),
    }
    manifest = {
        "synthfilter_version": "0.1.0",
        "config": {"seed": 0, "dedup": {"threshold": 0.8, "num_perm": 128}, "ratio": {"target_ratio": 0.1},
                   "report": {"group_by": None, "sample_size": 5000}},
        "seed": 0, "started": "2026-01-02T03:04:05+00:00", "ended": "2026-01-02T03:04:18+00:00",
        "inputs": [{"path": f"/data/part-{s}.jsonl", "rel": f"part-{s}.jsonl", "format": "jsonl", "compression": None,
                    "size": 400_000, "records": 1000, "kept": 700, "rejected": 300,
                    "by_reason": {"exact_duplicate": 60}} for s in range(3)],
        "ignored_files": [], "model": {"id": "default-v1", "sha256": "ab" * 32},
        "dedup": {"scheme": "affine32", "num_perm": 128, "ngram": 5, "bands": 14, "rows": 9, "threshold": 0.8},
        "conservation": {"checked": True, "ok": True, "shards": 3}, "python": "3.11.7",
    }
    return report, manifest, scores, reasons, cluster_sizes


def render(**changes: Any) -> str:
    report, manifest, scores, reasons, sizes = make_run()
    args = {"scores": scores, "reasons": reasons, "cluster_sizes": sizes}
    args.update(changes)
    return render_run_report(report, manifest, **args)


@pytest.fixture(scope="module")
def full_html() -> str:
    return render()


# -- content ------------------------------------------------------------------------------------


def test_reason_names_follow_the_pipeline():
    assert REASON_NAMES == REASONS


def test_headline_numbers(full_html):
    report = make_run()[0]
    assert f"{report['input']['records']:,}" in full_html
    assert f"{report['output']['kept']:,}" in full_html
    dup = report["duplicates"]["exact"] + report["duplicates"]["near"]
    assert f">{dup:,}<" in full_html
    assert "41.2 % → 9.9 %" in full_html
    assert "39.5–43.0 %" in full_html and "9.0–10.8 %" in full_html
    assert "target ≤ 10.0 %" in full_html
    assert "the detector&#x27;s accuracy on this corpus is unknown" in full_html


def test_every_chart_and_section_is_present(full_html):
    assert full_html.count('<svg class="chart"') == 5  # outcomes, scores, clusters, diversity, phrases
    for title in ("Summary", "Where the records went", "Detector scores", "Duplicates", "Diversity", "By group", "Run"):
        assert f'data-title="{title}"' in full_html and f'href="#' in full_html
    for label in ("histogram of detector scores by decision", "duplicate clusters by size",
                  "diversity before and after filtering", "most repeated phrases", "records by outcome"):
        assert f'aria-label="{label}"' in full_html
    # the per-group table lists each shard, the config and the inputs are there
    for shard in ("part-0.jsonl", "part-1.jsonl", "part-2.jsonl"):
        assert f"<code class=\"nowrap\" title=\"{shard}\">{shard}</code>" in full_html
    assert "<code>dedup.num_perm</code>" in full_html
    assert "default-v1" in full_html and "checked, ok" in full_html


def test_diversity_table_shows_before_after_and_direction(full_html):
    div = make_run()[0]["diversity"]
    assert "distinct-3" in full_html and "MATTR" in full_html and "mean pairwise similarity" in full_html
    top = div["before"]["samey_ngrams"][0]["ngram"]
    assert top in full_html
    assert re.search(r'class="(up|down|flat)"', full_html)


def test_page_is_self_contained(full_html):
    assert "<script" not in full_html.lower()
    assert "<link" not in full_html.lower() and "@import" not in full_html
    assert not re.search(r"\bsrc\s*=", full_html)
    # Every link is to the page itself; url() only to ids in the page.
    assert set(re.findall(r'href="([^"]*)"', full_html)) <= {f"#{a}" for a in re.findall(r'<section id="([^"]+)"', full_html)} | {
        f"#{i}" for i in re.findall(r'\bid="([^"]+)"', full_html)}
    assert all(u.startswith("#") for u in re.findall(r"url\(([^)]*)\)", full_html))
    # The only URLs are XML namespace names, which are never fetched.
    assert set(re.findall(r"https?://[^\s\"'<>)]+", full_html)) <= {
        "http://www.w3.org/2000/svg", "http://www.w3.org/1999/xlink"}
    assert "Content-Security-Policy" in full_html and "default-src 'none'" in full_html


def test_ids_are_unique_across_charts(full_html):
    ids = re.findall(r'\bid="([^"]+)"', full_html)
    assert len(ids) == len(set(ids)) and len(ids) > 10


def test_same_inputs_give_the_same_bytes():
    assert render() == render()


def test_text_from_the_data_is_escaped():
    report, manifest, scores, reasons, sizes = make_run()
    report["warnings"] = ["<script>alert(1)</script>"]
    report["diversity"]["by_group"] = {"<img src=x>": report["diversity"]["by_group"]["part-0.jsonl"]}
    html = render_run_report(report, manifest, scores=scores, reasons=reasons, cluster_sizes=sizes)
    assert "<script>" not in html and "<img src=x>" not in html
    assert "&lt;script&gt;alert(1)&lt;/script&gt;" in html and "&lt;img src=x&gt;" in html


# -- edge cases -----------------------------------------------------------------------------------


def test_detector_off_all_scores_nan():
    report, manifest, _, reasons, sizes = make_run()
    report["synthetic"] = {"known_provenance": {"human": 0, "machine": 0}, "detector_scored": 0, "target_ratio": None,
                           "downsampled": 0, "method": None, "strategy": None}
    manifest["model"] = None
    html = render_run_report(report, manifest, scores=np.full(len(reasons), np.nan, np.float32),
                             reasons=np.where(reasons == DOWN, KEPT, reasons).astype(np.int8), cluster_sizes=sizes)
    assert "the detector was off" in html
    assert 'aria-label="histogram of detector scores by decision"' not in html
    assert "detector off and no provenance" in html and "none (detector off)" in html


def test_no_duplicates():
    report, manifest, scores, reasons, _ = make_run()
    report["duplicates"] = {"exact": 0, "near": 0, "clusters": 0, "largest_cluster": 0, "bands": None, "rows": None,
                            "threshold": None}
    html = render_run_report(report, manifest, scores=scores, reasons=np.where(reasons >= EXACT, KEPT, reasons).astype(np.int8),
                             cluster_sizes=np.zeros(0, np.int64))
    assert "No duplicate clusters." in html
    assert 'aria-label="duplicate clusters by size"' not in html


def test_zero_records():
    report = {
        "version": "0.1.0", "input": {"records": 0, "bytes": 0, "shards": 1, "malformed": 0},
        "output": {"kept": 0, "rejected": 0, "rejected_by_reason": {r: 0 for r in REASON_NAMES[1:]}, "dry_run": False},
        "duplicates": {"exact": 0, "near": 0, "clusters": 0, "largest_cluster": 0, "bands": 14, "rows": 9, "threshold": 0.8},
        "synthetic": {"known_provenance": {"human": 0, "machine": 0}, "detector_scored": 0, "target_ratio": None,
                      "downsampled": 0, "method": None, "strategy": None},
        "warnings": [], "timing": {"seconds": 0.01, "records_per_s": 0.0},
        "diversity": diversity_section([], [], [], []),
    }
    html = render_run_report(report, {"inputs": [], "config": {}}, scores=np.zeros(0, np.float32),
                             reasons=np.zeros(0, np.int8), cluster_sizes=np.zeros(0, np.int64))
    assert "No records." in html and "No duplicate clusters." in html
    assert "No diversity metric could be computed" in html
    assert html.count('<svg class="chart"') == 0
    # and with nothing at all but the required keys
    assert "<html" in render_run_report({"input": {"records": 0}}, {}, scores=None, reasons=None, cluster_sizes=None)


def test_dry_run_and_missing_diversity():
    report, manifest, scores, reasons, sizes = make_run()
    report["output"]["dry_run"] = True
    del report["diversity"]
    manifest["conservation"] = {"checked": False, "ok": True, "shards": 3}
    html = render_run_report(report, manifest, scores=scores, reasons=reasons, cluster_sizes=sizes)
    assert '<span class="badge">dry run</span>' in html and "Dry run: decisions only" in html
    assert "Diversity was not measured for this run." in html
    assert "not checked (dry run)" in html


def test_mismatched_arrays_are_refused():
    report, manifest, scores, reasons, sizes = make_run()
    with pytest.raises(ValueError, match="one entry per record"):
        render_run_report(report, manifest, scores=scores[:-1], reasons=reasons, cluster_sizes=sizes)


def test_many_groups_are_capped_in_the_table():
    report, manifest, scores, reasons, sizes = make_run()
    one = report["diversity"]["by_group"]["part-0.jsonl"]
    report["diversity"]["by_group"] = {f"shard-{i:03d}.jsonl": copy.deepcopy(one) for i in range(120)}
    report["diversity"]["by_group_omitted"] = 880
    html = render_run_report(report, manifest, scores=scores, reasons=reasons, cluster_sizes=sizes)
    assert "… and 70 more" in html
    assert "880 smaller group(s) were not measured" in html


# -- building blocks and charts -------------------------------------------------------------------


def test_score_counts_bins_by_reason_and_skips_nan():
    scores = np.array([0.0, 0.04, 0.05, 0.5, 0.999, 1.0, np.nan, 0.72], dtype=np.float32)
    reasons = np.array([0, 0, 4, 4, 4, 2, 0, 3], dtype=np.int8)
    got = charts.score_counts(scores, reasons, 5, bins=20)
    assert got.sum() == 7
    assert got[0, 0] == 2 and got[4, 1] == 1 and got[4, 10] == 1 and got[4, 19] == 1 and got[2, 19] == 1 and got[3, 14] == 1
    rng = np.random.default_rng(1)
    s, r = rng.random(10_000).astype(np.float32), rng.integers(0, 5, 10_000).astype(np.int8)
    assert np.array_equal(charts.score_counts(s, r, 5, chunk=333), charts.score_counts(s, r, 5))


def test_building_blocks_compose_a_page():
    from matplotlib.figure import Figure

    fig = Figure(figsize=(3, 2))
    fig.add_subplot().plot([0, 1], [1, 0])
    svg = chart_svg(fig, title="a line")
    assert svg.startswith('<svg class="chart" role="img" aria-label="a line"') and 'width="' not in svg.split(">")[0]
    html = page("Gate <x>", [
        section("Numbers", headline([Stat("records", "1,000", "all of them", "good")])),
        section("Table", table([{"a": 1, "b": "x"}, {"a": 2.5, "b": Html("<b>y</b>")}], [("a", "A"), "b"], caption="t")),
        section("Config", kv_table({"x": {"y": 1, "z": [1, 2]}, "flag": True})),
        section("Chart", chart(svg, "caption"), chart(None, empty="nothing here")),
    ])
    assert "<title>Gate &lt;x&gt;</title>" in html
    assert '<div class="stat good">' in html and '<td class="num">2.5</td>' in html and "<b>y</b>" in html
    assert "<code>x.y</code>" in html and "[1, 2]" in html and ">true<" in html
    assert "nothing here" in html and html.count("<svg") == 1
    assert [m for m in re.findall(r'<a href="#([^"]+)">', html)] == ["numbers", "table", "config", "chart"]


def test_gate_report_reuses_the_run_sections():
    report, manifest, scores, reasons, sizes = make_run()
    verdict = {"passed": False, "policy": "at most 10 % synthetic",
               "checks": [{"name": "synthetic share", "passed": False, "value": 0.41, "limit": 0.1, "detail": "too high"},
                          {"name": "duplicates", "passed": True, "value": 0.02, "limit": 0.05}],
               "messages": ["export refused"]}
    html = render_gate_report(verdict, report=report, manifest=manifest, scores=scores, reasons=reasons, cluster_sizes=sizes)
    assert '<div class="verdict fail">FAIL</div>' in html and "✘ fail" in html and "✔ pass" in html
    assert "at most 10 % synthetic" in html and "export refused" in html
    assert 'data-title="Detector scores"' in html and html.count('<svg class="chart"') == 5
    alone = render_gate_report({"passed": True})
    assert '<div class="verdict pass">PASS</div>' in alone and "<svg" not in alone


# -- a real browser -------------------------------------------------------------------------------


def _chromium() -> str | None:
    for candidate in (os.environ.get("SYNTHFILTER_CHROMIUM"), "/usr/bin/chromium", shutil.which("chromium"),
                      shutil.which("chromium-browser")):
        if candidate and Path(candidate).exists():
            return candidate
    return None


CHROMIUM_ARGS = ["--headless", "--no-sandbox", "--disable-gpu", "--disable-background-networking",
                 "--disable-component-update", "--no-first-run", "--disable-sync"]


def test_renders_in_headless_chromium_without_network(tmp_path, full_html):
    exe = _chromium()
    if exe is None:
        pytest.skip("no Chromium binary (install Debian's `chromium` package, or set SYNTHFILTER_CHROMIUM)")
    from playwright.sync_api import sync_playwright

    path = tmp_path / "report.html"
    path.write_text(full_html, encoding="utf-8")
    url = path.as_uri()
    requested: list[str] = []

    def only_the_page(route: Any) -> None:
        requested.append(route.request.url)
        if route.request.url == url:
            route.continue_()
        else:
            route.abort()

    with sync_playwright() as p:
        browser = p.chromium.launch(executable_path=exe, args=CHROMIUM_ARGS)
        try:
            # CSP bypassed here so that a reference to anything outside the page would reach the router.
            ctx = browser.new_context(viewport={"width": 1366, "height": 768}, bypass_csp=True)
            ctx.route("**/*", only_the_page)
            pg = ctx.new_page()
            errors: list[str] = []
            pg.on("console", lambda m: errors.append(m.text) if m.type == "error" else None)
            pg.on("pageerror", lambda e: errors.append(str(e)))
            pg.goto(url, wait_until="load")
            assert requested == [url]
            assert errors == []
            boxes = pg.eval_on_selector_all("svg.chart", "els => els.map(e => e.getBoundingClientRect().width)")
            assert len(boxes) == 5 and min(boxes) > 400
            drawn = pg.eval_on_selector_all("svg.chart", "els => els.map(e => e.querySelectorAll('path, use').length)")
            assert min(drawn) > 10
            assert pg.inner_text("#summary").count("Records in") == 1
            # readable on a laptop screen: no horizontal scrolling
            assert pg.evaluate("document.documentElement.scrollWidth") <= 1366
            shot = tmp_path / "report.png"
            pg.screenshot(path=str(shot), full_page=True)
            assert shot.stat().st_size > 20_000 and shot.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
            ctx.close()
            # Control: the same check sees a page that does reach out (the router aborts the request).
            leaky = tmp_path / "leaky.html"
            leaky.write_text(full_html.replace("</main>", '<img src="http://198.51.100.7/x.png"></main>'), encoding="utf-8")
            requested.clear()
            url = leaky.as_uri()
            ctx = browser.new_context(bypass_csp=True)
            ctx.route("**/*", only_the_page)
            ctx.new_page().goto(url, wait_until="load")
            assert requested == [url, "http://198.51.100.7/x.png"]
            ctx.close()
            url = path.as_uri()
            # With the page's own CSP in force, its inline style still applies.
            ctx = browser.new_context(viewport={"width": 1366, "height": 768})
            pg = ctx.new_page()
            pg.goto(url, wait_until="load")
            assert pg.eval_on_selector("section", "e => getComputedStyle(e).backgroundColor") == "rgb(255, 255, 255)"
            ctx.close()
        finally:
            browser.close()
    print(f"screenshot: {shot}")


def test_prerendered_sections_give_the_same_page(full_html: str) -> None:
    # A run draws the charts while its records are written and passes them in: same bytes.
    from synthfilter.report.html import prerender_run_sections

    report, manifest, scores, reasons, sizes = make_run()
    early = prerender_run_sections({k: v for k, v in report.items() if k != "timing"},
                                   group_by=manifest["config"]["report"]["group_by"],
                                   scores=scores, reasons=reasons, cluster_sizes=sizes)
    assert render_run_report(report, manifest, scores=scores, reasons=reasons, cluster_sizes=sizes,
                             prerendered=early) == full_html


def test_an_ok_interval_widened_over_the_estimators_says_why() -> None:
    def block(verdict: str) -> str:
        return reliability_block({"ci95_before": [0.38, 0.52], "reliability": {
            "verdict": verdict, "reasons": [], "interval": "estimator_range", "ci95_sampling": [0.43, 0.50],
            "checks": {}}})

    ok = block("ok")
    assert "widened to" in ok and "estimator range: two estimates of the share differ by more than sampling" in ok
    assert "differ by more than sampling" not in block("doubtful")
