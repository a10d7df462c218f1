"""The gate streams an export: the same verdict, decisions, ids and JSON as gating the records
held in a list, and a peak memory that does not grow with the export."""

from __future__ import annotations

import gc
import json
import os
import subprocess
import sys
import tracemalloc
from pathlib import Path

import pytest

from helpers import write_wxr_export
from test_gate import make_posts, wxr, write_csv

import synthfilter
from synthfilter.gate import gate_exports
from synthfilter.io.cms import read_exports
from synthfilter.io.shards import InputError

CONFIG = {"detector": {"enabled": False},
          "ratio": {"provenance_field": "ai_generated", "provenance_map": {"1": "machine", "0": "human"}}}
POLICY = {"max_duplicates": 0.05, "min_records": 10}


def test_streamed_exports_gate_as_the_records_held_in_a_list(tmp_path: Path) -> None:
    posts = make_posts(n_human=30, n_machine=12, exact=3, near=2)
    # The same post ids in two exports: qualified with their file, as read_exports does.
    a = wxr(tmp_path / "a.xml", posts)
    b = wxr(tmp_path / "b.xml", posts[:10])
    c = write_csv(tmp_path / "c.csv", posts[5:15])
    paths = [a, b, c]
    streamed = gate_exports(paths, POLICY, CONFIG)
    held = synthfilter.gate(read_exports(paths).records, POLICY, CONFIG)

    assert streamed.measured == held.measured and streamed.passed == held.passed
    assert list(streamed.reasons) == list(held.reasons)
    assert list(streamed.duplicate_of) == list(held.duplicate_of)
    assert [r.id for r in streamed.records] == [r.id for r in held.records]
    assert any(":" in r.id for r in streamed.records)  # the repeated ids were qualified
    assert streamed.offending_ids == held.offending_ids and list(streamed.offending) == list(held.offending)
    assert [r.id for r in streamed.approved] == [r.id for r in held.approved]

    # write_json streams the offending items, byte for byte what json.dumps of to_dict() gives.
    doc = json.loads(streamed.write_json(tmp_path / "gate.json").read_text(encoding="utf-8"))
    expected = json.dumps(streamed.to_dict(), indent=2, ensure_ascii=False, default=str)
    assert (tmp_path / "gate.json").read_text(encoding="utf-8") == expected
    assert doc["offending_ids"] == held.offending_ids and len(doc["offending"]) == len(held.offending) > 0

    manifest = streamed.write_approved(tmp_path / "out")
    assert manifest["conservation"]["records"] == len(held.records)
    assert manifest["conservation"]["approved"] == len(held.approved)


def test_an_export_that_changes_between_the_two_reads_is_an_error(tmp_path: Path) -> None:
    posts = make_posts(n_human=12, n_machine=0, exact=0, near=0)
    export = wxr(tmp_path / "blog.xml", posts)
    result = gate_exports([export], POLICY, CONFIG)
    wxr(export, posts[:-1])  # an item went away before the approved subset was written
    with pytest.raises(InputError, match=r"the export changed while it was gated \(12 records the first time, 11 now\)"):
        result.write_approved(tmp_path / "out")
    assert not (tmp_path / "out" / "approved.jsonl").exists()


def test_offending_items_are_written_in_full_but_not_held(tmp_path: Path) -> None:
    # The same posts labelled human in one export and machine in the other, where all of them
    # offend. --json names every item in full, but the result holds a few numbers per item, not
    # its id, title, link and source: those wait in a temporary file until an item is built.
    posts = make_posts(n_human=700, n_machine=0, exact=0, near=0)
    for p in posts:
        p["title"] += ": " + ", ".join(["a title as long as the ones editors write"] * 3)
    human = wxr(tmp_path / "human.xml", posts)
    machine = wxr(tmp_path / "machine.xml", [{**p, "label": "machine"} for p in posts])
    gate_exports([human], POLICY, CONFIG)  # what the first gate imports and caches

    def held(export: Path) -> tuple[synthfilter.GateResult, int]:
        gc.collect()
        tracemalloc.start()
        try:
            result = gate_exports([export], POLICY, CONFIG)
            gc.collect()
            return result, tracemalloc.get_traced_memory()[0]
        finally:
            tracemalloc.stop()

    clean, clean_bytes = held(human)
    flagged, flagged_bytes = held(machine)
    assert len(clean.offending) == 0 and len(flagged.offending) == len(posts)
    per_item = (flagged_bytes - clean_bytes) / len(posts)
    assert per_item < 64, f"{per_item:.0f} bytes held per offending item (its strings alone are ~200)"

    doc = json.loads(flagged.write_json(tmp_path / "gate.json").read_text(encoding="utf-8"))
    assert doc["offending_ids"] == [p["id"] for p in posts]  # one problem each, all P = 1: input order
    assert [o["title"] for o in doc["offending"]] == [p["title"] for p in posts]
    assert doc["offending"] == [o.to_dict() for o in flagged.offending]
    assert {o["link"] for o in doc["offending"]} == {f"https://blog.example/?p={p['id']}" for p in posts}


def _peak_mb(export: Path, out: Path) -> float:
    cmd = [sys.executable, "-m", "synthfilter", "gate", str(export), "--no-detector", "--max-duplicates", "0.05",
           "--provenance-field", "ai_generated", "--provenance-map", "1=machine,0=human",
           "--json", str(out / "gate.json"), "--write-approved", str(out / "approved"), "-q"]
    proc = subprocess.Popen(cmd, stderr=subprocess.PIPE)
    _, status, usage = os.wait4(proc.pid, 0)
    assert os.waitstatus_to_exitcode(status) in (0, 1), proc.stderr.read().decode() if proc.stderr else ""
    return usage.ru_maxrss / 1024


def test_peak_memory_does_not_grow_with_the_export(tmp_path: Path) -> None:
    small, big = tmp_path / "small.xml", tmp_path / "big.xml"
    write_wxr_export(small, 300_000)
    posts = write_wxr_export(big, 8_000_000)
    (tmp_path / "s").mkdir()
    (tmp_path / "b").mkdir()
    growth = _peak_mb(big, tmp_path / "b") - _peak_mb(small, tmp_path / "s")
    # Holding the records (what the gate did before) costs about 2.5 times the export: ~20 MB here.
    assert growth < 8, f"peak grew by {growth:.1f} MB for {posts:,} posts (8 MB more export)"
