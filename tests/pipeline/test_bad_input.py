"""Bad input: a one-line error naming file and line (exit 2), or quarantine; never a traceback."""

from __future__ import annotations

import gzip
import json
from pathlib import Path

import orjson
import pytest
import zstandard
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from helpers import FifoFeeder, make_records, read_jsonl, run_cli, write_jsonl
from synthfilter.config import Config
from synthfilter.io.shards import InputError
from synthfilter.pipeline.run import run_pipeline

GOOD = make_records(6, seed=11)


def _good_lines() -> list[bytes]:
    return [json.dumps(r).encode() for r in GOOD]


def _gz_truncated(path: Path) -> None:
    data = gzip.compress(b"".join(json.dumps(r).encode() + b"\n" for r in make_records(400, seed=2)))
    path.write_bytes(data[: len(data) // 2])


def _gz_member(seed: int) -> bytes:
    return gzip.compress(b"".join(json.dumps(r).encode() + b"\n" for r in make_records(300, seed=seed)), mtime=0)


def _gz_crc_mismatch(path: Path) -> None:
    """Two members, the second with a byte flipped that zlib decodes (into other bytes) without
    an error until its CRC check fails at its end."""
    import zlib

    member = _gz_member(3)
    for at in range(len(member) // 2, len(member) - 8):
        damaged = bytearray(member)
        damaged[at] ^= 0x10
        try:
            zlib.decompress(bytes(damaged), 31)
        except zlib.error as e:
            if "incorrect data check" in str(e):
                path.write_bytes(_gz_member(4) + bytes(damaged))
                return
    raise AssertionError("no flip fails only the CRC")  # pragma: no cover


def _gz_member_cut_short(path: Path) -> None:
    """A member cut at two thirds, then an intact member."""
    first = _gz_member(5)
    path.write_bytes(first[: len(first) * 2 // 3] + _gz_member(6))


def _zst_truncated(path: Path) -> None:
    data = zstandard.ZstdCompressor().compress(b"".join(json.dumps(r).encode() + b"\n" for r in make_records(400, seed=2)))
    path.write_bytes(data[: len(data) // 2])


BAD_LINES = {
    "malformed JSON": (b'{"text": "unterminated', "malformed JSON"),
    "invalid UTF-8": (b'{"text": "caf\xe9 au lait"}', "invalid UTF-8"),
    "missing text": (b'{"body": "no text field here"}', "missing text field 'text'"),
    "non-string text": (b'{"text": 42}', "is int, expected a string"),
    "null text": (b'{"text": null}', "is null, expected a string"),
    "empty text": (b'{"text": "   "}', "is empty"),
    # Nothing a reader sees: zero-width space, BOM, soft hyphen, no-break space (a CMS's empty body)
    "invisible text": (b'{"text": "\\u200b\\ufeff \\u00ad\\u00a0"}', "is empty"),
    "not an object": (b'["text", "in a list"]', "expected a JSON object"),
}


@pytest.mark.parametrize("case", sorted(BAD_LINES))
def test_bad_line_fails_with_one_line_error(tmp_path: Path, case: str) -> None:
    bad, expected = BAD_LINES[case]
    src = write_jsonl(tmp_path / "in" / "shard.jsonl", _good_lines()[:3] + [bad] + _good_lines()[3:])
    code, out, err = run_cli(["run", str(src), "--out", str(tmp_path / "out"), "--no-detector", "--no-near-dedup", "-q"])
    assert code == 2
    assert "Traceback" not in err
    lines = err.strip().splitlines()
    assert len(lines) == 1, err
    assert f"{src}:4:" in lines[0] and expected in lines[0]
    assert "quarantine" in lines[0]  # says what to do


@pytest.mark.parametrize("case", sorted(BAD_LINES))
def test_bad_line_is_quarantined(tmp_path: Path, case: str, fast_config: dict) -> None:
    bad, expected = BAD_LINES[case]
    src = write_jsonl(tmp_path / "in" / "shard.jsonl", _good_lines()[:3] + [bad] + _good_lines()[3:])
    res = run_pipeline([str(src)], tmp_path / "out", Config.from_dict({**fast_config, "on_error": "quarantine"}))
    kept = read_jsonl(tmp_path / "out" / "kept" / "shard.jsonl")
    (rej,) = [orjson.loads(x) for x in read_jsonl(tmp_path / "out" / "rejected" / "shard.jsonl")]
    assert kept == _good_lines()
    assert rej["synthfilter"]["reason"] == "malformed"
    assert expected in rej["synthfilter"]["error"]
    # Every malformed record says where it was (a parsed object without usable text too).
    assert rej["synthfilter"]["source"] == {"file": "shard.jsonl", "line": 4,
                                            "byte_offset": sum(len(x) + 1 for x in _good_lines()[:3])}
    if "raw" not in rej["synthfilter"]:  # parsed: the object is kept as it was
        assert {k: v for k, v in rej.items() if k != "synthfilter"} == orjson.loads(bad)
    assert res.report["input"]["malformed"] == 1


FILE_CASES = {
    "truncated gz": ("t.jsonl.gz", _gz_truncated, "truncated .gz"),
    "truncated zst": ("t.jsonl.zst", _zst_truncated, "truncated .zst"),
    "gz member failing its CRC": ("c.jsonl.gz", _gz_crc_mismatch, "fails its CRC check"),
    "gz member cut short before another": ("m.jsonl.gz", _gz_member_cut_short, "where another gzip member starts"),
    "empty file": ("e.jsonl", lambda p: p.write_bytes(b""), "empty file"),
    "not parquet": ("p.parquet", lambda p: p.write_bytes(b"this is not parquet at all"), "not a readable Parquet"),
    "unknown extension": ("data.txt", lambda p: p.write_text("hello"), "unknown extension"),
}


@pytest.mark.parametrize("case", sorted(FILE_CASES))
def test_bad_file_fails_with_one_line_error(tmp_path: Path, case: str) -> None:
    name, make, expected = FILE_CASES[case]
    src = tmp_path / "in" / name
    src.parent.mkdir()
    make(src)
    code, out, err = run_cli(["run", str(src), "--out", str(tmp_path / "out"), "--no-detector", "--no-near-dedup", "-q"])
    assert code == 2, err
    assert "Traceback" not in err
    assert len(err.strip().splitlines()) == 1, err
    assert str(src) in err and expected in err


def test_usage_errors_are_one_line(tmp_path: Path) -> None:
    src = write_jsonl(tmp_path / "in" / "a.jsonl", _good_lines())
    cases = [
        (["run", str(tmp_path / "missing.jsonl"), "--out", str(tmp_path / "o1")], "does not exist"),
        (["run", str(tmp_path / "in"), "--out", str(tmp_path / "in" / "o")], "inside input directory"),
    ]
    (tmp_path / "full").mkdir()
    (tmp_path / "full" / "x").write_text("x")
    cases.append((["run", str(src), "--out", str(tmp_path / "full")], "not empty"))
    # Checked before any work: a seed numpy refuses used to fail the run at its report (exit 3).
    cases += [(["run", str(src), "--out", str(tmp_path / f"s{s}"), "--seed", s], "seed must be an integer in [0, ")
              for s in ("-1", str(2**32))]
    for args, expected in cases:
        code, _, err = run_cli([*args, "--no-detector", "--no-near-dedup", "-q"])
        assert code == 2 and expected in err and "Traceback" not in err
        assert len(err.strip().splitlines()) == 1


def test_a_device_is_refused_and_a_named_pipe_is_read_with_a_note(tmp_path: Path) -> None:
    # Each input is read twice (score, then write). A device (a link to /dev/null named like a
    # shard) is refused before anything is read; a named pipe is read, with a note at the start
    # that what feeds it must write its data once for each read (else the run waits, and the
    # note says why).
    import os

    (tmp_path / "dev").mkdir()
    os.symlink("/dev/null", tmp_path / "dev" / "null.jsonl")
    for args in ([str(tmp_path / "dev" / "null.jsonl")], [str(tmp_path / "dev")]):
        out = tmp_path / f"o{len(args[0])}"
        code, _, err = run_cli(["run", *args, "--out", str(out), "--no-detector", "--no-near-dedup", "-q"])
        assert code == 2 and len(err.strip().splitlines()) == 1, err
        assert "null.jsonl: a character device, not a regular file: synthfilter reads each input more than once" in err
        assert not out.exists()
    data = b"".join(line + b"\n" for line in _good_lines())
    os.mkfifo(tmp_path / "pipe.jsonl")

    feeder = FifoFeeder(tmp_path / "pipe.jsonl", data)  # the same data once per open, until stopped
    feeder.start()
    try:
        code, out, err = run_cli(["run", str(tmp_path / "pipe.jsonl"), "--out", str(tmp_path / "piped"),
                                  "--no-detector", "--no-near-dedup"])
    finally:
        feeder.stop.set()
    assert code == 0, err
    assert f"note: {tmp_path / 'pipe.jsonl'}: a named pipe; a run opens each input more than once" in out + err
    assert read_jsonl(tmp_path / "piped" / "kept" / "pipe.jsonl") == list(_good_lines())
    feeder.join(timeout=10)


def test_truncated_gz_tail_is_quarantined(tmp_path: Path, fast_config: dict) -> None:
    src = tmp_path / "in" / "t.jsonl.gz"
    src.parent.mkdir()
    _gz_truncated(src)
    res = run_pipeline([str(src)], tmp_path / "out", Config.from_dict({**fast_config, "on_error": "quarantine"}))
    rej = [orjson.loads(x) for x in read_jsonl(tmp_path / "out" / "rejected" / "t.jsonl.gz")]
    assert rej[-1]["synthfilter"]["reason"] == "malformed"
    assert "truncated" in rej[-1]["synthfilter"]["error"]
    m = json.loads((tmp_path / "out" / "manifest.json").read_text())
    assert m["inputs"][0]["records"] == res.report["output"]["kept"] + res.report["output"]["rejected"]


def test_damaged_gz_members_are_quarantined(tmp_path: Path, fast_config: dict) -> None:
    first, second = [json.dumps(r).encode() for r in make_records(300, seed=4)], \
        [json.dumps(r).encode() for r in make_records(300, seed=6)]
    cases = (("c.jsonl.gz", _gz_crc_mismatch, first), ("m.jsonl.gz", _gz_member_cut_short, None))
    for name, make, kept_expected in cases:
        src = tmp_path / "in" / name
        src.parent.mkdir(exist_ok=True)
        make(src)
        out = tmp_path / f"out-{name}"
        res = run_pipeline([str(src)], out, Config.from_dict({**fast_config, "on_error": "quarantine"}))
        kept = read_jsonl(out / "kept" / name)
        rej = [orjson.loads(x) for x in read_jsonl(out / "rejected" / name)]
        if kept_expected is not None:
            assert kept == kept_expected  # nothing from the member that fails its CRC
        else:
            cut_member = [json.dumps(r).encode() for r in make_records(300, seed=5)]
            assert kept[-300:] == second  # the intact member after the cut, whole
            assert 0 < len(kept) - 300 < 300 and kept[:-300] == cut_member[: len(kept) - 300]  # before the cut
        (brk,) = [r for r in rej if "break" in r["synthfilter"]]
        assert brk["synthfilter"]["reason"] == "malformed"
        m = json.loads((out / "manifest.json").read_text())
        assert m["conservation"]["ok"] and len(m["inputs"][0]["breaks"]) == 1
        assert m["inputs"][0]["records"] == res.report["output"]["kept"] + res.report["output"]["rejected"]


def test_oversized_line(tmp_path: Path, fast_config: dict) -> None:
    big = b'{"text": "' + b"word " * 5000 + b'"}'
    src = write_jsonl(tmp_path / "in" / "big.jsonl", _good_lines()[:2] + [big] + _good_lines()[2:])
    cfg = {**fast_config, "max_line_bytes": 4096}
    with pytest.raises(InputError, match=r"big.jsonl:3: line is 25,\d+ bytes, over the 4,096-byte limit"):
        run_pipeline([str(src)], tmp_path / "o1", Config.from_dict(cfg))
    run_pipeline([str(src)], tmp_path / "o2", Config.from_dict({**cfg, "on_error": "quarantine"}))
    assert read_jsonl(tmp_path / "o2" / "kept" / "big.jsonl") == _good_lines()
    (rej,) = [orjson.loads(x) for x in read_jsonl(tmp_path / "o2" / "rejected" / "big.jsonl")]
    assert rej["synthfilter"]["source"]["byte_offset"] == sum(len(x) + 1 for x in _good_lines()[:2])
    # Only the line's first bytes are kept, and the record says so (and how long the line is).
    assert rej["synthfilter"]["raw"].encode() == big[:1024]
    assert rej["synthfilter"]["raw_truncated"] is True and rej["synthfilter"]["raw_bytes"] == len(big) + 1


# -- property-based: arbitrary bytes and JSON values never crash, and conservation holds ------------

json_values = st.recursive(
    st.none() | st.booleans() | st.integers() | st.floats(allow_nan=False) | st.text(max_size=30),
    lambda children: st.lists(children, max_size=3) | st.dictionaries(st.text(max_size=5), children, max_size=3),
    max_leaves=8,
)
records = st.one_of(
    st.binary(max_size=60),
    json_values.map(lambda v: json.dumps(v).encode()),
    st.dictionaries(st.sampled_from(["text", "id", "x"]), json_values, max_size=3).map(lambda d: json.dumps(d).encode()),
    st.text(min_size=1, max_size=40).map(lambda t: json.dumps({"text": t}).encode()),
)


@settings(max_examples=60, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(lines=st.lists(records, min_size=0, max_size=12), compression=st.sampled_from([None, "gz", "zst"]))
def test_arbitrary_input_is_error_or_quarantine(tmp_path_factory: pytest.TempPathFactory, fast_config: dict,
                                                lines: list[bytes], compression: str | None) -> None:
    base = tmp_path_factory.mktemp("prop")
    suffix = {None: ".jsonl", "gz": ".jsonl.gz", "zst": ".jsonl.zst"}[compression]
    # Raw bytes may contain newlines: the file is whatever those bytes make.
    src = base / "in" / f"s{suffix}"
    write_jsonl(src, lines, compression)
    try:
        run_pipeline([str(src)], base / "fail", Config.from_dict(fast_config))
    except InputError as e:
        assert str(src) in str(e) and "\n" not in str(e)
    res = None
    try:
        res = run_pipeline([str(src)], base / "q", Config.from_dict({**fast_config, "on_error": "quarantine"}))
    except InputError as e:  # only whole-file problems remain errors under quarantine
        pytest.fail(f"quarantine raised: {e}")
    m = json.loads((base / "q" / "manifest.json").read_text())
    total = m["inputs"][0]["records"]
    kept = read_jsonl(base / "q" / "kept" / f"s{suffix}")
    rej_path = base / "q" / "rejected" / f"s{suffix}"
    rejected = read_jsonl(rej_path) if rej_path.exists() else []
    assert len(kept) + len(rejected) == total == res.report["input"]["records"]


def test_bad_record_in_a_worker_process_is_the_same_one_line_error(tmp_path: Path, fast_config: dict) -> None:
    import pickle

    e = pickle.loads(pickle.dumps(InputError("x.jsonl", "malformed JSON", 4)))
    assert str(e) == "x.jsonl:4: malformed JSON" and e.line == 4
    for i in range(3):
        write_jsonl(tmp_path / "in" / f"s{i}.jsonl", _good_lines() + ([b'{"text": broken'] if i == 1 else []))
    with pytest.raises(InputError, match=r"s1.jsonl:7: malformed JSON"):
        run_pipeline([str(tmp_path / "in")], tmp_path / "out", Config.from_dict({**fast_config, "workers": 2}))


def test_an_empty_input_read_under_quarantine_is_named_in_the_warnings(tmp_path: Path, fast_config: dict) -> None:
    # Under --on-error quarantine an empty file was noted only in manifest.json.
    write_jsonl(tmp_path / "in" / "a.jsonl", _good_lines())
    (tmp_path / "in" / "b.jsonl").write_bytes(b"")
    res = run_pipeline([str(tmp_path / "in")], tmp_path / "out", Config.from_dict({**fast_config, "on_error": "quarantine"}))
    assert "1 input file held no record: b.jsonl" in res.report["warnings"]
    res = run_pipeline([str(tmp_path / "in" / "a.jsonl")], tmp_path / "out2", Config.from_dict(fast_config))
    assert not [w for w in res.report["warnings"] if "held no record" in w]
