"""A run killed with SIGKILL at any point and resumed ends with outputs identical to a clean run."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

from helpers import make_records, write_jsonl

ARGS = ["--no-detector", "--no-near-dedup", "--workers", "1", "-q"]


def _outputs(out: Path) -> dict[str, bytes]:
    return {
        p.relative_to(out).as_posix(): p.read_bytes()
        for p in sorted(out.rglob("*"))
        if p.is_file() and p.name not in ("manifest.json", "report.json", "report.html")
    }


def _start(inp: Path, out: Path, *extra: str) -> subprocess.Popen:
    return subprocess.Popen(
        [sys.executable, "-m", "synthfilter", "run", str(inp), "--out", str(out), *ARGS, *extra],
        stdout=subprocess.PIPE, stderr=subprocess.PIPE,
    )


def _kill_when(proc: subprocess.Popen, ready, timeout: float = 120) -> bool:
    """SIGKILL the run as soon as ``ready()``; False if the run finished first."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            return False
        if ready():
            os.kill(proc.pid, signal.SIGKILL)
            proc.wait()
            return True
        time.sleep(0.002)
    proc.kill()
    pytest.fail("run neither finished nor reached the kill point")


@pytest.fixture(scope="module")
def corpus_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    inp = tmp_path_factory.mktemp("resume") / "in"
    for i in range(16):
        write_jsonl(inp / f"part-{i:02d}.jsonl.gz", make_records(1500, seed=i % 5, dup_every=9), "gz")
    return inp


@pytest.fixture(scope="module")
def reference(corpus_dir: Path, tmp_path_factory: pytest.TempPathFactory) -> dict[str, bytes]:
    out = tmp_path_factory.mktemp("ref") / "out"
    proc = _start(corpus_dir, out)
    assert proc.wait() == 0, proc.stderr.read().decode()
    return _outputs(out)


def _scored(out: Path) -> int:
    return len(list((out / "_synthfilter" / "shards").glob("*/score.json"))) if out.exists() else 0


def _written(out: Path) -> int:
    return len(list((out / "kept").glob("*.gz"))) if (out / "kept").exists() else 0


@pytest.mark.parametrize("point", ["mid-score", "mid-write"])
def test_sigkill_then_resume_matches_clean_run(corpus_dir: Path, reference: dict[str, bytes], tmp_path: Path,
                                               point: str) -> None:
    out = tmp_path / "out"
    ready = (lambda: _scored(out) >= 5) if point == "mid-score" else (lambda: _written(out) >= 5)
    killed = _kill_when(_start(corpus_dir, out), ready)
    assert killed, "the run finished before the kill point; make the corpus bigger"
    assert not (out / "manifest.json").exists()
    # A plain rerun refuses to touch the half-finished directory...
    proc = _start(corpus_dir, out)
    assert proc.wait() == 2 and b"--resume" in proc.stderr.read()
    # ...and --resume finishes it, identical to the uninterrupted run.
    proc = _start(corpus_dir, out, "--resume")
    assert proc.wait() == 0, proc.stderr.read().decode()
    assert _outputs(out) == reference
    assert not list(out.rglob(".*.tmp-*"))


def test_resume_refuses_changed_settings(corpus_dir: Path, tmp_path: Path) -> None:
    out = tmp_path / "out"
    assert _kill_when(_start(corpus_dir, out), lambda: _scored(out) >= 2)
    proc = _start(corpus_dir, out, "--resume", "--seed", "5")
    assert proc.wait() == 2
    assert b"different settings" in proc.stderr.read()
