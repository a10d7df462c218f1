"""Throughput of ``synthfilter run`` against the I/O floor, on project-made shards.

Builds N gzip JSONL shards of project-made text, then in the same run times:
  * the floor: plain orjson read + write of the same shards (one process, same compression);
  * ``synthfilter run`` (the real CLI, a subprocess) with 1 and 2 workers, for each config.
Each timing is the best of ``--repeat`` runs (floor included). Prints records/s, MB/s, peak RSS
and the ratio to the floor, and writes them as the "Throughput" section of benchmarks/RESULTS.md
(replacing that section only; the rest of the file is left as it is). Run it on a quiet machine:
the 1-minute load average before and after is recorded with the figures.

    python benchmarks/throughput.py            # 16 shards x 20,000 records, all configs
    python benchmarks/throughput.py --configs "exact dedup only"
    python benchmarks/throughput.py --quick    # 4 shards x 2,000 records
    python benchmarks/throughput.py --configs "default (dedup + detector),default without language ID" \
        --title "Language identification cost (issue 16)"   # what language ID adds to a run
    python benchmarks/throughput.py --compression none --shards 8 --records 12500 \
        --configs "exact dedup only,exact + near dedup" --title "Throughput on plain JSONL (issue 15)"

``--compression none`` writes plain JSONL shards (and a plain floor): without gzip in both, the
floor is parsing and writing alone, so the ratio shows what dedup itself costs. CPU seconds (user
+ system, the run's processes together) are reported beside the wall time.
"""

from __future__ import annotations

import argparse
import datetime as dt
import gzip
import os
import platform
import shlex
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
from _results import replace_section  # noqa: E402

NO_LANGUAGE_ID = "{no-language-id.toml}"  # replaced by a config file written in the work directory
CONFIGS = {
    "exact dedup only": ["--no-detector", "--no-near-dedup"],
    "exact + near dedup": ["--no-detector"],
    # What the repetition filter adds to the cheapest run that has it.
    "exact + near dedup + --reject-repetitive": ["--no-detector", "--reject-repetitive"],
    "default + --reject-repetitive": ["--reject-repetitive"],
    "default (dedup + detector)": [],
    # The same run without language identification ([language] identify = "never"): the
    # difference to the default is what language ID costs (issue 16: goal <= 15 % of the run).
    "default without language ID": ["--config", NO_LANGUAGE_ID],
}


def build_shards(root: Path, shards: int, per_shard: int, compression: str = "gz") -> tuple[int, int]:
    root.mkdir(parents=True)
    total_bytes = 0
    for s in range(shards):
        rows = corpus(per_shard, seed=1000 + s, machine_share=0.4)
        data = b"".join(orjson.dumps({"id": f"{s}-{i}", "text": t, "label": lab}) + b"\n" for i, (lab, t) in enumerate(rows))
        total_bytes += len(data)
        if compression == "gz":
            (root / f"part-{s:04d}.jsonl.gz").write_bytes(gzip.compress(data, compresslevel=6, mtime=0))
        else:
            (root / f"part-{s:04d}.jsonl").write_bytes(data)
    return shards * per_shard, total_bytes


def io_floor(inp: Path, out: Path) -> float:
    """Read every line, parse it with orjson, serialise it again, write it (gzip-compressed when
    the shards are)."""
    out.mkdir(parents=True)
    t0 = time.perf_counter()
    for src in sorted(inp.glob("*.jsonl*")):
        gz = src.suffix == ".gz"
        with (gzip.open(src, "rb") if gz else open(src, "rb")) as f, \
                (gzip.GzipFile(out / src.name, "wb", mtime=0, compresslevel=6) if gz else open(out / src.name, "wb")) as g:
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
    "u=resource.getrusage(resource.RUSAGE_CHILDREN); print(rc, dt, u.ru_maxrss, u.ru_utime + u.ru_stime)"
)


def time_run(inp: Path, out: Path, workers: int, extra: list[str]) -> tuple[float, float, float]:
    """Wall seconds, peak RSS (MiB, largest process of the run) and CPU seconds (user + system,
    every process of the run) of the real CLI."""
    cmd = [sys.executable, "-c", _RSS_WRAPPER, sys.executable, "-m", "synthfilter", "run", str(inp),
           "--out", str(out), "--workers", str(workers), "-q", *extra]
    res = subprocess.run(cmd, capture_output=True, text=True, check=True)
    rc, seconds, rss_kb, cpu = res.stdout.split()
    if rc != "0":
        raise SystemExit(f"synthfilter run failed: {res.stderr}")
    return float(seconds), int(rss_kb) / 1024, float(cpu)


TITLE = "Throughput (issue 2)"


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--shards", type=int, default=16)
    ap.add_argument("--records", type=int, default=20000, help="records per shard")
    ap.add_argument("--quick", action="store_true")
    ap.add_argument("--configs", default=",".join(CONFIGS), help="comma-separated subset of: " + ", ".join(CONFIGS))
    ap.add_argument("--repeat", type=int, default=3, help="time each run this many times, keep the best")
    ap.add_argument("--no-record", action="store_true", help="do not write to RESULTS.md")
    ap.add_argument("--title", default=TITLE, help="the RESULTS.md section to write (e.g. a partial run's own)")
    ap.add_argument("--compression", choices=("gz", "none"), default="gz", help="shards (and floor) gzip or plain")
    args = ap.parse_args()
    if args.quick:
        args.shards, args.records = 4, 2000
    work = Path(tempfile.mkdtemp(prefix="sf-throughput-"))
    try:
        n, raw_bytes = build_shards(work / "in", args.shards, args.records, args.compression)
        mb = raw_bytes / 1e6
        load_before = os.getloadavg()[0]
        floor = min(io_floor(work / "in", work / f"floor-{r}") for r in range(args.repeat))
        rows = [("I/O floor (orjson read+write, 1 process)", 1, floor, None, floor)]
        no_lang = work / "no-language-id.toml"
        no_lang.write_text('[language]\nidentify = "never"\n', encoding="utf-8")
        for name in [c.strip() for c in args.configs.split(",") if c.strip()]:
            extra = [str(no_lang) if a == NO_LANGUAGE_ID else a for a in CONFIGS[name]]
            for workers in (1, 2):
                runs = [time_run(work / "in", work / f"out-{len(rows)}-{r}", workers, extra) for r in range(args.repeat)]
                secs, _, cpu = min(runs)
                rows.append((f"synthfilter run: {name}", workers, secs, max(r[1] for r in runs), cpu))
        load_after = os.getloadavg()[0]
        lines = [
            f"## {args.title}, {dt.date.today()}",
            "",
            f"_`python benchmarks/throughput.py{''.join(' ' + shlex.quote(a) for a in sys.argv[1:])}`_: {n:,} records, {mb:.1f} MB uncompressed "
            f"({raw_bytes / n:,.0f} B a record), {args.shards} {'gzip' if args.compression == 'gz' else 'plain JSONL'} shards, "
            f"{os.cpu_count()} cores, Python {platform.python_version()}; best of {args.repeat} runs each; "
            f"1-minute load average {load_before:.2f} before, {load_after:.2f} after (2 = both cores busy).",
            "",
            "| what | workers | seconds | records/s | MB/s | peak RSS MiB | time / floor | CPU s | CPU / floor |",
            "|---|---|---|---|---|---|---|---|---|",
        ]
        for name, workers, secs, rss, cpu in rows:
            lines.append(
                f"| {name} | {workers} | {secs:.2f} | {n / secs:,.0f} | {mb / secs:.1f} | "
                f"{'' if rss is None else f'{rss:.0f}'} | {secs / floor:.2f}x | {cpu:.2f} | {cpu / floor:.2f}x |"
            )
        secs_of = {(name, workers): secs for name, workers, secs, *_ in rows}
        for workers in (1, 2):
            with_lid = secs_of.get(("synthfilter run: default (dedup + detector)", workers))
            without = secs_of.get(("synthfilter run: default without language ID", workers))
            if with_lid and without:
                lines.append(f"\nLanguage identification with {workers} worker(s): {with_lid - without:+.2f} s, "
                             f"{(with_lid - without) / with_lid:.1%} of the default run's time (goal <= 15 %).")
        text = "\n".join(lines) + "\n"
        print(text)
        if not args.no_record:
            results = HERE / "RESULTS.md"
            replace_section(args.title, text, results)
            print(f"recorded in {results}")
    finally:
        shutil.rmtree(work, ignore_errors=True)


if __name__ == "__main__":
    main()
