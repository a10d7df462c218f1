"""Provenance mapping: exact values, yes/no spellings, globs, missing values, dotted paths."""

from __future__ import annotations

import pickle

import numpy as np
import pytest

from synthfilter import ratio
from synthfilter.provenance import (
    DEFAULT_MAPPING,
    HUMAN,
    MACHINE,
    UNKNOWN,
    ProvenanceMapper,
    get_path,
    label_records,
)


def test_codes_match_the_ratio_module() -> None:
    assert (UNKNOWN, HUMAN, MACHINE) == (ratio.UNKNOWN, ratio.HUMAN, ratio.MACHINE) == (0, 1, 2)


def test_exact_values_are_case_and_space_insensitive() -> None:
    m = ProvenanceMapper({"human": "human", "gpt-4o": "machine"})
    assert m.label("human") == HUMAN
    assert m.label("  Human ") == HUMAN
    assert m.label("GPT-4o") == MACHINE
    assert m.label("gpt-4") == UNKNOWN


def test_globs_in_order_and_exact_values_first() -> None:
    m = ProvenanceMapper({"gpt-*": "machine", "gpt-human-*": "human", "gpt-editor": "human", "*": "unknown"})
    assert m.label("gpt-4o") == MACHINE
    # The first matching glob wins, so the broader "gpt-*" shadows "gpt-human-*".
    assert m.label("gpt-human-1") == MACHINE
    # An exact key beats every glob.
    assert m.label("gpt-editor") == HUMAN
    assert m.label("llama-3") == UNKNOWN


def test_glob_character_classes() -> None:
    m = ProvenanceMapper({"llama-[23]*": "machine", "?uman": "human"})
    assert m.label("llama-3-70b") == MACHINE
    assert m.label("llama-1") == UNKNOWN
    assert m.label("Human") == HUMAN


@pytest.mark.parametrize("value", [True, "true", "TRUE", "yes", "Y", "on", 1, 1.0, np.bool_(True), np.int64(1)])
def test_truthy_spellings_match_a_true_key(value: object) -> None:
    m = ProvenanceMapper({"true": "machine", "false": "human"})
    assert m.label(value) == MACHINE


@pytest.mark.parametrize("value", [False, "false", "No", "n", "off", 0, 0.0])
def test_falsy_spellings_match_a_false_key(value: object) -> None:
    m = ProvenanceMapper({"yes": "machine", "no": "human"})
    assert m.label(value) == HUMAN


def test_python_booleans_as_mapping_keys() -> None:
    m = ProvenanceMapper({True: "machine", False: "human"})  # type: ignore[dict-item]
    assert m.label("yes") == MACHINE
    assert m.label(False) == HUMAN


@pytest.mark.parametrize("value", [None, float("nan"), ["gpt-4o"], {"name": "gpt-4o"}, "", "claude"])
def test_missing_nested_and_unmatched_values_are_unknown(value: object) -> None:
    m = ProvenanceMapper({"human": "human", "gpt-*": "machine"})
    assert m.label(value) == UNKNOWN


def test_numbers_and_bytes() -> None:
    m = ProvenanceMapper({"2": "machine", "1": "human", "model-b": "machine"})
    assert m.label(2) == MACHINE
    assert m.label(2.0) == MACHINE
    assert m.label(1) == HUMAN
    assert m.label(2.5) == UNKNOWN
    assert m.label(b"model-b") == MACHINE


def test_empty_mapping_uses_the_default() -> None:
    assert DEFAULT_MAPPING == {"human": "human", "machine": "machine"}
    for m in (ProvenanceMapper(None), ProvenanceMapper({})):
        assert m.label("Machine") == MACHINE
        assert m.label("human") == HUMAN
        assert m.label("gpt-4o") == UNKNOWN


def test_bad_labels_and_conflicting_keys_are_rejected() -> None:
    with pytest.raises(ValueError, match="must be 'human', 'machine' or 'unknown'"):
        ProvenanceMapper({"gpt-*": "synthetic"})
    with pytest.raises(ValueError, match="conflicts"):
        ProvenanceMapper({"Human": "human", "human": "machine"})
    with pytest.raises(ValueError, match="conflicts"):
        ProvenanceMapper({"yes": "machine", "true": "human"})


def test_labels_is_vectorised_int8() -> None:
    m = ProvenanceMapper({"human": "human", "gpt-*": "machine"})
    codes = m.labels(["human", "gpt-4", None, "x"])
    assert codes.dtype == np.int8
    assert codes.tolist() == [HUMAN, MACHINE, UNKNOWN, UNKNOWN]
    assert m.labels([]).shape == (0,)


def test_picklable_and_same_answers_after_a_round_trip() -> None:
    m = ProvenanceMapper({"human": "human", "gpt-*": "machine", "true": "machine"})
    m.label("gpt-4o")  # fill the cache; it must not matter
    m2 = pickle.loads(pickle.dumps(m))
    values = ["human", "GPT-3.5", True, "no", None]
    assert m2.labels(values).tolist() == m.labels(values).tolist()
    assert m2.mapping == m.mapping


def test_get_path_follows_dots() -> None:
    rec = {"meta": {"generated_by": "gpt-4o", "a.b": {"c": 3}}, "top.level": 5, "flag": False}
    assert get_path(rec, "meta.generated_by") == "gpt-4o"
    assert get_path(rec, "meta.a.b.c") == 3
    assert get_path(rec, "top.level") == 5
    assert get_path(rec, "flag") is False
    assert get_path(rec, "meta.missing") is None
    assert get_path(rec, "flag.deeper") is None


def test_label_records() -> None:
    m = ProvenanceMapper({"human": "human", "gpt-*": "machine"})
    recs = [{"m": {"by": "human"}}, {"m": {"by": "gpt-4"}}, {"m": {}}, {}]
    assert label_records(recs, "m.by", m).tolist() == [HUMAN, MACHINE, UNKNOWN, UNKNOWN]
