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


def _canonical(value: Any) -> str | None:
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
    nothing are ``UNKNOWN``: those records fall back to the detector.

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
            key = _canonical(raw_key)
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
        key = _canonical(value)
        if key is None:
            return UNKNOWN
        code = self._cache.get(key)
        if code is None:
            code = self._match(key)
            if len(self._cache) < _CACHE_LIMIT:
                self._cache[key] = code
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
        return UNKNOWN

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
