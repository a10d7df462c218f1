"""Test helpers: shard writers over project-made text, readers, and a CLI runner."""

from __future__ import annotations

import gzip
import json
import random
import sys
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
