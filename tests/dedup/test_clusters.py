"""near_duplicate_components and choose_survivors: verified links, no chains, bounded work, deterministic keeps."""

from __future__ import annotations

import itertools
from pathlib import Path
import time

import numpy as np
import pytest
from scipy.sparse import coo_matrix
from scipy.sparse.csgraph import connected_components

from synthfilter.dedup.clusters import (
    Forest, choose_survivors, component_roots, near_duplicate_components, split_at_survivors,
)
from synthfilter.dedup.lsh import band_keys
from synthfilter.dedup.minhash import MinHasher
from synthfilter.text.normalize import normalize_for_dedup

B, R, P = 9, 13, 128
RNG = np.random.default_rng(7)


def _random(n: int) -> np.ndarray:
    return RNG.integers(0, 1 << 32, size=(n, P), dtype=np.uint32)


def _partition(labels: np.ndarray) -> set[frozenset[int]]:
    groups: dict[int, set[int]] = {}
    for i, label in enumerate(labels.tolist()):
        groups.setdefault(label, set()).add(i)
    return {frozenset(g) for g in groups.values()}


def test_labels_are_smallest_index_and_singletons_keep_their_own():
    sigs = _random(6)
    sigs[4] = sigs[1]
    sigs[5] = sigs[1]
    sigs[5, 120] ^= 1  # outside every band: same keys, estimated Jaccard 127/128
    labels = near_duplicate_components(band_keys(sigs, B, R), sigs)
    assert labels.dtype == np.int64
    assert labels.tolist() == [0, 1, 2, 3, 1, 1]


def test_a_shared_band_alone_does_not_link_unrelated_records():
    sigs = _random(3)
    sigs[1, :R] = sigs[0, :R]  # share band 0 only: estimated Jaccard 13/128
    sigs[2] = sigs[1]
    sigs[2, :3] ^= 1  # near-duplicate of 1, and no band in common with 0
    keys = band_keys(sigs, B, R)
    assert near_duplicate_components(keys, sigs).tolist() == [0, 1, 1]
    assert near_duplicate_components(keys, verify=False).tolist() == [0, 0, 0]  # the chain verification stops


def _family_sharing_only_band0(base: np.ndarray, k: int, shift: int) -> np.ndarray:
    """k near-duplicates of base (Jaccard 120/128) that share band 0 with each other and no other band."""
    out = np.repeat(base[None, :], k, axis=0)
    for i in range(1, k):
        for band in range(1, B):
            out[i, band * R + (i + shift) % R] ^= 1 << i
    return out


def test_failed_bucket_members_get_a_second_representative():
    x = _family_sharing_only_band0(_random(1)[0], 3, 0)
    y = _family_sharing_only_band0(_random(1)[0], 3, 5)
    y[:, :R] = x[0, :R]  # every record of both families falls into one bucket of band 0
    sigs = np.vstack([x, y])
    keys = band_keys(sigs, B, R)
    assert len(np.unique(keys[:, 0])) == 1 and all(len(np.unique(keys[:, b])) == 6 for b in range(1, B))
    assert near_duplicate_components(keys, sigs).tolist() == [0, 0, 0, 3, 3, 3]
    # With a single round, y's members are only compared with x's representative.
    assert near_duplicate_components(keys, sigs, max_rounds=1).tolist() == [0, 0, 0, 3, 4, 5]


def test_a_huge_bucket_is_linked_to_representatives_not_all_pairs():
    copies = np.repeat(_random(1), 100_000, axis=0)  # all pairs would be 5e9 per band
    unrelated = _random(20_000)
    unrelated[:, :R] = unrelated[0, :R]  # a 20,000-member bucket of dissimilar records
    sigs = np.vstack([copies, unrelated])
    keys = band_keys(sigs, B, R)
    start = time.perf_counter()
    labels = near_duplicate_components(keys, sigs)
    assert time.perf_counter() - start < 20
    assert np.all(labels[:100_000] == 0)
    assert np.array_equal(labels[100_000:], np.arange(100_000, 120_000))


def _text_corpus(maker, n_base: int = 60):
    base = [maker.doc(150) for _ in range(n_base)]
    texts = list(base)
    for t in base:
        for _ in range(maker.rng.randint(0, 3)):
            texts.append(maker.edit(t, maker.rng.choice([0.005, 0.01, 0.02, 0.05, 0.3])))
    maker.rng.shuffle(texts)
    sigs = MinHasher().signatures([normalize_for_dedup(t) for t in texts])
    return sigs, band_keys(sigs, B, R)


def test_matches_brute_force_components_on_a_text_corpus(maker):
    sigs, keys = _text_corpus(maker)
    n = len(sigs)
    edges = [
        (i, j)
        for i, j in itertools.combinations(range(n), 2)
        if np.any(keys[i] == keys[j]) and np.count_nonzero(sigs[i] == sigs[j]) / P >= 0.8
    ]
    assert len(edges) > 20
    i, j = np.array(edges).T
    _, brute = connected_components(coo_matrix((np.ones(len(i)), (i, j)), shape=(n, n)), directed=False)
    assert _partition(near_duplicate_components(keys, sigs)) == _partition(brute)


def test_same_partition_whatever_the_record_order(maker):
    sigs, keys = _text_corpus(maker)
    perm = np.random.default_rng(3).permutation(len(sigs))
    labels = near_duplicate_components(keys, sigs)
    permuted = near_duplicate_components(keys[perm], sigs[perm])  # record k of it is perm[k]
    assert {frozenset(perm[list(g)].tolist()) for g in _partition(permuted)} == _partition(labels)


def test_memory_mapped_inputs(tmp_path, maker):
    sigs, keys = _text_corpus(maker)
    k = np.lib.format.open_memmap(tmp_path / "keys.npy", mode="w+", dtype=np.uint64, shape=keys.shape)
    s = np.lib.format.open_memmap(tmp_path / "sigs.npy", mode="w+", dtype=np.uint32, shape=sigs.shape)
    k[:], s[:] = keys, sigs
    k.flush(), s.flush()
    del k, s
    k = np.load(tmp_path / "keys.npy", mmap_mode="r")
    s = np.load(tmp_path / "sigs.npy", mmap_mode="r")
    assert np.array_equal(near_duplicate_components(k, s), near_duplicate_components(keys, sigs))


def test_argument_errors():
    keys = np.zeros((3, 2), dtype=np.uint64)
    with pytest.raises(ValueError, match="verify=True needs"):
        near_duplicate_components(keys)
    with pytest.raises(ValueError, match="shape"):
        near_duplicate_components(keys, np.zeros((2, 8), dtype=np.uint32))
    assert near_duplicate_components(np.zeros((0, 9), dtype=np.uint64), verify=False).tolist() == []


def test_survivor_follows_priority_then_input_order():
    labels = np.array([5, 5, 5, -1, 7, 7, 5])
    human_first = np.array([1, 0, 0, 0, 1, 1, 0])  # 0 = human provenance
    score = np.array([0.1, 0.9, 0.2, 0.5, 0.3, 0.3, 0.2])
    survivor = choose_survivors(labels, [human_first, score])
    assert survivor.tolist() == [2, 2, 2, 3, 4, 4, 2]  # group 5: humans 1, 2, 6 -> lowest score 2 (before 6)
    assert choose_survivors(labels).tolist() == [0, 0, 0, 3, 4, 4, 0]
    assert choose_survivors(labels, [score]).tolist() == [0, 0, 0, 3, 4, 4, 0]


def test_survivor_nan_loses_and_any_integer_labels_work():
    labels = np.array([2**40, 2**40, -3, -3])
    score = np.array([np.nan, 0.7, 0.1, np.nan])
    assert choose_survivors(labels, [score]).tolist() == [1, 1, 2, 2]
    assert choose_survivors(np.arange(4)).tolist() == [0, 1, 2, 3]
    with pytest.raises(ValueError):
        choose_survivors(labels, [np.zeros(3)])


def test_components_then_survivors_on_big_input_is_fast():
    n = 300_000
    sigs = _random(n // 2)
    sigs = np.vstack([sigs, sigs])  # every record has one exact copy
    keys = band_keys(sigs, B, R)
    start = time.perf_counter()
    labels = near_duplicate_components(keys, sigs)
    survivor = choose_survivors(labels, [np.zeros(n)])
    assert time.perf_counter() - start < 20
    assert np.array_equal(survivor, np.tile(np.arange(n // 2), 2))


@pytest.mark.parametrize("seed", range(6))
def test_component_roots_match_scipy_on_random_graphs(seed):
    # Chains, stars and sparse random edges, with repeated edges and self-loops.
    rng = np.random.default_rng(seed)
    n = int(rng.integers(1, 3000))
    e = int(rng.integers(0, 2 * n))
    u, v = rng.integers(0, n, e), rng.integers(0, n, e)
    chain = np.arange(min(n, 400) - 1)
    u, v = np.r_[u, chain[::-1]], np.r_[v, chain[::-1] + 1]  # a long path, listed back to front
    roots = component_roots(u, v, n)
    _, comp = connected_components(coo_matrix((np.ones(len(u)), (u, v)), shape=(n, n)), directed=False)
    assert _partition(roots) == _partition(comp)
    smallest = np.full(comp.max() + 1, n)
    np.minimum.at(smallest, comp, np.arange(n))
    assert np.array_equal(roots, smallest[comp])  # each node's root is its component's smallest node


@pytest.mark.parametrize("chunk", [1, 7, 1 << 20])
def test_forest_labels_flatten_in_place_a_chunk_at_a_time(chunk):
    # Long chains and random trees, every parent no larger than its child (as the forest keeps them).
    rng = np.random.default_rng(chunk)
    n = 2000
    parent = np.minimum(np.arange(n), rng.integers(0, n, n))
    parent[1:300] = np.arange(300 - 1)  # one path of 300 records
    want = parent.copy()
    while not np.array_equal(want[want], want):
        want = want[want]
    forest = Forest.of_labels(parent.copy())
    assert np.array_equal(forest.labels(chunk=chunk), want)
    assert forest.parent is forest.labels()


def _rss_file_kb() -> int:
    with open("/proc/self/status") as f:
        return next(int(line.split()[1]) for line in f if line.startswith("RssFile:"))


@pytest.mark.skipif(not Path("/proc/self/status").exists(), reason="reads RssFile from /proc (Linux)")
def test_release_mapped_pages_unmaps_what_was_read_and_keeps_the_data(tmp_path):
    from synthfilter.dedup.clusters import release_mapped_pages

    data = np.arange(16 * 2**20, dtype=np.uint32).reshape(-1, 128)  # 64 MiB
    data.tofile(tmp_path / "sigs.u32")
    sigs = np.memmap(tmp_path / "sigs.u32", dtype=np.uint32, mode="r", shape=data.shape)
    base = _rss_file_kb()
    assert int(sigs[:, 0].astype(np.int64).sum()) == int(data[:, 0].astype(np.int64).sum())  # touches every page
    mapped = _rss_file_kb() - base
    assert mapped > 48 * 1024  # most of the 64 MiB is now mapped into the process
    release_mapped_pages(sigs.T, np.zeros(3))  # a view of the map, and an array that is none
    assert _rss_file_kb() - base < mapped / 4
    assert np.array_equal(sigs[::4097], data[::4097])  # read back from the page cache, unchanged


@pytest.mark.skipif(not Path("/proc/self/status").exists(), reason="reads RssFile from /proc (Linux)")
def test_gather_sorted_rows_reads_a_span_at_a_time(tmp_path):
    from synthfilter.dedup.clusters import SPAN_ROWS, gather_sorted_rows

    data = np.arange(16 * 2**20, dtype=np.uint32).reshape(-1, 128)  # 64 MiB, 131,072 rows
    data.tofile(tmp_path / "sigs.u32")
    sigs = np.memmap(tmp_path / "sigs.u32", dtype=np.uint32, mode="r", shape=data.shape)
    rows = np.sort(np.random.default_rng(5).choice(len(data), 3000, replace=False))  # about one a 64 KB
    base = _rss_file_kb()
    got = gather_sorted_rows(sigs, rows)
    assert np.array_equal(got, data[rows]) and got.flags.owndata
    # A plain fancy index would leave most of the 64 MiB mapped; at most the last span remains.
    assert _rss_file_kb() - base < SPAN_ROWS * 128 * 4 // 1024 + 1024
    assert np.array_equal(gather_sorted_rows(data, rows), data[rows])  # an in-memory array
    assert gather_sorted_rows(sigs, rows[:0]).shape == (0, 128)
    for edge in ([0], [0, 0], [SPAN_ROWS - 1, SPAN_ROWS], [len(data) - 1]):  # first row, span ends, last row
        assert np.array_equal(gather_sorted_rows(sigs, np.array(edge)), data[edge])
    np.save(tmp_path / "sigs.npy", data)  # a header before the rows: releases are offset by it
    npy = np.load(tmp_path / "sigs.npy", mmap_mode="r")
    base = _rss_file_kb()
    assert np.array_equal(gather_sorted_rows(npy, rows), data[rows])
    assert _rss_file_kb() - base < SPAN_ROWS * 128 * 4 // 1024 + 1024


def _first_copies(sigs: np.ndarray) -> np.ndarray:
    """Smallest index of each record's identical signature (as exact-hash labels give it)."""
    _, first, inverse = np.unique(sigs, axis=0, return_index=True, return_inverse=True)
    return first[inverse.ravel()].astype(np.int64)


def test_leaving_out_later_copies_gives_the_same_labels(maker):
    sigs, _ = _text_corpus(maker)
    # Copies of some records anywhere in the order (before or after the original), and a
    # bucket in band 0 that mixes unrelated records, families and copies, so that failed members
    # get second and later representatives.
    rng = np.random.default_rng(11)
    picks = rng.choice(len(sigs), 40, replace=True)
    x = _family_sharing_only_band0(_random(1)[0], 4, 0)
    y = _family_sharing_only_band0(_random(1)[0], 4, 5)
    y[:, :R] = x[0, :R]
    unrelated = _random(12)
    unrelated[:, :R] = x[0, :R]
    sigs = np.vstack([sigs, sigs[picks], x, y, y[1:3], unrelated, x[:2]])
    sigs = sigs[rng.permutation(len(sigs))]
    keys = band_keys(sigs, B, R)
    copy_of = _first_copies(sigs)
    assert (copy_of != np.arange(len(sigs))).sum() >= 40
    for verify in (True, False):
        s = sigs if verify else None
        want = near_duplicate_components(keys, s, verify=verify)
        got = near_duplicate_components(keys, s, verify=verify, copy_of=copy_of)
        assert np.array_equal(got, want)
    with pytest.raises(ValueError, match="copy_of"):
        near_duplicate_components(keys, sigs, copy_of=copy_of[:-1])


def _split_reference(labels, keys, similar):
    """The rule in plain Python: a cluster keeps its survivor and the members similar to it; the
    rest form a cluster of their own, settled the same way."""
    out_survivor = {}
    clusters = {}
    for i, lab in enumerate(labels):
        clusters.setdefault(int(lab), []).append(i)
    todo = list(clusters.values())
    while todo:
        members = sorted(todo.pop())
        best = min(members, key=lambda i: (*[k[i] for k in keys], i))
        out_survivor[best] = best
        rest = []
        for i in members:
            if i != best:
                (rest if not similar(best, i) else []).append(i)
                if similar(best, i):
                    out_survivor[i] = best
        if rest:
            todo.append(rest)
    return np.array([out_survivor[i] for i in range(len(labels))])


@pytest.mark.parametrize("seed", range(5))
def test_split_at_survivors_removes_a_record_only_for_one_it_resembles(seed: int) -> None:
    rng = np.random.default_rng(seed)
    n = 300
    # Records on a line: i and j are similar within a reach of 3; clusters are runs of the line
    # (chains), some with a preferred record (a lower key) in the middle.
    pos = np.cumsum(rng.integers(1, 3, n))
    labels = np.zeros(n, np.int64)
    for i in range(1, n):
        labels[i] = labels[i - 1] if pos[i] - pos[i - 1] <= 1 and rng.random() > 0.05 else i
    key = rng.integers(0, 3, n).astype(np.int8)

    def similar(u, v):
        return np.abs(pos[np.asarray(u)] - pos[np.asarray(v)]) <= 3

    survivor = choose_survivors(labels, [key])
    got_labels, got = split_at_survivors(labels.copy(), survivor.copy(), [key], similar)
    want = _split_reference(labels, [key], lambda a, b: bool(similar(np.array([a]), np.array([b]))[0]))
    assert np.array_equal(got, want)
    removed = np.flatnonzero(got != np.arange(n))
    assert len(removed) and similar(got[removed], removed).all()
    # Labels name the new clusters: records share a label exactly when they share a survivor.
    pairs = {(int(a), int(b)) for a, b in zip(got_labels, got)}
    assert len({a for a, _ in pairs}) == len(pairs) == len({b for _, b in pairs})
    # A chain longer than the reach is split where the plain components kept one survivor.
    assert len(np.unique(got)) > len(np.unique(survivor))


def test_split_at_survivors_leaves_unchecked_members_kept_after_the_last_round() -> None:
    n = 12
    labels = np.zeros(n, np.int64)
    survivor = choose_survivors(labels)
    # Only neighbours are similar: every round settles two records, one round is allowed.
    got_labels, got = split_at_survivors(labels, survivor, [], lambda u, v: np.abs(u - v) <= 1, max_rounds=1)
    assert got[:2].tolist() == [0, 0]
    assert got[2:].tolist() == list(range(2, n))
    # With a keep rule that picks another survivor than the smallest failed member, whose index
    # labels the last cluster: still one survivor per label (the report's cluster sizes).
    n = 200
    labels, key = np.zeros(n, np.int64), -np.arange(n, dtype=np.float64)  # later records win
    got_labels, got = split_at_survivors(labels, choose_survivors(labels, [key]), [key],
                                         lambda u, v: np.abs(u - v) <= 1)
    pairs = {(int(a), int(b)) for a, b in zip(got_labels, got)}
    assert len({a for a, _ in pairs}) == len(pairs) == len({b for _, b in pairs})
    removed = np.flatnonzero(got != np.arange(n))
    assert len(removed) and (np.abs(got[removed] - removed) <= 1).all()
