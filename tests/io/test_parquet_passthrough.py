"""Parquet columns the run does not read pass through to kept/ and rejected/ as they are: values,
types and schema (metadata too), whatever their type, around a damaged row group as well.

Only the text, id and provenance fields are read as Python values; the rows written are the
file's own Arrow data.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pyarrow as pa
import pyarrow.parquet as pq
import pytest

from helpers import damage_parquet_row_group, run_cli
from synthfilter.config import Config
from synthfilter.pipeline.run import run_pipeline

TEXTS = [f"record number {i} about rivers, stones and the long road north" for i in range(12)]
DUPLICATES = (4, 9)  # rows whose text repeats row 0's: rejected as exact duplicates


def _texts() -> list[str]:
    return [TEXTS[0] if i in DUPLICATES else t for i, t in enumerate(TEXTS)]


def _without_struct(table: Any) -> Any:
    return table.drop_columns(["synthfilter"])


def test_nanosecond_temporal_columns_pass_through(tmp_path: Path) -> None:
    # Without pandas (the CLI keeps it out) pyarrow has no Python value for a nanosecond
    # timestamp that is not a whole number of microseconds: the run must not need one.
    ns = 1_600_000_000_000_000_123
    table = pa.table({
        "id": pa.array(range(12), pa.int64()),
        "text": _texts(),
        "ts": pa.array([ns + i for i in range(12)], pa.timestamp("ns")),
        "ts_utc": pa.array([ns] * 12, pa.timestamp("ns", tz="UTC")),
        "t": pa.array([123 + i for i in range(12)], pa.time64("ns")),
        "d": pa.array([1_001 + i for i in range(12)], pa.duration("ns")),
        "nested": pa.array([{"at": ns, "n": i} for i in range(12)], pa.struct([("at", pa.timestamp("ns")),
                                                                                ("n", pa.int64())])),
    })
    src = tmp_path / "in" / "x.parquet"
    src.parent.mkdir()
    pq.write_table(table, src)
    out = tmp_path / "out"
    code, _, err = run_cli(["run", str(src.parent), "--out", str(out), "--no-detector", "--no-near-dedup", "-q"])
    assert code == 0, err
    kept = pq.read_table(out / "kept" / "x.parquet")
    assert kept.schema.equals(table.schema, check_metadata=True)
    assert kept.equals(table.take([i for i in range(12) if i not in DUPLICATES]))
    rejected = pq.read_table(out / "rejected" / "x.parquet")
    assert _without_struct(rejected).equals(table.take(list(DUPLICATES)))
    assert rejected.column("synthfilter").to_pylist()[0]["reason"] == "exact_duplicate"


def test_view_columns_pass_through(tmp_path: Path, fast_config: dict[str, Any]) -> None:
    # Polars writes string_view / binary_view columns, which Arrow's take has no kernel for.
    table = pa.table({
        "id": pa.array([f"r{i}" for i in range(12)], pa.string_view()),
        "text": pa.array(_texts(), pa.string_view()),
        "blob": pa.array([bytes([i]) * 20 for i in range(12)], pa.binary_view()),
    })
    src = tmp_path / "in" / "x.parquet"
    src.parent.mkdir()
    pq.write_table(table, src)
    res = run_pipeline([str(src.parent)], tmp_path / "out", Config.from_dict(fast_config))
    assert res.report["output"]["kept"] == 10
    kept = pq.read_table(tmp_path / "out" / "kept" / "x.parquet")
    assert kept.schema.equals(table.schema, check_metadata=True)
    assert kept.to_pylist() == [r for i, r in enumerate(table.to_pylist()) if i not in DUPLICATES]
    rejected = pq.read_table(tmp_path / "out" / "rejected" / "x.parquet")
    assert _without_struct(rejected).schema.equals(table.schema)
    assert _without_struct(rejected).to_pylist() == [table.to_pylist()[i] for i in DUPLICATES]


SCHEMA = pa.schema([
    pa.field("id", pa.int64(), nullable=False, metadata={b"role": b"key"}),
    pa.field("text", pa.string(), nullable=False, metadata={b"role": b"body"}),
], metadata={b"producer": b"test-export"})


def _damaged_parquet(path: Path, damage: int | None) -> Any:
    """300 rows in row groups of 50; every row of 250.. repeats row - 250's text (rejected as
    duplicates); row group ``damage`` made unreadable (None: none)."""
    table = pa.table({"id": range(300), "text": [f"doc {i % 250} about the ferry timetable" for i in range(300)]},
                     schema=SCHEMA)
    pq.write_table(table, path, row_group_size=50)
    if damage is not None:
        damage_parquet_row_group(path, damage)
    return table


@pytest.mark.parametrize("damage", [0, 2])
def test_damaged_row_group_beside_non_nullable_fields(tmp_path: Path, fast_config: dict[str, Any],
                                                      damage: int) -> None:
    src = tmp_path / "in" / "x.parquet"
    src.parent.mkdir()
    _damaged_parquet(src, damage)
    res = run_pipeline([str(src.parent)], tmp_path / "out",
                       Config.from_dict({**fast_config, "on_error": "quarantine"}))
    assert res.report["input"]["breaks"] == 1
    lost = range(damage * 50, damage * 50 + 50)
    kept = pq.read_table(tmp_path / "out" / "kept" / "x.parquet")
    assert kept.schema.equals(SCHEMA, check_metadata=True)
    # The duplicates of the lost rows are kept: what they repeated is gone.
    assert kept.column("id").to_pylist() == [i for i in range(300) if i not in lost and (i < 250 or i - 250 in lost)]

    rejected = pq.read_table(tmp_path / "out" / "rejected" / "x.parquet")
    # The shard's schema (metadata too), its fields nullable for the row of nulls that stands
    # for the unreadable row group.
    assert rejected.schema.metadata == SCHEMA.metadata
    for f in SCHEMA:
        assert rejected.schema.field(f.name).nullable and rejected.schema.field(f.name).metadata == f.metadata
        assert rejected.schema.field(f.name).type == f.type
    rows = rejected.to_pylist()
    breaks = [r for r in rows if r["synthfilter"]["reason"] == "malformed"]
    assert len(breaks) == 1 and breaks[0]["id"] is None and f"row group {damage + 1} of 6" in \
        breaks[0]["synthfilter"]["error"]
    dups = [r["id"] for r in rows if r["synthfilter"]["reason"] == "exact_duplicate"]
    assert dups == [i for i in range(250, 300) if i - 250 not in lost]
    assert len(rows) + kept.num_rows == res.report["input"]["records"]

    # Only there: a shard that reads whole keeps its non-nullable fields in rejected/ too.
    (tmp_path / "in2").mkdir()
    table = _damaged_parquet(tmp_path / "in2" / "x.parquet", None)
    run_pipeline([str(tmp_path / "in2")], tmp_path / "out2",
                 Config.from_dict({**fast_config, "on_error": "quarantine"}))
    rejected = pq.read_table(tmp_path / "out2" / "rejected" / "x.parquet")
    assert _without_struct(rejected).schema.equals(SCHEMA, check_metadata=True)
    assert _without_struct(rejected).equals(table.slice(250))


def test_a_binary_text_column_is_read_as_utf8(tmp_path: Path, fast_config: dict[str, Any]) -> None:
    # Impala and older Spark write strings as binary without the UTF-8 annotation: the text is
    # read, the column written back as it was; bytes that are not UTF-8 are one bad record.
    texts = [t.encode() for t in _texts()]
    texts[3] = b"caf\xe9 au lait, latin-1 bytes"
    table = pa.table({"id": [f"r{i}" for i in range(12)], "text": pa.array(texts, pa.binary())})
    src = tmp_path / "in" / "x.parquet"
    src.parent.mkdir()
    pq.write_table(table, src)
    res = run_pipeline([str(src.parent)], tmp_path / "out", Config.from_dict({**fast_config, "on_error": "quarantine"}))
    assert res.report["output"]["kept"] == 9 and res.report["input"]["malformed"] == 1
    kept = pq.read_table(tmp_path / "out" / "kept" / "x.parquet")
    assert kept.schema.equals(table.schema) and kept.column("text").to_pylist()[0] == texts[0]
    rejected = pq.read_table(tmp_path / "out" / "rejected" / "x.parquet").to_pylist()
    bad = [r for r in rejected if r["synthfilter"]["reason"] == "malformed"]
    assert len(bad) == 1 and "is bytes that are not UTF-8 (invalid continuation byte at byte 3)" in bad[0]["synthfilter"]["error"]
