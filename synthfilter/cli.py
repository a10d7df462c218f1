"""The ``synthfilter`` command line (typer): run, score, train, eval, gate, report.

Every failure a user can cause ends in a one-line ``error: ...`` on stderr and exit code 2
(1 when a policy such as ``--max-human-loss``, or a detector found unreliable on the corpus,
refuses the run); never a traceback.
"""

from __future__ import annotations

import os
import signal
import sys
from enum import Enum
from pathlib import Path
from typing import Any, Callable, List, Optional

import typer

from synthfilter import __version__
from synthfilter.config import Config, ConfigError, load_config
from synthfilter.report import languages_line

app = typer.Typer(
    name="synthfilter",
    help="Filter model-generated and duplicated text out of training corpora.",
    no_args_is_help=True,
    add_completion=False,
    pretty_exceptions_enable=False,
)

EXIT_OK, EXIT_POLICY, EXIT_USAGE, EXIT_INTERNAL = 0, 1, 2, 3


class OnError(str, Enum):
    fail = "fail"
    quarantine = "quarantine"


class Strategy(str, Enum):
    threshold = "threshold"
    uniform = "uniform"


class Engine(str, Enum):
    local = "local"
    ray = "ray"


def _fail(message: str, code: int) -> None:
    typer.echo(f"error: {message}", err=True)
    raise typer.Exit(code)


def _interrupted(message: str, code: int) -> None:
    """Ctrl-C or SIGTERM: the one-line message, then, in synthfilter's own process, an exit that
    skips the interpreter's teardown. A run stopped mid-stage can leave a C++ library's worker
    threads (pyarrow's) busy, and tearing down under them aborts the process ("terminate called
    without an active exception", exit -6) instead of exiting with ``code``. Everything the run
    writes is already atomic and its temporary files are gone, so there is nothing left to flush
    but the standard streams. (The worker pool's semaphores are then released by multiprocessing's
    resource tracker, which ``run._start_forkserver`` keeps from warning about them.)"""
    if not _EXITS_PROCESS:
        _fail(message, code)
    typer.echo(f"error: {message}", err=True)
    for stream in (sys.stdout, sys.stderr):
        try:
            stream.flush()
        except (OSError, ValueError):
            pass
    os._exit(code)


def _is_model_error(e: BaseException) -> bool:
    """``ModelError`` without importing the detector (64 ms) where no model was loaded."""
    model = sys.modules.get("synthfilter.detect.model")
    return model is not None and isinstance(e, model.ModelError)


def guarded(fn: Callable[[], Any], resumable: bool = True) -> Any:
    """Run a command body, turning every expected failure into a one-line message + exit code.
    ``resumable``: the command takes --resume (a Ctrl-C's line says to use it)."""
    from synthfilter.io.shards import InputError, OutputError
    from synthfilter.pipeline.run import RunInterrupted, UsageError
    from synthfilter.pipeline.stages import ConservationError
    from synthfilter.ratio import HumanLossError

    stopped: tuple[str, int] | None = None
    try:
        return fn()
    except typer.Exit:
        raise
    except (InputError, OutputError, UsageError, ConfigError) as e:
        _fail(str(e), EXIT_USAGE)
    except HumanLossError as e:
        _fail(str(e), EXIT_POLICY)
    except ConservationError as e:
        _fail(f"conservation check failed: {e}", EXIT_INTERNAL)
    except RunInterrupted as e:
        stopped = (str(e), e.exit_code)
    except KeyboardInterrupt:
        stopped = ("interrupted; rerun with --resume to continue" if resumable else
                   "interrupted before it finished; run it again (this command has no --resume)", 130)
    except MemoryError:
        _fail("out of memory; use fewer --workers or a smaller --batch-size", EXIT_INTERNAL)
    except OSError as e:
        where = f"{e.filename}: " if getattr(e, "filename", None) else ""
        _fail(f"{where}{e.strerror or e}", EXIT_USAGE)
    except Exception as e:  # noqa: BLE001 - last line of defence: one line, not a traceback
        if _is_model_error(e):
            _fail(str(e), EXIT_USAGE)
        if os.environ.get("SYNTHFILTER_DEBUG"):
            raise
        _fail(f"internal error: {type(e).__name__}: {e} (set SYNTHFILTER_DEBUG=1 for a traceback)", EXIT_INTERNAL)
    if stopped is not None:  # out of the except block: the interrupted run's frames are released
        _interrupted(*stopped)


def _version(value: bool) -> None:
    if value:
        typer.echo(f"synthfilter {__version__}")
        raise typer.Exit()


@app.callback()
def _root(
    version: bool = typer.Option(False, "--version", callback=_version, is_eager=True, metavar="", help="Show the version and exit."),
) -> None:
    """Filter model-generated and duplicated text out of training corpora."""


def build_config(config: Optional[Path], overrides: dict[str, Any]) -> Config:
    """Defaults < TOML file < flags (a flag left unset does not override the file)."""
    return load_config(config, overrides)


def _print_warnings(report: dict[str, Any]) -> None:
    """Under --quiet: no summary, but the warnings still reach stderr (they are in report.json too)."""
    for w in report.get("warnings") or []:
        typer.echo(f"warning: {w}", err=True)


def _print_summary(report: dict[str, Any], out: Path | str) -> None:
    inp, outp, dup, syn = report["input"], report["output"], report["duplicates"], report["synthetic"]
    by_reason = outp.get("rejected_by_reason") or {}
    set_aside = "".join(f", {what} {by_reason[key]:,}" for key, what in (
        ("language", "other language"), ("repetitive", "repetitive"), ("malformed", "malformed")) if by_reason.get(key))
    lines = [
        f"records: {inp['records']:,} in {inp['shards']} shard(s), {inp['malformed']:,} malformed",
        f"kept: {outp['kept']:,}   rejected: {outp['rejected']:,}   "
        f"(exact dup {dup['exact']:,}, near dup {dup['near']:,}, downsampled {syn.get('downsampled', 0):,}{set_aside})",
    ]
    if syn.get("estimated_share_before") is not None:
        lo, hi = syn["ci95_before"]
        line = f"synthetic share: {syn['estimated_share_before']:.1%} [{lo:.1%}, {hi:.1%}]"
        if syn.get("kept_share_known") is False:
            line += " -> unknown (the detector is unreliable on this corpus)"
        elif syn.get("estimated_share_after") is not None and syn.get("ci95_after") is not None:
            lo2, hi2 = syn["ci95_after"]
            line += f" -> {syn['estimated_share_after']:.1%} [{lo2:.1%}, {hi2:.1%}]"
        rel = syn.get("reliability") or {}
        if rel.get("verdict") in ("doubtful", "unreliable"):
            line += f"   detector reliability: {rel['verdict']}"
        lines.append(line)
        unseen = rel.get("ci95_unseen_source")
        if unseen and rel.get("interval") == "sampling":
            lines.append(f"  if the corpus is unlike the detector's training data: [{unseen[0]:.1%}, {unseen[1]:.1%}] "
                         "(--unseen-source uses this interval)")
    languages = languages_line(report)
    if languages:
        lines.append(languages)
    for w in report.get("warnings", []):
        lines.append(f"warning: {w}")
    lines.append(f"outputs: {out}  ({report['timing']['records_per_s'] or 0:,.0f} records/s)")
    typer.echo("\n".join(lines))


@app.command()
def run(
    inputs: List[str] = typer.Argument(..., metavar="INPUT...", help="Files, directories or globs of .jsonl, .jsonl.gz, .jsonl.zst, .parquet."),
    # str, not Path: with --engine ray OUT may be a URI, and Path("s3://b/k") is "s3:/b/k".
    out: str = typer.Option(..., "--out", "-o", help="Output directory (kept/, rejected/, manifest.json, report.json); with --engine ray also a URI (s3://...)."),
    config: Optional[Path] = typer.Option(None, "--config", "-c", help="TOML config file; flags override it."),
    text_field: Optional[str] = typer.Option(None, help="Field holding the text (dotted path for nested fields). [default: text]"),
    id_field: Optional[str] = typer.Option(None, help="Field holding the record id. [default: id when present, else <shard>:<line>]"),
    workers: Optional[int] = typer.Option(None, "--workers", "-w", help="Worker processes. [default: all cores]"),
    on_error: Optional[OnError] = typer.Option(None, help="On bad input: fail with a clear error, or quarantine the record in rejected/. [default: fail]"),
    resume: Optional[bool] = typer.Option(None, "--resume", metavar="", help="Continue an interrupted run in OUT."),
    overwrite: Optional[bool] = typer.Option(None, "--overwrite", metavar="", help="Replace synthfilter's previous outputs in OUT."),
    annotate: Optional[bool] = typer.Option(None, "--annotate", metavar="", help="Add a 'synthfilter' object (score, decision) to every output record."),
    dry_run: Optional[bool] = typer.Option(None, "--dry-run", metavar="", help="Score and decide, write report + manifest only, no records."),
    seed: Optional[int] = typer.Option(None, help="Seed for every random choice. [default: 0]"),
    model: Optional[str] = typer.Option(None, "--model", help="Detector model directory. [default: the shipped model]"),
    no_detector: Optional[bool] = typer.Option(None, "--no-detector", metavar="", help="Do not score with the detector (dedup only)."),
    no_near_dedup: Optional[bool] = typer.Option(None, "--no-near-dedup", metavar="", help="Exact duplicates only."),
    threshold: Optional[float] = typer.Option(None, help="Near-duplicate Jaccard threshold. [default: 0.8]"),
    num_perm: Optional[int] = typer.Option(None, help="MinHash permutations. [default: 128]"),
    target_ratio: Optional[float] = typer.Option(None, help="Keep at most this estimated synthetic share (0 <= R < 1)."),
    strategy: Optional[Strategy] = typer.Option(None, help="How to downsample synthetic text. [default: threshold]"),
    provenance_field: Optional[str] = typer.Option(None, help="Field naming who wrote the record (mapped by \\[ratio.provenance_map])."),
    provenance_map: Optional[str] = typer.Option(None, help="How the provenance field's values map to labels, e.g. 'true=machine,false=human,gpt-*=machine' (replaces \\[ratio.provenance_map]). [default: human=human, machine=machine]"),
    max_human_loss: Optional[float] = typer.Option(None, help="Fail (exit 1) if the target would drop more than this share of human records."),
    allow_unreliable_detector: Optional[bool] = typer.Option(None, "--allow-unreliable-detector", metavar="", help="Downsample to --target-ratio even when the detector looks unreliable on this corpus (the kept share is then reported as unknown). [default: refuse, exit 1]"),
    unseen_source: Optional[bool] = typer.Option(None, "--unseen-source", metavar="", help="The corpus comes from sources unlike the detector's training data: always widen the interval (and the target's bound) over the rates the model card measured on held-out sources."),
    languages: Optional[str] = typer.Option(None, "--languages", help="Keep only records in these languages (comma-separated ISO 639-1 codes, e.g. en,de); the rest are rejected with reason 'language'."),
    reject_repetitive: Optional[bool] = typer.Option(None, "--reject-repetitive", metavar="", help="Reject records that repeat themselves (fewer than half of their own word trigrams distinct, as a model stuck in a loop writes) with reason 'repetitive'; \\[repetition] in the config tunes the rule."),
    group_by: Optional[str] = typer.Option(None, help="Field to group the diversity report by. [default: shard]"),
    engine: Optional[Engine] = typer.Option(None, help="Where the stages run: local process pool or Ray Data. [default: local]"),
    ray_address: Optional[str] = typer.Option(None, help="Join this Ray cluster (default: start a local one)."),
    batch_size: Optional[int] = typer.Option(None, help="Records per scoring batch. [default: 2048]"),
    quiet: Optional[bool] = typer.Option(None, "--quiet", "-q", metavar="", help="No progress output."),
) -> None:
    """Dedup, score and downsample shards; write kept/, rejected/, manifest.json and report.json."""

    def body() -> None:
        overrides: dict[str, Any] = {
            "text_field": text_field, "id_field": id_field, "workers": workers,
            "on_error": on_error.value if on_error else None, "resume": resume, "overwrite": overwrite,
            "annotate": annotate, "dry_run": dry_run, "seed": seed, "quiet": quiet, "batch_size": batch_size,
            "engine": engine.value if engine else None, "ray_address": ray_address,
            "detector": {"model": model, "enabled": False if no_detector else None},
            "dedup": {"near": False if no_near_dedup else None, "threshold": threshold, "num_perm": num_perm},
            "ratio": {"target_ratio": target_ratio, "strategy": strategy.value if strategy else None,
                      "provenance_field": provenance_field, "provenance_map": _provenance_map(provenance_map),
                      "max_human_loss": max_human_loss,
                      "on_unreliable": "proceed" if allow_unreliable_detector else None,
                      "widen": "unseen_source" if unseen_source else None},
            "language": {"keep": languages},
            "repetition": {"reject": True if reject_repetitive else None},
            "report": {"group_by": group_by},
        }
        cfg = build_config(config, overrides)
        from synthfilter.pipeline.run import Progress, run_pipeline

        if cfg.engine != "ray":
            _local_engine_process()
        with Progress(quiet=cfg.quiet) as progress:
            if cfg.engine == "ray":
                from synthfilter.pipeline.ray_engine import run_pipeline_ray

                result = run_pipeline_ray(inputs, out, cfg, progress=progress)
            else:
                result = run_pipeline(inputs, out, cfg, progress=progress)
        if not cfg.quiet:
            _print_summary(result.report, result.out)
        else:
            _print_warnings(result.report)

    guarded(body)


@app.command()
def report(
    inputs: List[str] = typer.Argument(..., metavar="INPUT...", help="Files, directories or globs of .jsonl, .jsonl.gz, .jsonl.zst, .parquet."),
    out: Path = typer.Option(..., "--out", "-o", help="Directory for report.html, report.json and manifest.json."),
    config: Optional[Path] = typer.Option(None, "--config", "-c", help="TOML config file; flags override it."),
    text_field: Optional[str] = typer.Option(None, help="Field holding the text (dotted path). [default: text]"),
    id_field: Optional[str] = typer.Option(None, help="Field holding the record id."),
    group_by: Optional[str] = typer.Option(None, help="Field to group the diversity table by. [default: shard]"),
    provenance_field: Optional[str] = typer.Option(None, help="Field naming who wrote the record."),
    provenance_map: Optional[str] = typer.Option(None, help="How the provenance field's values map to labels, e.g. 'true=machine,false=human,gpt-*=machine' (replaces \\[ratio.provenance_map]). [default: human=human, machine=machine]"),
    model: Optional[str] = typer.Option(None, "--model", help="Detector model directory. [default: the shipped model]"),
    no_detector: Optional[bool] = typer.Option(None, "--no-detector", metavar="", help="Do not score with the detector."),
    workers: Optional[int] = typer.Option(None, "--workers", "-w", help="Worker processes. [default: all cores]"),
    on_error: Optional[OnError] = typer.Option(None, help="On bad input: fail, or count the record as malformed. [default: fail]"),
    overwrite: Optional[bool] = typer.Option(None, "--overwrite", metavar="", help="Replace a previous report in OUT."),
    resume: Optional[bool] = typer.Option(None, "--resume", metavar="", help="Continue an interrupted report in OUT."),
    quiet: Optional[bool] = typer.Option(None, "--quiet", "-q", metavar="", help="No progress output."),
) -> None:
    """A first look at a corpus: duplicates, synthetic share, diversity; nothing is filtered or written."""

    def body() -> None:
        cfg = build_config(config, {
            "text_field": text_field, "id_field": id_field, "workers": workers, "quiet": quiet,
            "on_error": on_error.value if on_error else None, "overwrite": overwrite, "resume": resume, "dry_run": True,
            "detector": {"model": model, "enabled": False if no_detector else None},
            "ratio": {"provenance_field": provenance_field, "provenance_map": _provenance_map(provenance_map),
                      "target_ratio": None},
            "report": {"group_by": group_by, "html": True, "diversity": True},
        })
        cfg.ratio.target_ratio = None  # a first look never downsamples, whatever the config file says
        from synthfilter.pipeline.run import Progress, run_pipeline

        _local_engine_process()

        with Progress(quiet=cfg.quiet) as progress:
            result = run_pipeline(inputs, out, cfg, progress=progress)
        if not cfg.quiet:
            _print_summary(result.report, result.out)
            typer.echo(f"report: {Path(out) / 'report.html'}")

    guarded(body)


@app.command()
def train(
    data: List[Path] = typer.Argument(..., metavar="DATA...", help="Labelled JSONL(.gz/.zst) files: one text and one label per record."),
    out: Path = typer.Option(..., "--out", "-o", help="Model directory to write (model files + card.json)."),
    text_field: str = typer.Option("text", help="Field holding the text (dotted path for nested fields)."),
    label_field: str = typer.Option("label", help="Field holding the label (dotted path for nested fields)."),
    human_label: str = typer.Option("human", help="Label value meaning human-written."),
    machine_label: str = typer.Option("machine", help="Label value meaning model-generated."),
    val: Optional[List[Path]] = typer.Option(None, "--val", help="Held-out labelled data for the card's metrics and operating points."),
    seed: int = typer.Option(0, help="Seed for every random choice in training."),
    balance_by: Optional[str] = typer.Option(None, "--balance-by", help="Field naming each text's origin (e.g. source): every (origin, label) cell weighs the same within its label, and texts are cropped to length parity within an origin, so no one origin carries a label."),
    generator_field: str = typer.Option("generator", help="Field naming the model that wrote a machine text (optional): base-LM samples and chat-model text get one expert each."),
    overwrite: bool = typer.Option(False, "--overwrite", metavar="", help="Replace a model already in --out (once the new one is complete)."),
    quiet: bool = typer.Option(False, "--quiet", "-q", metavar="", help="No progress output."),
) -> None:
    """Train a detector on your own labelled human / machine text (e.g. your generator's output)."""
    from synthfilter.detect.train import train_command

    code = guarded(lambda: train_command(
        data, out, text_field=text_field, label_field=label_field, human_label=human_label,
        machine_label=machine_label, val=val or None, seed=seed, quiet=quiet, balance_by=balance_by,
        generator_field=generator_field, overwrite=overwrite,
    ), resumable=False)
    raise typer.Exit(code or 0)


@app.command()
def adapt(
    data: List[Path] = typer.Argument(..., metavar="DATA...", help="Labelled JSONL(.gz/.zst) records of your own corpus (200-500 is a good start)."),
    out: Path = typer.Option(..., "--out", "-o", help="Adapted model directory to write."),
    model: Optional[Path] = typer.Option(None, "--model", help="Model to adapt. [default: the shipped model]"),
    text_field: str = typer.Option("text", help="Field holding the text (dotted path for nested fields)."),
    label_field: str = typer.Option("label", help="Field holding the label (dotted path for nested fields)."),
    human_label: str = typer.Option("human", help="Label value meaning human-written."),
    machine_label: str = typer.Option("machine", help="Label value meaning model-generated."),
    seed: int = typer.Option(0, help="Seed for the cross-validation folds."),
    method: str = typer.Option("auto", help="auto (chosen by cross-validation), linear (an adapter on top of the "
                               "experts) or refit (the experts refitted with your labels; needs a model with replay.npz)."),
    overwrite: bool = typer.Option(False, "--overwrite", metavar="", help="Replace a model already in --out (once the adapted one is complete)."),
    quiet: bool = typer.Option(False, "--quiet", "-q", metavar="", help="No summary output."),
) -> None:
    """Adapt a detector to your corpus with a few hundred labelled records (no retraining from scratch)."""
    from synthfilter.detect.adapt import adapt_command

    code = guarded(lambda: adapt_command(
        data, out, model=model, text_field=text_field, label_field=label_field, human_label=human_label,
        machine_label=machine_label, seed=seed, quiet=quiet, method=method, overwrite=overwrite,
    ), resumable=False)
    raise typer.Exit(code or 0)


@app.command("eval")
def eval_(
    data: List[Path] = typer.Argument(..., metavar="DATA...", help="Labelled JSONL(.gz/.zst) files."),
    model: Optional[Path] = typer.Option(None, "--model", help="Model directory. [default: the shipped model]"),
    text_field: str = typer.Option("text", help="Field holding the text (dotted path for nested fields)."),
    label_field: str = typer.Option("label", help="Field holding the label (dotted path for nested fields)."),
    human_label: str = typer.Option("human", help="Label value meaning human-written."),
    machine_label: str = typer.Option("machine", help="Label value meaning model-generated."),
    group_by: Optional[str] = typer.Option(None, help="Comma-separated fields for a per-group table (e.g. domain,generator)."),
    json_out: Optional[Path] = typer.Option(None, "--json", help="Also write the metrics as JSON to this file."),
    quiet: bool = typer.Option(False, "--quiet", "-q", metavar="", help="No progress output."),
) -> None:
    """AUROC, TPR at 1 % / 5 % FPR, calibration error and confusion of a detector on labelled data."""
    from synthfilter.detect.evaluate import eval_command

    groups = [g.strip() for g in group_by.split(",") if g.strip()] if group_by else None
    code = guarded(lambda: eval_command(
        data, model, text_field=text_field, label_field=label_field, human_label=human_label,
        machine_label=machine_label, group_by=groups, json_out=json_out, quiet=quiet,
    ), resumable=False)
    raise typer.Exit(code or 0)


@app.command()
def score(
    inputs: List[str] = typer.Argument(..., metavar="INPUT...", help="Files, directories or globs of .jsonl, .jsonl.gz, .jsonl.zst, .parquet."),
    out: Path = typer.Option(..., "--out", "-o", help="Output directory (kept/ with every record and its scores, manifest.json, report.json)."),
    config: Optional[Path] = typer.Option(None, "--config", "-c", help="TOML config file; flags override it."),
    text_field: Optional[str] = typer.Option(None, help="Field holding the text (dotted path for nested fields). [default: text]"),
    id_field: Optional[str] = typer.Option(None, help="Field holding the record id. [default: id when present, else <shard>:<line>]"),
    workers: Optional[int] = typer.Option(None, "--workers", "-w", help="Worker processes. [default: all cores]"),
    on_error: Optional[OnError] = typer.Option(None, help="On bad input: fail with a clear error, or quarantine the record in rejected/. [default: fail]"),
    resume: Optional[bool] = typer.Option(None, "--resume", metavar="", help="Continue an interrupted run in OUT."),
    overwrite: Optional[bool] = typer.Option(None, "--overwrite", metavar="", help="Replace synthfilter's previous outputs in OUT."),
    seed: Optional[int] = typer.Option(None, help="Seed for every random choice. [default: 0]"),
    model: Optional[str] = typer.Option(None, "--model", help="Detector model directory. [default: the shipped model]"),
    provenance_field: Optional[str] = typer.Option(None, help="Field naming who wrote the record (mapped by \\[ratio.provenance_map])."),
    provenance_map: Optional[str] = typer.Option(None, help="How the provenance field's values map to labels, e.g. 'true=machine,false=human,gpt-*=machine' (replaces \\[ratio.provenance_map]). [default: human=human, machine=machine]"),
    batch_size: Optional[int] = typer.Option(None, help="Records per scoring batch. [default: 2048]"),
    quiet: Optional[bool] = typer.Option(None, "--quiet", "-q", metavar="", help="No progress output."),
) -> None:
    """Annotate only: keep every record, each with a 'synthfilter' object (score, provenance); choose thresholds later."""

    def body() -> None:
        cfg = build_config(config, {
            "text_field": text_field, "id_field": id_field, "workers": workers,
            "on_error": on_error.value if on_error else None, "resume": resume, "overwrite": overwrite,
            "seed": seed, "quiet": quiet, "batch_size": batch_size,
            "detector": {"model": model},
            "ratio": {"provenance_field": provenance_field, "provenance_map": _provenance_map(provenance_map)},
        })
        from synthfilter.pipeline.run import Progress
        from synthfilter.pipeline.score_only import run_score_only

        with Progress(quiet=cfg.quiet) as progress:
            result = run_score_only(inputs, out, cfg, progress=progress)
        if not cfg.quiet:
            _print_summary(result.report, result.out)
        else:
            _print_warnings(result.report)

    guarded(body)


class GateFormat(str, Enum):
    jsonl = "jsonl"
    csv = "csv"
    wxr = "wxr"
    markdown = "markdown"
    html = "html"


def _provenance_map(value: Optional[str]) -> Optional[dict[str, str]]:
    """``"true=machine,false=human"`` -> ``{"true": "machine", "false": "human"}``."""
    if value is None:
        return None
    mapping: dict[str, str] = {}
    for pair in value.split(","):
        if not pair.strip():
            continue
        key, sep, label = pair.partition("=")
        if not sep or not key.strip() or not label.strip():
            raise ConfigError(f"--provenance-map: expected VALUE=LABEL pairs separated by commas, got {pair.strip()!r}")
        mapping[key.strip()] = label.strip()
    return mapping


@app.command()
def gate(
    exports: List[str] = typer.Argument(..., metavar="EXPORT...", help="WordPress WXR (.xml), CSV, JSONL files, or folders of Markdown / HTML files."),
    config: Optional[Path] = typer.Option(None, "--config", "-c", help="TOML config file (\\[gate], \\[ratio], ...); flags override it."),
    export_format: Optional[GateFormat] = typer.Option(None, "--format", help="Export format for every EXPORT. [default: detected per file]"),
    max_synthetic: Optional[float] = typer.Option(None, help="Fail when the estimated synthetic share is above S (0-1)."),
    max_duplicates: Optional[float] = typer.Option(None, help="Fail when more than D (0-1) of the records are exact or near copies of another."),
    min_records: Optional[int] = typer.Option(None, help="Fail when fewer than N records have text."),
    require_provenance: Optional[float] = typer.Option(None, help="Fail when provenance is missing on more than F (0-1) of the records."),
    strict: Optional[bool] = typer.Option(None, "--strict", metavar="", help="Compare the upper bound of the synthetic share's 95 % interval."),
    allow_unreliable_detector: Optional[bool] = typer.Option(None, "--allow-unreliable-detector", metavar="", help="Compare the synthetic share with --max-synthetic even when the detector looks unreliable on the export. [default: the rule fails]"),
    report_html: Optional[Path] = typer.Option(None, "--report", help="Write a human page (offending items, worst first) to this .html file."),
    json_out: Optional[Path] = typer.Option(None, "--json", help="Write policy, measured values, verdict and offending ids as JSON."),
    write_approved: Optional[Path] = typer.Option(None, "--write-approved", help="Write approved.jsonl, rejected.jsonl and manifest.json to this directory."),
    overwrite: Optional[bool] = typer.Option(None, "--overwrite", metavar="", help="Replace a previous gate's outputs in --write-approved DIR."),
    target_ratio: Optional[float] = typer.Option(None, help="Synthetic share of the approved subset. [default: --max-synthetic]"),
    text_column: Optional[str] = typer.Option(None, help="CSV: column holding the text. [default: text, content, body, ...]"),
    title_column: Optional[str] = typer.Option(None, help="CSV: column holding the title. [default: title, post_title, ...]"),
    id_column: Optional[str] = typer.Option(None, help="CSV: column holding the id. [default: id, post_id, ...; else <file>:<line>]"),
    link_column: Optional[str] = typer.Option(None, help="CSV: column holding the link. [default: link, url, permalink, path]"),
    text_field: Optional[str] = typer.Option(None, help="JSONL: field holding the text (dotted path). [default: text]"),
    id_field: Optional[str] = typer.Option(None, help="JSONL: field holding the id. [default: id]"),
    post_types: Optional[str] = typer.Option(None, help="WXR: comma-separated post types to gate. [default: all but WordPress internals]"),
    post_statuses: Optional[str] = typer.Option(None, help="WXR: comma-separated statuses to gate (publish, draft, pending, private, future; 'protected' adds password-protected posts; 'draft' also Markdown / HTML drafts by front matter). [default: publish]"),
    provenance_field: Optional[str] = typer.Option(None, help="Field or front-matter key / custom field saying who wrote an item."),
    provenance_map: Optional[str] = typer.Option(None, help="How its values map: 'true=machine,false=human,gpt-*=machine'."),
    seed: Optional[int] = typer.Option(None, help="Seed for every random choice. [default: 0]"),
    model: Optional[str] = typer.Option(None, "--model", help="Detector model directory. [default: the shipped model]"),
    no_detector: Optional[bool] = typer.Option(None, "--no-detector", metavar="", help="Do not score with the detector (provenance and duplicates only)."),
    no_near_dedup: Optional[bool] = typer.Option(None, "--no-near-dedup", metavar="", help="Exact duplicates only."),
    threshold: Optional[float] = typer.Option(None, help="Near-duplicate Jaccard threshold. [default: 0.8]"),
    languages: Optional[str] = typer.Option(None, "--languages", help="Gate only records in these languages (comma-separated ISO 639-1 codes, e.g. en,de); the rest are rejected with reason 'language'."),
    reject_repetitive: Optional[bool] = typer.Option(None, "--reject-repetitive", metavar="", help="Reject records that repeat themselves (fewer than half of their own word trigrams distinct, as a model stuck in a loop writes) with reason 'repetitive'; \\[repetition] in the config tunes the rule."),
    quiet: Optional[bool] = typer.Option(None, "--quiet", "-q", metavar="", help="No summary on stdout (the exit code still tells)."),
) -> None:
    """Check a CMS export against a policy: exit 0 pass, 1 policy violated, 2 input or usage error."""

    def body() -> int:
        cfg = build_config(config, {
            "seed": seed, "quiet": quiet, "text_field": text_field, "id_field": id_field,
            "detector": {"model": model, "enabled": False if no_detector else None},
            "dedup": {"near": False if no_near_dedup else None, "threshold": threshold},
            "ratio": {"target_ratio": target_ratio, "provenance_field": provenance_field,
                      "provenance_map": _provenance_map(provenance_map),
                      "on_unreliable": "proceed" if allow_unreliable_detector else None},
            "language": {"keep": languages},
            "repetition": {"reject": True if reject_repetitive else None},
            "gate": {"max_synthetic": max_synthetic, "max_duplicates": max_duplicates, "min_records": min_records,
                     "require_provenance": require_provenance, "strict": strict,
                     "format": export_format.value if export_format else None, "text_column": text_column,
                     "title_column": title_column, "id_column": id_column, "link_column": link_column,
                     "post_types": post_types, "post_statuses": post_statuses},
        })
        from synthfilter.gate import gate_exports

        _gate_process()
        result = gate_exports(exports, config=cfg)
        written = []
        if write_approved is not None:
            result.write_approved(write_approved, overwrite=bool(cfg.overwrite or overwrite))
            written.append(f"approved: {write_approved / 'approved.jsonl'} ({result.reasons.count('kept'):,} records)")
        if json_out is not None:
            written.append(f"json: {result.write_json(json_out)}")
        if report_html is not None:
            written.append(f"report: {result.write_html(report_html)}")
        if not cfg.quiet:
            typer.echo(result.summary())
            for line in written:
                typer.echo(line)
        return result.exit_code

    raise typer.Exit(guarded(body, resumable=False))


_OWN_PROCESS = False  # True when main() runs: this process is the command's own
_EXITS_PROCESS = False  # True when main() runs as the program itself (no argv given): it may end the process


def _local_engine_process() -> None:
    """In a process of its own, the local engine has pyarrow go without pandas (an import of
    0.15 s that it never uses); called from Python (tests, CliRunner), nothing changes."""
    if _OWN_PROCESS:
        from synthfilter.io.shards import pyarrow_without_pandas

        pyarrow_without_pandas()


def _gate_process() -> None:
    """In a process of its own, the gate has glibc give every block of 1 MiB or more its own
    memory map, handed back when freed (``mallopt(M_MMAP_THRESHOLD)``; nothing where malloc is
    not glibc's). Left alone, glibc raises that threshold to the largest block freed, so after
    the first array of a value per record is freed the next ones come from the heap, and the
    holes they leave between arrays that live on stay resident: some 30 MB of the peak on a
    2 GB export (benchmarks/gate_memory.py). The setting is the whole process's, so called
    from Python (tests, CliRunner), nothing changes."""
    if _OWN_PROCESS:
        import ctypes

        try:
            ctypes.CDLL(None).mallopt(-3, 1 << 20)  # -3: M_MMAP_THRESHOLD
        except (AttributeError, OSError, TypeError):
            pass


def _redeliver_lost_interrupt(info: Any) -> None:
    """``sys.unraisablehook`` of the command's own process. A Ctrl-C (or the run's SIGTERM) that
    arrives while Python runs a callback it cannot raise from (a weakref callback, such as the
    import system's module-lock cleanup, or a ``__del__``) is printed as "Exception ignored in
    ..." with a traceback, and lost: the run goes on. Such an interrupt is sent again, so that it
    is raised where the command handles it (one line, exit 130); anything else is shown as before."""
    kind = info.exc_type
    if kind is not None and issubclass(kind, KeyboardInterrupt):
        signum = getattr(info.exc_value, "signum", signal.SIGINT)
        if callable(signal.getsignal(signum)):  # a Python handler still wants it
            import threading

            threading.Thread(target=_send_when_returned, args=(threading.get_ident(), signum),
                             name="synthfilter-interrupt", daemon=True).start()
        return
    sys.__unraisablehook__(info)


def _send_when_returned(thread_id: int, signum: int) -> None:
    """Sends ``signum`` once the hook has returned: sent from the hook itself, the handler's
    exception would be raised inside the hook, and be lost with it."""
    import time

    hook = _redeliver_lost_interrupt.__code__
    for _ in range(2000):
        frame = sys._current_frames().get(thread_id)
        while frame is not None and frame.f_code is not hook:
            frame = frame.f_back
        if frame is None:
            break
        time.sleep(0.001)
    os.kill(os.getpid(), signum)


def main(argv: Optional[List[str]] = None) -> None:
    """Console-script entry point."""
    global _OWN_PROCESS, _EXITS_PROCESS
    _OWN_PROCESS = True
    _EXITS_PROCESS = argv is None  # the console script or ``python -m``, not a caller passing argv
    if _EXITS_PROCESS:
        sys.unraisablehook = _redeliver_lost_interrupt
    try:
        app(args=argv, prog_name="synthfilter", standalone_mode=True)
    except SystemExit as e:
        code = e.code if isinstance(e.code, int) else (0 if e.code is None else 2)
        if _EXITS_PROCESS:
            # The command has ended (its outputs written, or its error said): a Ctrl-C from here
            # on would only turn its exit code into a signal's, so the teardown is not interruptible.
            signal.signal(signal.SIGINT, signal.SIG_IGN)
        sys.exit(code)
    except KeyboardInterrupt:  # between the command's own handling and here: the same one line
        _interrupted("interrupted; rerun with --resume to continue", 130)
