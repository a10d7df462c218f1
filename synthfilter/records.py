"""The record model: pull the id, text and metadata fields out of a parsed record.

Fields are addressed by dotted paths (``meta.source.author``). A record whose text is missing,
not a string or empty is malformed; its id falls back to ``<shard path>:<line>`` so that every
record, good or bad, has a stable id.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import regex

# Nothing a reader would see: white space and format characters (zero-width space and joiners,
# the byte-order mark, soft hyphens, direction marks), which str.strip() keeps. CMS exports
# leave bodies of nothing else ("&#8203;", a pasted BOM).
_BLANK = regex.compile(r"[\s\p{Cf}]*+")


def is_blank(text: str) -> bool:
    """True when ``text`` shows nothing: empty, or only white space and format characters."""
    if text[:1].isalnum():
        return False  # most texts: a letter or digit first is never blank (cheaper than str.strip())
    return _BLANK.fullmatch(text) is not None

_MISSING = object()


def get_path(obj: Any, path: str) -> Any:
    """Follow a dotted path through nested mappings; returns ``_MISSING`` when absent."""
    if isinstance(obj, dict) and path in obj:
        return obj[path]
    cur = obj
    for part in path.split("."):
        if isinstance(cur, dict) and part in cur:
            cur = cur[part]
        else:
            return _MISSING
    return cur


def is_missing(value: Any) -> bool:
    return value is _MISSING


def group_label(value: Any) -> str:
    """A record's group in the report's diversity section: its ``report.group_by`` value as
    text, ``(missing)`` where it has none."""
    return "(missing)" if value is _MISSING or value is None else str(value)


def fallback_id(rel: str, line: int) -> str:
    return f"{rel}:{line}"


@dataclass(frozen=True)
class FieldSpec:
    """Which fields hold the text, the id and the provenance label."""

    text_field: str = "text"
    id_field: str | None = None  # None: use "id" when present, else the fallback
    provenance_field: str | None = None

    def extract(self, obj: dict[str, Any], rel: str, line: int) -> tuple[str, str | None, Any, str | None]:
        """Return ``(id, text, provenance_value, error)`` for one parsed record."""
        rid = self.record_id(obj, rel, line)
        value = get_path(obj, self.text_field)
        prov = None
        if self.provenance_field is not None:
            p = get_path(obj, self.provenance_field)
            prov = None if p is _MISSING else p
        if value is _MISSING:
            return rid, None, prov, f"missing text field {self.text_field!r}"
        if isinstance(value, bytes):
            # A Parquet binary column (strings written without their UTF-8 annotation, as
            # Impala and older Spark do): text when it is UTF-8.
            try:
                value = value.decode("utf-8")
            except UnicodeDecodeError as e:
                return rid, None, prov, (f"text field {self.text_field!r} is bytes that are not UTF-8 "
                                         f"({e.reason} at byte {e.start})")
        if not isinstance(value, str):
            kind = "null" if value is None else type(value).__name__
            return rid, None, prov, f"text field {self.text_field!r} is {kind}, expected a string"
        if is_blank(value):
            return rid, None, prov, f"text field {self.text_field!r} is empty"
        return rid, value, prov, None

    def record_id(self, obj: Any, rel: str, line: int) -> str:
        field = self.id_field or "id"
        value = get_path(obj, field) if isinstance(obj, dict) else _MISSING
        if value is _MISSING or value is None or isinstance(value, (dict, list)):
            return fallback_id(rel, line)
        if isinstance(value, bool):
            return fallback_id(rel, line)
        return str(value)
