"""Ray Data engine (issue 9): its overhead against the local engine, and its driver's memory.

Two parts, each row measured in a fresh process; results are cached in ``--workdir`` so the
parts can run as separate commands, and the section in benchmarks/RESULTS.md is rebuilt from
everything cached:

``e2e``     the same project-made shards (tests/textgen.py, every 10th record a duplicate) through
            ``run_pipeline`` (local engine, 2 workers) and ``run_pipeline_ray`` (a local 2-CPU Ray
            cluster, started before the clock starts and reported apart); records/s per stage.
``memory``  the decide stage alone over synthetic score-stage output (the engine's own work-file
            layout, 100,000 records a shard): ``D`` duplicate records (half exact copies, half
            near copies with 3 % of their signature changed, plus as many one-band false
            candidates) among ``N`` records. Peak driver memory during the decide stage, over
            the driver's idle RSS (sampled every 5 ms from /proc/self/status), for the Ray
            engine (``decide_on_ray``: edges, components and survivors on the cluster) and the
            local engine (``load_annotations`` + ``decide``).

    python benchmarks/ray_scale.py e2e --records 200000
    python benchmarks/ray_scale.py memory --records 1000000 --dups 20000
    python benchmarks/ray_scale.py memory --records 5000000 --dups 20000 --engines ray
    python benchmarks/ray_scale.py report                # write the RESULTS.md section

``local-memory`` (issue 15, item 4) measures the local engine's decide stage alone, as ``memory``
does, and where its anonymous memory goes: the peak of each step (reading the annotation columns,
gathering the signature and band-key files, near- and exact-duplicate labels, their merge,
survivors, reasons, the estimate), over the idle process. It writes its own section of
RESULTS.md from every local-memory row cached in ``--workdir``; ``--label`` names the code a row
measured (run it with an older ``synthfilter`` first on ``PYTHONPATH`` for a "before" row):

    python benchmarks/ray_scale.py local-memory --records 1000000 --dups 250000
    python benchmarks/ray_scale.py local-memory --records 5000000 --dups 1250000
"""

from __future__ import annotations

import argparse
import contextlib
import gzip
import importlib
import json
import math
import os
import platform
import shutil
import subprocess
import sys
import threading
import time
from pathlib import Path
from typing import Any, Iterator

import numpy as np
from _results import dated_section, publish, replace_section  # noqa: E402

HERE = Path(__file__).resolve().parent
REPO = HERE.parent
RESULTS = HERE / "RESULTS.md"
TITLE = "Ray Data engine (issue 9)"
LOCAL_TITLE = "Local decide memory (issue 15, item 4)"
sys.path.insert(0, str(REPO / "tests"))

PER_SHARD = 100_000
# Detector records/s per core for the 1-billion estimate: the shipped detector on ~3 KB documents,
# one core, from the "Detector quality (issue 4)" section of RESULTS.md.
DETECTOR_RATE = 2420.0
NUM_PERM = 128
THRESHOLD = 0.8


# -- memory sampling ------------------------------------------------------------------------------


class PeakRSS:
    """Peak VmRSS and RssAnon of this process (bytes), sampled on a thread; with ``step``, also
    the peak RssAnon of each named step (and RssAnon as each step starts and ends)."""

    def __init__(self, interval: float = 0.005):
        self.interval = interval
        self.peak_rss = self.peak_anon = 0
        self.steps: dict[str, dict[str, int]] = {}  # name -> {"start", "peak", "end"} RssAnon
        self._current: list[str] = []
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True)

    def _note(self, anon: int) -> None:
        current = self._current[-1:]  # one read: the list changes under the sampling thread
        if current:
            step = self.steps[current[0]]
            step["peak"] = max(step["peak"], anon)

    @contextlib.contextmanager
    def step(self, name: str) -> Iterator[None]:
        """Count what is sampled while the body runs (and not in a nested step) to ``name``."""
        anon = self.now()[1]
        self._note(anon)
        entry = self.steps.setdefault(name, {"start": anon, "peak": anon, "end": anon})
        self._current.append(name)
        try:
            yield
        finally:
            anon = self.now()[1]
            self._note(anon)
            self._current.pop()
            entry["end"] = anon

    @staticmethod
    def now() -> tuple[int, int]:
        rss = anon = 0
        with open("/proc/self/status") as f:
            for line in f:
                if line.startswith("VmRSS:"):
                    rss = int(line.split()[1]) * 1024
                elif line.startswith("RssAnon:"):
                    anon = int(line.split()[1]) * 1024
        return rss, anon

    def _run(self) -> None:
        while not self._stop.is_set():
            rss, anon = self.now()
            self.peak_rss, self.peak_anon = max(self.peak_rss, rss), max(self.peak_anon, anon)
            self._note(anon)
            time.sleep(self.interval)

    def __enter__(self) -> "PeakRSS":
        self.base_rss, self.base_anon = self.now()
        self._thread.start()
        return self

    def __exit__(self, *exc: Any) -> None:
        self._stop.set()
        self._thread.join()


# -- e2e -----------------------------------------------------------------------------------------


def build_corpus(root: Path, records: int, shards: int) -> int:
    import orjson

    from textgen import corpus

    if (root / "done").exists():
        return int((root / "done").read_text())
    shutil.rmtree(root, ignore_errors=True)
    root.mkdir(parents=True)
    per = records // shards
    size = 0
    prev: list[tuple[str, str]] = []
    for s in range(shards):
        rows = corpus(per, seed=500 + s, machine_share=0.4)
        lines = []
        for i, (label, text) in enumerate(rows):
            if i % 10 == 9:  # a duplicate: of a record of the previous shard, or of this one
                text = (prev or rows)[i - 9][1]
            lines.append(orjson.dumps({"id": f"{s}-{i}", "text": text, "label": label}))
        prev = rows
        data = gzip.compress(b"\n".join(lines) + b"\n", compresslevel=6, mtime=0)
        (root / f"part-{s:04d}.jsonl.gz").write_bytes(data)
        size += len(data)
    (root / "done").write_text(str(records))
    return records


def e2e_child(engine: str, src: str, out: str, model: str | None) -> dict[str, Any]:
    from synthfilter.config import Config
    from synthfilter.pipeline.run import Progress, run_pipeline

    marks: dict[str, float] = {}

    class Timed(Progress):
        def stage(self, name: str, total: int) -> None:
            marks[name] = time.perf_counter()
            super().stage(name, total)

        def shard_done(self, rel: str, records: int) -> None:
            marks["last_" + ("write" if "write" in marks else "score")] = time.perf_counter()
            super().shard_done(rel, records)

    over: dict[str, Any] = {"quiet": True, "workers": 2, "report": {"diversity": False, "html": False}}
    over["detector"] = {"enabled": True, "model": model} if model else {"enabled": False}
    cfg = Config.from_dict(over)
    init = 0.0
    if engine == "ray":
        import ray

        t = time.perf_counter()
        ray.init(address="local", num_cpus=2, include_dashboard=False, logging_level="ERROR")
        init = time.perf_counter() - t
        from synthfilter.pipeline.ray_engine import run_pipeline_ray as run
    else:
        run = run_pipeline
    t0 = time.perf_counter()
    with PeakRSS() as mem:
        res = run([src], out, cfg, Timed(quiet=True))
    total = time.perf_counter() - t0
    if engine == "ray":
        import ray

        ray.shutdown()
    n = res.report["input"]["records"]
    return {
        "engine": engine, "records": n, "detector": bool(model), "cluster_start_s": init, "total_s": total,
        "score_s": marks["last_score"] - marks["score"], "decide_s": marks["write"] - marks["last_score"],
        "write_s": marks["last_write"] - marks["write"], "kept": res.report["output"]["kept"],
        "driver_peak_rss_mb": (mem.peak_rss - mem.base_rss) / 2**20, "load": os.getloadavg()[0],
    }


# -- memory ----------------------------------------------------------------------------------------


def build_work(work: Path, records: int, dups: int, seed: int = 0) -> dict[str, Any]:
    """Synthetic score-stage output in the engine's layout; returns the shards' metas."""
    import pyarrow as pa
    import pyarrow.ipc as ipc

    from synthfilter.dedup.lsh import band_keys, optimal_bands
    from synthfilter.io.shards import Shard
    from synthfilter.pipeline.stages import WorkPaths

    b, r = optimal_bands(THRESHOLD, NUM_PERM)
    stamp = work / "done.json"
    if stamp.exists():
        return json.loads(stamp.read_text())
    shutil.rmtree(work, ignore_errors=True)
    rng = np.random.default_rng(seed)
    # Which records copy which: D copies (half exact, half near), D one-band false candidates.
    copies = np.sort(rng.choice(np.arange(records // 2, records), size=2 * dups, replace=False))
    rng.shuffle(copies)
    exact_c, near_c, false_c = copies[: dups // 2], copies[dups // 2: dups], copies[dups:]
    source = {int(c): int(rng.integers(0, records // 2)) for c in copies.tolist()}
    kind = {**{int(c): 0 for c in exact_c}, **{int(c): 1 for c in near_c}, **{int(c): 2 for c in false_c}}
    metas = []

    def base_sigs(idx: np.ndarray) -> np.ndarray:
        # A source's signature is a hash of its index (splitmix64), so a copy can rebuild it.
        x = idx.astype(np.uint64)[:, None] * np.uint64(NUM_PERM) + np.arange(NUM_PERM, dtype=np.uint64)
        x += np.uint64(0x9E3779B97F4A7C15) * np.uint64(seed + 1)
        x = (x ^ (x >> np.uint64(30))) * np.uint64(0xBF58476D1CE4E5B9)
        x = (x ^ (x >> np.uint64(27))) * np.uint64(0x94D049BB133111EB)
        return ((x ^ (x >> np.uint64(31))) >> np.uint64(32)).astype(np.uint32)

    for s, lo in enumerate(range(0, records, PER_SHARD)):
        hi = min(records, lo + PER_SHARD)
        n = hi - lo
        shard = Shard(path=Path(f"/synthetic/part-{s:05d}.jsonl"), rel=f"part-{s:05d}.jsonl", format="jsonl", compression=None)
        paths = WorkPaths.for_shard(work, shard)
        paths.root.mkdir(parents=True, exist_ok=True)
        g = np.arange(lo, hi)
        chunk_rng = np.random.default_rng([seed, s])
        sigs = chunk_rng.integers(0, 1 << 32, size=(n, NUM_PERM), dtype=np.uint32)
        hashes = chunk_rng.integers(0, 1 << 63, size=(n, 2), dtype=np.uint64)
        small = g < records // 2
        if small.any():  # sources: deterministic per index, rebuilt by their copies
            sigs[small] = base_sigs(g[small])
            hashes[small] = np.stack([g[small].astype(np.uint64) + 1, np.zeros(int(small.sum()), np.uint64)], axis=1)
        for row in np.flatnonzero(np.isin(g, copies)).tolist():
            c = int(g[row])
            src = source[c]
            ssig = base_sigs(np.array([src]))[0]
            if kind[c] == 0:
                sigs[row], hashes[row] = ssig, (src + 1, 0)
            elif kind[c] == 1:
                sig = ssig.copy()
                flip = chunk_rng.choice(NUM_PERM, size=4, replace=False)
                sig[flip] = chunk_rng.integers(0, 1 << 32, 4, dtype=np.uint32)
                sigs[row] = sig
            else:
                sigs[row, :r] = ssig[:r]  # shares band 0 only: a candidate that fails verification
        keys = band_keys(sigs, b, r)
        table = pa.table({
            "id": pa.array([f"r{i}" for i in g.tolist()]), "line": pa.array(np.arange(1, n + 1)),
            "status": pa.array(np.zeros(n, np.int8)), "error": pa.nulls(n, pa.string()),
            "hash_hi": pa.array(hashes[:, 0]), "hash_lo": pa.array(hashes[:, 1]),
            "length": pa.array(np.full(n, 500, np.int32)), "score": pa.array(np.full(n, np.nan, np.float32)),
            "provenance": pa.array(np.zeros(n, np.int8)), "uniform": pa.array(chunk_rng.random(n)),
        })
        with ipc.new_file(str(paths.ann), table.schema) as w:
            w.write_table(table)
        keys.tofile(paths.bands)
        sigs.tofile(paths.sigs)
        meta = {"rel": shard.rel, "path": str(shard.path), "format": "jsonl", "compression": None, "size": 0,
                "mtime_ns": 0, "sha256": "", "records": n, "malformed": 0, "blank_lines": 0, "empty": False,
                "bands": b, "num_perm": NUM_PERM}
        paths.meta.write_text(json.dumps(meta))
        metas.append(meta)
    info = {"records": records, "dups": dups, "bands": b, "rows": r, "metas": metas}
    stamp.write_text(json.dumps(info))
    return info


def memory_child(engine: str, work: str) -> dict[str, Any]:
    from synthfilter.config import Config
    from synthfilter.io.shards import Shard

    info = json.loads((Path(work) / "done.json").read_text())
    cfg = Config.from_dict({"detector": {"enabled": False}, "report": {"diversity": False, "html": False}})
    metas = info["metas"]
    offsets = np.cumsum([0] + [m["records"] for m in metas]).tolist()
    init = 0.0
    if engine == "ray":
        import ray

        from synthfilter.pipeline import ray_engine as re

        t = time.perf_counter()
        ray.init(address="local", num_cpus=2, include_dashboard=False, logging_level="ERROR")
        init = time.perf_counter() - t
        parts = [re.AnnotationPart(re.shard_dir(Shard(Path(m["path"]), m["rel"], "jsonl", None)), offsets[i],
                                   m["records"], m["bands"], m["num_perm"]) for i, m in enumerate(metas)]
        source = re.FileAnnotations(re.Store(work), parts)
        with re.data_context():
            # Warm the worker processes (imports) outside the measured window.
            re.collect(source.map_chunks(lambda c: {"n": np.array([len(c["gidx"])])}, ["status"]).limit(1))
            t0 = time.perf_counter()
            with PeakRSS() as mem:
                d = re.decide_on_ray(source, offsets[-1], cfg, None, None, info["bands"], NUM_PERM)
            seconds = time.perf_counter() - t0
        counts = d.counts()
        edges_note = {"duplicate_records": int(d.rows.count())}
        ray.shutdown()
    else:
        return local_decide(work)
    return {
        "engine": engine, "records": info["records"], "dups": info["dups"], "decide_s": seconds, "cluster_start_s": init,
        "driver_peak_rss_mb": (mem.peak_rss - mem.base_rss) / 2**20,
        "driver_peak_anon_mb": (mem.peak_anon - mem.base_anon) / 2**20,
        "exact": counts["exact_duplicate"], "near": counts["near_duplicate"], "load": os.getloadavg()[0], **edges_note,
    }


# The steps of the local decide stage whose memory local_decide reports apart: (module, function,
# step); a step called inside another counts apart from it. Functions a version lacks are left out.
LOCAL_STEPS = (
    ("synthfilter.pipeline.run", "_gather_signatures", "load: signature file"),
    ("synthfilter.pipeline.run", "_gather_band_keys", "load: band-key file"),
    ("synthfilter.dedup.clusters", "near_duplicate_components", "near-duplicate clusters"),
    ("synthfilter.pipeline.stages", "_exact_labels", "exact-duplicate labels"),
    ("synthfilter.pipeline.stages", "merge_labels", "merge of the two"),
    ("synthfilter.pipeline.stages", "survivors", "survivors"),
    ("synthfilter.pipeline.stages", "duplicate_reasons", "duplicate reasons"),
    ("synthfilter.pipeline.stages", "decide_synthetic", "estimate"),
)
LOCAL_STEP_ORDER = ("load: columns", "load: signature file", "load: band-key file", "near-duplicate clusters",
                    "exact-duplicate labels", "merge of the two", "survivors", "duplicate reasons",
                    "decide: other", "estimate")


def local_decide(work: str) -> dict[str, Any]:
    """The local engine's decide stage (``load_annotations`` + ``decide``) over ``work``: its
    time, peak driver memory, and the peak anonymous memory of each of its steps."""
    import pyarrow.ipc  # noqa: F401  (imported before the idle RSS is read, as a run has it)

    import synthfilter
    from synthfilter.config import Config
    from synthfilter.io.shards import Shard
    from synthfilter.pipeline.run import load_annotations
    from synthfilter.pipeline.stages import decide

    info = json.loads((Path(work) / "done.json").read_text())
    metas = info["metas"]
    cfg = Config.from_dict({"detector": {"enabled": False}, "report": {"diversity": False, "html": False}})
    shards = [Shard(Path(m["path"]), m["rel"], "jsonl", None) for m in metas]
    mem = PeakRSS()

    def timed(fn: Any, step: str) -> Any:
        def wrapper(*args: Any, **kwargs: Any) -> Any:
            with mem.step(step):
                return fn(*args, **kwargs)
        return wrapper

    for module, name, step in LOCAL_STEPS:
        mod = importlib.import_module(module)
        if hasattr(mod, name):  # looked up at call time by decide and load_annotations
            setattr(mod, name, timed(getattr(mod, name), step))
    t0 = time.perf_counter()
    with mem:
        with mem.step("load: columns"):
            ann, _ = load_annotations(shards, Path(work), {m["rel"]: m for m in metas}, near=True)
        held = sum(a.nbytes for a in vars(ann).values() if isinstance(a, np.ndarray) and not isinstance(a, np.memmap)
                   and not isinstance(a.base, np.memmap))
        with mem.step("decide: other"):
            dec = decide(ann, cfg, None)
        counts = dec.counts()
    seconds = time.perf_counter() - t0
    for name in ("signatures.u32", "bands.u64"):
        (Path(work) / name).unlink(missing_ok=True)
    n = info["records"]
    return {
        "engine": "local", "records": n, "dups": info["dups"], "decide_s": seconds, "cluster_start_s": 0.0,
        "driver_peak_rss_mb": (mem.peak_rss - mem.base_rss) / 2**20,
        "driver_peak_anon_mb": (mem.peak_anon - mem.base_anon) / 2**20,
        "exact": counts["exact_duplicate"], "near": counts["near_duplicate"], "load": os.getloadavg()[0],
        "columns_b": held / n, "bands": info["bands"], "synthfilter": str(Path(synthfilter.__file__).parent),
        "steps": {k: {q: (v - mem.base_anon) / n for q, v in s.items()} for k, s in mem.steps.items()},
    }


def local_report(workdir: Path) -> str:
    """The section of the local-memory rows cached in ``workdir``."""
    data = json.loads((workdir / "results.json").read_text())
    rows = sorted((r for k, rs in data.items() if k.startswith("local-") for r in rs),
                  key=lambda r: (r["records"], r["label"] != "this tree", r["label"]))
    lines = [
        f"x86_64, {os.cpu_count()} cores shared with other work, Python {platform.python_version()}; each row a fresh "
        "process. The decide stage of the local engine alone (`load_annotations` + `decide`, as the `memory` rows "
        "of \"Ray Data engine (issue 9)\"), on the same synthetic score-stage output (100,000 records a shard, 128 "
        "permutations, D duplicate records, half exact and half near copies, plus D one-band false candidates), "
        "exact + near dedup, no detector. Memory over the idle process: RSS and anonymous RSS (RssAnon: what the "
        "process holds; RSS also counts the pages of memory-mapped files it has read, page cache the kernel can "
        "drop), sampled every 5 ms and at each step's start and end. `label` names the code measured: "
        "`this tree`, or a commit whose `synthfilter` (from `git archive`) was first on PYTHONPATH.",
        "",
        "| label | records | D | decide s | peak RSS MB | peak anon MB | anon B per record | RSS B per record | "
        "columns held B per record | exact + near found | load |",
        "|---|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|",
    ]
    for r in rows:
        n = r["records"]
        lines.append(
            f"| {r['label']} | {n:,} | {r['dups']:,} | {r['decide_s']:.1f} | {r['driver_peak_rss_mb']:,.0f} | "
            f"{r['driver_peak_anon_mb']:,.0f} | {r['driver_peak_anon_mb'] * 2**20 / n:.0f} | "
            f"{r['driver_peak_rss_mb'] * 2**20 / n:.0f} | {r.get('columns_b', float('nan')):.0f} | "
            f"{r['exact'] + r['near']:,} | {_load(r)} |")
    lines += ["", "Peak anonymous memory of each step, B per record over the idle process (in brackets: held when "
              "the step starts -> when it ends; a step nested in another counts apart; `load: columns` is all of "
              "`load_annotations` a version does not split):", "",
              "| step | " + " | ".join(f"{r['label']}, {r['records'] / 1e6:g} M" for r in rows) + " |",
              "|---|" + "---:|" * len(rows)]
    for step in LOCAL_STEP_ORDER:
        cells = []
        for r in rows:
            s = r["steps"].get(step)
            cells.append(f"{round(s['peak'])} ({round(s['start'])} -> {round(s['end'])})" if s else "—")
        if any(c != "—" for c in cells):
            lines.append(f"| {step} | " + " | ".join(cells) + " |")
    for paragraph in local_findings(rows):
        lines += ["", paragraph]
    return "\n".join(lines)


# What a step makes and drops, for the findings' account of the peak (from the code, not measured).
STEP_TEMPORARIES = {
    "survivors": " (the order of the labels and the sorted labels, 8 B each, the keep rule's keys, and the "
                 "members of clusters)",
    "near-duplicate clusters": " (a band's sort order and sorted keys, 8 B each, and its buckets' members and "
                               "links, 4 B each)",
    "exact-duplicate labels": " (the order of the exact hashes and the sorted first halves, 8 B each)",
}


def local_findings(rows: list[dict[str, Any]]) -> list[str]:
    """What the local-memory rows say: the goal, where the memory goes, and why dedup_scale.py's
    figure for the decide stage is smaller."""
    def per_record(r: dict[str, Any], key: str) -> float:
        return r[key] * 2**20 / r["records"]

    out = []
    current = [r for r in rows if r["label"] == "this tree"]
    older = [r for r in rows if r["label"] != "this tree"]
    if current:
        big = max(current, key=lambda r: r["records"])
        anon = per_record(big, "driver_peak_anon_mb")
        worst = max(big["steps"], key=lambda k: big["steps"][k]["peak"])
        w = big["steps"][worst]
        near = big["steps"].get("near-duplicate clusters")
        verdict = ("met" if anon <= 100 else "NOT met") if big["records"] >= 5_000_000 else "not measured at 5 M yet"
        out.append(
            f"**Goal: <= 100 B per record of anonymous memory at 5 M records, loading included: {verdict}** "
            f"({anon:.0f} B at {big['records']:,} records). Where it goes at the peak, in `{worst}`: "
            f"{w['start']:.0f} B per record held as the step starts, {big['columns_b']:.0f} of them the annotation "
            "columns decide reads (status 1, exact hash 16, score 4, provenance 1, uniform 8, length 4, shard 4), the "
            "rest mostly the reasons and flags (1 each) and labels (8) of the records, and "
            f"{w['peak'] - w['start']:.0f} B per record that the step makes and drops"
            f"{STEP_TEMPORARIES.get(worst, '')}. The band keys and signatures are memory-mapped files "
            f"({big['bands'] * 8} and {NUM_PERM * 4} B per record): RSS counts the pages read of them "
            f"({per_record(big, 'driver_peak_rss_mb'):.0f} B per record in all), page cache the kernel drops "
            "when it needs the memory, not memory the process holds.")
        if near:
            out.append(
                f"The clustering itself (`near-duplicate clusters`) adds {near['peak'] - near['start']:.0f} B per record "
                f"at its peak to the {near['start']:.0f} held before it: what `dedup_scale.py` measures.")
    if older:
        old = max(older, key=lambda r: r["records"])
        load = old["steps"]["load: columns"]
        out.append(
            f"Before (`{old['label']}`, {old['records']:,} records: {per_record(old, 'driver_peak_anon_mb'):.0f} B per "
            f"record): `load_annotations` alone peaked at {load['peak']:.0f} B per record and left "
            f"{old['columns_b']:.0f} B per record of arrays (the columns and every band key in memory, "
            f"{old['bands'] * 8} B per record of them) and {load['end']:.0f} B per record held in all: it read "
            "each shard's whole Arrow table (ids, line numbers, errors) into memory, concatenated copies of every "
            "column and band key, and its first `to_numpy` imported pandas (some 30 MB). Now the columns are read "
            "from memory-mapped tables, the band keys are gathered band by band into a memory-mapped file, and "
            "decide keeps no index array, no second label array and no wide sort key for longer than a step.")
    out.append(
        "Why `dedup_scale.py` (section \"Decide-stage scale (issue 3)\") reported 39 B per record and the `memory` "
        "rows of \"Ray Data engine (issue 9)\" 354 for the local engine: `dedup_scale.py` measures "
        "`near_duplicate_components` and `choose_survivors` alone, over band keys and signatures memory-mapped from "
        ".npy files, with the keep rule's two sort keys made before its baseline is read; the `memory` rows (and these) "
        "measure the whole stage from the work files: loading the columns and band keys, exact-duplicate labels, "
        "their merge with the near ones, reasons, cluster sizes and the estimate"
        + (f". The `{older[0]['label']}` rows show that loading was most of the difference." if older else "."))
    return out


# -- driver ---------------------------------------------------------------------------------------


def run_child(args: list[str]) -> dict[str, Any]:
    proc = subprocess.run([sys.executable, __file__, "_child", *args], capture_output=True, text=True)
    if proc.returncode:
        sys.stderr.write(proc.stderr[-4000:])
        raise SystemExit(f"child failed: {' '.join(args)}")
    return json.loads(proc.stdout.strip().splitlines()[-1])


def cache_results(workdir: Path, key: str, rows: list[dict[str, Any]]) -> None:
    path = workdir / "results.json"
    data = json.loads(path.read_text()) if path.exists() else {}
    data[key] = rows
    path.write_text(json.dumps(data, indent=1))


def report(workdir: Path) -> str:
    data = json.loads((workdir / "results.json").read_text())
    lines = [f"x86_64, {os.cpu_count()} cores shared with other work, Python {platform.python_version()}; "
             "each row a fresh process; Ray: a local cluster of 2 CPUs, started outside the timings (its start is "
             "shown apart). The machine was shared: `load` is the 1-minute load average at the end of a row "
             "(2 = both cores busy), so compare rows measured under similar load."]
    e2e = [r for k, rows in sorted(data.items()) if k.startswith("e2e") for r in rows]
    if e2e:
        lines += ["", "End to end, the same gzip JSONL shards (project-made text, every 10th record a duplicate), "
                  "exact + near dedup, report extras off. Ray's decide stage at these sizes runs in one task "
                  "(`pipeline/ray/one_task.py`: up to 10 M records on a local work directory); the memory rows "
                  "below measure its distributed path:", "",
                  "| engine | records | detector | cluster start s | score rec/s | decide s | write rec/s | total s | records/s | Ray / local time | load |",
                  "|---|---:|---|---:|---:|---:|---:|---:|---:|---:|---:|"]
        local_total = {(r["records"], r["detector"]): r["total_s"] for r in e2e if r["engine"] == "local"}
        for r in e2e:
            base = local_total.get((r["records"], r["detector"]))
            ratio = f"{r['total_s'] / base:.2f}" if base else "—"
            lines.append(
                f"| {r['engine']} | {r['records']:,} | {'yes' if r['detector'] else 'no'} | {r['cluster_start_s']:.1f} | "
                f"{r['records'] / r['score_s']:,.0f} | {r['decide_s']:.1f} | {r['records'] / r['write_s']:,.0f} | "
                f"{r['total_s']:.1f} | {r['records'] / r['total_s']:,.0f} | {ratio} | {_load(r)} |")
    mem = [r for k, rows in sorted(data.items()) if k.startswith("mem") for r in rows]
    if mem:
        lines += ["", "Decide stage alone on synthetic score-stage output (100,000 records a shard, 128 permutations); "
                  "D = duplicate records (half exact, half near copies) plus D one-band false candidates. Driver memory "
                  "= peak over the driver's idle RSS while deciding (Ray: the object store lives in other processes and "
                  "is not counted; the driver's share of it, mapped objects it reads, is).", "",
                  "| engine | records | D | decide s | driver peak RSS MB | driver peak anon MB | RSS B per record | RSS B per duplicate | exact + near found | load |",
                  "|---|---:|---:|---:|---:|---:|---:|---:|---:|---:|"]
        for r in sorted(mem, key=lambda x: (x["engine"], x["records"], x["dups"])):
            per = r["driver_peak_rss_mb"] * 2**20 / r["records"]
            per_dup = r["driver_peak_rss_mb"] * 2**20 / r["dups"]
            lines.append(f"| {r['engine']} | {r['records']:,} | {r['dups']:,} | {r['decide_s']:.1f} | "
                         f"{r['driver_peak_rss_mb']:,.0f} | {r['driver_peak_anon_mb']:,.0f} | {per:.1f} | {per_dup:,.0f} | "
                         f"{r['exact'] + r['near']:,} | {_load(r)} |")
    lines += ["", *billion_estimate(e2e, mem)]
    lines += ["", "Before issue 15 the driver replayed the clustering over every duplicate edge (section of "
              "2026-11-25, in git history): 150 MB of driver RSS at 1 M records with 100,000 duplicates (about "
              "1.2-2.6 KB per duplicate record), decide 27.6 s there; end to end Ray took 1.46x the local engine's "
              "time at 200,000 records and 2.23x at 1 M. The distributed decide (keys, verification, contraction "
              "rounds, survivors: a shuffle each) took 76 s of the Ray run's 93 s at 1 M records (6.6x the local "
              "engine's time); up to 10 M records it now runs in one task with the local engine's own code, and "
              "the write stage runs a few tasks per CPU instead of one a shard. Goal <= 1.3x the local engine's "
              "time at 1 M records without the detector: see the rows above (on 2 CPUs Ray's own processes, raylet, "
              "object store and the driver, share the cores the work runs on). Where the rest goes, from one timeline "
              "of each engine at 1 M records (2026-12-06): the score actors finish their first shard 2.3 s after the "
              "stage starts (new worker processes importing the scorer; the local pool's first shard: 0.8 s), the "
              "write stage takes 5.3 s against 3.9 s (warming worker processes during decide did not change it), "
              "and the decide task takes 5.8 s "
              "against the local engine's 3.9 s (a worker loading the annotations, then the non-kept rows moved to "
              "the object store and saved per shard). At 1 billion records these are fixed costs. How much of it "
              "Ray Data itself costs, measured on an idle local cluster of 2 CPUs (2026-12-07, a trivial "
              "`map_batches` over 8 one-row blocks, 3 s after `ray.init`): 1.8-2.0 s to the first result of the "
              "first task-based execution, then 0.05 s for the next ones (the same worker processes, with Ray "
              "Data imported); 1.9-2.5 s for an actor pool, every time (its actors start new processes), and "
              "the next task-based execution still paid 1.5 s. So since 2026-12-07 the score stage runs as a "
              "few tasks per CPU, each worker process building the scorer (and loading the detector) once and "
              "dropping it before decide, instead of an actor pool: the decide task and the write stage find warm "
              "processes. Paired runs of the two versions at 1 M records without the detector: 18.3 and 19.5 s "
              "against 21.1 and 20.4 s; Ray/local 1.33-1.39x against 1.44-1.48x. Warming the worker processes "
              "with a plain Ray task per CPU (importing Ray Data and the score stage) while the driver prepares "
              "the run was tried and made the first score results come 0.6 s later, so it was not kept. "
              "A timeline of every task and of the workers' CPU use (2026-12-07) then showed where the rest "
              "went: each stage ran one task alone for its first second, and the last two score tasks ran one "
              "after the other on one worker while the other sat idle. The first is Ray Data's per-operator "
              "resource reservation: an execution starts with a CPU budget of zero until its autoscaling "
              "coordinator grants the cluster's CPUs, about 1 s later (8 tasks of 0.8 s on 2 CPUs: 4.4 s, "
              "3.3 s without the reservation; plain Ray tasks: 3.2 s). The score and write stages are one map "
              "over a few items whose tasks return a few bytes, with nothing to reserve for, so they now run "
              "without it (`session.unreserved`; the shuffles keep it, it is their object-store backpressure). "
              "The second came from the score stage's concurrency cap, equal to the CPUs, once the reservation "
              "was gone; the cap is now set only when --workers asks for fewer than the cluster's CPUs. Three "
              "paired runs at 1 M records without the detector: Ray/local 1.21x, 1.18x, 1.16x (goal <= 1.3x: "
              "met); with the detector 1.15x and 1.09x (before: 1.06-1.11x; the same within the spread of "
              "these runs, whose score stage is 60-70 s of work on both cores: paired Ray runs of the two "
              "versions with the detector at 200,000 records took 17.4 and 18.1 s against 19.6 and 18.4 s "
              "before); at 200,000 records 1.79x "
              "(before: 2.02x). What is left: Ray Data's first execution (about 1.6 s from the stage's start "
              "to its first task), the decide task loading the annotations and handing the non-kept rows "
              "over (4.4 s against 3.9 s), and the shuffle that saves them per shard (0.4 s). The local rows of the decide-stage table were measured "
              "again on 2026-12-07, after the signature reads became span-wise (section \"Throughput on plain "
              "JSONL\"): 106-145 MB of RSS instead of 669-681 MB.",
              "", "Not measured: 5 M records with 25 % duplicates (1.25 M) on the distributed path. Its verification "
              "pass carries each candidate bucket member's signature (512 B, once for every bucket the record is in) "
              "through the object store; on this 24 GB machine (7.5 GB object store) that spilled to disk and had "
              "not finished after 15 minutes (2026-12-06), while the driver process stayed under 200 MB. Clusters "
              "for such corpora need object-store memory for about bands x duplicates x 512 B."]
    return "\n".join(lines)


def _load(row: dict[str, Any]) -> str:
    return f"{row['load']:.1f}" if "load" in row else "—"


def billion_estimate(e2e: list[dict[str, Any]], mem: list[dict[str, Any]], detector_rate: float = DETECTOR_RATE,
                     cores_per_node: int = 32, hours: float = 1.0) -> list[str]:
    """What a 1-billion-document run needs, from this run's per-core rates (2 CPUs here)."""
    ray_rows = [r for r in e2e if r["engine"] == "ray" and not r["detector"]]
    if not ray_rows:
        return []
    big = max(ray_rows, key=lambda r: r["records"])
    per_core = {k: big["records"] / big[f"{k}_s"] / 2 for k in ("score", "decide", "write")}
    synthetic = [r for r in mem if r["engine"] == "ray"]
    decide_note = "this corpus, in one task"
    if synthetic:
        # A billion records take the distributed decide (the memory rows), not the one task of
        # the end-to-end rows: its rate at the most records measured, near 10 % and at 2 % duplicates.
        most = [r for r in synthetic if r["records"] == max(x["records"] for x in synthetic)]
        ten = min(most, key=lambda r: abs(r["dups"] / r["records"] - 0.10))
        low = min(most, key=lambda r: r["dups"])
        per_core["decide"] = ten["records"] / ten["decide_s"] / 2
        per_core["decide (2 % duplicates)"] = low["records"] / low["decide_s"] / 2
        decide_note = (f"the distributed path, {ten['records']:,} records with {ten['dups'] / ten['records']:.0%} "
                       "duplicates")
    n = 1e9
    core_s = n / per_core["score"] + n / detector_rate + n / per_core["decide"] + n / per_core["write"]
    core_h = core_s / 3600
    nodes = math.ceil(core_h * 1.3 / hours / cores_per_node)  # 30 % for I/O, stragglers, retries
    lines = [
        f"**1 billion documents, on paper.** Per-core rates measured above (Ray rows, {big['records']:,} records, "
        f"{big['kept'] / big['records']:.0%} kept): score (dedup) {per_core['score']:,.0f} rec/s, decide "
        f"{per_core['decide']:,.0f} rec/s ({decide_note}; "
        f"{per_core.get('decide (2 % duplicates)', float('nan')):,.0f} rec/s with 2 % duplicates), write "
        f"{per_core['write']:,.0f} rec/s; detector {detector_rate:,.0f} docs/s per core (the shipped model on ~3 KB "
        f"documents, from \"Detector quality (issue 4)\", not re-measured here). "
        f"Rates are per wall-second under the load shown, so they understate a quiet core. "
        f"Total {core_h:,.0f} core-hours, {core_h - n / detector_rate / 3600:,.0f} of them without the detector.",
        f"With {cores_per_node}-core nodes and 30 % headroom: **{nodes} nodes for about {hours:g} hour** "
        f"({math.ceil(core_h * 1.3 / 24 / cores_per_node)} node(s) for a day; without the detector "
        f"{math.ceil((core_h - n / detector_rate / 3600) * 1.3 / hours / cores_per_node)} nodes for an hour).",
    ]
    if synthetic:
        lo = min(synthetic, key=lambda r: r["driver_peak_rss_mb"])
        hi = max(synthetic, key=lambda r: r["driver_peak_rss_mb"])
        lines.append(
            f"Driver memory (decide stage, no target ratio): {lo['driver_peak_rss_mb']:.0f}-{hi['driver_peak_rss_mb']:.0f} MB "
            f"over the rows above ({min(r['records'] for r in synthetic):,}-{max(r['records'] for r in synthetic):,} "
            f"records, {min(r['dups'] for r in synthetic):,}-{max(r['dups'] for r in synthetic):,} duplicate records): "
            "the driver holds counts (per shard, per partition, at most 4,096 score bins), never an edge or a value "
            "per record, so a head node of a few GB takes 1 billion documents at any duplicate share (the cluster's "
            f"object store holds the edge table instead), against {mem_local_per_record(mem):,.0f} B per record, "
            f"{1e9 * mem_local_per_record(mem) / 2**40:,.1f} TB, for the local engine's decide stage (its RSS, the "
            f"memory-mapped signatures it reads included; section \"{LOCAL_TITLE}\" has its anonymous memory step by "
            "step). With "
            "--target-ratio the plan ranks every survivor on the driver: 21 B each (index, score, provenance, "
            "uniform) and 8 B per duplicate, about twice that while sorting (on paper, from the array types): a "
            "64 GB head node plans up to about 1.3 billion survivors.")
    return lines


def mem_local_per_record(mem: list[dict[str, Any]]) -> float:
    local = [r for r in mem if r["engine"] == "local"]
    if not local:
        return float("nan")
    r = max(local, key=lambda x: x["records"])
    return r["driver_peak_rss_mb"] * 2**20 / r["records"]


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("part", choices=["e2e", "memory", "local-memory", "report", "_child"])
    ap.add_argument("rest", nargs="*")
    ap.add_argument("--records", type=int, default=200_000)
    ap.add_argument("--dups", type=int, default=20_000)
    ap.add_argument("--engines", default="local,ray")
    ap.add_argument("--model", default=None, help="detector model directory (e2e; default: no detector)")
    ap.add_argument("--workdir", type=Path, default=Path(os.environ.get("TMPDIR", "/tmp")) / "synthfilter-ray-scale")
    ap.add_argument("--no-write", action="store_true", help="print only; leave RESULTS.md alone")
    ap.add_argument("--label", default="this tree", help="local-memory: what code the row measures")
    a = ap.parse_args(argv)
    if a.part == "_child":
        kind, engine, *paths = a.rest
        if os.environ.get("RAY_SCALE_CHUNK_ROWS"):  # experiments on the decide stage's block size
            from synthfilter.pipeline.ray import annotations

            annotations.CHUNK_ROWS = int(os.environ["RAY_SCALE_CHUNK_ROWS"])
        if kind == "e2e":
            out = e2e_child(engine, paths[0], paths[1], paths[2] or None)
        else:
            out = memory_child(engine, paths[0])
        print(json.dumps(out))
        return 0
    a.workdir.mkdir(parents=True, exist_ok=True)
    if a.part == "e2e":
        src = a.workdir / f"corpus-{a.records}"
        build_corpus(src, a.records, shards=max(4, a.records // 10_000))
        rows = []
        for engine in a.engines.split(","):
            out = a.workdir / f"out-{engine}"
            shutil.rmtree(out, ignore_errors=True)
            rows.append(run_child(["e2e", engine, str(src), str(out), a.model or ""]))
            print(json.dumps(rows[-1]), flush=True)
        cache_results(a.workdir, f"e2e-{a.records}-{bool(a.model)}", rows)
    elif a.part == "memory":
        work = a.workdir / f"work-{a.records}-{a.dups}" / "_synthfilter"
        t = time.perf_counter()
        build_work(work, a.records, a.dups)
        print(f"score-stage output ready in {time.perf_counter() - t:.0f} s", flush=True)
        rows = []
        for engine in a.engines.split(","):
            rows.append(run_child(["memory", engine, str(work)]))
            print(json.dumps(rows[-1]), flush=True)
        cache_results(a.workdir, f"mem-{a.records}-{a.dups}-{a.engines}", rows)
    elif a.part == "local-memory":
        work = a.workdir / f"work-{a.records}-{a.dups}" / "_synthfilter"
        build_work(work, a.records, a.dups)
        row = {**run_child(["memory", "local", str(work)]), "label": a.label}
        print(json.dumps(row), flush=True)
        cache_results(a.workdir, f"local-{a.records}-{a.dups}-{a.label}", [row])
        body = local_report(a.workdir)
        if a.no_write:
            print(body)
        else:
            publish(LOCAL_TITLE, "ray_scale.py", body)
        return 0
    body = report(a.workdir)
    print(body)
    if a.part == "report" and not a.no_write:
        replace_section(TITLE, dated_section(TITLE, Path(__file__).name, body))
        print(f"\nwrote {RESULTS.relative_to(REPO)}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
