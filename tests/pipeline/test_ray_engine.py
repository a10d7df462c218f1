"""The Ray Data engine: the same decisions and outputs as the local engine, on a real local Ray
cluster (2 CPUs): parity (the decide stage in one task and as shuffles), remote URIs and joining a cluster from the CLI, a worker killed
mid-task, an interrupted run resumed (also when killed in the middle of the decide stage), hard
duplicate graphs with the driver held to a small budget, ``synthfilter.ray.filter_dataset``;
and the decide stage's per-partition functions against the local functions they must match,
without Ray."""

from __future__ import annotations

import json
import os
import shutil
import signal
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

import numpy as np
import orjson
import pyarrow as pa
import pyarrow.parquet as pq
import pytest

from helpers import FifoFeeder, make_records, read_jsonl, write_jsonl
from synthfilter.config import Config
from synthfilter.dedup.clusters import near_duplicate_components
from synthfilter.dedup.lsh import band_keys
from synthfilter.pipeline import ray_engine as re
from synthfilter.pipeline.run import Progress, run_pipeline
from synthfilter.ratio import _Bins, estimate_prevalence, estimate_prevalence_from_bins

PROVENANCE = {"provenance_field": "meta.who", "provenance_map": {"human": "human", "gpt-*": "machine"}}
# Near and exact dedup, provenance-driven target ratio, bad records quarantined, every output
# annotated; no detector (the shipped model is not needed to test the engine).
CONFIG_A: dict[str, Any] = {
    "detector": {"enabled": False}, "quiet": True, "workers": 2, "on_error": "quarantine", "annotate": True,
    "ratio": {**PROVENANCE, "target_ratio": 0.2, "strategy": "uniform"},
}
# CONFIG_A as a config file, for runs through the CLI.
CONFIG_A_TOML = (
    'on_error = "quarantine"\nworkers = 2\nannotate = true\n[detector]\nenabled = false\n'
    '[ratio]\ntarget_ratio = 0.2\nstrategy = "uniform"\nprovenance_field = "meta.who"\n'
    'provenance_map = { "human" = "human", "gpt-*" = "machine" }\n'
)
# The estimate without a target (the path with no per-record array on the driver); candidate
# pairs verified at dedup.verify_threshold, above the band threshold.
CONFIG_B: dict[str, Any] = {
    "detector": {"enabled": False}, "quiet": True, "workers": 2, "on_error": "quarantine", "ratio": PROVENANCE,
    "dedup": {"verify_threshold": 0.9},
}


# -- pure: the decide stage's per-partition functions (no Ray) ---------------------------------------


def _partitions(rows: dict[str, np.ndarray], fn: Any, parts: int = 3, **kwargs: Any) -> dict[str, np.ndarray]:
    """``fn`` over each partition of ``rows`` (column ``part``), outputs concatenated: a shuffle."""
    outs = [fn({k: v[rows["part"] == p] for k, v in rows.items()}, **kwargs) for p in np.unique(rows["part"])]
    outs = [o for o in outs if o is not None]
    return {k: np.concatenate([o[k] for o in outs]) for k in outs[0]}


def _components_like_the_cluster(bands: np.ndarray, sigs: np.ndarray, threshold: float, verify: bool) -> np.ndarray:
    """Band rows -> shared keys -> verified bucket links -> star contraction, through the
    engine's own per-partition functions, each "shuffle" over 3 partitions."""
    from synthfilter.pipeline.ray import components as cc
    from synthfilter.pipeline.ray import decide as d

    n, b = bands.shape
    chunk = {"gidx": np.arange(n, dtype=np.int64), "status": np.zeros(n, np.int8), "bands": bands,
             "hash_hi": np.arange(n, dtype=np.uint64), "hash_lo": np.zeros(n, np.uint64)}
    found = _partitions(d._emit_keys(chunk, exact=True, n_bands=b, parts=3), d._find_groups, verify=verify)
    edges = [d._edges_of(found)]
    if verify:
        members = d._members_of(found)
        with_sigs = d._by_bucket({**members, "sigs": sigs[members["gidx"]]}, parts=3)
        edges.append(_partitions(with_sigs, d._verify_buckets, threshold=threshold))
    graph = {k: np.concatenate([e[k] for e in edges]) for k in ("u", "v")}
    labels = np.arange(n)
    if not len(graph["u"]):
        return labels
    for _ in range(cc.MAX_ROUNDS):
        star = _partitions(cc._by_node(graph, parts=3, both=True), cc._large_star)
        if star["u"][star["kind"] == cc.STAT].sum() == 0:
            break
        graph = _partitions(cc._by_node(star, parts=3, both=False), cc._small_star)
    got = cc._labels(star)
    labels[got["gidx"]] = got["label"]
    return labels


@pytest.mark.parametrize("seed", [0, 1, 2])
@pytest.mark.parametrize("verify", [True, False])
def test_cluster_components_are_the_local_clusters(seed: int, verify: bool) -> None:
    # Signatures over a 3-letter alphabet with 2-row bands: huge buckets, most candidate pairs
    # fail verification, so the re-split rounds matter; planted copies make chains.
    rng = np.random.default_rng(seed)
    n, num_perm, b, r = 500, 16, 8, 2
    sigs = rng.integers(0, 3, size=(n, num_perm), dtype=np.uint32)
    for _ in range(60):  # planted near-duplicates: copies with a few positions changed
        src, dst = rng.integers(0, n, size=2)
        sigs[dst] = sigs[src]
        flip = rng.choice(num_perm, size=rng.integers(0, 6), replace=False)
        sigs[dst, flip] = rng.integers(0, 3, size=len(flip))
    bands = band_keys(sigs, b, r)
    want = near_duplicate_components(bands, signatures=sigs, threshold=0.6, verify=verify)
    np.testing.assert_array_equal(_components_like_the_cluster(bands, sigs, 0.6, verify), want)


def test_star_contraction_finds_long_chains() -> None:
    from synthfilter.pipeline.ray import components as cc

    rng = np.random.default_rng(4)
    order = rng.permutation(2000)
    graph = {"u": order[:-1].astype(np.int64), "v": order[1:].astype(np.int64)}  # one path through all
    for rounds in range(1, cc.MAX_ROUNDS + 1):
        star = _partitions(cc._by_node(graph, parts=4, both=True), cc._large_star)
        if star["u"][star["kind"] == cc.STAT].sum() == 0:
            break
        graph = _partitions(cc._by_node(star, parts=4, both=False), cc._small_star)
    got = cc._labels(star)
    assert sorted(got["gidx"].tolist()) == list(range(2000)) and set(got["label"].tolist()) == {0}
    assert rounds <= 16


@pytest.mark.parametrize("distinct", [300, 20_000])
def test_score_bins_from_partitions_are_the_estimators_bins(distinct: int) -> None:
    from synthfilter.ratio import MAX_BINS, SCORE_CLIP, bins_from_sums, logit_bin_edges, logit_bin_of, logit_bin_sums

    rng = np.random.default_rng(5)
    pool = rng.beta(0.6, 0.8, size=distinct).astype(np.float32)
    scores = rng.choice(pool, size=60_000)
    local = _Bins.build(scores)
    values, counts = np.unique(np.clip(scores.astype(np.float64), SCORE_CLIP, 1 - SCORE_CLIP), return_counts=True)
    if len(values) <= MAX_BINS:
        bin_scores, bin_counts = values, counts
    else:
        # As on the cluster: each partition holds whole bins, in no particular order.
        edges = logit_bin_edges(values.min(), values.max())
        b, _ = logit_bin_of(values, edges)
        part = b % 7
        pieces = [logit_bin_sums(values[part == p][::-1], counts[part == p][::-1], edges) for p in range(7)]
        bin_scores, bin_counts = bins_from_sums(*(np.concatenate(x) for x in zip(*pieces)))
    np.testing.assert_array_equal(bin_scores, local.score)
    np.testing.assert_array_equal(bin_counts, local.counts)
    prov = np.zeros(len(scores), np.int8)
    prov[:500], prov[500:700] = 1, 2
    s = np.where(prov == 0, scores, np.nan)
    card = {"train_prior": 0.4}
    want = estimate_prevalence(s, prov, card, n_boot=200, seed=3)
    keep = prov == 0
    local_kept = _Bins.build(scores[keep])
    got = estimate_prevalence_from_bins(local_kept.score, local_kept.counts, known_human=500, known_machine=200,
                                        card=card, n_boot=200, seed=3)
    assert got == want


def test_run_length_array_slices() -> None:
    arr = re.RunLengthArray(np.array([0.5, 0.1, 0.9]), np.array([3, 0, 4]), np.float32)
    full = np.repeat(np.array([0.5, 0.1, 0.9], np.float32), [3, 0, 4])
    assert len(arr) == 7
    for lo in range(8):
        for hi in range(lo, 9):
            np.testing.assert_array_equal(arr[lo:hi], full[lo:hi])


def test_score_tasks_build_one_scorer_per_process_and_forget_it(tmp_path: Path) -> None:
    import pickle

    from synthfilter.pipeline.ray import score as score_mod
    from synthfilter.pipeline.ray.storage import discover_sources

    src = tmp_path / "in"
    write_jsonl(src / "a.jsonl", make_records(30, seed=3))
    write_jsonl(src / "b.jsonl", make_records(30, seed=4))
    sources, _ = discover_sources([src])
    cfg = Config.from_dict({"detector": {"enabled": False}})
    work = tmp_path / "work"
    built: list[Any] = []
    original = score_mod.ScoreShards.__init__

    def counting(self: Any, *args: Any, **kwargs: Any) -> None:
        built.append(self)
        original(self, *args, **kwargs)

    score_mod.forget_scorers()
    try:
        score_mod.ScoreShards.__init__ = counting  # type: ignore[method-assign]
        for s in sources:  # two tasks in one process: one scorer
            out = score_mod.score_shards({"source": np.array([pickle.dumps(s)], dtype=object)}, cfg, str(work), (14, 9))
            rel, meta = score_mod.result_of(out["meta"][0])
            assert rel == s.shard.rel and meta["records"] == 30
        assert len(built) == 1
        other = Config.from_dict({"detector": {"enabled": False}, "seed": 7})
        score_mod.score_shards({"source": np.array([pickle.dumps(sources[0])], dtype=object)}, other, str(work), (14, 9))
        assert len(built) == 2 and len(score_mod._SCORERS) == 1  # another run's config: a new one, the old dropped
        score_mod.forget_scorers()
        assert not score_mod._SCORERS
    finally:
        score_mod.ScoreShards.__init__ = original  # type: ignore[method-assign]
        score_mod.forget_scorers()


@pytest.mark.parametrize("out", ["s3://bucket/filtered/", "file:///tmp/filtered", "gs://b/a//b"])
def test_cli_out_uri_reaches_the_ray_engine_unmangled(out: str, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """``run --out URI --engine ray`` hands the engine the URI as typed (``pathlib.Path`` would
    make ``s3://bucket`` ``s3:/bucket``); no Ray is started: the engine is replaced."""
    from synthfilter.cli import main
    from synthfilter.pipeline.run import RunResult

    seen: list[Any] = []

    def fake_engine(inputs: Any, out: Any, cfg: Config, progress: Any = None) -> RunResult:
        seen.append(out)
        return RunResult(report={}, manifest={}, out=out)

    monkeypatch.setattr(re, "run_pipeline_ray", fake_engine)
    src = write_jsonl(tmp_path / "in.jsonl", make_records(3))
    with pytest.raises(SystemExit) as exc:
        main(["run", str(src), "--out", out, "--engine", "ray", "--no-detector", "--quiet"])
    assert exc.value.code == 0
    assert seen == [out] and isinstance(seen[0], str)
    store = re.Store(seen[0])
    assert store.local is None and store.root == out.rstrip("/")


def test_missing_ray_says_how_to_install(tmp_path: Path) -> None:
    write_jsonl(tmp_path / "in.jsonl", make_records(3))
    code = ("import sys; sys.modules['ray'] = None; from synthfilter.cli import main; "
            f"sys.argv = ['synthfilter', 'run', {str(tmp_path / 'in.jsonl')!r}, '--out', {str(tmp_path / 'o')!r}, "
            "'--engine', 'ray', '--no-detector']; main()")
    proc = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120)
    assert proc.returncode == 2
    assert 'pip install "synthfilter[ray]"' in proc.stderr
    assert "Traceback" not in proc.stderr


def test_an_address_nothing_answers_at_is_one_line_and_leaves_nothing(tmp_path: Path) -> None:
    # ray.init retried such an address for as long as it ran (10 minutes and more), deaf to SIGTERM.
    import socket

    with socket.socket() as sock:  # a port nothing listens on
        sock.bind(("127.0.0.1", 0))
        port = sock.getsockname()[1]
    write_jsonl(tmp_path / "in.jsonl", make_records(3))
    started = time.monotonic()
    proc = subprocess.run([sys.executable, "-m", "synthfilter", "run", str(tmp_path / "in.jsonl"), "--out",
                           str(tmp_path / "o"), "--engine", "ray", "--ray-address", f"127.0.0.1:{port}",
                           "--no-detector"], capture_output=True, text=True, timeout=120)
    assert proc.returncode == 2 and time.monotonic() - started < 60
    (line,) = proc.stderr.strip().splitlines()
    assert f"could not join Ray at 127.0.0.1:{port}: nothing answers there" in line
    assert not (tmp_path / "o").exists()  # the corrected command is not refused as 'not empty'


# -- the corpus and the local engine's answers ---------------------------------------------------------


def _corpus(root: Path) -> Path:
    """Four shards, every format: exact duplicates (in and across shards, under normalisation),
    near duplicates (one word changed), known provenance, and malformed records."""
    rows = []
    for r in make_records(240, seed=11, dup_every=6):
        rows.append({**r, "meta": {"who": "human" if r["label"] == "human" else "gpt-4"}})
    near = []
    for r in rows[::6]:
        words = r["text"].split()
        words[len(words) // 2] = "zebra"
        near.append({"id": f"near-{r['id']}", "text": " ".join(words), "meta": {"who": "gpt-4o"}})
    copies = [{"id": f"copy-{r['id']}", "text": r["text"].upper(), "meta": {"who": "human"}} for r in rows[3:12]]
    src = root / "in"
    write_jsonl(src / "a.jsonl", rows[:80] + near[:12] + [b"{not json", {"id": "no-text", "meta": {}}])
    write_jsonl(src / "b.jsonl.gz", rows[80:160] + copies[:4], "gz")
    write_jsonl(src / "sub" / "c.jsonl.zst", rows[160:] + near[12:], "zst")
    (src / "d").mkdir(parents=True)
    pq.write_table(pa.Table.from_pylist(copies[4:] + near[:5]), src / "d" / "e.parquet")
    return src


def _records(out: Path) -> dict[str, Any]:
    """Every output file's records (sorted) and every record's decision."""
    files: dict[str, list[bytes]] = {}
    decisions: dict[str, Any] = {}
    for f in sorted(p for p in out.rglob("*") if p.is_file() and p.parts[-2] != "_synthfilter"):
        rel = f.relative_to(out).as_posix()
        if not rel.startswith(("kept/", "rejected/")):
            continue
        if f.suffix == ".parquet":
            lines = [orjson.dumps(r, option=orjson.OPT_SORT_KEYS) for r in pq.read_table(f).to_pylist()]
        else:
            lines = read_jsonl(f)
        files[rel] = sorted(lines)
        for line in lines:
            rec = orjson.loads(line)
            sf = rec.get("synthfilter") or {}
            key = rec.get("id") or (sf.get("source") or {}).get("line") or sf.get("error")
            decisions[str(key)] = (rel.split("/")[0], sf.get("reason"), sf.get("duplicate_of"), sf.get("p_machine"))
    return {"files": files, "decisions": decisions}


def _comparable(result_dir: Path) -> dict[str, Any]:
    report = json.loads((result_dir / "report.json").read_text())
    manifest = json.loads((result_dir / "manifest.json").read_text())
    report.pop("timing")
    for k in ("started", "ended"):
        manifest.pop(k)
    for k in ("engine", "ray_address"):
        manifest["config"].pop(k)
    for entry in manifest["inputs"]:
        entry["path"] = entry["rel"]
    return {"report": report, "manifest": manifest, **_records(result_dir)}


@pytest.fixture(scope="module")
def corpus(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Any]:
    root = tmp_path_factory.mktemp("ray-corpus")
    src = _corpus(root)
    answers = {}
    for name, cfg in (("A", CONFIG_A), ("B", CONFIG_B)):
        out = root / f"local-{name}"
        run_pipeline([str(src)], out, Config.from_dict(cfg))
        answers[name] = _comparable(out)
    return {"root": root, "src": src, "answers": answers}


@pytest.fixture(scope="module")
def ray_cluster() -> Any:
    ray = pytest.importorskip("ray")
    ray.init(address="local", num_cpus=2, include_dashboard=False, logging_level="ERROR")
    try:
        yield ray.get_runtime_context().gcs_address
    finally:
        ray.shutdown()


def _assert_same(got: dict[str, Any], want: dict[str, Any]) -> None:
    assert got["decisions"] == want["decisions"]
    assert got["files"] == want["files"]
    assert got["report"] == want["report"]
    assert got["manifest"] == want["manifest"]


# -- Ray -------------------------------------------------------------------------------------------


def _decide_path(path: str, monkeypatch: pytest.MonkeyPatch) -> None:
    """Make the decide stage take ``path`` ("one task" or "shuffles") and fail if it takes the other."""
    from synthfilter.pipeline.ray import decide, one_task

    def refused(*args: Any, **kwargs: Any) -> Any:
        raise AssertionError(f"the decide stage left the {path!r} path")

    if path == "shuffles":
        monkeypatch.setenv(one_task.ONE_TASK_ENV, "0")
        monkeypatch.setattr(one_task, "decide_in_one_task", refused)
    else:
        monkeypatch.delenv(one_task.ONE_TASK_ENV, raising=False)
        monkeypatch.setattr(decide, "duplicate_rows", refused)


def _same_on_decide_paths(src: Path, out_prefix: Path, cfg: dict[str, Any], want: dict[str, Any],
                          monkeypatch: pytest.MonkeyPatch, paths: tuple[str, ...] = ("one task", "shuffles")) -> None:
    """The Ray run of ``cfg`` on ``src`` gives ``want`` with the decide stage on each of ``paths``."""
    for path in paths:
        out = out_prefix.with_name(f"{out_prefix.name}-{path.replace(' ', '-')}")
        with monkeypatch.context() as m:
            _decide_path(path, m)
            re.run_pipeline_ray([str(src)], out, Config.from_dict({**cfg, "engine": "ray"}))
        _assert_same(_comparable(out), want)


@pytest.mark.parametrize("path", ["one task", "shuffles"])
def test_same_decisions_and_records_as_the_local_engine(corpus: dict[str, Any], ray_cluster: str, path: str,
                                                        monkeypatch: pytest.MonkeyPatch) -> None:
    _decide_path(path, monkeypatch)
    out = corpus["root"] / f"ray-A-{path.replace(' ', '-')}"
    res = re.run_pipeline_ray([str(corpus["src"])], out, Config.from_dict({**CONFIG_A, "engine": "ray"}))
    got = _comparable(out)
    want = corpus["answers"]["A"]
    # The corpus exercises every rule: both kinds of duplicates, malformed, downsampling.
    by_reason = want["report"]["output"]["rejected_by_reason"]
    assert all(by_reason[r] > 0 for r in ("malformed", "exact_duplicate", "near_duplicate", "synthetic_downsampled"))
    _assert_same(got, want)
    # Byte-identical outputs, not only the same records.
    for f in (out / "kept").rglob("*"):
        if f.is_file():
            assert f.read_bytes() == (corpus["root"] / "local-A" / "kept" / f.relative_to(out / "kept")).read_bytes()
    assert (out / "report.html").exists() and not (out / "_synthfilter").exists()
    assert res.report["diversity"] == want["report"]["diversity"]


def test_cli_joins_a_running_cluster_and_reads_and_writes_uris(corpus: dict[str, Any], ray_cluster: str) -> None:
    out = corpus["root"] / "ray-B-uri"
    config = corpus["root"] / "b.toml"
    config.write_text(
        'on_error = "quarantine"\nworkers = 2\n[detector]\nenabled = false\n'
        '[ratio]\nprovenance_field = "meta.who"\nprovenance_map = { "human" = "human", "gpt-*" = "machine" }\n'
        '[dedup]\nverify_threshold = 0.9\n'
    )
    proc = subprocess.run(
        [sys.executable, "-m", "synthfilter", "run", corpus["src"].resolve().as_uri(), "--out", out.resolve().as_uri(),
         "--config", str(config), "--engine", "ray", "--ray-address", ray_cluster, "--quiet"],
        capture_output=True, text=True, timeout=300,
    )
    assert proc.returncode == 0, proc.stderr
    got = _comparable(out)
    want = corpus["answers"]["B"]
    assert got["report"]["input"]["records"] == want["report"]["input"]["records"]
    _assert_same(got, want)
    manifest = json.loads((out / "manifest.json").read_text())
    assert manifest["inputs"][0]["path"].startswith("file:///")


def _with_fifo(corpus: dict[str, Any], name: str, shard: str) -> tuple[Path, Path, bytes]:
    """A copy of the corpus' input in which ``shard`` is a named pipe."""
    src = corpus["root"] / name
    for f in corpus["src"].rglob("*"):
        if f.is_file():
            dest = src / f.relative_to(corpus["src"])
            dest.parent.mkdir(parents=True, exist_ok=True)
            if f.relative_to(corpus["src"]).as_posix() != shard:
                dest.write_bytes(f.read_bytes())
    fifo = src / shard
    os.mkfifo(fifo)
    return src, fifo, (corpus["src"] / shard).read_bytes()


def test_stage_tasks_start_on_every_cpu_at_once_and_shuffles_keep_their_reservation(ray_cluster: str) -> None:
    """The score and write stages' map (``items_of``) runs as many tasks as there are CPUs from
    its first moment; with Ray Data's resource reservation the second task waited about 1 s for
    the cluster's CPUs to be granted. Datasets made otherwise (the shuffles) keep the reservation."""
    import ray

    from synthfilter.io.shards import Shard
    from synthfilter.pipeline.ray.score import items_of
    from synthfilter.pipeline.ray.storage import ShardSource

    def nap(batch: dict[str, Any], seconds: float) -> dict[str, Any]:  # local: pickled by value for the workers
        start = time.time()
        time.sleep(seconds)
        return {"start": np.array([start]), "pid": np.array([os.getpid()])}

    sources = [ShardSource(Shard(Path(f"/nowhere/{i}.jsonl"), f"{i}.jsonl", "jsonl", None), None, 0, 0) for i in range(2)]
    ray.data.range(2).materialize()  # a first execution starts its Ray Data machinery more slowly
    ds = items_of(sources, 2).map_batches(nap, batch_size=None, fn_kwargs={"seconds": 1.5})
    assert ds.context.op_resource_reservation_enabled is False
    got = ds.take_all()
    starts = sorted(r["start"] for r in got)
    assert len({r["pid"] for r in got}) == 2
    assert starts[1] - starts[0] < 0.8, starts  # here: about 0.45 s, and 1.0 s with the reservation
    assert ray.data.range(4).context.op_resource_reservation_enabled is True


def test_a_worker_killed_mid_task_is_retried_without_duplicating_records(corpus: dict[str, Any], ray_cluster: str) -> None:
    src, fifo, data = _with_fifo(corpus, "in-kill", "sub/c.jsonl.zst")
    # Open 0: the score task; 1: its retry; 2: the write task; 3: its retry.
    feeder = FifoFeeder(fifo, data, kill_on=(0, 2))
    feeder.start()
    try:
        out = corpus["root"] / "ray-kill"
        re.run_pipeline_ray([str(src)], out, Config.from_dict({**CONFIG_A, "engine": "ray"}))
    finally:
        feeder.stop.set()
    assert len(feeder.killed) == 2 and feeder.opens == 4
    got = _comparable(out)
    want = corpus["answers"]["A"]
    assert got["files"] == want["files"] and got["decisions"] == want["decisions"]
    assert not [p for p in out.rglob("*") if ".tmp-" in p.name]


class _Stages(Progress):
    def __init__(self) -> None:
        super().__init__(quiet=True)
        self.todo: dict[str, int] = {}

    def stage(self, name: str, total: int) -> None:
        self.todo[name] = total
        super().stage(name, total)


def test_an_interrupted_run_resumes_where_it_stopped(corpus: dict[str, Any], ray_cluster: str) -> None:
    src, fifo, data = _with_fifo(corpus, "in-resume", "sub/c.jsonl.zst")
    # The pipe serves the score read, then hangs the write read until the run is killed.
    feeder = FifoFeeder(fifo, data, hold_after=0)
    feeder.start()
    out = corpus["root"] / "ray-resume"
    config = corpus["root"] / "a.toml"
    config.write_text(CONFIG_A_TOML)
    proc = subprocess.Popen(
        [sys.executable, "-m", "synthfilter", "run", str(src), "--out", str(out), "--config", str(config),
         "--engine", "ray", "--ray-address", ray_cluster, "--quiet"],
        stdout=subprocess.PIPE, stderr=subprocess.PIPE, start_new_session=True,
    )
    others = [out / "kept" / rel for rel in ("a.jsonl", "b.jsonl.gz", "d/e.parquet")]
    try:
        deadline = time.monotonic() + 120
        while not all(p.exists() for p in others):
            assert proc.poll() is None, proc.communicate()[1].decode()
            assert time.monotonic() < deadline, "the interrupted run never wrote the other shards"
            time.sleep(0.1)
        # SIGTERM (a scheduler stopping the job): Ray's own handler dumped a native stack and
        # exited 15 or 134; the run says it can be resumed, as the local engine does.
        proc.send_signal(signal.SIGTERM)
        _, err = proc.communicate(timeout=60)
        assert proc.returncode == 143, err.decode()
        assert f"interrupted (SIGTERM): {out} holds a resumable run" in err.decode()
    finally:
        if proc.poll() is None:
            os.killpg(proc.pid, signal.SIGKILL)
    assert not (out / "kept" / "sub" / "c.jsonl.zst").exists() and not (out / "manifest.json").exists()
    before = {p: p.stat().st_mtime_ns for p in others}
    feeder.release.set()
    try:
        stages = _Stages()
        re.run_pipeline_ray([str(src)], out, Config.from_dict({**CONFIG_A, "engine": "ray", "resume": True}), stages)
    finally:
        feeder.stop.set()
    assert stages.todo == {"score": 0, "write": 1}  # nothing rescored, only the unwritten shard written
    assert {p: p.stat().st_mtime_ns for p in others} == before
    got = _comparable(out)
    want = corpus["answers"]["A"]
    assert got["files"] == want["files"] and got["decisions"] == want["decisions"]


def test_same_decisions_with_the_shipped_detector(tmp_path: Path, ray_cluster: str,
                                                  monkeypatch: pytest.MonkeyPatch) -> None:
    # The detector path: scores, the prevalence estimate from score bins and a target ratio.
    from synthfilter.detect.model import CONFIG_FILE, ModelError, default_model_path, get_detector

    if not (default_model_path() / CONFIG_FILE).is_file():
        pytest.skip("no shipped detector model in models/default")
    try:
        get_detector(None)
    except ModelError as e:  # the detector's own tests cover a model that does not load
        pytest.skip(f"the shipped detector does not load here: {e}")
    rows = make_records(300, seed=21, dup_every=9)
    for i, r in enumerate(rows):
        if i % 3 == 0:
            r["who"] = r["label"]  # a third carry provenance: their scores re-measure the rates
    write_jsonl(tmp_path / "in" / "a.jsonl", rows[:150])
    write_jsonl(tmp_path / "in" / "b.jsonl.gz", rows[150:], "gz")
    # Project-made text is off-distribution for the shipped detector: the run goes on past the
    # refusal, so that both engines' plans (and their reliability checks) are compared.
    ratio = {"provenance_field": "who", "on_unreliable": "proceed"}
    # Each setting on one decide path (each path runs every rule in the corpus tests above).
    for name, extra, path in (("target", {"target_ratio": 0.1}, "shuffles"), ("estimate", {}, "one task")):
        cfg = {"quiet": True, "workers": 2, "ratio": {**ratio, **extra}}
        run_pipeline([str(tmp_path / "in")], tmp_path / f"local-{name}", Config.from_dict(cfg))
        want = _comparable(tmp_path / f"local-{name}")
        assert want["report"]["synthetic"]["detector_scored"] > 0
        assert want["report"]["synthetic"]["reliability"]["checks"]["provenance"]["labelled"]["human"] > 0
        _same_on_decide_paths(tmp_path / "in", tmp_path / f"ray-{name}", cfg, want, monkeypatch, (path,))


def test_same_decisions_with_other_languages(tmp_path: Path, ray_cluster: str,
                                            monkeypatch: pytest.MonkeyPatch) -> None:
    # Records outside [detector] languages: unscored, out of the estimate and never downsampled;
    # --languages rejects with reason "language", --reject-repetitive with "repetitive";
    # report.json's "languages" section.
    from langtext import sentences

    from synthfilter.detect.model import CONFIG_FILE, ModelError, default_model_path, get_detector

    if not (default_model_path() / CONFIG_FILE).is_file():
        pytest.skip("no shipped detector model in models/default")
    try:
        get_detector(None)
    except ModelError as e:
        pytest.skip(f"the shipped detector does not load here: {e}")
    rows = make_records(120, seed=23, dup_every=7)
    for lang in ("de", "fr"):
        texts = sentences(lang, 30, seed=5)
        rows += [{"id": f"{lang}-{i}", "text": t, "label": "x"} for i, t in enumerate(texts)]
        rows += [{"id": f"{lang}-dup-{i}", "text": t, "label": "x"} for i, t in enumerate(texts[:4])]
    import random

    from textgen import looping_text

    rng = random.Random(9)  # loops, and a copy of one, for --reject-repetitive
    rows += [{"id": f"loop-{i}", "text": looping_text(rng), "label": "machine"} for i in range(5)]
    rows.append({"id": "loop-copy", "text": rows[-1]["text"], "label": "machine"})
    for i, r in enumerate(rows):
        if i % 4 == 0:
            r["who"] = r["label"] if r["label"] != "x" else "human"
    write_jsonl(tmp_path / "in" / "a.jsonl", rows[::2])
    write_jsonl(tmp_path / "in" / "b.jsonl", rows[1::2])
    ratio = {"provenance_field": "who", "on_unreliable": "proceed"}
    for name, extra, path in (("estimate", {"ratio": ratio}, "one task"),
                              ("target", {"ratio": {**ratio, "target_ratio": 0.1}, "language": {"keep": ["en", "de"]},
                                          "repetition": {"reject": True}}, "shuffles")):
        cfg = {"quiet": True, "workers": 2, **extra}
        run_pipeline([str(tmp_path / "in")], tmp_path / f"local-{name}", Config.from_dict(cfg))
        want = _comparable(tmp_path / f"local-{name}")
        languages = want["report"]["languages"]
        assert languages["not_estimated"] > 0 and {"de", "fr"} <= set(languages["by_language"])
        if name == "target":
            assert want["report"]["output"]["rejected_by_reason"]["language"] > 0
            assert want["report"]["output"]["rejected_by_reason"]["repetitive"] == 6
        _same_on_decide_paths(tmp_path / "in", tmp_path / f"ray-{name}", cfg, want, monkeypatch, (path,))


def test_filter_dataset_matches_the_python_api(ray_cluster: str, monkeypatch: pytest.MonkeyPatch) -> None:
    import ray

    # Every shuffle through Ray's hash shuffle, the path of large runs (sort-based below 20 M rows).
    from synthfilter.pipeline.ray import session

    monkeypatch.setattr(session, "HASH_SHUFFLE_ROWS", 0)

    from synthfilter.api import SynthFilter
    from synthfilter.ray import filter_dataset

    rows = make_records(300, seed=4, dup_every=5)
    for r in rows[:40:4]:
        rows.append({"id": f"near-{r['id']}", "text": r["text"].replace(" ", "  ", 3) + " zebra", "label": "x"})
    rows.append({"id": "empty", "text": "", "label": "x"})
    # Records --languages or --reject-repetitive set aside have no decision row of their own (the
    # other filter_dataset tests below run without either).
    import random

    from langtext import sentences
    from textgen import looping_text

    rng = random.Random(8)
    rows += [{"id": f"fr-{i}", "text": t, "label": "x"} for i, t in enumerate(sentences("fr", 12, seed=3))]
    rows += [{"id": f"loop-{i}", "text": looping_text(rng), "label": "x"} for i in range(6)]
    cfg: dict[str, Any] = {"detector": {"enabled": False}, "on_error": "quarantine",
                           "language": {"keep": ["en"]}, "repetition": {"reject": True},
                           "report": {"group_by": "label", "sample_size": 120}}
    for i, r in enumerate(rows):
        r["label"] = f"g{i % 3}"  # diversity by group
    kept, rejected, report = filter_dataset(ray.data.from_items(rows, override_num_blocks=4), cfg)
    sf = SynthFilter(cfg)
    ids = [r["id"] for r in rows]
    want = sf.decide(sf.annotate({"text": [r["text"] for r in rows], "id": ids}), ids=ids)
    kept_rows = kept.take_all()
    assert sorted(r["id"] for r in kept_rows) == sorted(ids[i] for i in np.flatnonzero(want.keep))
    assert set(kept_rows[0]) == {"id", "text", "label"}
    got = {r["id"]: (r["synth_reason"], r["synth_duplicate_of"]) for r in rejected.take_all()}
    assert got == {ids[i]: (want.reason[i], want.duplicate_of[i]) for i in np.flatnonzero(~want.keep)}
    assert report["duplicates"] == want.report["duplicates"] and report["output"] == want.report["output"]
    assert report["output"]["rejected_by_reason"]["near_duplicate"] > 0
    # The languages section as run and the Python API count it (it was None through the Ray API).
    assert report["languages"] == want.report["languages"]
    # report.json's diversity section as the datasets integration (and run) compute it: the
    # sample of the 120 usable records with the smallest uniform, before and after, by group.
    import datasets

    from synthfilter.hf import filter_dataset as hf_filter_dataset

    hf_report = hf_filter_dataset(datasets.Dataset.from_list(rows), cfg).report
    assert report["diversity"] == hf_report["diversity"]
    assert report["diversity"]["before"]["records"] == 120
    assert report["diversity"]["after"]["records"] < 120 and set(report["diversity"]["by_group"]) == {"g0", "g1", "g2"}
    assert report["languages"]["by_language"]["fr"]["records"] >= 10
    assert report["output"]["rejected_by_reason"]["language"] >= 10
    assert report["output"]["rejected_by_reason"]["repetitive"] == 6


def test_filter_dataset_numbers_rows_in_the_datasets_order_and_takes_an_empty_one(ray_cluster: str,
                                                                                  tmp_path: Path) -> None:
    # Ray Data hands blocks out as they finish unless preserve_order is on: a read_parquet of a
    # folder gave its files in a new order on every run, and with it another copy of each
    # duplicate kept (700-900 of 5,000 decisions differed between runs of the same call).
    import ray

    from synthfilter.api import SynthFilter
    from synthfilter.ray import filter_dataset

    rows = make_records(240, seed=9, dup_every=3)  # a third are copies: which one is kept follows the order
    for i in range(8):
        pq.write_table(pa.Table.from_pylist(rows[i * 30:(i + 1) * 30]), tmp_path / f"part-{i}.parquet")
    cfg: dict[str, Any] = {"detector": {"enabled": False}, "dedup": {"near": False}}
    sf = SynthFilter(cfg)
    ids = [r["id"] for r in rows]
    want = sf.decide(sf.annotate({"text": [r["text"] for r in rows], "id": ids}), ids=ids)
    expected = {ids[i]: want.duplicate_of[i] for i in np.flatnonzero(~want.keep)}
    assert len(expected) >= 60
    for _ in range(2):
        _, rejected, _ = filter_dataset(ray.data.read_parquet(str(tmp_path)), cfg)
        assert {r["id"]: r["synth_duplicate_of"] for r in rejected.take_all()} == expected
    with pytest.raises(ValueError, match=r"no column 'body' for the text \(columns: id, text, label\)"):
        filter_dataset(ray.data.read_parquet(str(tmp_path)), {**cfg, "text_field": "body"})
    # An empty dataset: empty results and a report of zeros (it failed with KeyError: 'distinct').
    empty = ray.data.from_items([{"id": "a", "text": "one two three"}]).filter(lambda r: False)
    kept, rejected, report = filter_dataset(empty, cfg)
    assert kept.count() == 0 and rejected.count() == 0 and report["output"]["kept"] == 0


# -- the distributed decide stage on hard duplicate graphs ----------------------------------------------


def _hard_graph_corpus(root: Path) -> Path:
    """Chains (A ~ B ~ C, A and C below the threshold), a large bucket (60 exact copies under
    normalisation, plus near copies of them), exact + near overlap, provenance ties (human and
    machine copies, human-human copies decided by input order)."""
    import random

    rng = random.Random(3)
    vocab = [f"w{i}" for i in range(3000)]
    rows: list[dict[str, Any]] = []

    def doc() -> list[str]:
        return [rng.choice(vocab) for _ in range(120)]

    def edit(words: list[str], k: int) -> list[str]:
        out = list(words)
        for i in rng.sample(range(len(out)), k):
            out[i] = rng.choice(vocab)
        return out

    for c in range(40):  # chains: 2 words changed of 120 per link (word 5-grams: J ~ 0.84), ends ~ 0.71
        a = doc()
        b = edit(a, 2)
        rows += [{"id": f"chain{c}-{x}", "text": " ".join(t), "who": who}
                 for x, t, who in (("a", a, "gpt-4"), ("b", b, "human"), ("c", edit(b, 2), "gpt-4"))]
    big = doc()
    for i in range(60):
        text = " ".join(big) if i % 2 else " ".join(big).upper()
        rows.append({"id": f"big-{i}", "text": text, "who": "human" if i % 3 == 0 else "gpt-4"})
    for i in range(20):
        rows.append({"id": f"bignear-{i}", "text": " ".join(edit(big, 2)), "who": "gpt-4"})
    for i in range(150):
        rows.append({"id": f"solo-{i}", "text": " ".join(doc())})
    rng.shuffle(rows)
    src = root / "hard"
    for k in range(4):
        write_jsonl(src / f"part-{k}.jsonl", rows[k::4])
    return src


HARD = {"detector": {"enabled": False}, "quiet": True, "workers": 2,
        "ratio": {"provenance_field": "who", "provenance_map": {"human": "human", "gpt-*": "machine"}},
        "report": {"diversity": False, "html": False}}


@pytest.mark.parametrize("path", ["one task", "shuffles"])
def test_hard_duplicate_graphs_with_the_driver_on_a_budget(tmp_path: Path, ray_cluster: str, path: str,
                                                           monkeypatch: pytest.MonkeyPatch) -> None:
    from synthfilter.pipeline.ray import session

    _decide_path(path, monkeypatch)

    src = _hard_graph_corpus(tmp_path)
    run_pipeline([str(src)], tmp_path / "local", Config.from_dict(HARD))
    want = _comparable(tmp_path / "local")
    dups = want["report"]["duplicates"]
    assert dups["exact"] > 40 and dups["near"] > 80 and dups["largest_cluster"] >= 70
    # Most chains join ends whose own estimated Jaccard is below the threshold, through B.
    from synthfilter.dedup.minhash import MinHasher
    from synthfilter.text.normalize import normalize_for_dedup

    texts = {r["id"]: r["text"] for f in sorted(src.glob("*.jsonl")) for r in map(orjson.loads, read_jsonl(f))}
    jac = []
    for c in range(40):
        s = MinHasher().signatures([normalize_for_dedup(texts[f"chain{c}-{x}"]) for x in "abc"])
        jac.append([(s[i] == s[k]).mean() for i, k in ((0, 1), (1, 2), (0, 2))])
    assert sum(ab >= 0.8 and bc >= 0.8 and ac < 0.8 for ab, bc, ac in jac) >= 20
    # Well over a thousand edges (16 bytes each) on the cluster; the driver may hold 4 KB of rows.
    monkeypatch.setattr(session, "COLLECT_BUDGET", 4096)
    re.run_pipeline_ray([str(src)], tmp_path / "ray", Config.from_dict({**HARD, "engine": "ray"}))
    _assert_same(_comparable(tmp_path / "ray"), want)
    # And the budget is real: 1,000 int64 rows are more than the driver may take.
    import ray

    with pytest.raises(RuntimeError, match="budget"):
        session.collect(ray.data.range(1000))


KILL_IN_DECIDE = """
import os, signal, sys
from synthfilter.pipeline.ray import components, one_task
def killed(star):
    os.kill(os.getpid(), signal.SIGKILL)  # the driver dies between two contraction rounds
components._unsettled = killed
decide_in_one_task = one_task.decide_in_one_task
def killed_after(*args, **kwargs):
    decide_in_one_task(*args, **kwargs)
    os.kill(os.getpid(), signal.SIGKILL)  # the driver dies with the one task's result unsaved
one_task.decide_in_one_task = killed_after
from synthfilter.cli import main
sys.argv = ["synthfilter", *sys.argv[1:]]
main()
"""


@pytest.mark.parametrize("path", ["one task", "shuffles"])
def test_resume_after_the_run_is_killed_mid_decide(corpus: dict[str, Any], ray_cluster: str, path: str) -> None:
    from synthfilter.pipeline.ray.one_task import ONE_TASK_ENV

    out = corpus["root"] / f"ray-killed-in-decide-{path.replace(' ', '-')}"
    config = corpus["root"] / "kill.toml"
    config.write_text(CONFIG_A_TOML)
    env = {**os.environ, ONE_TASK_ENV: "0" if path == "shuffles" else ""}
    proc = subprocess.run(
        [sys.executable, "-c", KILL_IN_DECIDE, "run", str(corpus["src"]), "--out", str(out), "--config", str(config),
         "--engine", "ray", "--ray-address", ray_cluster, "--quiet"], capture_output=True, text=True, timeout=300,
        env=env)
    assert proc.returncode == -signal.SIGKILL, proc.stderr
    assert not (out / "manifest.json").exists() and not list((out / "kept").rglob("*.jsonl"))
    # The run recorded what it read, as the local engine does: the batch size may change on resume
    # of JSONL alone, and this corpus has a Parquet shard, whose row groups follow it.
    from synthfilter.pipeline.run import WORK_DIR, UsageError

    assert json.loads((out / WORK_DIR / "run.json").read_text())["formats"] == ["jsonl", "parquet"]
    with pytest.raises(UsageError, match=r"--batch-size was \d+ and cannot change here: Parquet outputs are written"):
        re.run_pipeline_ray([str(corpus["src"])], out,
                            Config.from_dict({**CONFIG_A, "engine": "ray", "resume": True, "batch_size": 97}))
    stages = _Stages()
    re.run_pipeline_ray([str(corpus["src"])], out, Config.from_dict({**CONFIG_A, "engine": "ray", "resume": True}),
                        stages)
    assert stages.todo == {"score": 0, "write": 4}  # scores kept, every shard decided and written
    got = _comparable(out)
    want = corpus["answers"]["A"]
    assert got["files"] == want["files"] and got["decisions"] == want["decisions"]


def test_one_task_decide_returns_file_errors_as_data(tmp_path: Path) -> None:
    # The one-task decide runs in a worker: a file error comes back as data and is raised on the
    # driver as the OSError it was (the CLI's one-line message), not as a worker's traceback.
    import errno

    from synthfilter.io.shards import Shard
    from synthfilter.pipeline.ray import one_task

    shard = Shard(tmp_path / "a.jsonl", "a.jsonl", "jsonl", None)
    table, summary = one_task._decide_task(str(tmp_path / "work"), [shard], {"a.jsonl": {"records": 3}}, [],
                                           Config.from_dict({"detector": {"enabled": False}}), None, False)
    assert table.num_rows == 0 and summary["os_error"][0] == errno.ENOENT
    with pytest.raises(OSError) as e:
        one_task._raise_refusal(summary)
    assert e.value.errno == errno.ENOENT and "ann.arrow" in str(e.value)


def test_one_task_limit_from_the_environment(monkeypatch: pytest.MonkeyPatch) -> None:
    from synthfilter.pipeline.ray import one_task
    from synthfilter.pipeline.run import UsageError

    monkeypatch.delenv(one_task.ONE_TASK_ENV, raising=False)
    assert one_task.one_task_records() == one_task.ONE_TASK_RECORDS
    monkeypatch.setenv(one_task.ONE_TASK_ENV, "2_000_000")
    assert one_task.one_task_records() == 2_000_000
    for bad in ("ten", "-1", "1e6"):
        monkeypatch.setenv(one_task.ONE_TASK_ENV, bad)
        with pytest.raises(UsageError, match=one_task.ONE_TASK_ENV):
            one_task.one_task_records()


def test_overwrite_and_resume_of_a_finished_run_follow_the_local_rules(corpus: dict[str, Any], ray_cluster: str,
                                                                       tmp_path: Path) -> None:
    from synthfilter.config import ConfigError
    from synthfilter.pipeline.run import UsageError

    src = tmp_path / "in"
    shutil.copytree(corpus["src"], src)
    out = tmp_path / "out"
    re.run_pipeline_ray([str(src)], out, Config.from_dict({**CONFIG_A, "engine": "ray"}))
    before = {p.relative_to(out): p.read_bytes() for p in out.rglob("*") if p.is_file()}
    # An --overwrite whose run fails (a target without detector scores for unlabelled records)
    # gives the previous outputs back, byte for byte.
    failing = {**CONFIG_A, "engine": "ray", "overwrite": True,
               "ratio": {"target_ratio": 0.2, "provenance_field": "meta.nobody"}}
    with pytest.raises(ConfigError, match="cannot downsample to a synthetic share of 20.0%"):
        re.run_pipeline_ray([str(src)], out, Config.from_dict(failing))
    assert {p.relative_to(out): p.read_bytes() for p in out.rglob("*") if p.is_file()} == before
    # One run at a time in a directory: while another holds it, a run is refused and touches nothing.
    from synthfilter.pipeline.runlock import RunLock

    held = RunLock(out, "_synthfilter").acquire()
    try:
        with pytest.raises(UsageError, match="another synthfilter run is writing to this directory"):
            re.run_pipeline_ray([str(src)], out, Config.from_dict({**CONFIG_A, "engine": "ray", "overwrite": True}))
    finally:
        held.release()
    assert {p.relative_to(out): p.read_bytes() for p in out.rglob("*") if p.is_file()} == before
    # --resume of the finished run: nothing to do with the same inputs, refused with another one.
    again = re.run_pipeline_ray([str(src)], out, Config.from_dict({**CONFIG_A, "engine": "ray", "resume": True}))
    assert again.manifest["conservation"]["ok"]
    write_jsonl(src / "late.jsonl", make_records(5, seed=99))
    with pytest.raises(UsageError, match="it did not read late.jsonl"):
        re.run_pipeline_ray([str(src)], out, Config.from_dict({**CONFIG_A, "engine": "ray", "resume": True}))


def test_bad_input_says_how_many_shards_a_resume_keeps_as_the_local_engine(ray_cluster: str, tmp_path: Path) -> None:
    from synthfilter.io.shards import InputError

    for i in range(3):
        write_jsonl(tmp_path / "in" / f"part-{i}.jsonl", make_records(40, seed=20 + i))
    with (tmp_path / "in" / "part-3.jsonl").open("w") as f:
        f.write(json.dumps({"id": "ok", "text": "a record with text"}) + "\n" + json.dumps({"id": "bad", "text": None}) + "\n")
    out = tmp_path / "out"
    cfg = {"detector": {"enabled": False}, "quiet": True, "engine": "ray"}
    with pytest.raises(InputError, match=r"part-3.jsonl:2: text field 'text' is null.*; \d shards? already scored: fix "
                                         r"the input or add --on-error quarantine, and rerun with --resume"):
        re.run_pipeline_ray([str(tmp_path / "in")], out, Config.from_dict(cfg))
    assert not list(out.rglob(".*.tmp-*"))  # the interrupted workers' temporary files are gone
    done = re.run_pipeline_ray([str(tmp_path / "in")], out,
                               Config.from_dict({**cfg, "resume": True, "on_error": "quarantine"}))
    assert done.report["input"]["malformed"] == 1 and done.manifest["conservation"]["ok"]


def test_filter_dataset_warns_of_ids_given_twice_as_run_does(ray_cluster: str) -> None:
    import ray

    from synthfilter.api import SynthFilter
    from synthfilter.ray import filter_dataset

    rows = make_records(60, seed=9)
    for i, r in enumerate(rows[:7]):
        r["id"] = "b" if i < 3 else "a"  # 7 records share two ids; the example is the smallest
    cfg: dict[str, Any] = {"detector": {"enabled": False}}
    _, _, report = filter_dataset(ray.data.from_items(rows, override_num_blocks=3), cfg)
    warned = [w for w in report["warnings"] if "share their id" in w]
    assert len(warned) == 1 and warned[0].startswith("7 records share their id") and "(e.g. 'a')" in warned[0]
    sf = SynthFilter(cfg)
    ids = [r["id"] for r in rows]
    want = sf.decide(sf.annotate({"text": [r["text"] for r in rows], "id": ids}), ids=ids)
    assert [w for w in want.report["warnings"] if "share their id" in w] == warned
    _, _, unique = filter_dataset(ray.data.from_items(make_records(20, seed=2)), cfg)
    assert not [w for w in unique["warnings"] if "share their id" in w]


def test_filter_dataset_warns_of_provenance_values_that_match_no_key_as_run_does(ray_cluster: str,
                                                                                  tmp_path: Path) -> None:
    import ray

    from synthfilter.ray import filter_dataset

    rows = make_records(60, seed=14, machine_share=0.5)
    for r in rows:
        r["meta"] = {"who": "human" if r["label"] == "human" else "gpt-4"}
    # Spellings the map (human, gpt-*) does not know, spread over the blocks.
    for i in (2, 19, 33, 47, 58):
        rows[i]["meta"]["who"] = "ChatGPT"
    for i in (7, 41):
        rows[i]["meta"]["who"] = "newsroom staff"
    del rows[25]["meta"]["who"]  # missing: not a value that matches no key
    rows.append({"id": "empty", "text": "", "meta": {"who": "ChatGPT"}})  # no text: not counted
    cfg: dict[str, Any] = {"detector": {"enabled": False}, "on_error": "quarantine", "quiet": True, "workers": 1,
                           "ratio": PROVENANCE, "report": {"diversity": False, "html": False}}
    write_jsonl(tmp_path / "in" / "a.jsonl", rows)
    want = [w for w in run_pipeline([str(tmp_path / "in")], tmp_path / "out", Config.from_dict(cfg)).report["warnings"]
            if "match no key" in w]
    assert len(want) == 1 and want[0].startswith("provenance field 'meta.who': 7 of its 59 values match no key")
    _, _, report = filter_dataset(ray.data.from_items(rows, override_num_blocks=4), cfg)
    assert [w for w in report["warnings"] if "'meta.who'" in w] == want
