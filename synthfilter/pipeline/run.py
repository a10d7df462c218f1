"""The local engine: score shards in a process pool, decide once, write shards in a pool.

Resumable: every shard's annotations, the decisions and every written shard are committed
atomically with a marker under ``OUT/_synthfilter``; a restarted run (``--resume``) redoes only
what has no marker, and, because decisions are deterministic, ends with identical outputs. Safe
to stop at any instant (SIGKILL, Ctrl-C, SIGTERM, a full or read-only disk): one run at a time
holds the output directory (``runlock``), workers die with their run, and the work directory
is renamed away before it is deleted, so a half-deleted one is never mistaken for a run.
"""

from __future__ import annotations

import concurrent.futures as cf
import datetime as dt
import hashlib
import json
import logging
import multiprocessing
import os
import shutil
import signal
import sys
import threading
import time
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Callable, Iterable, Iterator, Mapping, Sequence

import numpy as np

from synthfilter import __version__
from synthfilter.config import Config, ConfigError
from synthfilter.ratio import HumanLossError
from synthfilter.io.shards import (
    InputError,
    OutputError,
    Shard,
    atomic_write_bytes,
    discover_shards,
    file_sha256,
    output_error,
    pandas_left_out,
    pipe_notes,
    tmp_path_for,
)
from synthfilter.pipeline.runlock import WORKERS_LOCK, RunLock, stop_orphaned_workers, wait_workers_gone, worker_init
from synthfilter.pipeline.stages import (
    REASONS,
    Annotations,
    ConservationError,
    Decisions,
    Scorer,
    WorkPaths,
    decide,
    id_field_warning_of,
    ids_across_shards,
    ids_across_shards_warning_of,
    input_stamp,
    provenance_warning_of,
    refusal_with_provenance,
    repeated_ids_warning_of,
    score_shard,
    write_shard,
)

log = logging.getLogger("synthfilter")

WORK_DIR = "_synthfilter"
WORK_DONE = "_synthfilter.done"  # a finished run's work directory, renamed on its way out
# What --overwrite replaces, moved aside until the new run completes (and moved back if it fails).
REPLACED_DIR = "_synthfilter.replaced"
OUTPUT_ENTRIES = ("kept", "rejected", WORK_DIR, WORK_DONE, "manifest.json", "report.json", "report.html",
                  REPLACED_DIR)
# Options that change no output: a resumed run may differ in these (``section.key`` for a key of
# a section). ``on_error`` is checked apart: a run that stopped on bad input may be resumed with
# --on-error quarantine. "gate": synthfilter gate's own settings, which no run reads (a new one
# would otherwise refuse to resume every run started before it was added). "detector.batch_size":
# read by nothing (the detector scores 1,024 texts at a time whatever it says, and its scores do
# not depend on the batch). ``batch_size`` is checked apart as well: it changes no output in
# some runs only (``_batch_size_binds``).
_NON_DECIDING = ("resume", "overwrite", "workers", "quiet", "dry_run", "engine", "ray_address", "on_error", "gate",
                 "batch_size", "detector.batch_size")


class UsageError(Exception):
    """The command line or output directory is unusable; ``str()`` is the one-line message."""


class RunInterrupted(KeyboardInterrupt):
    """Ctrl-C or SIGTERM stopped the run; what it wrote is a resumable state. ``str()`` says so."""

    def __init__(self, out: Path | str, signum: int = signal.SIGINT):
        super().__init__(out, signum)
        self.out = out
        self.signum = signum
        self.exit_code = 128 + signum

    def __str__(self) -> str:
        name = signal.Signals(self.signum).name
        return (f"interrupted ({name}): {self.out} holds a resumable run; rerun the same command with "
                "--resume to continue")


@dataclass
class RunResult:
    report: dict[str, Any]
    manifest: dict[str, Any]
    out: Path | str  # the output directory; a str only for a URI (the Ray engine's remote outputs)


# -- progress -----------------------------------------------------------------------------------


class Progress:
    """A rich progress bar on a terminal, plain log lines otherwise, nothing with ``quiet``."""

    def __init__(self, quiet: bool = False, stream: Any = None):
        self.quiet = quiet
        self.stream = stream or sys.stderr
        self._rich: Any = None
        self._task: Any = None
        self._records = 0
        self._t0 = time.perf_counter()

    def __enter__(self) -> "Progress":
        if not self.quiet and getattr(self.stream, "isatty", lambda: False)():
            from rich.console import Console
            from rich.progress import BarColumn, MofNCompleteColumn, Progress as RichProgress, TextColumn, TimeRemainingColumn

            self._rich = RichProgress(
                TextColumn("[bold]{task.description}"), BarColumn(), MofNCompleteColumn(),
                TextColumn("shards"), TextColumn("{task.fields[rate]}"), TimeRemainingColumn(),
                console=Console(file=self.stream), transient=False,
            )
            self._rich.__enter__()
        return self

    def __exit__(self, *exc: Any) -> None:
        if self._rich is not None:
            self._rich.__exit__(*exc)

    def stage(self, name: str, total: int) -> None:
        self._records = 0
        self._t0 = time.perf_counter()
        if self._rich is not None:
            self._task = self._rich.add_task(name, total=total, rate="")
        else:
            self.log(f"{name}: {total} shard(s)")

    def shard_done(self, rel: str, records: int) -> None:
        self._records += records
        rate = self._records / max(time.perf_counter() - self._t0, 1e-9)
        if self._rich is not None:
            self._rich.update(self._task, advance=1, rate=f"{rate:,.0f} rec/s")
        else:
            self.log(f"  {rel}: {records:,} records ({rate:,.0f} rec/s)")

    def log(self, message: str) -> None:
        if self.quiet:
            return
        if self._rich is not None:
            self._rich.console.print(message)
        else:
            print(message, file=self.stream, flush=True)


# -- helpers ------------------------------------------------------------------------------------


def _now() -> str:
    return dt.datetime.now(dt.timezone.utc).isoformat(timespec="seconds")


def config_fingerprint(cfg: Config | Mapping[str, Any]) -> str:
    """A hash of the settings that decide a run's outputs (a ``Config`` or its ``to_dict()``)."""
    return hashlib.sha256(json.dumps(_deciding(cfg), sort_keys=True).encode()).hexdigest()


def _deciding(cfg: Config | Mapping[str, Any]) -> dict[str, Any]:
    d = dict(cfg.to_dict() if isinstance(cfg, Config) else cfg)
    for k in _NON_DECIDING:
        section, _, key = k.rpartition(".")
        if not section:
            d.pop(key, None)
        elif isinstance(d.get(section), Mapping):
            d[section] = {name: v for name, v in d[section].items() if name != key}
    return d


def _batch_size_binds(cfg: Config, formats: Iterable[str] | None) -> list[str]:
    """Why ``batch_size`` (records per read and per scoring batch) can change the outputs of a run
    that read inputs of these formats (None: not known); empty when it cannot, and a resumed run
    may then take another (a smaller one, after a run killed for memory).

    It can through Parquet: the records of a batch are written as one row group, and where a
    damaged row group is cut can move with it. Everything else the score stage computes is
    computed record by record whatever the batch (hashes, MinHash, language, repetition,
    provenance, the sample's hash-uniforms, the band keys of records set aside, and the
    detector's scores, bit for bit), and JSONL is read and written line by line
    (tests/pipeline/test_resume.py, tests/detect/test_model.py)."""
    why = []
    known = None if formats is None else set(formats)
    if known is None or not all(isinstance(f, str) for f in known):
        why.append("which input formats it read is not recorded")
    else:
        others = sorted(known - {"jsonl"})
        if "parquet" in others:
            why.append("Parquet outputs are written a row group per batch")
        why.extend(f"{fmt} inputs are read a batch at a time" for fmt in others if fmt != "parquet")
    return why


def _batch_size_note(was: Any, why: Sequence[str], advice: str = "") -> str:
    return f" (--batch-size was {was} and cannot change here: {'; '.join(why)}{advice})"


def differing_settings(before: Mapping[str, Any], cfg: Config) -> list[str]:
    """The settings (dotted names, ``dedup.threshold``) that decide outputs and differ between an
    earlier run's config (its ``to_dict()``) and ``cfg``."""
    out: list[str] = []

    def walk(a: Any, b: Any, name: str) -> None:
        if isinstance(a, Mapping) and isinstance(b, Mapping):
            for k in sorted(set(a) | set(b)):
                walk(a.get(k), b.get(k), f"{name}.{k}" if name else str(k))
        elif a != b:
            out.append(name)

    walk(_deciding(before), _deciding(cfg), "")
    return out


def _listed(items: Sequence[str], k: int) -> str:
    """The first ``k`` items, and how many more."""
    return ", ".join(items[:k]) + (f" and {len(items) - k:,} more" if len(items) > k else "")


def _other_settings(before: Mapping[str, Any] | None, cfg: Config, batch_size: bool = False) -> str:
    """``batch_size``: the batch size differs too, where it decides outputs (``_batch_size_binds``)."""
    names = differing_settings(before, cfg) if before is not None else []
    if batch_size:
        names = sorted([*names, "batch_size"])
    if not names:
        return "other settings (config, seed, model or dedup settings)"
    return f"other settings ({_listed(names, 4)})"


def check_finished_run(manifest: Mapping[str, Any], shards: Sequence[Shard], cfg: Config, where: str,
                       model: Mapping[str, Any] | None = None) -> None:
    """UsageError unless a finished run (its manifest) read these shards, at the sizes they have
    now, under these settings and this detector (``model``: ``model_info``): ``--resume`` of it
    then has nothing left to do. Anything else would leave records unread, or outputs that
    another config or model made, behind an exit 0."""
    before = {i["rel"]: i for i in manifest.get("inputs", [])}
    now = {sh.rel: sh for sh in shards}

    def names(rels: list[str]) -> str:
        return _listed(rels, 3)

    problems = []
    config = manifest.get("config", {})
    if config.get("dry_run") and not cfg.dry_run:
        problems.append("it was a --dry-run, which writes no records")
    was = config.get("batch_size")
    why = _batch_size_binds(cfg, [i.get("format") for i in manifest.get("inputs", [])]) if was != cfg.batch_size else []
    if config_fingerprint(config) != config_fingerprint(cfg) or why:
        problems.append(f"it ran with {_other_settings(config, cfg, bool(why))}"
                        + (_batch_size_note(was, why) if why else ""))
    changed_model = _model_changed((manifest.get("model") or {}).get("sha256"), model)
    if changed_model:
        problems.append(changed_model)
    added, gone = sorted(set(now) - set(before)), sorted(set(before) - set(now))
    if added:
        problems.append(f"it did not read {names(added)}")
    if gone:
        problems.append(f"it also read {names(gone)}")
    changed = [rel for rel in sorted(set(now) & set(before))
               if os.path.isfile(now[rel].path) and os.path.getsize(now[rel].path) != before[rel].get("size")]
    if changed:
        problems.append(f"{names(changed)} changed size since")
    if problems:
        raise UsageError(f"{where}: --resume given, but the run there finished and {'; '.join(problems)}: "
                         "use --overwrite to run again")


def check_out_dir(out: Path, shards: Sequence[Shard], inputs: Sequence[str], cfg: Config) -> None:
    """UsageError unless a local ``out`` is usable: not inside an input directory, holding no
    input, and a directory if it exists."""
    from synthfilter.io.shards import glob_root_of

    out_real = out.resolve()
    for raw in inputs:
        p = Path(str(raw))
        # A recursive glob reads every directory under its root, as a directory input does.
        root = (glob_root_of(raw) if "**" in str(raw) else None) or p
        if root.is_dir():
            d = root.resolve()
            if out_real == d or d in out_real.parents:
                raise UsageError(f"{out}: output directory is inside input {'glob' if root is not p else 'directory'} "
                                 f"{raw}; choose an output outside it")
    check_not_an_output(shards)
    for sh in shards:
        if out_real in sh.path.parents:
            raise UsageError(f"{sh.path}: input is inside the output directory {out}; choose another output")
    if out.exists() and not out.is_dir():
        raise UsageError(f"{out}: exists and is not a directory")


def not_empty_message(out: Path | str, interrupted: bool, finished: bool) -> str:
    """Why a run into a non-empty ``out`` without --resume or --overwrite is refused, and what to pass."""
    if interrupted:
        return (f"{out}: holds an interrupted synthfilter run; pass --resume to continue it (same inputs and "
                "settings), or --overwrite to start again")
    if finished:
        return f"{out}: holds a finished synthfilter run; pass --overwrite to replace it, or choose another directory"
    return f"{out}: output directory is not empty; pass --resume to continue a run or --overwrite to replace it"


def check_not_an_output(shards: Sequence[Shard]) -> None:
    """UsageError when shards were found in an earlier run's ``rejected/`` (beside its
    ``manifest.json`` and ``report.json``) below the input given: reading that run's directory
    as a corpus would take its rejected records back in. Its ``kept/``, given or linked to, is
    fine: that is how a filtered corpus is read again.

    A shard's path is resolved (links followed) and its ``rel`` is where it was found below the
    input, so the directories between the two are the resolved parents of the path, as many as
    ``rel`` has parts above the file."""
    seen: dict[Path, bool] = {}
    for sh in shards:
        d = sh.path.parent
        for _ in range(len(Path(sh.rel).parts) - 1):
            if d not in seen:
                seen[d] = d.name == "rejected" and (d.parent / "manifest.json").is_file() and \
                    (d.parent / "report.json").is_file()
            if seen[d]:
                run_dir = d.parent
                raise UsageError(f"{run_dir}: this is a synthfilter output directory (manifest.json, kept/, rejected/), "
                                 f"and reading it as input would take its rejected records back in; to filter or report "
                                 f"on what it kept, pass {run_dir / 'kept'}")
            d = d.parent


def _remove_own_outputs(out: Path, keep: Sequence[str] = ()) -> None:
    for name in OUTPUT_ENTRIES:
        if name in keep:
            continue
        p = out / name
        if p.is_dir():
            shutil.rmtree(p)
        elif p.exists():
            p.unlink()


def _move_aside_for_overwrite(out: Path) -> None:
    """--overwrite: move the previous outputs into ``REPLACED_DIR`` instead of deleting them, so
    that a new run that fails or is refused gives them back (``restore_replaced``). If an earlier
    --overwrite never completed, what it moved aside is still the last complete output: kept,
    and the unfinished attempt's outputs go."""
    replaced = out / REPLACED_DIR
    if replaced.is_dir():
        _remove_own_outputs(out, keep=(REPLACED_DIR,))
        return
    names = [n for n in OUTPUT_ENTRIES if n != REPLACED_DIR and (out / n).exists()]
    if not names:
        return
    staging = out / f".{REPLACED_DIR}.tmp-{os.getpid()}"
    staging.mkdir()
    for name in names:
        os.replace(out / name, staging / name)
    os.replace(staging, replaced)


def finish_replaced(out: Path) -> None:
    """The new run completed: what --overwrite moved aside goes."""
    shutil.rmtree(out / REPLACED_DIR, ignore_errors=True)


def restore_replaced(out: Path) -> bool:
    """The new run failed or was refused: its outputs go and the previous ones come back.
    True when there was something to restore."""
    replaced = out / REPLACED_DIR
    if not replaced.is_dir():
        return False
    _remove_own_outputs(out, keep=(REPLACED_DIR,))
    for entry in list(replaced.iterdir()):
        os.replace(entry, out / entry.name)
    replaced.rmdir()
    return True


def _model_changed(sha_before: str | None, model: Mapping[str, Any] | None) -> str | None:
    """Why a run made with the model of sha256 ``sha_before`` cannot go on with ``model``
    (``model_info``): the files at the model's path were replaced (``adapt --overwrite`` does
    that), and the scores already made would be mixed with the new model's. None when alike,
    or when either side is not known (a run without a detector: its settings differ anyway)."""
    if not sha_before or not model or sha_before == model.get("sha256"):
        return None
    return (f"its detector model {model.get('id')!r} was replaced since (sha256 {str(sha_before)[:12]}, now "
            f"{str(model.get('sha256'))[:12]})")


def check_resumable(prev: Mapping[str, Any], cfg: Config, where: str,
                    model: Mapping[str, Any] | None = None) -> None:
    """UsageError unless the run described by ``prev`` (its run.json) may be resumed under ``cfg``
    and this detector (``model``: ``model_info``)."""
    before = prev.get("config")
    # Its settings are compared under the rules of this version (a setting found since to change
    # no output does not stop a run started before), by its fingerprint where they were not kept.
    same = (config_fingerprint(before) if isinstance(before, Mapping) else prev.get("fingerprint")) \
        == config_fingerprint(cfg)
    # Recorded apart since the fingerprint leaves it out; before that, in the settings.
    was = prev["batch_size"] if "batch_size" in prev else (before or {}).get("batch_size")
    why = _batch_size_binds(cfg, prev.get("formats")) if was != cfg.batch_size else []
    if not same or why:
        note = _batch_size_note(was, why, "; fewer --workers also take less memory") if why else ""
        raise UsageError(f"{where}: the interrupted run used {_other_settings(before, cfg, bool(why))}; resume "
                         f"with the same settings, or use --overwrite{note}")
    changed_model = _model_changed(prev.get("model_sha256"), model)
    if changed_model:
        raise UsageError(f"{where}: the interrupted run scored with a detector that is not the one there now: "
                         f"{changed_model}; resume with the same model files, or use --overwrite")
    # Shards scored under "fail" had no bad record, so they stand under "quarantine"; the
    # other way, a resumed run would accept bad records that a fresh one stops on.
    if prev.get("on_error", "fail") == "quarantine" and cfg.on_error == "fail":
        raise UsageError(f"{where}: the interrupted run set bad records aside (--on-error quarantine); resume "
                         "with it, or use --overwrite")


def run_json(cfg: Config, model: Mapping[str, Any] | None = None, *, shards: Sequence[Shard] | None = None,
             **more: Any) -> bytes:
    """The work directory's run.json: what a --resume must match (``model``: ``model_info``).
    ``shards``: the inputs, whose formats say whether the batch size may change on resume (not
    known without them, and then it may not)."""
    formats = {"formats": sorted({sh.format for sh in shards})} if shards is not None else {}
    return json.dumps({"fingerprint": config_fingerprint(cfg), "on_error": cfg.on_error, "version": __version__,
                       "config": _deciding(cfg), "batch_size": cfg.batch_size, **formats,
                       "model_sha256": model["sha256"] if model else None, **more}).encode()


def prepare_out_dir(out: Path, cfg: Config, note: Callable[[str], None] | None = None,
                    model: Mapping[str, Any] | None = None) -> None:
    """Create a local ``out``, applying the --resume / --overwrite rules to a non-empty one
    (UsageError when neither applies), and remove leftover temporary files.

    ``--resume`` on a directory that holds only the skeleton of a run stopped before its first
    marker (``run.json``) starts the run afresh there."""
    if out.exists() and any(out.iterdir()):
        if cfg.overwrite:
            _move_aside_for_overwrite(out)
            leftover = sorted(x.name for x in out.iterdir() if x.name != REPLACED_DIR)
            if leftover:
                raise UsageError(
                    f"{out}: --overwrite removes only synthfilter's own outputs, and the directory also holds "
                    f"{', '.join(leftover[:5])}; choose an empty directory"
                )
        elif cfg.resume:
            run_file = out / WORK_DIR / "run.json"
            manifest = out / "manifest.json"
            if not run_file.exists() and not manifest.exists():
                foreign = sorted(x.name for x in out.iterdir() if x.name not in OUTPUT_ENTRIES)
                if foreign:
                    raise UsageError(f"{out}: --resume given but this directory holds no synthfilter run to resume "
                                     f"(it holds {', '.join(foreign[:5])})")
                # Stopped before it wrote anything to resume from: start it again.
                _remove_own_outputs(out, keep=(REPLACED_DIR,))
                if note is not None:
                    note(f"note: {out}: the interrupted run had not started its work yet; starting it")
            if run_file.exists():
                check_resumable(json.loads(run_file.read_text()), cfg, str(out), model)
        else:
            raise UsageError(not_empty_message(out, (out / WORK_DIR / "run.json").is_file(),
                                               (out / "manifest.json").is_file()))
    out.mkdir(parents=True, exist_ok=True)
    for tmp in out.rglob(".*.tmp-*"):
        tmp.unlink(missing_ok=True)


# Imported once in the forkserver, so each worker starts with them loaded. Not pandas: the
# workers keep it out (``pyarrow_without_pandas``, the pool's initializer), so that pyarrow
# never imports it: 0.15 s off the start of the pool.
_WORKER_PRELOAD = [
    "synthfilter.pipeline.forkquiet",  # first: installs its excepthook before anything can fail
    "synthfilter.pipeline.stages", "pyarrow", "pyarrow.ipc", "pyarrow.parquet", "synthfilter.ratio",
    "synthfilter.provenance", "synthfilter.dedup.minhash", "synthfilter.dedup.lsh",
]

# What the parent's serial stages import: decide (scipy behind the clusters; pandas behind
# pyarrow unless the process keeps it out), the diversity metrics and the HTML report
# (matplotlib). With worker processes, a background thread imports them while the workers
# score: over half a second taken off the serial end of the run.
_DECIDE_PRELOAD = ["synthfilter.dedup.clusters"]
_DIVERSITY_PRELOAD = ["synthfilter.dedup.lsh", "synthfilter.dedup.minhash", "synthfilter.diversity"]
_HTML_PRELOAD = ["synthfilter.report.html", "matplotlib.figure", "matplotlib.ticker", "matplotlib.backends.backend_svg"]


def serial_preload(cfg: Config) -> list[str]:
    """The modules the parent's serial stages will import under ``cfg``."""
    pandas = [] if pandas_left_out() else ["pandas"]
    return (pandas + _DECIDE_PRELOAD + (_DIVERSITY_PRELOAD if cfg.report.diversity else [])
            + (_HTML_PRELOAD if cfg.report.html else []))


def preload_in_background(modules: Sequence[str]) -> threading.Thread:
    """Import ``modules`` in a daemon thread (an import that fails here is left for the code
    that needs it to raise). Imports are thread-safe: a later import of the same module waits
    for this one to finish instead of starting again."""
    import importlib

    def work() -> None:
        for name in modules:
            try:
                importlib.import_module(name)
            except Exception:  # noqa: BLE001 - reported where the module is really used
                pass

    thread = threading.Thread(target=work, name="synthfilter-preload", daemon=True)
    thread.start()
    return thread


def _start_forkserver() -> None:
    """Start the fork server (and multiprocessing's resource tracker) for a run that Ctrl-C may stop.

    - SIGINT ignored in the server (it keeps that, and so do the workers it forks): Ctrl-C reaches
      the whole process group, and a server still importing its preload modules would print a
      KeyboardInterrupt traceback under the run's one-line message. The main process stops the
      workers itself, and the server exits with it.
    - The resource tracker started quiet about leaked semaphores: an interrupted run exits without
      tearing down (``cli._interrupted``) and leaves the tracker to release the pool's semaphores,
      which is its job; its warning about them would be a second line under the run's own.
    """
    if threading.current_thread() is not threading.main_thread():
        return  # signal dispositions are the main thread's to change; the server starts as usual
    from multiprocessing import forkserver

    quiet = "ignore::UserWarning:multiprocessing.resource_tracker"
    if quiet not in sys.warnoptions:
        sys.warnoptions.append(quiet)  # passed on to the tracker's command line when it starts

    previous = signal.signal(signal.SIGINT, signal.SIG_IGN)
    try:
        forkserver.ensure_running()
    finally:
        signal.signal(signal.SIGINT, previous)


class ShardExecutor:
    """Runs ``fn(shard, *args)`` per shard: in-process for one worker, else one process pool
    shared by the score and write stages (forkserver with the stages preloaded, so workers
    start cheaply and inherit no threads from the parent)."""

    def __init__(self, workers: int, n_shards: int, worker_lock: Path | None = None):
        self.workers = min(workers, n_shards)
        self.worker_lock = worker_lock
        self._pool: cf.ProcessPoolExecutor | None = None

    def __enter__(self) -> "ShardExecutor":
        if self.workers > 1:
            methods = multiprocessing.get_all_start_methods()
            ctx = multiprocessing.get_context("forkserver" if "forkserver" in methods else "spawn")
            if "forkserver" in methods:
                ctx.set_forkserver_preload(_WORKER_PRELOAD)
                _start_forkserver()
            lock = str(self.worker_lock) if self.worker_lock is not None else None
            self._pool = cf.ProcessPoolExecutor(max_workers=self.workers, mp_context=ctx,
                                                initializer=worker_init, initargs=(lock, os.getpid()))
        return self

    def __exit__(self, kind: Any, exc: BaseException | None, tb: Any) -> None:
        if self._pool is None:
            return
        if exc is None:
            self._pool.shutdown(wait=True, cancel_futures=True)
            return
        # Interrupted or failed: stop the workers now rather than let them finish their shards
        # (everything they write is atomic, so killing them leaves a resumable state).
        procs = list((getattr(self._pool, "_processes", None) or {}).values())
        for p in procs:
            try:
                p.kill()
            except (OSError, ValueError):
                pass
        self._pool.shutdown(wait=False, cancel_futures=True)
        for p in procs:
            p.join(10)
        if self.worker_lock is not None:
            wait_workers_gone(self.worker_lock)  # the clean-up of their temporary files comes after

    def map(self, fn: Callable[..., Any], shards: Sequence[Shard], args: tuple[Any, ...],
            on_done: Callable[[Shard, Any], None]) -> None:
        if self._pool is None or len(shards) <= 1:
            for sh in shards:
                on_done(sh, fn(sh, *args))
            return
        # Interrupted or failed, the futures still pending are left to ``__exit__``, whose
        # shutdown(cancel_futures=True) has the pool's own thread cancel them. Cancelling them
        # here raced that thread when the workers died with the run (Ctrl-C or SIGTERM reaches
        # the whole process group): it set a broken-pool error on a future just cancelled and
        # printed a traceback (InvalidStateError, CPython 3.11).
        futures = {self._pool.submit(fn, sh, *args): sh for sh in shards}
        for fut in cf.as_completed(futures):
            on_done(futures[fut], fut.result())


def _score_meta_valid(shard: Shard, paths: WorkPaths) -> dict[str, Any] | None:
    if not paths.meta.exists():
        return None
    meta = json.loads(paths.meta.read_text())
    stamp = input_stamp(shard.path)
    if meta.get("size") != stamp["size"] or meta.get("mtime_ns") != stamp["mtime_ns"]:
        raise UsageError(f"{shard.path}: input changed since the interrupted run; use --overwrite to start again")
    return meta


# -- annotations ----------------------------------------------------------------------------------


def load_annotations(shards: Sequence[Shard], work: Path, metas: dict[str, dict[str, Any]], near: bool) -> tuple[Annotations, list[int]]:
    """Concatenate per-shard annotations in shard order; band keys and signatures stay memory-mapped.

    Only the columns the decide stage reads are loaded (never the ids: ``save_decisions`` reads
    those it writes). Band keys and signatures are gathered into one file each under ``work``,
    band keys band by band (one band's keys contiguous), so that nothing of theirs is held in
    anonymous memory: the kernel pages them in as the clustering reads them.
    """
    import pyarrow as pa
    import pyarrow.ipc as ipc

    parts: dict[str, list[np.ndarray]] = {k: [] for k in ANNOTATION_COLUMNS}
    shard_sizes: list[int] = []
    offsets = [0]
    languages: list[np.ndarray] = []
    with_language = 0
    for sh in shards:
        # Memory-mapped: the columns below are views of the file until they are concatenated.
        with pa.memory_map(str(WorkPaths.for_shard(work, sh).ann)) as source:
            t = ipc.open_file(source).read_all()
        for k in parts:
            parts[k].extend(_column_views(t, k))
        if "language" in t.column_names:
            languages.extend(_column_views(t, "language"))
            with_language += 1
        shard_sizes.append(t.num_rows)
        offsets.append(offsets[-1] + t.num_rows)
        del t
    total = offsets[-1]
    has_language = bool(shards) and with_language == len(shards)
    bands = sigs = None
    if near:
        sigs = _gather_signatures(shards, work, metas, total)
        bands = _gather_band_keys(shards, work, metas, offsets)

    def cat(chunks: list[np.ndarray], dtype: Any) -> np.ndarray:
        column = np.concatenate(chunks).astype(dtype, copy=False) if chunks else np.zeros(0, dtype)
        chunks.clear()
        return column

    ann = Annotations(
        shard=np.repeat(np.arange(len(shards), dtype=np.int32), shard_sizes),
        status=cat(parts["status"], np.int8), hash_hi=cat(parts["hash_hi"], np.uint64),
        hash_lo=cat(parts["hash_lo"], np.uint64), score=cat(parts["score"], np.float32),
        provenance=cat(parts["provenance"], np.int8), uniform=cat(parts["uniform"], np.float64),
        length=cat(parts["length"], np.int32), bands=bands, signatures=sigs,
        language=cat(languages, np.uint8) if has_language else None,
    )
    return ann, offsets


# The columns of a shard's ann.arrow that the decide stage reads.
ANNOTATION_COLUMNS = ("status", "hash_hi", "hash_lo", "score", "provenance", "uniform", "length")


def _column_views(table: Any, name: str) -> list[np.ndarray]:
    """A numeric column's chunks as numpy views of their buffers, without a copy (and without
    pyarrow's ``to_numpy``, whose first call imports pandas: some 30 MB)."""
    views = []
    for chunk in table.column(name).chunks:
        if chunk.null_count:
            views.append(chunk.to_numpy(zero_copy_only=False))
            continue
        dtype = np.dtype(chunk.type.to_pandas_dtype())
        views.append(np.frombuffer(chunk.buffers()[1], dtype=dtype, count=len(chunk), offset=chunk.offset * dtype.itemsize))
    return views


def _gather_signatures(shards: Sequence[Shard], work: Path, metas: dict[str, dict[str, Any]], total: int) -> np.ndarray | None:
    """All shards' signatures as one memory-mapped (records, num_perm) matrix, built by
    streaming the shard files (bounded RAM)."""
    if not total:
        return None
    num_perm = metas[shards[0].rel]["num_perm"]
    all_sigs = work / "signatures.u32"
    tmp = tmp_path_for(all_sigs)
    with open(tmp, "wb") as dst:
        for sh in shards:
            with open(WorkPaths.for_shard(work, sh).sigs, "rb") as src:
                shutil.copyfileobj(src, dst, 1 << 22)
    os.replace(tmp, all_sigs)
    return np.memmap(all_sigs, dtype=np.uint32, mode="r", shape=(total, num_perm))


def _gather_band_keys(shards: Sequence[Shard], work: Path, metas: dict[str, dict[str, Any]],
                      offsets: list[int], rows: int = 1 << 14) -> np.ndarray | None:
    """All shards' band keys as a memory-mapped (records, bands) array stored band by band (its
    transpose is C-ordered), so that the clustering reads each band's keys as one run of the file.

    Written with plain writes, ``rows`` records at a time (a write to a memory map on a full
    disk kills the process instead of raising an error)."""
    if not shards:
        return None
    total = offsets[-1]
    nb = metas[shards[0].rel]["bands"]
    if not total:
        return np.zeros((0, nb), np.uint64)
    path = work / "bands.u64"
    tmp = tmp_path_for(path)
    with open(tmp, "wb") as dst:
        for si, sh in enumerate(shards):
            lo, hi = offsets[si], offsets[si + 1]
            with open(WorkPaths.for_shard(work, sh).bands, "rb") as src:
                for start in range(lo, hi, rows):
                    count = min(rows, hi - start)
                    block = np.fromfile(src, dtype=np.uint64, count=count * nb).reshape(count, nb)
                    for band, keys in enumerate(block.T.copy()):
                        dst.seek((band * total + start) * 8)
                        dst.write(keys.data)
    os.replace(tmp, path)
    return np.memmap(path, dtype=np.uint64, mode="r", shape=(nb, total)).T


def save_decisions(shards: Sequence[Shard], work: Path, offsets: list[int], decisions: Decisions) -> None:
    """Split decisions per shard; duplicate_of becomes the kept record's id."""
    import pyarrow as pa
    import pyarrow.ipc as ipc

    dup = decisions.duplicate_of
    targets = np.unique(dup[dup >= 0])
    target_shard = np.searchsorted(offsets, targets, side="right") - 1
    id_of: dict[int, str] = {}
    for si in np.unique(target_shard):
        sh = shards[int(si)]
        with ipc.open_file(str(WorkPaths.for_shard(work, sh).ann)) as reader:
            ids = reader.read_all().column("id")
        for g in targets[target_shard == si]:
            id_of[int(g)] = ids[int(g) - offsets[si]].as_py()
    for si, sh in enumerate(shards):
        lo, hi = offsets[si], offsets[si + 1]
        d = dup[lo:hi]
        table = pa.table({
            "reason": pa.array(decisions.reason[lo:hi], type=pa.int8()),
            "duplicate_of": pa.array([id_of[int(x)] if x >= 0 else None for x in d], type=pa.string()),
            "posterior": pa.array(decisions.posterior[lo:hi], type=pa.float32()),
        })
        path = WorkPaths.for_shard(work, sh).decisions
        tmp = tmp_path_for(path)
        with ipc.new_file(str(tmp), table.schema) as w:
            w.write_table(table)
        os.replace(tmp, path)


# -- the run ------------------------------------------------------------------------------------


def run_pipeline(inputs: Sequence[str], out: str | os.PathLike[str], cfg: Config,
                 progress: Progress | None = None) -> RunResult:
    """``synthfilter run``: score -> decide -> write, then check conservation and report.

    Holds the output directory for the whole run (a second run there stops at once). Ctrl-C and
    SIGTERM raise ``RunInterrupted``, an output that cannot be written ``OutputError``: both
    leave what was written resumable with ``--resume`` and no temporary file behind.
    """
    out = Path(out)
    shards, ignored = discover_shards(inputs)
    check_out_dir(out, shards, inputs, cfg)
    progress = progress or Progress(quiet=True)
    # Refused by the lock: the directory is another run's, so none of the clean-up below (its
    # temporary files, what its --overwrite moved aside, its work directory) is this run's to do.
    lock = acquire_run_lock(out)
    try:
        with _interruptible(out):
            return _run_locked(shards, ignored, out, cfg, progress)
    except RunInterrupted:
        _remove_tmp_files(out)
        raise
    except KeyboardInterrupt:
        _remove_tmp_files(out)
        raise RunInterrupted(out) from None
    except BaseException as e:
        err = output_error(e, out)
        if err is None:
            better = after_failure(out, shards, e)
            if better is not None:
                raise better from None
            raise
        _remove_tmp_files(out)
        raise err.with_advice("run again with --resume") from None
    finally:
        lock.release()


def acquire_run_lock(out: Path) -> RunLock:
    """The output directory's lock (``runlock.RunLock``), taken: a ``UsageError`` when another
    run holds it, an ``OutputError`` when the directory cannot be created or opened (read-only,
    no permission, disk full), nothing touched in either case."""
    try:
        return RunLock(out, WORK_DIR).acquire()
    except OSError as e:
        err = output_error(e, out)
        if err is None:
            raise
        raise err.with_advice("run again with --resume") from None  # as for a write that fails later


def after_failure(out: Path, shards: Sequence[Shard], e: BaseException) -> BaseException | None:
    """A run that failed (not one that was stopped): give back what --overwrite moved aside, and
    leave a work directory only where it saves work. After bad input (exit 2), the shards
    already scored are kept for a --resume, which may add --on-error quarantine; with none
    scored, nothing is left that would stand in the way of running again. Returns the error to
    raise instead of ``e`` (the same, with that advice), or None."""
    if not out.is_dir():
        return None
    _remove_tmp_files(out)
    if restore_replaced(out):
        return None
    work = out / WORK_DIR
    if isinstance(e, (HumanLossError, ConfigError)):
        # A policy refused the run, or its settings cannot do what they ask on this corpus (a
        # target without scores or labels): new settings are needed, which a --resume would
        # refuse, so nothing is left behind.
        shutil.rmtree(work, ignore_errors=True)
        if not any(out.iterdir()):
            out.rmdir()
        return None
    if not isinstance(e, InputError):
        return None
    scored = sum(WorkPaths.for_shard(work, sh).meta.exists() for sh in shards) if work.is_dir() else 0
    if not scored:
        shutil.rmtree(work, ignore_errors=True)
        return None
    return InputError(e.path, f"{e.message}; {scored:,} shard{'s' if scored != 1 else ''} already scored: fix the "
                              "input or add --on-error quarantine, and rerun with --resume to keep "
                              f"{'them' if scored != 1 else 'it'}", e.line)


@contextmanager
def _interruptible(out: Path) -> Iterator[None]:
    """SIGTERM stops the run as Ctrl-C does (``RunInterrupted``), in the main thread only."""
    if threading.current_thread() is not threading.main_thread():
        yield
        return

    def on_term(signum: int, frame: Any) -> None:
        raise RunInterrupted(out, signum)

    previous = signal.signal(signal.SIGTERM, on_term)
    try:
        yield
    finally:
        signal.signal(signal.SIGTERM, previous)


@contextmanager
def _work_files(work: Path) -> Iterator[None]:
    """A write to the work directory that the disk refuses names it (a write has no file name)."""
    try:
        yield
    except OSError as e:
        err = output_error(e, work)
        if err is None:
            raise
        raise err from None


def _remove_tmp_files(out: Path) -> None:
    """Temporary files a stopped run (or its killed workers) left under ``out``; best effort."""
    try:
        for tmp in out.rglob(".*.tmp-*"):
            tmp.unlink(missing_ok=True)
    except OSError:
        pass


def _run_locked(shards: Sequence[Shard], ignored: Sequence[str], out: Path, cfg: Config,
                progress: Progress) -> RunResult:
    t_start = time.perf_counter()
    started = _now()
    work = out / WORK_DIR
    # Workers a killed run left behind would race with this one: stop them first.
    stop_orphaned_workers(work, progress.log)
    shutil.rmtree(out / WORK_DONE, ignore_errors=True)  # a finished run's, killed while deleting it
    if cfg.resume and (out / "manifest.json").exists() and not work.exists():
        # The run being resumed had already finished: its outputs stand as they are. Its model is
        # checked by the sha256 of its files, without loading it (nothing is scored).
        manifest = json.loads((out / "manifest.json").read_text())
        check_finished_run(manifest, shards, cfg, str(out), model_info(cfg))
        progress.log(f"{out}: run already complete; nothing to resume")
        finish_replaced(out)
        return RunResult(report=json.loads((out / "report.json").read_text()), manifest=manifest, out=out)
    # The detector loads first: a model that cannot load leaves the directory as it was, and a
    # --resume is checked against the model's files as well as its path.
    scorer = Scorer(cfg)
    model = model_info(scorer)
    prepare_out_dir(out, cfg, progress.log, model)
    for path in ignored:
        progress.log(f"note: {path}: not a supported shard extension, not read")
    for note in pipe_notes(shards):
        progress.log(note)
    work.mkdir(parents=True, exist_ok=True)
    (work / WORKERS_LOCK).touch()
    atomic_write_bytes(work / "run.json", run_json(cfg, model, shards=shards, pid=os.getpid()))
    workers = cfg.resolved_workers()

    with ShardExecutor(workers, len(shards), worker_lock=work / WORKERS_LOCK) as executor:
        if executor.workers > 1:
            preload_in_background(serial_preload(cfg))
        with _work_files(work):
            metas = _score_all(shards, cfg, work, executor, progress)
        try:
            with _work_files(work):
                ann, decisions, offsets = _decide_all(shards, cfg, work, metas, scorer)
        except HumanLossError as e:
            raise refusal_with_provenance(e, metas, cfg) from None  # nothing is left behind: after_failure
        written: dict[str, dict[str, int]] = {}
        # The diversity section and report.html's charts need only the decisions: made in a thread
        # while the records are written (the write stage spends most of its time in zlib, without the GIL).
        with cf.ThreadPoolExecutor(1, thread_name_prefix="synthfilter-report") as side:
            early = side.submit(_report_early, shards, work, offsets, metas, ann, decisions, cfg, scorer)
            if not cfg.dry_run:
                written = _write_all(shards, cfg, work, out, executor, progress)
    conservation = check_conservation(shards, metas, written, decisions, offsets, cfg.dry_run)
    seconds = time.perf_counter() - t_start
    ended = _now()
    report = build_report(shards, metas, decisions, cfg, seconds, scorer)
    diversity, prerendered = early.result()
    if diversity is not None:
        from synthfilter.diversity import set_diversity

        set_diversity(report, diversity, cfg.repetition.reject)
    manifest = build_manifest(shards, metas, decisions, offsets, cfg, started, ended, model, scorer,
                              conservation, ignored)
    atomic_write_bytes(out / "report.json", json.dumps(report, indent=2).encode())
    if cfg.report.html:
        write_html_report(out, report, manifest, ann, decisions, prerendered)
    # The manifest last: it stands for a complete run (a disk that fills on the reports leaves none).
    atomic_write_bytes(out / "manifest.json", json.dumps(manifest, indent=2).encode())
    # Renamed first, then deleted: a run killed while deleting leaves no half work directory
    # that a --resume could take for an interrupted run.
    del ann  # its signatures are memory-mapped from the work directory
    os.replace(work, out / WORK_DONE)
    shutil.rmtree(out / WORK_DONE, ignore_errors=True)
    finish_replaced(out)
    return RunResult(report=report, manifest=manifest, out=out)


def model_info(scorer: Scorer | Config) -> dict[str, Any] | None:
    """The manifest's ``model`` entry: the detector's id and sha256, None without a detector.
    Of a ``Config``: the same, read from the model's card and files without loading it
    (``model_identity``), or by loading it where they cannot be read (which says why)."""
    if isinstance(scorer, Config):
        if not scorer.detector.enabled:
            return None
        from synthfilter.detect.model import model_identity

        try:
            return model_identity(scorer.detector.model)
        except Exception:  # noqa: BLE001 - missing or damaged: loading it gives the error to show
            scorer = Scorer(scorer)
    if not scorer.uses_detector:
        return None
    det = scorer.detector
    return {"id": det.model_id, "sha256": det.sha256}


def _score_all(shards: Sequence[Shard], cfg: Config, work: Path, executor: ShardExecutor, progress: Progress) -> dict[str, dict[str, Any]]:
    metas: dict[str, dict[str, Any]] = {}
    todo = []
    for sh in shards:
        meta = _score_meta_valid(sh, WorkPaths.for_shard(work, sh)) if cfg.resume else None
        if meta is not None:
            metas[sh.rel] = meta
        else:
            todo.append(sh)
    progress.stage("score", len(todo))

    def done(sh: Shard, meta: dict[str, Any]) -> None:
        metas[sh.rel] = meta
        progress.shard_done(sh.rel, meta["records"])

    executor.map(score_shard, todo, (cfg, work), done)
    return metas


def _decide_all(shards: Sequence[Shard], cfg: Config, work: Path, metas: dict[str, dict[str, Any]],
                scorer: Scorer) -> tuple[Annotations, Decisions, list[int]]:
    ann, offsets = load_annotations(shards, work, metas, cfg.dedup.near)
    card = scorer.detector.card if scorer.uses_detector else None
    decisions = decide(ann, cfg, card)
    save_decisions(shards, work, offsets, decisions)
    # Ids given in more than one shard, for the report's warnings (ids_across_shards_warning_of).
    for rel, found in ids_across_shards(shards, work, ann, offsets).items():
        metas[rel].update(found)
    return ann, decisions, offsets


def _write_all(shards: Sequence[Shard], cfg: Config, work: Path, out: Path, executor: ShardExecutor,
               progress: Progress) -> dict[str, dict[str, int]]:
    written: dict[str, dict[str, int]] = {}
    todo = []
    for sh in shards:
        marker = WorkPaths.for_shard(work, sh).written
        if cfg.resume and marker.exists() and (out / "kept" / sh.rel).exists():
            written[sh.rel] = json.loads(marker.read_text())
        else:
            todo.append(sh)
    progress.stage("write", len(todo))

    def done(sh: Shard, counts: dict[str, int]) -> None:
        written[sh.rel] = counts
        progress.shard_done(sh.rel, counts["kept"] + counts["rejected"])

    executor.map(write_shard, todo, (cfg, work, out), done)
    return written


def check_conservation(shards: Sequence[Shard], metas: dict[str, dict[str, Any]], written: dict[str, dict[str, int]],
                        decisions: Decisions, offsets: list[int], dry_run: bool) -> dict[str, Any]:
    """ConservationError unless every shard's records were all decided and (unless ``dry_run``)
    all written, kept or rejected as decided; else the manifest's ``conservation`` entry."""
    per_shard = {}
    for si, sh in enumerate(shards):
        read = metas[sh.rel]["records"]
        decided = offsets[si + 1] - offsets[si]
        if decided != read:
            raise ConservationError(f"{sh.path}: {read} records read but {decided} decided")
        if dry_run:
            continue
        w = written[sh.rel]
        expected_kept = int(np.sum(decisions.reason[offsets[si]:offsets[si + 1]] == 0))
        if w["kept"] + w["rejected"] != read or w["kept"] != expected_kept:
            raise ConservationError(
                f"{sh.path}: read {read} records but wrote {w['kept']} kept + {w['rejected']} rejected"
            )
        per_shard[sh.rel] = {"read": read, "kept": w["kept"], "rejected": w["rejected"]}
    return {"checked": not dry_run, "ok": True, "shards": len(shards)}


def diversity_report(shards: Sequence[Shard], work: Path, offsets: list[int], ann: Annotations,
                     decisions: Decisions, cfg: Config) -> dict[str, Any]:
    """Diversity before and after filtering, on the corpus-wide bottom-k sample of the score stage."""
    import pyarrow.ipc as ipc

    from synthfilter.diversity import diversity_section

    tables, globals_, uniforms = [], [], []
    for si, sh in enumerate(shards):
        path = WorkPaths.for_shard(work, sh).sample
        with ipc.open_file(str(path)) as r:
            t = r.read_all()
        tables.append(t)
        # Global record numbers in numpy: pyarrow.compute (add, take) costs 0.14 s to import.
        globals_.append(t.column("index").to_numpy().astype(np.int64) + offsets[si])
        uniforms.append(t.column("uniform").to_numpy())
    if not tables or sum(t.num_rows for t in tables) == 0:
        return diversity_section([], [], [], [], seed=cfg.seed)
    glob = np.concatenate(globals_)
    order = np.lexsort((glob, np.concatenate(uniforms)))[: cfg.report.sample_size]
    g = glob[order]
    # Only the sampled rows become Python objects (every shard's own sample was read).
    starts = np.cumsum([0] + [t.num_rows for t in tables])
    which = np.searchsorted(starts, order, side="right") - 1
    columns = [(t.column("text"), t.column("group")) for t in tables]
    texts, groups = [], []
    for ti, row in zip(which.tolist(), (order - starts[which]).tolist()):
        text_col, group_col = columns[ti]
        texts.append(text_col[row].as_py())
        groups.append(group_col[row].as_py())
    kept = decisions.reason[g] == 0
    sigs = None
    if ann.signatures is not None:
        from synthfilter.dedup.clusters import gather_sorted_rows

        # Read in file order a span at a time: scattered reads would map most of the file.
        rows, where = np.unique(g, return_inverse=True)
        sigs = gather_sorted_rows(ann.signatures, rows)[where]
    return diversity_section(
        texts, [t for t, k in zip(texts, kept) if k], groups, [x for x, k in zip(groups, kept) if k],
        before_sigs=sigs, after_sigs=None if sigs is None else sigs[kept], seed=cfg.seed,
    )


def _report_early(shards: Sequence[Shard], work: Path, offsets: list[int], metas: dict[str, dict[str, Any]],
                  ann: Annotations, decisions: Decisions, cfg: Config, scorer: Scorer
                  ) -> tuple[dict[str, Any] | None, dict[str, str] | None]:
    """What of the report needs only the decisions: the diversity section, then report.html's
    sections other than the headline and the run (all its charts); None for what is off. A chart
    that fails here is drawn again at the end, where its error is raised after the JSON outputs."""
    diversity = diversity_report(shards, work, offsets, ann, decisions, cfg) if cfg.report.diversity else None
    prerendered = None
    if cfg.report.html:
        try:
            from synthfilter.report.html import prerender_run_sections

            report = build_report(shards, metas, decisions, cfg, 0.0, scorer)  # all but timing, as at the end
            if diversity is not None:
                from synthfilter.diversity import set_diversity

                set_diversity(report, diversity, cfg.repetition.reject)
            prerendered = prerender_run_sections(
                report, group_by=cfg.report.group_by, scores=ann.score,
                reasons=decisions.reason, cluster_sizes=decisions.cluster_sizes)
        except Exception:  # noqa: BLE001 - rendered again (and raised) by write_html_report
            prerendered = None
    return diversity, prerendered


def write_html_report(out: Path, report: dict[str, Any], manifest: dict[str, Any], ann: Annotations,
                      decisions: Decisions, prerendered: dict[str, str] | None = None) -> None:
    """report.html: one self-contained page with the run's charts and tables."""
    from synthfilter.report.html import render_run_report

    html = render_run_report(report, manifest, scores=ann.score, reasons=decisions.reason,
                             cluster_sizes=decisions.cluster_sizes, prerendered=prerendered)
    atomic_write_bytes(out / "report.html", html.encode("utf-8"))


def _empty_inputs(metas: dict[str, dict[str, Any]]) -> str | None:
    """A warning naming the inputs that held no record (read under --on-error quarantine: under
    fail an empty file stops the run), which the manifest alone recorded."""
    empty = sorted(rel for rel, m in metas.items() if m.get("empty"))
    if not empty:
        return None
    return f"{len(empty):,} input file{'s' if len(empty) != 1 else ''} held no record: {_listed(empty, 5)}"


def build_report(shards: Sequence[Shard], metas: dict[str, dict[str, Any]], decisions: Decisions, cfg: Config,
                 seconds: float, scorer: Scorer) -> dict[str, Any]:
    """report.json: stable top-level keys (documented in the README)."""
    counts = decisions.counts()
    records = sum(m["records"] for m in metas.values())
    kept = counts["kept"]
    dedup = scorer.dedup_settings()
    return {
        "version": __version__,
        "input": {
            "records": records,
            "bytes": sum(m["size"] for m in metas.values()),
            "shards": len(shards),
            "malformed": counts["malformed"],
            # Breaks in the data (truncated or corrupt compression, unreadable Parquet row groups):
            # each is one malformed record; the bytes that gave no record at all.
            "breaks": sum(len(m.get("breaks", ())) for m in metas.values()),
            "unreadable_bytes": sum(m.get("unreadable_bytes", 0) for m in metas.values()),
        },
        "output": {
            "kept": kept,
            "rejected": records - kept,
            "rejected_by_reason": {r: counts[r] for r in REASONS[1:]},
            "dry_run": cfg.dry_run,
        },
        "duplicates": {
            "exact": counts["exact_duplicate"],
            "near": counts["near_duplicate"],
            "clusters": int(len(decisions.cluster_sizes)),
            "largest_cluster": int(decisions.cluster_sizes.max()) if len(decisions.cluster_sizes) else 0,
            "bands": dedup["bands"] if dedup else None,
            "rows": dedup["rows"] if dedup else None,
            "threshold": cfg.dedup.threshold if cfg.dedup.near else None,
            "verify_threshold": cfg.dedup.verify_at if cfg.dedup.near and cfg.dedup.verify else None,
        },
        "synthetic": decisions.synthetic,
        "languages": decisions.languages,
        "warnings": [*decisions.warnings, *filter(None, [provenance_warning_of(metas, cfg, decisions),
                                                         id_field_warning_of(metas, cfg), repeated_ids_warning_of(metas),
                                                         ids_across_shards_warning_of(metas), _empty_inputs(metas)])],
        "timing": {"seconds": round(seconds, 3), "records_per_s": round(records / seconds, 1) if seconds > 0 else None},
    }


def build_manifest(shards: Sequence[Shard], metas: dict[str, dict[str, Any]], decisions: Decisions, offsets: list[int],
                   cfg: Config, started: str, ended: str, model_info: dict[str, Any] | None, scorer: Scorer,
                   conservation: dict[str, Any], ignored: Sequence[str]) -> dict[str, Any]:
    inputs = []
    for si, sh in enumerate(shards):
        m = metas[sh.rel]
        r = decisions.reason[offsets[si]:offsets[si + 1]]
        c = np.bincount(r, minlength=len(REASONS))
        inputs.append({
            "path": str(sh.path), "rel": sh.rel, "format": sh.format, "compression": sh.compression,
            "size": m["size"], "sha256": m["sha256"], "records": m["records"], "blank_lines": m["blank_lines"],
            "empty": m["empty"], "breaks": m.get("breaks", []), "unreadable_bytes": m.get("unreadable_bytes", 0),
            "kept": int(c[0]), "rejected": int(len(r) - c[0]),
            "by_reason": {REASONS[i]: int(c[i]) for i in range(1, len(REASONS)) if c[i]},
        })
    return {
        "synthfilter_version": __version__,
        "config": cfg.to_dict(),
        "seed": cfg.seed,
        "started": started,
        "ended": ended,
        "inputs": inputs,
        "ignored_files": list(ignored),
        "model": model_info,
        "dedup": scorer.dedup_settings(),
        "conservation": conservation,
        "python": sys.version.split()[0],
    }
