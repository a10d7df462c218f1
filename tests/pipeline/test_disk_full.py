"""A full disk or a read-only output: one clear line naming what could not be written, nothing
half-written under a final name, and ``--resume`` once the disk has room (or is writable again)
ends identical to an uninterrupted run.

The disk is a real tmpfs of a few hundred KiB when the tests can mount one (root); otherwise
every run gets a file-size limit (RLIMIT_FSIZE: a write past it fails with EFBIG, as a full
disk fails a write with ENOSPC) and read-only is a directory without write permission.
"""

from __future__ import annotations

import os
import resource
import subprocess
from pathlib import Path
from typing import Any

import pytest

from faults import can_mount_tmpfs, finish, kill_at, leftovers, outputs, peak_disk_use, phase, start_run, wait_group_gone
from helpers import make_records, write_jsonl

ARGS = ["--no-detector", "--no-near-dedup", "--workers", "2", "-q"]


class SmallDisk:
    """An output location that runs out of space after ``size`` bytes: a tmpfs, or a file-size
    limit on the runs (``popen`` gives the keyword arguments that start a run under it)."""

    def __init__(self, root: Path, size: int):
        self.root = root
        self.kind = "tmpfs" if can_mount_tmpfs(root / "probe") else "rlimit"
        self.size = size
        self.limited = True
        root.mkdir(parents=True, exist_ok=True)
        if self.kind == "tmpfs":
            subprocess.run(["mount", "-t", "tmpfs", "-o", f"size={size}", "tmpfs", str(root)], check=True)

    def popen(self) -> dict[str, Any]:
        if self.kind == "tmpfs" or not self.limited:
            return {}
        size = self.size

        def limit() -> None:
            resource.setrlimit(resource.RLIMIT_FSIZE, (size, size))

        return {"preexec_fn": limit}

    def grow(self) -> None:
        self.limited = False
        if self.kind == "tmpfs":
            subprocess.run(["mount", "-o", "remount,size=256m", str(self.root)], check=True)

    def read_only(self, ro: bool = True) -> None:
        if self.kind == "tmpfs":
            subprocess.run(["mount", "-o", f"remount,{'ro' if ro else 'rw'}", str(self.root)], check=True)
        else:
            for p in [self.root, *self.root.rglob("*")]:
                if p.is_dir():
                    p.chmod(0o555 if ro else 0o755)

    def close(self) -> None:
        if self.kind == "tmpfs":
            subprocess.run(["umount", "-l", str(self.root)], check=False)


@pytest.fixture(scope="module")
def corpus_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    inp = tmp_path_factory.mktemp("full") / "in"
    for i in range(6):
        write_jsonl(inp / f"part-{i:02d}.jsonl.gz", make_records(700, seed=30 + i, dup_every=7), "gz")
    return inp


@pytest.fixture(scope="module")
def reference(corpus_dir: Path, tmp_path_factory: pytest.TempPathFactory) -> tuple[dict, int]:
    """The uninterrupted run's outputs, and the disk size the shares are of: on a tmpfs the most
    the run holds at once (work directory and outputs), else the outputs' size."""
    root = tmp_path_factory.mktemp("ref")
    code, err = finish(start_run(corpus_dir, root / "out", ARGS))
    assert code == 0, err
    if can_mount_tmpfs(root / "probe"):
        return outputs(root / "out"), peak_disk_use(corpus_dir, root / "measure", ARGS)
    written = sum(p.stat().st_size for p in (root / "out").rglob("*") if p.is_file() and p.parent.name in ("kept", "rejected"))
    return outputs(root / "out"), written


def _complete_files_only(out: Path, reference: dict) -> None:
    """Every file under a final name is whole: byte-identical to the uninterrupted run's."""
    for p in out.rglob("*"):
        if p.is_file() and p.parent.name in ("kept", "rejected"):
            rel = p.relative_to(out).as_posix()
            assert p.read_bytes() == reference[rel], f"{rel} is not the complete file"
    assert not (out / "manifest.json").exists()
    assert [p.name for p in out.rglob(".*.tmp-*")] == []


@pytest.mark.parametrize("share", [0.1, 0.95], ids=["full-while-scoring", "full-while-writing"])
def test_disk_full_is_one_clear_line_and_resume_after_freeing_space_is_identical(
        corpus_dir: Path, reference: tuple[dict, int], tmp_path: Path, share: float, record_property: Any) -> None:
    disk = SmallDisk(tmp_path / "disk", max(int(reference[1] * share) // 4096 * 4096, 16384))
    record_property("small_disk", disk.kind)
    try:
        out = disk.root / "out"
        code, err = finish(start_run(corpus_dir, out, ARGS, **disk.popen()))
        assert code == 2, err
        assert "Traceback" not in err
        (line,) = err.strip().splitlines()
        what = "no space left on device" if disk.kind == "tmpfs" else "file too large"
        assert line.startswith(f"error: {what} writing {disk.root}/out") and line.endswith("run again with --resume"), line
        if disk.kind == "tmpfs":
            # A small disk fills while the shards are scored; one near the peak once outputs are written.
            assert (phase(out) in ("write", "report")) == (share > 0.5), line
        _complete_files_only(out, reference[0])
        # Still full: the resumed run says the same, and loses nothing it had.
        code, err = finish(start_run(corpus_dir, out, ARGS, "--resume", **disk.popen()))
        assert code == 2 and what in err
        disk.grow()
        code, err = finish(start_run(corpus_dir, out, ARGS, "--resume", **disk.popen()))
        assert code == 0, err
        assert outputs(out) == reference[0] and leftovers(out) == []
    finally:
        disk.close()


def test_read_only_output_is_one_clear_line_and_resume_once_writable_is_identical(
        corpus_dir: Path, reference: tuple[dict, int], tmp_path: Path, record_property: Any) -> None:
    if os.geteuid() == 0 and not can_mount_tmpfs(tmp_path / "probe"):
        pytest.skip("root without mount(8): neither a read-only mount nor permissions can refuse a write")
    disk = SmallDisk(tmp_path / "disk", 64 << 20)
    record_property("small_disk", disk.kind)
    try:
        # Read-only from the start: nothing is created.
        (disk.root / "fresh").mkdir()
        disk.read_only()
        code, err = finish(start_run(corpus_dir, disk.root / "fresh" / "out", ARGS))
        assert code == 2 and "Traceback" not in err
        (line,) = err.strip().splitlines()
        assert ("read-only file system" if disk.kind == "tmpfs" else "permission denied") in line
        assert f"{disk.root}/fresh/out" in line and "--resume" in line
        disk.read_only(False)
        assert list((disk.root / "fresh").iterdir()) == []

        # Killed while writing, then the disk turns read-only: --resume says so and changes nothing.
        out = disk.root / "out"
        proc = start_run(corpus_dir, out, ARGS)
        assert kill_at(proc, lambda: len(list((out / "kept").glob("*.gz"))) >= 2 if (out / "kept").exists() else False)
        proc.wait()
        wait_group_gone(proc.pid)
        before = {p: p.read_bytes() for p in out.rglob("*") if p.is_file()}
        disk.read_only()
        code, err = finish(start_run(corpus_dir, out, ARGS, "--resume"))
        assert code == 2 and "Traceback" not in err and len(err.strip().splitlines()) == 1
        assert {p: p.read_bytes() for p in out.rglob("*") if p.is_file()} == before
        disk.read_only(False)
        code, err = finish(start_run(corpus_dir, out, ARGS, "--resume"))
        assert code == 0, err
        assert outputs(out) == reference[0] and leftovers(out) == []
    finally:
        disk.close()
