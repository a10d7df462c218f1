"""A JSON object that repeats a key synthfilter reads (the text, id or provenance field, or a key on
a dotted field's way) is bad input: a one-line error naming file and line (exit 2), or, under
``--on-error quarantine``, a ``malformed`` record in rejected/. A repeated key nothing reads is
read as before, and so is ``"text"`` anywhere but as a repeated key of the object read."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import orjson
import pytest

from helpers import read_jsonl, run_cli, write_jsonl
from synthfilter.io.shards import RepeatedKeys, Shard, ShardReader, parse_json_line

GOOD = [
    {"id": "note-1", "text": "The ferry to the island was cancelled twice this week because of the wind."},
    {"id": "note-2", "text": "Our allotment finally produced enough runner beans to give some to the neighbours."},
    {"id": "note-3", "text": "The library has extended its Thursday opening hours until eight in the evening."},
    {"id": "note-4", "text": "A retired teacher repaired the church clock, which had stopped in March."},
]
REPEATED_TEXT = b'{"id": "note-x", "text": "The market opens at seven.", "text": "The market opens at nine."}'
REPEATED_ID = b'{"id": "note-x", "text": "The bakery on the corner now sells rye bread.", "id": "note-y"}'
FLAGS = ["--no-detector", "--no-near-dedup", "-q"]


def _lines(records: list[dict[str, Any]]) -> list[bytes]:
    return [json.dumps(r).encode() for r in records]


def _shard(tmp_path: Path, bad: bytes, name: str = "in.jsonl", compression: str | None = None) -> Path:
    """The good records with ``bad`` as line 3."""
    good = _lines(GOOD)
    return write_jsonl(tmp_path / "in" / name, good[:2] + [bad] + good[2:], compression)


def _read(path: Path, fields: tuple[str | None, ...]) -> list[tuple[Any, str | None]]:
    reader = ShardReader(Shard(path, path.name, "jsonl", None), fields=fields)
    return [(rec.obj, rec.error) for rec in reader]


# -- the reader -----------------------------------------------------------------------------------


READ = ("text", "id", "meta.source")  # the fields of a run with --provenance-field meta.source

REPEATS = {
    "text": (REPEATED_TEXT, 'the record repeats the key "text" (2 values)'),
    "id": (REPEATED_ID, 'the record repeats the key "id" (2 values)'),
    "three texts": (b'{"text": "Snow is forecast.", "text": "Sleet is forecast.", "text": "Rain is forecast."}',
                    'the record repeats the key "text" (3 values)'),
    "nested key on the way": (
        b'{"text": "The choir rehearses on Tuesdays.", "meta": {"source": "forum", "source": "crawl"}}',
        'the record repeats the key "source" in its "meta" object (2 values)'),
    "object on the way": (
        b'{"text": "The pier reopened after repairs.", "meta": {"source": "forum"}, "meta": {"lang": "en"}}',
        'the record repeats the key "meta" (2 values)'),
    "whole dotted name": (
        b'{"text": "The bus timetable changed again.", "meta.source": "forum", "meta.source": "crawl"}',
        'the record repeats the key "meta.source" (2 values)'),
    "integer beyond 64 bits": (
        b'{"id": 123456789012345678901234567890, "text": "A heron stood in the shallows.", "id": 7}',
        'the record repeats the key "id" (2 values)'),
}


@pytest.mark.parametrize("case", sorted(REPEATS))
def test_the_reader_finds_a_repeated_key_it_reads(tmp_path: Path, case: str) -> None:
    bad, expected = REPEATS[case]
    (a, b, (obj, error), c, d) = _read(_shard(tmp_path, bad), READ)
    assert error is not None and error.startswith(expected), error
    assert "\n" not in error
    assert obj == json.loads(bad)  # kept as read (the last value of each key), for its id and rejected/
    assert all(err is None for _, err in (a, b, c, d))


ACCEPTED = {
    "an unread key repeated": b'{"id": "n", "text": "The regatta was postponed.", "url": "https://a.example/1", '
                              b'"url": "https://a.example/2"}',
    "an unread key repeated in a read object": b'{"text": "Frost on the windscreens.", "meta": {"source": "wiki", '
                                               b'"lang": "en", "lang": "cy"}}',
    "a key repeated beside the dotted name read whole": b'{"text": "The lighthouse is open.", "meta.source": "wiki", '
                                                       b'"meta": {"source": "a"}, "meta": {"source": "b"}}',
    '"text" inside the text': b'{"id": "n", "text": "She typed \\"text\\" into the search box and waited."}',
    '"text" as a value and as a nested key': b'{"id": "n", "text": "The museum has a new wing.", "format": "text", '
                                             b'"meta": {"source": "wiki"}, "parts": [{"text": "a"}, {"text": "b"}]}',
    '"id" in a nested object': b'{"id": "n", "text": "Hedgehogs crossed the lane.", "author": {"id": 3}, '
                               b'"editor": {"id": 4}}',
}


@pytest.mark.parametrize("case", sorted(ACCEPTED))
def test_the_reader_reads_a_line_that_repeats_no_key_it_reads(tmp_path: Path, case: str) -> None:
    line = ACCEPTED[case]
    records = _read(_shard(tmp_path, line), READ)
    assert [err for _, err in records] == [None] * 5
    assert records[2][0] == orjson.loads(line)


def test_without_fields_the_reader_checks_nothing(tmp_path: Path) -> None:
    assert [err for _, err in _read(_shard(tmp_path, REPEATED_TEXT), ())] == [None] * 5


def test_an_unread_text_key_may_repeat(tmp_path: Path) -> None:
    """With another text field, a repeated "text" is a key like any other."""
    line = b'{"body": "The canal boats are moored for winter.", "text": "draft", "text": "final"}'
    assert [err for _, err in _read(_shard(tmp_path, line), ("body", "id"))] == [None] * 5


def test_the_checks_follow_the_way_a_record_is_read() -> None:
    keys = RepeatedKeys(("text", "id"))
    # The byte test: a read key seen twice (here at two levels), settled by the parse that follows.
    line = b'{"id": "n", "author": {"id": 3}, "text": "Tea at four."}'
    assert keys.may_repeat(line) and keys.confirm(line) is None
    # Once, or as a value: no second look.
    assert not keys.may_repeat(b'{"id": "n", "text": "Tea at four."}')
    assert not keys.may_repeat(b'{"id": "n", "kind": "id", "text": "Tea at four.", "part": "text"}')
    # Any JSON white space before the colon.
    assert keys.may_repeat(b'{"text" : "Tea at four.",\t"text"\r\n:"Tea at five."}')
    # parse_json_line says so too, from the first line of a file (a BOM) to a CRLF ending.
    obj, error = parse_json_line(b"\xef\xbb\xbf" + REPEATED_TEXT + b"\r", keys)
    assert obj == {"id": "note-x", "text": "The market opens at nine."} and "repeats the key \"text\"" in error
    assert parse_json_line(REPEATED_TEXT) == (orjson.loads(REPEATED_TEXT), None)


def test_a_field_name_beyond_ascii_is_found_as_an_ascii_only_writer_escapes_it() -> None:
    keys = RepeatedKeys(("résumé",))
    for line in (b'{"r\\u00e9sum\\u00e9": "Un court texte.", "r\\u00e9sum\\u00e9": "Un autre."}',
                 '{"résumé": "Un court texte.", "résumé": "Un autre."}'.encode(),
                 '{"résumé": "Un court texte.", "r\\u00e9sum\\u00e9": "Un autre."}'.encode()):
        assert keys.may_repeat(line)
        assert keys.confirm(line).startswith('the record repeats the key "résumé" (2 values)')


@pytest.mark.parametrize("second", [
    b'"te\\u0078t"', b'"TE\\u0058T"', b'"\\u0074\\u0065\\u0078\\u0074"', b'"tex\\u0074"'])
def test_a_key_spelled_with_escapes_is_the_same_key(second: bytes) -> None:
    # Any parser reads "te\u0078t" as "text": the byte test finds every spelling, in any hex case.
    keys = RepeatedKeys(("text", "meta.source"))
    line = b'{"text": "Tea at four.", ' + second + b': "Tea at five."}'
    expected = second.lower() != b'"te\\u0058t"'  # "TE\u0058T" is "TEXT": another key
    assert keys.may_repeat(line) is expected
    assert (keys.confirm(line) is not None) is expected
    nested = b'{"meta": {"source": "wire", "sour\\u0063e": "staff"}, "text": "A note."}'
    assert keys.confirm(nested).startswith('the record repeats the key "source" in its "meta" object')
    assert keys.may_repeat(nested)


def test_a_key_with_a_slash_or_beyond_the_bmp_is_found_in_each_spelling() -> None:
    keys = RepeatedKeys(("meta/src", "\U0001f4dd"))
    for line in (b'{"meta/src": "a", "meta\\/src": "b"}', b'{"meta\\u002Fsrc": "a", "meta/src": "b"}',
                 '{"\U0001f4dd": "a", "\\ud83d\\uDCDD": "b"}'.encode()):
        assert keys.may_repeat(line) and keys.confirm(line) is not None
    assert not keys.may_repeat(b'{"meta/src": "a", "meta\\\\src": "b"}')


def test_an_escaped_lone_surrogate_is_read_as_before(tmp_path: Path) -> None:
    line = b'{"id": "n", "text": "A cut emoji \\ud83d here.", "note": "text", "id": "m"}'
    ((obj, error),) = _read(write_jsonl(tmp_path / "s.jsonl", [line]), READ)
    assert obj == {"id": "m", "text": "A cut emoji \ufffd here.", "note": "text"}
    assert error is not None and error.startswith('the record repeats the key "id" (2 values)')


# -- the CLI --------------------------------------------------------------------------------------


@pytest.mark.parametrize("key, bad", [("text", REPEATED_TEXT), ("id", REPEATED_ID)], ids=["text", "id"])
@pytest.mark.parametrize("compression", [None, "gz"])
def test_a_repeated_read_key_fails_with_one_line_naming_file_and_line(tmp_path: Path, key: str, bad: bytes,
                                                                       compression: str | None) -> None:
    src = _shard(tmp_path, bad, "in.jsonl" + (".gz" if compression else ""), compression)
    code, out, err = run_cli(["run", str(src), "--out", str(tmp_path / "out"), *FLAGS])
    assert code == 2, err
    assert "Traceback" not in err
    (line,) = err.strip().splitlines()
    assert line.startswith(f'error: {src}:3: the record repeats the key "{key}" (2 values)'), line
    assert line.endswith("(use --on-error quarantine to set bad records aside)"), line


def test_a_repeated_read_key_is_quarantined_and_the_counts_add_up(tmp_path: Path) -> None:
    src = _shard(tmp_path, REPEATED_TEXT)
    code, out, err = run_cli(["run", str(src), "--out", str(tmp_path / "out"), *FLAGS, "--on-error", "quarantine"])
    assert code == 0, err
    assert read_jsonl(tmp_path / "out" / "kept" / "in.jsonl") == _lines(GOOD)
    (rej,) = read_jsonl(tmp_path / "out" / "rejected" / "in.jsonl")
    # The line as read (both values), with the synthfilter object added at its end.
    assert rej.startswith(REPEATED_TEXT[:-1] + b',"synthfilter":')
    sf = orjson.loads(rej)["synthfilter"]
    assert sf["reason"] == "malformed"
    assert sf["error"].startswith('the record repeats the key "text" (2 values)')
    assert sf["source"] == {"file": "in.jsonl", "line": 3, "byte_offset": sum(len(x) + 1 for x in _lines(GOOD)[:2])}
    report = json.loads((tmp_path / "out" / "report.json").read_text())
    assert report["input"]["records"] == 5 and report["input"]["malformed"] == 1
    assert report["output"]["kept"] + report["output"]["rejected"] == 5
    assert report["output"]["rejected_by_reason"]["malformed"] == 1


@pytest.mark.parametrize("case", sorted(ACCEPTED))
def test_a_line_that_repeats_no_key_read_is_kept_as_read(tmp_path: Path, case: str) -> None:
    src = _shard(tmp_path, ACCEPTED[case])
    code, out, err = run_cli(["run", str(src), "--out", str(tmp_path / "out"), *FLAGS,
                              "--provenance-field", "meta.source"])
    assert code == 0, err
    assert (tmp_path / "out" / "kept" / "in.jsonl").read_bytes() == src.read_bytes()


@pytest.mark.parametrize("flag, field, bad, expected", [
    ("--provenance-field", "meta.source",
     b'{"id": "n", "text": "The choir rehearses on Tuesdays.", "meta": {"source": "human", "source": "machine"}}',
     'the record repeats the key "source" in its "meta" object (2 values)'),
    ("--text-field", "doc.body",
     b'{"id": "n", "doc": {"body": "The tide was out at noon.", "body": "The tide was in at noon."}}',
     'the record repeats the key "body" in its "doc" object (2 values)'),
    ("--id-field", "meta.uid",
     b'{"text": "The orchard lost two trees in the storm.", "meta": {"uid": "a1", "uid": "a2"}}',
     'the record repeats the key "uid" in its "meta" object (2 values)'),
])
def test_a_repeated_key_inside_a_dotted_fields_object_is_caught(tmp_path: Path, flag: str, field: str, bad: bytes,
                                                                expected: str) -> None:
    good = [orjson.dumps({"id": r["id"], "doc": {"body": r["text"]}, "meta": {"source": "human", "uid": r["id"]},
                          "text": r["text"]}) for r in GOOD]
    src = write_jsonl(tmp_path / "in" / "in.jsonl", good[:2] + [bad] + good[2:])
    code, out, err = run_cli(["run", str(src), "--out", str(tmp_path / "out"), *FLAGS, flag, field])
    assert code == 2, err
    (line,) = err.strip().splitlines()
    assert line.startswith(f"error: {src}:3: {expected}"), line


# -- Parquet: a column (or struct field) read whose name the schema gives twice --------------------


def _parquet_with(path: Path, names: list[str], columns: list[Any]) -> Path:
    import pyarrow as pa
    import pyarrow.parquet as pq

    path.parent.mkdir(parents=True, exist_ok=True)
    pq.write_table(pa.Table.from_arrays(columns, names=names), path)
    return path


def test_a_parquet_file_naming_a_read_column_twice_is_refused_or_quarantined_whole(tmp_path: Path) -> None:
    import pyarrow as pa
    import pyarrow.parquet as pq

    ids = pa.array([r["id"] for r in GOOD])
    first = pa.array([r["text"] for r in GOOD])
    second = pa.array([f"Another body for {r['id']}, which the reader would have taken." for r in GOOD])
    src = _parquet_with(tmp_path / "in" / "twice.parquet", ["id", "text", "text"], [ids, first, second])
    code, _, err = run_cli(["run", str(src), "--out", str(tmp_path / "out"), *FLAGS])
    assert code == 2 and err.strip() == (f"error: {src}: the file has 2 columns named \"text\": which one counts "
                                         "is ambiguous; keep only one")
    assert not (tmp_path / "out").exists()
    code, _, err = run_cli(["run", str(src), "--out", str(tmp_path / "q"), *FLAGS, "--on-error", "quarantine"])
    assert code == 0, err
    rejected = pq.ParquetFile(tmp_path / "q" / "rejected" / "twice.parquet").read()
    assert rejected.schema.names == ["id", "text", "text", "synthfilter"]  # both columns, as read
    assert rejected.column(1).to_pylist() == first.to_pylist() and rejected.column(2).to_pylist() == second.to_pylist()
    assert {s["reason"] for s in rejected.column(3).to_pylist()} == {"malformed"}
    assert "columns named \"text\"" in rejected.column(3)[0]["error"].as_py()
    assert [s["source"] for s in rejected.column(3).to_pylist()] == [{"file": "twice.parquet", "row": i + 1}
                                                                     for i in range(len(GOOD))]


def test_a_parquet_struct_repeating_a_read_field_is_malformed_and_an_unread_repeat_passes(tmp_path: Path) -> None:
    import pyarrow as pa
    import pyarrow.parquet as pq

    n = len(GOOD)
    texts = pa.array([r["text"] for r in GOOD])
    meta = pa.StructArray.from_arrays([pa.array(["wire"] * n), pa.array(["staff"] * n)], names=["source", "source"])
    src = _parquet_with(tmp_path / "in" / "meta.parquet", ["text", "meta"], [texts, meta])
    code, _, err = run_cli(["run", str(src), "--out", str(tmp_path / "out"), *FLAGS, "--provenance-field", "meta.source"])
    assert code == 2 and "the file's \"meta\" column has 2 fields named \"source\"" in err, err
    # Not read without --provenance-field: the file is read as before, its columns kept as they are.
    code, _, err = run_cli(["run", str(src), "--out", str(tmp_path / "plain"), *FLAGS])
    assert code == 0, err
    kept = pq.ParquetFile(tmp_path / "plain" / "kept" / "meta.parquet").read()
    assert kept.num_rows == n and kept.schema.field("meta").type.num_fields == 2
    labels = _parquet_with(tmp_path / "in2" / "labels.parquet", ["text", "label", "label"],
                           [texts, pa.array(["a"] * n), pa.array(["b"] * n)])
    code, _, err = run_cli(["run", str(labels), "--out", str(tmp_path / "labels"), *FLAGS])
    assert code == 0, err
    assert pq.ParquetFile(tmp_path / "labels" / "kept" / "labels.parquet").read().schema.names == ["text", "label", "label"]
