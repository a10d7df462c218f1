"""Truncated and corrupt shards: every readable record goes through the pipeline, and each break
in the data is one malformed record that says where it broke and what was lost.

The shards are real files the tests write and then damage (cut short, bytes flipped, garbage
appended, a Parquet row group overwritten); what "readable" means is computed independently
with zlib / zstandard / pyarrow, not with synthfilter's reader.
"""

from __future__ import annotations

import gzip
import json
import zlib
from pathlib import Path

import orjson
import pyarrow as pa
import pyarrow.parquet as pq
import pytest
import zstandard

from helpers import damage_parquet_row_group, make_records, read_jsonl, run_cli
from synthfilter.config import Config
from synthfilter.io.shards import InputError, Shard, ShardReader
from synthfilter.pipeline.run import run_pipeline

QUARANTINE = {"on_error": "quarantine"}


def _lines(n: int, seed: int) -> list[bytes]:
    return [json.dumps(r).encode() for r in make_records(n, seed=seed)]


def _readable_gzip_prefix(data: bytes) -> bytes:
    """What any incremental gzip decoder gets out of a cut file (what zcat prints)."""
    return zlib.decompressobj(wbits=31).decompress(data)


def _run(src: Path, out: Path, fast_config: dict, **extra: object) -> tuple[dict, list[bytes], list[dict]]:
    res = run_pipeline([str(src)], out, Config.from_dict({**fast_config, **QUARANTINE, **extra}))
    kept_path = out / "kept" / src.name
    kept = read_jsonl(kept_path) if kept_path.exists() else []
    rej_path = out / "rejected" / src.name
    rejected = [orjson.loads(x) for x in read_jsonl(rej_path)] if rej_path.exists() else []
    return res.report, kept, rejected


def test_gzip_cut_in_half_keeps_every_complete_line(tmp_path: Path, fast_config: dict) -> None:
    lines = _lines(2000, seed=21)
    data = gzip.compress(b"".join(x + b"\n" for x in lines))
    src = tmp_path / "in" / "half.jsonl.gz"
    src.parent.mkdir()
    src.write_bytes(data[: len(data) // 2])
    prefix = _readable_gzip_prefix(src.read_bytes())
    complete, _, cut = prefix.rpartition(b"\n")
    readable = complete.split(b"\n")
    assert 900 < len(readable) < 1100 and cut  # the cut falls inside a line

    report, kept, rejected = _run(src, tmp_path / "out", fast_config)
    assert kept == readable == lines[: len(readable)]  # all of them, byte for byte, in order
    (tail,) = rejected
    sf = tail["synthfilter"]
    assert sf["reason"] == "malformed" and "truncated .gz" in sf["error"]
    assert f"byte {src.stat().st_size:,}" in sf["error"]  # where it broke: the end of the file
    assert sf["raw"].encode() == cut  # the line the break cut is kept, not lost
    assert sf["break"]["kind"] == "truncated" and sf["break"]["partial_line_bytes"] == len(cut)
    assert sf["source"]["line"] == len(readable) + 1
    assert report["input"]["records"] == len(readable) + 1  # readable records + one per break
    assert report["input"]["breaks"] == 1 and report["input"]["unreadable_bytes"] == len(cut)
    manifest = json.loads((tmp_path / "out" / "manifest.json").read_text())
    assert manifest["inputs"][0]["breaks"][0]["offset"] == src.stat().st_size
    assert manifest["conservation"]["ok"]


def test_truncated_zstd_keeps_what_was_decoded_and_says_how_much_is_missing(tmp_path: Path, fast_config: dict) -> None:
    lines = _lines(1500, seed=22)
    whole = b"".join(x + b"\n" for x in lines)
    data = zstandard.ZstdCompressor(level=3).compress(whole)
    src = tmp_path / "in" / "t.jsonl.zst"
    src.parent.mkdir()
    src.write_bytes(data[: len(data) * 2 // 3])
    try:
        prefix = zstandard.ZstdDecompressor().decompressobj().decompress(src.read_bytes())
    except zstandard.ZstdError:  # pragma: no cover - depends on where the cut falls
        pytest.fail("the cut made the prefix undecodable; choose another cut")
    readable = prefix.rpartition(b"\n")[0].split(b"\n")

    report, kept, rejected = _run(src, tmp_path / "out", fast_config)
    assert kept == readable
    (tail,) = rejected
    brk = tail["synthfilter"]["break"]
    assert brk["kind"] == "truncated" and brk["missing_bytes"] == len(whole) - len(prefix)
    assert f"{len(whole) - len(prefix):,} of its {len(whole):,} decoded bytes are missing" in tail["synthfilter"]["error"]
    assert report["input"]["records"] == len(readable) + 1


def _members(lines: list[bytes], per: int, compress) -> list[bytes]:
    return [compress(b"".join(x + b"\n" for x in lines[i:i + per])) for i in range(0, len(lines), per)]


@pytest.mark.parametrize("compression", ["gz", "zst"])
def test_corrupt_member_in_the_middle_and_reading_goes_on_after_it(tmp_path: Path, fast_config: dict,
                                                                    compression: str) -> None:
    lines = _lines(4000, seed=23)
    compress = (lambda d: gzip.compress(d, mtime=0)) if compression == "gz" else \
        zstandard.ZstdCompressor(level=3, write_checksum=True).compress
    parts = _members(lines, 1000, compress)
    blob = bytearray(b"".join(parts))
    start2 = len(parts[0])
    for k in range(start2 + len(parts[1]) // 2, start2 + len(parts[1]) // 2 + 40):
        blob[k] ^= 0xA5  # damage the middle of member / frame 2
    src = tmp_path / "in" / f"multi.jsonl.{compression}"
    src.parent.mkdir()
    src.write_bytes(bytes(blob))

    report, kept, rejected = _run(src, tmp_path / "out", fast_config)
    kept_set = set(kept)
    # Members 1, 3 and 4 are intact: every one of their records is kept.
    for intact in (lines[:1000], lines[2000:]):
        assert set(intact) <= kept_set
    breaks = [r for r in rejected if "break" in r["synthfilter"]]
    assert len(breaks) == 1
    brk = breaks[0]["synthfilter"]["break"]
    assert brk["kind"] == "corrupt" and start2 <= brk["offset"] < start2 + len(parts[1])
    assert brk["resumed_at"] == start2 + len(parts[1])  # the next member / frame
    assert f"byte {brk['offset']:,}" in breaks[0]["synthfilter"]["error"]
    assert report["input"]["records"] == len(kept) + len(rejected)
    assert report["input"]["breaks"] == 1


@pytest.mark.parametrize("compression", ["gz", "zst"])
def test_trailing_garbage_and_data_that_is_not_compressed(tmp_path: Path, fast_config: dict, compression: str) -> None:
    lines = _lines(300, seed=24)
    body = b"".join(x + b"\n" for x in lines)
    data = gzip.compress(body) if compression == "gz" else zstandard.ZstdCompressor().compress(body)
    src = tmp_path / "in" / f"g.jsonl.{compression}"
    src.parent.mkdir()
    src.write_bytes(data + b"appended by mistake\n")
    _, kept, rejected = _run(src, tmp_path / "o1", fast_config)
    assert kept == lines
    (brk,) = rejected
    assert f"starts at byte {len(data):,}" in brk["synthfilter"]["error"]
    assert brk["synthfilter"]["break"]["unreadable_bytes"] == len(b"appended by mistake\n")

    src.write_bytes(body)  # plain text under a compressed name
    _, kept, rejected = _run(src, tmp_path / "o2", fast_config)
    assert kept == [] and len(rejected) == 1
    assert rejected[0]["synthfilter"]["break"]["unreadable_bytes"] == len(body)


def test_fail_mode_names_shard_and_offset_in_one_line(tmp_path: Path) -> None:
    data = gzip.compress(b"".join(x + b"\n" for x in _lines(800, seed=25)))
    src = tmp_path / "in" / "cut.jsonl.gz"
    src.parent.mkdir()
    src.write_bytes(data[: len(data) // 2])
    code, _, err = run_cli(["run", str(src), "--out", str(tmp_path / "out"), "--no-detector", "--no-near-dedup", "-q"])
    assert code == 2 and "Traceback" not in err
    (line,) = err.strip().splitlines()
    assert str(src) in line and f"byte {src.stat().st_size:,}" in line and "--on-error quarantine" in line
    readable = _readable_gzip_prefix(src.read_bytes()).count(b"\n")
    assert f"keep the {readable:,} records before it" in line


def test_reader_without_recovery_raises_after_the_records_before_the_break(tmp_path: Path) -> None:
    lines = _lines(500, seed=26)
    data = gzip.compress(b"".join(x + b"\n" for x in lines))
    p = tmp_path / "x.jsonl.gz"
    p.write_bytes(data[: len(data) // 2])
    reader = ShardReader(Shard(p, p.name, "jsonl", "gz"))
    got = []
    with pytest.raises(InputError, match=r"truncated \.gz file"):
        for rec in reader:
            got.append(rec.raw)
    assert got == lines[: len(got)] and len(got) == _readable_gzip_prefix(p.read_bytes()).count(b"\n")


def _damaged_parquet(path: Path, n: int = 4000, group: int = 1000, damage: int = 3) -> list[dict]:
    rows = make_records(n, seed=27)
    pq.write_table(pa.Table.from_pylist(rows), path, row_group_size=group)
    damage_parquet_row_group(path, damage)
    return rows


@pytest.mark.parametrize("damage", [3, 1])
def test_parquet_keeps_every_readable_row_group(tmp_path: Path, fast_config: dict, damage: int) -> None:
    src = tmp_path / "in" / "p.parquet"
    src.parent.mkdir()
    rows = _damaged_parquet(src, damage=damage)
    with pytest.raises(Exception):
        pq.read_table(src)  # pyarrow itself cannot read the file as a whole

    res = run_pipeline([str(src)], tmp_path / "out", Config.from_dict({**fast_config, **QUARANTINE}))
    kept = pq.read_table(tmp_path / "out" / "kept" / "p.parquet").to_pylist()
    lost = range(damage * 1000, (damage + 1) * 1000)
    assert kept == [r for i, r in enumerate(rows) if i not in lost]  # same values, same order
    (rej,) = pq.read_table(tmp_path / "out" / "rejected" / "p.parquet").to_pylist()
    error = rej["synthfilter"]["error"]
    assert rej["synthfilter"]["reason"] == "malformed"
    # Where it was: the shard and the first row it lost (rejected/ has no row numbers of its own).
    assert rej["synthfilter"]["source"] == {"file": "p.parquet", "row": damage * 1000 + 1}
    assert f"row group {damage + 1} of 4" in error and f"rows {damage * 1000 + 1:,}-{(damage + 1) * 1000:,}" in error
    assert res.report["input"]["records"] == 3001 and res.report["input"]["breaks"] == 1
    assert res.report["input"]["unreadable_bytes"] > 0

    code, _, err = run_cli(["run", str(src), "--out", str(tmp_path / "o2"), "--no-detector", "--no-near-dedup", "-q"])
    assert code == 2 and len(err.strip().splitlines()) == 1
    assert str(src) in err and f"row group {damage + 1} of 4" in err


def test_recovered_shards_are_identical_with_two_workers(tmp_path: Path, fast_config: dict) -> None:
    lines = _lines(1200, seed=28)
    data = gzip.compress(b"".join(x + b"\n" for x in lines))
    inp = tmp_path / "in"
    for i in range(3):
        p = inp / f"s{i}.jsonl.gz"
        p.parent.mkdir(exist_ok=True)
        p.write_bytes(data[: len(data) * (i + 1) // 4])
    _damaged_parquet(inp / "p.parquet", n=2000, damage=0)
    outs = []
    for workers in (1, 2):
        out = tmp_path / f"w{workers}"
        run_pipeline([str(inp)], out, Config.from_dict({**fast_config, **QUARANTINE, "workers": workers}))
        outs.append({p.relative_to(out).as_posix(): p.read_bytes() for p in sorted(out.rglob("*"))
                     if p.is_file() and p.parent.name in ("kept", "rejected")})
    assert outs[0] == outs[1] and len(outs[0]) == 8
