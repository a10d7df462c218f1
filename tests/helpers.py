"""Test helpers: shard writers over project-made text, readers, and a CLI runner."""

from __future__ import annotations

import gzip
import json
import random
import sys
from pathlib import Path
from typing import Any, Iterable

import zstandard

from textgen import corpus


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
