"""``synthfilter run --engine ray``: the local engine's run with its stages on Ray Data, from one
machine to a cluster, with the same outputs (score: ``score``; decide: ``decide``, ``estimate``,
``components``; write: ``write``; where files live: ``storage``)."""

from __future__ import annotations

import datetime as dt
import json
import os
import shutil
import time
from dataclasses import dataclass
from typing import Any, Sequence

import numpy as np

from synthfilter.config import Config, ConfigError
from synthfilter.io.shards import Shard, pipe_notes
from synthfilter.pipeline.ray.decide import RayDecisions, decide_on_ray, language_counts_on_ray
from synthfilter.pipeline.ray.ids import ids_across_shards_on_ray
from synthfilter.pipeline.ray.score import score_all
from synthfilter.pipeline.ray.session import data_context, import_ray, ray_session
from synthfilter.pipeline.ray.annotations import AnnotationPart, FileAnnotations
from synthfilter.pipeline.ray.storage import ShardSource, Store, discover_sources, is_uri, shard_dir
from synthfilter.pipeline.runlock import RunLock
from synthfilter.pipeline.ray.write import (
    diversity_on_ray, per_shard_counts, save_overrides, score_histogram_arrays, write_all,
)
from synthfilter.pipeline.run import (
    OUTPUT_ENTRIES,
    WORK_DIR,
    Progress,
    RunInterrupted,
    RunResult,
    UsageError,
    acquire_run_lock,
    after_failure,
    build_manifest,
    build_report,
    check_conservation,
    check_finished_run,
    check_out_dir,
    check_resumable,
    not_empty_message,
    finish_replaced,
    model_info,
    prepare_out_dir,
    run_json,
)
from synthfilter.pipeline.stages import (
    REASONS, Scorer, apply_language_counts, refusal_with_provenance, set_aside_counts,
)
from synthfilter.ratio import HumanLossError


class CountedReasons:
    """``Decisions.reason`` for the report builders, which only count reasons per shard slice:
    a slice returns that shard's reasons as counts (in reason order, not record order)."""

    def __init__(self, offsets: Sequence[int], counts: np.ndarray):
        self.offsets = list(offsets)
        self.counts = counts

    def __len__(self) -> int:
        return self.offsets[-1]

    def __getitem__(self, key: Any) -> np.ndarray:
        if not isinstance(key, slice) or key.start not in self.offsets:
            raise TypeError("only whole-shard slices of the reasons are available on the driver")
        si = self.offsets.index(key.start)
        if key.stop != self.offsets[si + 1]:
            # Several shards can share a start when some are empty.
            si = next(i for i in range(si, len(self.offsets) - 1)
                      if self.offsets[i] == key.start and self.offsets[i + 1] == key.stop)
        return np.repeat(np.arange(len(REASONS), dtype=np.int8), self.counts[si])


@dataclass
class CountedDecisions:
    """What ``build_report``, ``build_manifest`` and ``check_conservation`` read of ``Decisions``."""

    reason: CountedReasons
    cluster_sizes: Any  # array-like: len(), max(), np.asarray()
    synthetic: dict[str, Any]
    warnings: list[str]
    totals: dict[str, int]
    languages: dict[str, Any] | None = None  # report.json's "languages" section

    def counts(self) -> dict[str, int]:
        return dict(self.totals)


def _now() -> str:
    return dt.datetime.now(dt.timezone.utc).isoformat(timespec="seconds")


def _prepare_remote_out(out: Store, cfg: Config, shards: Sequence[Shard],
                        model: dict[str, Any] | None) -> dict[str, Any] | None:
    """The local engine's rules for an output directory, on a remote filesystem. Returns the
    finished run's report and manifest when ``--resume`` finds nothing left to do."""
    entries = out.entries()
    if not entries:
        return None
    if cfg.resume:
        if "manifest.json" in entries and WORK_DIR not in entries:
            manifest = json.loads(out.read_bytes("manifest.json"))
            check_finished_run(manifest, shards, cfg, out.root, model)
            return {"report": json.loads(out.read_bytes("report.json")), "manifest": manifest}
        if not out.exists(f"{WORK_DIR}/run.json"):
            raise UsageError(f"{out.root}: --resume given but this directory holds no synthfilter run to resume")
        check_resumable(json.loads(out.read_bytes(f"{WORK_DIR}/run.json")), cfg, out.root, model)
        return None
    if cfg.overwrite:
        for name in OUTPUT_ENTRIES:
            if name in entries:
                out.delete(name)
        leftover = [e for e in out.entries() if e not in OUTPUT_ENTRIES]
        if leftover:
            raise UsageError(f"{out.root}: --overwrite removes only synthfilter's own outputs, and the directory also "
                             f"holds {', '.join(leftover[:5])}; choose an empty directory")
        return None
    raise UsageError(not_empty_message(out.root, out.exists(f"{WORK_DIR}/run.json"), "manifest.json" in entries))


def run_pipeline_ray(inputs: Sequence[str], out: str | os.PathLike[str], cfg: Config,
                     progress: Progress | None = None) -> RunResult:
    """``synthfilter run --engine ray``: the local engine's run, with its stages on Ray Data.

    Inputs and ``out`` may be local paths (they must then be the same paths on every node:
    a shared filesystem) or URIs of any filesystem pyarrow or fsspec supports (``s3://...``).
    A URI is taken as the str it is: never pass one through ``pathlib.Path`` (``s3:/...``).
    """
    import_ray()
    t_start = time.perf_counter()
    started = _now()
    out_loc = os.fspath(out)
    out_store = Store(out_loc)
    sources, ignored = discover_sources(inputs)
    shards = [s.shard for s in sources]
    lock: RunLock | None = None
    if out_store.local is not None:
        out_path = out_store.local
        check_out_dir(out_path, [s.shard for s in sources if s.uri is None],
                       [i for i in map(os.fspath, inputs) if not is_uri(i)], cfg)
        # One run at a time in a local directory, as the local engine (refused before touching it).
        lock = acquire_run_lock(out_path)
    try:
        return _run_in(sources, shards, ignored, out_loc, out_store, cfg, progress, t_start, started)
    finally:
        if lock is not None:
            lock.release()


def _run_in(sources: Sequence[ShardSource], shards: Sequence[Shard], ignored: Sequence[str], out_loc: str,
            out_store: Store, cfg: Config, progress: Progress | None, t_start: float,
            started: str) -> RunResult:
    if out_store.local is not None:
        out_path = out_store.local
        if cfg.resume and (out_path / "manifest.json").exists() and not (out_path / WORK_DIR).exists():
            # Finished: its outputs stand, and its model is checked by its files' sha256 without
            # loading it (as the local engine).
            manifest = json.loads((out_path / "manifest.json").read_text())
            check_finished_run(manifest, shards, cfg, str(out_path), model_info(cfg))
            (progress or Progress(quiet=True)).log(f"{out_path}: run already complete; nothing to resume")
            finish_replaced(out_path)
            return RunResult(report=json.loads((out_path / "report.json").read_text()), manifest=manifest,
                             out=out_path)
    # The detector loads first, as in the local engine (a bad model touches nothing; --resume
    # checks the model's files).
    scorer = Scorer(cfg)
    model = model_info(scorer)
    if out_store.local is not None:
        prepare_out_dir(out_store.local, cfg, model=model)
    else:
        finished = _prepare_remote_out(out_store, cfg, shards, model)
        if finished is not None:
            (progress or Progress(quiet=True)).log(f"{out_loc}: run already complete; nothing to resume")
            return RunResult(report=finished["report"], manifest=finished["manifest"], out=out_loc)
    try:
        result = _run_prepared(sources, shards, ignored, out_loc, out_store, cfg,
                               progress or Progress(quiet=True), t_start, started, scorer)
    except (KeyboardInterrupt, RunInterrupted):
        raise  # resumable as it stands
    except BaseException as e:
        if out_store.local is not None:
            # As the local engine: temporary files go, what --overwrite moved aside comes back, and
            # bad input says how many shards a --resume would keep; a Ray that could not start
            # (nothing scored) leaves nothing that would refuse the corrected command.
            if isinstance(e, UsageError) and not any((out_store.local / WORK_DIR / "shards").glob("*/score.json")):
                shutil.rmtree(out_store.local / WORK_DIR, ignore_errors=True)
            better = after_failure(out_store.local, shards, e)
            if better is not None:
                raise better from None
            raise
        if isinstance(e, (HumanLossError, ConfigError)):
            # A policy refused the run, or settings that cannot do what they ask here (a target
            # without scores or labels): a --resume would refuse new ones, so nothing is kept
            # (as the local engine).
            out_store.delete(WORK_DIR)
        raise
    if out_store.local is not None:
        finish_replaced(out_store.local)
    return result


def _run_prepared(sources: Sequence[ShardSource], shards: Sequence[Shard], ignored: Sequence[str], out_loc: str,
                  out_store: Store, cfg: Config, progress: Progress, t_start: float, started: str,
                  scorer: Scorer) -> RunResult:
    for path in ignored:
        progress.log(f"note: {path}: not a supported shard extension, not read")
    for note in pipe_notes(shards):
        progress.log(note)
    work = out_store.sub(WORK_DIR)
    model = model_info(scorer)
    work.write_bytes("run.json", run_json(cfg, model, shards=shards))  # formats: may --batch-size change

    def stopped(signum: int) -> None:
        raise RunInterrupted(out_loc, signum)

    with ray_session(cfg, on_term=stopped), data_context():
        metas = score_all(sources, cfg, work, progress, scorer)
        offsets = [0]
        for src in sources:
            offsets.append(offsets[-1] + int(metas[src.shard.rel]["records"]))
        try:
            t_decide = time.perf_counter()
            progress.log(f"decide: {offsets[-1]:,} records on Ray")
            source, decisions = _decide_all(sources, cfg, work, metas, offsets, scorer)
            decided = save_overrides(work, sources, offsets, decisions.rows)
            # Ids given in more than one shard, as the local engine finds them (for the report's warnings).
            across = decisions.ids_across_shards
            if across is None:
                across = ids_across_shards_on_ray(source, [src.shard for src in sources], offsets)
            for rel, found in across.items():
                metas[rel].update(found)
            if cfg.identifies_language:
                apply_language_counts(decisions, language_counts_on_ray(source, cfg), cfg)
            rejected = offsets[-1] - decisions.totals["kept"] - decisions.totals["malformed"]
            progress.log(f"decide: {rejected:,} rejected as duplicates or downsampled "
                         f"({time.perf_counter() - t_decide:,.1f} s)")
        except HumanLossError as e:
            raise refusal_with_provenance(e, metas, cfg) from None  # nothing is left behind: run_pipeline_ray
        written: dict[str, dict[str, int]] = {}
        if not cfg.dry_run:
            written = write_all(sources, cfg, work, out_store, progress)
        diversity = diversity_on_ray(source, cfg) if cfg.report.diversity else None
        histogram = score_histogram_arrays(source) if cfg.report.html else None
    meta_list = [metas[s.shard.rel] for s in sources]
    counted = CountedDecisions(
        reason=CountedReasons(offsets, per_shard_counts(decided, meta_list)),
        cluster_sizes=decisions.cluster_sizes, synthetic=decisions.synthetic, warnings=decisions.warnings,
        totals=decisions.counts(), languages=decisions.languages,
    )
    conservation = check_conservation(shards, metas, written, counted, offsets, cfg.dry_run)  # type: ignore[arg-type]
    seconds = time.perf_counter() - t_start
    report = build_report(shards, metas, counted, cfg, seconds, scorer)  # type: ignore[arg-type]
    if diversity is not None:
        from synthfilter.diversity import set_diversity

        set_diversity(report, diversity, cfg.repetition.reject)
    manifest = build_manifest(shards, metas, counted, offsets, cfg, started, _now(), model, scorer,  # type: ignore[arg-type]
                              conservation, ignored)
    for entry, src in zip(manifest["inputs"], sources):
        entry["path"] = src.location
    out_store.write_bytes("manifest.json", json.dumps(manifest, indent=2).encode())
    out_store.write_bytes("report.json", json.dumps(report, indent=2).encode())
    if histogram is not None:
        from synthfilter.report.html import render_run_report

        html = render_run_report(report, manifest, scores=histogram[0], reasons=histogram[1],
                                 cluster_sizes=decisions.cluster_sizes)
        out_store.write_bytes("report.html", html.encode("utf-8"))
    out_store.delete(WORK_DIR)
    if out_store.local is not None:
        # A worker killed mid-write leaves its temporary file behind; its retry wrote the real one.
        for tmp in out_store.local.rglob(".*.tmp-*"):
            tmp.unlink(missing_ok=True)
    return RunResult(report=report, manifest=manifest, out=out_store.local or out_loc)



def _decide_all(sources: Sequence[ShardSource], cfg: Config, work: Store, metas: dict[str, dict[str, Any]],
                offsets: Sequence[int], scorer: Scorer) -> tuple[FileAnnotations, RayDecisions]:
    near = cfg.dedup.near
    parts = []
    n_bands = num_perm = 0
    for si, src in enumerate(sources):
        m = metas[src.shard.rel]
        if near and m["records"]:
            n_bands, num_perm = int(m["bands"]), int(m["num_perm"])
        parts.append(AnnotationPart(shard_dir(src.shard), offsets[si], int(m["records"]), int(m["bands"]), int(m["num_perm"])))
    set_aside = sum((set_aside_counts(m) for m in metas.values()), np.zeros(len(REASONS), np.int64))
    card = scorer.detector.card if scorer.uses_detector else None
    source = FileAnnotations(work, parts)
    return source, decide_on_ray(source, offsets[-1], cfg, card, set_aside, n_bands, num_perm,
                                 shards=[src.shard for src in sources], metas=metas)

