"""synthfilter.hf on the real ``datasets`` library: parity with ``synthfilter run``, the ``.map``
drop-in, DatasetDict per split and jointly, streaming, the ``score`` command."""

from __future__ import annotations

import json
import pickle
from pathlib import Path
from typing import Any

import datasets
import numpy as np
import pytest
from datasets import Dataset, DatasetDict, IterableDataset, IterableDatasetDict

from helpers import make_records, read_jsonl, run_cli, write_jsonl
from synthfilter import SynthFilter
from synthfilter.api import MalformedRecordError
from synthfilter.hf import FilterResult, filter_dataset, stream_filter
from test_api import PARITY_OPTIONS, cli_decisions, near_copy, needs_default_model, parity_corpus

datasets.disable_progress_bars()

REJECTED_COLUMNS = ["synth_reason", "synth_duplicate_of", "synth_score", "synth_p_machine", "synth_provenance",
                    "synth_error"]


def hf_decisions(result: FilterResult) -> dict[str, dict]:
    out = {r["id"]: {"reason": "kept", "duplicate_of": None} for r in result.kept.select_columns(["id"])}
    for r in result.rejected.select_columns(["id", "synth_reason", "synth_duplicate_of"]):
        out[r["id"]] = {"reason": r["synth_reason"], "duplicate_of": r["synth_duplicate_of"]}
    return out


@pytest.fixture(scope="module")
def corpus() -> list[dict[str, Any]]:
    return parity_corpus()


@pytest.fixture(scope="module")
def cli_result(corpus: list[dict[str, Any]], tmp_path_factory: pytest.TempPathFactory) -> tuple[dict, dict]:
    return cli_decisions(tmp_path_factory.mktemp("cli"), {"part.jsonl": corpus}, PARITY_OPTIONS)


# -- parity with synthfilter run ------------------------------------------------------------------


@pytest.mark.parametrize("num_proc", [1, 2])
def test_filter_dataset_matches_synthfilter_run(corpus: list[dict[str, Any]], cli_result: tuple[dict, dict],
                                                num_proc: int) -> None:
    expected, cli_report = cli_result
    ds = Dataset.from_list(corpus)
    res = filter_dataset(ds, PARITY_OPTIONS, num_proc=num_proc, batch_size=40)
    assert hf_decisions(res) == expected
    assert len(res.kept) + len(res.rejected) == len(ds)
    assert set(r for r in res.rejected["synth_reason"]) == {
        "malformed", "exact_duplicate", "near_duplicate", "synthetic_downsampled"}
    for key in ("output", "duplicates", "synthetic"):
        assert res.report[key] == cli_report[key], key
    # Kept records are the input rows, columns and order unchanged.
    assert res.kept.column_names == ds.column_names
    kept_ids = [i for i in ds["id"] if expected[i]["reason"] == "kept"]
    assert res.kept["id"] == kept_ids
    assert res.rejected.column_names == ds.column_names + REJECTED_COLUMNS


def test_report_diversity_matches_the_cli(corpus: list[dict[str, Any]], tmp_path: Path) -> None:
    options = {**PARITY_OPTIONS, "report": {"html": False, "diversity": True, "sample_size": 60}}
    _, cli_report = cli_decisions(tmp_path, {"part.jsonl": corpus}, options)
    if "diversity" not in cli_report:
        pytest.skip("synthfilter run reports no diversity section in this checkout")
    res = filter_dataset(Dataset.from_list(corpus), options)
    got, want = res.report["diversity"], cli_report["diversity"]
    for key in ("before", "after", "removed_ngrams", "by_group_omitted"):
        assert got[key] == want[key], key
    # Groups are splits here, shard paths there.
    assert list(got["by_group"].values()) == list(want["by_group"].values())


def test_target_ratio_argument_and_a_real_cli_run(corpus: list[dict[str, Any]], tmp_path: Path) -> None:
    """The ``synthfilter run`` command itself (a subprocess, flags instead of a config object)."""
    src = write_jsonl(tmp_path / "in" / "part.jsonl", corpus)
    (tmp_path / "sf.toml").write_text("[report]\nhtml = false\ndiversity = false\n", encoding="utf-8")
    code, _, err = run_cli(["run", str(src.parent), "--out", str(tmp_path / "out"), "--no-detector", "--quiet",
                            "--on-error", "quarantine", "--provenance-field", "label", "--target-ratio", "0.25",
                            "--config", str(tmp_path / "sf.toml"), "--workers", "1"])
    assert code == 0, err
    cli_kept = [json.loads(x)["id"] for x in read_jsonl(tmp_path / "out" / "kept" / "part.jsonl")]
    options = {**PARITY_OPTIONS, "ratio": {"provenance_field": "label"}}
    res = filter_dataset(Dataset.from_list(corpus), options, target_ratio=0.25)
    assert res.kept["id"] == cli_kept
    assert res.report["synthetic"]["target_ratio"] == 0.25


def test_map_drop_in_then_decide_gives_the_same_decisions(corpus: list[dict[str, Any]],
                                                          cli_result: tuple[dict, dict]) -> None:
    expected, _ = cli_result
    sf = SynthFilter(PARITY_OPTIONS)
    ds = Dataset.from_list(corpus).map(sf.annotate, batched=True, batch_size=50, num_proc=2)
    assert set(sf.annotation_columns) <= set(ds.column_names)
    row = ds[0]
    assert len(row["synth_text_hash"]) == 32 and len(row["synth_signature"]) == 128
    assert row["synth_provenance"] in ("human", "machine")
    res = sf.decide(ds)
    got = {i: {"reason": r, "duplicate_of": d} for i, r, d in zip(res.ids, res.reason, res.duplicate_of)}
    assert got == expected
    # A shuffled or selected view is decided in its own row order, ids unchanged.
    view = ds.select(range(len(ds) - 1, -1, -1))
    assert sf.decide(view).ids == res.ids[::-1]


def test_annotate_fingerprint_depends_on_the_config_only() -> None:
    from datasets.fingerprint import Hasher

    options = {"seed": 1, "detector": {"enabled": False}}
    a, b = SynthFilter(options), SynthFilter(options)
    assert Hasher.hash(a.annotate) == Hasher.hash(b.annotate)
    b.annotate({"text": ["building the lazy parts must not change the cache key"]})
    assert Hasher.hash(a.annotate) == Hasher.hash(b.annotate)
    assert Hasher.hash(a.annotate) != Hasher.hash(SynthFilter({**options, "seed": 2}).annotate)
    assert pickle.loads(pickle.dumps(b.annotate)).__self__._scorer is None


@needs_default_model
def test_annotate_fingerprint_changes_when_the_model_is_replaced_in_place(tmp_path: Path) -> None:
    # The cache key held the model's path only: after `adapt --out DIR --overwrite` a .map served
    # the old model's scores from its cache.
    import shutil

    from datasets.fingerprint import Hasher

    from synthfilter.detect.model import default_model_path

    model = tmp_path / "model"
    shutil.copytree(default_model_path(), model)
    sf = SynthFilter({"detector": {"model": str(model)}})
    before = Hasher.hash(sf.annotate)
    assert Hasher.hash(SynthFilter({"detector": {"model": str(model)}}).annotate) == before
    card = model / "card.json"
    card.write_text(card.read_text().replace('"train_prior"', '"train_prior" ', 1))
    assert Hasher.hash(SynthFilter({"detector": {"model": str(model)}}).annotate) != before


def test_detector_on_parity_with_two_processes(tmp_path: Path) -> None:
    rows = [{k: v for k, v in r.items() if k != "label"} for r in parity_corpus(malformed=False)]
    # Project-made text is off-distribution for the shipped detector: parity is under test here,
    # not the refusal, so the run goes on.
    options = {"ratio": {"target_ratio": 0.2, "on_unreliable": "proceed"}, "report": {"html": False, "diversity": False}}
    expected, cli_report = cli_decisions(tmp_path, {"part.jsonl": rows}, options)
    res = filter_dataset(Dataset.from_list(rows), options, num_proc=2, batch_size=50)
    assert hf_decisions(res) == expected
    assert res.report["synthetic"] == cli_report["synthetic"]
    assert not any(np.isnan(res.rejected["synth_score"]))


# -- columns, nested text, annotate option, bad records ---------------------------------------------


def test_nested_text_field_and_annotated_kept_records(tmp_path: Path) -> None:
    rows = [{"id": r["id"], "doc": {"body": r["text"], "lang": "en"}, "who": r["label"]}
            for r in parity_corpus(60, malformed=False)]
    options = {"text_field": "doc.body", "detector": {"enabled": False}, "annotate": True,
               "ratio": {"provenance_field": "who", "target_ratio": 0.2}, "report": {"html": False, "diversity": False}}
    expected, _ = cli_decisions(tmp_path, {"part.jsonl": rows}, options)
    res = filter_dataset(Dataset.from_list(rows), options)
    assert hf_decisions(res) == expected
    assert res.kept.column_names == ["id", "doc", "who", "synth_score", "synth_provenance"]
    assert set(res.kept["synth_provenance"]) <= {"human", "machine"}


def test_missing_text_column_and_failing_on_bad_records() -> None:
    ds = Dataset.from_dict({"id": ["a", "b"], "body": ["some text", ""]})
    with pytest.raises(ValueError, match="no column 'text'"):
        filter_dataset(ds, {"detector": {"enabled": False}})
    with pytest.raises(MalformedRecordError, match=r"dataset row 1 \(id 'b'\): text field 'body' is empty"):
        filter_dataset(ds, {"detector": {"enabled": False}, "text_field": "body"})
    res = filter_dataset(ds, {"detector": {"enabled": False}, "text_field": "body", "on_error": "quarantine"})
    assert res.kept["id"] == ["a"] and res.rejected["synth_error"] == ["text field 'body' is empty"]


def test_everything_rejected_still_gives_typed_datasets() -> None:
    text = "The same sentence, written twice, is a duplicate of itself."
    ds = Dataset.from_dict({"id": ["x", "y"], "text": [None, None]})
    res = filter_dataset(ds, {"detector": {"enabled": False}, "on_error": "quarantine"})
    assert len(res.kept) == 0 and res.kept.column_names == ["id", "text"]
    assert res.rejected["synth_reason"] == ["malformed", "malformed"]
    assert res.rejected.features["synth_duplicate_of"] == datasets.Value("string")
    res = filter_dataset(Dataset.from_dict({"text": [text, text.upper()]}), {"detector": {"enabled": False}})
    assert res.rejected["synth_duplicate_of"] == ["dataset:0"]  # fallback id: <split>:<row>


# -- DatasetDict ------------------------------------------------------------------------------------


def _splits() -> tuple[list[dict[str, Any]], list[dict[str, Any]]]:
    train = make_records(50, seed=21)
    test = make_records(20, seed=22)
    test[3] = {**test[3], "text": train[10]["text"]}  # a leak: the same text in both splits
    test[7] = {**test[7], "text": near_copy(train[20]["text"], 1)}
    return train, test


def test_datasetdict_per_split_and_jointly(tmp_path: Path) -> None:
    train, test = _splits()
    dd = DatasetDict({"train": Dataset.from_list(train), "test": Dataset.from_list(test)})
    options = {"detector": {"enabled": False}, "report": {"html": False, "diversity": False}}
    per_split = filter_dataset(dd, options)
    assert isinstance(per_split.kept, DatasetDict) and set(per_split.report) == {"train", "test"}
    assert len(per_split.rejected["test"]) == 0  # each split alone has no duplicates

    joint = filter_dataset(dd, options, joint=True, num_proc=2)
    rej = joint.rejected["test"]
    assert rej["id"] == [test[3]["id"], test[7]["id"]]
    assert rej["synth_reason"] == ["exact_duplicate", "near_duplicate"]
    assert rej["synth_duplicate_of"] == [train[10]["id"], train[20]["id"]]
    assert joint.report["splits"]["test"]["rejected"] == 2 and joint.report["input"]["shards"] == 2
    # Jointly = the CLI on the splits as shards in the same order.
    expected, _ = cli_decisions(tmp_path, {"a-train.jsonl": train, "b-test.jsonl": test}, options)
    got = {}
    for split in ("train", "test"):
        got.update(hf_decisions(FilterResult(joint.kept[split], joint.rejected[split])))
    assert got == expected


# -- streaming --------------------------------------------------------------------------------------


def test_streaming_single_pass_rejects_duplicates_and_reports() -> None:
    rows = parity_corpus(80)
    options = {"detector": {"enabled": False}, "on_error": "quarantine"}
    two_pass = filter_dataset(Dataset.from_list(rows), options)
    stream = Dataset.from_list(rows).to_iterable_dataset(num_shards=2)
    res = filter_dataset(stream, options, batch_size=16)
    assert isinstance(res.kept, IterableDataset) and res.report == {}
    kept = list(res.kept)
    assert res.report["output"]["kept"] == len(kept)
    rejected = list(res.rejected)
    assert len(kept) + len(rejected) == len(rows)
    assert list(kept[0]) == ["id", "text", "label"]
    assert {r["id"] for r in kept} | {r["id"] for r in rejected} == {r["id"] for r in rows}
    # Without a keep rule to apply, the first of each group is kept: the two-pass answer.
    got = {r["id"]: (r["synth_reason"], r["synth_duplicate_of"]) for r in rejected}
    want = {r["id"]: (r["synth_reason"], r["synth_duplicate_of"]) for r in two_pass.rejected}
    assert got == want
    assert res.report["duplicates"]["near"] >= 1 and res.report["input"]["malformed"] == 2
    assert [r["id"] for r in res.kept] == [r["id"] for r in kept]  # deterministic on a second pass
    with pytest.warns(UserWarning, match="num_proc=2 is not used on a streaming dataset"):
        filter_dataset(stream, options, num_proc=2)


def test_streaming_target_ratio_and_first_seen_keep_rule() -> None:
    rows = parity_corpus(200, malformed=False)
    options = {"detector": {"enabled": False}, "ratio": {"provenance_field": "label", "target_ratio": 0.1}}
    res = stream_filter(Dataset.from_list(rows).to_iterable_dataset(), SynthFilter(options), batch_size=32)
    kept = list(res.kept)
    share = sum(r["label"] == "machine" for r in kept) / len(kept)
    assert share <= 0.1
    syn = res.report["synthetic"]
    assert syn["streaming"] and syn["downsampled"] > 0 and syn["estimated_share_after"] <= 0.1
    rejected = {r["id"]: r for r in res.rejected}
    # Streaming keeps the first of a group (the machine original), where two passes keep the human copy.
    assert rejected["near-human"]["synth_reason"] == "near_duplicate"
    assert all(r["synth_p_machine"] == 1.0 for r in rejected.values() if r["synth_reason"] == "synthetic_downsampled")


def test_streaming_dict_and_its_limits() -> None:
    train, test = _splits()
    idd = IterableDatasetDict({"train": Dataset.from_list(train).to_iterable_dataset(),
                               "test": Dataset.from_list(test).to_iterable_dataset()})
    res = filter_dataset(idd, {"detector": {"enabled": False}})
    assert isinstance(res.kept, IterableDatasetDict)
    assert len(list(res.kept["test"])) == len(test)
    with pytest.raises(ValueError, match="joint=True needs a DatasetDict"):
        filter_dataset(idd, {"detector": {"enabled": False}}, joint=True)


# -- languages --------------------------------------------------------------------------------------


def _multilingual() -> list[dict[str, Any]]:
    """English, French and German documents (tests/langtext.py), one French copy."""
    from langtext import document

    rows = [{"id": f"{lang}-{k}", "text": document(lang, 3, seed=k)}
            for lang, n in (("en", 8), ("fr", 4), ("de", 3)) for k in range(n)]
    rows.append({"id": "fr-copy", "text": rows[9]["text"]})
    return rows


@needs_default_model
def test_languages_section_matches_run_two_pass_streaming_and_per_split(tmp_path: Path) -> None:
    rows = _multilingual()
    options = {"language": {"keep": ["en", "fr"]}, "report": {"html": False, "diversity": False}}
    _, cli_report = cli_decisions(tmp_path, {"part.jsonl": rows}, options)
    want = cli_report["languages"]
    assert want["by_language"]["fr"]["rejected_by_reason"] == {"exact_duplicate": 1}
    assert want["by_language"]["de"]["rejected_by_reason"] == {"language": 3}
    assert want["not_estimated"] == 4 and want["by_language"]["en"]["in_estimate"] == 8

    two_pass = filter_dataset(Dataset.from_list(rows), options)
    stream = filter_dataset(Dataset.from_list(rows).to_iterable_dataset(), options, batch_size=5)
    rejected = list(stream.rejected)
    for report in (two_pass.report, stream.report):
        assert report["languages"] == want
        assert report["synthetic"]["scope"] == cli_report["synthetic"]["scope"]
        assert any("estimated over the records in en" in w for w in report["warnings"])
    assert {r["id"] for r in rejected if r["synth_reason"] == "language"} == {"de-0", "de-1", "de-2"}
    assert all(r["synth_score"] is None or np.isnan(r["synth_score"]) for r in rejected if r["id"][:2] != "en")

    # Jointly over splits: each split's counts by language, summing to the whole report's.
    dd = DatasetDict({"train": Dataset.from_list(rows[:10]), "test": Dataset.from_list(rows[10:])})
    joint = filter_dataset(dd, options, joint=True)
    assert joint.report["languages"] == want
    splits = joint.report["splits"]
    for lang, entry in want["by_language"].items():
        assert sum(s["by_language"].get(lang, {}).get("records", 0) for s in splits.values()) == entry["records"]
    assert splits["test"]["by_language"]["fr"]["rejected_by_reason"] == {"exact_duplicate": 1}


# -- synthfilter score ------------------------------------------------------------------------------


def test_score_command_keeps_every_record_with_its_scores(tmp_path: Path) -> None:
    rows = parity_corpus(40)
    src = write_jsonl(tmp_path / "in" / "part.jsonl", rows)
    cfg = tmp_path / "sf.toml"
    cfg.write_text('on_error = "quarantine"\n[detector]\nenabled = false\n[ratio]\ntarget_ratio = 0.05\n'
                   '[report]\nhtml = false\ndiversity = false\n', encoding="utf-8")
    code, _, err = run_cli(["score", str(src.parent), "--out", str(tmp_path / "out"), "--config", str(cfg),
                            "--provenance-field", "label", "--quiet", "--workers", "1"])
    assert code == 0, err
    kept = [json.loads(x) for x in read_jsonl(tmp_path / "out" / "kept" / "part.jsonl")]
    usable = [r for r in rows if isinstance(r["text"], str) and r["text"].strip()]
    assert [r["id"] for r in kept] == [r["id"] for r in usable]  # duplicates and machine text kept too
    assert all(r["synthfilter"]["decision"] == "kept" for r in kept)
    assert [r["synthfilter"]["provenance"] for r in kept] == [r["label"] for r in usable]
    rejected = [json.loads(x) for x in read_jsonl(tmp_path / "out" / "rejected" / "part.jsonl")]
    assert {r["synthfilter"]["reason"] for r in rejected} == {"malformed"}
    report = json.loads((tmp_path / "out" / "report.json").read_text())
    assert report["synthetic"]["target_ratio"] is None and report["output"]["kept"] == len(usable)


def test_streaming_running_estimate_reads_the_labels_and_a_drift_is_said() -> None:
    """The running share the batches are cut on re-measures the detector's rates on the labelled
    records, as the final report does (without them it read 51 % on a 2 % corpus and the stream
    dropped a quarter of it, silently); where it still stood far from the whole stream's, or the
    stream dropped records from a corpus under the target, the report says so."""
    from types import SimpleNamespace

    from synthfilter.integrations.hf import _StreamState
    from synthfilter.ratio import estimate_prevalence

    rows = parity_corpus(300, malformed=False)
    sf = SynthFilter({"ratio": {"provenance_field": "who", "target_ratio": 0.5}, "dedup": {"near": False}})
    state = _StreamState(sf, "dataset")
    state.decide_batch({"id": [r["id"] for r in rows], "text": [r["text"] for r in rows],
                        "who": [r["label"] if i % 3 else None for i, r in enumerate(rows)]})
    scores = np.frombuffer(state.surv_scores, dtype=np.float32)
    prov = np.frombuffer(state.surv_prov, dtype=np.int8)
    known = np.frombuffer(state.surv_raw_scores, dtype=np.float32)
    want = estimate_prevalence(scores, prov, state.card, n_boot=0, known_scores=known)
    assert state.pi == pytest.approx(want.detector_share)
    blind = estimate_prevalence(scores, prov, state.card, n_boot=0)  # what it read before
    assert abs(blind.detector_share - want.detector_share) > 0.05

    drift = SimpleNamespace(downsampled=50, decided_on=[(0.5, 100), (0.4, 100)])
    under = SimpleNamespace(share=0.02, detector_share=0.02)
    msg = _StreamState._running_drift(drift, under, 0.1)
    assert "50 records were downsampled batch by batch, but the whole stream's estimate (2.0%) is already" in msg
    far = SimpleNamespace(share=0.3, detector_share=0.3)
    assert "from 40% to 50%, 45% on average) stood far from the whole stream's (30.0%)" in \
        _StreamState._running_drift(drift, far, 0.1)
    near = SimpleNamespace(downsampled=50, decided_on=[(0.31, 100)])
    assert _StreamState._running_drift(near, far, 0.1) is None


def test_results_unpack_and_decide_names_what_it_needs() -> None:
    rows = parity_corpus(20, malformed=False)
    options = {"detector": {"enabled": False}}
    kept, rejected, report = filter_dataset(Dataset.from_list(rows), options)  # as the Ray API's result
    assert len(kept) + len(rejected) == len(rows) == report["input"]["records"]
    sf = SynthFilter(options)
    stream = Dataset.from_list(rows).map(sf.annotate, batched=True).to_iterable_dataset()
    with pytest.raises(TypeError, match="decide needs the whole corpus at once .* got IterableDataset: for a "
                                        "stream use synthfilter.hf.filter_dataset"):
        sf.decide(stream)
    from datasets import DatasetDict

    with pytest.raises(TypeError, match="got DatasetDict: .* for a DatasetDict decide each split"):
        sf.decide(DatasetDict({"train": Dataset.from_list(rows).map(sf.annotate, batched=True)}))
