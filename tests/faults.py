"""Fault injection for ``synthfilter run``: start the real CLI in a process group of its own,
kill it (the whole group, or only its main process) at a moment, see what it left, and compare
outputs with an uninterrupted run. Used by tests/pipeline/test_resume.py (a few points) and
benchmarks/fault_injection.py (many).
"""

from __future__ import annotations

import json
import os
import shutil
import signal
import subprocess
import sys
import time
from pathlib import Path
from typing import Any, Callable

# What a run writes that legitimately differs between an interrupted-and-resumed run and an
# uninterrupted one: times, and the flags that only say how it was started.
_MANIFEST_VOLATILE = ("started", "ended")
_CONFIG_VOLATILE = ("resume", "overwrite", "quiet", "workers")


def start_run(inp: Path | list[Path], out: Path, args: list[str], *extra: str, **popen: Any) -> subprocess.Popen:
    """The real CLI, as a user starts it, leading a process group of its own.

    With SIGINT and SIGTERM at their defaults and unblocked, as a shell gives a foreground
    command: whatever the test process inherited or was left with (an ignored or blocked SIGINT
    is inherited through exec, and Python then leaves it so), the run must see Ctrl-C as a
    user's terminal sends it.
    """
    inputs = [str(p) for p in (inp if isinstance(inp, list) else [inp])]
    return subprocess.Popen(
        [sys.executable, "-m", "synthfilter", "run", *inputs, "--out", str(out), *args, *extra],
        stdout=subprocess.PIPE, stderr=subprocess.PIPE, start_new_session=True,
        preexec_fn=default_signals, **popen,
    )


def default_signals() -> None:
    """SIGINT and SIGTERM at their defaults and unblocked (a ``preexec_fn``), as a shell starts a command."""
    for sig in (signal.SIGINT, signal.SIGTERM):
        signal.signal(sig, signal.SIG_DFL)
    # A blocked signal is inherited too (the mask survives exec): unblock them, as a shell does.
    signal.pthread_sigmask(signal.SIG_UNBLOCK, {signal.SIGINT, signal.SIGTERM})


def finish(proc: subprocess.Popen, timeout: float = 600) -> tuple[int, str]:
    """Wait for a run; (exit code, stderr)."""
    _, err = proc.communicate(timeout=timeout)
    return proc.returncode, err.decode("utf-8", errors="replace")


def group_members(pgid: int) -> list[int]:
    """Live processes of a process group (Linux /proc), zombies left out."""
    pids = []
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit():
            continue
        try:
            stat = (entry / "stat").read_text()
        except OSError:
            continue
        fields = stat[stat.rindex(")") + 2:].split()
        if fields[0] != "Z" and int(fields[2]) == pgid:
            pids.append(int(entry.name))
    return pids


def wait_group_gone(pgid: int, timeout: float = 10.0) -> list[int]:
    """Wait until no process of ``pgid`` is alive; returns those still alive at the deadline."""
    deadline = time.monotonic() + timeout
    alive = group_members(pgid)
    while alive and time.monotonic() < deadline:
        time.sleep(0.02)
        alive = group_members(pgid)
    return alive


def kill_at(proc: subprocess.Popen, when: Callable[[], bool], sig: int = signal.SIGKILL, group: bool = True,
            timeout: float = 300) -> bool:
    """Send ``sig`` (to the whole group, or the main process only) as soon as ``when()``; False
    when the run finished first."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            return False
        if when():
            try:
                os.killpg(proc.pid, sig) if group else os.kill(proc.pid, sig)
            except ProcessLookupError:
                return False
            return True
        time.sleep(0.001)
    raise TimeoutError("the run neither finished nor reached the kill point")


def after(seconds: float) -> Callable[[], bool]:
    t0 = time.monotonic()
    return lambda: time.monotonic() - t0 >= seconds


def phase(out: Path) -> str:
    """Which phase a killed run had reached, from what it left in ``out``."""
    work = out / "_synthfilter"
    if (out / "manifest.json").exists() and not work.exists():
        return "finishing"
    if (out / "report.json").exists() or (out / "manifest.json").exists():
        return "report"
    if not out.exists() or not work.exists():
        return "start"
    if not (work / "run.json").exists():
        return "setup"
    shards = list((work / "shards").glob("*")) if (work / "shards").exists() else []
    if any((s / "written.json").exists() for s in shards) or (out / "kept").exists():
        return "write"
    if any((s / "decisions.arrow").exists() for s in shards) or (work / "signatures.u32").exists():
        return "decide"
    return "score"


def outputs(out: Path) -> dict[str, Any]:
    """Everything a run leaves that must be identical whether or not it was interrupted: every
    file under kept/ and rejected/ byte for byte, report.json without its timing, manifest.json
    without its times and the flags that only say how the run was started, and the file list."""
    got: dict[str, Any] = {}
    for p in sorted(out.rglob("*")):
        if p.is_file():
            rel = p.relative_to(out).as_posix()
            if rel.startswith(("kept/", "rejected/")):
                got[rel] = p.read_bytes()
            elif rel == "report.json":
                report = json.loads(p.read_bytes())
                report.pop("timing", None)
                got[rel] = report
            elif rel == "manifest.json":
                manifest = json.loads(p.read_bytes())
                for k in _MANIFEST_VOLATILE:
                    manifest.pop(k, None)
                for k in _CONFIG_VOLATILE:
                    manifest["config"].pop(k, None)
                got[rel] = manifest
            else:
                got[rel] = None  # report.html holds times; that it exists is what counts
    return got


def leftovers(out: Path) -> list[str]:
    """Temporary files (and work directories) a finished run must not leave."""
    return sorted(p.relative_to(out).as_posix() for p in out.rglob("*")
                  if p.name.startswith(".") and ".tmp-" in p.name or p.name.startswith("_synthfilter"))


def can_mount_tmpfs(where: Path) -> bool:
    """Whether this process can mount a tmpfs (root with mount(8)): tried at ``where``, unmounted."""
    if os.geteuid() != 0 or not shutil.which("mount"):
        return False
    where.mkdir(parents=True, exist_ok=True)
    ok = subprocess.run(["mount", "-t", "tmpfs", "-o", "size=64k", "tmpfs", str(where)], capture_output=True).returncode == 0
    if ok:
        subprocess.run(["umount", str(where)], check=True)
    return ok


def peak_disk_use(inp: Path, disk: Path, args: list[str]) -> int:
    """Most bytes an uninterrupted run uses at once on a tmpfs of its own (polled every ms; needs root)."""
    disk.mkdir(parents=True)
    subprocess.run(["mount", "-t", "tmpfs", "-o", "size=512m", "tmpfs", str(disk)], check=True)
    try:
        def used() -> int:
            st = os.statvfs(disk)
            return (st.f_blocks - st.f_bfree) * st.f_frsize

        base = peak = used()
        proc = start_run(inp, disk / "out", args)
        while proc.poll() is None:
            peak = max(peak, used())
            time.sleep(0.001)
        code, err = finish(proc)
        assert code == 0, err
        return peak - base
    finally:
        subprocess.run(["umount", "-l", str(disk)], check=False)
