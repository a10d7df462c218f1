"""Provenance mapping: exact values, yes/no spellings, globs, missing values, dotted paths."""

from __future__ import annotations

import json
import pickle
from pathlib import Path
from typing import Any

import numpy as np
import pytest

from helpers import make_records, write_jsonl
from synthfilter import ratio
from synthfilter.config import Config
from synthfilter.pipeline.run import run_pipeline
from synthfilter.provenance import (
    DEFAULT_MAPPING,
    HUMAN,
    MACHINE,
    UNKNOWN,
    ProvenanceMapper,
    get_path,
    label_records,
    merge_tallies,
    provenance_warning,
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


# -- a provenance field that gives fewer labels than asked is named, not silently ignored ----------


def test_the_mapper_tallies_present_labelled_and_unmatched_values() -> None:
    m = ProvenanceMapper({"human": "human", "gpt-*": "machine", "unsure": "unknown"})
    m.labels(["Human", "GPT-4o", "AI", None, "unsure", "ai", "Claude", float("nan")])
    tally = m.take_tally()
    # "unsure" is mapped (to unknown): present, not labelled, not unmatched. Examples are spelt as
    # in the data (the first spelling of each), for a user to search for.
    assert tally == {"present": 6, "labelled": 2, "unmatched": 3, "examples": ["AI", "Claude"]}
    m.labels([True, 2.0])
    assert m.take_tally()["examples"] == ["true", "2"]  # as JSON spells them, not True / 2.0
    assert m.take_tally() == {"present": 0, "labelled": 0, "unmatched": 0, "examples": []}  # reset
    assert merge_tallies([tally, None, {"present": 1, "labelled": 1, "unmatched": 0, "examples": []}])["present"] == 7


def test_provenance_warnings_say_what_went_wrong() -> None:
    assert "is in none of the 50 records" in provenance_warning(
        "meta.by", 50, {"present": 0, "labelled": 0, "unmatched": 0, "examples": []})
    none = provenance_warning("by", 50, {"present": 50, "labelled": 0, "unmatched": 50, "examples": ["yes", "no"]})
    assert "none of its 50 values matches" in none and "'yes', 'no'" in none and "--provenance-map" in none
    some = provenance_warning("by", 50, {"present": 50, "labelled": 30, "unmatched": 20, "examples": ["ai"]})
    assert "20 of its 50 values match no key" in some and "'ai'" in some
    assert provenance_warning("by", 50, {"present": 50, "labelled": 40, "unmatched": 0, "examples": []}) is None
    # Only the labels known (annotated elsewhere): a warning only when nothing got a label.
    assert "no record got a provenance label" in provenance_warning(
        "by", 50, {"present": None, "labelled": 0, "unmatched": 0})
    assert provenance_warning("by", 50, {"present": None, "labelled": 3, "unmatched": 0}) is None


def _labelled_rows(n: int, value: Any) -> list[dict[str, Any]]:
    rows = make_records(n, seed=31, machine_share=0.5)
    for r in rows:
        r["meta"] = {"by": value(r["label"])}
    return rows


@pytest.mark.parametrize("field, value, expected", [
    ("meta.by", lambda label: label, None),
    ("meta.author", lambda label: label, "is in none of the 120 records"),
    ("meta.by", lambda label: "AI" if label == "machine" else "Human", "values match no key"),
    ("meta.by", lambda label: label == "machine", "none of its 120 values matches the provenance map"),
])
def test_run_names_a_provenance_field_that_gave_fewer_labels(tmp_path: Path, fast_config: dict, field: str,
                                                             value: Any, expected: str | None) -> None:
    write_jsonl(tmp_path / "in" / "a.jsonl", _labelled_rows(120, value))
    cfg = Config.from_dict({**fast_config, "ratio": {"provenance_field": field}})
    res = run_pipeline([str(tmp_path / "in")], tmp_path / "out", cfg)
    named = [w for w in res.report["warnings"] if "provenance" in w and field in w]
    if expected is None:
        assert named == []
    else:
        assert len(named) == 1 and expected in named[0], res.report["warnings"]


def test_a_refused_run_names_the_provenance_field(tmp_path: Path) -> None:
    from synthfilter.pipeline.stages import refusal_with_provenance

    cfg = Config.from_dict({"ratio": {"provenance_field": "meta.by"}})
    tally = {"present": 0, "labelled": 0, "unmatched": 0, "examples": []}
    e = refusal_with_provenance(ratio.UnreliableDetectorError("refusing to downsample."),
                                {"a": {"records": 9, "malformed": 0, "provenance_tally": tally}}, cfg)
    assert isinstance(e, ratio.UnreliableDetectorError)
    assert str(e).startswith("refusing to downsample. Note: provenance field 'meta.by' is in none of the 9 records")


def test_gate_and_datasets_name_a_provenance_field_that_gave_no_label(tmp_path: Path) -> None:
    import synthfilter
    from synthfilter.config import ConfigError

    rows = _labelled_rows(60, lambda label: "yes" if label == "machine" else "no")
    records = [{"id": r["id"], "text": r["text"], "ai": r["meta"]["by"]} for r in rows]
    no_detector = {"detector": {"enabled": False}, "ratio": {"provenance_field": "ai"}}
    with pytest.raises(ConfigError, match="none of its 60 values matches the provenance map \\(values such as '(yes|no)', '(yes|no)'\\)"):
        synthfilter.gate(records, {"max_synthetic": 0.2}, no_detector)
    mapped = {**no_detector, "ratio": {"provenance_field": "ai", "provenance_map": {"true": "machine", "false": "human"}}}
    assert synthfilter.gate(records, {"max_synthetic": 0.6}, mapped).passed

    import datasets

    from synthfilter.hf import filter_dataset

    ds = datasets.Dataset.from_list([{"text": r["text"], "who": r["ai"]} for r in records])
    res = filter_dataset(ds, {**no_detector, "ratio": {"provenance_field": "author"}, "dedup": {"near": False}})
    assert any("no record got a provenance label from field 'author'" in w for w in res.report["warnings"])


def test_run_takes_the_provenance_map_its_warning_suggests(tmp_path: Path) -> None:
    """The warning says 'map them with --provenance-map': `run` takes that flag (it was the gate's
    alone, so following the advice gave 'No such option'), and it replaces the config's map."""
    from helpers import run_cli

    write_jsonl(tmp_path / "in" / "a.jsonl", _labelled_rows(80, lambda label: "gpt-4o" if label == "machine" else "staff"))
    base = ["run", str(tmp_path / "in"), "--no-detector", "--no-near-dedup", "--provenance-field", "meta.by", "-w", "1"]
    code, out, err = run_cli([*base, "--out", str(tmp_path / "o1")])
    assert code == 0 and "map them with --provenance-map" in err + out
    code, out, err = run_cli([*base, "--out", str(tmp_path / "o2"), "--provenance-map", "gpt-*=machine,staff=human",
                              "--target-ratio", "0.1"])
    assert code == 0, err
    report = json.loads((tmp_path / "o2" / "report.json").read_text())
    known = report["synthetic"]["known_provenance"]
    assert known["machine"] > 0 and known["human"] > 0 and known["machine"] + known["human"] == 80
    assert not [w for w in report["warnings"] if "provenance" in w]
    assert report["synthetic"]["downsampled"] > 0  # the labels alone drive the target without a detector
    # --quiet drops the summary, not the warnings (they went nowhere but report.json).
    code, out, err = run_cli([*base, "--out", str(tmp_path / "o3"), "--quiet"])
    assert code == 0 and out == "" and err.startswith("warning: provenance field 'meta.by'")
