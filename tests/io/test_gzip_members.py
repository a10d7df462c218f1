"""gzip members that fail their checks, and members cut short and followed by another.

zlib checks a member's CRC-32 only at its end, and damaged deflate data often decodes without an
error into other bytes until then: none of such a member's records may be kept as if good. A
member cut short and followed by another is decoded into the next one's bytes before zlib
notices: what it held before the cut is read, then the next member, whole, and nothing decoded
from the next member's bytes as if they were the cut one's.

The files are written and damaged here; what is readable is computed independently with zlib.
"""

from __future__ import annotations

import gzip
import json
import os
import random
import zlib
from pathlib import Path
from typing import Any

import pytest

from helpers import (
    assert_nothing_damaged_kept, damaged, make_records, read_through_fifo, run_cli, run_quarantined,
)
from synthfilter.io import shards
from synthfilter.io.shards import Shard, ShardReader



def _lines(n: int, seed: int) -> list[bytes]:
    return [json.dumps(r).encode() for r in make_records(n, seed=seed)]


def _member(lines: list[bytes]) -> bytes:
    return gzip.compress(b"".join(x + b"\n" for x in lines), mtime=0)


def _zlib_error(data: bytes) -> str | None:
    """zlib's error decoding one member, None when it decodes and checks."""
    try:
        d = zlib.decompressobj(wbits=31)
        d.decompress(data)
        return None if d.eof else "ends early"
    except zlib.error as e:
        return str(e)


def _crc_damaged(member: bytes) -> bytes:
    """``member`` with one byte near its middle flipped such that zlib decodes it to the end
    without a deflate error and only its CRC check fails (what the audit found: damaged
    records read as good)."""
    for at in range(len(member) // 2, len(member) - 8):
        damaged = bytearray(member)
        damaged[at] ^= 0x10
        if "incorrect data check" in (_zlib_error(bytes(damaged)) or ""):
            return bytes(damaged)
    raise AssertionError("no single-byte flip fails only the CRC")  # pragma: no cover


def _deflate_damaged(member: bytes) -> bytes:
    """``member`` with one byte flipped such that zlib stops at an error in the deflate data
    (not at the CRC check): as far in as that happens (zlib finds bad data early in a member,
    a back-reference before its start; later, it mostly decodes damage into other bytes)."""
    for at in range(len(member) // 4, 10, -1):
        damaged = bytearray(member)
        damaged[at] ^= 0xFF
        error = _zlib_error(bytes(damaged)) or "check"
        if "check" not in error and error != "ends early":
            return bytes(damaged)
    raise AssertionError("no such flip")  # pragma: no cover


def _overrun_damaged(member: bytes) -> bytes:
    """``member`` with 8 bytes flipped such that zlib reads on past its trailer, without an
    error, as if it were cut short."""
    for at in range(len(member) // 3, len(member) - 8):
        damaged = bytearray(member)
        for k in range(at, at + 8):
            damaged[k] ^= 0xFF
        if _zlib_error(bytes(damaged)) == "ends early":
            return bytes(damaged)
    raise AssertionError("no such flip")  # pragma: no cover


def _readable_prefix(cut_member: bytes) -> tuple[list[bytes], bytes]:
    """The complete lines zlib decodes from a member cut short, and the line the cut splits."""
    prefix = zlib.decompressobj(wbits=31).decompress(cut_member)
    complete, _, cut = prefix.rpartition(b"\n")
    return (complete.split(b"\n") if complete else []), cut


def _damaged_file(path: Path, n: int, seed: int, damage: Any) -> tuple[list[list[bytes]], list[bytes]]:
    """A .jsonl.gz of members of 600 records each, the second one passed through ``damage``:
    (each member's lines, each member's bytes as written)."""
    lines = _lines(n, seed=seed)
    groups = [lines[i:i + 600] for i in range(0, n, 600)]
    members = [_member(g) for g in groups]
    members[1] = damage(members[1])
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_bytes(b"".join(members))
    return groups, members


def _run(src: Path, out: Path, fast_config: dict) -> tuple[dict, list[bytes], list[dict], dict]:
    return run_quarantined(src, out, fast_config)


def _fail_line(src: Path, out: Path) -> str:
    code, _, err = run_cli(["run", str(src), "--out", str(out), "--no-detector", "--no-near-dedup", "-q"])
    assert code == 2 and "Traceback" not in err, err
    (line,) = err.strip().splitlines()
    assert str(src) in line
    return line


# -- B1: a member that fails its CRC check -----------------------------------------------------


def test_single_member_failing_its_crc_keeps_nothing_from_it(tmp_path: Path, fast_config: dict) -> None:
    lines = _lines(1500, seed=41)
    member = _member(lines)
    damaged = _crc_damaged(member)
    # What a streaming reader sees: the member decodes to the end, to lines that are not all the
    # original ones, and only then does zlib say the CRC does not match.
    decoded = zlib.decompressobj(wbits=31).decompress(damaged[:-8])
    assert set(decoded.split(b"\n")) - set(lines) - {b""}
    src = tmp_path / "in" / "crc.jsonl.gz"
    src.parent.mkdir()
    src.write_bytes(damaged)

    report, kept, rejected, manifest = _run(src, tmp_path / "out", fast_config)
    assert kept == []  # none of the member's records can be trusted
    (brk,) = rejected
    sf = brk["synthfilter"]
    assert sf["reason"] == "malformed" and "CRC mismatch" in sf["error"] and "gzip member at byte 0" in sf["error"]
    assert sf["break"]["kind"] == "corrupt" and sf["break"]["offset"] == 0
    assert sf["break"]["unreadable_bytes"] == len(damaged)
    assert sf["break"]["untrusted_bytes"] == len(decoded)  # the decoded bytes set aside, not "0-0"
    assert f"{len(decoded):,} bytes" in sf["error"]
    assert report["input"]["records"] == 1 and report["input"]["breaks"] == 1
    assert manifest["inputs"][0]["breaks"][0]["untrusted_bytes"] == len(decoded)

    line = _fail_line(src, tmp_path / "fail")
    assert "corrupt .gz data" in line and "CRC mismatch" in line and "malformed JSON" not in line


def test_member_failing_its_crc_between_intact_ones(tmp_path: Path, fast_config: dict) -> None:
    src = tmp_path / "in" / "multi.jsonl.gz"
    groups, members = _damaged_file(src, 2400, 42, _crc_damaged)
    start2 = len(members[0])

    report, kept, rejected, _ = _run(src, tmp_path / "out", fast_config)
    assert kept == groups[0] + groups[2] + groups[3]  # the intact members, whole and in order
    (brk,) = rejected
    b = brk["synthfilter"]["break"]
    assert b["kind"] == "corrupt" and b["offset"] == start2 and b["resumed_at"] == start2 + len(members[1])
    assert b["unreadable_bytes"] == len(members[1])
    assert "reading went on at the next gzip member" in brk["synthfilter"]["error"]
    assert report["input"]["records"] == 1801

    line = _fail_line(src, tmp_path / "fail")
    assert f"gzip member at byte {start2:,} fails its CRC check" in line
    assert "keep the 600 records before it" in line


def test_bad_deflate_data_keeps_nothing_from_its_member(tmp_path: Path, fast_config: dict) -> None:
    src = tmp_path / "in" / "deflate.jsonl.gz"
    groups, members = _damaged_file(src, 1800, 43, _deflate_damaged)
    decoder, decoded_before = zlib.decompressobj(wbits=31), b""
    with pytest.raises(zlib.error):
        for k in range(0, len(members[1]), 16):
            decoded_before += decoder.decompress(members[1][k:k + 16])
    assert decoded_before.count(b"\n") > 20  # records decoded before zlib finds the error

    _, kept, rejected, _ = _run(src, tmp_path / "out", fast_config)
    assert kept == groups[0] + groups[2]
    (brk,) = rejected
    assert "cannot be decoded at byte" in brk["synthfilter"]["error"]
    assert brk["synthfilter"]["break"]["resumed_at"] == len(members[0]) + len(members[1])


def test_damaged_member_read_on_past_its_trailer_is_not_taken_for_one_cut_short(tmp_path: Path,
                                                                               fast_config: dict) -> None:
    # zlib decodes the damaged member on into the next one's bytes, as it would a member cut
    # short; its trailer, intact before the next member, tells the two apart.
    src = tmp_path / "in" / "overrun.jsonl.gz"
    groups, members = _damaged_file(src, 1800, 43, _overrun_damaged)
    end2 = len(members[0]) + len(members[1])

    _, kept, rejected, _ = _run(src, tmp_path / "out", fast_config)
    assert kept == groups[0] + groups[2]
    (brk,) = rejected
    assert brk["synthfilter"]["break"]["kind"] == "corrupt" and brk["synthfilter"]["break"]["resumed_at"] == end2
    assert f"does not end at its trailer (at byte {end2 - 8:,})" in brk["synthfilter"]["error"]


# -- B2: a member cut short, then an intact member ----------------------------------------------


@pytest.mark.parametrize("frac", [1 / 2, 2 / 3, 3 / 4])
def test_member_cut_short_then_an_intact_member(tmp_path: Path, fast_config: dict, frac: float) -> None:
    lines = _lines(1200, seed=44)
    groups = [lines[:500], lines[500:900], lines[900:]]
    members = [_member(g) for g in groups]
    members[0] = members[0][: int(len(members[0]) * frac)]
    readable, cut = _readable_prefix(members[0])
    assert readable and cut and readable == groups[0][: len(readable)]
    src = tmp_path / "in" / "cut.jsonl.gz"
    src.parent.mkdir()
    src.write_bytes(b"".join(members))
    start2 = len(members[0])

    report, kept, rejected, manifest = _run(src, tmp_path / "out", fast_config)
    assert kept == readable + groups[1] + groups[2]  # before the cut, then both intact members whole
    (brk,) = rejected
    sf = brk["synthfilter"]
    assert sf["reason"] == "malformed" and sf["raw"].encode() == cut  # the line the cut split
    assert sf["break"]["kind"] == "truncated"
    assert sf["break"]["offset"] == sf["break"]["resumed_at"] == start2
    assert sf["break"]["partial_line_bytes"] == len(cut) == sf["break"]["unreadable_bytes"]
    assert f"cut off at byte {start2:,}, where another gzip member starts" in sf["error"]
    assert report["input"]["records"] == len(readable) + 1 + 700 and report["input"]["breaks"] == 1
    assert manifest["inputs"][0]["breaks"][0]["resumed_at"] == start2

    line = _fail_line(src, tmp_path / "fail")
    assert f"cut off at byte {start2:,}, where another gzip member starts" in line
    assert f"keep the {len(readable):,} records before it" in line


def test_members_cut_short_one_after_another(tmp_path: Path) -> None:
    lines = _lines(900, seed=45)
    groups = [lines[:300], lines[300:600], lines[600:]]
    members = [_member(g) for g in groups]
    members[0] = members[0][: len(members[0]) * 2 // 3]
    members[1] = members[1][: len(members[1]) // 2]
    p = tmp_path / "two.jsonl.gz"
    p.write_bytes(b"".join(members))
    reader = ShardReader(Shard(p, p.name, "jsonl", "gz"), recover=True)
    good = [r.raw for r in reader if r.error is None]
    assert good == _readable_prefix(members[0])[0] + _readable_prefix(members[1])[0] + groups[2]
    assert [b.kind for b in reader.breaks] == ["truncated", "truncated"]
    assert [b.resumed_at for b in reader.breaks] == [len(members[0]), len(members[0]) + len(members[1])]


# -- what any damage may do: nothing outside the original records is ever kept ------------------


def _damage(rng: random.Random, members: list[bytes]) -> tuple[list[bytes], set[int]]:
    members = list(members)
    j = rng.randrange(len(members))
    members[j] = damaged(rng, members[j], rng.choice(["flip", "flips", "cut", "trailer"]), header=11, trailer=8)
    return members, {j}


@pytest.mark.parametrize("window", [shards._GZIP_WINDOW, 5000])
def test_damage_anywhere_never_keeps_a_record_that_was_not_written(tmp_path: Path, window: int,
                                                                     monkeypatch: pytest.MonkeyPatch) -> None:
    # A small window makes members overflow it: checked to the end, then decoded again.
    monkeypatch.setattr(shards._GzipDecoder, "window", window)
    rng = random.Random(46)
    lines = _lines(1000, seed=46)
    groups = [lines[i:i + 250] for i in range(0, 1000, 250)]
    clean = [_member(g) for g in groups]
    p = tmp_path / "d.jsonl.gz"
    for _ in range(40):
        members, damaged_at = _damage(rng, clean)
        p.write_bytes(b"".join(members))
        intact = [x for i, g in enumerate(groups) if i not in damaged_at for x in g]
        assert_nothing_damaged_kept(ShardReader(Shard(p, p.name, "jsonl", "gz"), recover=True), lines, intact)


# -- the machinery: members larger than the window, and input that cannot seek --------------------


def _read(p: Path) -> tuple[list[tuple[bytes | None, str | None]], list[dict], str]:
    reader = ShardReader(Shard(p, p.name, "jsonl", "gz"), recover=True)
    records = [(r.raw, r.error) for r in reader]
    return records, [b.to_dict() for b in reader.breaks], reader.sha256


def _cases() -> dict[str, bytes]:
    lines = _lines(1500, seed=47)
    groups = [lines[i:i + 500] for i in range(0, 1500, 500)]
    members = [_member(g) for g in groups]
    return {
        "good": b"".join(members),
        "single": _member(lines),
        "cut then intact": members[0][: len(members[0]) // 2] + members[1] + members[2],
        "crc": members[0] + _crc_damaged(members[1]) + members[2],
        "cut at the end": _member(lines)[:-3000],
    }


def test_members_larger_than_the_window_read_the_same(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    p = tmp_path / "w.jsonl.gz"
    for name, data in _cases().items():
        p.write_bytes(data)
        whole = _read(p)
        monkeypatch.setattr(shards._GzipDecoder, "window", 4096)
        assert _read(p) == whole, name
        monkeypatch.undo()
    p.write_bytes(_cases()["good"])
    assert [r[0] for r in _read(p)[0]] == _lines(1500, seed=47)


@pytest.mark.skipif(not hasattr(os, "mkfifo"), reason="needs named pipes")
def test_input_that_cannot_seek_reads_the_same(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(shards._GzipDecoder, "window", 4096)
    regular, fifo = tmp_path / "r.jsonl.gz", tmp_path / "f.jsonl.gz"
    for name, data in _cases().items():
        regular.write_bytes(data)
        assert read_through_fifo(fifo, data, _read) == _read(regular), name


def test_a_member_that_changes_between_its_check_and_its_reading_is_an_error(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    # Past the window a member is decoded twice; if the file changes in between, the second
    # decoding fails (here at the CRC check) and the reader says so, naming the file.
    monkeypatch.setattr(shards, "_OUT_STEP", 1 << 16)
    monkeypatch.setattr(shards, "_CHUNK", 4096)  # so the bytes decoded again are read again from the file
    monkeypatch.setattr(shards._GzipDecoder, "window", 100_000)
    lines = _lines(6000, seed=48)
    member = _member(lines)
    assert len(member) > 3 * (1 << 16)  # more than the reader holds of it: read again from the file
    p = tmp_path / "changing.jsonl.gz"
    p.write_bytes(member)
    reader = ShardReader(Shard(p, p.name, "jsonl", "gz"), batch_rows=1)
    records = iter(reader)
    assert next(records).raw == lines[0]  # the member has been checked whole; the window is out
    p.write_bytes(_crc_damaged(member))  # same size, one byte in its second half changed
    with pytest.raises(shards.InputError, match=r"changing.jsonl.gz:\d+: cannot read: the file changed while it was "
                                                r"read: the gzip member at byte 0 decodes differently"):
        for _ in records:
            pass
