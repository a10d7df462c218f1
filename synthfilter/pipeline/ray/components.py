"""Connected components of the duplicate graph as Ray Data shuffles, the edge table never on the
driver: alternating large-star and small-star contraction (Kiveris et al., "Connected
Components in MapReduce and Beyond", 2014), with an exact convergence check each round.

Every round groups the edge table by node (a shuffle) and rewires each node's edges to the
smallest node it sees. The graph is finished when it is a set of stars, each leaf linked to
its component's smallest node: the large-star pass sees that on its input and says so. Labels
are the smallest node of each component, as ``merge_labels`` and ``Forest`` give them.
"""

from __future__ import annotations

from typing import Any

import numpy as np

from synthfilter.pipeline.ray.session import collect, grouped, partitions_for

# The method converges in O(log^2 n) rounds; real duplicate graphs (stars per bucket) in a few.
MAX_ROUNDS = 64
EDGE, LABEL, STAT = 0, 1, 2  # row kinds: an edge (u -> v), a component root (u, u), a count


def connected_components(edges: Any, rows: int) -> Any:
    """A dataset of (``node``, ``label``) for every node of ``edges`` (int64 columns ``u``, ``v``):
    ``label`` is the smallest node of the node's connected component.

    ``rows``: about how many edges there are (sizes the shuffles).
    """
    parts = partitions_for(2 * rows)
    graph = edges
    for _ in range(MAX_ROUNDS):
        star = grouped(graph.map_batches(_by_node, batch_format="numpy", batch_size=None,
                                         fn_kwargs={"parts": parts, "both": True}),
                       _large_star, rows=2 * rows).materialize()
        if _unsettled(star) == 0:
            return star.map_batches(_labels, batch_format="numpy", batch_size=None)
        graph = grouped(star.map_batches(_by_node, batch_format="numpy", batch_size=None,
                                         fn_kwargs={"parts": parts, "both": False}),
                        _small_star, rows=rows).materialize()
    raise RuntimeError(f"connected components did not converge in {MAX_ROUNDS} rounds")


def _by_node(batch: dict[str, np.ndarray], parts: int, both: bool) -> dict[str, np.ndarray]:
    """Edges keyed by node: both directions (large star), or from the larger end (small star)."""
    is_edge = batch["kind"] == EDGE if "kind" in batch else np.ones(len(batch["u"]), bool)
    u, v = batch["u"][is_edge], batch["v"][is_edge]
    keep = u != v
    u, v = u[keep], v[keep]
    if both:
        src, dst = np.r_[u, v], np.r_[v, u]
    else:
        src, dst = np.maximum(u, v), np.minimum(u, v)
    return {"part": (src % parts).astype(np.int64), "src": src.astype(np.int64), "dst": dst.astype(np.int64)}


def _neighbourhoods(batch: dict[str, np.ndarray]) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
    """(src, dst) sorted without repeats, each row's run start, and the runs' starts."""
    order = np.lexsort((batch["dst"], batch["src"]))
    src, dst = batch["src"][order], batch["dst"][order]
    fresh = np.r_[True, (src[1:] != src[:-1]) | (dst[1:] != dst[:-1])]
    src, dst = src[fresh], dst[fresh]
    starts = np.flatnonzero(np.r_[True, src[1:] != src[:-1]]) if len(src) else np.zeros(0, np.int64)
    run = np.repeat(starts, np.diff(np.r_[starts, len(src)]))
    return src, dst, run, starts


def _rows(kind: np.ndarray, u: np.ndarray, v: np.ndarray) -> dict[str, np.ndarray]:
    return {"kind": kind.astype(np.int8), "u": u.astype(np.int64), "v": v.astype(np.int64)}


def _large_star(batch: dict[str, np.ndarray]) -> dict[str, np.ndarray]:
    """Per node: every larger neighbour is linked to the smallest node of the neighbourhood.

    Also counts the nodes that are not yet a star's centre or leaf (a centre has only larger
    neighbours, a leaf exactly one neighbour, smaller): none means the input is final.
    """
    src, dst, run, starts = _neighbourhoods(batch)
    smallest = np.minimum(src, dst[run])  # dst is sorted within each run: its first is the least
    larger = dst > src
    out_edges = _rows(np.full(int(larger.sum()), EDGE), dst[larger], smallest[larger])
    n_smaller = np.add.reduceat((~larger).astype(np.int64), starts) if len(starts) else np.zeros(0, np.int64)
    n_larger = np.add.reduceat(larger.astype(np.int64), starts) if len(starts) else np.zeros(0, np.int64)
    settled = (n_smaller == 0) | ((n_smaller == 1) & (n_larger == 0))
    roots = src[starts][n_smaller == 0]
    stat = _rows(np.array([STAT]), np.array([int((~settled).sum())]), np.array([0]))
    labels = _rows(np.full(len(roots), LABEL), roots, roots)
    return {k: np.concatenate([out_edges[k], labels[k], stat[k]]) for k in out_edges}


def _small_star(batch: dict[str, np.ndarray]) -> dict[str, np.ndarray]:
    """Per node: it and its smaller neighbours are linked to the smallest of them."""
    src, dst, run, starts = _neighbourhoods(batch)
    smallest = dst[run]
    others = dst != smallest
    heads = src[starts]
    u = np.r_[dst[others], heads]
    v = np.r_[smallest[others], dst[starts]]
    return _rows(np.full(len(u), EDGE), u, v)


def _unsettled(star: Any) -> int:
    got = collect(star.map_batches(_stats, batch_format="numpy", batch_size=None))
    return int(got["unsettled"].sum()) if got else 0


def _stats(batch: dict[str, np.ndarray]) -> dict[str, np.ndarray]:
    return {"unsettled": batch["u"][batch["kind"] == STAT]}


def _labels(batch: dict[str, np.ndarray]) -> dict[str, np.ndarray]:
    keep = batch["kind"] != STAT
    return {"gidx": batch["u"][keep], "label": batch["v"][keep]}
