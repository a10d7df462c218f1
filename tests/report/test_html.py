"""report.html: content, self-containment, edge cases, and a real headless Chromium rendering it."""

from __future__ import annotations

import copy
import json
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
    assert "widened to" in ok and ("estimator range: from the lowest to the highest estimate; two estimates of the "
                                   "share differ by more than sampling") in ok
    assert "differ by more than sampling" not in block("doubtful")


# -- plain words: estimators, checks, what each number covers -------------------------------------


def _shifted_synthetic() -> dict[str, Any]:
    """``synthetic`` as report.json writes it for a corpus the detector misreads (em primary, the
    checks flag it, no record of known provenance), as in a run on an off-distribution corpus."""
    reason_fit = ("the corpus's detector scores do not look like a mix of human and machine text as the detector "
                  "knows them: 41% of the score histogram sits where no mix puts it, as much as moving the synthetic "
                  "share by 66 points (p = 0.002)")
    reason_agree = ("two estimates of the synthetic share differ by 53 points (33% from the calibrated scores, 87% "
                    "from the fpr1 threshold)")
    point = {"threshold": 0.97, "card_tpr": 0.3287, "card_fpr": 0.0102, "measured_tpr": None, "measured_fpr": None,
             "labelled_machine": 0, "labelled_human": 0}
    return {
        "estimated_share_before": 0.3304, "ci95_before": [0.0, 1.0], "estimated_share_after": 0.3304,
        "ci95_after": [0.0, 1.0], "target_ratio": None, "known_provenance": {"human": 0, "machine": 0},
        "detector_scored": 1018, "unscored": 0, "downsampled": 0, "naive_share_before": 0.37, "method": "em",
        "strategy": None, "detector_share_by_method": {"acc": 0.4462, "em": 0.3304}, "weak_detector": True,
        "scope": {"detector_languages": ["en"], "records_in_estimate": 1018, "not_estimated": 22},
        "reliability": {
            "verdict": "unreliable", "reasons": [reason_fit, reason_agree], "interval": "source_shift",
            "ci95_sampling": [0.296, 0.362], "ci95_unseen_source": [0.296, 1.0], "low_end_zero": True,
            "checks": {
                "provenance": {"level": "not_run", "reason": "no record of known provenance carries a detector score",
                               "min_labelled": 30, "labelled": {"human": 0, "machine": 0},
                               "points": [{"name": "fpr1", **point}, {"name": "fpr5", **point}], "rates_used": "card"},
                "mixture_fit": {"level": "unreliable", "reason": reason_fit, "share": 0.3359, "tv": 0.4753,
                                "tv_null_median": 0.069, "tv_excess": 0.4063, "separation": 0.612,
                                "share_points": 0.664, "p_value": 0.0024937655860349127, "bins": 30,
                                "class_histograms": "card"},
                "agreement": {"level": "unreliable", "reason": reason_agree, "primary": "em", "primary_share": 0.3304,
                              "pairs": [
                                  {"estimator": "acc@fpr1", "share": 0.8654, "difference": 0.535, "sd": 0.036,
                                   "z": 14.9, "level": "unreliable"},
                                  {"estimator": "acc@fpr5", "share": 0.4462, "difference": 0.1158, "sd": 0.016,
                                   "z": 7.1, "level": "unreliable"},
                                  {"estimator": "mixture", "share": 0.3359, "difference": 0.0055, "sd": 0.007,
                                   "z": 0.76, "level": "ok"}]},
            },
        },
    }


def _labelled_synthetic() -> dict[str, Any]:
    """``synthetic`` of a target-ratio run with 116 records of known provenance: the estimate uses the
    count above the fpr1 threshold with both rates re-measured on them (26.1 % of the 902 detector-scored
    records), so the share before, over all 1,018 records, is (0.2605 × 902 + 56) / 1018 = 28.6 %."""
    point = {"card_tpr": 0.3287, "card_fpr": 0.0102, "measured_tpr": 1.0, "measured_fpr": 0.0,
             "labelled_machine": 56, "labelled_human": 60}
    return {
        "estimated_share_before": 0.28585, "ci95_before": [0.2482, 0.3111], "estimated_share_after": 0.0994,
        "ci95_after": [0.052, 0.127], "kept_share_known": True, "target_ratio": 0.1,
        "known_provenance": {"human": 60, "machine": 56}, "detector_scored": 902, "unscored": 0, "downsampled": 230,
        "detector_share_by_method": {"acc": 0.2605, "em": 0.3002}, "method": "acc", "strategy": "threshold",
        "scope": {"detector_languages": ["en"], "records_in_estimate": 1018, "not_estimated": 22},
        "reliability": {
            "verdict": "ok", "reasons": [], "interval": "sampling", "ci95_sampling": [0.2482, 0.3111],
            "ci95_unseen_source": [0.239, 0.3136], "low_end_zero": False,
            "checks": {
                "provenance": {"level": "ok", "reason": None, "min_labelled": 30, "labelled": {"human": 60, "machine": 56},
                               "points": [{"name": "fpr1", "threshold": 0.97, **point},
                                          {"name": "fpr5", "threshold": 0.93, **point}],
                               "rates_used": "corpus", "share_with_card_rates": 0.786, "share_with_measured_rates": 0.2605},
                "mixture_fit": {"level": "ok", "reason": None, "share": 0.2652, "tv": 0.166, "tv_null_median": 0.1606,
                                "tv_excess": 0.0057, "separation": 0.798, "share_points": 0.007,
                                "p_value": 0.41895261845386533, "bins": 30, "class_histograms": "labelled"},
                "agreement": {"level": "ok", "reason": None, "primary": "acc@fpr1", "primary_share": 0.2605,
                              "pairs": [{"estimator": "acc@fpr5", "share": 0.2639, "difference": 0.0033, "sd": 0.0137,
                                         "z": 0.24, "level": "ok"},
                                        {"estimator": "mixture", "share": 0.2652, "difference": 0.0046, "sd": 0.0234,
                                         "z": 0.2, "level": "ok"}]},
            },
        },
    }


_JARGON = re.compile(r"\b(em|acc|pcc|acc@fpr\d+|fpr\d+|TPR|FPR|not_run|rates_used|class_histograms)\b")


def visible_text(page_html: str) -> str:
    """What a reader sees: no style, no chart, no tags."""
    import html as html_lib

    text = re.sub(r"<(style|svg)\b.*?</\1>", " ", page_html, flags=re.S)
    text = re.sub(r"</?(b|code|span)\b[^>]*>", "", text)  # inline: part of the sentence around it
    return html_lib.unescape(re.sub(r"<[^>]+>", " ", text))


def render_synthetic(syn: dict[str, Any], warnings: list[str] | None = None) -> str:
    report, manifest, scores, reasons, sizes = make_run()
    report["synthetic"] = syn
    report["warnings"] = warnings if warnings is not None else []
    return render_run_report(report, manifest, scores=scores, reasons=reasons, cluster_sizes=sizes)


@pytest.mark.parametrize("make_syn", [_shifted_synthetic, _labelled_synthetic])
def test_the_estimate_is_explained_in_plain_words(make_syn) -> None:
    syn = make_syn()
    # The report.json figures do carry the internal names: the check below would see them.
    assert _JARGON.search(json.dumps(syn))
    warning = f"the detector looks unreliable on this corpus: {'; '.join(syn['reliability']['reasons'])}"
    text = visible_text(render_synthetic(syn, [warning] if syn["reliability"]["reasons"] else []))
    assert not _JARGON.search(text), _JARGON.search(text)
    assert "count above the 1 %-false-alarm threshold, corrected (ACC)" in text
    assert "count above the 5 %-false-alarm threshold, corrected (ACC)" in text and "mixture fit" in text
    assert "Terms used here." in text and "false-alarm rate: the share of human-written records" in text
    assert "calibrated scores (EM)" in text.replace("Calibrated", "calibrated")


def test_checks_name_their_sources_and_round_p_as_the_warnings_do() -> None:
    shifted = visible_text(render_synthetic(_shifted_synthetic(), [_shifted_synthetic()["reliability"]["reasons"][1]]))
    assert "estimation method calibrated scores (EM)" in " ".join(shifted.split())
    assert "not run" in shifted and "no record of known provenance carries a detector score" in shifted
    assert "from the detector's own test data (model card)" in shifted
    # p as in the warning, never the raw 0.0024937...
    assert "(p = 0.002)" in shifted and "0.00249" not in shifted
    # the warning in the summary and the reason in the verdict both name the threshold in words
    assert shifted.count("87% from the 1 %-false-alarm threshold") == 2
    labelled = " ".join(visible_text(render_synthetic(_labelled_synthetic())).split())
    assert "rates the estimate uses: both re-measured on your labelled records" in labelled
    assert ("at the 1 %-false-alarm threshold: detection rate 100.0 % (model card 32.9 %), false-alarm rate 0.0 % "
            "(model card 1.0 %)") in labelled
    assert "score histograms from your labelled records" in labelled and "(p = 0.419)" in labelled


def test_fmt_p_and_plain_words() -> None:
    from synthfilter.report.html import _plain, estimator_name, fmt_p

    assert [fmt_p(p) for p in (0.0024937, 0.41895, 0.0004, 0.0005, 1.0, None)] == [
        "0.002", "0.419", "< 0.001", "0.001", "1.000", "—"]
    assert _plain("moving it by 5 points (p = 0.000)") == "moving it by 5 points (p < 0.001)"
    assert _plain("37% from the fpr5 threshold, 40% from the default threshold") == (
        "37% from the 5 %-false-alarm threshold, 40% from the default threshold")
    assert _plain("the estimate (em) does not use an operating point's rates") == (
        "the estimate (calibrated scores (EM)) does not use an operating point's rates")
    assert estimator_name("acc@fpr0.5") == "count above the 0.5 %-false-alarm threshold, corrected (ACC)"
    assert estimator_name("acc@default") == "count above the default threshold, corrected (ACC)"


def test_estimates_say_what_they_cover_and_how_the_share_before_follows() -> None:
    text = " ".join(visible_text(render_synthetic(_labelled_synthetic())).split())
    assert "estimated synthetic share before (all 1,018 records in the estimate) 28.6 %" in text
    assert "Estimates of the synthetic share over the 902 detector-scored records (unique, provenance unknown)" in text
    assert ("The estimated share before filtering (28.6 %) is over all 1,018 records in the estimate: these, at the "
            "estimate used (26.1 %), plus the 116 records of known provenance (56 machine, 60 human), counted exactly, "
            "not estimated.") in text
    assert "The 22 kept record(s) in languages the detector is not trusted on are in neither figure." in text
    # the table: the estimate used first, the others as differences from it
    assert re.search(r"count above the 1 %-false-alarm threshold, corrected \(ACC\) 26\.1 % the estimate used", text)
    assert re.search(r"mixture fit 26\.5 % \+0\.5 points ok", text)
    # without known provenance the share before is the estimate itself
    shifted = " ".join(visible_text(render_synthetic(_shifted_synthetic())).split())
    assert "over the 1,018 detector-scored records" in shifted
    assert "no record has known provenance, so the estimated share before filtering (33.0 %) is the estimate used" in shifted
    assert re.search(r"count above the 1 %-false-alarm threshold, corrected \(ACC\) 86\.5 % \+53\.5 points unreliable",
                     shifted)


def test_estimates_fall_back_to_the_methods_without_checks() -> None:
    syn = _labelled_synthetic()
    del syn["reliability"]
    text = " ".join(visible_text(render_synthetic(syn)).split())
    assert "count above a threshold, corrected (ACC) 26.1 % the estimate used" in text
    assert "calibrated scores (EM) 30.0 %" in text and "Terms used here." in text
    # detector off: no estimate, no table of estimates, no glossary
    off = visible_text(render(scores=None))
    assert "Estimates of the synthetic share" not in off and "Terms used here." not in off


# -- the duplicate-cluster chart ------------------------------------------------------------------


def _svg_texts(svg: str) -> list[str]:
    """The chart's text (drawn as paths; matplotlib names each in a comment)."""
    return re.findall(r"<!-- (.*?) -->", svg)


def test_cluster_chart_labels_every_bar_and_its_log_scale() -> None:
    sizes = np.array([2] * 72 + [3] * 3 + [5, 7, 8, 9, 10])
    edges, counts = charts.cluster_size_bins(sizes)
    assert counts.tolist() == [72, 3, 0, 1, 0, 1, 1, 1, 1] and charts.cluster_log_scale(counts)
    texts = _svg_texts(charts.cluster_size_histogram(sizes))
    axis = texts.index("clusters (log scale)")
    ticks, bars = texts[texts.index("records in the cluster") + 1:axis], texts[axis + 1:]
    assert ticks == ["1", "10", "100"]  # every power of ten, up to one above the tallest bar
    assert bars == ["72", "3", "1", "1", "1", "1", "1"]  # a number on every bar, none on an empty bin
    caption = duplicates_caption(sizes)
    assert "log scale" in caption and "the number on each bar is its count" in caption

    wide = np.array([2] * 1500 + [3] * 200 + [4] * 30 + [30, 300, 5000])
    texts = _svg_texts(charts.cluster_size_histogram(wide))
    axis = texts.index("clusters (log scale)")
    assert texts[texts.index("records in the cluster") + 1:axis] == ["1", "10", "100", "1,000", "10,000"]
    assert texts[axis + 1:] == ["1,500", "200", "30", "1", "1", "1"]


def test_cluster_chart_is_linear_when_the_range_is_small() -> None:
    sizes = np.array([2] * 20 + [3] * 5 + [4])
    assert not charts.cluster_log_scale(charts.cluster_size_bins(sizes)[1])
    texts = _svg_texts(charts.cluster_size_histogram(sizes))
    assert "clusters" in texts and not any("log" in t for t in texts)
    assert texts[texts.index("clusters") + 1:] == ["20", "5", "1"]
    assert "log scale" not in duplicates_caption(sizes)


def duplicates_caption(sizes: np.ndarray) -> str:
    from synthfilter.report.html import duplicates_section

    html = duplicates_section({"exact": 1, "near": 0, "clusters": len(sizes)}, sizes)
    return re.search(r"<figcaption>(.*?)</figcaption>", html, flags=re.S).group(1)


# -- diversity: what each metric means, on the page -----------------------------------------------


def test_diversity_metrics_are_defined_on_the_page(full_html) -> None:
    report = make_run()[0]
    text = " ".join(visible_text(full_html).split())
    # no pointer to a file a pip user does not have, unless it says where it lives
    assert all(m.endswith(" in synthfilter's source repository") for m in re.findall(r"docs/diversity\.md[^.]*", text))
    div = re.search(r'<section id="diversity".*?</section>', full_html, flags=re.S).group(0)
    terms = re.findall(r"<dt>(.*?)</dt>", div)
    assert len(terms) == 11 and "MATTR" in terms and "exact-duplicate rate" in terms
    # every metric the table can show has its sentence
    from synthfilter.report.html import _DIVERSITY_ROWS, _DIVERSITY_WORDS

    explained = {k for keys, _, _ in _DIVERSITY_WORDS for k in keys}
    assert {key for key, _, _ in _DIVERSITY_ROWS} <= explained
    exact = report["duplicates"]["exact"]
    rate = report["diversity"]["before"]["exact_duplicate_rate"]
    assert (f"here {100 * rate:.1f} % of the sample before filtering, against {exact:,} exact duplicates removed, "
            f"{100 * exact / report['input']['records']:.1f} % of the input") in text
    assert "every copy counts, the one kept too" in text


def test_a_target_plan_shows_the_one_sided_bound_it_was_held_to() -> None:
    from synthfilter.report.html import _synthetic_stat

    syn = {"estimated_share_before": 0.286, "ci95_before": [0.248, 0.311], "estimated_share_after": 0.099,
           "ci95_after": [0.052, 0.127], "target_ratio": 0.1, "upper_bound_after": 0.118,
           "upper_bound_confidence": 0.95, "upper_bound_limit": 0.12, "kept_share_known": True,
           "reliability": {"verdict": "ok"}}
    stat = _synthetic_stat(syn)
    # The two-sided interval reaches 12.7 %, past target + tolerance; the bound the plan met does not.
    assert "95 % upper bound 11.8 % (held ≤ 12.0 %)" in str(stat.detail) and stat.tone == "good"
    assert _synthetic_stat({**syn, "upper_bound_after": None, "upper_bound_limit": None}).tone == "warn"
    report, manifest, scores, reasons, sizes = make_run()
    report["synthetic"].update(syn)
    page_text = render_run_report(report, manifest, scores=scores, reasons=reasons, cluster_sizes=sizes)
    assert "upper bound after, one-sided" in page_text and "11.8 % at 95 % confidence (at most 12.0 %)" in page_text
