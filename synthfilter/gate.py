"""Gate a CMS export before it reaches training: check it against a policy (synthetic share,
duplicates, size, provenance), name the items that are the problem, write the approved subset.

Scoring and deciding are the pipeline's own (``SynthFilter.annotate`` / ``decide``), so the gate
and ``synthfilter run`` agree on every duplicate and every estimate.
"""

from __future__ import annotations

import copy
import datetime as dt
import json
import math
import os
import sys
from collections import Counter
from collections.abc import Iterable, Iterator, Mapping, Sequence
from dataclasses import asdict, dataclass, field, fields
from pathlib import Path
from typing import TYPE_CHECKING, Any

from synthfilter.config import Config, ConfigError, GateConfig
from synthfilter.report import languages_line

if TYPE_CHECKING:
    from synthfilter.io.cms import CmsRecord

__all__ = ["GateCheck", "GatePolicy", "GateResult", "OffendingItem", "gate", "gate_exports"]

EXCLUDED = "excluded"  # the reason of items that are not gated (WordPress attachments, trashed posts)
APPROVED_FILE, REJECTED_FILE, MANIFEST_FILE = "approved.jsonl", "rejected.jsonl", "manifest.json"
# A calibrated score at or above this marks an item of unknown provenance as likely synthetic.
SYNTHETIC_SCORE = 0.5
_SUMMARY_ITEMS = 5
_HTML_ITEMS = 2000
_LISTED_WITHOUT_TEXT = 1000  # items without text named in --json and --report (all are counted)
GATE_BATCH = 256  # records scored at a time
_PLACEHOLDER = "\x00synthfilter: streamed by write_json\x00"


# -- policy -------------------------------------------------------------------------------------


@dataclass(frozen=True)
class GatePolicy:
    """What an export must meet; a rule left at None is not checked.

    Attributes:
        max_synthetic: most estimated synthetic share (of the unique records), in [0, 1].
        max_duplicates: most share of records that are exact or near copies of another record
            (the copies duplicate removal would drop; each group keeps one).
        min_records: fewest records with text.
        require_provenance: most share of records allowed without a provenance label.
        strict: compare the upper bound of the synthetic share's 95 % interval, not the estimate.
    """

    max_synthetic: float | None = None
    max_duplicates: float | None = None
    min_records: int | None = None
    require_provenance: float | None = None
    strict: bool = False

    def __post_init__(self) -> None:
        for name in ("max_synthetic", "max_duplicates", "require_provenance"):
            v = getattr(self, name)
            if v is not None and (isinstance(v, bool) or not isinstance(v, (int, float)) or not 0.0 <= v <= 1.0):
                raise ConfigError(f"gate policy: {name} must be a share in [0, 1], got {v!r}")
        m = self.min_records
        if m is not None and (isinstance(m, bool) or not isinstance(m, int) or m < 0):
            raise ConfigError(f"gate policy: min_records must be an integer >= 0, got {m!r}")

    @classmethod
    def from_config(cls, g: GateConfig) -> "GatePolicy":
        return cls(max_synthetic=g.max_synthetic, max_duplicates=g.max_duplicates, min_records=g.min_records,
                   require_provenance=g.require_provenance, strict=g.strict)

    @property
    def has_rules(self) -> bool:
        return any(v is not None for v in (self.max_synthetic, self.max_duplicates, self.min_records,
                                            self.require_provenance))

    def describe(self) -> str:
        parts = []
        if self.max_synthetic is not None:
            basis = " (upper bound of the 95 % interval)" if self.strict else ""
            parts.append(f"synthetic share ≤ {_pct(self.max_synthetic)}{basis}")
        if self.max_duplicates is not None:
            parts.append(f"duplicates ≤ {_pct(self.max_duplicates)}")
        if self.min_records is not None:
            parts.append(f"≥ {self.min_records:,} records")
        if self.require_provenance is not None:
            parts.append(f"provenance missing on ≤ {_pct(self.require_provenance)}")
        return ", ".join(parts) if parts else "no rules"

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


def _policy(policy: GatePolicy | Mapping[str, Any] | None, cfg: Config) -> GatePolicy:
    if policy is None:
        return GatePolicy.from_config(cfg.gate)
    if isinstance(policy, GatePolicy):
        return policy
    if isinstance(policy, Mapping):
        known = {f.name for f in fields(GatePolicy)}
        unknown = sorted(set(policy) - known)
        if unknown:
            raise ConfigError(f"gate policy: unknown rule(s) {unknown}; known: {sorted(known)}")
        return GatePolicy(**dict(policy))
    raise TypeError(f"policy must be a GatePolicy, a dict of rules or None, got {type(policy).__name__}")


# -- results ------------------------------------------------------------------------------------


@dataclass
class GateCheck:
    """One rule of the policy: what was measured against which limit."""

    rule: str
    passed: bool
    measured: float | int | None
    limit: float | int
    detail: str

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


@dataclass
class OffendingItem:
    """An item a person should look at: likely synthetic, a duplicate, or (when provenance is
    required) without a provenance label."""

    id: str
    title: str | None
    link: str | None
    path: str | None
    source: str
    problems: list[str]
    p_synthetic: float | None  # 1 / 0 for known machine / human provenance, else the detector score
    score: float | None
    provenance: str
    duplicate_of: str | None
    duplicate_of_title: str | None
    decision: str

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


class _Column(Sequence):
    """A per-record column read from compact arrays on access (a list of Python objects per
    record would grow with the export); compares equal to a list with the same values."""

    def __init__(self, n: int, get: Any):
        self._n = n
        self._get = get

    def __len__(self) -> int:
        return self._n

    def __getitem__(self, i: Any) -> Any:
        if isinstance(i, slice):
            return [self._get(j) for j in range(*i.indices(self._n))]
        if i < 0:
            i += self._n
        if not 0 <= i < self._n:
            raise IndexError(i)
        return self._get(i)

    def __iter__(self) -> Iterator[Any]:
        return (self._get(j) for j in range(self._n))

    def __eq__(self, other: object) -> bool:
        if isinstance(other, (Sequence, list)):
            return len(self) == len(other) and all(a == b for a, b in zip(self, other))
        return NotImplemented

    def __repr__(self) -> str:
        head = ", ".join(repr(x) for x in self[:5])
        return f"[{head}{', ...' if self._n > 5 else ''}] ({self._n:,} records)"


class _Names(_Column):
    """Per record, a name from a code (``reasons``, ``provenance``)."""

    def __init__(self, codes: Any, names: Sequence[str]):
        self.codes = codes
        self.names = names
        super().__init__(len(codes), lambda i: names[int(codes[i])])

    def count(self, value: Any) -> int:
        if value not in self.names:
            return 0
        return int((self.codes == self.names.index(value)).sum())

    def __iter__(self) -> Iterator[str]:
        names = self.names
        return (names[c] for c in self.codes.tolist())


def _rounded(gs: Any, values: Any) -> _Column:
    """Per record, the value of a gated record (``values``: one per gated record) rounded to 6
    places, or None where NaN (not scored, not downsampled) or not gated."""

    def get(i: int) -> float | None:
        p = gs.position(i)
        return None if p < 0 or math.isnan(values[p]) else round(float(values[p]), 6)

    return _Column(gs.n, get)


class _Offending(Sequence):
    """The offending items, worst first (``rows``: their record indices), built when asked for:
    ``build(k)`` makes the k-th from compact columns."""

    def __init__(self, rows: Any, build: Any):
        self.rows = rows
        self._build = build

    def __len__(self) -> int:
        return len(self.rows)

    def __getitem__(self, i: Any) -> Any:
        if isinstance(i, slice):
            return [self._build(k) for k in range(*i.indices(len(self.rows)))]
        if i < 0:
            i += len(self.rows)
        if not 0 <= i < len(self.rows):
            raise IndexError(i)
        return self._build(i)

    def __iter__(self) -> Iterator[OffendingItem]:
        return (self._build(k) for k in range(len(self.rows)))

    def __eq__(self, other: object) -> bool:
        if isinstance(other, (Sequence, list)):
            return len(self) == len(other) and all(a == b for a, b in zip(self, other))
        return NotImplemented


@dataclass
class GateResult:
    """The verdict on an export, what was measured, the offending items (worst first) and one
    decision per record (``reasons``: ``kept``, a rejection reason of ``run``, or ``excluded``).

    The per-record sequences (``records``, ``reasons``, ``duplicate_of``, ``scores``,
    ``p_machine``, ``provenance``) and ``offending`` are read from compact columns on access;
    for ``gate_exports`` ``records`` reads the export files again (nothing holds them)."""

    passed: bool
    policy: GatePolicy
    checks: list[GateCheck]
    measured: dict[str, Any]
    offending: Sequence[OffendingItem] = field(repr=False)
    records: Sequence[CmsRecord] = field(repr=False)
    reasons: Sequence[str] = field(repr=False)
    duplicate_of: Sequence[str | None] = field(repr=False)
    scores: Sequence[float | None] = field(repr=False)
    p_machine: Sequence[float | None] = field(repr=False)
    provenance: Sequence[str] = field(repr=False)
    report: dict[str, Any] = field(repr=False)
    config: Config = field(repr=False)
    messages: list[str] = field(default_factory=list)
    warnings: list[str] = field(default_factory=list)
    inputs: list[dict[str, Any]] = field(default_factory=list, repr=False)
    ignored_files: list[str] = field(default_factory=list, repr=False)
    # Items read with no text to gate (an empty body, markup only): id, title, where; the first
    # _LISTED_WITHOUT_TEXT of them (measured["without_text"] counts them all).
    without_text: list[dict[str, Any]] = field(default_factory=list, repr=False)
    _decisions: Any = field(default=None, repr=False)
    _input_paths: list[str] = field(default_factory=list, repr=False)
    _scan: Any = field(default=None, repr=False)

    @property
    def verdict(self) -> str:
        return "pass" if self.passed else "fail"

    @property
    def failed(self) -> list[GateCheck]:
        return [c for c in self.checks if not c.passed]

    @property
    def exit_code(self) -> int:
        """0 when the export passes, 1 when a rule failed."""
        return 0 if self.passed else 1

    @property
    def offending_ids(self) -> list[str]:
        return list(self._iter_offending_ids())

    def _iter_offending_ids(self) -> Iterator[str]:
        strings = self._scan.strings if self._scan is not None else None
        if strings is not None and isinstance(self.offending, _Offending):
            return (strings.get(int(r), "id") for r in self.offending.rows)  # type: ignore[misc]
        return (o.id for o in self.offending)

    @property
    def approved(self) -> list[CmsRecord]:
        """The records that pass: duplicates removed, synthetic share at most the target."""
        return [r for r, why in zip(self.records, self.reasons) if why == "kept"]

    # -- outputs --------------------------------------------------------------------------------

    def to_dict(self, items: bool = True) -> dict[str, Any]:
        """The ``--json`` document: policy, measured values, verdict, offending ids and items
        (``items=False``: placeholders instead of the two lists, for ``write_json``)."""
        from synthfilter import __version__

        return {
            "synthfilter_version": __version__,
            "verdict": self.verdict,
            "passed": self.passed,
            "failed_rules": [c.rule for c in self.failed],
            "messages": self.messages,
            "policy": self.policy.to_dict(),
            "checks": [c.to_dict() for c in self.checks],
            "measured": self.measured,
            "offending_ids": self.offending_ids if items else _PLACEHOLDER,
            "offending": [o.to_dict() for o in self.offending] if items else _PLACEHOLDER,
            "without_text": self.without_text,
            "approved": self._approved_summary(),
            "warnings": self.warnings,
            "inputs": self.inputs,
            "ignored_files": self.ignored_files,
            "report": self.report,
        }

    def _approved_summary(self) -> dict[str, Any]:
        counts = _reason_counts(self)
        syn = self.report.get("synthetic") or {}
        return {
            "records": counts.get("kept", 0),
            "rejected_by_reason": {k: v for k, v in sorted(counts.items()) if k != "kept"},
            "target_ratio": syn.get("target_ratio"),
            "estimated_share_after": syn.get("estimated_share_after"),
            "ci95_after": syn.get("ci95_after"),
            "kept_share_known": syn.get("kept_share_known", True),
        }

    def summary(self) -> str:
        """A one-screen summary for the terminal."""
        m = self.measured
        checks = {c.rule: c for c in self.checks}

        def mark(rule: str) -> str:
            c = checks.get(rule)
            if c is None:
                return "(no limit)"
            word = "minimum" if rule == "min_records" else "limit"
            return f"{word} {_fmt_limit(rule, c.limit)}   {'ok' if c.passed else 'FAIL'}"

        lines = [f"synthfilter gate: {'PASS' if self.passed else 'FAIL'}   policy: {self.policy.describe()}"]
        skipped = ""
        if m["excluded"]:
            skipped = f", {m['excluded']:,} not gated ({_excluded_summary(m)})"
        other = f", {m['language_rejected']:,} in other languages (--languages)" if m.get("language_rejected") else ""
        if m.get("repetitive_rejected"):
            other += f", {m['repetitive_rejected']:,} repeating themselves (--reject-repetitive)"
        lines.append(f"  records     {m['records']:,} read: {m['with_text']:,} with text, "
                     f"{m['without_text']:,} without text{other}{skipped}")
        languages = languages_line(self.report)
        if languages:
            lines.append(f"  {languages}")
        share = m["synthetic_share"]
        if share is None:
            if not m["with_text"]:
                syn = "not estimated (no record with text)"
            elif self.messages:
                syn = "not estimated (see the note below)"
            else:
                syn = "not estimated (detector off, no provenance labels)"
        else:
            ci = m["synthetic_ci95"]
            interval = f" [{_pct(ci[0])}, {_pct(ci[1])}]" if ci else ""
            kp = m["known_provenance"]
            syn = (f"{_pct(share)}{interval}  (provenance: {kp['human']:,} human, {kp['machine']:,} machine; "
                   f"detector-scored {m['detector_scored']:,})")
        lines.append(f"  synthetic   {syn}   {mark('max_synthetic')}")
        lines.append(f"  duplicates  {_pct(m['duplicate_share'])}  ({m['exact_duplicates']:,} exact, "
                     f"{m['near_duplicates']:,} near copies)   {mark('max_duplicates')}")
        if m["provenance_field"]:
            lines.append(f"  provenance  missing on {_pct(m['provenance_missing_share'])} "
                         f"({m['provenance_missing']:,} records, field {m['provenance_field']!r})   "
                         f"{mark('require_provenance')}")
        if "min_records" in checks:
            lines.append(f"  size        {m['with_text']:,} records with text   {mark('min_records')}")
        for c in self.failed:
            lines.append(f"failed: {c.detail}")
        for msg in self.messages:
            lines.append(f"note: {msg}")
        for w in self.warnings[:3]:
            lines.append(f"warning: {w}")
        if len(self.warnings) > 3:
            lines.append(f"  ... and {len(self.warnings) - 3:,} more warnings (--report FILE.html, --json FILE)")
        if self.offending:
            lines.append(f"worst items ({len(self.offending):,} offending):")
            for o in self.offending[:_SUMMARY_ITEMS]:
                lines.append("  " + _item_line(o))
            if len(self.offending) > _SUMMARY_ITEMS:
                lines.append(f"  ... and {len(self.offending) - _SUMMARY_ITEMS:,} more (--report FILE.html, --json FILE)")
        return "\n".join(lines)

    def write_json(self, path: str | os.PathLike[str]) -> Path:
        """The ``to_dict`` document as JSON, written a few thousand items at a time (the same
        bytes as ``json.dumps(result.to_dict(), indent=2)``), atomically."""
        from synthfilter.io.shards import atomic_open

        p = Path(path)
        doc = self.to_dict(items=False)
        head = json.dumps(doc, indent=2, ensure_ascii=False, default=str)
        with atomic_open(p) as f:
            rest = head
            for key, items in (("offending_ids", self._iter_offending_ids),
                               ("offending", lambda: (o.to_dict() for o in self.offending))):
                marker = f'"{key}": {json.dumps(_PLACEHOLDER)}'
                before, _, rest = rest.partition(marker)
                f.write(before.encode("utf-8"))
                f.write(f'"{key}": '.encode("utf-8"))
                _write_json_list(f, items(), indent=2, level=1)
            f.write(rest.encode("utf-8"))
        return p

    def write_html(self, path: str | os.PathLike[str]) -> Path:
        from synthfilter.io.shards import atomic_write_bytes

        p = Path(path)
        atomic_write_bytes(p, render_gate_html(self).encode("utf-8"))
        return p

    def write_approved(self, out: str | os.PathLike[str], overwrite: bool = False) -> dict[str, Any]:
        """``approved.jsonl`` (records that pass, for training), ``rejected.jsonl`` (every other
        record with a ``synthfilter`` object saying why) and ``manifest.json`` (with the
        conservation check: approved + rejected = records read). Returns the manifest."""
        return _write_approved(self, Path(out), overwrite)


# -- the gate -----------------------------------------------------------------------------------


def _resolve_config(config: Config | str | os.PathLike[str] | Mapping[str, Any] | None) -> Config:
    from synthfilter.api import _resolve_config as resolve

    return resolve(config, source="gate(config=...)")


def _as_record(item: CmsRecord | Mapping[str, Any], i: int, cfg: Config) -> CmsRecord:
    from synthfilter.io.cms import CmsRecord

    if isinstance(item, CmsRecord):
        return item
    if not isinstance(item, Mapping):
        raise TypeError(f"records[{i}] must be a CmsRecord or a mapping, got {type(item).__name__}")
    from synthfilter.records import FieldSpec

    obj = dict(item)
    rid, text, _, error = FieldSpec(cfg.text_field, cfg.id_field).extract(obj, "records", i)

    def s(key: str) -> str | None:
        v = obj.get(key)
        return str(v) if isinstance(v, (str, int, float)) and not isinstance(v, bool) and str(v).strip() else None

    return CmsRecord(id=rid, text=text, title=s("title"), link=s("link") or s("url"), path=s("path"),
                     source=f"records[{i}]", error=error, record=obj)


def gate(records: Iterable[CmsRecord | Mapping[str, Any]], policy: GatePolicy | Mapping[str, Any] | None = None,
         config: Config | str | os.PathLike[str] | Mapping[str, Any] | None = None) -> GateResult:
    """Check records against a policy; score and decide with the pipeline's own stages.

    Args:
        records: ``CmsRecord``s (from ``synthfilter.io.cms.read_exports``) or mappings with the
            text under ``config.text_field`` (default ``text``) and optional ``id``, ``title``,
            ``link``/``url``, ``path``.
        policy: a ``GatePolicy``, a dict of its fields, or None for the config's ``[gate]`` table.
        config: a ``Config``, a TOML path, a dict laid out like the TOML file, or None. The
            detector, dedup and ``[ratio]`` settings (provenance field and map) apply as in ``run``.

    Returns:
        A ``GateResult``: ``passed``, ``checks``, ``measured``, ``offending`` (worst first) and a
        decision per record. The approved subset (``result.approved``) has duplicates removed
        and the synthetic share downsampled to ``ratio.target_ratio``, or else to
        ``max_synthetic``. A target that would drop more human records than
        ``ratio.max_human_loss`` allows fails the rule ``max_human_loss`` (the subset is
        downsampled all the same): the gate never raises for a policy.

    Raises:
        ConfigError: the policy asks for something the config cannot measure (e.g.
            ``require_provenance`` without ``ratio.provenance_field``).

    Example:
        >>> result = gate([{"id": "a", "text": "..."}], {"max_duplicates": 0.05},
        ...               {"detector": {"enabled": False}})
        >>> result.passed, result.offending_ids
    """
    from synthfilter.gatescan import ListSource
    from synthfilter.io.cms import CmsRecord, make_ids_unique

    if isinstance(records, (str, bytes, os.PathLike, Mapping, CmsRecord)) or not isinstance(records, Iterable):
        raise TypeError(f"gate takes an iterable of records (CmsRecords or mappings), got {type(records).__name__}"
                        + ("; to gate export files: from synthfilter.gate import gate_exports; gate_exports(paths, policy)"
                           if isinstance(records, (str, os.PathLike)) else "; for one record: gate([record])"))
    cfg = _resolve_config(config)
    pol = _policy(policy, cfg)
    recs = [_as_record(r, i, cfg) for i, r in enumerate(records)]
    make_ids_unique(recs)
    return _gate_source(ListSource(recs), pol, cfg)


def _gate_source(source: Any, pol: GatePolicy, cfg: Config) -> GateResult:
    """Gate the records of a ``gatescan.RecordSource``: one scoring pass in bounded memory, the
    pipeline's decide stage, then the verdict and the offending items."""
    import shutil

    import numpy as np

    from synthfilter.api import SynthFilter
    from synthfilter.gatescan import scan, take_strings
    from synthfilter.pipeline.stages import MALFORMED

    prov_field = cfg.ratio.provenance_field
    if pol.require_provenance is not None and not prov_field:
        raise ConfigError("--require-provenance needs a provenance field: pass --provenance-field "
                          "(or set ratio.provenance_field in the config)")

    target = cfg.ratio.target_ratio
    if target is None and pol.max_synthetic is not None and pol.max_synthetic < 1.0:
        target = pol.max_synthetic
    scoring = copy.deepcopy(cfg)
    # Texts are already extracted; records without text are rejected (never a reason to stop).
    scoring.text_field, scoring.id_field, scoring.on_error = "text", None, "quarantine"
    scoring.ratio.target_ratio = target
    # An unreliable detector fails the synthetic rule (below) instead of stopping the gate.
    scoring.ratio.on_unreliable = "proceed"
    sf = SynthFilter(scoring)

    def no_estimate(unknown_ok: np.ndarray, known_any: bool) -> str | None:
        if cfg.detector.enabled or not known_any or not unknown_ok.any():
            return None
        # Some records are labelled and the rest cannot be scored: no estimate of the share exists.
        why = (f"{int(unknown_ok.sum()):,} records have neither a provenance label nor a detector score, so the "
               "synthetic share cannot be estimated")
        if cfg.ratio.target_ratio is not None:  # an approved subset at a target cannot be made
            raise ConfigError(f"{why}: enable the detector (drop --no-detector) or label them "
                              "(--provenance-field / --provenance-map)")
        # --max-synthetic fails on it (exit 1), as on an export no record of which can be estimated.
        return f"{why} (the detector is off): enable the detector or label them (--provenance-field / --provenance-map)"

    # Small scoring batches: a batch's texts and their word shingles (Python objects) are the
    # gate's largest transient memory; scores do not depend on the batch size.
    gs, tmp = scan(source, sf, prov_field, min(cfg.batch_size, GATE_BATCH), no_estimate,
                   require_target=cfg.ratio.target_ratio is not None)
    try:
        result = _result(gs, source, pol, cfg, prov_field)
        # The strings of the records the result names (offending items, kept copies of
        # duplicates); then the temporary files go.
        offending_rows = result.offending.rows  # type: ignore[attr-defined]
        empty_rows = np.flatnonzero(gs.reason_codes() == MALFORMED)[:_LISTED_WITHOUT_TEXT]
        gs.strings = take_strings(gs, np.concatenate([offending_rows, gs.kept_rows(), empty_rows]))
        gs.store = None
        result.without_text = [_named(gs.strings, int(i)) for i in empty_rows]
    finally:
        shutil.rmtree(tmp, ignore_errors=True)
    return result


def _result(gs: Any, source: Any, pol: GatePolicy, cfg: Config, prov_field: str | None) -> GateResult:
    from synthfilter.gatescan import REASON_NAMES
    from synthfilter.pipeline.stages import (
        EXACT_DUP, NEAR_DUP, PROVENANCE_NAMES, STATUS_LANGUAGE, STATUS_OK, STATUS_REPETITIVE,
    )
    from synthfilter.provenance import HUMAN, MACHINE, UNKNOWN

    report = gs.report
    # Records with text in a language --languages keeps (all languages without it): what is gated.
    ok = gs.status == STATUS_OK
    other_language = int((gs.status == STATUS_LANGUAGE).sum())
    repetitive = int((gs.status == STATUS_REPETITIVE).sum())
    labels = gs.labels
    unknown_ok = ok & (labels == UNKNOWN)
    messages = list(gs.messages)
    reason = gs.decisions.reason
    n_text = int(ok.sum())
    exact, near = int((reason == EXACT_DUP).sum()), int((reason == NEAR_DUP).sum())
    syn = report.get("synthetic") or {}
    share = syn.get("estimated_share_before")
    ci = syn.get("ci95_before")
    scope = syn.get("scope") or {}
    # The detector is on, but no record is in a language it is trusted on nor of known provenance.
    no_language = share is None and n_text > 0 and scope.get("records_in_estimate") == 0 and cfg.detector.enabled
    # Or it is off and only some records are labelled (the scan's note says so).
    unestimable = no_language or (share is None and n_text > 0 and bool(gs.messages))
    if no_language:
        trusted = ", ".join(scope.get("detector_languages") or [])
        messages.append(f"the synthetic share cannot be estimated: none of the {n_text:,} records with text is in a "
                        f"language the detector is trusted on ({trusted}) or of known provenance: add their languages to "
                        "[detector] languages if the detector suits them, or label the records (--provenance-field)")
    if pol.max_synthetic is not None and share is None and n_text and not unestimable:
        if prov_field:
            from synthfilter.provenance import provenance_warning

            why = provenance_warning(prov_field, n_text, gs.provenance_tally) if gs.provenance_tally else None
            raise ConfigError("--max-synthetic needs a synthetic-share estimate, but the detector is off and no record "
                              f"got a provenance label: {why or 'enable the detector'}")
        raise ConfigError("--max-synthetic needs a synthetic-share estimate, but the detector is off and no record "
                          "has a provenance label: enable the detector or pass --provenance-field")
    missing = int(unknown_ok.sum())
    n_gated = len(gs.gated)
    measured: dict[str, Any] = {
        "records": gs.n,
        "with_text": n_text,
        "without_text": n_gated - n_text - other_language - repetitive,
        "language_rejected": other_language,
        "repetitive_rejected": repetitive,
        "excluded": gs.n - n_gated,
        "excluded_by_kind": dict(gs.excluded_kinds.most_common()),
        "synthetic_share": share,
        "synthetic_ci95": ci,
        "synthetic_method": syn.get("method"),
        "synthetic_reliability": (syn.get("reliability") or {}).get("verdict"),
        "synthetic_basis": _synthetic_basis(scope),
        "synthetic_estimable": not unestimable,
        "known_provenance": {"human": int((ok & (labels == HUMAN)).sum()), "machine": int((ok & (labels == MACHINE)).sum())},
        "detector_scored": syn.get("detector_scored") or 0,
        "duplicate_share": (exact + near) / n_text if n_text else 0.0,
        "exact_duplicates": exact,
        "near_duplicates": near,
        "duplicate_clusters": (report.get("duplicates") or {}).get("clusters", 0),
        "provenance_field": prov_field,
        "provenance_missing": missing if prov_field else n_text,
        "provenance_missing_share": (missing / n_text if n_text else 0.0) if prov_field else 1.0,
    }
    checks = _checks(pol, measured, refuse_unreliable=cfg.ratio.on_unreliable == "refuse")
    if gs.human_loss is not None:
        loss = float(syn.get("estimated_human_loss") or 0.0)
        measured["human_loss"] = loss
        checks.append(GateCheck("max_human_loss", False, loss, float(cfg.ratio.max_human_loss or 0.0),
                                f"max_human_loss: {gs.human_loss}; the approved subset is downsampled to the target "
                                "all the same: raise the target (--target-ratio) or ratio.max_human_loss"))
    if not pol.has_rules:
        messages.append("no policy rules set (--max-synthetic, --max-duplicates, --min-records, "
                        "--require-provenance): only an export with nothing to gate fails")

    # Per record, in input order, from compact columns; excluded items are not gated.
    reason_codes = gs.reason_codes()
    prov_codes = gs.provenance_codes()

    def dup_id(i: int) -> str | None:
        j = gs.duplicate_row(i)
        return None if j < 0 else gs.strings.get(j, "id")

    result = GateResult(
        passed=all(c.passed for c in checks), policy=pol, checks=checks, measured=measured, offending=[],
        records=source, reasons=_Names(reason_codes, REASON_NAMES), duplicate_of=_Column(gs.n, dup_id),
        scores=_rounded(gs, gs.score), p_machine=_rounded(gs, gs.decisions.posterior),
        provenance=_Names(prov_codes, PROVENANCE_NAMES), report=report, config=cfg, messages=messages,
        warnings=list(report.get("warnings") or []), _decisions=gs.decisions, _scan=gs,
    )
    result.offending = _offending(gs, reason_codes, prov_codes, require_provenance=pol.require_provenance is not None)
    return result


def _synthetic_basis(scope: Mapping[str, Any]) -> str:
    """What the synthetic share is measured over (``scope``: the report's ``synthetic.scope``)."""
    if not scope.get("not_estimated"):
        return "unique records (after duplicate removal)"
    trusted = ", ".join(scope.get("detector_languages") or [])
    return (f"unique records (after duplicate removal) in {trusted} and those of known provenance; "
            f"{scope['not_estimated']:,} in other languages left out")


def _excluded_summary(m: Mapping[str, Any]) -> str:
    return ", ".join(f"{k} {v:,}" for k, v in m["excluded_by_kind"].items())


def _excluded_kind(why: str | None) -> str:
    return (why or "").split(" (")[0]


def _checks(pol: GatePolicy, m: Mapping[str, Any], refuse_unreliable: bool = True) -> list[GateCheck]:
    out = []
    if pol.min_records is not None:
        v = m["with_text"]
        out.append(GateCheck("min_records", v >= pol.min_records, v, pol.min_records,
                             f"min_records: {v:,} records with text, at least {pol.min_records:,} required"))
    elif m["with_text"] == 0 and pol.max_synthetic is None:
        # Nothing was gated at all (an empty export, a misspelt --post-types, an export of drafts):
        # whatever the rules, an empty approved subset is not a pass (max_synthetic fails on it
        # already). min_records = 0 lets it pass.
        skipped = f"; {m['excluded']:,} not gated ({_excluded_summary(m)})" if m["excluded"] else ""
        what = f"none of the {m['records']:,} items read has text to gate" if m["records"] else "no item was read"
        out.append(GateCheck("min_records", False, 0, 1,
                             f"min_records: {what}{skipped}: check the export, --post-types and --post-statuses "
                             "(min_records = 0 lets an empty export pass)"))
    if pol.max_synthetic is not None:
        ci = m["synthetic_ci95"]
        v = ci[1] if pol.strict and ci else m["synthetic_share"]
        what = "upper bound of the synthetic share" if pol.strict else "estimated synthetic share"
        if v is None and not m.get("synthetic_estimable", True):
            out.append(GateCheck("max_synthetic", False, None, pol.max_synthetic,
                                 "max_synthetic: the synthetic share cannot be estimated (see the note)"))
        elif v is None:
            # With text there is an estimate, or it is unestimable (above), or ``_result`` refused.
            # So nothing was read that could be gated (an empty export, bodies that are all empty,
            # every item excluded, e.g. by a misspelt --post-types): a gate that passes here
            # would pass a broken export.
            excluded = f"; {m['excluded']:,} not gated ({_excluded_summary(m)})" if m["excluded"] else ""
            out.append(GateCheck("max_synthetic", False, None, pol.max_synthetic,
                                 f"max_synthetic: nothing to check: none of the {m['records']:,} records read has "
                                 f"text{excluded}"))
        elif refuse_unreliable and m.get("synthetic_reliability") == "unreliable":
            out.append(GateCheck("max_synthetic", False, v, pol.max_synthetic,
                                 f"max_synthetic: the detector looks unreliable on this export, so its estimate "
                                 f"({_pct(v)}) cannot be trusted against {_pct(pol.max_synthetic)} (see the warning; "
                                 "--allow-unreliable-detector, or ratio.on_unreliable = \"proceed\", compares it anyway)"))
        else:
            bad = v > pol.max_synthetic + 1e-12
            out.append(GateCheck("max_synthetic", not bad, v, pol.max_synthetic,
                                 f"max_synthetic: {what} {_pct(v)} {'>' if bad else '≤'} {_pct(pol.max_synthetic)}"))
    if pol.max_duplicates is not None:
        v = m["duplicate_share"]
        bad = v > pol.max_duplicates + 1e-12
        out.append(GateCheck("max_duplicates", not bad, v, pol.max_duplicates,
                             f"max_duplicates: {_pct(v)} of records are copies of another "
                             f"({m['exact_duplicates']:,} exact, {m['near_duplicates']:,} near) "
                             f"{'>' if bad else '≤'} {_pct(pol.max_duplicates)}"))
    if pol.require_provenance is not None:
        v = m["provenance_missing_share"]
        bad = v > pol.require_provenance + 1e-12
        out.append(GateCheck("require_provenance", not bad, v, pol.require_provenance,
                             f"require_provenance: provenance missing on {_pct(v)} of records "
                             f"{'>' if bad else '≤'} {_pct(pol.require_provenance)}"))
    return out


def _named(strings: Any, row: int) -> dict[str, Any]:
    """Id, title and where (link, else path, else source) of a record the result names."""
    get = strings.get
    return {"id": get(row, "id"), "title": get(row, "title"),
            "where": get(row, "link") or get(row, "path") or get(row, "source")}


def _offending(gs: Any, reason_codes: Any, prov_codes: Any, require_provenance: bool) -> _Offending:
    """Likely-synthetic items, duplicates, and (when required) items without provenance; worst
    first: most problems, then most likely synthetic, then input order. Ranked over the compact
    columns; only the offending items' own values are kept, and each item is built when it is
    asked for."""
    import numpy as np

    from synthfilter.gatescan import EXCLUDED_CODE
    from synthfilter.pipeline.stages import (
        EXACT_DUP, LANGUAGE, MALFORMED, NEAR_DUP, PROVENANCE_NAMES, REASONS, REPETITIVE,
    )
    from synthfilter.provenance import HUMAN, MACHINE, UNKNOWN

    # Records --languages or --reject-repetitive set aside are not gated: they never reach training.
    gated = ((reason_codes != EXCLUDED_CODE) & (reason_codes != MALFORMED) & (reason_codes != LANGUAGE)
             & (reason_codes != REPETITIVE))
    scores = gs.scores()
    # P(synthetic) as shown (1 / 0 for known provenance, else the score rounded to 6 places, as
    # Python rounds) is also what marks an item synthetic. Rounding moves a score by 5e-7 at most,
    # so only scores from just under SYNTHETIC_SCORE need rounding to decide.
    synthetic = gated & (prov_codes == MACHINE)
    maybe = np.flatnonzero(gated & (prov_codes != MACHINE) & (prov_codes != HUMAN) & (scores >= SYNTHETIC_SCORE - 0.01))
    synthetic[maybe[_shown(scores[maybe]) >= SYNTHETIC_SCORE]] = True
    duplicate = gated & ((reason_codes == EXACT_DUP) | (reason_codes == NEAR_DUP))
    no_label = gated & (prov_codes == UNKNOWN) if require_provenance else np.zeros(len(gated), dtype=bool)
    rows = np.flatnonzero(synthetic | duplicate | no_label)
    synthetic, duplicate, no_label, score = synthetic[rows], duplicate[rows], no_label[rows], scores[rows]
    del gated, scores
    prov = prov_codes[rows]
    shown = np.where(prov == MACHINE, 1.0, np.where(prov == HUMAN, 0.0, _shown(score)))
    serious = synthetic.astype(np.int64) + duplicate + no_label  # the problems each item is listed with
    order = np.lexsort((rows, -np.where(np.isnan(shown), -1.0, shown), -serious))
    rows, synthetic, duplicate, no_label, score = (a[order] for a in (rows, synthetic, duplicate, no_label, score))
    dup_rows = gs.duplicate_rows(rows)

    def build(k: int) -> OffendingItem:
        i = int(rows[k])
        strings = gs.strings
        why = REASONS[int(reason_codes[i])]
        problems = []
        if synthetic[k]:
            problems.append("synthetic")
        if duplicate[k]:
            problems.append(why)
        if no_label[k]:
            problems.append("missing_provenance")
        j = int(dup_rows[k])
        s = None if np.isnan(score[k]) else round(float(score[k]), 6)
        prov = PROVENANCE_NAMES[int(prov_codes[i])]
        return OffendingItem(
            id=strings.get(i, "id"), title=strings.get(i, "title"), link=strings.get(i, "link"),
            path=strings.get(i, "path"), source=strings.get(i, "source"), problems=problems,
            p_synthetic=1.0 if prov == "machine" else 0.0 if prov == "human" else s, score=s,
            provenance=prov, duplicate_of=strings.get(j, "id") if j >= 0 else None,
            duplicate_of_title=strings.get(j, "title") if j >= 0 else None,
            decision="approved" if why == "kept" else f"rejected ({why})",
        )

    return _Offending(rows, build)


def _shown(scores: Any) -> Any:
    """Scores rounded to 6 places as Python's ``round`` does (NaN stays NaN), as float64."""
    import numpy as np

    values = scores.astype(np.float64)
    return np.concatenate([np.fromiter((round(x, 6) for x in values[k:k + 65536].tolist()), np.float64)
                           for k in range(0, len(values), 65536)]) if len(values) else values


def _reason_counts(result: GateResult) -> Counter:
    reasons = result.reasons
    if isinstance(reasons, _Names):
        import numpy as np

        c = np.bincount(reasons.codes.astype(np.int64), minlength=len(reasons.names))
        return Counter({name: int(c[k]) for k, name in enumerate(reasons.names) if c[k]})
    return Counter(reasons)


def gate_exports(paths: Sequence[str | os.PathLike[str]], policy: GatePolicy | Mapping[str, Any] | None = None,
                 config: Config | str | os.PathLike[str] | Mapping[str, Any] | None = None) -> GateResult:
    """Read exports (``synthfilter.io.cms.iter_exports`` with the config's ``[gate]`` reading
    options) and gate them, streaming: the records are read once to score them and again only
    to write the approved subset, never all held. The result also lists the inputs (size,
    sha256, records)."""
    from synthfilter.gatescan import ExportSource
    from synthfilter.io.cms import ReadOptions

    cfg = _resolve_config(config)
    g = cfg.gate
    source = ExportSource(paths, ReadOptions(
        format=g.format, text_field=cfg.text_field, id_field=cfg.id_field, text_column=g.text_column,
        title_column=g.title_column, id_column=g.id_column, link_column=g.link_column, post_types=g.post_types,
        post_statuses=g.post_statuses,
        max_line_bytes=cfg.max_line_bytes,
    ))
    result = _gate_source(source, _policy(policy, cfg), cfg)
    result.inputs = [i.to_dict() for i in source.inputs]
    result.ignored_files = list(source.ignored)
    result._input_paths = [str(p) for p in paths]
    result.report["input"]["shards"] = len(source.inputs)
    result.report["input"]["bytes"] = sum(i.size for i in source.inputs)
    return result


# -- writing the approved subset -----------------------------------------------------------------


def _prepare_out(out: Path, overwrite: bool, input_paths: Sequence[str]) -> None:
    from synthfilter.pipeline.run import UsageError

    if out.exists() and not out.is_dir():
        raise UsageError(f"{out}: exists and is not a directory")
    real = out.resolve()
    for raw in input_paths:
        p = Path(raw)
        if p.is_dir() and (real == p.resolve() or p.resolve() in real.parents):
            raise UsageError(f"{out}: the approved output would land inside the export folder {p}; choose another folder")
    if out.exists():
        entries = [x.name for x in out.iterdir() if not x.name.startswith(".")]
        if entries and not overwrite:
            raise UsageError(f"{out}: directory is not empty; pass --overwrite to replace a previous gate's outputs")
        others = sorted(set(entries) - {APPROVED_FILE, REJECTED_FILE, MANIFEST_FILE})
        if others:
            raise UsageError(f"{out}: --overwrite replaces only {APPROVED_FILE}, {REJECTED_FILE} and {MANIFEST_FILE}, "
                             f"and the directory also holds {', '.join(others[:5])}; choose an empty directory")
    out.mkdir(parents=True, exist_ok=True)


def _rejection(result: GateResult, i: int, rec: CmsRecord, language: str | None,
               mapper: Any = None) -> dict[str, Any]:
    """``mapper``: the provenance field's ``ProvenanceMapper``, None without a field."""
    why = result.reasons[i]
    out: dict[str, Any] = {"decision": "rejected", "reason": why}
    if result.duplicate_of[i] is not None:
        out["duplicate_of"] = result.duplicate_of[i]
    out["score"] = result.scores[i]
    if result.p_machine[i] is not None:
        out["p_machine"] = result.p_machine[i]
    out["provenance"] = result.provenance[i]
    if why == EXCLUDED and mapper is not None:
        # Never scored, so never labelled by the scan: what its own field says, as for any item.
        from synthfilter.provenance import CODE_NAMES

        out["provenance"] = CODE_NAMES[mapper.label(rec.lookup(result.config.ratio.provenance_field))]
    if language is not None:
        out["language"] = language
    if why == EXCLUDED:
        out["excluded"] = rec.excluded
    elif rec.error is not None:
        out["error"] = rec.error
    out["source"] = rec.source
    return out


def _write_approved(result: GateResult, out: Path, overwrite: bool) -> dict[str, Any]:
    import orjson

    from synthfilter import __version__
    from synthfilter.io.shards import AtomicJsonlWriter, atomic_write_bytes
    from synthfilter.language import CODES
    from synthfilter.pipeline.stages import ConservationError
    from synthfilter.provenance import ProvenanceMapper

    started = _now()
    _prepare_out(out, overwrite, result._input_paths)
    approved = AtomicJsonlWriter(out / APPROVED_FILE, None)
    rejected = AtomicJsonlWriter(out / REJECTED_FILE, None)
    opts = orjson.OPT_NON_STR_KEYS
    counts = _reason_counts(result)
    n = len(result.reasons)
    languages = result._scan.language_codes() if result._scan is not None else None
    mapper = ProvenanceMapper(result.config.ratio.provenance_map) if result.config.ratio.provenance_field else None
    seen = 0
    try:
        # A second pass over the records (the export files are read again), in input order.
        for i, rec in enumerate(result.records):
            seen += 1
            if result.reasons[i] == "kept":
                approved.write_line(rec.raw if rec.raw is not None else orjson.dumps(rec.to_dict(), default=str, option=opts))
            else:
                obj = rec.to_dict()
                language = CODES[languages[i]] if languages is not None and languages[i] >= 0 else None
                obj["synthfilter"] = _rejection(result, i, rec, language, mapper)
                rejected.write_line(orjson.dumps(obj, default=str, option=opts))
        kept = counts.get("kept", 0)
        if seen != n:
            raise ConservationError(f"{out}: {n} records gated but {seen} read again")
        if approved.count + rejected.count != n or approved.count != kept:
            raise ConservationError(f"{out}: {n} records read but {approved.count} approved + {rejected.count} rejected written")
        approved.commit()
        rejected.commit()
    except BaseException:
        approved.abort()
        rejected.abort()
        raise
    manifest = {
        "synthfilter_version": __version__,
        "command": "gate",
        "started": started,
        "ended": _now(),
        "verdict": result.verdict,
        "failed_rules": [c.rule for c in result.failed],
        "policy": result.policy.to_dict(),
        "config": result.config.to_dict(),
        "seed": result.config.seed,
        "inputs": result.inputs,
        "ignored_files": result.ignored_files,
        "outputs": {"approved": APPROVED_FILE, "rejected": REJECTED_FILE},
        "approved": result._approved_summary(),
        "conservation": {"checked": True, "ok": True, "records": n,
                         "approved": counts.get("kept", 0), "rejected": n - counts.get("kept", 0),
                         "by_reason": dict(sorted(counts.items()))},
        "python": sys.version.split()[0],
    }
    atomic_write_bytes(out / MANIFEST_FILE, json.dumps(manifest, indent=2, default=str).encode("utf-8"))
    return manifest


# -- the HTML page ------------------------------------------------------------------------------


def render_gate_html(result: GateResult) -> str:
    """A self-contained page: verdict and checks, the offending items worst first, then the
    run report's summary, detector and duplicate sections."""
    from synthfilter.report import html as h

    checks = []
    for c in result.checks:
        checks.append({"check": c.rule, "result": h.Html('<span class="up">✔ pass</span>' if c.passed
                                                         else '<span class="down">✘ fail</span>'),
                       "measured": _fmt_limit(c.rule, c.measured), "limit": _fmt_limit(c.rule, c.limit),
                       "detail": c.detail})
    verdict = [h.Html(f'<div class="verdict {result.verdict}">{result.verdict.upper()}</div>'),
               h.paragraph(f"Policy: {result.policy.describe()}")]
    if result.failed:
        verdict.append(h.callout([c.detail for c in result.failed], "bad"))
    if result.messages:
        verdict.append(h.callout(result.messages, "info"))
    if result.warnings:  # what the failed checks point to ("see the warning"), and what to do
        verdict.append(h.callout(result.warnings, "warn"))
    verdict.append(h.table(checks, [("check", "rule"), ("result", "result"), ("measured", "measured"),
                                    ("limit", "limit"), ("detail", "detail")]))
    m = result.measured
    stats = [
        h.Stat("Records", h.fmt_count(m["with_text"]), f"with text · {h.fmt_count(m['without_text'])} without · "
               f"{h.fmt_count(m['excluded'])} not gated"
               + "".join(f" · {h.fmt_count(m[key])} {what}" for key, what in
                         (("language_rejected", "in other languages"), ("repetitive_rejected", "repeating themselves"))
                         if m.get(key))),
        h.Stat("Synthetic share", h.fmt_share(m["synthetic_share"]),
               f"95 % CI {h.fmt_interval(m['synthetic_ci95'])}" if m["synthetic_ci95"] else None,
               _tone(result, "max_synthetic")),
        h.Stat("Duplicates", h.fmt_share(m["duplicate_share"]),
               f"{h.fmt_count(m['exact_duplicates'])} exact · {h.fmt_count(m['near_duplicates'])} near",
               _tone(result, "max_duplicates")),
        h.Stat("Offending items", h.fmt_count(len(result.offending)), "listed below, worst first"),
    ]
    sections = [h.section("Verdict", verdict[0], h.headline(stats), *verdict[1:], anchor="verdict")]

    rows = []
    for rank, o in enumerate(result.offending[:_HTML_ITEMS], 1):
        where = o.link or o.path or o.source
        link = (h.Html(f'<a href="{_attr(where)}">{_text(where)}</a>') if where and where.startswith(("http://", "https://"))
                else h.Html(f"<code>{_text(where)}</code>"))
        dup = None
        if o.duplicate_of is not None:
            dup = f"{o.duplicate_of}" + (f" ({o.duplicate_of_title})" if o.duplicate_of_title else "")
        rows.append({"rank": rank, "problems": ", ".join(p.replace("_", " ") for p in o.problems),
                     "title": o.title or "(untitled)", "where": link,
                     "score": "—" if o.p_synthetic is None else f"{o.p_synthetic:.2f}" + (
                         " (provenance)" if o.provenance != "unknown" else ""),
                     "duplicate_of": dup or "—", "decision": o.decision, "id": h.Html(f"<code>{_text(o.id)}</code>")})
    note = (f"{len(result.offending):,} items: likely synthetic (score ≥ {SYNTHETIC_SCORE}, or machine provenance), "
            "copies of another item, or without provenance when it is required. Sorted by the number of problems, "
            "then by how likely the item is synthetic.")
    if len(result.offending) > _HTML_ITEMS:
        note += f" The first {_HTML_ITEMS:,} are shown; the --json output lists all of them."
    sections.append(h.section("Offending items", h.table(rows, [
        ("rank", "#"), ("problems", "problems"), ("title", "title"), ("where", "link or path"),
        ("score", "P(synthetic)"), ("duplicate_of", "duplicate of"), ("decision", "decision"), ("id", "id"),
    ]), note=note, anchor="offending"))

    if result.without_text:
        empty = [{"id": h.Html(f"<code>{_text(e['id'])}</code>"), "title": e["title"] or "(untitled)",
                  "where": h.Html(f"<code>{_text(e['where'])}</code>")} for e in result.without_text]
        total = m["without_text"]
        note = ("Read, but with no text to gate (an empty body, or markup only): often an export problem worth a look. "
                "They are in no approved subset.")
        if total > len(empty):
            note += f" The first {len(empty):,} of {total:,} are listed."
        sections.append(h.section("Items without text", h.table(empty, [("id", "id"), ("title", "title"),
                                                                       ("where", "link or path")]),
                                  note=note, anchor="without-text"))

    dec = result._decisions
    scores = result._scan.score  # the gated records' scores, in order
    sections.append(h.detector_section(result.report, scores, dec.reason if dec is not None else None))
    sections.append(h.duplicates_section(result.report, dec.cluster_sizes if dec is not None else None))
    sections.append(h.languages_section(result.report))
    inputs = [{"path": h.Html(f"<code>{_text(i['path'])}</code>"), "format": i["format"], "records": i["records"],
               "excluded": i["excluded"]} for i in result.inputs]
    if inputs:
        sections.append(h.section("Inputs", h.table(inputs, [("path", "file"), ("format", "format"),
                                                             ("records", "items"), ("excluded", "not gated")],
                                                    max_rows=200)))
    from synthfilter import __version__

    return h.page("synthfilter gate", sections,
                  subtitle=f"{m['records']:,} records · policy: {result.policy.describe()} · synthfilter {__version__}",
                  badge=result.verdict.upper(),
                  footer="Generated by synthfilter gate: self-contained, nothing here loads from the network.")


def _tone(result: GateResult, rule: str) -> str | None:
    for c in result.checks:
        if c.rule == rule:
            return "good" if c.passed else "bad"
    return None


def _text(value: Any) -> str:
    import html

    return html.escape("" if value is None else str(value), quote=False)


def _attr(value: Any) -> str:
    import html

    return html.escape(str(value), quote=True)


# -- formatting ---------------------------------------------------------------------------------


def _pct(x: float | None) -> str:
    return "—" if x is None else f"{100 * x:.1f} %"


def _fmt_limit(rule: str, v: Any) -> str:
    if v is None:
        return "—"
    return f"{v:,}" if rule == "min_records" else _pct(float(v))


def _item_line(o: OffendingItem) -> str:
    what = ", ".join(p.replace("_", " ") for p in o.problems)
    title = f'"{o.title}"' if o.title else o.id
    where = o.link or o.path or o.source
    parts = [f"[{what}] {title}"]
    if where and where != o.title:
        parts.append(f"({where})")
    if o.p_synthetic is not None and "synthetic" in o.problems:
        parts.append(f"P(synthetic) {o.p_synthetic:.2f}")
    if o.duplicate_of is not None:
        parts.append(f"duplicate of {o.duplicate_of}")
    line = " ".join(parts)
    return line if len(line) <= 160 else line[:157] + "..."


def _now() -> str:
    return dt.datetime.now(dt.timezone.utc).isoformat(timespec="seconds")


def _write_json_list(f: Any, items: Iterator[Any], indent: int, level: int, chunk: int = 2000) -> None:
    """Write ``items`` as a JSON list exactly as ``json.dumps(..., indent=indent)`` lays it out
    ``level`` levels deep, a chunk at a time."""
    pad = " " * (indent * (level + 1))
    buf: list[str] = []
    first = True
    for item in items:
        text = json.dumps(item, indent=indent, ensure_ascii=False, default=str).replace("\n", "\n" + pad)
        buf.append(("[\n" if first else ",\n") + pad + text)
        first = False
        if len(buf) >= chunk:
            f.write("".join(buf).encode("utf-8"))
            buf.clear()
    if first:
        f.write(b"[]")
        return
    buf.append("\n" + " " * (indent * level) + "]")
    f.write("".join(buf).encode("utf-8"))
