"""Finding shards through symbolic links to directories, and shards whose first bytes contradict
their name (plain JSONL named .gz, gzip named .jsonl, ...): a name to change, said so in one line."""

from __future__ import annotations

import gzip
import json
from pathlib import Path
from typing import Any

import orjson
import pytest
import zstandard

from helpers import read_jsonl, run_cli, write_jsonl
from synthfilter.config import Config
from synthfilter.io.shards import InputError, Shard, ShardReader, discover_shards
from synthfilter.pipeline.run import run_pipeline

RECORDS = [{"id": f"r{i}", "text": f"note {i} on the tide tables and the harbour wall"} for i in range(5)]


def _body() -> bytes:
    return b"".join(json.dumps(r).encode() + b"\n" for r in RECORDS)


# -- symbolic links to directories ----------------------------------------------------------------


def test_linked_directories_are_read_once_each(tmp_path: Path, fast_config: dict[str, Any]) -> None:
    inp = tmp_path / "in"
    write_jsonl(inp / "a" / "x.jsonl", RECORDS[:2])
    elsewhere = write_jsonl(tmp_path / "elsewhere" / "deep" / "y.jsonl", RECORDS[2:]).parent.parent
    (inp / "linked").symlink_to(elsewhere, target_is_directory=True)
    (inp / "zlinked").symlink_to(elsewhere, target_is_directory=True)  # the same directory again
    (inp / "0").symlink_to(inp / "a", target_is_directory=True)  # a directory of the input, again
    shards, ignored = discover_shards([inp])
    assert [s.rel for s in shards] == ["a/x.jsonl", "linked/deep/y.jsonl"] and ignored == []

    res = run_pipeline([str(inp)], tmp_path / "out", Config.from_dict(fast_config))
    assert res.report["output"]["kept"] == 5
    assert len(read_jsonl(tmp_path / "out" / "kept" / "linked" / "deep" / "y.jsonl")) == 3


def test_a_link_back_to_a_directory_that_holds_it_is_an_error(tmp_path: Path) -> None:
    inp = tmp_path / "in"
    write_jsonl(inp / "a" / "x.jsonl", RECORDS)
    (inp / "a" / "up").symlink_to(inp, target_is_directory=True)
    with pytest.raises(InputError, match=r"a/up: symbolic link loop \(to .*in\).*; remove it"):
        discover_shards([inp])
    (inp / "a" / "up").unlink()
    (inp / "a" / "self").symlink_to(".", target_is_directory=True)
    with pytest.raises(InputError, match=r"a/self: symbolic link loop"):
        discover_shards([inp])


# -- names the first bytes contradict --------------------------------------------------------------


def _zst(data: bytes) -> bytes:
    return zstandard.ZstdCompressor().compress(data)


@pytest.mark.parametrize("name, data, message", [
    ("x.jsonl.gz", _body(), "x.jsonl.gz is not gzip: it starts like plain JSONL; rename it x.jsonl"),
    ("x.jsonl.gz", b"\xef\xbb\xbf" + _body(), "x.jsonl.gz is not gzip: it starts like plain JSONL; rename it x.jsonl"),
    ("x.jsonl.zst", b"\n" + _body(), "x.jsonl.zst is not zstd: it starts like plain JSONL; rename it x.jsonl"),
    ("x.jsonl.gz", _zst(_body()), "x.jsonl.gz is not gzip: it starts with zstd's magic bytes; rename it x.jsonl.zst"),
    ("x.jsonl.zst", gzip.compress(_body()),
     "x.jsonl.zst is not zstd: it starts with gzip's magic bytes; rename it x.jsonl.gz"),
    ("x.jsonl", gzip.compress(_body()),
     "x.jsonl starts with gzip's magic bytes (1f 8b), so it is gzip-compressed: name it x.jsonl.gz"),
    ("x.jsonl", _zst(_body()),
     "x.jsonl starts with zstd's magic bytes (28 b5 2f fd), so it is zstd-compressed: name it x.jsonl.zst"),
])
def test_a_name_the_first_bytes_contradict_is_said_so(tmp_path: Path, name: str, data: bytes, message: str) -> None:
    p = tmp_path / name
    p.write_bytes(data)
    compression = {"x.jsonl": None, "x.jsonl.gz": "gz", "x.jsonl.zst": "zst"}[name]
    with pytest.raises(InputError) as e:
        list(ShardReader(Shard(p, name, "jsonl", compression)))
    assert str(e.value) == f"{p}: {message}"


def test_misnamed_shards_in_a_run(tmp_path: Path, fast_config: dict[str, Any]) -> None:
    plain = tmp_path / "in" / "plain.jsonl.gz"
    plain.parent.mkdir()
    plain.write_bytes(_body())
    code, _, err = run_cli(["run", str(plain), "--out", str(tmp_path / "o1"), "--no-detector", "--no-near-dedup", "-q"])
    assert code == 2 and "Traceback" not in err
    (line,) = err.strip().splitlines()
    assert line.endswith("plain.jsonl.gz is not gzip: it starts like plain JSONL; rename it plain.jsonl")

    packed = tmp_path / "in2" / "packed.jsonl"
    packed.parent.mkdir()
    packed.write_bytes(gzip.compress(_body()))
    code, _, err = run_cli(["run", str(packed), "--out", str(tmp_path / "o2"), "--no-detector", "--no-near-dedup", "-q"])
    assert code == 2
    (line,) = err.strip().splitlines()
    assert line.endswith("packed.jsonl starts with gzip's magic bytes (1f 8b), so it is gzip-compressed: "
                         "name it packed.jsonl.gz")

    # Quarantined: one malformed record that says why (the file's bytes are all its break's).
    res = run_pipeline([str(plain)], tmp_path / "o3", Config.from_dict({**fast_config, "on_error": "quarantine"}))
    (rec,) = [orjson.loads(x) for x in read_jsonl(tmp_path / "o3" / "rejected" / "plain.jsonl.gz")]
    assert rec["synthfilter"]["error"] == "plain.jsonl.gz is not gzip: it starts like plain JSONL; rename it plain.jsonl"
    assert rec["synthfilter"]["break"]["kind"] == "misnamed"
    assert rec["synthfilter"]["break"]["unreadable_bytes"] == len(_body())
    assert res.report["input"]["records"] == 1

    # A file that is neither is still corrupt, in the words of before.
    for name, message in (("x.jsonl.gz", "corrupt .gz file: no gzip member starts at byte 0"),
                          ("x.jsonl.zst", "corrupt .zst file: no zstd frame starts at byte 0")):
        p = tmp_path / name
        p.write_bytes(b"garbage, and neither gzip nor zstd\n")
        with pytest.raises(InputError, match=message):
            list(ShardReader(Shard(p, name, "jsonl", name.rsplit(".", 1)[1])))
