"""Provenance labels from record metadata: map a field's values to human / machine / unknown.

Codes are int8 so the decide stage can hold one byte per record: 0 unknown, 1 human, 2 machine.
"""

from __future__ import annotations

import fnmatch
import re
from collections.abc import Iterable, Mapping
from typing import Any

import numpy as np

UNKNOWN = 0
HUMAN = 1
MACHINE = 2

LABEL_CODES: dict[str, int] = {"unknown": UNKNOWN, "human": HUMAN, "machine": MACHINE}
CODE_NAMES: dict[int, str] = {code: name for name, code in LABEL_CODES.items()}

# Used when no mapping is configured: a field that already says "human" / "machine" works as is.
DEFAULT_MAPPING: dict[str, str] = {"human": "human", "machine": "machine"}

# Spellings of a yes/no value. A mapping key written as any of them matches all of them, so
# ``{"true": "machine"}`` labels ``True``, ``"True"``, ``"yes"`` and ``1`` alike.
_TRUE_WORDS = frozenset({"true", "yes", "y", "t", "on", "1"})
_FALSE_WORDS = frozenset({"false", "no", "n", "f", "off", "0"})
_GLOB_CHARS = re.compile(r"[*?\[]")
_CACHE_LIMIT = 65536
_NO_MATCH = -1  # a value no key matches (UNKNOWN to callers; told apart for the tally)
TALLY_EXAMPLES = 5  # distinct unmatched values a tally keeps, to name in a warning


def canonical_value(value: Any) -> str | None:
    """The string a field value is matched as (case-folded); None for missing or nested values."""
    if value is None:
        return None
    if isinstance(value, (bool, np.bool_)):
        return "true" if value else "false"
    if isinstance(value, (int, np.integer)):
        return str(int(value))
    if isinstance(value, (float, np.floating)):
        f = float(value)
        if f != f:  # NaN is how columnar readers spell "missing"
            return None
        return str(int(f)) if f.is_integer() else repr(f)
    if isinstance(value, bytes):
        value = value.decode("utf-8", errors="replace")
    if isinstance(value, str):
        return value.strip().casefold()
    return None  # lists, dicts, ...: no single provenance value to match


def _truth(text: str) -> bool | None:
    if text in _TRUE_WORDS:
        return True
    if text in _FALSE_WORDS:
        return False
    return None


class ProvenanceMapper:
    """Turn provenance field values into label codes (``UNKNOWN``, ``HUMAN``, ``MACHINE``).

    Args:
        mapping: field value or pattern -> ``"human"``, ``"machine"`` or ``"unknown"``.
            Matching is case-insensitive and ignores surrounding spaces. Precedence:
            exact values first, then yes/no spellings (a ``"true"`` key matches ``True``,
            ``"yes"``, ``1``), then fnmatch-style globs (``"gpt-*"``) in the order given,
            first match wins. ``None`` or empty uses ``DEFAULT_MAPPING``.

    Missing values (``None``, NaN), nested values (lists, dicts) and values that match
    nothing are ``UNKNOWN``: those records fall back to the detector. ``take_tally`` says how
    many values were seen, labelled and matched by no key since it was last called, so that a
    misspelt field or an unmapped spelling (``"AI"``) is reported, not silently ignored.

    Example:
        >>> m = ProvenanceMapper({"human": "human", "gpt-*": "machine"})
        >>> m.label("GPT-4o"), m.label("human"), m.label(None)
        (2, 1, 0)
    """

    def __init__(self, mapping: Mapping[str, str] | None = None) -> None:
        source = dict(mapping) if mapping else dict(DEFAULT_MAPPING)
        self.mapping: dict[str, str] = {}
        self._exact: dict[str, int] = {}
        self._truth: dict[bool, int] = {}
        self._globs: list[tuple[re.Pattern[str], int]] = []
        for raw_key, raw_label in source.items():
            label = str(raw_label).strip().casefold()
            if label not in LABEL_CODES:
                raise ValueError(
                    f"provenance mapping {raw_key!r}: label must be 'human', 'machine' or 'unknown', "
                    f"got {raw_label!r}"
                )
            key = canonical_value(raw_key)
            if key is None:
                raise ValueError(f"provenance mapping key {raw_key!r} must be a string, number or boolean")
            code = LABEL_CODES[label]
            self.mapping[str(raw_key)] = label
            if _GLOB_CHARS.search(key):
                self._globs.append((re.compile(fnmatch.translate(key)), code))
                continue
            self._add(self._exact, key, code, raw_key)
            truth = _truth(key)
            if truth is not None:
                self._add(self._truth, truth, code, raw_key)
        self._cache: dict[str, int] = {}
        self._reset_tally()

    def _reset_tally(self) -> None:
        self._present = self._labelled = self._unmatched = 0
        self._examples: dict[str, str] = {}  # matching key -> the value as the data spells it

    def take_tally(self) -> dict[str, Any]:
        """Counts since the last call (then reset): values ``present`` (not missing), ``labelled``
        human or machine, ``unmatched`` by any key, and up to five of the unmatched ``examples``."""
        tally = {"present": self._present, "labelled": self._labelled, "unmatched": self._unmatched,
                 "examples": list(self._examples.values())}
        self._reset_tally()
        return tally

    @staticmethod
    def _add(table: dict[Any, int], key: Any, code: int, raw_key: Any) -> None:
        if table.get(key, code) != code:
            raise ValueError(
                f"provenance mapping key {raw_key!r} conflicts with another key that means the same "
                f"value ({key!r}) but maps to a different label"
            )
        table[key] = code

    def label(self, value: Any) -> int:
        """The label code of one field value (``UNKNOWN`` for missing or unmatched values)."""
        key = canonical_value(value)
        if key is None:
            return UNKNOWN
        self._present += 1
        code = self._cache.get(key)
        if code is None:
            code = self._match(key)
            if len(self._cache) < _CACHE_LIMIT:
                self._cache[key] = code
        if code == _NO_MATCH:
            self._unmatched += 1
            if len(self._examples) < TALLY_EXAMPLES and key[:40] not in self._examples:
                # A string named as the data spells it (matching ignores case; a user greps for
                # it); a JSON true or 1.0 as its canonical key (Python would spell them True, 1.0).
                raw = value.decode("utf-8", "replace") if isinstance(value, bytes) else value
                self._examples[key[:40]] = raw.strip()[:40] if isinstance(raw, str) else key[:40]
            return UNKNOWN
        self._labelled += code != UNKNOWN
        return code

    def labels(self, values: Iterable[Any]) -> np.ndarray:
        """Label codes for many values, as an int8 array."""
        return np.fromiter((self.label(v) for v in values), dtype=np.int8)

    def _match(self, key: str) -> int:
        code = self._exact.get(key)
        if code is not None:
            return code
        truth = _truth(key)
        if truth is not None and truth in self._truth:
            return self._truth[truth]
        for pattern, code in self._globs:
            if pattern.match(key):
                return code
        return _NO_MATCH

    def __getstate__(self) -> dict[str, Any]:
        return {"mapping": self.mapping}

    def __setstate__(self, state: dict[str, Any]) -> None:
        self.__init__(state["mapping"])  # type: ignore[misc]

    def __repr__(self) -> str:
        return f"ProvenanceMapper({self.mapping!r})"


def get_path(record: Mapping[str, Any], path: str) -> Any:
    """The value at a dotted path (``"meta.generated_by"``), or None where any step is missing.

    A key that itself contains dots is found too: ``{"meta.source": x}`` answers ``"meta.source"``.
    """
    if path in record:
        return record[path]
    node: Any = record
    parts = path.split(".")
    i = 0
    while i < len(parts):
        if not isinstance(node, Mapping):
            return None
        # Try the longest dotted key first so {"a.b": {"c": 1}} resolves "a.b.c".
        for j in range(len(parts), i, -1):
            key = ".".join(parts[i:j])
            if key in node:
                node = node[key]
                i = j
                break
        else:
            return None
    return node


def label_records(records: Iterable[Mapping[str, Any]], path: str, mapper: ProvenanceMapper) -> np.ndarray:
    """Label codes for records, reading the provenance value at ``path`` in each."""
    return mapper.labels(get_path(r, path) for r in records)


def merge_tallies(tallies: Iterable[Mapping[str, Any] | None]) -> dict[str, Any]:
    """The sum of several ``ProvenanceMapper.take_tally`` results (None: nothing counted)."""
    total: dict[str, Any] = {"present": 0, "labelled": 0, "unmatched": 0, "examples": []}
    for t in tallies:
        if not t:
            continue
        for k in ("present", "labelled", "unmatched"):
            total[k] += int(t.get(k, 0))
        for e in t.get("examples", ()):
            if e not in total["examples"] and len(total["examples"]) < TALLY_EXAMPLES:
                total["examples"].append(e)
    return total


def provenance_warning(field: str, records: int, tally: Mapping[str, Any]) -> str | None:
    """A plain warning when the provenance field gave fewer labels than it was asked to: it is in
    no record, none of its values is mapped, or some values match no key (those records fall
    back to the detector, or to nothing without it). ``records``: the records read with text;
    ``tally["present"]`` None when only the number labelled is known. None when all is well."""
    present, labelled, unmatched = tally["present"], tally["labelled"], tally["unmatched"]
    shown = ", ".join(repr(e) for e in tally.get("examples", ()))
    fix = ("map them with --provenance-map (e.g. 'ai=machine,staff=human'; `true`/`false` keys match "
           "yes/no/1/0 too) or [ratio.provenance_map] in the config")
    if present is None:  # only the labels are known
        if records and not labelled:
            return (f"no record got a provenance label from field {field!r}: it is missing, or its values match no key "
                    "of the provenance map (default: 'human' / 'machine'): check its name (nested fields take a dotted "
                    f"path, e.g. meta.source) and {fix}")
        return None
    if records and not present:
        return (f"provenance field {field!r} is in none of the {records:,} records, so none has a known provenance: "
                "check its name (nested fields take a dotted path, e.g. meta.source)")
    if present and not labelled and unmatched:
        return (f"provenance field {field!r}: none of its {present:,} values matches the provenance map (values such "
                f"as {shown}), so none has a known provenance: {fix}")
    if unmatched:
        return (f"provenance field {field!r}: {unmatched:,} of its {present:,} values match no key of the provenance "
                f"map (values such as {shown}); those records count as of unknown provenance: {fix}")
    return None
