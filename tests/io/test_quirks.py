"""Input quirks of real exports: a UTF-8 BOM, integers beyond 64 bits, CRLF line endings, escaped
lone surrogates.

Each goes through ``synthfilter run`` and must come back byte-identical in kept/.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import orjson
import pytest

from synthfilter.config import Config
from synthfilter.io.shards import dump_json_line, parse_json_line
from synthfilter.pipeline.run import run_pipeline

BIG = 123456789012345678901234567890  # beyond 64 bits: orjson refuses it


def _run(tmp_path: Path, data: bytes, fast_config: dict[str, Any], **extra: Any) -> tuple[Path, Any]:
    src = tmp_path / "in" / "part.jsonl"
    src.parent.mkdir(parents=True)
    src.write_bytes(data)
    cfg = Config.from_dict({**fast_config, **extra})
    res = run_pipeline([str(src.parent)], tmp_path / "out", cfg)
    return tmp_path / "out", res


def _lines(texts: list[str], ending: bytes = b"\n") -> list[bytes]:
    return [json.dumps({"id": f"r{i}", "text": t}).encode() + ending for i, t in enumerate(texts)]


TEXTS = ["The harbour master kept a ledger of every gull.", "Rain on the allotments again, said the beekeeper.",
         "The clock tower runs four minutes slow, as ever."]


def test_bom_at_the_start_is_read_and_the_kept_line_keeps_it(tmp_path: Path, fast_config: dict[str, Any]) -> None:
    lines = _lines(TEXTS)
    data = b"\xef\xbb\xbf" + b"".join(lines)
    out, res = _run(tmp_path, data, fast_config)
    assert res.report["input"]["malformed"] == 0 and res.report["output"]["kept"] == 3
    assert (out / "kept" / "part.jsonl").read_bytes() == data


def test_integers_of_any_size_are_read_and_kept_byte_identical(tmp_path: Path, fast_config: dict[str, Any]) -> None:
    lines = [b'{"id": %d, "text": "%s", "n": -%d}\n' % (BIG, t.encode(), BIG * 10) for t in TEXTS[:1]]
    lines += _lines(TEXTS[1:])
    data = b"".join(lines)
    out, res = _run(tmp_path, data, fast_config)
    assert res.report["input"]["malformed"] == 0
    assert (out / "kept" / "part.jsonl").read_bytes() == data
    # --annotate writes the record itself: the integer survives exactly.
    out2, _ = _run(tmp_path / "annotated", data, fast_config, annotate=True)
    first = (out2 / "kept" / "part.jsonl").read_bytes().split(b"\n")[0]
    assert json.loads(first)["id"] == BIG and json.loads(first)["n"] == -BIG * 10


def test_big_integer_duplicate_is_rejected_with_its_integer(tmp_path: Path, fast_config: dict[str, Any]) -> None:
    line = b'{"big": %d, "text": "%s"}\n' % (BIG, TEXTS[0].encode())
    out, res = _run(tmp_path, line + line, fast_config)
    assert res.report["output"]["rejected_by_reason"]["exact_duplicate"] == 1
    rejected = json.loads((out / "rejected" / "part.jsonl").read_bytes())
    assert rejected["big"] == BIG and rejected["synthfilter"]["reason"] == "exact_duplicate"


def test_crlf_lines_stay_byte_identical(tmp_path: Path, fast_config: dict[str, Any]) -> None:
    lines = _lines(TEXTS + [TEXTS[0]], ending=b"\r\n")
    data = b"".join(lines)
    out, res = _run(tmp_path, data, fast_config)
    assert res.report["output"]["kept"] == 3
    assert (out / "kept" / "part.jsonl").read_bytes() == b"".join(lines[:3])
    rejected = orjson.loads((out / "rejected" / "part.jsonl").read_bytes())
    assert rejected["synthfilter"]["reason"] == "exact_duplicate"


def test_bom_and_crlf_together_in_a_gzip_shard(tmp_path: Path, fast_config: dict[str, Any]) -> None:
    import gzip

    data = b"\xef\xbb\xbf" + b"".join(_lines(TEXTS, ending=b"\r\n"))
    src = tmp_path / "in" / "part.jsonl.gz"
    src.parent.mkdir(parents=True)
    src.write_bytes(gzip.compress(data, mtime=0))
    res = run_pipeline([str(src.parent)], tmp_path / "out", Config.from_dict(fast_config))
    assert res.report["input"]["malformed"] == 0
    assert gzip.decompress((tmp_path / "out" / "kept" / "part.jsonl.gz").read_bytes()) == data


@pytest.mark.parametrize("line, error", [
    (b'{"a": NaN, "text": "x"}', "malformed JSON"),
    (b'{"a": Infinity}', "malformed JSON"),
    (b'{"a": 1', "malformed JSON"),
    (b"[%d]" % BIG, "expected a JSON object, got list"),
])
def test_the_fallback_parser_accepts_only_json(line: bytes, error: str) -> None:
    obj, message = parse_json_line(line)
    assert obj is None and message is not None and message.startswith(error)


def test_a_bom_at_the_start_of_a_later_line_is_read_too(tmp_path: Path, fast_config: dict[str, Any]) -> None:
    lines = _lines(TEXTS)
    data = lines[0] + b"\xef\xbb\xbf" + lines[1]  # two files concatenated
    out, res = _run(tmp_path, data, fast_config)
    assert res.report["input"]["malformed"] == 0
    assert (out / "kept" / "part.jsonl").read_bytes() == data


def test_dump_json_line_falls_back_for_big_integers() -> None:
    assert dump_json_line({"a": 1}) == b'{"a":1}'
    assert json.loads(dump_json_line({"a": BIG, "t": "é"})) == {"a": BIG, "t": "é"}


def test_an_escaped_lone_surrogate_is_read_as_a_replacement_character(tmp_path: Path,
                                                                       fast_config: dict[str, Any]) -> None:
    # Valid JSON that no UTF-8 text can hold (half of an emoji, cut by a truncating exporter):
    # orjson refuses it, the standard library reads it as a lone surrogate, which cannot be encoded.
    line = b'{"id": "a", "text": "%s \\ud83d", "\\udc00key": ["\\ud800"]}\n' % TEXTS[0].encode()
    copy = line.replace(b'"a"', b'"b"')
    data = line + copy + _lines(TEXTS[1:2])[0]
    out, res = _run(tmp_path, data, fast_config)
    assert res.report["input"]["malformed"] == 0 and res.report["output"]["kept"] == 2
    assert (out / "kept" / "part.jsonl").read_bytes() == line + _lines(TEXTS[1:2])[0]  # as read
    rejected = json.loads((out / "rejected" / "part.jsonl").read_bytes())
    assert rejected["id"] == "b" and rejected["synthfilter"]["reason"] == "exact_duplicate"
    assert rejected["text"] == TEXTS[0] + " \ufffd" and rejected["\ufffdkey"] == ["\ufffd"]
    # An escaped pair is one character, untouched.
    obj, error = parse_json_line(b'{"text": "\\ud83d\\ude00 \\ud83d"}')
    assert error is None and obj == {"text": "\U0001f600 \ufffd"}
    # Nested as deep as the parser reads: replaced all the way down, without a RecursionError.
    depth = 900
    obj, error = parse_json_line(b'{"text": "a", "d": ' + b'[' * depth + b'{"\\ud800": "\\udc00"}' + b']' * depth + b'}')
    assert error is None
    inner = obj["d"]
    for _ in range(depth):
        inner = inner[0]
    assert inner == {"\ufffd": "\ufffd"}


def test_numbers_keep_their_text_in_rejected_and_annotated_lines(tmp_path: Path, fast_config: dict[str, Any]) -> None:
    # orjson reads 1e400 as infinity, 5e-400 as 0.0 and a 20-digit decimal as the nearest float;
    # written back from those, the record would change (or, infinity, stop being JSON).
    numbers = b'"x": 1e400, "z": 12345678901234567890.5, "w": 5e-400, "n": -0.0, "big": %d' % BIG
    first = b'{"id": "a", "text": "%s", %s}\n' % (TEXTS[0].encode(), numbers)
    copy = first.replace(b'"a"', b'"b"')
    # A lone surrogate is written as U+FFFD, so that line is written member by member: its
    # numbers keep their text all the same.
    odd = b'{"id": "c", "text": "%s \\ud83d", %s}\n' % (TEXTS[1].encode(), numbers)
    odd_copy = odd.replace(b'"c"', b'"d"')
    data = first + copy + odd + odd_copy
    out, res = _run(tmp_path, data, fast_config)
    assert res.report["output"]["rejected_by_reason"]["exact_duplicate"] == 2
    exact = {"parse_float": str, "parse_int": str}
    rejected = (out / "rejected" / "part.jsonl").read_bytes().splitlines()
    assert rejected[0] == copy.rstrip(b"}\n") + b',"synthfilter":' + orjson.dumps(
        json.loads(rejected[0])["synthfilter"]) + b"}"  # the line as read, one member added
    obj = json.loads(rejected[1], **exact)
    assert (obj["x"], obj["z"], obj["w"], obj["n"], obj["big"]) == ("1e400", "12345678901234567890.5", "5e-400",
                                                                   "-0.0", str(BIG))
    assert obj["id"] == "d" and obj["text"] == TEXTS[1] + " \ufffd" and obj["synthfilter"]["reason"] == "exact_duplicate"

    # --annotate: every line written with its synthfilter object; never NaN or Infinity, and the
    # output reads again as input (its synthfilter objects replaced, numbers as they were).
    out2, _ = _run(tmp_path / "annotated", data, fast_config, annotate=True)
    kept = (out2 / "kept" / "part.jsonl").read_bytes()
    assert b"Infinity" not in kept and b"NaN" not in kept
    assert kept.splitlines()[0].startswith(first.rstrip(b"}\n") + b',"synthfilter":{"decision":"kept"')
    again = tmp_path / "again"
    res3 = run_pipeline([str(out2 / "kept")], again, Config.from_dict({**fast_config, "annotate": True}))
    assert res3.report["input"]["malformed"] == 0 and res3.report["output"]["kept"] == 2
    for line in (again / "kept" / "part.jsonl").read_bytes().splitlines():
        obj = json.loads(line, **exact)
        assert (obj["x"], obj["z"], obj["w"], obj["big"]) == ("1e400", "12345678901234567890.5", "5e-400", str(BIG))
        assert line.count(b'"synthfilter"') == 1 and obj["synthfilter"]["decision"] == "kept"


def test_dump_json_line_never_writes_nan_or_infinity() -> None:
    assert dump_json_line({"a": BIG, "b": float("inf"), "c": [float("nan")]}) == b'{"a":%d,"b":null,"c":[null]}' % BIG
