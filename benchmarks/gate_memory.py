"""Peak memory of ``synthfilter gate`` on big WordPress exports (issue 17): it must not grow with
the export.

Writes a WXR export of project-made posts (``tests/helpers.write_wxr_export``: about 70 % "human",
30 % "assistant" register, 3 % verbatim copies, half the posts labelled in a custom field) of each
size, streamed to a temporary file (never held), then gates it with the real CLI in a child
process: ``--json``, ``--report`` and ``--write-approved`` all on; without the detector (duplicates
and provenance labels), and for the sizes in ``--detector-sizes`` with the shipped detector too.
The peak resident memory is the child's own (``wait4``: ``ru_maxrss``). The export is deleted
after each size.

    python benchmarks/gate_memory.py                      # 200 MB and 2 GB; the detector on 200 MB
    python benchmarks/gate_memory.py --sizes 200 --detector-sizes "" --no-record
    python benchmarks/gate_memory.py --tmp /big/disk      # where the exports are written
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path

HERE = Path(__file__).resolve().parent
ROOT = HERE.parent
sys.path.insert(0, str(ROOT / "tests"))

from helpers import write_wxr_export  # noqa: E402
from _results import publish  # noqa: E402

TITLE = "CMS gate memory (issue 17)"
GOALS_MB = {200: 150, 2000: 200}  # export MB -> peak MB allowed
def gate_peak(export: Path, out: Path, detector: bool) -> dict:
    """Gate ``export`` in a child process; its wall seconds, peak RSS and verdict."""
    shutil.rmtree(out, ignore_errors=True)
    out.mkdir()
    # Without the detector the unlabelled half has no estimate: no synthetic rule then.
    rules = ["--max-synthetic", "0.4"] if detector else ["--no-detector"]
    cmd = [sys.executable, "-m", "synthfilter", "gate", str(export), *rules, "--max-duplicates", "0.05",
           "--provenance-field", "ai_generated", "--provenance-map", "1=machine,0=human",
           "--json", str(out / "gate.json"), "--report", str(out / "gate.html"), "--write-approved", str(out / "approved"),
           "--quiet"]
    env = {**os.environ, "PYTHONPATH": str(ROOT)}
    t0 = time.monotonic()
    proc = subprocess.Popen(cmd, env=env, stderr=subprocess.PIPE)
    _, status, usage = os.wait4(proc.pid, 0)
    seconds = time.monotonic() - t0
    err = proc.stderr.read().decode() if proc.stderr else ""
    code = os.waitstatus_to_exitcode(status)
    if code not in (0, 1):
        raise SystemExit(f"gate failed (exit {code}): {err.strip()}")
    manifest = json.loads((out / "approved" / "manifest.json").read_text())
    return {"seconds": seconds, "peak_mb": usage.ru_maxrss / 1024, "exit": code,
            "records": manifest["conservation"]["records"], "approved": manifest["conservation"]["approved"],
            "conserved": manifest["conservation"]["ok"]}


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--sizes", default="200,2000", help="export sizes in MB, comma-separated")
    ap.add_argument("--detector-sizes", default="200", help="sizes (MB) also gated with the detector on")
    ap.add_argument("--tmp", default=None, help="directory for the exports (default: the system's temp directory)")
    ap.add_argument("--no-record", action="store_true", help="do not write to RESULTS.md")
    args = ap.parse_args()
    rows = []
    load_before = os.getloadavg()[0]
    with_detector = {int(s) for s in args.detector_sizes.split(",") if s.strip()}
    for mb in (int(s) for s in args.sizes.split(",")):
        root = Path(tempfile.mkdtemp(prefix="sf-gate-mem-", dir=args.tmp))
        try:
            export = root / "export.xml"
            t0 = time.monotonic()
            posts = write_wxr_export(export, mb * 1_000_000)
            size = export.stat().st_size
            print(f"{mb} MB: wrote {size / 1e6:,.0f} MB, {posts:,} posts in {time.monotonic() - t0:.0f} s", flush=True)
            for detector in (False, True) if mb in with_detector else (False,):
                r = gate_peak(export, root / "out", detector)
                goal = GOALS_MB.get(mb)
                met = "" if goal is None else f"≤ {goal} MB: **{'met' if r['peak_mb'] <= goal else 'not met'}**"
                rows.append(f"| {size / 1e6:,.0f} MB | {'shipped model' if detector else 'off'} | {posts:,} | "
                            f"{r['records']:,} | {r['approved']:,} | {'yes' if r['conserved'] else 'NO'} | "
                            f"{r['seconds']:.0f} | {r['peak_mb']:.0f} | {met} |")
                print(rows[-1], flush=True)
        finally:
            shutil.rmtree(root, ignore_errors=True)
    body = "\n".join([
        f"{os.cpu_count()} cores, 1-minute load average {load_before:.2f} before, {os.getloadavg()[0]:.2f} after. "
        "`synthfilter gate EXPORT --max-synthetic 0.4 --max-duplicates 0.05 --provenance-field ai_generated "
        "--provenance-map 1=machine,0=human --json --report --write-approved` (`--no-detector` and no "
        "`--max-synthetic` where the detector is off: half the posts are unlabelled); peak = the gate process's "
        "maximum resident set size. Exports of project-made posts (3 % verbatim copies, half labelled), written "
        "and deleted by the benchmark.",
        "",
        "| export | detector | posts | records gated | approved | conserved | seconds | peak RSS MB | goal |",
        "|---|---|---:|---:|---:|---|---:|---:|---|",
        *rows,
    ])
    publish(TITLE, "gate_memory.py", body, record=not args.no_record)


if __name__ == "__main__":
    main()
