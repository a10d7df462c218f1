"""Report charts drawn with matplotlib (Agg, no pyplot state) and returned as inline SVG strings.

Text is drawn as paths, so an SVG needs no font and no network; ids are prefixed per chart.
"""

from __future__ import annotations

import functools
import hashlib
import io
import re
from collections.abc import Callable, Mapping, Sequence
from typing import Any

import numpy as np

__all__ = [
    "AFTER",
    "BEFORE",
    "REASON_COLORS",
    "chart_svg",
    "cluster_log_scale",
    "cluster_size_bins",
    "cluster_size_histogram",
    "decision_bars",
    "diversity_bars",
    "new_figure",
    "samey_bars",
    "score_counts",
    "set_margins",
    "score_histogram",
    "styled",
]

# Okabe-Ito colours: distinguishable with the common colour-vision deficiencies.
REASON_COLORS = {
    "kept": "#0072B2",
    "malformed": "#999999",
    "exact_duplicate": "#E69F00",
    "near_duplicate": "#CC79A7",
    "synthetic_downsampled": "#D55E00",
    "language": "#56B4E9",
    "repetitive": "#009E73",
}
BEFORE = "#A3ACB9"
AFTER = "#0072B2"
_INK = "#1f2933"
_GRID = "#e4e7eb"

_RC = {
    "font.size": 9,
    "axes.titlesize": 10,
    "axes.labelsize": 9,
    "axes.edgecolor": "#9aa5b1",
    "axes.labelcolor": _INK,
    "xtick.color": _INK,
    "ytick.color": _INK,
    "axes.spines.top": False,
    "axes.spines.right": False,
    "legend.frameon": False,
    "svg.fonttype": "path",  # glyphs as paths: no font needed where the report is viewed
    "svg.hashsalt": "synthfilter",  # deterministic ids
}


def _label(reason: str) -> str:
    return reason.replace("_", " ")


def styled(fn: Callable[..., Any]) -> Callable[..., Any]:
    """Run a chart-drawing function under the report's matplotlib style (rc settings)."""

    @functools.wraps(fn)
    def wrapper(*args: Any, **kwargs: Any) -> Any:
        import matplotlib

        with matplotlib.rc_context(_RC):
            return fn(*args, **kwargs)

    return wrapper


def new_figure(width: float = 7.0, height: float = 2.8) -> Any:
    """A matplotlib ``Figure`` (inches), detached from pyplot: no global state, no GUI backend.
    Draw on it inside a function decorated with ``styled`` to get the report's style."""
    from matplotlib.figure import Figure

    fig = Figure(figsize=(width, height))
    fig.patch.set_alpha(0.0)
    return fig


def set_margins(fig: Any, left_chars: int, *, ylabel: bool = False, bottom: float = 0.5, top: float = 0.12) -> None:
    """Fixed margins (inches for ``bottom``/``top``) sized for tick labels of ``left_chars``
    characters: an automatic layout engine would draw every chart twice, doubling render time."""
    width, height = fig.get_size_inches()
    left_pt = left_chars * 5.3 + 12 + (16 if ylabel else 0)  # ~5.3 pt per character at 9 pt
    fig.subplots_adjust(left=min(0.5, left_pt / (72 * width)), right=0.975,
                        bottom=min(0.6, bottom / height), top=max(0.4, 1 - top / height))


def _integer_ticks(axis: Any) -> None:
    from matplotlib.ticker import MaxNLocator

    axis.set_major_locator(MaxNLocator(integer=True))


def _style_axes(ax: Any) -> None:
    ax.grid(True, color=_GRID, linewidth=0.8)
    ax.set_axisbelow(True)
    for side in ("top", "right"):
        ax.spines[side].set_visible(False)


def chart_svg(fig: Any, *, title: str | None = None) -> str:
    """The figure as an ``<svg>`` element to inline in HTML: no XML prolog, no fixed size
    (scales to its container), ids unique on the page, ``role="img"`` with ``title`` as label."""
    import matplotlib

    buf = io.StringIO()
    with matplotlib.rc_context({"svg.fonttype": "path", "svg.hashsalt": "synthfilter"}):
        fig.savefig(buf, format="svg", metadata={"Date": None, "Creator": None}, transparent=True)
    svg = buf.getvalue()
    svg = svg[svg.index("<svg"):]
    svg = re.sub(r"\s*<metadata>.*?</metadata>", "", svg, count=1, flags=re.S)
    # Ids prefixed by a hash of the chart: unique across a page's charts, same bytes every run.
    prefix = f"sf{hashlib.blake2b(svg.encode('utf-8'), digest_size=4).hexdigest()}-"
    ids = set(re.findall(r'\bid="([^"]+)"', svg))
    svg = re.sub(r'(\bid="|url\(#|href="#)([^")]+)',
                 lambda m: m.group(1) + (prefix + m.group(2) if m.group(2) in ids else m.group(2)), svg)
    label = f' role="img" aria-label="{_attr(title)}"' if title else ' role="img"'
    svg = re.sub(r'<svg([^>]*?)\swidth="[^"]*"\s+height="[^"]*"', r'<svg\1', svg, count=1)
    return svg.replace("<svg", f'<svg class="chart"{label}', 1)


def _attr(text: str) -> str:
    return text.replace("&", "&amp;").replace('"', "&quot;").replace("<", "&lt;")


# -- the charts ---------------------------------------------------------------------------------


@styled
def decision_bars(counts: Mapping[str, int]) -> str | None:
    """Horizontal bars: records per outcome (kept and each rejection reason), with counts."""
    items = [(k, int(v)) for k, v in counts.items() if v]
    if not items:
        return None
    fig = new_figure(7.0, 0.8 + 0.3 * len(items))
    ax = fig.add_subplot()
    names = [_label(k) for k, _ in items][::-1]
    values = [v for _, v in items][::-1]
    colors = [REASON_COLORS.get(k, BEFORE) for k, _ in items][::-1]
    bars = ax.barh(names, values, color=colors, height=0.65)
    ax.bar_label(bars, labels=[f"{v:,}" for v in values], padding=3, fontsize=8, color=_INK)
    ax.set_xlabel("records")
    ax.set_xlim(0, max(values) * 1.15)
    _integer_ticks(ax.xaxis)
    set_margins(fig, max(map(len, names)))
    _style_axes(ax)
    ax.grid(False, axis="y")
    return chart_svg(fig, title="records by outcome")


def score_counts(scores: np.ndarray, reasons: np.ndarray, n_reasons: int, bins: int = 20,
                 chunk: int = 1 << 22) -> np.ndarray:
    """(n_reasons, bins) counts of finite scores in equal bins over [0, 1] per decision code;
    reads the arrays in chunks (they may be memory-mapped and hold a billion records)."""
    out = np.zeros(n_reasons * bins, dtype=np.int64)
    for lo in range(0, len(scores), chunk):
        s = np.asarray(scores[lo:lo + chunk], dtype=np.float64)
        r = np.asarray(reasons[lo:lo + chunk], dtype=np.int64)
        ok = np.isfinite(s) & (r >= 0) & (r < n_reasons)
        b = np.clip((s[ok] * bins).astype(np.int64), 0, bins - 1)
        out += np.bincount(r[ok] * bins + b, minlength=n_reasons * bins)
    return out.reshape(n_reasons, bins)


@styled
def score_histogram(scores: np.ndarray, reasons: np.ndarray, reason_names: Sequence[str], bins: int = 20) -> str | None:
    """Stacked histogram of detector scores (P(machine)) in ``bins`` bins over [0, 1], one
    colour per decision; unscored records (NaN) are left out. ``None`` when nothing was scored."""
    counts = score_counts(scores, reasons, len(reason_names), bins)
    if not counts.any():
        return None
    edges = np.linspace(0.0, 1.0, bins + 1)
    fig = new_figure(7.0, 2.8)
    ax = fig.add_subplot()
    bottom = np.zeros(bins)
    for code, name in enumerate(reason_names):
        h = counts[code]
        if not h.any():
            continue
        ax.bar(edges[:-1], h, width=np.diff(edges), bottom=bottom, align="edge",
               color=REASON_COLORS.get(name, BEFORE), edgecolor="white", linewidth=0.4,
               label=f"{_label(name)} ({int(h.sum()):,})")
        bottom += h
    ax.set_xlim(0, 1)
    ax.set_xlabel("detector score: P(machine-generated)")
    ax.set_ylabel("records")
    _integer_ticks(ax.yaxis)
    _style_axes(ax)
    ax.legend(loc="lower center", ncols=3, fontsize=8, bbox_to_anchor=(0.5, 1.0))
    set_margins(fig, len(f"{int(counts.sum(axis=0).max()):,}"), ylabel=True, top=0.45)
    return chart_svg(fig, title="histogram of detector scores by decision")


def cluster_size_bins(cluster_sizes: np.ndarray) -> tuple[np.ndarray, np.ndarray] | None:
    """``(edges, counts)`` of the duplicate-cluster chart: one bin per size up to 20, logarithmic
    bins beyond; bin i holds the clusters of ``edges[i]`` to ``edges[i + 1] - 1`` records. ``None``
    without clusters (sizes under 2 are not clusters)."""
    sizes = np.asarray(cluster_sizes, dtype=np.int64)
    sizes = sizes[sizes >= 2]
    if not len(sizes):
        return None
    top = int(sizes.max())
    if top <= 20:
        edges = np.arange(2, top + 2)
    else:
        edges = np.unique(np.concatenate([np.arange(2, 11), np.geomspace(11, top + 1, 9).round()]).astype(np.int64))
        edges = np.append(edges[edges <= top], top + 1)
    counts, _ = np.histogram(sizes, bins=edges)
    return edges, counts


def cluster_log_scale(counts: np.ndarray) -> bool:
    """Whether the cluster chart draws its bars on a log scale: when the tallest bar is over 50
    times the shortest non-empty one (a linear scale would leave those as slivers)."""
    counts = np.asarray(counts)
    return bool(len(counts) and counts.max() > 50 * max(1, counts[counts > 0].min()))


@styled
def cluster_size_histogram(cluster_sizes: np.ndarray) -> str | None:
    """Number of duplicate clusters (groups of >= 2 equal or near-equal records) by size
    (``cluster_size_bins``), each bar labelled with its count; on a log scale, said in the axis
    label, with a tick at every power of ten, when ``cluster_log_scale``. ``None`` without clusters."""
    binned = cluster_size_bins(cluster_sizes)
    if binned is None:
        return None
    edges, counts = binned
    log = cluster_log_scale(counts)
    fig = new_figure(7.0, 2.6)
    ax = fig.add_subplot()
    bars = ax.bar(range(len(counts)), counts, color=REASON_COLORS["exact_duplicate"], width=0.8)
    # Every bar says its count (an empty bin says nothing: no bar, no number).
    ax.bar_label(bars, labels=[f"{c:,}" if c else "" for c in counts], padding=2, fontsize=8, color=_INK)
    labels = [str(lo) if hi - lo == 1 else f"{lo}-{hi - 1}" for lo, hi in zip(edges[:-1], edges[1:])]
    ax.set_xticks(range(len(counts)), labels, rotation=45 if len(counts) > 12 else 0,
                  ha="right" if len(counts) > 12 else "center")
    ax.set_xlabel("records in the cluster")
    ax.set_ylabel("clusters (log scale)" if log else "clusters")
    peak = int(counts.max())
    decades = len(str(peak - 1))  # the tallest bar is at most 10 ** decades
    set_margins(fig, len(f"{10 ** decades:,}" if log else f"{peak:,}"), ylabel=True,
                bottom=0.85 if len(counts) > 12 else 0.5)
    if log:
        from matplotlib.ticker import FixedLocator, FuncFormatter, NullFormatter

        ax.set_yscale("log")
        ax.yaxis.set_major_locator(FixedLocator([10.0 ** k for k in range(decades + 1)]))
        ax.yaxis.set_major_formatter(FuncFormatter(lambda v, _pos: f"{v:,.0f}"))
        ax.yaxis.set_minor_formatter(NullFormatter())
        # From 0.5, so that a bar of one cluster is a bar, not a sliver; up to the power of ten
        # over the tallest bar, with room for its number.
        ax.set_ylim(0.5, max(10.0 ** decades, peak * 2.2))
    else:
        _integer_ticks(ax.yaxis)
        ax.set_ylim(0, peak * 1.15)
    _style_axes(ax)
    ax.grid(False, axis="x")
    return chart_svg(fig, title="duplicate clusters by size")


# Diversity metrics on a 0..1 scale, in chart order: (key, label, higher is more diverse).
SHARE_METRICS = (
    ("distinct_1", "distinct-1", True),
    ("distinct_2", "distinct-2", True),
    ("distinct_3", "distinct-3", True),
    ("mattr", "MATTR", True),
    ("hapax_share", "hapax share", True),
    ("exact_duplicate_rate", "exact-duplicate rate", False),
    ("near_duplicate_rate", "near-duplicate rate", False),
    ("mean_pairwise_similarity", "mean pairwise similarity", False),
)


@styled
def diversity_bars(before: Mapping[str, Any] | None, after: Mapping[str, Any] | None) -> str | None:
    """Grouped horizontal bars, before vs after filtering, for the diversity metrics on a
    0..1 scale (``SHARE_METRICS``). ``None`` when neither side has a value."""
    rows = [(key, label) for key, label, _ in SHARE_METRICS
            if any(side and side.get(key) is not None for side in (before, after))]
    if not rows:
        return None
    fig = new_figure(7.0, 0.8 + 0.42 * len(rows))
    ax = fig.add_subplot()
    y = np.arange(len(rows))[::-1]
    h = 0.38
    for offset, side, name, color in ((h / 2, before, "before", BEFORE), (-h / 2, after, "after", AFTER)):
        if not side:
            continue
        vals = [side.get(k) for k, _ in rows]
        v = np.array([np.nan if x is None else float(x) for x in vals])
        bars = ax.barh(y + offset, np.nan_to_num(v), height=h, color=color, label=name)
        ax.bar_label(bars, labels=["n/a" if np.isnan(x) else f"{x:.3f}" for x in v], padding=2, fontsize=7, color=_INK)
    ax.set_yticks(y, [label for _, label in rows])
    ax.set_xlim(0, 1.12)
    ax.set_xlabel("0 = none, 1 = all (distinct-n, MATTR, hapax: higher is more diverse)")
    set_margins(fig, max(len(label) for _, label in rows))
    _style_axes(ax)
    ax.grid(False, axis="y")
    ax.legend(loc="lower right", fontsize=8)
    return chart_svg(fig, title="diversity before and after filtering")


@styled
def samey_bars(ngrams: Sequence[Mapping[str, Any]], top: int = 12) -> str | None:
    """Horizontal bars: the share of sampled records containing each samey phrase (and the
    reference share, when the rows have one). ``None`` for no phrases."""
    rows = list(ngrams)[:top]
    if not rows:
        return None
    fig = new_figure(7.0, 0.8 + 0.3 * len(rows))
    ax = fig.add_subplot()
    y = np.arange(len(rows))[::-1]
    share = [float(r["share"]) for r in rows]
    has_ref = all("reference_share" in r for r in rows)
    h = 0.4 if has_ref else 0.7
    bars = ax.barh(y + (h / 2 if has_ref else 0), share, height=h, color=REASON_COLORS["synthetic_downsampled"],
                   label="this sample")
    ax.bar_label(bars, labels=[f"{s:.1%}" for s in share], padding=2, fontsize=7, color=_INK)
    if has_ref:
        ax.barh(y - h / 2, [float(r["reference_share"]) for r in rows], height=h, color=BEFORE, label="reference")
        ax.legend(loc="lower right", fontsize=8)
    # A phrase the chart's font cannot draw (CJK, Arabic, emoji, ...) is named by its rank: the
    # tables under the chart show it in the browser's fonts. No glyph warnings, no empty boxes.
    labels = [_short(str(r["ngram"])) if drawable(str(r["ngram"])) else f"phrase #{k + 1} (see table)"
              for k, r in enumerate(rows)]
    ax.set_yticks(y, labels)
    set_margins(fig, max(map(len, labels)))
    ax.set_xlim(0, min(1.0, max(share) * 1.2) or 1.0)
    ax.set_xlabel("share of sampled records containing the phrase")
    _style_axes(ax)
    ax.grid(False, axis="y")
    return chart_svg(fig, title="most repeated phrases")


def drawable(text: str) -> bool:
    """Whether the charts' font has a glyph for every character of ``text``."""
    return all(ord(ch) in _font_charmap() for ch in text if not ch.isspace())


@functools.lru_cache(maxsize=1)
def _font_charmap() -> frozenset[int]:
    import matplotlib
    from matplotlib import font_manager
    from matplotlib.ft2font import FT2Font

    with matplotlib.rc_context(_RC):
        path = font_manager.findfont(font_manager.FontProperties(family=matplotlib.rcParams["font.family"]))
    return frozenset(FT2Font(path).get_charmap())


def _short(text: str, width: int = 40) -> str:
    return text if len(text) <= width else text[: width - 1] + "…"
