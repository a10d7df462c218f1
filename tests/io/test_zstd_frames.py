"""zstd frames that fail, and frames cut short: nothing from a failed frame is read as a record.

Damaged zstd data often decodes without an error into other bytes until the frame's end, where
its content checksum is all that catches it: none of such a frame's records may be kept as if
good. A frame is read only once it has decoded to its end (and its checksum matched); one that
fails is one break, and reading goes on at the next frame. A frame without a checksum cannot be
checked (damage that zstd decodes without an error goes unnoticed), but an error zstd reports
sets it aside whole all the same. A frame cut short by the end of the file is read up to the
cut, with or without a checksum (lost with the cut), as a gzip member cut short there.

The files are written and damaged here; what is readable is computed independently with zstandard.
"""

from __future__ import annotations

import json
import os
import random
from pathlib import Path

import pytest
import zstandard

from helpers import assert_nothing_damaged_kept, damaged, make_records, read_through_fifo, run_quarantined
from synthfilter.io import shards
from synthfilter.io.shards import Shard, ShardReader



def _lines(n: int, seed: int) -> list[bytes]:
    return [json.dumps(r).encode() for r in make_records(n, seed=seed)]


def _frame(lines: list[bytes], checksum: bool = True) -> bytes:
    return zstandard.ZstdCompressor(level=3, write_checksum=checksum).compress(b"".join(x + b"\n" for x in lines))


def _stream(frame: bytes) -> tuple[bytes, str | None]:
    """What a streaming decoder hands out from ``frame`` (fed in small pieces) before it stops,
    and zstd's error (None when the frame decodes to its end and checks)."""
    d, out = zstandard.ZstdDecompressor().decompressobj(), b""
    try:
        for k in range(0, len(frame), 512):
            out += d.decompress(frame[k:k + 512])
    except zstandard.ZstdError as e:
        return out, str(e)
    return out, None if d.eof else "ends early"


def _checksum_damaged(frame: bytes, lines: list[bytes]) -> bytes:
    """``frame`` with one byte near its middle flipped such that zstd decodes it to the end
    without a decoding error, to lines that are not all the original ones, and only its
    content checksum fails (what a reader that streams the data out keeps as good)."""
    for at in range(len(frame) // 2, len(frame) - 4):
        for bit in (0x01, 0x10, 0x80):
            damaged = bytearray(frame)
            damaged[at] ^= bit
            out, error = _stream(bytes(damaged))
            if error and "checksum" in error and set(out.split(b"\n")) - set(lines) - {b""}:
                return bytes(damaged)
    raise AssertionError("no single-byte flip fails only the checksum")  # pragma: no cover


def _run(src: Path, out: Path, fast_config: dict) -> tuple[dict, list[bytes], list[dict]]:
    report, kept, rejected, _ = run_quarantined(src, out, fast_config)
    return report, kept, rejected


def _read(p: Path) -> tuple[list[tuple[bytes | None, str | None]], list[dict]]:
    reader = ShardReader(Shard(p, p.name, "jsonl", "zst"), recover=True)
    records = [(r.raw, r.error) for r in reader]
    return records, [b.to_dict() for b in reader.breaks]


# -- a frame that fails its checksum -----------------------------------------------------------


def test_frame_failing_its_checksum_between_intact_ones(tmp_path: Path, fast_config: dict) -> None:
    lines = _lines(2400, seed=61)
    groups = [lines[i:i + 600] for i in range(0, 2400, 600)]
    frames = [_frame(g) for g in groups]
    frames[1] = _checksum_damaged(frames[1], groups[1])
    src = tmp_path / "in" / "multi.jsonl.zst"
    src.parent.mkdir()
    src.write_bytes(b"".join(frames))
    start2 = len(frames[0])

    report, kept, rejected = _run(src, tmp_path / "out", fast_config)
    assert kept == groups[0] + groups[2] + groups[3]  # the intact frames, whole and in order
    (brk,) = rejected  # nothing of frame 2 but its one break
    sf = brk["synthfilter"]
    assert sf["reason"] == "malformed" and f"zstd frame at byte {start2:,} fails its content checksum" in sf["error"]
    b = sf["break"]
    assert b["kind"] == "corrupt" and b["offset"] == start2 and b["resumed_at"] == start2 + len(frames[1])
    assert b["unreadable_bytes"] == len(frames[1])
    assert b["untrusted_bytes"] == sum(len(x) + 1 for x in groups[1])  # decoded to its end, then set aside
    assert report["input"]["records"] == 1801 and report["input"]["breaks"] == 1


def test_single_damaged_frame_keeps_nothing_from_it(tmp_path: Path, fast_config: dict) -> None:
    lines = _lines(1500, seed=62)
    damaged = _checksum_damaged(_frame(lines), lines)
    src = tmp_path / "in" / "one.jsonl.zst"
    src.parent.mkdir()
    src.write_bytes(damaged)

    report, kept, rejected = _run(src, tmp_path / "out", fast_config)
    assert kept == []
    (brk,) = rejected
    b = brk["synthfilter"]["break"]
    assert b["kind"] == "corrupt" and b["offset"] == 0 and "resumed_at" not in b
    assert b["unreadable_bytes"] == len(damaged)
    assert report["input"]["records"] == 1 and report["input"]["breaks"] == 1


def test_decoding_error_in_a_frame_without_checksum_keeps_nothing_from_it(tmp_path: Path) -> None:
    # Without a checksum a frame cannot be checked, but an error zstd reports still sets the
    # whole frame aside: what it decoded before the error may be damaged.
    lines = _lines(1800, seed=63)
    groups = [lines[:600], lines[600:1200], lines[1200:]]
    frames = [_frame(g, checksum=False) for g in groups]
    for at in range(len(frames[1]) * 3 // 4, 20, -1):
        damaged = bytearray(frames[1])
        damaged[at] ^= 0xFF
        out, error = _stream(bytes(damaged))
        if error and error != "ends early" and out.count(b"\n") > 20:
            break
    else:  # pragma: no cover
        raise AssertionError("no flip that zstd reports after decoding records")
    frames[1] = bytes(damaged)
    p = tmp_path / "nock.jsonl.zst"
    p.write_bytes(b"".join(frames))
    records, breaks = _read(p)
    assert [raw for raw, error in records if error is None] == groups[0] + groups[2]
    (b,) = breaks
    assert b["kind"] == "corrupt" and b["offset"] == len(frames[0])
    assert b["resumed_at"] == len(frames[0]) + len(frames[1])


# -- a frame cut short -------------------------------------------------------------------------


def test_last_frame_cut_short_without_checksum_keeps_its_decodable_prefix(tmp_path: Path,
                                                                         fast_config: dict) -> None:
    lines = _lines(1500, seed=64)
    groups = [lines[:500], lines[500:1000], lines[1000:]]
    frames = [_frame(g, checksum=False) for g in groups]
    frames[2] = frames[2][: len(frames[2]) * 2 // 3]
    prefix, error = _stream(frames[2])
    assert error == "ends early"
    complete, _, cut = prefix.rpartition(b"\n")
    readable = complete.split(b"\n")
    assert readable == groups[2][: len(readable)] and cut
    src = tmp_path / "in" / "cut.jsonl.zst"
    src.parent.mkdir()
    src.write_bytes(b"".join(frames))

    report, kept, rejected = _run(src, tmp_path / "out", fast_config)
    assert kept == groups[0] + groups[1] + readable  # nothing follows: the prefix it decodes to is read
    (brk,) = rejected
    sf = brk["synthfilter"]
    assert sf["raw"].encode() == cut and sf["break"]["kind"] == "truncated"
    assert sf["break"]["offset"] == src.stat().st_size and "resumed_at" not in sf["break"]
    assert sf["break"]["missing_bytes"] == sum(len(x) + 1 for x in groups[2]) - len(prefix)
    assert report["input"]["records"] == 1000 + len(readable) + 1


def test_last_frame_cut_short_with_checksum_keeps_its_decodable_prefix_too(tmp_path: Path,
                                                                         fast_config: dict) -> None:
    # zstd writes a whole file as one frame with a checksum by default: a copy cut short used to
    # lose every record, where the same cut of a .jsonl.gz keeps all its complete records.
    lines = _lines(1500, seed=65)
    frame = _frame(lines)
    cut_frame = frame[: len(frame) * 2 // 3]
    prefix, error = _stream(cut_frame)
    assert error == "ends early" and prefix.count(b"\n") > 10
    readable = prefix.rpartition(b"\n")[0].split(b"\n")
    assert readable == lines[: len(readable)]
    src = tmp_path / "in" / "cutck.jsonl.zst"
    src.parent.mkdir()
    src.write_bytes(cut_frame)

    report, kept, rejected = _run(src, tmp_path / "out", fast_config)
    assert kept == readable
    (brk,) = rejected
    sf = brk["synthfilter"]
    assert sf["break"]["kind"] == "truncated" and sf["break"]["offset"] == len(cut_frame)
    assert "truncated .zst file" in sf["error"] and "content checksum" in sf["error"]
    assert report["input"]["records"] == len(readable) + 1


def test_frame_cut_short_then_an_intact_frame(tmp_path: Path) -> None:
    lines = _lines(1200, seed=66)
    groups = [lines[:500], lines[500:900], lines[900:]]
    frames = [_frame(g) for g in groups]
    frames[0] = frames[0][: len(frames[0]) // 2]
    p = tmp_path / "cutmid.jsonl.zst"
    p.write_bytes(b"".join(frames))
    records, breaks = _read(p)
    assert [raw for raw, error in records if error is None] == groups[1] + groups[2]
    (b,) = breaks
    assert b["offset"] == 0 and b["resumed_at"] == len(frames[0])


# -- what any damage may do: nothing outside the original records is ever kept ------------------


def _damage(rng: random.Random, frames: list[bytes]) -> tuple[list[bytes], int]:
    frames = list(frames)
    j = rng.randrange(len(frames))
    kind = rng.choice(["flip", "flips", "cut", "checksum", "silent", "silent"])
    m = bytearray(frames[j])
    # Past the frame header (at most 10 bytes here): clearing its checksum flag would leave the
    # frame nothing to be checked by, which no reader can catch.
    if kind == "silent":  # a flip that zstd decodes without an error: only the checksum catches it
        while True:
            m = bytearray(frames[j])
            m[rng.randrange(12, len(m) - 4)] ^= 1 << rng.randrange(8)
            out, error = _stream(bytes(m))
            if error and "checksum" in error:
                break
    else:
        m = bytearray(damaged(rng, frames[j], kind, header=12, trailer=4))
    frames[j] = bytes(m)
    return frames, j


@pytest.mark.parametrize("window", [shards._GZIP_WINDOW, 5000])
def test_damage_anywhere_never_keeps_a_record_that_was_not_written(tmp_path: Path, window: int,
                                                                     monkeypatch: pytest.MonkeyPatch) -> None:
    # A small window makes frames overflow it: decoded to the end, then decoded again.
    monkeypatch.setattr(shards._ZstdDecoder, "window", window, raising=False)
    rng = random.Random(67)
    lines = _lines(2400, seed=67)
    groups = [lines[i:i + 600] for i in range(0, 2400, 600)]  # frames of 30 KB or more
    clean = [_frame(g) for g in groups]
    p = tmp_path / "d.jsonl.zst"
    for _ in range(30):
        frames, damaged_at = _damage(rng, clean)
        p.write_bytes(b"".join(frames))
        intact = [x for i, g in enumerate(groups) if i != damaged_at for x in g]
        assert_nothing_damaged_kept(ShardReader(Shard(p, p.name, "jsonl", "zst"), recover=True), lines, intact)


# -- frames larger than the window --------------------------------------------------------------


def test_frames_larger_than_the_window_read_the_same(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    lines = _lines(1500, seed=68)
    groups = [lines[i:i + 500] for i in range(0, 1500, 500)]
    frames = [_frame(g) for g in groups]
    skippable = (0x184D2A53).to_bytes(4, "little") + (5).to_bytes(4, "little") + b"meta!"
    cases = {
        "good": b"".join(frames),
        "skippable": frames[0] + skippable + frames[1] + frames[2],
        "single": _frame(lines),
        "no checksum": _frame(lines, checksum=False),
        "checksum": frames[0] + _checksum_damaged(frames[1], groups[1]) + frames[2],
        "cut at the end": _frame(lines, checksum=False)[:-3000],
    }
    p = tmp_path / "w.jsonl.zst"
    for name, data in cases.items():
        p.write_bytes(data)
        whole = _read(p)
        monkeypatch.setattr(shards._ZstdDecoder, "window", 4096)
        monkeypatch.setattr(shards, "_OUT_STEP", 1 << 17)  # one block a step
        assert _read(p) == whole, name
        monkeypatch.undo()
    for name in ("good", "skippable", "single", "no checksum"):
        p.write_bytes(cases[name])
        records, breaks = _read(p)
        assert [raw for raw, _ in records] == lines and not breaks, name


@pytest.mark.skipif(not hasattr(os, "mkfifo"), reason="needs named pipes")
def test_input_that_cannot_seek_reads_the_same(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(shards._ZstdDecoder, "window", 4096)
    lines = _lines(1500, seed=69)
    groups = [lines[i:i + 500] for i in range(0, 1500, 500)]
    frames = [_frame(g) for g in groups]
    regular, fifo = tmp_path / "r.jsonl.zst", tmp_path / "f.jsonl.zst"
    for data in (b"".join(frames), frames[0] + _checksum_damaged(frames[1], groups[1]) + frames[2],
                 _frame(lines, checksum=False)[:-2000]):
        regular.write_bytes(data)
        assert read_through_fifo(fifo, data, _read) == _read(regular)


def test_zst_outputs_carry_a_content_checksum(tmp_path: Path) -> None:
    # Our own .zst outputs are read back as inputs of the next stage: written with a content
    # checksum, a damaged frame is set aside there instead of read as records.
    out = tmp_path / "kept.jsonl.zst"
    writer = shards.AtomicJsonlWriter(out, "zst")
    writer.write_lines(_lines(50, 3))
    writer.commit()
    params = zstandard.get_frame_parameters(out.read_bytes())
    assert params.has_checksum
    with zstandard.ZstdDecompressor().stream_reader(out.open("rb")) as r:
        assert r.read().count(b"\n") == 50
