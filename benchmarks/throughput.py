"""Throughput of ``synthfilter run`` against the I/O floor, on project-made shards.

Builds N gzip JSONL shards of project-made text, then in the same run times:
  * the floor: plain orjson read + write of the same shards (one process, same compression);
  * ``synthfilter run`` (the real CLI, a subprocess) with 1 and 2 workers, for each config.
Prints records/s, MB/s, peak RSS and the ratio to the floor; appends to benchmarks/RESULTS.md.

    python benchmarks/throughput.py            # 16 shards x 20,000 records
    python benchmarks/throughput.py --quick    # 4 shards x 2,000 records
"""

from __future__ import annotations

import argparse
import datetime as dt
import gzip
import json
import os
import platform
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import orjson

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE.parent / "tests"))

from textgen import corpus  # noqa: E402

CONFIGS = {
    "exact dedup only": ["--no-detector", "--no-near-dedup"],
    "exact + near dedup": ["--no-detector"],
    "default (dedup + detector)": [],
}


def build_shards(root: Path, shards: int, per_shard: int) -> tuple[int, int]:
    root.mkdir(parents=True)
    total_bytes = 0
    for s in range(shards):
        rows = corpus(per_shard, seed=1000 + s, machine_share=0.4)
        data = b"".join(orjson.dumps({"id": f"{s}-{i}", "text": t, "label": lab}) + b"\n" for i, (lab, t) in enumerate(rows))
        total_bytes += len(data)
        (root / f"part-{s:04d}.jsonl.gz").write_bytes(gzip.compress(data, compresslevel=6, mtime=0))
    return shards * per_shard, total_bytes


def io_floor(inp: Path, out: Path) -> float:
    """Read every line, parse it with orjson, serialise it again, write it gzip-compressed."""
    out.mkdir(parents=True)
    t0 = time.perf_counter()
    for src in sorted(inp.glob("*.jsonl.gz")):
        with gzip.open(src, "rb") as f, gzip.GzipFile(out / src.name, "wb", mtime=0, compresslevel=6) as g:
            buf = []
            for line in f:
                buf.append(orjson.dumps(orjson.loads(line)))
                buf.append(b"\n")
                if len(buf) >= 4096:
                    g.write(b"".join(buf))
                    buf.clear()
            g.write(b"".join(buf))
    return time.perf_counter() - t0


_RSS_WRAPPER = (
    "import resource, subprocess, sys, time; t=time.perf_counter(); "
    "rc=subprocess.run(sys.argv[1:]).returncode; dt=time.perf_counter()-t; "
    "print(rc, dt, resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss)"
)


def time_run(inp: Path, out: Path, workers: int, extra: list[str]) -> tuple[float, float]:
    """Wall seconds and peak RSS (MiB, largest process of the run) of the real CLI."""
    cmd = [sys.executable, "-c", _RSS_WRAPPER, sys.executable, "-m", "synthfilter", "run", str(inp),
           "--out", str(out), "--workers", str(workers), "-q", *extra]
    res = subprocess.run(cmd, capture_output=True, text=True, check=True)
    rc, seconds, rss_kb = res.stdout.split()
    if rc != "0":
        raise SystemExit(f"synthfilter run failed: {res.stderr}")
    return float(seconds), int(rss_kb) / 1024


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--shards", type=int, default=16)
    ap.add_argument("--records", type=int, default=20000, help="records per shard")
    ap.add_argument("--quick", action="store_true")
    ap.add_argument("--configs", default=",".join(CONFIGS), help="comma-separated subset of: " + ", ".join(CONFIGS))
    ap.add_argument("--no-record", action="store_true", help="do not append to RESULTS.md")
    args = ap.parse_args()
    if args.quick:
        args.shards, args.records = 4, 2000
    work = Path(tempfile.mkdtemp(prefix="sf-throughput-"))
    try:
        n, raw_bytes = build_shards(work / "in", args.shards, args.records)
        mb = raw_bytes / 1e6
        floor = io_floor(work / "in", work / "floor")
        rows = [("I/O floor (orjson read+write, 1 process)", 1, floor, None)]
        for name in [c.strip() for c in args.configs.split(",") if c.strip()]:
            for workers in (1, 2):
                secs, rss = time_run(work / "in", work / f"out-{len(rows)}", workers, CONFIGS[name])
                rows.append((f"synthfilter run: {name}", workers, secs, rss))
        lines = [
            f"### Throughput ({dt.date.today()}, {n:,} records, {mb:.1f} MB uncompressed, {args.shards} gzip shards, "
            f"{os.cpu_count()} cores, Python {platform.python_version()})",
            "",
            "| what | workers | seconds | records/s | MB/s | peak RSS MiB | time / floor |",
            "|---|---|---|---|---|---|---|",
        ]
        for name, workers, secs, rss in rows:
            lines.append(
                f"| {name} | {workers} | {secs:.2f} | {n / secs:,.0f} | {mb / secs:.1f} | "
                f"{'' if rss is None else f'{rss:.0f}'} | {secs / floor:.2f}x |"
            )
        text = "\n".join(lines) + "\n"
        print(text)
        if not args.no_record:
            results = HERE / "RESULTS.md"
            with open(results, "a", encoding="utf-8") as f:
                f.write("\n" + text)
            print(f"appended to {results}")
    finally:
        shutil.rmtree(work, ignore_errors=True)


if __name__ == "__main__":
    main()
