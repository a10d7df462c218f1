"""Metrics against scikit-learn, and clear errors for bad labelled data."""

from __future__ import annotations

import json

import numpy as np
import pytest
from sklearn.metrics import roc_auc_score

from synthfilter.detect.evaluate import (
    DataError,
    auroc,
    expected_calibration_error,
    load_labelled,
    summarise,
    threshold_at_fpr,
    tpr_at_fpr,
)


def test_auroc_matches_sklearn_with_ties():
    r = np.random.default_rng(0)
    y = r.integers(0, 2, 500)
    p = np.round(r.random(500) * 0.5 + y * 0.3, 2)
    assert auroc(y, p) == pytest.approx(roc_auc_score(y, p))
    assert auroc(np.ones(5), np.arange(5)) is None


def test_threshold_at_fpr_bounds_false_positives():
    r = np.random.default_rng(2)
    human = r.random(1000)
    for target in (0.01, 0.05, 0.2):
        t = threshold_at_fpr(human, target)
        assert (human >= t).mean() <= target
        assert (human >= t).mean() >= target - 0.002


def test_tpr_at_fpr_perfect_and_random():
    y = np.array([0] * 100 + [1] * 100)
    assert tpr_at_fpr(y, np.r_[np.zeros(100), np.ones(100)], 0.01) == 1.0
    assert tpr_at_fpr(y, np.r_[np.ones(100), np.zeros(100)], 0.01) == 0.0


def test_ece_zero_when_calibrated_and_large_when_not():
    r = np.random.default_rng(3)
    p = r.random(200_000)
    y = (r.random(200_000) < p).astype(int)
    assert expected_calibration_error(y, p) < 0.01
    assert expected_calibration_error(y, np.clip(p * 0.5, 0, 1)) > 0.2


def test_summarise_groups_and_fairness():
    y = np.array([0, 0, 0, 0, 1, 1, 1, 1])
    p = np.array([0.9, 0.1, 0.2, 0.1, 0.8, 0.9, 0.3, 0.7])
    g = {"domain": np.array(["a", "a", "b", "b", "a", "a", "b", "b"])}
    s = summarise(y, p, 0.5, g, ["domain"])
    assert s["confusion"] == {"tp": 3, "fp": 1, "tn": 3, "fn": 1}
    assert s["groups"]["domain"]["a"]["fpr"] == 0.5 and s["groups"]["domain"]["b"]["fpr"] == 0.0
    assert s["fairness"]["domain"]["max_fpr_ratio"] == 2.0


def _write(path, rows):
    path.write_text("".join(json.dumps(r) + "\n" for r in rows))
    return path


def test_load_labelled_errors_name_file_and_line(tmp_path):
    f = _write(tmp_path / "a.jsonl", [{"text": "hello", "label": "human"}, {"body": "x", "label": "machine"}])
    with pytest.raises(DataError, match=r"a\.jsonl:2: no 'text' field"):
        load_labelled([f])
    f = _write(tmp_path / "b.jsonl", [{"text": "hello", "label": "bot"}])
    with pytest.raises(DataError, match=r"b\.jsonl:1: label 'bot'"):
        load_labelled([f])
    (tmp_path / "c.jsonl").write_text('{"text": "ok", "label": "human"}\n{oops\n')
    with pytest.raises(DataError, match=r"c\.jsonl:2: not valid JSON"):
        load_labelled([tmp_path / "c.jsonl"])
    with pytest.raises(DataError, match="does not exist"):
        load_labelled([tmp_path / "missing.jsonl"])


def test_load_labelled_custom_fields_and_compression(tmp_path):
    import gzip

    rows = [{"body": f"text {i}", "src": "ours" if i % 2 else "web", "team": "x"} for i in range(6)]
    with gzip.open(tmp_path / "d.jsonl.gz", "wt") as f:
        f.writelines(json.dumps(r) + "\n" for r in rows)
    data = load_labelled([tmp_path / "d.jsonl.gz"], text_field="body", label_field="src", human_label="web",
                         machine_label="ours", group_fields=["team"])
    assert data.y.tolist() == [0, 1, 0, 1, 0, 1]
    assert data.groups["team"].tolist() == ["x"] * 6


def test_load_labelled_reads_dotted_fields_as_run_does(tmp_path):
    # --text-field / --label-field doc.body used to be looked up as one top-level key only, while
    # run and score follow the path (records.get_path); a top-level key spelt with the dot wins.
    rows = [{"doc": {"body": f"text {i}"}, "meta": {"who": "ours" if i % 2 else "web", "team": {"name": f"t{i % 3}"}}}
            for i in range(6)]
    rows[0]["meta.who"] = "ours"  # read first: the label of this record is its top-level "meta.who"
    f = _write(tmp_path / "n.jsonl", rows)
    data = load_labelled([f], text_field="doc.body", label_field="meta.who", human_label="web",
                         machine_label="ours", group_fields=["meta.team.name", "meta.nope"])
    assert data.texts == [f"text {i}" for i in range(6)]
    assert data.y.tolist() == [1, 1, 0, 1, 0, 1]
    assert data.groups["meta.team.name"].tolist() == ["t0", "t1", "t2", "t0", "t1", "t2"]
    assert set(data.groups["meta.nope"].tolist()) == {"(missing)"}
    del rows[4]["meta"]["who"]
    _one_line_error([_write(tmp_path / "m.jsonl", rows)], r"m\.jsonl:5: no 'meta\.who' field", text_field="doc.body",
                    label_field="meta.who", human_label="web", machine_label="ours")
    rows[4]["meta"]["who"] = "web"
    rows[2]["doc"] = "flat"
    _one_line_error([_write(tmp_path / "t.jsonl", rows)], r"t\.jsonl:3: no 'doc\.body' field", text_field="doc.body",
                    label_field="meta.who", human_label="web", machine_label="ours")


def test_threshold_gives_the_same_answer_in_float32_and_float64():
    r = np.random.default_rng(4)
    human = np.round(r.random(999), 3).astype(np.float32)  # many ties, like a step calibrator
    t = threshold_at_fpr(human, 0.05)
    assert np.float32(t) == t
    assert (human >= t).sum() == (human.astype(np.float64) >= t).sum()
    assert (human >= t).mean() <= 0.05


# -- reading labelled files: what ``synthfilter run`` reads, and one-line errors naming file:line --

from .conftest import human_text, machine_text  # noqa: E402


def _records(n, seed=0, **extra):
    import random

    rng = random.Random(seed)
    return [{"text": (machine_text if i % 2 else human_text)(rng, 4), "label": "machine" if i % 2 else "human",
             **extra} for i in range(n)]


def _jsonl_bytes(rows):
    return "".join(json.dumps(r) + "\n" for r in rows).encode("utf-8")


def _one_line_error(paths, pattern, **kw):
    """load_labelled raises a DataError matching ``pattern``, its message one line."""
    with pytest.raises(DataError, match=pattern) as e:
        load_labelled(paths, **kw)
    assert "\n" not in str(e.value) and "\r" not in str(e.value)
    return str(e.value)


def test_truncated_zst_is_an_error_not_fewer_records(tmp_path):
    import io

    import zstandard

    rows = _records(200, seed=1)
    buf, block_ends = io.BytesIO(), []
    with zstandard.ZstdCompressor(level=3).stream_writer(buf, closefd=False) as w:
        for i in range(0, len(rows), 20):  # blocks that end where a line does: a cut there decodes cleanly
            w.write(_jsonl_bytes(rows[i:i + 20]))
            w.flush(zstandard.FLUSH_BLOCK)
            block_ends.append(buf.tell())
    whole = buf.getvalue()
    f = tmp_path / "cut.jsonl.zst"
    f.write_bytes(whole)
    assert len(load_labelled([f]).texts) == 200
    for cut in (block_ends[0], block_ends[3], len(whole) // 2, 40, len(whole) - 3):
        f.write_bytes(whole[:cut])
        msg = _one_line_error([f], r"cut\.jsonl\.zst: truncated \.zst file")
        assert "re-copy or re-create" in msg and "--on-error" not in msg
    one_shot = zstandard.ZstdCompressor().compress(_jsonl_bytes(rows))
    f.write_bytes(one_shot[: len(one_shot) // 2])
    _one_line_error([f], r"cut\.jsonl\.zst: truncated \.zst file")


def test_truncated_or_fake_gz_names_the_file(tmp_path):
    import gzip

    data = gzip.compress(_jsonl_bytes(_records(200, seed=2)), mtime=0)
    f = tmp_path / "t.jsonl.gz"
    for cut in (len(data) // 2, len(data) - 4, 30):
        f.write_bytes(data[:cut])
        _one_line_error([f], r"t\.jsonl\.gz: truncated \.gz file")
    fake = tmp_path / "fake.jsonl.gz"
    fake.write_bytes(b"not gzip at all\n")
    _one_line_error([fake], r"fake\.jsonl\.gz: corrupt \.gz file")


def test_invalid_utf8_names_file_line_and_byte(tmp_path):
    rows = _records(4, seed=3)
    lines = _jsonl_bytes(rows).splitlines(keepends=True)
    lines[2] = lines[2].replace(b'"text": "', b'"text": "caf\xe9 ', 1)  # Latin-1, not UTF-8
    f = tmp_path / "u.jsonl"
    f.write_bytes(b"".join(lines))
    _one_line_error([f], r"u\.jsonl:3: invalid UTF-8 \(byte 0xe9")


def test_bom_and_crlf_are_read_as_run_reads_them(tmp_path):
    rows = _records(6, seed=4)
    f = tmp_path / "bom.jsonl"
    f.write_bytes(b"\xef\xbb\xbf" + _jsonl_bytes(rows).replace(b"\n", b"\r\n"))
    data = load_labelled([f])
    assert data.texts == [r["text"] for r in rows]
    assert data.y.tolist() == [0, 1] * 3


def test_iter_jsonl_keeps_line_numbers_big_integers_and_replaces_lone_surrogates(tmp_path):
    from synthfilter.detect.evaluate import iter_jsonl

    f = tmp_path / "n.jsonl"
    f.write_text('{"text": "a", "n": 123456789012345678901234567890}\n\n   \n{"text": "half \\ud83d emoji"}\n')
    got = list(iter_jsonl(f))
    assert [line for line, _ in got] == [1, 4]
    assert got[0][1]["n"] == 123456789012345678901234567890
    assert got[1][1]["text"] == "half \ufffd emoji"


@pytest.mark.parametrize("text", ["", "   ", "\n\t \u00a0", "\u200b\u200d\ufeff"])
def test_empty_or_whitespace_text_is_an_error(tmp_path, text):
    rows = _records(4, seed=5)
    rows[1]["text"] = text
    f = _write(tmp_path / "e.jsonl", rows)
    _one_line_error([f], r"e\.jsonl:2: text field 'text' is empty")


def test_non_string_text_names_its_type(tmp_path):
    rows = _records(3, seed=6)
    rows[2]["text"] = None
    _one_line_error([_write(tmp_path / "t.jsonl", rows)], r"t\.jsonl:3: text field 'text' is null, expected a string")


def test_labels_match_as_canonical_values(tmp_path):
    texts = [r["text"] for r in _records(8, seed=7)]
    f = _write(tmp_path / "b.jsonl", [{"text": t, "label": v} for t, v in
                                      zip(texts, [False, True, "False", "TRUE", " false ", True, False, "true"])])
    data = load_labelled([f], human_label="false", machine_label="true")
    assert data.y.tolist() == [0, 1, 0, 1, 0, 1, 0, 1]
    assert load_labelled([f], human_label="False", machine_label="True").y.tolist() == data.y.tolist()
    f = _write(tmp_path / "n.jsonl", [{"text": t, "label": v} for t, v in zip(texts, [0, 1.0, "0", "1", 0.0, 1, 0, 1])])
    assert load_labelled([f], human_label="0", machine_label="1").y.tolist() == [0, 1] * 4
    assert load_labelled([f], human_label="0.0", machine_label="1.0").y.tolist() == [0, 1] * 4
    f = _write(tmp_path / "s.jsonl", [{"text": t, "label": v} for t, v in zip(texts, ["Human", " MACHINE"] * 4)])
    assert load_labelled([f]).y.tolist() == [0, 1] * 4
    f = _write(tmp_path / "m.jsonl", [{"text": texts[0], "label": 1.5}])
    _one_line_error([f], r"m\.jsonl:1: label 1\.5 is neither '0' \(human\) nor '1' \(machine\)",
                    human_label="0", machine_label="1")


def test_null_or_nested_label_is_an_error(tmp_path):
    rows = _records(3, seed=8)
    rows[1]["label"] = None
    _one_line_error([_write(tmp_path / "n.jsonl", rows)], r"n\.jsonl:2: label is null")
    rows[1]["label"] = ["human"]
    _one_line_error([_write(tmp_path / "l.jsonl", rows)], r"l\.jsonl:2: label is a list")


@pytest.mark.parametrize("human, machine", [("x", "x"), ("human", " Human"), ("false", "False"), ("1", "1.0")])
def test_same_human_and_machine_label_is_refused_before_reading(tmp_path, human, machine):
    with pytest.raises(DataError, match="are the same label") as e:
        load_labelled([tmp_path / "not-read.jsonl"], human_label=human, machine_label=machine)
    assert "\n" not in str(e.value)


def test_directory_and_empty_file_are_named(tmp_path):
    (tmp_path / "d").mkdir()
    _one_line_error([tmp_path / "d"], r"d: is a directory, expected a \.jsonl/\.jsonl\.gz/\.jsonl\.zst file")
    good = _write(tmp_path / "good.jsonl", _records(4, seed=9))
    (tmp_path / "empty.jsonl").write_text("\n  \n")
    _one_line_error([good, tmp_path / "empty.jsonl"], r"empty\.jsonl: no records")


def test_eval_prints_the_error_on_one_line_as_written(tmp_path, capsys):
    from synthfilter.detect.evaluate import eval_command

    d = tmp_path / ("export[v2]" + "-x" * 60)  # brackets that are not markup, a name longer than a terminal
    d.mkdir()
    rows = _records(3, seed=10)
    rows[1]["text"] = " "
    f = _write(d / "m.jsonl", rows)
    assert eval_command([f], tmp_path / "no-model", quiet=True) == 2
    err = capsys.readouterr().err
    assert err.strip() == f"error: {f}:2: text field 'text' is empty"


def test_labelled_records_that_repeat_a_read_key_are_refused_with_file_and_line(tmp_path):
    # Which label (or text) counts would be the JSON parser's choice: train, adapt and eval refuse,
    # naming the place, as run does; a repeated key they do not read is no concern of theirs.
    from synthfilter.detect.evaluate import DataError

    good = {"text": "The committee agreed to meet again next week to finish the report.", "label": "human"}
    path = tmp_path / "labels.jsonl"
    path.write_text(json.dumps(good) + "\n"
                    + '{"text": "A second note about the budget.", "label": "human", "label": "machine"}\n'
                    + '{"text": "Third.", "url": "a", "url": "b", "label": "human"}\n', encoding="utf-8")
    with pytest.raises(DataError, match=r'labels\.jsonl:2: the record repeats the key "label" \(2 values\)'):
        load_labelled([path])
    path.write_text(json.dumps(good) + "\n" + '{"text": "Third one here.", "url": "a", "url": "b", "label": "machine"}\n',
                    encoding="utf-8")
    assert len(load_labelled([path]).texts) == 2
