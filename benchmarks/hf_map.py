"""Records/s of ``Dataset.map(sf.annotate, batched=True, num_proc=2)`` next to the CLI's score stage.

On the same project-made records, in the same run, per config:
  * CLI score stage: ``score_shard`` over the JSONL shards in the engine's 2-worker pool (what
    ``synthfilter run --workers 2`` does before deciding), pool start-up included;
  * HF map: ``Dataset.map(sf.annotate, batched=True, num_proc=2)`` on the same shards loaded
    as a memory-mapped Arrow Dataset (``Dataset.from_json``, not timed), worker start-up included;
  * end to end: ``filter_dataset(ds, num_proc=2)`` next to ``synthfilter run --dry-run --workers 2``
    (score + decide, no records written).
Goal: HF map within 1.5x of the CLI score stage. Appends a dated section to RESULTS.md.

    python benchmarks/hf_map.py              # 100,000 records
    python benchmarks/hf_map.py --quick      # 4,000 records
"""

from __future__ import annotations

import argparse
import datetime as dt
import itertools
import json
import os
import platform
import shutil
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

HERE = Path(__file__).resolve().parent
ROOT = HERE.parent
sys.path.insert(0, str(ROOT / "tests"))

from textgen import corpus  # noqa: E402
from _results import replace_section  # noqa: E402

TITLE = "HF datasets map (issue 6)"
SECTION = f"## {TITLE}"
WORKERS = 2
GOAL = 1.5
DEFAULT_RECORDS = 100_000


def configs(model: str | None) -> dict[str, dict]:
    out = {
        "exact + near dedup, no detector": {"detector": {"enabled": False}},
    }
    if model:
        out[f"dedup + detector ({Path(model).name})"] = {"detector": {"model": model}}
    elif (ROOT / "models" / "default" / "card.json").exists():
        out["default (dedup + shipped detector)"] = {}
    return out


def build(root: Path, n: int, shards: int) -> None:
    rows = []
    for i, (label, text) in enumerate(corpus(n, seed=61, machine_share=0.4)):
        rows.append({"id": f"r{i}", "text": text, "label": label})
    root.mkdir(parents=True)
    per = -(-n // shards)
    for s in range(shards):
        with open(root / f"part-{s:03d}.jsonl", "w", encoding="utf-8") as f:
            for r in rows[s * per : (s + 1) * per]:
                f.write(json.dumps(r) + "\n")


def time_cli_score(inp: Path, work: Path, options: dict) -> float:
    from synthfilter.config import Config
    from synthfilter.io.shards import discover_shards
    from synthfilter.pipeline.run import ShardExecutor
    from synthfilter.pipeline.stages import score_shard

    cfg = Config.from_dict({**options, "workers": WORKERS, "quiet": True,
                            "report": {"html": False, "diversity": False}})
    shards, _ = discover_shards([str(inp)])
    work.mkdir(parents=True)
    t0 = time.perf_counter()
    with ShardExecutor(WORKERS, len(shards)) as ex:
        ex.map(score_shard, shards, (cfg, work), lambda sh, meta: None)
    return time.perf_counter() - t0


def load_hf(inp: Path, cache: Path) -> Any:
    """The same shards as a memory-mapped Arrow dataset (as ``load_dataset`` gives; not timed)."""
    from datasets import Dataset

    return Dataset.from_json(sorted(str(p) for p in inp.glob("*.jsonl")), cache_dir=str(cache))


def time_hf_map(ds: Any, options: dict) -> float:
    from synthfilter import SynthFilter
    from synthfilter.dedup import lsh

    # Every CLI run chooses its LSH bands afresh (about a second): so does this side.
    lsh._optimal_bands.cache_clear()
    sf = SynthFilter(options)
    t0 = time.perf_counter()
    out = ds.map(sf.annotate, batched=True, num_proc=WORKERS, load_from_cache_file=False)
    elapsed = time.perf_counter() - t0
    assert len(out) == len(ds) and "synth_score" in out.column_names
    out.cleanup_cache_files()
    return elapsed


def time_end_to_end(inp: Path, out: Path, ds: Any, options: dict) -> tuple[float, float]:
    from synthfilter.config import Config
    from synthfilter.hf import filter_dataset
    from synthfilter.pipeline.run import run_pipeline

    opts = {**options, "report": {"html": False, "diversity": False}}
    cfg = Config.from_dict({**opts, "workers": WORKERS, "quiet": True, "dry_run": True})
    t0 = time.perf_counter()
    cli = run_pipeline([str(inp)], out, cfg)
    t_cli = time.perf_counter() - t0
    t0 = time.perf_counter()
    res = filter_dataset(ds, opts, num_proc=WORKERS)
    t_hf = time.perf_counter() - t0
    assert len(res.kept) == cli.report["output"]["kept"], "filter_dataset and synthfilter run disagree"
    return t_cli, t_hf


def best(fn, repeats: int) -> float:  # noqa: ANN001
    return min(fn() for _ in range(repeats))


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--records", type=int, default=DEFAULT_RECORDS)
    ap.add_argument("--quick", action="store_true", help="4,000 records, one repeat")
    ap.add_argument("--repeats", type=int, default=2)
    ap.add_argument("--model", help="detector model directory (default: the shipped one, when built)")
    ap.add_argument("--no-write", action="store_true", help="print only; do not touch RESULTS.md")
    args = ap.parse_args()
    n = 4_000 if args.quick else args.records
    repeats = 1 if args.quick else args.repeats

    import datasets

    datasets.disable_progress_bars()
    tmp = Path(tempfile.mkdtemp(prefix="sf-hfmap-"))
    try:
        inp = tmp / "in"
        build(inp, n, shards=WORKERS * 2)
        ds = load_hf(inp, tmp / "hf-cache")
        results = []
        runs = itertools.count()
        for name, options in configs(args.model).items():
            t_cli = best(lambda: time_cli_score(inp, tmp / f"work-{next(runs)}", options), repeats)
            t_map = best(lambda: time_hf_map(ds, options), repeats)
            e2e_cli, e2e_hf = time_end_to_end(inp, tmp / "out", ds, options)
            shutil.rmtree(tmp / "out", ignore_errors=True)
            results.append((name, t_cli, t_map, e2e_cli, e2e_hf))
            print(f"{name}: CLI score {n / t_cli:,.0f} rec/s, HF map {n / t_map:,.0f} rec/s, "
                  f"ratio {t_map / t_cli:.2f}; end to end CLI {n / e2e_cli:,.0f} rec/s, "
                  f"filter_dataset {n / e2e_hf:,.0f} rec/s", flush=True)
    finally:
        shutil.rmtree(tmp, ignore_errors=True)

    lines = [
        f"{SECTION}, {dt.date.today().isoformat()}",
        "",
        f"_`python benchmarks/hf_map.py{' --quick' if args.quick else ''}"
        f"{f' --records {n}' if not args.quick and n != DEFAULT_RECORDS else ''}"
        f"{' --model ' + Path(args.model).name if args.model else ''}`_",
        "",
        f"{n:,} project-made records (tests/textgen.py), {WORKERS} worker processes on both sides, best of {repeats}; "
        f"{platform.machine()}, {os.cpu_count()} cores, Python {platform.python_version()}, "
        f"datasets {datasets.__version__}. The CLI side reads the JSONL shards; the HF side maps the same "
        "shards loaded once (untimed) as a memory-mapped Arrow Dataset, as `load_dataset` gives (Arrow in, "
        "Arrow cache files out, all columns kept, cache off). Start-up of the worker "
        f"processes is included on both sides. Load average at the end: {os.getloadavg()[0]:.1f} "
        "(a shared machine: compare the columns of one row, not rows of different runs).",
        "",
        "| config | CLI score stage rec/s | `Dataset.map(sf.annotate)` rec/s | map / CLI time | "
        "`run --dry-run` rec/s | `filter_dataset` rec/s |",
        "|---|---:|---:|---:|---:|---:|",
    ]
    for name, t_cli, t_map, e_cli, e_hf in results:
        lines.append(f"| {name} | {n / t_cli:,.0f} | {n / t_map:,.0f} | {t_map / t_cli:.2f} | "
                     f"{n / e_cli:,.0f} | {n / e_hf:,.0f} |")
    if args.model:
        lines += ["", f"Detector row: the model in `{Path(args.model).name}` (not the shipped one), loaded by "
                  "both sides once per worker."]
    elif not (ROOT / "models" / "default" / "card.json").exists():
        lines += ["", "The shipped detector was not built yet: the detector row is missing; rerun when it is."]
    worst = max(t_map / t_cli for _, t_cli, t_map, _, _ in results)
    lines += ["", "| goal | measured | met |", "|---|---:|---|",
              f"| `Dataset.map(sf.annotate, num_proc=2)` within {GOAL}x of the CLI score stage (worst config) | "
              f"{worst:.2f}x | {'yes' if worst <= GOAL else 'no'} |", ""]
    section = "\n".join(lines)
    print("\n" + section)
    if not args.no_write:
        replace_section(TITLE, section)


if __name__ == "__main__":
    main()
