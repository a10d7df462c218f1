"""Fault tolerance of ``synthfilter run`` (issue 17): damaged shards, kills at any moment, full disks.

Three measurements, each on project-made shards, with the real CLI in a process group of its own:

  * recovery: a 2,000-record ``.jsonl.gz`` cut in half, a ``.jsonl.zst`` cut at two thirds and a
    Parquet file whose last row group is overwritten, run with ``--on-error quarantine``: records
    kept against the complete records an independent decoder (zlib, zstandard, pyarrow) gets out;
  * kill points: one as each phase begins (start, setup, score, decide, write, report), then
    moments drawn uniformly over an uninterrupted run's duration; at each the run
    is SIGKILLed (the whole process group, or every 4th time its main process only, leaving the
    workers to die on their own), then resumed once with ``--resume``; the resumed outputs must
    equal the uninterrupted run's (kept/, rejected/ byte for byte, report.json without timing,
    manifest.json without times) on that first try. The phase each kill landed in is read from
    what the run left;
  * disk full: a tmpfs (root) of 10 % ... 90 % of the most an uninterrupted run holds on disk at
    once, or a per-file size limit (RLIMIT_FSIZE) of 10 % ... 90 % of the largest output without
    root: exit code, the one error line, every file under a final name complete, then ``--resume``
    with room.

Prints the figures and writes the "Fault tolerance (issue 17)" section of benchmarks/RESULTS.md.

    python benchmarks/fault_tolerance.py               # 24 kill points, 8 shards x 3,000 records
    python benchmarks/fault_tolerance.py --quick       # 24 kill points, 6 shards x 600 records
    python benchmarks/fault_tolerance.py --points 40 --detector
"""

from __future__ import annotations

import argparse
import gzip
import json
import os
import random
import shutil
import subprocess
import sys
import tempfile
import time
import zlib
from collections import Counter
from pathlib import Path

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE.parent / "tests"))

from faults import after, can_mount_tmpfs, finish, kill_at, peak_disk_use, leftovers, outputs, phase, start_run, wait_group_gone  # noqa: E402
from helpers import make_records, read_jsonl, write_jsonl  # noqa: E402
from _results import publish  # noqa: E402

TITLE = "Fault tolerance (issue 17)"
PHASES = ("start", "setup", "score", "decide", "write", "report", "finishing")


def recovery(root: Path) -> list[str]:
    import pyarrow as pa
    import pyarrow.parquet as pq
    import zstandard

    rows = []
    inp = root / "in"
    lines = [json.dumps(r).encode() for r in make_records(2000, seed=71)]
    body = b"".join(x + b"\n" for x in lines)
    gz = gzip.compress(body)
    write = {"half.jsonl.gz": gz[: len(gz) // 2]}
    # Records of their own (seed 73): copies of the gzip shard's would be rejected as duplicates.
    zs = zstandard.ZstdCompressor(level=3).compress(b"".join(json.dumps(r).encode() + b"\n" for r in make_records(2000, seed=73)))
    write["cut.jsonl.zst"] = zs[: len(zs) * 2 // 3]
    inp.mkdir(parents=True)
    for name, data in write.items():
        (inp / name).write_bytes(data)
    readable = {
        "half.jsonl.gz": zlib.decompressobj(wbits=31).decompress(write["half.jsonl.gz"]).count(b"\n"),
        "cut.jsonl.zst": zstandard.ZstdDecompressor().decompressobj().decompress(write["cut.jsonl.zst"]).count(b"\n"),
    }
    table = pa.Table.from_pylist(make_records(2000, seed=72))
    pq.write_table(table, inp / "p.parquet", row_group_size=500)
    col = pq.ParquetFile(inp / "p.parquet").metadata.row_group(3).column(1)
    data = bytearray((inp / "p.parquet").read_bytes())
    for k in range(col.data_page_offset, col.data_page_offset + 64):
        data[k] ^= 0x5A
    (inp / "p.parquet").write_bytes(bytes(data))
    readable["p.parquet"] = 1500
    out = root / "out"
    code, err = finish(start_run(inp, out, ["--no-detector", "--no-near-dedup", "--on-error", "quarantine", "-q"]))
    assert code == 0, err
    manifest = {i["rel"]: i for i in json.loads((out / "manifest.json").read_text())["inputs"]}
    for name in ("half.jsonl.gz", "cut.jsonl.zst", "p.parquet"):
        m = manifest[name]
        if name.endswith(".parquet"):
            kept = pq.read_table(out / "kept" / name).num_rows
            reasons = [r["synthfilter"]["reason"] for r in pq.read_table(out / "rejected" / name).to_pylist()]
        else:
            kept = len(read_jsonl(out / "kept" / name))
            reasons = [json.loads(line)["synthfilter"]["reason"] for line in read_jsonl(out / "rejected" / name)]
        malformed = reasons.count("malformed")
        brk = m["breaks"][0]
        rows.append(f"| {name} | {readable[name]:,} | {kept:,} | {malformed:,} | {len(reasons) - malformed:,} | {len(m['breaks'])} | "
                    f"{brk['kind']} at byte {brk['offset']:,} | {m['unreadable_bytes']:,} |")
    return rows


def _shards_with(out: Path, name: str) -> int:
    return len(list((out / "_synthfilter" / "shards").glob(f"*/{name}")))


# A kill as each phase begins, from what the run has written so far (polled every millisecond).
_PHASE_POINTS = {
    "start": lambda out: lambda: True,
    "setup": lambda out: lambda: (out / "_synthfilter").exists(),
    "score": lambda out: lambda: _shards_with(out, "score.json") >= 1,
    "decide": lambda out: lambda: _shards_with(out, "decisions.arrow") >= 1,
    "write": lambda out: lambda: _shards_with(out, "written.json") >= 1,
    "report": lambda out: lambda: (out / "report.json").exists(),
}


def kill_points(root: Path, points: int, shards: int, records: int, args: list[str], seed: int) -> tuple[list[str], dict]:
    inp = root / "in"
    for i in range(shards):
        write_jsonl(inp / f"part-{i:03d}.jsonl.gz", make_records(records, seed=i % 7, dup_every=9), "gz")
    t0 = time.monotonic()
    code, err = finish(start_run(inp, root / "ref", args))
    seconds = time.monotonic() - t0
    assert code == 0, err
    reference = outputs(root / "ref")
    rng = random.Random(seed)
    results = []
    finished_first = 0
    targeted = list(_PHASE_POINTS.items())
    while len(results) < points:
        k = len(results)
        out = root / f"out{k}"
        group = k % 4 != 3
        if k < len(targeted):  # one kill as each phase begins: short phases are rarely drawn
            aim, when = targeted[k][0], targeted[k][1](out)
        else:
            aim, when = "random", after(rng.uniform(0.02, 1.0) * seconds)
        t_start = time.monotonic()
        proc = start_run(inp, out, args)
        if not kill_at(proc, when, group=group):
            finished_first += 1
            proc.wait()
            shutil.rmtree(out)
            if aim != "random":
                raise SystemExit(f"the run finished before the {aim} kill point")
            continue
        delay = time.monotonic() - t_start
        proc.wait()
        stragglers = wait_group_gone(proc.pid, timeout=10)
        where = phase(out)
        t1 = time.monotonic()
        code, err = finish(start_run(inp, out, args, "--resume"))
        ok = code == 0 and outputs(out) == reference and not leftovers(out)
        results.append({"point": k + 1, "aim": aim, "at_s": delay, "mode": "group" if group else "main only", "phase": where,
                        "resume_exit": code, "identical": ok, "stragglers": len(stragglers),
                        "resume_s": time.monotonic() - t1, "error": err.strip().splitlines()[-1] if code else ""})
        print(f"point {k + 1:2d}: kill ({results[-1]['mode']}) at {delay:5.2f} s in {where:9s} -> "
              f"resume exit {code}, identical {ok}", flush=True)
        shutil.rmtree(out, ignore_errors=True)
    rows = [f"| {r['point']} | {r['aim']} | {r['at_s']:.2f} | {r['mode']} | {r['phase']} | {r['stragglers']} | {r['resume_exit']} | "
            f"{'yes' if r['identical'] else 'NO'} |" for r in results]
    summary = {"seconds": seconds, "finished_first": finished_first, "identical": sum(r["identical"] for r in results),
               "points": len(results), "phases": Counter(r["phase"] for r in results),
               "stragglers": sum(r["stragglers"] for r in results)}
    return rows, summary


def disk_full(root: Path, args: list[str]) -> tuple[list[str], str, str]:
    import resource

    inp = root / "in"
    for i in range(6):
        write_jsonl(inp / f"part-{i:02d}.jsonl.gz", make_records(1500, seed=40 + i, dup_every=7), "gz")
    kind = "tmpfs" if can_mount_tmpfs(root / "probe") else "file-size limit (RLIMIT_FSIZE)"
    if kind == "tmpfs":
        # Sized against the most the run ever holds (work directory and outputs together): the
        # larger disks then fill while the outputs are written, not only while scoring.
        size = peak_disk_use(inp, root / "measure", args)
        basis = "the most an uninterrupted run holds on it at once"
    else:
        basis = "the largest output file (a per-file limit)"
    code, err = finish(start_run(inp, root / "ref", args))
    assert code == 0, err
    reference = outputs(root / "ref")
    if kind != "tmpfs":
        size = max(p.stat().st_size for p in (root / "ref").rglob("*") if p.is_file())
    rows = []
    for share in (0.1, 0.3, 0.5, 0.7, 0.9):
        limit = max(int(size * share) // 4096 * 4096, 16384)
        disk = root / f"disk{int(share * 100)}"
        disk.mkdir()
        popen: dict = {}
        if kind == "tmpfs":
            subprocess.run(["mount", "-t", "tmpfs", "-o", f"size={limit}", "tmpfs", str(disk)], check=True)
        else:
            popen = {"preexec_fn": lambda: resource.setrlimit(resource.RLIMIT_FSIZE, (limit, limit))}
        try:
            out = disk / "out"
            code, err = finish(start_run(inp, out, args, **popen))
            lines = err.strip().splitlines()
            whole = all(p.read_bytes() == reference[p.relative_to(out).as_posix()]
                        for p in out.rglob("*") if p.is_file() and p.parent.name in ("kept", "rejected"))
            finals = sum(1 for p in out.rglob("*") if p.is_file() and p.parent.name in ("kept", "rejected"))
            tmp = len(list(out.rglob(".*.tmp-*")))
            if kind == "tmpfs":
                subprocess.run(["mount", "-o", "remount,size=512m", str(disk)], check=True)
            code2, err2 = finish(start_run(inp, out, args, "--resume"))
            same = code2 == 0 and outputs(out) == reference and not leftovers(out)
            message = lines[-1] if lines else ""
            message = message.replace(str(root), "…")
            rows.append(f"| {share:.0%} ({limit // 1024:,} KiB) | {code} | {len(lines)} | `{message}` | {finals} | "
                        f"{'yes' if whole else 'NO'} | {tmp} | {code2} | {'yes' if same else 'NO'} |")
            print(rows[-1], flush=True)
        finally:
            if kind == "tmpfs":
                subprocess.run(["umount", "-l", str(disk)], check=False)
    return rows, kind, basis


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--points", type=int, default=24, help="kill points (at least 20 for the issue's goal)")
    ap.add_argument("--shards", type=int, default=8)
    ap.add_argument("--records", type=int, default=3000, help="records per shard")
    ap.add_argument("--workers", type=int, default=2)
    ap.add_argument("--detector", action="store_true", help="score with the shipped detector too (slower)")
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--quick", action="store_true")
    ap.add_argument("--no-record", action="store_true", help="do not write to RESULTS.md")
    args = ap.parse_args()
    if args.quick:
        args.shards, args.records = 6, 600
    run_args = ([] if args.detector else ["--no-detector"]) + ["--workers", str(args.workers), "-q"]
    root = Path(tempfile.mkdtemp(prefix="sf-faults-"))
    load_before = os.getloadavg()[0]
    try:
        rec_rows = recovery(root / "recovery")
        kill_rows, summary = kill_points(root / "kills", args.points, args.shards, args.records, run_args, args.seed)
        full_rows, kind, basis = disk_full(root / "full", ["--no-detector", "--no-near-dedup", "--workers", str(args.workers), "-q"])
    finally:
        shutil.rmtree(root, ignore_errors=True)
    load_after = os.getloadavg()[0]
    phases = ", ".join(f"{p} {summary['phases'][p]}" for p in PHASES if summary["phases"].get(p))
    body = "\n".join([
        f"{os.cpu_count()} cores, 1-minute load average {load_before:.2f} before, {load_after:.2f} after.",
        "",
        "**Damaged shards** (`--on-error quarantine`): records kept against the complete records an independent "
        "decoder (zlib / zstandard / pyarrow row groups) gets out of the damaged file.",
        "",
        "| shard | readable | kept | malformed | other rejected | breaks | where | unreadable bytes |",
        "|---|---:|---:|---:|---:|---:|---|---:|",
        *rec_rows,
        "",
        f"**Kill points**: {summary['points']} SIGKILLs, the first {len(_PHASE_POINTS)} as each phase begins "
        f"(aimed at: the file that shows it appeared), the rest at moments drawn uniformly over an uninterrupted run of "
        f"{summary['seconds']:.1f} s ({args.shards} gzip shards x {args.records:,} records, `{' '.join(run_args)}`; "
        f"{summary['finished_first']} draws fell after the run had finished and were drawn again), every 4th to the "
        f"main process only. **{summary['identical']} of {summary['points']} resumed byte-identical on the first "
        f"`--resume`**; phases hit: {phases}; worker processes alive 10 s after a kill: {summary['stragglers']}.",
        "",
        "| point | aimed at | kill at, s | killed | phase | left alive | resume exit | identical |",
        "|---:|---|---:|---|---|---:|---:|---|",
        *kill_rows,
        "",
        f"**Disk full** ({kind}, the output directory on it; 6 gzip shards x 1,500 records; sizes are shares of "
        f"{basis}). `files` = files under a final name in kept/ and rejected/ when the run stopped; `whole` = each "
        "byte-identical to the uninterrupted run's.",
        "",
        "| disk | exit | stderr lines | message | files | whole | temp files left | resume exit | identical |",
        "|---|---:|---:|---|---:|---|---:|---:|---|",
        *full_rows,
    ])
    publish(TITLE, "fault_tolerance.py", body, record=not args.no_record)


if __name__ == "__main__":
    main()
