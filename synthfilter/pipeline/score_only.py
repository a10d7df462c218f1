"""``synthfilter score``: the annotate-only run. Every usable record is kept and carries its
scores, so thresholds can be chosen later (as Dolma's attribute files allow)."""

from __future__ import annotations

import copy
import os
from collections.abc import Sequence

from synthfilter.config import Config
from synthfilter.pipeline.run import Progress, RunResult, run_pipeline


def score_only_config(cfg: Config) -> Config:
    """``cfg`` with every decision that could drop a usable record switched off.

    Duplicate removal and target-ratio downsampling are off, ``annotate`` is on: each kept
    record gets a ``synthfilter`` object with ``decision`` ("kept"), ``score`` and
    ``provenance``. Records without usable text still follow ``on_error`` (fail, or
    ``rejected/`` as ``malformed``): they have nothing to score.
    """
    out = copy.deepcopy(cfg)
    out.annotate = True
    out.dry_run = False
    out.dedup.exact = False
    out.dedup.near = False
    out.ratio.target_ratio = None
    out.ratio.max_human_loss = None
    out.validate()
    return out


def run_score_only(inputs: Sequence[str], out: str | os.PathLike[str], cfg: Config,
                   progress: Progress | None = None) -> RunResult:
    """Score every record of ``inputs`` into ``out/kept`` (same layout and report as ``run``)."""
    return run_pipeline(inputs, out, score_only_config(cfg), progress=progress)
