"""One typed configuration for every entry point (CLI, Python API, HF, Ray), validated once.

A config is built from defaults, then a TOML file, then explicit overrides (CLI flags win).
The TOML layout mirrors the dataclasses: top-level run options, plus ``[dedup]``,
``[detector]``, ``[language]``, ``[repetition]``, ``[ratio]``, ``[report]`` and ``[gate]`` tables.
"""

from __future__ import annotations

import dataclasses
import os
import sys
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal, Mapping

if sys.version_info >= (3, 11):
    import tomllib
else:  # pragma: no cover - exercised only on 3.10
    import tomli as tomllib


class ConfigError(ValueError):
    """A configuration value is invalid; the message says which key and why."""


@dataclass
class DedupConfig:
    """Exact and near-duplicate detection settings."""

    exact: bool = True
    near: bool = True
    threshold: float = 0.8
    num_perm: int = 128
    seed: int = 1
    ngram: int = 5
    char_ngram: int = 5
    verify: bool = True
    # Estimated Jaccard a candidate pair must reach to be linked (``verify`` on); None: ``threshold``.
    # ``threshold`` alone chooses the LSH bands x rows, so raising this one keeps the candidates
    # and drops the weaker links: fewer borderline merges, and fewer duplicates found.
    verify_threshold: float | None = None
    keep_rule: list[str] = field(default_factory=lambda: ["provenance", "score", "order"])

    @property
    def verify_at(self) -> float:
        """The Jaccard at which candidate pairs are verified: ``verify_threshold`` or ``threshold``."""
        return self.threshold if self.verify_threshold is None else self.verify_threshold


@dataclass
class DetectorConfig:
    """Which detector scores the records (``model = None`` means the shipped default)."""

    enabled: bool = True
    model: str | None = None
    batch_size: int = 512
    # Languages the detector is trusted on: records identified as another language get no score,
    # and only their provenance counts towards the synthetic share. ["*"]: every language.
    languages: list[str] = field(default_factory=lambda: ["en"])


@dataclass
class LanguageConfig:
    """Language identification per record (``synthfilter.language``) and the keep filter."""

    # "auto": identify when a rule needs it (the detector is on and trusted on only some
    # languages, or ``keep`` is set); "always": also for the report alone; "never".
    identify: Literal["auto", "always", "never"] = "auto"
    keep: list[str] = field(default_factory=list)  # --languages: keep only these (empty: all)
    min_confidence: float = 0.5  # below it a record's language is "und" (not identified)
    sample_chars: int = 200  # characters of each record read to identify its language


@dataclass
class RepetitionConfig:
    """The repetition filter (``--reject-repetitive``): records that repeat themselves, as a
    model stuck in a loop writes, are rejected with reason ``repetitive`` before deduplication.
    The measure is the report's ``self_repeating_share`` (``synthfilter.diversity``), applied to
    the first 200,000 tokens (words) of each record."""

    reject: bool = False
    min_distinct: float = 0.5  # a record repeats itself below this share of distinct word trigrams
    min_trigrams: int = 20  # shorter records are never judged


@dataclass
class RatioConfig:
    """Provenance mapping, prevalence estimation and target-ratio downsampling."""

    target_ratio: float | None = None
    strategy: Literal["threshold", "uniform"] = "threshold"
    method: str = "auto"
    provenance_field: str | None = None
    provenance_map: dict[str, str] = field(default_factory=dict)
    max_human_loss: float | None = None
    bootstrap: int = 1000
    safety: Literal["upper", "point"] = "upper"  # meet the target with the interval's upper bound, or the estimate
    confidence: float = 0.95
    tolerance: float = 0.02
    # When the reliability checks find the detector unreliable on the corpus: refuse the target
    # ratio (exit 1, nothing written), or go on and report the kept share as unknown.
    on_unreliable: Literal["refuse", "proceed"] = "refuse"
    # Re-measure the detector's rates on records of known provenance (they are scored too).
    remeasure_rates: bool = True
    # "auto": widen the interval over the card's held-out-source rates when the checks flag the
    # corpus; "unseen_source": always (a corpus from sources unlike the training data).
    widen: Literal["auto", "unseen_source"] = "auto"


@dataclass
class ReportConfig:
    """What the report computes beyond counts."""

    html: bool = True
    diversity: bool = True
    group_by: str | None = None
    sample_size: int = 5000


@dataclass
class GateConfig:
    """``synthfilter gate``: the policy an export must meet (None: rule off) and how it is read."""

    max_synthetic: float | None = None
    max_duplicates: float | None = None
    min_records: int | None = None
    require_provenance: float | None = None  # most share of records allowed without a provenance label
    strict: bool = False  # compare the synthetic share's 95 % upper bound, not the estimate
    format: str | None = None  # jsonl | csv | wxr | markdown | html; None: detect per file
    text_column: str | None = None
    title_column: str | None = None
    id_column: str | None = None
    link_column: str | None = None
    post_types: list[str] = field(default_factory=list)  # WXR post types to gate; empty: all but WordPress internals
    # WXR statuses to gate ("protected": password-protected posts too; "draft" also gates Markdown /
    # HTML files whose front matter marks a draft); empty: every WXR status but trash and auto-draft
    # (password-protected posts and front-matter drafts still only when listed)
    post_statuses: list[str] = field(default_factory=lambda: ["publish"])


@dataclass
class Config:
    """Every option of ``synthfilter run``; the same object drives the Python API."""

    text_field: str = "text"
    id_field: str | None = None
    workers: int = 0
    on_error: Literal["fail", "quarantine"] = "fail"
    resume: bool = False
    overwrite: bool = False
    annotate: bool = False
    dry_run: bool = False
    seed: int = 0
    quiet: bool = False
    batch_size: int = 2048
    max_line_bytes: int = 50 * 1024 * 1024
    engine: Literal["local", "ray"] = "local"
    ray_address: str | None = None
    dedup: DedupConfig = field(default_factory=DedupConfig)
    detector: DetectorConfig = field(default_factory=DetectorConfig)
    language: LanguageConfig = field(default_factory=LanguageConfig)
    repetition: RepetitionConfig = field(default_factory=RepetitionConfig)
    ratio: RatioConfig = field(default_factory=RatioConfig)
    report: ReportConfig = field(default_factory=ReportConfig)
    gate: GateConfig = field(default_factory=GateConfig)

    # -- construction -------------------------------------------------------------------------

    @classmethod
    def from_toml(cls, path: str | os.PathLike[str]) -> "Config":
        p = Path(path)
        try:
            data = tomllib.loads(p.read_text(encoding="utf-8"))
        except FileNotFoundError:
            raise ConfigError(f"{p}: config file does not exist") from None
        except tomllib.TOMLDecodeError as e:
            raise ConfigError(f"{p}: not valid TOML: {e}") from None
        except UnicodeDecodeError:
            raise ConfigError(f"{p}: config file is not UTF-8") from None
        return cls.from_dict(data, source=str(p))

    @classmethod
    def from_dict(cls, data: Mapping[str, Any], source: str = "config") -> "Config":
        cfg = cls()
        cfg.apply(data, source=source)
        return cfg

    def apply(self, data: Mapping[str, Any], source: str = "config") -> "Config":
        """Apply overrides (nested dicts for sections; ``None`` values are ignored)."""
        _apply(self, data, source, prefix="")
        self.validate()
        return self

    def to_dict(self) -> dict[str, Any]:
        return dataclasses.asdict(self)

    @property
    def identifies_language(self) -> bool:
        """Whether records get a language: when a rule needs one, or when asked to."""
        lang = self.language
        if lang.identify != "auto":
            return lang.identify == "always"
        return bool(lang.keep) or (self.detector.enabled and "*" not in self.detector.languages)

    def resolved_workers(self) -> int:
        return self.workers if self.workers > 0 else max(1, os.cpu_count() or 1)

    # -- validation -----------------------------------------------------------------------

    def validate(self) -> None:
        if not self.text_field:
            raise ConfigError("text_field must not be empty")
        if self.on_error not in ("fail", "quarantine"):
            raise ConfigError(f"on_error must be 'fail' or 'quarantine', got {self.on_error!r}")
        if self.engine not in ("local", "ray"):
            raise ConfigError(f"engine must be 'local' or 'ray', got {self.engine!r}")
        if self.workers < 0:
            raise ConfigError("workers must be >= 0 (0 means all cores)")
        if self.batch_size < 1:
            raise ConfigError("batch_size must be >= 1")
        if self.max_line_bytes < 1024:
            raise ConfigError("max_line_bytes must be >= 1024")
        if self.resume and self.overwrite:
            raise ConfigError("--resume and --overwrite are mutually exclusive")
        if isinstance(self.seed, bool) or not isinstance(self.seed, int) or not 0 <= self.seed < 2**32:
            raise ConfigError(f"seed must be an integer in [0, 4294967295], got {self.seed!r}")
        d = self.dedup
        if not 0.0 < d.threshold <= 1.0:
            raise ConfigError(f"dedup.threshold must be in (0, 1], got {d.threshold}")
        if d.verify_threshold is not None:
            v = d.verify_threshold
            if isinstance(v, bool) or not isinstance(v, (int, float)) or not 0.0 < v <= 1.0:
                raise ConfigError(f"dedup.verify_threshold must be a number in (0, 1], got {v!r}")
            d.verify_threshold = float(v)
        if d.num_perm < 2 or d.num_perm > 1024:
            raise ConfigError(f"dedup.num_perm must be in [2, 1024], got {d.num_perm}")
        if d.ngram < 1 or d.char_ngram < 1:
            raise ConfigError("dedup.ngram and dedup.char_ngram must be >= 1")
        allowed_rules = {"provenance", "score", "order", "length"}
        bad = [r for r in d.keep_rule if r not in allowed_rules]
        if bad:
            raise ConfigError(f"dedup.keep_rule: unknown rule(s) {bad}; allowed: {sorted(allowed_rules)}")
        r = self.ratio
        if r.target_ratio is not None and not 0.0 <= r.target_ratio < 1.0:
            raise ConfigError(f"target_ratio must be in [0, 1), got {r.target_ratio}")
        if r.strategy not in ("threshold", "uniform"):
            raise ConfigError(f"ratio.strategy must be 'threshold' or 'uniform', got {r.strategy!r}")
        if r.safety not in ("upper", "point"):
            raise ConfigError(f"ratio.safety must be 'upper' or 'point', got {r.safety!r}")
        if not 0.5 <= r.confidence < 1.0 or not 0.0 <= r.tolerance < 1.0:
            raise ConfigError("ratio.confidence must be in [0.5, 1) and ratio.tolerance in [0, 1)")
        if r.widen not in ("auto", "unseen_source"):
            raise ConfigError(f"ratio.widen must be 'auto' or 'unseen_source', got {r.widen!r}")
        if r.on_unreliable not in ("refuse", "proceed"):
            raise ConfigError(f"ratio.on_unreliable must be 'refuse' or 'proceed', got {r.on_unreliable!r}")
        if r.max_human_loss is not None and not 0.0 <= r.max_human_loss <= 1.0:
            raise ConfigError(f"max_human_loss must be in [0, 1], got {r.max_human_loss}")
        for key, value in r.provenance_map.items():
            if value not in ("human", "machine", "unknown"):
                raise ConfigError(
                    f"ratio.provenance_map[{key!r}] must be 'human', 'machine' or 'unknown', got {value!r}"
                )
        if self.detector.batch_size < 1:
            raise ConfigError("detector.batch_size must be >= 1")
        _validate_language(self)
        rep = self.repetition
        if not 0.0 < rep.min_distinct <= 1.0:
            raise ConfigError(f"repetition.min_distinct must be in (0, 1], got {rep.min_distinct}")
        if rep.min_trigrams < 1:
            raise ConfigError(f"repetition.min_trigrams must be >= 1, got {rep.min_trigrams}")
        if self.report.sample_size < 10:
            raise ConfigError("report.sample_size must be >= 10")
        _validate_gate(self.gate)


def _validate_language(cfg: Config) -> None:
    from synthfilter.language import CODES

    lang = cfg.language
    if lang.identify not in ("auto", "always", "never"):
        raise ConfigError(f"language.identify must be 'auto', 'always' or 'never', got {lang.identify!r}")
    for name, codes, extra in (("detector.languages", cfg.detector.languages, {"*"}), ("language.keep (--languages)", lang.keep, set())):
        bad = [c for c in codes if not isinstance(c, str) or (c not in CODES and c not in extra)]
        if bad:
            raise ConfigError(f"{name}: unknown language code(s) {bad}; use ISO 639-1 codes such as en, de, zh "
                              f"(see synthfilter.language.CODES)")
    if not cfg.detector.languages:
        raise ConfigError('detector.languages must not be empty (["*"] trusts the detector on every language)')
    if lang.identify == "never" and lang.keep:
        raise ConfigError("--languages needs language identification (language.identify is 'never')")
    if not 0.0 <= lang.min_confidence <= 1.0:
        raise ConfigError(f"language.min_confidence must be in [0, 1], got {lang.min_confidence}")
    if lang.sample_chars < 10:
        raise ConfigError(f"language.sample_chars must be >= 10, got {lang.sample_chars}")


def _validate_gate(g: GateConfig) -> None:
    for name in ("max_synthetic", "max_duplicates", "require_provenance"):
        v = getattr(g, name)
        if v is None:
            continue
        if isinstance(v, bool) or not isinstance(v, (int, float)) or not 0.0 <= v <= 1.0:
            raise ConfigError(f"gate.{name} must be a share in [0, 1], got {v!r}")
        setattr(g, name, float(v))
    if g.min_records is not None and (isinstance(g.min_records, bool) or not isinstance(g.min_records, int)
                                      or g.min_records < 0):
        raise ConfigError(f"gate.min_records must be an integer >= 0, got {g.min_records!r}")
    if g.format is not None and g.format not in ("jsonl", "csv", "wxr", "markdown", "html"):
        raise ConfigError(f"gate.format must be one of jsonl, csv, wxr, markdown, html, got {g.format!r}")
    for name in ("text_column", "title_column", "id_column", "link_column"):
        v = getattr(g, name)
        if v is not None and (not isinstance(v, str) or not v):
            raise ConfigError(f"gate.{name} must be a non-empty string, got {v!r}")


def _apply(obj: Any, data: Mapping[str, Any], source: str, prefix: str) -> None:
    fields = {f.name: f for f in dataclasses.fields(obj)}
    for key, value in data.items():
        name = key.replace("-", "_")
        if name not in fields:
            import difflib

            close = difflib.get_close_matches(name, list(fields), n=1, cutoff=0.75)
            where = f"[{prefix[:-1]}]" if prefix else "the top level"
            hint = (f"; did you mean {prefix}{close[0]}?" if close
                    else f"; the options of {where} are {', '.join(sorted(fields))}")
            raise ConfigError(f"{source}: unknown option {prefix}{key}{hint}")
        if value is None:
            continue
        current = getattr(obj, name)
        if dataclasses.is_dataclass(current):
            if not isinstance(value, Mapping):
                raise ConfigError(f"{source}: {prefix}{key} must be a table")
            _apply(current, value, source, prefix=f"{prefix}{name}.")
            continue
        setattr(obj, name, _coerce(value, current, f"{prefix}{name}", source))


def _coerce(value: Any, current: Any, name: str, source: str) -> Any:
    """Check a TOML/flag value against the type of the default it replaces."""
    if isinstance(current, bool):
        if not isinstance(value, bool):
            raise ConfigError(f"{source}: {name} must be true or false, got {value!r}")
        return value
    if isinstance(current, int) and not isinstance(current, bool):
        if isinstance(value, bool) or not isinstance(value, int):
            raise ConfigError(f"{source}: {name} must be an integer, got {value!r}")
        return value
    if isinstance(current, float):
        if isinstance(value, bool) or not isinstance(value, (int, float)):
            raise ConfigError(f"{source}: {name} must be a number, got {value!r}")
        return float(value)
    if isinstance(current, list):
        if isinstance(value, str):
            value = [v.strip() for v in value.split(",") if v.strip()]
        if not isinstance(value, list):
            raise ConfigError(f"{source}: {name} must be a list, got {value!r}")
        return list(value)
    if isinstance(current, dict):
        if not isinstance(value, Mapping):
            raise ConfigError(f"{source}: {name} must be a table, got {value!r}")
        return {str(k): v for k, v in value.items()}
    if name.endswith("target_ratio") or name.endswith("max_human_loss"):
        if isinstance(value, bool) or not isinstance(value, (int, float)):
            raise ConfigError(f"{source}: {name} must be a number, got {value!r}")
        return float(value)
    if isinstance(value, (dict, list)):
        raise ConfigError(f"{source}: {name} must be a single value, got {value!r}")
    return value


def load_config(path: str | os.PathLike[str] | None = None, overrides: Mapping[str, Any] | None = None) -> Config:
    """Defaults, then the TOML file at ``path`` (if any), then ``overrides`` (flags win)."""
    cfg = Config.from_toml(path) if path is not None else Config()
    if overrides:
        cfg.apply(overrides, source="command line")
    else:
        cfg.validate()
    return cfg
