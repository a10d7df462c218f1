"""report.html: one self-contained page (inline CSS and SVG, no script, no network) from report.json,
manifest.json and per-record arrays; the building blocks are public for the gate's report.

Building blocks (all return HTML strings; text arguments are escaped, ``Html`` values are not):
  ``page(title, sections, subtitle=None)``   the whole document: style, navigation, a CSP that blocks any load
  ``section(title, *blocks, note=None, anchor=None)``   a titled part of the page (listed in the navigation)
  ``headline(stats)``   a row of big numbers; each a ``Stat(label, value, detail=None, tone=None)``
  ``table(rows, columns, caption=None, max_rows=None)``   rows of dicts; columns as ``(key, header)``
  ``kv_table(mapping, caption=None)``   a nested mapping as dotted keys and values (config, manifest)
  ``chart(svg, caption=None, empty=...)``   a figure around an SVG from ``synthfilter.report.charts``
  ``callout(messages, tone="warn")``, ``details(summary, *blocks)``, ``paragraph(text)``
  ``chart_svg(fig)``   any matplotlib ``Figure`` as inline SVG (re-exported from ``charts``)
  ``fmt_count``, ``fmt_share``, ``fmt_interval``, ``fmt_number``, ``fmt_p``   number formatting used throughout
The run report's own sections are public too: ``headline_section``, ``outcome_section``,
``detector_section``, ``duplicates_section``, ``diversity_report_section``, ``groups_section``,
``run_section``; ``render_gate_report`` puts a verdict and its checks above them.
"""

from __future__ import annotations

import html as _html
import json
import re
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np

from synthfilter.report import charts
from synthfilter.report.charts import chart_svg

__all__ = [
    "REASON_NAMES",
    "Html",
    "Stat",
    "callout",
    "chart",
    "chart_svg",
    "detector_section",
    "details",
    "diversity_report_section",
    "duplicates_section",
    "estimates_block",
    "estimator_name",
    "fmt_count",
    "fmt_interval",
    "fmt_number",
    "fmt_p",
    "fmt_share",
    "glossary",
    "groups_section",
    "headline",
    "headline_section",
    "kv_table",
    "outcome_section",
    "page",
    "paragraph",
    "prerender_run_sections",
    "render_gate_report",
    "render_run_report",
    "run_section",
    "section",
    "table",
]

# Decision codes of the per-record ``reasons`` array (synthfilter.pipeline.stages.REASONS).
REASON_NAMES = ("kept", "malformed", "exact_duplicate", "near_duplicate", "synthetic_downsampled", "language",
                "repetitive")
MAX_GROUP_ROWS = 50
MAX_INPUT_ROWS = 100


class Html(str):
    """Markup that is inserted as it is (everything else is escaped)."""


def _esc(value: Any) -> str:
    if isinstance(value, Html):
        return str(value)
    return _html.escape("" if value is None else str(value), quote=True)


# -- formatting ---------------------------------------------------------------------------------


def fmt_count(n: Any) -> str:
    """``12,345``; an em dash for a missing value."""
    return "—" if n is None else f"{int(n):,}"


def fmt_share(x: Any, digits: int = 1) -> str:
    """A share in [0, 1] as a percentage (``12.3 %``); an em dash for a missing value."""
    if x is None or (isinstance(x, float) and not np.isfinite(x)):
        return "—"
    return f"{100 * float(x):.{digits}f} %"


def fmt_interval(ci: Any, digits: int = 1) -> str:
    """A 95 % interval of shares as ``12.1–14.0 %``; empty when there is none."""
    if not ci or len(ci) != 2 or ci[0] is None or ci[1] is None:
        return ""
    return f"{100 * float(ci[0]):.{digits}f}–{100 * float(ci[1]):.{digits}f} %"


def fmt_number(x: Any) -> str:
    """Integers with thousands separators, floats with up to 4 significant decimals."""
    if x is None:
        return "—"
    if isinstance(x, bool):
        return "yes" if x else "no"
    if isinstance(x, (int, np.integer)):
        return f"{int(x):,}"
    if isinstance(x, (float, np.floating)):
        if not np.isfinite(x):
            return "—"
        return f"{x:,.0f}" if abs(x) >= 1000 else f"{x:.4g}"
    return str(x)


def _bytes(n: Any) -> str:
    if n is None:
        return "—"
    size = float(n)
    for unit in ("B", "KB", "MB", "GB", "TB"):
        if size < 1000 or unit == "TB":
            return f"{size:.0f} {unit}" if unit == "B" else f"{size:.1f} {unit}"
        size /= 1000
    return f"{size:.1f} TB"


# -- building blocks ------------------------------------------------------------------------------


@dataclass(frozen=True)
class Stat:
    """One headline number: ``tone`` is ``"good"``, ``"warn"``, ``"bad"`` or ``None``."""

    label: str
    value: str
    detail: str | None = None
    tone: str | None = None


def headline(stats: Iterable[Stat]) -> str:
    cards = []
    for s in stats:
        tone = f" {s.tone}" if s.tone in ("good", "warn", "bad") else ""
        detail = f'<div class="detail">{_esc(s.detail)}</div>' if s.detail else ""
        cards.append(f'<div class="stat{tone}"><div class="label">{_esc(s.label)}</div>'
                     f'<div class="value{" long" if len(s.value) > 9 else ""}">{_esc(s.value)}</div>{detail}</div>')
    return f'<div class="stats">{"".join(cards)}</div>'


def _cell(value: Any) -> tuple[str, bool]:
    if isinstance(value, Html):
        return str(value), False
    if isinstance(value, (int, float, np.integer, np.floating)) and not isinstance(value, bool):
        return _esc(fmt_number(value)), True
    if isinstance(value, (list, dict)):
        return _esc(json.dumps(value, ensure_ascii=False)), False
    return _esc(value if value is not None else "—"), False


def table(rows: Sequence[Mapping[str, Any]], columns: Sequence[str | tuple[str, str]], *,
          caption: str | None = None, max_rows: int | None = None) -> str:
    """An HTML table: one row per mapping, ``columns`` as keys or ``(key, header)`` pairs.
    Numbers are formatted and right-aligned; with ``max_rows``, a last row says how many are hidden."""
    cols = [(c, c) if isinstance(c, str) else c for c in columns]
    head = "".join(f"<th>{_esc(h)}</th>" for _, h in cols)
    body = []
    shown = rows if max_rows is None else rows[:max_rows]
    for r in shown:
        cells = []
        for key, _ in cols:
            text, numeric = _cell(r.get(key))
            cells.append(f'<td class="num">{text}</td>' if numeric else f"<td>{text}</td>")
        body.append(f"<tr>{''.join(cells)}</tr>")
    if max_rows is not None and len(rows) > max_rows:
        body.append(f'<tr class="more"><td colspan="{len(cols)}">… and {len(rows) - max_rows:,} more '
                    "(all of them are in report.json)</td></tr>")
    if not shown:
        body.append(f'<tr class="more"><td colspan="{len(cols)}">none</td></tr>')
    cap = f"<caption>{_esc(caption)}</caption>" if caption else ""
    return f'<div class="table-wrap"><table>{cap}<thead><tr>{head}</tr></thead><tbody>{"".join(body)}</tbody></table></div>'


def _flatten(mapping: Mapping[str, Any], prefix: str = "") -> list[tuple[str, Any]]:
    out: list[tuple[str, Any]] = []
    for k, v in mapping.items():
        key = f"{prefix}{k}"
        if isinstance(v, Mapping) and v:
            out.extend(_flatten(v, key + "."))
        else:
            out.append((key, v))
    return out


def kv_table(mapping: Mapping[str, Any], *, caption: str | None = None) -> str:
    """Two columns, setting and value, for a (nested) mapping; nested keys are dotted."""
    rows = []
    for k, v in _flatten(mapping):
        if isinstance(v, (list, dict)):
            v = json.dumps(v, ensure_ascii=False)
        elif v is None:
            v = "—"
        elif isinstance(v, bool):
            v = "true" if v else "false"
        rows.append({"key": Html(f"<code>{_esc(k)}</code>"), "value": str(v)})
    return table(rows, [("key", "setting"), ("value", "value")], caption=caption)


def chart(svg: str | None, caption: str | None = None, *, empty: str = "Nothing to plot.") -> str:
    """A figure holding a chart's SVG (from ``synthfilter.report.charts``), or a note when ``svg`` is None."""
    if svg is None:
        return f'<figure class="empty"><p class="muted">{_esc(empty)}</p></figure>'
    cap = f"<figcaption>{_esc(caption)}</figcaption>" if caption else ""
    return f"<figure>{svg}{cap}</figure>"


def paragraph(text: str) -> str:
    return f"<p>{_esc(text)}</p>"


def callout(messages: Sequence[str] | str, tone: str = "warn") -> str:
    """A highlighted box with one message per line (``tone``: warn, bad, good, info)."""
    msgs = [messages] if isinstance(messages, str) else list(messages)
    if not msgs:
        return ""
    items = "".join(f"<li>{_esc(m)}</li>" for m in msgs)
    return f'<div class="callout {_esc(tone)}"><ul>{items}</ul></div>'


def details(summary: str, *blocks: str, open: bool = False) -> str:
    """A collapsible block (closed unless ``open``)."""
    return f'<details{" open" if open else ""}><summary>{_esc(summary)}</summary>{"".join(blocks)}</details>'


def _anchor(title: str) -> str:
    return "".join(c if c.isalnum() else "-" for c in title.lower()).strip("-")


def section(title: str, *blocks: str, note: str | None = None, anchor: str | None = None) -> str:
    """A titled part of the page; ``note`` is a muted line under the title."""
    a = anchor or _anchor(title)
    n = f'<p class="muted">{_esc(note)}</p>' if note else ""
    return f'<section id="{_esc(a)}" data-title="{_esc(title)}"><h2>{_esc(title)}</h2>{n}{"".join(blocks)}</section>'


_CSS = """
:root{--ink:#1f2933;--muted:#616e7c;--line:#e4e7eb;--bg:#f7f8fa;--card:#fff;--good:#1b7f4c;--warn:#b7791f;--bad:#c53030;--accent:#0072B2}
*{box-sizing:border-box}
body{margin:0;background:var(--bg);color:var(--ink);font:15px/1.45 system-ui,-apple-system,"Segoe UI",Roboto,"Helvetica Neue",Arial,sans-serif}
header{background:#fff;border-bottom:1px solid var(--line);padding:18px 24px 10px}
header h1{margin:0;font-size:24px}
header .sub{color:var(--muted);margin-top:2px}
nav{margin-top:10px;display:flex;flex-wrap:wrap;gap:4px 14px;font-size:14px}
nav a{color:var(--accent);text-decoration:none}
main{max-width:1040px;margin:0 auto;padding:8px 24px 40px}
section{background:var(--card);border:1px solid var(--line);border-radius:8px;padding:14px 20px 16px;margin:16px 0}
h2{font-size:18px;margin:0 0 8px}
h3{font-size:15px;margin:16px 0 6px}
.muted{color:var(--muted);margin:0 0 8px;font-size:14px}
.stats{display:grid;grid-template-columns:repeat(auto-fit,minmax(180px,1fr));gap:12px}
.stat{border:1px solid var(--line);border-left:4px solid var(--accent);border-radius:6px;padding:10px 12px;background:#fff}
.stat.good{border-left-color:var(--good)}.stat.warn{border-left-color:var(--warn)}.stat.bad{border-left-color:var(--bad)}
.stat .label{font-size:13px;color:var(--muted)}
.stat .value{font-size:26px;font-weight:650;line-height:1.2;font-variant-numeric:tabular-nums}
.stat .value.long{font-size:21px}
.stat .detail{font-size:13px;color:var(--muted)}
figure{margin:10px 0}
figure.empty{padding:10px 0}
figcaption{font-size:13px;color:var(--muted)}
svg.chart{display:block;width:100%;max-width:900px;height:auto}
.table-wrap{overflow-x:auto}
table{border-collapse:collapse;width:100%;font-size:14px;margin:6px 0}
caption{text-align:left;font-weight:600;padding:4px 0}
th,td{padding:4px 8px;border-bottom:1px solid var(--line);text-align:left;vertical-align:top}
th{font-weight:600;background:var(--bg)}
td.num{text-align:right;font-variant-numeric:tabular-nums;white-space:nowrap}
tr.more td{color:var(--muted);font-style:italic}
td .phrase{overflow-wrap:anywhere}
.nowrap{white-space:nowrap}
.up{color:var(--good)}.down{color:var(--bad)}.flat{color:var(--muted)}
.callout{border-radius:6px;padding:8px 12px;margin:10px 0;border:1px solid}
.callout ul{margin:0;padding-left:18px}
.callout.warn{background:#fffbea;border-color:#f0b429}.callout.bad{background:#fff5f5;border-color:#e53e3e}
.callout.good{background:#f0fff4;border-color:#38a169}.callout.info{background:#ebf8ff;border-color:#4299e1}
.verdict{font-size:22px;font-weight:700;padding:10px 14px;border-radius:6px;margin:6px 0}
.verdict.pass{background:#f0fff4;color:var(--good);border:1px solid #38a169}
.verdict.fail{background:#fff5f5;color:var(--bad);border:1px solid #e53e3e}
.badge{display:inline-block;font-size:12px;padding:1px 8px;border-radius:10px;background:#fffbea;border:1px solid #f0b429;margin-left:8px;vertical-align:middle}
details{margin:8px 0}summary{cursor:pointer;color:var(--accent)}
dl.defs{display:grid;grid-template-columns:fit-content(35%) minmax(0,1fr);gap:3px 14px;margin:8px 0 12px;font-size:13px;color:var(--muted)}
dl.defs dt{font-weight:600;color:var(--ink)}dl.defs dd{margin:0}
.two{display:grid;grid-template-columns:repeat(auto-fit,minmax(380px,1fr));gap:0 20px}
footer{color:var(--muted);font-size:13px;text-align:center;padding:10px}
"""

# Nothing may load at view time: no script, no font, no image from anywhere but the page itself.
_CSP = "default-src 'none'; style-src 'unsafe-inline'; img-src data:"


def page(title: str, sections: Sequence[str], *, subtitle: str | None = None, badge: str | None = None,
         footer: str | None = None) -> str:
    """The complete HTML document: inline style, a navigation line to every section, the sections."""
    nav = "".join(f'<a href="#{a}">{t}</a>' for a, t in
                  (m.groups() for s in sections for m in [re.match(r'<section id="([^"]*)" data-title="([^"]*)"', s)] if m))
    sub = f'<div class="sub">{_esc(subtitle)}</div>' if subtitle else ""
    b = f'<span class="badge">{_esc(badge)}</span>' if badge else ""
    foot = f"<footer>{_esc(footer)}</footer>" if footer else ""
    return (
        "<!DOCTYPE html>\n<html lang=\"en\"><head><meta charset=\"utf-8\">"
        f'<meta http-equiv="Content-Security-Policy" content="{_CSP}">'
        '<meta name="viewport" content="width=device-width, initial-scale=1">'
        f"<title>{_esc(title)}</title><style>{_CSS}</style></head><body>"
        f"<header><h1>{_esc(title)}{b}</h1>{sub}<nav>{nav}</nav></header>"
        f"<main>{''.join(sections)}</main>{foot}</body></html>\n"
    )


# -- the run report's sections --------------------------------------------------------------------


def _synthetic_stat(syn: Mapping[str, Any]) -> Stat:
    before, after = syn.get("estimated_share_before"), syn.get("estimated_share_after")
    target = syn.get("target_ratio")
    if before is None:
        why = "detector off and no provenance" if not syn.get("detector_scored") else "not estimated"
        return Stat("Synthetic share", "—", why)
    unknown = syn.get("kept_share_known") is False
    if unknown:
        value = f"{fmt_share(before)} → unknown"
    else:
        value = fmt_share(before) if after is None or after == before and target is None else f"{fmt_share(before)} → {fmt_share(after)}"
    parts = []
    if syn.get("ci95_before"):
        ci = f"95 % CI {fmt_interval(syn.get('ci95_before'))}"
        if syn.get("ci95_after") and target is not None:
            ci += f" → {fmt_interval(syn.get('ci95_after'))}"
        parts.append(ci)
    tone = None
    if target is not None:
        parts.append(f"target ≤ {fmt_share(target)}")
        bound, limit = syn.get("upper_bound_after"), syn.get("upper_bound_limit")
        if bound is not None and limit is not None and not unknown:
            # The bound the plan was held to (one-sided), not the two-sided interval's end.
            parts.append(f"{fmt_share(syn.get('upper_bound_confidence') or 0.95, 0)} upper bound {fmt_share(bound)} "
                         f"(held ≤ {fmt_share(limit)})")
        upper = bound if bound is not None else (syn.get("ci95_after") or [None, None])[1]
        tone = "good" if after is not None and after <= target + 1e-12 else "bad"
        if tone == "good" and upper is not None and upper > (limit if bound is not None and limit else target) + 1e-12:
            tone = "warn"
    verdict = (syn.get("reliability") or {}).get("verdict")
    if verdict in ("doubtful", "unreliable"):
        parts.append(f"detector {verdict} here")
        tone = "bad" if verdict == "unreliable" or unknown else "warn"
    return Stat("Synthetic share", value, " · ".join(parts) or None, tone)


# Plain words for the estimators' and checks' internal names (report.json keeps the names).
_ESTIMATOR_WORDS = {
    "em": "calibrated scores (EM)",
    "acc": "count above a threshold, corrected (ACC)",
    "mixture": "mixture fit",
    "pcc": "mean detector score (PCC)",
    "cc": "count of scores ≥ 0.5 (CC)",
}
_SOURCE_WORDS = {"card": "the detector's own test data (model card)", "labelled": "your labelled records"}
_RATES_USED_WORDS = {
    "card": "the model card's",
    "corpus": "both re-measured on your labelled records",
    "corpus FPR, card TPR": "false-alarm rate re-measured on your labelled records, detection rate from the model card",
    "corpus TPR, card FPR": "detection rate re-measured on your labelled records, false-alarm rate from the model card",
    "card calibration, confirmed by the labelled records":
        "the model card's calibration, confirmed by your labelled records",
}
_LEVEL_WORDS = {"not_run": "not run"}


def _threshold_words(point: str) -> str:
    """An operating point's name in words: ``fpr1`` is the 1 %-false-alarm threshold."""
    m = re.fullmatch(r"fpr(\d+(?:\.\d+)?)", str(point))
    return f"the {m.group(1)} %-false-alarm threshold" if m else f"the {str(point).replace('_', ' ')} threshold"


def estimator_name(name: Any) -> str:
    """An estimator's name in words (``em``, ``acc``, ``acc@fpr1``, ``mixture``, ``pcc``, ``cc``)."""
    name = str(name)
    if name.startswith("acc@"):
        return f"count above {_threshold_words(name[4:])}, corrected (ACC)"
    return _ESTIMATOR_WORDS.get(name, name.replace("_", " "))


def fmt_p(p: Any) -> str:
    """A p-value as the warnings write it: three decimals, ``< 0.001`` where that would read 0.000."""
    if p is None or not np.isfinite(float(p)):
        return "—"
    return "< 0.001" if float(p) < 0.0005 else f"{float(p):.3f}"


def _p_text(p: Any) -> str:
    shown = fmt_p(p)
    return f"p {shown}" if shown.startswith("<") else f"p = {shown}"


def _plain(text: str) -> str:
    """Warnings and reasons from report.json with their internal names put in words."""
    text = re.sub(r"\bthe fpr(\d+(?:\.\d+)?) threshold\b", lambda m: _threshold_words(f"fpr{m.group(1)}"), text)
    text = re.sub(r"\(p = 0\.000\)", "(p < 0.001)", text)
    return re.sub(r"\bthe estimate \(([\w@]+)\)", lambda m: f"the estimate ({estimator_name(m.group(1))})", text)


def _histogram_source(classes: Any) -> str:
    """``class_histograms`` (``card``, ``labelled``, ``labelled human, card machine``, ...) in words."""
    if classes in _SOURCE_WORDS:
        return f"typical human and machine score histograms from {_SOURCE_WORDS[classes]}"
    parts = []
    for part in str(classes).split(", "):
        source, _, cls = part.partition(" ")
        parts.append(f"{cls} from {_SOURCE_WORDS.get(source, source)}" if cls else part)
    return "typical score histograms: " + "; ".join(parts)


_INTERVAL_WORDS = {
    "source_shift": "source shift: widened over how far the detector's rates moved on text sources it was not "
                    "trained on",
    "estimator_range": "estimator range: from the lowest to the highest estimate",
}

_VERDICT_WORDS = {
    "ok": "no check found the detector behaving differently here than on the data its model card was measured on",
    "doubtful": "the detector looks less reliable on this corpus than on its training data; the interval is widened",
    "unreliable": "the detector looks unreliable on this corpus: its estimate and any kept share it plans are not to be trusted",
    "unchecked": "no check could run with this model card (it lacks held-out rates, score histograms and a "
                 "training prior to compare)",
}


def _check_summary(name: str, check: Mapping[str, Any]) -> str:
    """One check's figures in a sentence."""
    if check.get("level") == "not_run":
        return _plain(check.get("reason") or "—")  # the result column says "not run"
    if name == "provenance":
        lab = check.get("labelled") or {}
        rates = []
        for p in check.get("points") or []:
            got = [f"{what} {fmt_share(p.get(f'measured_{key}'))} (model card {fmt_share(p.get(f'card_{key}'))})"
                   for key, what in (("tpr", "detection rate"), ("fpr", "false-alarm rate"))
                   if p.get(f"measured_{key}") is not None]
            if got:
                rates.append(f"at {_threshold_words(p.get('name'))}: {', '.join(got)}")
        used = check.get("rates_used")
        return (f"{fmt_count(lab.get('human'))} human and {fmt_count(lab.get('machine'))} machine records of known "
                f"provenance; rates the estimate uses: {_RATES_USED_WORDS.get(used, used)}; " + "; ".join(rates))
    if name == "mixture_fit":
        return (f"fitted share {fmt_share(check.get('share'))}; misfit {fmt_share(check.get('tv'))} of the histogram "
                f"against {fmt_share(check.get('tv_null_median'))} from sampling alone ({_p_text(check.get('p_value'))}); "
                f"{_histogram_source(check.get('class_histograms'))}")
    if name == "agreement":
        pairs = check.get("pairs") or []
        gap = max((abs(p.get("difference") or 0.0) for p in pairs), default=0.0)
        return (f"{len(pairs) + 1} estimates of the share on the same records, the furthest {100 * gap:.1f} points "
                "from the one used (table above)")
    return ""


def _estimate_rows(syn: Mapping[str, Any]) -> tuple[list[dict[str, Any]], float | None]:
    """One row per estimator of the share among the detector-scored records, and the share of the one used."""
    agreement = (((syn.get("reliability") or {}).get("checks") or {}).get("agreement")) or {}
    if agreement.get("primary_share") is not None:
        used = agreement["primary_share"]
        rows = [{"estimator": estimator_name(agreement.get("primary")), "share": fmt_share(used),
                 "difference": "the estimate used", "result": "—"}]
        for p in agreement.get("pairs") or []:
            d = p.get("difference")
            rows.append({"estimator": estimator_name(p.get("estimator")), "share": fmt_share(p.get("share")),
                         "difference": "—" if d is None else f"{100 * d:+.1f} points",
                         "result": _LEVEL_WORDS.get(p.get("level"), p.get("level"))})
        return rows, used
    by_method = syn.get("detector_share_by_method") or {}
    method = syn.get("method")
    rows = [{"estimator": estimator_name(k), "share": fmt_share(v),
             "difference": "the estimate used" if k == method else "—", "result": "—"} for k, v in by_method.items()]
    return rows, by_method.get(method)


def estimates_block(syn: Mapping[str, Any]) -> str:
    """Every estimate of the share, labelled with the records it covers, and how the share before
    (which adds the records of known provenance, counted exactly) follows from the one used."""
    rows, used = _estimate_rows(syn)
    if not rows:
        return ""
    scored = syn.get("detector_scored")
    known = syn.get("known_provenance") or {}
    human, machine = int(known.get("human") or 0), int(known.get("machine") or 0)
    scope = syn.get("scope") or {}
    total = scope.get("records_in_estimate")
    if total is None and scored is not None:
        total = int(scored) + human + machine
    over = f"the {fmt_count(scored)} detector-scored records" if scored is not None else "the detector-scored records"
    caption = f"Estimates of the synthetic share over {over} (unique, provenance unknown)"
    before = syn.get("estimated_share_before")
    if human + machine:
        text = (f"These cover only {over}. The estimated share before filtering ({fmt_share(before)}) is over all "
                f"{fmt_count(total)} records in the estimate: these, at the estimate used"
                + (f" ({fmt_share(used)})" if used is not None else "")
                + f", plus the {fmt_count(human + machine)} records of known provenance ({fmt_count(machine)} machine, "
                f"{fmt_count(human)} human), counted exactly, not estimated.")
    else:
        text = (f"These cover {over}; no record has known provenance, so the estimated share before filtering "
                f"({fmt_share(before)}) is the estimate used.")
    if scope.get("not_estimated"):
        text += (f" The {fmt_count(scope['not_estimated'])} kept record(s) in languages the detector is not trusted "
                 "on are in neither figure.")
    return (table(rows, [("estimator", "estimate"), ("share", "synthetic share"),
                         ("difference", "difference from the one used"), ("result", "agreement")], caption=caption)
            + paragraph(text))


_GLOSSARY = (
    ("Detection rate", ": the share of machine-written records the detector flags at a threshold;"),
    ("false-alarm rate", ": the share of human-written records it flags."),
    ("The 1 %-false-alarm threshold", " is the score above which the detector flagged 1 % of the human text of "
                                      "its own test data (likewise 5 %)."),
    ("Model card", ": the detector's figures, measured on that test data."),
    ("Calibrated scores (EM)", " finds the share that best explains every record's score;"),
    ("count above a threshold, corrected (ACC)", " takes the share of records flagged at a threshold and corrects it "
                                                "for that threshold's detection and false-alarm rates;"),
    ("mixture fit", " finds the blend of typical human and machine score histograms closest to this corpus's. "
                    "Where the detector behaves here as on its test data, these estimates agree within sampling noise."),
    ("p", ": how often sampling alone would give a misfit this large; under 0.01 counts as significant "
          "(shown to three decimals)."),
)


def glossary() -> str:
    """The detector section's terms in one paragraph."""
    items = " ".join(f"<b>{_esc(term)}</b>{_esc(text)}" for term, text in _GLOSSARY)
    return f'<p class="muted glossary"><b>Terms used here.</b> {items}</p>'


def reliability_block(syn: Mapping[str, Any]) -> str:
    """The verdict of the reliability checks, in words, and one row per check."""
    r = syn.get("reliability")
    if not r:
        return ""
    verdict = r.get("verdict")
    tone = {"ok": "good", "doubtful": "warn", "unreliable": "bad"}.get(verdict, "info")
    lines = [f"Detector reliability on this corpus: {verdict}: {_VERDICT_WORDS.get(verdict, '')}."]
    lines += [f"{_plain(reason)}." for reason in r.get("reasons") or []]
    if r.get("interval") not in (None, "sampling"):
        why = ("; two estimates of the share differ by more than sampling explains, though by less than the "
               "checks flag, so the interval spans every estimate" if verdict == "ok" else "")
        how = _INTERVAL_WORDS.get(r.get("interval"), str(r.get("interval")).replace("_", " "))
        lines.append(f"95 % interval from sampling alone {fmt_interval(r.get('ci95_sampling'))}, widened to "
                     f"{fmt_interval(syn.get('ci95_before'))} ({how}{why}).")
    elif r.get("ci95_unseen_source"):
        lines.append("The checks cannot see every shift (machine text of a new source that scores like human text "
                     "looks like a more human corpus): if this corpus is unlike the detector's training data, the "
                     f"95 % interval over the rates the model card measured on held-out sources is "
                     f"{fmt_interval(r.get('ci95_unseen_source'))} (--unseen-source uses it).")
    if syn.get("kept_share_known") is False:
        lines.append("The run went on anyway: the synthetic share of the kept records is unknown.")
    names = {"provenance": "rates re-measured on labelled records", "mixture_fit": "score histogram fit",
             "agreement": "estimators agree"}
    rows = [{"check": names.get(k, k), "result": _LEVEL_WORDS.get(c.get("level"), c.get("level")),
             "figures": _check_summary(k, c)}
            for k, c in (r.get("checks") or {}).items()]
    return callout(lines, tone) + table(rows, ["check", "result", "figures"])


def headline_section(report: Mapping[str, Any]) -> str:
    """Records in and out, synthetic share before → after (interval vs target), duplicates removed, speed."""
    inp, outp = report.get("input", {}), report.get("output", {})
    dup, syn = report.get("duplicates", {}), report.get("synthetic", {}) or {}
    records, kept = inp.get("records", 0) or 0, outp.get("kept")
    dry = bool(outp.get("dry_run"))
    stats = [
        Stat("Records in", fmt_count(records),
             f"{fmt_count(inp.get('shards'))} shard(s) · {_bytes(inp.get('bytes'))}"
             + (f" · {fmt_count(inp.get('malformed'))} malformed" if inp.get("malformed") else "")),
        Stat("Records kept" + (" (dry run)" if dry else ""), fmt_count(kept),
             (f"{fmt_share(kept / records)} of input · {fmt_count(outp.get('rejected'))} rejected" if records and kept is not None
              else None)),
        Stat("Duplicates removed", fmt_count((dup.get("exact") or 0) + (dup.get("near") or 0)),
             f"{fmt_count(dup.get('exact'))} exact · {fmt_count(dup.get('near'))} near · "
             f"{fmt_count(dup.get('clusters'))} clusters"),
        _synthetic_stat(syn),
    ]
    timing = report.get("timing") or {}
    if timing.get("seconds") is not None:
        rate = timing.get("records_per_s")
        stats.append(Stat("Run time", f"{timing['seconds']:,.1f} s", f"{rate:,.0f} records/s" if rate else None))
    warnings = [_plain(w) for w in report.get("warnings") or []]
    return section("Summary", headline(stats), callout(warnings, "warn") if warnings else "", anchor="summary")


def outcome_section(report: Mapping[str, Any]) -> str:
    outp = report.get("output", {})
    by_reason = dict(outp.get("rejected_by_reason") or {})
    counts = {"kept": outp.get("kept", 0), **by_reason}
    records = (report.get("input") or {}).get("records") or 0
    rows = [{"outcome": k.replace("_", " "), "records": int(v or 0), "share": fmt_share((v or 0) / records) if records else "—"}
            for k, v in counts.items()]
    note = "Dry run: decisions only, no record was written." if outp.get("dry_run") else None
    return section("Where the records went",
                   chart(charts.decision_bars(counts), empty="No records."),
                   table(rows, ["outcome", "records", "share"]), note=note)


def detector_section(report: Mapping[str, Any], scores: np.ndarray | None, reasons: np.ndarray | None,
                     reason_names: Sequence[str] = REASON_NAMES) -> str:
    syn = report.get("synthetic") or {}
    svg = None
    if scores is not None and reasons is not None and len(scores):
        svg = charts.score_histogram(scores, reasons, reason_names)
    known = syn.get("known_provenance") or {}
    scope = syn.get("scope") or {}
    total = scope.get("records_in_estimate")
    if total is None and syn.get("detector_scored") is not None:
        total = int(syn["detector_scored"]) + int(known.get("human") or 0) + int(known.get("machine") or 0)
    agreement = (((syn.get("reliability") or {}).get("checks") or {}).get("agreement")) or {}
    method = syn.get("method")
    primary = agreement.get("primary")
    if method and primary and str(primary).split("@")[0] == method:
        method = primary  # which threshold the count used
    over = f" (all {fmt_count(total)} records in the estimate)" if total else ""
    facts = {
        f"estimated synthetic share before{over}": fmt_share(syn.get("estimated_share_before")),
        "95 % interval before": fmt_interval(syn.get("ci95_before")) or "—",
        "estimated synthetic share after": fmt_share(syn.get("estimated_share_after")),
        "95 % interval after": fmt_interval(syn.get("ci95_after")) or "—",
        **({"upper bound after, one-sided (the plan holds it at most target + tolerance)":
            f"{fmt_share(syn['upper_bound_after'])} at {fmt_share(syn.get('upper_bound_confidence') or 0.95, 0)} "
            f"confidence (at most {fmt_share(syn.get('upper_bound_limit'))})"}
           if syn.get("upper_bound_after") is not None and syn.get("kept_share_known") is not False else {}),
        "target ratio": fmt_share(syn.get("target_ratio")) if syn.get("target_ratio") is not None else "none",
        "records downsampled": fmt_count(syn.get("downsampled")),
        "in the estimate by their detector score (unique, provenance unknown)": fmt_count(syn.get("detector_scored")),
        "known provenance, counted exactly (human / machine)":
            f"{fmt_count(known.get('human'))} / {fmt_count(known.get('machine'))}",
        "estimation method": estimator_name(method) if method else "—",
        "downsampling strategy": syn.get("strategy") or "—",
        "detector reliability": (syn.get("reliability") or {}).get("verdict") or "—",
    }
    if syn.get("kept_share_known") is False:
        facts["estimated synthetic share after"] = "unknown (unreliable detector)"
    rows = [{"what": k, "value": v} for k, v in facts.items()]
    estimates = estimates_block(syn)
    reliability = reliability_block(syn)
    return section("Detector scores",
                   chart(svg, "Detector score of every scored record, coloured by the decision taken.",
                         empty="No detector scores: the detector was off for this run (or no record had text)."),
                   table(rows, [("what", "estimate"), ("value", "value")]),
                   estimates, reliability, glossary() if estimates or reliability else "")


def duplicates_section(report: Mapping[str, Any], cluster_sizes: np.ndarray | None) -> str:
    dup = report.get("duplicates") or {}
    svg = charts.cluster_size_histogram(cluster_sizes) if cluster_sizes is not None and len(cluster_sizes) else None
    caption = ("Duplicate clusters by the number of records in them (one record of each is kept); the number on "
               "each bar is its count of clusters.")
    binned = charts.cluster_size_bins(cluster_sizes) if svg is not None else None
    if binned is not None and charts.cluster_log_scale(binned[1]):
        caption += " Bar heights are on a log scale: each gridline is ten times the one below."
    bands = f"{dup.get('bands')} × {dup.get('rows')}" if dup.get("bands") else "—"
    rows = [
        {"what": "exact duplicates removed", "value": fmt_count(dup.get("exact"))},
        {"what": "near-duplicates removed", "value": fmt_count(dup.get("near"))},
        {"what": "clusters (groups of ≥ 2)", "value": fmt_count(dup.get("clusters"))},
        {"what": "largest cluster", "value": fmt_count(dup.get("largest_cluster"))},
        {"what": "near-duplicate threshold (Jaccard)", "value": fmt_number(dup.get("threshold")) if dup.get("threshold") is not None else "off"},
        {"what": "LSH bands × rows", "value": bands},
    ]
    return section("Duplicates",
                   chart(svg, caption, empty="No duplicate clusters."),
                   table(rows, [("what", "duplicates"), ("value", "value")]))


# (key, label, higher is more diverse) for the before/after table; None: no direction.
_DIVERSITY_ROWS = (
    ("records", "records sampled", None),
    ("tokens", "words", None),
    ("types", "distinct words", None),
    ("mean_tokens_per_record", "words per record", None),
    ("distinct_1", "distinct-1", True),
    ("distinct_2", "distinct-2", True),
    ("distinct_3", "distinct-3", True),
    ("entropy_1", "word entropy (bits)", True),
    ("entropy_2", "bigram entropy (bits)", True),
    ("entropy_3", "trigram entropy (bits)", True),
    ("mattr", "MATTR", True),
    ("hapax_share", "hapax share", True),
    ("compression_ratio", "compression ratio", False),
    ("self_repeating_share", "self-repeating records", False),
    ("exact_duplicate_rate", "exact-duplicate rate", False),
    ("near_duplicate_rate", "near-duplicate rate", False),
    ("mean_pairwise_similarity", "mean pairwise similarity", False),
)


# One plain sentence per metric of the table (docs/diversity.md has the full definitions):
# (keys it explains, term, sentence); {window}, {threshold} and {here} are filled in.
_DIVERSITY_WORDS = (
    (("records",), "records sampled", "Records in the sample: before, any record with text is equally likely to be "
                                      "in it; after, the sampled records that were kept."),
    (("tokens", "types", "mean_tokens_per_record"), "words, distinct words, words per record",
     "Words as duplicate detection sees them (lower-cased, punctuation removed): all of them, how many different "
     "ones, and the average per record."),
    (("distinct_1", "distinct_2", "distinct_3"), "distinct-1, -2, -3",
     "The share of the sample's single words, word pairs and word triples that are not a repeat of one seen "
     "before; higher means less repeated wording."),
    (("entropy_1", "entropy_2", "entropy_3"), "word, bigram, trigram entropy",
     "How evenly the text spreads over different words, word pairs and word triples, in bits; higher means no "
     "small set of them dominates."),
    (("mattr",), "MATTR", "Moving-average type-token ratio: the average share of different words in every run of "
                          "{window} consecutive words; unlike distinct-1 it does not fall just because the sample is "
                          "larger."),
    (("hapax_share",), "hapax share", "The share of the different words that occur only once: the long tail of rare "
                                      "words."),
    (("compression_ratio",), "compression ratio", "How many times smaller zlib makes the sampled text; higher means "
                                                  "more repeated passages."),
    (("self_repeating_share",), "self-repeating records",
     "The share of sampled records that loop: fewer than half of their own word triples are different."),
    (("exact_duplicate_rate",), "exact-duplicate rate",
     "The share of sampled records whose text equals another sampled record's; every copy counts, the one kept "
     "too, so a pair adds two records here but one to the exact duplicates removed{here}."),
    (("near_duplicate_rate",), "near-duplicate rate",
     "The share of sampled records with a near-copy in the sample (word overlap, Jaccard ≥ {threshold}), exact "
     "copies included."),
    (("mean_pairwise_similarity",), "mean pairwise similarity",
     "The average word overlap (Jaccard of 5-word shingles) of two sampled records: 0 when they share nothing, "
     "1 for copies."),
)


def _diversity_definitions(shown: set[str], ref: Mapping[str, Any], report: Mapping[str, Any] | None) -> str:
    """A definition list: one plain sentence per metric in ``shown``."""
    here = ""
    dup = (report or {}).get("duplicates") or {}
    records = ((report or {}).get("input") or {}).get("records")
    rate = ref.get("exact_duplicate_rate")
    if rate is not None and dup.get("exact") is not None and records:
        here = (f" (here {fmt_share(rate)} of the sample before filtering, against {fmt_count(dup['exact'])} exact duplicates "
                f"removed, {fmt_share(dup['exact'] / records)} of the input)")
    fill = {"window": ref.get("mattr_window", 50), "threshold": ref.get("near_duplicate_threshold", "—"), "here": here}
    items = "".join(f"<dt>{_esc(term)}</dt><dd>{_esc(text.format(**fill))}</dd>"
                    for keys, term, text in _DIVERSITY_WORDS if shown.intersection(keys))
    return f'<h3>What the metrics mean</h3><dl class="defs">{items}</dl>' if items else ""


def _change(before: Any, after: Any, higher_is_diverse: bool | None) -> Html:
    """The relative change after vs before, green when more diverse, red when less; changes
    under 1 % (and any change from 0, which has no relative size) are shown as they are, grey."""
    if before is None or after is None or higher_is_diverse is None:
        return Html("")
    b, a = float(before), float(after)
    d = a - b
    if b == 0:
        return Html(f'<span class="flat">{"=" if d == 0 else f"{d:+.3g}"}</span>')
    rel = d / abs(b)
    if abs(rel) < 0.01:
        shown = f"{100 * rel:+.1f}" if abs(rel) >= 0.0005 else "0.0"
        return Html(f'<span class="flat" title="less than 1 % change">≈ {shown} %</span>')
    more_diverse = (d > 0) == higher_is_diverse
    cls, label = ("up", "more diverse") if more_diverse else ("down", "less diverse")
    arrow = "▲" if d > 0 else "▼"
    return Html(f'<span class="{cls}" title="{label}">{arrow} {100 * abs(rel):.1f} %</span>')


def _phrase_rows(rows: Sequence[Mapping[str, Any]]) -> list[dict[str, Any]]:
    out = []
    for r in rows:
        row = {"ngram": Html(f'<span class="phrase">{_esc(r.get("ngram"))}</span>'), "records": r.get("records"),
               "share": fmt_share(r.get("share")), "count": r.get("count")}
        if "reference_share" in r:
            row["reference_share"] = fmt_share(r.get("reference_share"))
            row["lift"] = r.get("lift")
        out.append(row)
    return out


def _phrase_table(rows: Sequence[Mapping[str, Any]], caption: str) -> str:
    cols: list[tuple[str, str]] = [("ngram", "phrase"), ("records", "records"), ("share", "share of sample"), ("count", "occurrences")]
    if rows and "reference_share" in rows[0]:
        cols += [("reference_share", "share of reference"), ("lift", "lift")]
    return table(_phrase_rows(rows), cols, caption=caption)


def diversity_report_section(diversity: Mapping[str, Any] | None, report: Mapping[str, Any] | None = None) -> str:
    """Diversity before and after filtering: table with changes, what each metric means, chart,
    samey phrases. With the run's ``report``, the exact-duplicate rate is set against the
    exact duplicates removed."""
    if not diversity:
        return section("Diversity", paragraph("Diversity was not measured for this run."))
    before, after = diversity.get("before") or {}, diversity.get("after") or {}
    rows, shown = [], set()
    for key, label, direction in _DIVERSITY_ROWS:
        b, a = before.get(key), after.get(key)
        if b is None and a is None:
            continue
        shown.add(key)
        rows.append({"metric": label, "before": b, "after": a, "change": _change(b, a, direction)})
    ref = before or after
    note = (f"Measured on a deterministic sample of up to {fmt_count(ref.get('records'))} records before and after "
            f"filtering. MATTR window {ref.get('mattr_window', '—')} words; near-duplicates at Jaccard ≥ "
            f"{ref.get('near_duplicate_threshold', '—')}; similarity over {fmt_count(ref.get('similarity_pairs'))} "
            "record pairs. Change is relative to before; green: more diverse, red: less diverse. The duplicate "
            "rates count copies within the sample only (the corpus-wide counts are under Duplicates). Full "
            "definitions: docs/diversity.md in synthfilter's source repository.")
    blocks = [table(rows, [("metric", "metric"), ("before", "before"), ("after", "after"), ("change", "change")]),
              _diversity_definitions(shown, ref, report),
              chart(charts.diversity_bars(before, after), "Metrics on a 0–1 scale, before and after filtering.",
                    empty="No diversity metric could be computed (no text in the sample).")]
    samey_before = before.get("samey_ngrams") or []
    blocks.append("<h3>Most repeated phrases (“samey” trigrams) before filtering</h3>")
    blocks.append(chart(charts.samey_bars(samey_before), empty="No phrase appears in two or more sampled records."))
    removed = diversity.get("removed_ngrams")
    if removed is not None:
        blocks.append("<h3>Phrases filtering took out</h3>")
        blocks.append(_phrase_table(removed[:10], "over-represented in the sample before filtering relative to after"))
    blocks.append(details("All phrase tables (before, after)",
                          _phrase_table(samey_before, "before filtering"),
                          _phrase_table(after.get("samey_ngrams") or [], "after filtering")))
    return section("Diversity", *blocks, note=note)


def groups_section(diversity: Mapping[str, Any] | None, group_by: str | None = None) -> str:
    """One row per group (a shard, or a value of ``--group-by``): sample sizes and diversity before → after."""
    groups = (diversity or {}).get("by_group") or {}
    if not groups:
        return section("By group", paragraph("No per-group diversity in this report."))

    def pair(entry: Mapping[str, Any], key: str, share: bool = False) -> Html:
        b, a = (entry.get("before") or {}).get(key), (entry.get("after") or {}).get(key)
        f = fmt_share if share else (lambda x: "—" if x is None else f"{x:.3f}")
        return Html(f'<span class="nowrap">{_esc(f(b))} → {_esc(f(a))}</span>')

    rows = []
    for name, e in groups.items():
        sampled = e.get("records_sampled") or {}
        samey = ((e.get("before") or {}).get("samey_ngrams") or [])
        rows.append({
            "group": Html(f'<code class="nowrap" title="{_esc(name)}">{_esc(_middle(name))}</code>'),
            "_n": sampled.get("before", 0),
            "before": sampled.get("before"), "after": sampled.get("after"),
            "distinct_3": pair(e, "distinct_3"), "mattr": pair(e, "mattr"),
            "near": pair(e, "near_duplicate_rate", share=True), "sim": pair(e, "mean_pairwise_similarity"),
            "samey": Html(f'<span class="phrase">{_esc(samey[0]["ngram"])}</span> ({fmt_share(samey[0]["share"])})') if samey else "—",
        })
    rows.sort(key=lambda r: -int(r["_n"] or 0))
    by = f"field {group_by}" if group_by else "shard"
    omitted = int((diversity or {}).get("by_group_omitted") or 0)
    note = (f"Grouped by {by}; each group's numbers come from its part of the sample (see records sampled), "
            "its top phrase is the one most over-represented against the rest of the sample. "
            f"Largest {MAX_GROUP_ROWS} groups shown." if len(rows) > MAX_GROUP_ROWS else
            f"Grouped by {by}; each group's numbers come from its part of the sample (see records sampled); "
            "its top phrase is the one most over-represented against the rest of the sample.")
    cols = [("group", "group"), ("before", "sampled before"), ("after", "sampled after"),
            ("distinct_3", "distinct-3"), ("mattr", "MATTR"), ("near", "near-dup rate"),
            ("sim", "pairwise similarity"), ("samey", "top phrase vs rest")]
    if omitted:
        note += f" {omitted:,} smaller group(s) were not measured (report.json lists the largest only)."
    return section("By group", table(rows, cols, max_rows=MAX_GROUP_ROWS), note=note)


def languages_section(report: Mapping[str, Any]) -> str:
    """One row per language: records, kept, rejected, scored by the detector, in the estimate."""
    langs = report.get("languages")
    if not langs:
        return ""
    by = langs.get("by_language") or {}
    rows = [{
        "language": Html(f"<code>{_esc(code)}</code>"), "records": e.get("records"), "kept": e.get("kept"),
        "rejected": ", ".join(f"{r.replace('_', ' ')} {n:,}" for r, n in (e.get("rejected_by_reason") or {}).items()) or "—",
        "scored": e.get("detector_scored"), "estimate": e.get("in_estimate"),
    } for code, e in by.items()]
    trusted = ", ".join(langs.get("detector_languages") or []) or "none (detector off)"
    ident = langs.get("identifier") or {}
    note = (f"Languages identified by {ident.get('library', '?')} {ident.get('version', '')} on the first "
            f"{ident.get('sample_chars', '?')} characters of each record (und: not identified, confidence under "
            f"{ident.get('min_confidence', '?')}). The detector is trusted on: {trusted}; records in other languages "
            "get no score, and only those of known provenance count towards the synthetic share.")
    if langs.get("keep"):
        note += f" Kept languages (--languages): {', '.join(langs['keep'])}."
    cols = [("language", "language"), ("records", "records"), ("kept", "kept"), ("rejected", "rejected"),
            ("scored", "detector-scored (copies too)"), ("estimate", "in the estimate (unique)")]
    return section("Languages", table(rows, cols, max_rows=MAX_GROUP_ROWS), note=note)


def _middle(text: str, width: int = 36) -> str:
    """Long names (shard paths) shortened in the middle, where they differ least."""
    if len(text) <= width:
        return text
    half = (width - 1) // 2
    return text[:half] + "…" + text[-(width - 1 - half):]


def run_section(report: Mapping[str, Any], manifest: Mapping[str, Any]) -> str:
    """What ran: version, times, seed, model, dedup settings, conservation, inputs, config."""
    model = manifest.get("model") or {}
    dedup = manifest.get("dedup") or {}
    cons = manifest.get("conservation") or {}
    summary = {
        "synthfilter": manifest.get("synthfilter_version") or report.get("version"),
        "started": manifest.get("started"),
        "ended": manifest.get("ended"),
        "seed": manifest.get("seed"),
        "python": manifest.get("python"),
        "detector model": f"{model.get('id')} (sha256 {str(model.get('sha256'))[:12]}…)" if model else "none (detector off)",
        "near-dedup": (f"{dedup.get('scheme')}, {dedup.get('num_perm')} permutations, {dedup.get('ngram')}-word shingles, "
                       f"{dedup.get('bands')} × {dedup.get('rows')} bands, threshold {dedup.get('threshold')}") if dedup else "off",
        "conservation": ("checked, ok" if cons.get("ok") else "FAILED") if cons.get("checked") else "not checked (dry run)" if cons else "—",
    }
    rows = [{"what": k, "value": "—" if v is None else str(v)} for k, v in summary.items()]
    inputs = []
    for i in manifest.get("inputs") or []:
        by = i.get("by_reason") or {}
        inputs.append({
            "rel": Html(f"<code>{_esc(i.get('rel') or i.get('path'))}</code>"),
            "format": f"{i.get('format')}" + (f" ({i.get('compression')})" if i.get("compression") else ""),
            "size": _bytes(i.get("size")), "records": i.get("records"), "kept": i.get("kept"), "rejected": i.get("rejected"),
            "by_reason": ", ".join(f"{k.replace('_', ' ')} {v:,}" for k, v in by.items()) or "—",
        })
    blocks = [table(rows, [("what", "run"), ("value", "value")]),
              table(inputs, [("rel", "input shard"), ("format", "format"), ("size", "size"), ("records", "records"),
                             ("kept", "kept"), ("rejected", "rejected"), ("by_reason", "rejected by reason")],
                    caption="Inputs", max_rows=MAX_INPUT_ROWS)]
    if manifest.get("ignored_files"):
        blocks.append(callout([f"not read (unsupported extension): {p}" for p in manifest["ignored_files"]], "info"))
    if manifest.get("config"):
        config = dict(manifest["config"])
        if config.get("workers") == 0:  # as given: 0 means one per core of the machine that ran it
            config["workers"] = "0 (one per core)"
        blocks.append(details("Configuration (resolved)", kv_table(config)))
    return section("Run", *blocks, note="From manifest.json.")


def _subtitle(report: Mapping[str, Any], manifest: Mapping[str, Any]) -> str:
    inputs = manifest.get("inputs") or []
    where = inputs[0].get("rel") if len(inputs) == 1 else f"{len(inputs):,} shards"
    parts = [f"{fmt_count((report.get('input') or {}).get('records'))} records from {where}"]
    if manifest.get("ended"):
        parts.append(f"finished {manifest['ended']}")
    parts.append(f"synthfilter {manifest.get('synthfilter_version') or report.get('version') or ''}".strip())
    return " · ".join(parts)


def _group_by(manifest: Mapping[str, Any]) -> str | None:
    return ((manifest.get("config") or {}).get("report") or {}).get("group_by")


def prerender_run_sections(report: Mapping[str, Any], *, group_by: str | None, scores: np.ndarray | None,
                           reasons: np.ndarray | None, cluster_sizes: np.ndarray | None,
                           reason_names: Sequence[str] = REASON_NAMES) -> dict[str, str]:
    """The sections of ``render_run_report`` that read neither the run's timing nor the manifest
    (all the charts): a run renders them while its records are still being written, then passes
    them as ``prerendered``. ``report`` must already hold everything but ``timing``."""
    diversity = report.get("diversity")
    return {
        "outcome": outcome_section(report),
        "detector": detector_section(report, scores, reasons, reason_names),
        "duplicates": duplicates_section(report, cluster_sizes),
        "diversity": diversity_report_section(diversity, report),
        "groups": groups_section(diversity, group_by),
        "languages": languages_section(report),
    }


def _run_sections(report: Mapping[str, Any], manifest: Mapping[str, Any], scores: np.ndarray | None,
                  reasons: np.ndarray | None, cluster_sizes: np.ndarray | None, reason_names: Sequence[str],
                  prerendered: Mapping[str, str] | None = None) -> list[str]:
    early = prerendered if prerendered is not None else prerender_run_sections(
        report, group_by=_group_by(manifest), scores=scores, reasons=reasons, cluster_sizes=cluster_sizes,
        reason_names=reason_names)
    return [
        headline_section(report),
        early["outcome"],
        early["detector"],
        early["duplicates"],
        early.get("languages", ""),
        early["diversity"],
        early["groups"],
        run_section(report, manifest),
    ]


def render_run_report(report: Mapping[str, Any], manifest: Mapping[str, Any], *, scores: np.ndarray | None,
                      reasons: np.ndarray | None, cluster_sizes: np.ndarray | None,
                      title: str = "synthfilter report", reason_names: Sequence[str] = REASON_NAMES,
                      prerendered: Mapping[str, str] | None = None) -> str:
    """report.html for one run (or one ``synthfilter report``): a complete, self-contained document.

    Args:
        report: the report.json dict (``diversity`` optional).
        manifest: the manifest.json dict.
        scores: float32 detector P(machine) per record, NaN where not scored (all NaN with the detector off).
        reasons: int8 decision code per record, indexes into ``reason_names``.
        cluster_sizes: sizes of the duplicate clusters (groups of >= 2 records).
        prerendered: ``prerender_run_sections`` of the same report and arrays, made earlier.
    """
    if scores is not None and reasons is not None and len(scores) != len(reasons):
        raise ValueError(f"scores ({len(scores)}) and reasons ({len(reasons)}) must have one entry per record")
    dry = bool((report.get("output") or {}).get("dry_run"))
    return page(title, _run_sections(report, manifest, scores, reasons, cluster_sizes, reason_names, prerendered),
                subtitle=_subtitle(report, manifest), badge="dry run" if dry else None,
                footer="Generated by synthfilter: self-contained, nothing here loads from the network.")


def render_gate_report(verdict: Mapping[str, Any], *, report: Mapping[str, Any] | None = None,
                       manifest: Mapping[str, Any] | None = None, scores: np.ndarray | None = None,
                       reasons: np.ndarray | None = None, cluster_sizes: np.ndarray | None = None,
                       title: str = "synthfilter gate", reason_names: Sequence[str] = REASON_NAMES) -> str:
    """The gate's page: PASS/FAIL, one row per policy check, then the run report's sections.

    ``verdict``: ``{"passed": bool, "policy": str | None, "checks": [{"name", "passed", "value",
    "limit", "detail"}], "messages": [str]}`` (only ``passed`` is required). With ``report``
    (and ``manifest``) the same sections as ``render_run_report`` follow.
    """
    passed = bool(verdict.get("passed"))
    checks = []
    for c in verdict.get("checks") or []:
        ok = c.get("passed")
        mark = Html('<span class="up">✔ pass</span>' if ok else '<span class="down">✘ fail</span>') if ok is not None else "—"
        checks.append({"check": c.get("name"), "result": mark, "value": c.get("value"), "limit": c.get("limit"),
                       "detail": c.get("detail")})
    head = f'<div class="verdict {"pass" if passed else "fail"}">{"PASS" if passed else "FAIL"}</div>'
    blocks = [Html(head)]
    if verdict.get("policy"):
        blocks.append(paragraph(f"Policy: {verdict['policy']}"))
    if verdict.get("messages"):
        blocks.append(callout(verdict["messages"], "good" if passed else "bad"))
    blocks.append(table(checks, [("check", "check"), ("result", "result"), ("value", "value"),
                                 ("limit", "limit"), ("detail", "detail")]))
    sections = [section("Verdict", *blocks, anchor="verdict")]
    if report is not None:
        sections += _run_sections(report, manifest or {}, scores, reasons, cluster_sizes, reason_names)
    subtitle = _subtitle(report, manifest or {}) if report is not None else None
    return page(title, sections, subtitle=subtitle, footer="Generated by synthfilter: self-contained, nothing here loads from the network.")
