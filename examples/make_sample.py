"""Rebuild the bundled sample corpus in examples/sample/ (project-made text, fixed seed).

    python examples/make_sample.py

Three shards as a CMS or crawl would give them: plain JSONL, gzip JSONL and Parquet; a mix of
plain anecdotal posts and formulaic assistant-style posts; exact copies, lightly edited
near-copies, and a provenance field (``meta.generated_by``) on some records.
"""

from __future__ import annotations

import gzip
import random
import sys
from pathlib import Path

import orjson
import pyarrow as pa
import pyarrow.parquet as pq

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE.parent / "tests"))

from textgen import assistant_text, human_text  # noqa: E402


def _edit(text: str, rng: random.Random, share: float) -> str:
    words = text.split()
    for _ in range(max(1, round(len(words) * share))):
        words[rng.randrange(len(words))] = rng.choice(["really", "quite", "also", "then", "still"])
    return " ".join(words)


def build(out: Path, seed: int = 2024) -> None:
    rng = random.Random(seed)
    out.mkdir(parents=True, exist_ok=True)
    rows = []
    for i in range(240):
        machine = rng.random() < 0.45
        text = assistant_text(rng, rng.randint(6, 8)) if machine else human_text(rng, rng.randint(7, 12))
        meta: dict = {"site": rng.choice(["blog", "help-centre", "newsroom"])}
        if rng.random() < 0.25:
            meta["generated_by"] = rng.choice(["gpt-4o", "claude-3", "llama-3"]) if machine else "human"
        rows.append({"id": f"post-{i:04d}", "text": text, "meta": meta})
    for j in range(12):  # exact copies, re-cased and re-spaced
        src = rows[rng.randrange(len(rows))]
        rows.append({"id": f"copy-{j:02d}", "text": "  ".join(src["text"].split()).upper() if j % 2 else src["text"],
                     "meta": {"site": "syndicated"}})
    for j in range(12):  # near copies: a few words edited
        src = rows[rng.randrange(240)]
        rows.append({"id": f"edit-{j:02d}", "text": _edit(src["text"], rng, 0.01), "meta": {"site": "syndicated"}})
    rng.shuffle(rows)
    a, b, c = rows[:110], rows[110:200], rows[200:]
    (out / "blog.jsonl").write_bytes(b"".join(orjson.dumps(r) + b"\n" for r in a))
    (out / "newsroom.jsonl.gz").write_bytes(
        gzip.compress(b"".join(orjson.dumps(r) + b"\n" for r in b), mtime=0)
    )
    pq.write_table(pa.Table.from_pylist(c), out / "help-centre.parquet")


if __name__ == "__main__":
    build(HERE / "sample")
    print(f"wrote {HERE / 'sample'}")
