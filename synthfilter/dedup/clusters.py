"""Near-duplicate clusters from band keys (candidates by sorting, verified links, no all-pairs work in
a bucket, no Python loop per record) and the deterministic choice of the record each cluster keeps."""

from __future__ import annotations

from collections.abc import Callable, Sequence
from typing import Any

import numpy as np

__all__ = [
    "bucket_links", "choose_survivors", "component_roots", "gather_sorted_rows", "near_duplicate_components",
    "release_mapped_pages", "runs_of_equal", "similar_pairs", "split_at_survivors",
]

VERIFY_CHUNK = 4096  # candidate pairs compared per numpy step (bounds temporary memory)


def near_duplicate_components(
    keys: np.ndarray,
    signatures: np.ndarray | None = None,
    threshold: float = 0.8,
    verify: bool = True,
    *,
    max_rounds: int = 8,
    verify_chunk: int = VERIFY_CHUNK,
    copy_of: np.ndarray | None = None,
) -> np.ndarray:
    """Component label of every record: the smallest record index of its near-duplicate cluster.

    Args:
        keys: (N, b) uint64 band keys (``lsh.band_keys``); may be an ``np.memmap``.
        signatures: (N, num_perm) uint32 MinHash signatures (may be an ``np.memmap``: only the
            rows of candidate pairs are read); required when ``verify``.
        threshold: Jaccard threshold a candidate pair must reach (estimated from signatures).
        verify: check every candidate pair before linking it. Without it, any shared band links.
        max_rounds: linking rounds per bucket: the first, then re-splits among the members
            that failed verification (bounds the work on buckets of unrelated records).
        verify_chunk: candidate pairs verified per numpy step (bounds temporary memory).
        copy_of: optional int64 (N,): for each record, the smallest index of the records with
            the same text (itself where none is earlier; ``pipeline.stages._exact_labels``).
            The later copies are left out of the buckets and take their first copy's label at
            the end: the same labels as with them in (see below), for much less verification.

    Returns:
        int64 array (N,). Records without a verified near-duplicate keep their own index.

    In each band, records with equal keys form a bucket; each member is linked to the
    bucket's smallest record index (its representative), never to every other member. A
    member that fails verification against the representative is not dropped: the failed
    members form a sub-bucket with a new representative in the next round (``bucket_links``).
    Clusters are connected components of verified links. The links of a bucket depend on the
    bucket alone, never on what other bands linked, so any engine that finds the same links
    (in any order, on any machine) finds the same clusters.

    Why ``copy_of`` changes no label: a later copy has its first copy's band keys and signature,
    so it is in every bucket its first copy is in, is never a bucket's representative (the first
    copy is smaller), and passes or fails every check exactly as the first copy does (which it
    always passes itself). Leaving it out changes no representative, no check of another record
    and no component; it belongs to its first copy's. Exact duplicates are most candidate pairs
    of a corpus with many of them (each is a candidate in every band).
    """
    if not hasattr(keys, "ndim"):
        keys = np.asarray(keys, dtype=np.uint64)
    if verify and signatures is not None and not hasattr(signatures, "ndim"):
        signatures = np.asarray(signatures, dtype=np.uint32)
    if keys.ndim != 2:
        raise ValueError(f"keys must be a 2-D (records, bands) array, got shape {keys.shape}")
    n, n_bands = keys.shape
    if verify:
        if signatures is None:
            raise ValueError("verify=True needs the signatures (or pass verify=False)")
        if signatures.ndim != 2 or signatures.shape[0] != n:
            raise ValueError(f"signatures must have shape ({n}, num_perm), got {signatures.shape}")

    def similar(u: np.ndarray, v: np.ndarray) -> np.ndarray:
        return similar_pairs(signatures, u, v, threshold, verify_chunk)

    # A band's buckets can hold most records: their indices in 32 bits where they fit.
    index_type = np.int32 if n < 2**31 else np.int64
    later_copy = None
    if copy_of is not None:
        copy_of = np.asarray(copy_of)
        if copy_of.shape != (n,):
            raise ValueError(f"copy_of must have shape ({n},), got {copy_of.shape}")
        later_copy = copy_of != np.arange(n)
        if not later_copy.any():
            later_copy = None
    forest = Forest(n)
    for band in range(n_bands):
        records, group_starts = _buckets(keys, band, index_type, later_copy)
        group = np.repeat(np.arange(len(group_starts) - 1, dtype=index_type), np.diff(group_starts))
        del group_starts
        u, v = bucket_links(records, group, similar if verify else None, max_rounds)
        del records, group
        forest.union(forest.find(u), forest.find(v))
        del u, v
        release_mapped_pages(keys, signatures)
    labels = forest.labels()
    if later_copy is not None:
        copies = np.flatnonzero(later_copy)
        labels[copies] = labels[copy_of[copies]]
    return labels


def release_mapped_pages(*arrays: Any) -> None:
    """Unmap the pages that memory-mapped arrays (``np.memmap`` and views of one) have read.

    The pages stay in the kernel's page cache and are read back from it on the next access; the
    process just stops mapping them, so what it maps of the files it reads (band keys: 8 B per
    record and band; signatures: 4 B per permutation) does not pile up from band to band (at
    400,000 records: 425 MiB resident after the clustering without it, 188 with it). Within one
    band a scattered read maps most of the signature file anyway: the kernel maps the cached
    pages around each one it faults in (fault-around, whole page-cache folios), so reading one
    row every 256 KB maps all of a file. Arrays that are not memory-mapped are left alone.
    """
    for arr in arrays:
        m = getattr(arr, "_mmap", None)
        if m is not None:
            _dont_need(m)


def _dont_need(m: Any, start: int = 0, length: int | None = None) -> None:
    """``madvise(MADV_DONTNEED)`` over ``length`` bytes of the map from ``start`` (all of it by
    default); a platform, kernel or closed map that cannot do it releases nothing."""
    import mmap

    if not hasattr(mmap, "MADV_DONTNEED"):
        return
    try:
        m.madvise(mmap.MADV_DONTNEED, start, len(m) - start if length is None else length)
    except (OSError, ValueError):
        pass


def choose_survivors(labels: np.ndarray, sort_keys: Sequence[np.ndarray] = ()) -> np.ndarray:
    """Index of the record each record's group keeps (``survivor[i] == i``: ``i`` is kept).

    Args:
        labels: (N,) group label per record (any integers; equal label = same group).
        sort_keys: (N,) arrays in priority order (first decides first); within a group the
            record with the lowest values wins (NaN loses to any number), ties go to the
            smallest index, i.e. the earliest in input order.
    """
    labels = np.asarray(labels)
    n = len(labels)
    keys = [np.asarray(k) for k in sort_keys]
    for i, k in enumerate(keys):
        if k.shape != (n,):
            raise ValueError(f"sort_keys[{i}] must have shape ({n},), got {k.shape}")
    if n < 2:
        return np.arange(n, dtype=np.int64)
    order = np.argsort(labels, kind="stable")
    sorted_labels = labels[order]
    same = sorted_labels[1:] == sorted_labels[:-1]
    del sorted_labels
    in_run, group_starts = _runs_of_equal(same)
    del same
    members = order[in_run]
    del order, in_run
    survivor = np.arange(n, dtype=np.int64)
    if len(members) == 0:
        return survivor
    group = np.repeat(np.arange(len(group_starts) - 1), np.diff(group_starts))
    ranked = np.lexsort((members, *[k[members] for k in reversed(keys)], group))
    members, group = members[ranked], group[ranked]
    first = np.flatnonzero(np.r_[True, group[1:] != group[:-1]])
    survivor[members] = np.repeat(members[first], np.diff(np.r_[first, len(members)]))
    return survivor


# Rounds of ``split_at_survivors``: each settles one ring of a chain around its survivor.
SPLIT_ROUNDS = 64


def split_at_survivors(
    labels: np.ndarray,
    survivor: np.ndarray,
    sort_keys: Sequence[np.ndarray],
    similar: Callable[[np.ndarray, np.ndarray], np.ndarray],
    max_rounds: int = SPLIT_ROUNDS,
) -> tuple[np.ndarray, np.ndarray]:
    """Clusters re-split so that every record removed as a duplicate is similar to the record it
    is removed for.

    A cluster is a connected component of verified links, so a chain of edits (A ~ B ~ C) is one
    cluster although A and C may share little. Here each member is checked against its
    cluster's survivor (``similar(survivor, member)``); the members that fail form a cluster of
    their own, which chooses its survivor by the same rule (``choose_survivors`` with
    ``sort_keys``), and so on, ring by ring. Members still unchecked after ``max_rounds`` keep
    themselves (kept, not removed for a record they may not resemble).

    Args:
        labels: (N,) int64 cluster label per record (a member's index), modified in place.
        survivor: (N,) ``choose_survivors(labels, sort_keys)``, modified in place.
        sort_keys: the keep rule's keys, as given to ``choose_survivors``.
        similar: ``similar(u, v)``: whether each pair reaches the threshold.

    Returns ``(labels, survivor)``: a cluster that was split is labelled by its survivor, the
    failed members by the smallest of them. Only a cluster's own records decide its split, so an
    engine that sees whole clusters at a time (Ray, by partition) splits them alike.
    """
    pending = np.flatnonzero(survivor != np.arange(len(survivor)))  # members not yet checked
    for _ in range(max_rounds):
        if not len(pending):
            break
        passed = similar(survivor[pending], pending)
        failed = pending[~passed]
        if not len(failed):
            pending = failed
            break
        # The failed members of each cluster, grouped by the cluster (by its label), in index order.
        failed = failed[np.lexsort((failed, labels[failed]))]
        old = labels[failed]
        starts = np.flatnonzero(np.r_[True, old[1:] != old[:-1]])
        first = np.repeat(failed[starts], np.diff(np.r_[starts, len(failed)]))
        # What stays is labelled by its survivor, so that no label is shared with the new cluster.
        stay = pending[passed]
        labels[stay] = survivor[stay]
        labels[survivor[pending]] = survivor[pending]
        labels[failed] = first
        failed.sort()
        chosen = choose_survivors(labels[failed], [np.asarray(k)[failed] for k in sort_keys])
        survivor[failed] = failed[chosen]
        pending = failed[chosen != np.arange(len(failed))]
    if len(pending):
        # The last clusters keep their survivors alone: labelled by them (their label, the
        # smallest failed member, may be one of the members let go), the members by themselves.
        labels[survivor[pending]] = survivor[pending]
        labels[pending] = pending
        survivor[pending] = pending
    return labels, survivor


# -- buckets --------------------------------------------------------------------------------


def _runs_of_equal(same: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Positions of a sorted array that belong to runs of >= 2 equal values, and run starts.

    ``same[p]`` says whether sorted values p and p + 1 are equal. Returns ``in_run`` (a mask of
    the positions) and ``starts`` (offsets into the positions ``in_run`` selects, one per run,
    plus their number). Masks, not index arrays: the runs can hold most of the values.
    """
    in_run = np.zeros(len(same) + 1, dtype=bool)
    in_run[1:] |= same
    in_run[:-1] |= same
    opens = in_run.copy()
    opens[1:] &= ~same
    starts = np.flatnonzero(opens[in_run])
    return in_run, np.append(starts, np.count_nonzero(in_run))


def _buckets(keys: np.ndarray, band: int, index_type: type = np.int64,
             left_out: np.ndarray | None = None) -> tuple[np.ndarray, np.ndarray]:
    """Records sharing a key in ``band``, grouped: (records, group_starts) as in _runs_of_equal.
    ``left_out``: optional bool mask of records in no bucket."""
    if len(keys) < 2:
        return np.zeros(0, index_type), np.zeros(1, np.int64)
    column = np.ascontiguousarray(keys[:, band])  # no copy where keys are stored band by band
    order = np.argsort(column)
    if left_out is not None:
        order = order[~left_out[order]]
    column = column[order]
    same = column[1:] == column[:-1]
    del column
    in_run, starts = _runs_of_equal(same)
    del same
    return order[in_run].astype(index_type, copy=False), starts


# -- linking --------------------------------------------------------------------------------


def bucket_links(
    records: np.ndarray,
    group: np.ndarray,
    similar: Callable[[np.ndarray, np.ndarray], np.ndarray] | None,
    max_rounds: int = 8,
) -> tuple[np.ndarray, np.ndarray]:
    """Verified links (representative, member) of LSH buckets.

    Args:
        records: record indices, the members of each bucket contiguous (any order inside).
        group: (len(records),) bucket of each record, equal values contiguous.
        similar: ``similar(u, v)`` says whether each pair reaches the threshold; None links
            every member to its representative without checking.
        max_rounds: the first round, then re-splits among the members that failed.

    Each round links every member to its bucket's smallest record; the members that failed
    form the next round's buckets (those of >= 2). Only the bucket decides: the same links
    whichever other buckets or bands were seen before.
    """
    links_u: list[np.ndarray] = []
    links_v: list[np.ndarray] = []
    for _ in range(max_rounds):
        if len(records) < 2:
            break
        starts = np.flatnonzero(np.r_[True, group[1:] != group[:-1]])
        sizes = np.diff(np.r_[starts, len(records)])
        rep = np.repeat(np.minimum.reduceat(records, starts), sizes)
        member = records != rep
        u, v, group = rep[member], records[member], group[member]
        if similar is None:
            links_u.append(u)
            links_v.append(v)
            break
        passed = similar(u, v)
        links_u.append(u[passed])
        links_v.append(v[passed])
        records, group = v[~passed], group[~passed]
        # Only buckets with >= 2 failed members have pairs left to try.
        if len(records) < 2:
            break
        starts = np.flatnonzero(np.r_[True, group[1:] != group[:-1]])
        sizes = np.diff(np.r_[starts, len(records)])
        keep = np.repeat(sizes >= 2, sizes)
        records, group = records[keep], group[keep]
    if not links_u:
        return np.zeros(0, np.int64), np.zeros(0, np.int64)
    return np.concatenate(links_u).astype(np.int64), np.concatenate(links_v).astype(np.int64)


def runs_of_equal(*sorted_keys: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """For rows sorted by ``sorted_keys``: (run start, run length) of every run of >= 2 equal rows."""
    n = len(sorted_keys[0])
    if n < 2:
        return np.zeros(0, np.int64), np.zeros(0, np.int64)
    same = np.ones(n - 1, dtype=bool)
    for k in sorted_keys:
        same &= k[1:] == k[:-1]
    boundary = np.flatnonzero(np.r_[True, ~same, True])
    starts, lengths = boundary[:-1], np.diff(boundary)
    multi = lengths >= 2
    return starts[multi], lengths[multi]


# Candidate pairs whose signature rows are gathered at once (at least; more on large corpora:
# about 4 B per record of buffer at 128 permutations, as fewer sweeps of the file fault fewer
# pages back in), and the span of rows of a memory-mapped signature file read before its pages
# are released (16 MB at 128 permutations).
GATHER_PAIRS = 16_384
GATHER_PAIRS_PER_RECORD = 1 / 256
SPAN_ROWS = 32_768


def similar_pairs(
    signatures: np.ndarray, u: np.ndarray, v: np.ndarray, threshold: float, chunk: int = VERIFY_CHUNK
) -> np.ndarray:
    """Whether the estimated Jaccard of each pair (u[i], v[i]) reaches ``threshold``."""
    out = np.empty(len(u), dtype=bool)
    num_perm = signatures.shape[1]
    # Rows of a memory-mapped file are gathered in file order first (``gather_sorted_rows``);
    # an array in memory is read directly (sorting the rows would only cost time).
    mapped = getattr(signatures, "_mmap", None) is not None
    at_once = max(GATHER_PAIRS, int(len(signatures) * GATHER_PAIRS_PER_RECORD)) if mapped else max(len(u), 1)
    for lo in range(0, len(u), at_once):
        pu, pv = u[lo : lo + at_once], v[lo : lo + at_once]
        if mapped:
            rows, where = np.unique(np.concatenate([pu, pv]), return_inverse=True)
            block = gather_sorted_rows(signatures, rows)
            where_u, where_v = where[: len(pu)], where[len(pu) :]
        else:
            block, where_u, where_v = signatures, pu, pv
        for sub in range(0, len(pu), chunk):
            a = block[where_u[sub : sub + chunk]]
            b = block[where_v[sub : sub + chunk]]
            out[lo + sub : lo + sub + len(a)] = np.count_nonzero(a == b, axis=1) / num_perm >= threshold
    return out


def gather_sorted_rows(signatures: np.ndarray, rows: np.ndarray) -> np.ndarray:
    """``signatures[rows]`` for sorted ``rows``. From a memory-mapped file, read in file order a
    span at a time, its pages released after each span: a scattered read would map most of the
    file (the kernel maps the cached pages around each one it faults in), so the process's RSS
    would hold the whole signature file while a band is verified."""
    m = getattr(signatures, "_mmap", None)
    if m is None or len(rows) == 0 or signatures.ndim != 2:
        return np.asarray(signatures[rows])
    out = np.empty((len(rows), signatures.shape[1]), dtype=signatures.dtype)
    release = _span_release(signatures, m)
    cuts = np.searchsorted(rows, np.arange(SPAN_ROWS, int(rows[-1]) + 1 + SPAN_ROWS, SPAN_ROWS))  # last > rows[-1]
    start = 0
    for end in np.unique(cuts).tolist():
        if end > start:
            out[start:end] = signatures[rows[start:end]]
            release(int(rows[start]), int(rows[end - 1]))
            start = end
    return out


def _span_release(array: np.ndarray, m: Any) -> Callable[[int, int], None]:
    """A function that unmaps the pages of rows ``first..last`` of a memory-mapped 2-D array
    (and what fault-around mapped next to them), not the whole map: releasing a whole map of
    gigabytes after every span costs more than the span's read."""
    import mmap

    base = np.frombuffer(m, dtype=np.uint8).__array_interface__["data"][0]
    origin = array.__array_interface__["data"][0] - base
    stride, size = array.strides[0], len(m)
    margin = 1 << 21  # fault-around maps whole folios around a fault: up to 2 MB either side
    page = mmap.PAGESIZE

    def release(first: int, last: int) -> None:
        lo = max(origin + first * stride - margin, 0) // page * page
        hi = min(origin + (last + 1) * stride + margin, size)
        _dont_need(m, lo, hi - lo)

    return release


class Forest:
    """Union-find over record indices, vectorised; every root is the smallest index of its set."""

    def __init__(self, n: int) -> None:
        self.parent = np.arange(n, dtype=np.int64)

    @classmethod
    def of_labels(cls, labels: np.ndarray) -> "Forest":
        """The forest whose sets are the groups of ``labels`` (int64, each label the smallest
        index of its group, as ``labels()`` gives them). Takes the array over: no copy."""
        forest = cls(0)
        forest.parent = labels
        return forest

    def find(self, x: np.ndarray) -> np.ndarray:
        root = self.parent[x]
        while True:
            up = self.parent[root]
            if np.array_equal(up, root):
                break
            root = up
        self.parent[x] = root  # path compression for the records asked about
        return root

    def union(self, root_u: np.ndarray, root_v: np.ndarray) -> None:
        """Merge the sets of each pair of roots (all merges of one call at once)."""
        apart = root_u != root_v  # pairs already in one set change nothing
        root_u, root_v = root_u[apart], root_v[apart]
        if len(root_u) == 0:
            return
        nodes, inverse = np.unique(np.concatenate([root_u, root_v]), return_inverse=True)
        e = len(root_u)
        # nodes is sorted, so a component's smallest position is its smallest index: the new root.
        self.parent[nodes] = nodes[component_roots(inverse[:e], inverse[e:], len(nodes))]

    def labels(self, chunk: int = 1 << 20) -> np.ndarray:
        """Root of every record: the forest's own parent array, flattened in place (pointer
        jumping a chunk at a time, so that no second array of the forest's size is made)."""
        parent = self.parent
        changed = True
        while changed:
            changed = False
            for lo in range(0, len(parent), chunk):
                part = parent[lo : lo + chunk]
                up = parent[part]
                if not np.array_equal(up, part):
                    part[:] = up  # a parent's parent is an ancestor too, whatever was written before
                    changed = True
        return parent


def component_roots(u: np.ndarray, v: np.ndarray, n: int) -> np.ndarray:
    """The smallest node of every node's connected component, in the undirected graph on nodes
    ``0..n-1`` with edges ``(u[i], v[i])``.

    Vectorised hooking and pointer jumping (numpy only: scipy's ``connected_components`` costs
    the process some 20 MB to import). Each round hooks the larger root of every edge whose ends
    are in different trees under the smallest root it meets, then flattens every tree to a star;
    roots only ever get smaller, so it ends when every edge lies inside one tree.
    """
    parent = np.arange(n, dtype=np.int64)
    u = np.asarray(u, dtype=np.int64)
    v = np.asarray(v, dtype=np.int64)
    while len(u):
        root_u, root_v = parent[u], parent[v]
        apart = root_u != root_v
        if not apart.any():
            break
        u, v, root_u, root_v = u[apart], v[apart], root_u[apart], root_v[apart]
        np.minimum.at(parent, np.maximum(root_u, root_v), np.minimum(root_u, root_v))
        while True:
            up = parent[parent]
            if np.array_equal(up, parent):
                break
            parent = up
    return parent
