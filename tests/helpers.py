"""Test helpers: shard writers over project-made text, readers, and a CLI runner."""

from __future__ import annotations

import array
import fcntl
import gzip
import json
import os
import random
import signal
import sys
import termios
import threading
import time
from pathlib import Path
from typing import Any, Iterable

import zstandard

from textgen import assistant_text, corpus, human_text


def write_jsonl(path: Path, records: Iterable[Any], compression: str | None = None) -> Path:
    """Write records (dicts are JSON-encoded; bytes are written as raw lines)."""
    path.parent.mkdir(parents=True, exist_ok=True)
    lines = []
    for r in records:
        lines.append(r if isinstance(r, bytes) else json.dumps(r, ensure_ascii=False).encode("utf-8"))
    data = b"".join(line + b"\n" for line in lines)
    if compression == "gz":
        data = gzip.compress(data)
    elif compression == "zst":
        data = zstandard.ZstdCompressor().compress(data)
    path.write_bytes(data)
    return path


def make_records(n: int, seed: int = 0, dup_every: int = 0, machine_share: float = 0.3) -> list[dict[str, Any]]:
    """Distinct records with ids; every ``dup_every``-th record repeats an earlier text."""
    rows = []
    texts = corpus(n, seed=seed, machine_share=machine_share)
    rng = random.Random(seed + 1)
    for i, (label, text) in enumerate(texts):
        if dup_every and i and i % dup_every == 0:
            text = rows[rng.randrange(len(rows))]["text"]
        rows.append({"id": f"s{seed}-{i}", "text": text, "label": label})
    return rows


def run_cli(args: list[str]) -> tuple[int, str, str]:
    """Run the real CLI in a subprocess (as a user would); returns (code, stdout, stderr)."""
    import subprocess

    proc = subprocess.run(
        [sys.executable, "-m", "synthfilter", *args], capture_output=True, text=True, timeout=600,
    )
    return proc.returncode, proc.stdout, proc.stderr


def read_jsonl(path: Path) -> list[bytes]:
    data = path.read_bytes()
    if path.name.endswith(".gz"):
        data = gzip.decompress(data)
    elif path.name.endswith(".zst"):
        data = zstandard.ZstdDecompressor().decompressobj().decompress(data)
    return [line for line in data.split(b"\n") if line]


_WXR_HEAD = ('<?xml version="1.0" encoding="UTF-8" ?>\n<rss version="2.0" '
             'xmlns:content="http://purl.org/rss/1.0/modules/content/" xmlns:dc="http://purl.org/dc/elements/1.1/" '
             'xmlns:wp="http://wordpress.org/export/1.2/">\n<channel>\n<title>Harwick notes</title>\n'
             '<wp:author><wp:author_login><![CDATA[editor]]></wp:author_login></wp:author>\n')
_WXR_TAIL = "</channel>\n</rss>\n"


def _wxr_item(post_id: int, title: str, text: str, label: int | None) -> str:
    paragraphs = "".join(f"<p>{s}.</p>" for s in text.split(". ") if s)
    meta = ("" if label is None else
            f"<wp:postmeta><wp:meta_key><![CDATA[ai_generated]]></wp:meta_key>"
            f"<wp:meta_value><![CDATA[{label}]]></wp:meta_value></wp:postmeta>")
    return (f"<item><title><![CDATA[{title}]]></title><link>https://blog.example/?p={post_id}</link>"
            f"<dc:creator><![CDATA[editor]]></dc:creator><category domain=\"category\"><![CDATA[Notes]]></category>"
            f"<content:encoded><![CDATA[<!-- wp:paragraph -->{paragraphs}<!-- /wp:paragraph -->]]></content:encoded>"
            f"<wp:post_id>{post_id}</wp:post_id><wp:post_date><![CDATA[2025-01-02 03:04:05]]></wp:post_date>"
            f"<wp:status><![CDATA[publish]]></wp:status><wp:post_type><![CDATA[post]]></wp:post_type>{meta}</item>\n")


def write_wxr_export(path: Path, size: int, seed: int = 0) -> int:
    """Write a WordPress export of about ``size`` bytes of project-made posts, streamed (about 70 %
    "human", 30 % "assistant" register, 3 % verbatim copies under new ids, every other post
    labelled in the ``ai_generated`` custom field: 1 machine, 0 human). Returns the number of posts."""
    rng = random.Random(seed)
    n = written = 0
    recent: list[tuple[str, str, int]] = []
    with open(path, "w", encoding="utf-8") as f:
        f.write(_WXR_HEAD)
        while written < size:
            n += 1
            if recent and rng.random() < 0.03:
                title, text, label = rng.choice(recent)  # a verbatim copy under a new id
                title += " (again)"
            else:
                machine = rng.random() < 0.3
                body = assistant_text(rng, sentences=rng.randint(8, 14)) if machine else human_text(rng, sentences=rng.randint(10, 28))
                title, text, label = f"Post {n}", f"Entry number {n} of the notes. {body}", int(machine)
                recent = (recent + [(title, text, label)])[-50:]
            chunk = _wxr_item(n, title, text, label if n % 2 else None)
            f.write(chunk)
            written += len(chunk)
        f.write(_WXR_TAIL)
    return n


def read_through_fifo(fifo: Path, data: bytes, read: Any) -> Any:
    """``read(fifo)`` while a thread writes ``data`` into the named pipe ``fifo`` (made here,
    removed after) 4,000 bytes at a time: input that cannot seek or be read twice."""
    import os
    import threading

    os.mkfifo(fifo)

    def feed() -> None:
        with open(fifo, "wb") as f:
            for i in range(0, len(data), 4000):
                f.write(data[i:i + 4000])

    writer = threading.Thread(target=feed)
    writer.start()
    try:
        return read(fifo)
    finally:
        writer.join()
        fifo.unlink()


def damaged(rng: Any, data: bytes, kind: str, header: int, trailer: int) -> bytes:
    """``data`` (a gzip member, a zstd frame) damaged past its first ``header`` bytes: one bit
    flipped ("flip"), 30 bytes scrambled ("flips"), cut anywhere ("cut"), or its last 1 to
    ``trailer`` bytes cut (any other kind)."""
    m = bytearray(data)
    if kind == "flip":
        m[rng.randrange(header, len(m))] ^= 1 << rng.randrange(8)
    elif kind == "flips":
        at = rng.randrange(header, len(m))
        for k in range(at, min(at + 30, len(m))):
            m[k] ^= rng.randrange(1, 256)
    elif kind == "cut":
        m = m[: rng.randrange(header, len(m))]
    else:
        m = m[: len(m) - rng.randint(1, trailer)]
    return bytes(m)


def replace_model_in_place(model: Path) -> None:
    """What ``adapt --overwrite`` does to a model directory: same path, other files. Here a key
    no loader reads is added to config.json, and the card's record of that file follows."""
    import hashlib

    config = model / "config.json"
    data = json.loads(config.read_text())
    data["replaced_for_a_test"] = True
    config.write_text(json.dumps(data))
    card = json.loads((model / "card.json").read_text())
    raw = config.read_bytes()
    card["files"]["config.json"] = {"bytes": len(raw), "sha256": hashlib.sha256(raw).hexdigest()}
    (model / "card.json").write_text(json.dumps(card))


def damage_parquet_row_group(path: Path, group: int) -> None:
    """Make row group ``group`` of a Parquet file unreadable: 64 bytes of its text column's
    (column 1) first data page flipped."""
    import pyarrow.parquet as pq

    col = pq.ParquetFile(path).metadata.row_group(group).column(1)
    data = bytearray(path.read_bytes())
    for k in range(col.data_page_offset, col.data_page_offset + 64):
        data[k] ^= 0x5A
    path.write_bytes(bytes(data))


def assert_nothing_damaged_kept(reader: Any, lines: list[bytes], intact: list[bytes]) -> None:
    """What ``reader`` (a ``ShardReader`` over a damaged file with ``recover=True``) gives: no
    record that was not among ``lines``, none twice, every ``intact`` one, and one break record
    per break (at least one)."""
    records = list(reader)
    good = [r.raw for r in records if r.error is None]
    assert set(good) <= set(lines)  # nothing damaged is read as good
    assert len(good) == len(set(good))
    assert set(intact) <= set(good)  # every intact member / frame is read whole
    assert len(reader.breaks) == sum(1 for r in records if r.brk is not None) >= 1


def run_quarantined(src: Path, out: Path, overrides: dict[str, Any]) -> tuple[dict, list[bytes], list[dict], dict]:
    """``synthfilter run`` of ``src`` under ``--on-error quarantine`` (and ``overrides``):
    (report, kept lines, rejected records, manifest), after checking that every record read
    ended in one output."""
    import json

    import orjson

    from synthfilter.config import Config
    from synthfilter.pipeline.run import run_pipeline

    res = run_pipeline([str(src)], out, Config.from_dict({**overrides, "on_error": "quarantine"}))
    kept_path, rej_path = out / "kept" / src.name, out / "rejected" / src.name
    kept = read_jsonl(kept_path) if kept_path.exists() else []
    rejected = [orjson.loads(x) for x in read_jsonl(rej_path)] if rej_path.exists() else []
    manifest = json.loads((out / "manifest.json").read_text())
    assert manifest["conservation"]["ok"]
    assert res.report["input"]["records"] == len(kept) + len(rejected)  # every record ends in one output
    return res.report, kept, rejected, manifest


# -- a shard served through a named pipe ---------------------------------------------------------


def readers_of(path: Path) -> list[int]:
    """Processes (other than this one) holding ``path`` open."""
    target = str(path)
    pids = []
    for pid in filter(str.isdigit, os.listdir("/proc")):
        if int(pid) == os.getpid():
            continue
        try:
            fds = os.listdir(f"/proc/{pid}/fd")
            if any(os.readlink(f"/proc/{pid}/fd/{fd}") == target for fd in fds):
                pids.append(int(pid))
        except OSError:
            continue
    return pids


_FIFO_WAIT_S = 60.0  # how long the feeder waits for a reader to show up, or to drain the pipe


class FifoFeeder(threading.Thread):
    """Serves a shard's bytes through a named pipe, once per reader. On the opens numbered in
    ``kill_on`` it sends half, SIGKILLs the reading worker process and hangs up; after the
    open numbered ``hold_after`` it waits for ``release`` before serving again."""

    def __init__(self, fifo: Path, data: bytes, kill_on: tuple[int, ...] = (), hold_after: int | None = None):
        super().__init__(daemon=True)
        self.fifo, self.data, self.kill_on, self.hold_after = fifo, data, kill_on, hold_after
        self.opens = 0
        self.killed: list[int] = []
        self.release = threading.Event()
        self.stop = threading.Event()

    def run(self) -> None:
        while not self.stop.is_set():
            if self.hold_after is not None and self.opens > self.hold_after and not self.release.is_set():
                time.sleep(0.05)
                continue
            try:
                fd = os.open(self.fifo, os.O_WRONLY | os.O_NONBLOCK)
            except OSError:  # no reader yet
                time.sleep(0.02)
                continue
            os.set_blocking(fd, True)
            n, self.opens = self.opens, self.opens + 1
            readers: list[int] = []
            # The woken reader's descriptor shows up in /proc shortly; on a loaded machine (the
            # suite beside a benchmark on both cores) it took more than 5 s once, and a kill that
            # found no reader to kill failed the test.
            deadline = time.monotonic() + _FIFO_WAIT_S
            while time.monotonic() < deadline:
                readers = readers_of(self.fifo)
                if readers:
                    break
                time.sleep(0.01)
            if n in self.kill_on:
                self._kill_reader_midway(fd, readers)
            else:
                try:
                    view = memoryview(self.data)
                    while view:
                        view = view[os.write(fd, view):]
                except BrokenPipeError:
                    pass
                os.close(fd)
            # A reader holds the pipe a while after the end of the file; until it lets go, a
            # new open would hand it a second copy.
            while set(readers) & set(readers_of(self.fifo)) and not self.stop.is_set():
                time.sleep(0.02)

    def _kill_reader_midway(self, fd: int, pids: list[int]) -> None:
        """Half the bytes, read to the last one, then the reader dies while waiting for more.

        Stopped before the pipe is closed and killed after, the reader never sees the end of
        the file; and the pipe is empty, so a retry that opens it meanwhile reads the next
        session's bytes from the start."""
        os.write(fd, self.data[: len(self.data) // 2])
        pending = array.array("i", [1])
        deadline = time.monotonic() + _FIFO_WAIT_S
        while time.monotonic() < deadline:
            fcntl.ioctl(fd, termios.FIONREAD, pending)
            if pending[0] == 0:
                break
            time.sleep(0.01)
        for pid in pids:
            os.kill(pid, signal.SIGSTOP)
        os.close(fd)
        for pid in pids:
            os.kill(pid, signal.SIGKILL)
            self.killed.append(pid)
