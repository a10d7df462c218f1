"""End-to-end tests of the local engine: outputs, exact duplicates, conservation, determinism."""

from __future__ import annotations

import gzip
import json
from pathlib import Path

import orjson
import pyarrow as pa
import pyarrow.parquet as pq
import pytest

from helpers import make_records, read_jsonl, write_jsonl
from synthfilter.config import Config, ConfigError
from synthfilter.io.shards import InputError
from synthfilter.pipeline.run import UsageError, run_pipeline


def cfg_of(overrides: dict, **more) -> Config:
    return Config.from_dict({**overrides, **more})


def test_kept_lines_are_byte_identical_and_duplicates_rejected(tmp_path: Path, fast_config: dict) -> None:
    rows = make_records(60, seed=3)
    # Exact duplicates under normalisation: case, spacing, zero-width characters, punctuation.
    rows.append({"id": "dup-case", "text": rows[0]["text"].upper()})
    rows.append({"id": "dup-space", "text": "  " + rows[1]["text"].replace(" ", "\n  ") + "\t"})
    rows.append({"id": "dup-zw", "text": rows[2]["text"].replace("e", "e\u200b", 5)})
    src = write_jsonl(tmp_path / "in" / "part-0.jsonl", rows)
    res = run_pipeline([str(tmp_path / "in")], tmp_path / "out", cfg_of(fast_config))

    original = read_jsonl(src)
    kept = read_jsonl(tmp_path / "out" / "kept" / "part-0.jsonl")
    rejected = [orjson.loads(x) for x in read_jsonl(tmp_path / "out" / "rejected" / "part-0.jsonl")]
    assert kept == original[:60]  # byte-identical, input order
    assert {r["id"] for r in rejected} == {"dup-case", "dup-space", "dup-zw"}
    by_id = {r["id"]: r["synthfilter"] for r in rejected}
    assert by_id["dup-case"]["reason"] == "exact_duplicate"
    assert by_id["dup-case"]["duplicate_of"] == rows[0]["id"]
    assert by_id["dup-zw"]["duplicate_of"] == rows[2]["id"]
    assert res.report["duplicates"]["exact"] == 3
    assert res.report["duplicates"]["verify_threshold"] is None  # exact dedup only
    assert res.report["output"] == {
        "kept": 60, "rejected": 3, "dry_run": False,
        "rejected_by_reason": {"malformed": 0, "exact_duplicate": 3, "near_duplicate": 0, "synthetic_downsampled": 0,
                               "language": 0, "repetitive": 0},
    }
    assert set(res.report) >= {"version", "input", "output", "duplicates", "synthetic", "timing"}


@pytest.mark.parametrize("compression", [None, "gz", "zst"])
def test_compressed_outputs_keep_format(tmp_path: Path, fast_config: dict, compression: str | None) -> None:
    suffix = {None: ".jsonl", "gz": ".jsonl.gz", "zst": ".jsonl.zst"}[compression]
    rows = make_records(40, seed=5, dup_every=7)
    src = write_jsonl(tmp_path / "in" / f"x{suffix}", rows, compression)
    res = run_pipeline([str(src)], tmp_path / "out", cfg_of(fast_config))
    kept = read_jsonl(tmp_path / "out" / "kept" / f"x{suffix}")
    rej = read_jsonl(tmp_path / "out" / "rejected" / f"x{suffix}")
    assert len(kept) + len(rej) == 40
    assert len(rej) == res.report["duplicates"]["exact"] > 0
    assert set(kept) <= set(read_jsonl(src))


def test_duplicates_across_shards_keep_earliest(tmp_path: Path, fast_config: dict) -> None:
    a = make_records(20, seed=1)
    b = [{"id": "b-copy", "text": a[5]["text"]}] + make_records(5, seed=2)
    write_jsonl(tmp_path / "in" / "a.jsonl", a)
    write_jsonl(tmp_path / "in" / "sub" / "b.jsonl", b)
    run_pipeline([str(tmp_path / "in")], tmp_path / "out", cfg_of(fast_config))
    rej = [orjson.loads(x) for x in read_jsonl(tmp_path / "out" / "rejected" / "sub" / "b.jsonl")]
    assert [(r["id"], r["synthfilter"]["duplicate_of"]) for r in rej] == [("b-copy", a[5]["id"])]
    assert not (tmp_path / "out" / "rejected" / "a.jsonl").exists()


def test_workers_do_not_change_outputs(tmp_path: Path, fast_config: dict) -> None:
    for i in range(4):
        write_jsonl(tmp_path / "in" / f"p{i}.jsonl.gz", make_records(50, seed=i % 2, dup_every=6), "gz")
    outs = []
    for w in (1, 2):
        out = tmp_path / f"out{w}"
        run_pipeline([str(tmp_path / "in")], out, cfg_of(fast_config, workers=w))
        outs.append({p.relative_to(out).as_posix(): p.read_bytes()
                     for p in sorted(out.rglob("*")) if p.is_file() and p.suffix not in (".json", ".html")})
    assert outs[0] == outs[1]
    assert len(outs[0]) == 8  # kept + rejected for each of 4 shards


def test_parquet_rows_identical_and_rejected_has_reason(tmp_path: Path, fast_config: dict) -> None:
    rows = make_records(30, seed=9, dup_every=5)
    for i, r in enumerate(rows):
        r["n"] = i
        r["meta"] = {"lang": "en", "score": i / 10}
    table = pa.Table.from_pylist(rows)
    src = tmp_path / "in" / "t.parquet"
    src.parent.mkdir()
    pq.write_table(table, src)
    run_pipeline([str(src)], tmp_path / "out", cfg_of(fast_config))
    kept = pq.read_table(tmp_path / "out" / "kept" / "t.parquet")
    rej = pq.read_table(tmp_path / "out" / "rejected" / "t.parquet")
    assert kept.schema == table.schema
    assert kept.num_rows + rej.num_rows == 30
    original = {r["n"]: r for r in table.to_pylist()}
    for r in kept.to_pylist():
        assert r == original[r["n"]]
    for r in rej.to_pylist():
        assert r["synthfilter"]["reason"] == "exact_duplicate"
        assert r["synthfilter"]["duplicate_of"] in {x["id"] for x in kept.to_pylist()}


def test_nested_text_field_id_fallback_and_annotate(tmp_path: Path, fast_config: dict) -> None:
    rows = [{"doc": {"body": t["text"]}, "k": i} for i, t in enumerate(make_records(10, seed=4))]
    rows.append({"doc": {"body": rows[0]["doc"]["body"]}, "k": 99})
    write_jsonl(tmp_path / "in" / "n.jsonl", rows)
    run_pipeline([str(tmp_path / "in")], tmp_path / "out", cfg_of(fast_config, text_field="doc.body", annotate=True))
    kept = [orjson.loads(x) for x in read_jsonl(tmp_path / "out" / "kept" / "n.jsonl")]
    rej = [orjson.loads(x) for x in read_jsonl(tmp_path / "out" / "rejected" / "n.jsonl")]
    assert all(r["synthfilter"]["decision"] == "kept" for r in kept)
    assert rej[0]["synthfilter"]["duplicate_of"] == "n.jsonl:1"  # stable fallback id: shard path + line
    assert rej[0]["k"] == 99


def test_dry_run_writes_only_reports(tmp_path: Path, fast_config: dict) -> None:
    write_jsonl(tmp_path / "in" / "a.jsonl", make_records(20, seed=1, dup_every=4))
    res = run_pipeline([str(tmp_path / "in")], tmp_path / "out", cfg_of(fast_config, dry_run=True))
    assert sorted(p.name for p in (tmp_path / "out").iterdir()) == ["manifest.json", "report.json"]
    assert res.report["duplicates"]["exact"] > 0
    assert res.report["output"]["dry_run"] is True


def test_manifest_records_inputs_config_and_conservation(tmp_path: Path, fast_config: dict) -> None:
    import hashlib

    src = write_jsonl(tmp_path / "in" / "a.jsonl.gz", make_records(25, seed=2, dup_every=5), "gz")
    run_pipeline([str(src)], tmp_path / "out", cfg_of(fast_config, seed=7))
    m = json.loads((tmp_path / "out" / "manifest.json").read_text())
    (inp,) = m["inputs"]
    assert inp["sha256"] == hashlib.sha256(src.read_bytes()).hexdigest()
    assert inp["size"] == src.stat().st_size
    assert inp["records"] == inp["kept"] + inp["rejected"] == 25
    assert m["seed"] == 7 and m["config"]["seed"] == 7
    assert m["conservation"]["ok"] is True
    assert m["started"] <= m["ended"]


def test_out_dir_rules(tmp_path: Path, fast_config: dict) -> None:
    write_jsonl(tmp_path / "in" / "a.jsonl", make_records(5))
    with pytest.raises(UsageError, match="inside input directory"):
        run_pipeline([str(tmp_path / "in")], tmp_path / "in" / "out", cfg_of(fast_config))
    (tmp_path / "busy").mkdir()
    (tmp_path / "busy" / "something.txt").write_text("x")
    with pytest.raises(UsageError, match="not empty"):
        run_pipeline([str(tmp_path / "in")], tmp_path / "busy", cfg_of(fast_config))
    run_pipeline([str(tmp_path / "in")], tmp_path / "out", cfg_of(fast_config))
    with pytest.raises(UsageError, match="holds a finished synthfilter run; pass --overwrite"):
        run_pipeline([str(tmp_path / "in")], tmp_path / "out", cfg_of(fast_config))
    before = (tmp_path / "out" / "kept" / "a.jsonl").read_bytes()
    run_pipeline([str(tmp_path / "in")], tmp_path / "out", cfg_of(fast_config, overwrite=True))
    assert (tmp_path / "out" / "kept" / "a.jsonl").read_bytes() == before


def test_inputs_that_do_not_exist_or_are_unknown(tmp_path: Path, fast_config: dict) -> None:
    with pytest.raises(InputError, match="does not exist"):
        run_pipeline([str(tmp_path / "nope.jsonl")], tmp_path / "out", cfg_of(fast_config))
    (tmp_path / "x.csv").write_text("a,b\n")
    with pytest.raises(InputError, match="unknown extension"):
        run_pipeline([str(tmp_path / "x.csv")], tmp_path / "out", cfg_of(fast_config))
    with pytest.raises(InputError, match="glob matched no files"):
        run_pipeline([str(tmp_path / "*.jsonl")], tmp_path / "out", cfg_of(fast_config))
    # A broken link in an input directory is named as a link (it was named by its missing target).
    (tmp_path / "d").mkdir()
    (tmp_path / "d" / "gone.jsonl").symlink_to(tmp_path / "nowhere" / "x.jsonl")
    with pytest.raises(InputError, match=r"d/gone.jsonl: broken symbolic link \(to .*nowhere/x.jsonl\)"):
        run_pipeline([str(tmp_path / "d")], tmp_path / "out", cfg_of(fast_config))


def test_glob_inputs_keep_relative_paths(tmp_path: Path, fast_config: dict) -> None:
    write_jsonl(tmp_path / "d" / "2024" / "a.jsonl", make_records(5, seed=1))
    write_jsonl(tmp_path / "d" / "2025" / "a.jsonl", make_records(5, seed=2))
    run_pipeline([str(tmp_path / "d" / "*" / "a.jsonl")], tmp_path / "out", cfg_of(fast_config))
    assert (tmp_path / "out" / "kept" / "2024" / "a.jsonl").exists()
    assert (tmp_path / "out" / "kept" / "2025" / "a.jsonl").exists()


def test_gzip_output_is_deterministic(tmp_path: Path, fast_config: dict) -> None:
    write_jsonl(tmp_path / "in" / "a.jsonl.gz", make_records(30, seed=1, dup_every=3), "gz")
    run_pipeline([str(tmp_path / "in")], tmp_path / "o1", cfg_of(fast_config))
    run_pipeline([str(tmp_path / "in")], tmp_path / "o2", cfg_of(fast_config))
    a = (tmp_path / "o1" / "kept" / "a.jsonl.gz").read_bytes()
    assert a == (tmp_path / "o2" / "kept" / "a.jsonl.gz").read_bytes()
    assert gzip.decompress(a)


def test_provenance_and_target_ratio_without_detector(tmp_path: Path, fast_config: dict) -> None:
    rows = make_records(200, seed=21, machine_share=0.5)
    for r in rows:
        r["meta"] = {"generated_by": "gpt-4o" if r["label"] == "machine" else "staff writer"}
    write_jsonl(tmp_path / "in" / "a.jsonl", rows)
    cfg = cfg_of(fast_config, ratio={
        "target_ratio": 0.1, "provenance_field": "meta.generated_by",
        "provenance_map": {"gpt-*": "machine", "staff*": "human"},
    })
    res = run_pipeline([str(tmp_path / "in")], tmp_path / "out", cfg)
    syn = res.report["synthetic"]
    n_machine = sum(r["label"] == "machine" for r in rows)
    assert syn["known_provenance"] == {"human": 200 - n_machine, "machine": n_machine}
    kept = [orjson.loads(x) for x in read_jsonl(tmp_path / "out" / "kept" / "a.jsonl")]
    share = sum(r["label"] == "machine" for r in kept) / len(kept)
    assert share <= 0.1 and sum(r["label"] == "human" for r in kept) == 200 - n_machine  # no human lost
    rej = [orjson.loads(x) for x in read_jsonl(tmp_path / "out" / "rejected" / "a.jsonl")]
    assert {r["synthfilter"]["reason"] for r in rej} == {"synthetic_downsampled"}
    assert all(r["label"] == "machine" and r["synthfilter"]["p_machine"] == 1.0 for r in rej)
    assert syn["estimated_share_after"] <= 0.1 and syn["downsampled"] == len(rej)



def _near_copy(text: str) -> str:
    words = text.split()
    words[len(words) // 2] = "notably"
    return " ".join(words)


@pytest.mark.parametrize("workers", [1, 2])
def test_near_duplicates_rejected_with_survivor(tmp_path: Path, workers: int) -> None:
    from helpers import make_records as mk

    pool = mk(40, seed=31)
    # ~200-word documents: one edited word leaves a true Jaccard near 0.95.
    base = [{"id": f"b{i}", "text": pool[2 * i]["text"] + " " + pool[2 * i + 1]["text"]} for i in range(20)]
    rows = list(base)
    rows += [{"id": f"near-{i}", "text": _near_copy(r["text"])} for i, r in enumerate(base[:6])]
    rows.insert(3, b'{"text": broken')  # a malformed line, quarantined, must not disturb the index
    write_jsonl(tmp_path / "in" / "a.jsonl", rows)
    cfg = Config.from_dict({"detector": {"enabled": False}, "quiet": True, "workers": workers,
                            "on_error": "quarantine"})
    res = run_pipeline([str(tmp_path / "in")], tmp_path / "out", cfg)
    rej = {r.get("id"): r["synthfilter"] for r in map(orjson.loads, read_jsonl(tmp_path / "out" / "rejected" / "a.jsonl"))}
    for i, r in enumerate(base[:6]):
        assert rej[f"near-{i}"]["reason"] == "near_duplicate"
        assert rej[f"near-{i}"]["duplicate_of"] == r["id"]
    assert res.report["duplicates"]["near"] == 6 and res.report["input"]["malformed"] == 1
    assert res.report["duplicates"]["verify_threshold"] == res.report["duplicates"]["threshold"] == 0.8
    m = json.loads((tmp_path / "out" / "manifest.json").read_text())
    assert m["dedup"]["num_perm"] == 128 and m["dedup"]["bands"] * m["dedup"]["rows"] <= 128
    assert res.report["duplicates"]["bands"] == m["dedup"]["bands"]


def test_report_html_and_diversity_before_after(tmp_path: Path, fast_config: dict) -> None:
    rows = make_records(120, seed=41, dup_every=3)
    for r in rows:
        r["site"] = "a" if len(r["text"]) % 2 else "b"
    write_jsonl(tmp_path / "in" / "a.jsonl", rows)
    cfg = cfg_of(fast_config, report={"diversity": True, "html": True, "group_by": "site", "sample_size": 50})
    res = run_pipeline([str(tmp_path / "in")], tmp_path / "out", cfg)
    div = res.report["diversity"]
    assert div["before"]["records"] == 50  # the fixed-size sample
    assert 0 < div["after"]["records"] < 50  # the kept part of the same sample
    assert set(div["by_group"]) == {"a", "b"}
    # Exact duplicates were removed, so the kept sample has no exact duplicates left.
    assert div["before"]["exact_duplicate_rate"] > 0 and div["after"]["exact_duplicate_rate"] == 0
    html = (tmp_path / "out" / "report.html").read_text()
    assert "<svg" in html and "http://" not in html.split("</head>")[0].replace("http://www.w3.org", "")
    assert json.loads((tmp_path / "out" / "report.json").read_text())["diversity"] == div


def test_unknown_provenance_without_detector_warns_or_refuses_target(tmp_path: Path, fast_config: dict) -> None:
    from synthfilter.config import ConfigError

    rows = make_records(20, seed=51)
    for i, r in enumerate(rows):
        r["src"] = "human" if i < 5 else None
    write_jsonl(tmp_path / "in" / "a.jsonl", rows)
    ratio = {"provenance_field": "src", "provenance_map": {"human": "human"}}
    res = run_pipeline([str(tmp_path / "in")], tmp_path / "o1", cfg_of(fast_config, ratio=ratio))
    assert res.report["synthetic"]["unscored"] == 15
    assert any("no synthetic-share estimate" in w for w in res.report["warnings"])
    with pytest.raises(ConfigError, match="cannot meet --target-ratio: 15 records"):
        run_pipeline([str(tmp_path / "in")], tmp_path / "o2", cfg_of(fast_config, ratio={**ratio, "target_ratio": 0.1}))
    # No label and no score at all: the target used to be ignored (nothing dropped, exit 0).
    with pytest.raises(ConfigError, match="cannot downsample to a synthetic share of 10.0%: none of the 20 records"):
        run_pipeline([str(tmp_path / "in")], tmp_path / "o3", cfg_of(fast_config, ratio={"target_ratio": 0.1}))
    assert not (tmp_path / "o2").exists() and not (tmp_path / "o3").exists()  # nothing left to stand in the way


def test_scoring_a_shard_leaves_no_reference_cycle(tmp_path: Path) -> None:
    # A cycle in score_shard keeps the shard's columns, parsed records and sample alive until the
    # cyclic collector runs: with one worker, memory then grows with every shard of the corpus.
    import gc

    from synthfilter.io.shards import discover_shards
    from synthfilter.pipeline.stages import SampleKeeper, Scorer, score_shard

    write_jsonl(tmp_path / "in" / "a.jsonl", make_records(300, seed=5, dup_every=4))
    (shard,), _ = discover_shards([str(tmp_path / "in")])
    cfg = Config.from_dict({"detector": {"enabled": False}, "batch_size": 64})

    def alive() -> int:
        return sum(isinstance(o, (SampleKeeper, Scorer)) for o in gc.get_objects())

    gc.collect()
    before = alive()
    gc.disable()
    try:
        meta = score_shard(shard, cfg, tmp_path / "work")
        left = alive() - before
    finally:
        gc.enable()
    assert meta["records"] == 300
    assert left == 0, f"{left} Scorer/SampleKeeper objects outlived score_shard (a reference cycle holds them)"


def test_overwrite_keeps_the_previous_outputs_until_the_new_run_succeeds(tmp_path: Path, fast_config: dict) -> None:
    rows = make_records(60, seed=41)
    for i, r in enumerate(rows):
        if i % 3:  # a third of the records unlabelled: a target ratio without a detector cannot be met
            r["by"] = r["label"]
    write_jsonl(tmp_path / "in" / "a.jsonl", rows)
    out = tmp_path / "out"
    run_pipeline([str(tmp_path / "in")], out, cfg_of(fast_config))
    before = {p.relative_to(out): p.read_bytes() for p in out.rglob("*") if p.is_file()}
    failing = cfg_of(fast_config, overwrite=True, ratio={"target_ratio": 0.1, "provenance_field": "by"})
    with pytest.raises(ConfigError, match="cannot meet --target-ratio"):
        run_pipeline([str(tmp_path / "in")], out, failing)
    # The failed --overwrite gave the previous run's outputs back, byte for byte.
    assert {p.relative_to(out): p.read_bytes() for p in out.rglob("*") if p.is_file()} == before
    # A successful one replaces them and leaves nothing of them behind.
    run_pipeline([str(tmp_path / "in")], out, cfg_of(fast_config, overwrite=True, seed=7))
    assert sorted(p.name for p in out.iterdir()) == ["kept", "manifest.json", "report.json"]
    assert json.loads((out / "manifest.json").read_text())["seed"] == 7


def test_resume_of_a_finished_run_refuses_other_inputs_or_settings(tmp_path: Path, fast_config: dict) -> None:
    write_jsonl(tmp_path / "in" / "a.jsonl", make_records(20, seed=42))
    out = tmp_path / "out"
    run_pipeline([str(tmp_path / "in")], out, cfg_of(fast_config))
    same = run_pipeline([str(tmp_path / "in")], out, cfg_of(fast_config, resume=True, workers=2))
    assert same.manifest["conservation"]["ok"]  # same inputs and settings: nothing to do
    with pytest.raises(UsageError, match=r"finished and it ran with other settings \(seed\)"):
        run_pipeline([str(tmp_path / "in")], out, cfg_of(fast_config, resume=True, seed=3))
    with pytest.raises(UsageError, match=r"other settings \(dedup.threshold, seed\)"):
        run_pipeline([str(tmp_path / "in")], out, cfg_of(fast_config, resume=True, seed=3,
                                                         dedup={**fast_config.get("dedup", {}), "threshold": 0.7}))
    # A finished --dry-run wrote no records: resuming it as a real run would leave none.
    dry = tmp_path / "dry"
    run_pipeline([str(tmp_path / "in")], dry, cfg_of(fast_config, dry_run=True))
    with pytest.raises(UsageError, match="finished and it was a --dry-run, which writes no records: use --overwrite"):
        run_pipeline([str(tmp_path / "in")], dry, cfg_of(fast_config, resume=True))
    assert run_pipeline([str(tmp_path / "in")], dry, cfg_of(fast_config, overwrite=True)).report["output"]["kept"] > 0
    assert (dry / "kept" / "a.jsonl").exists()
    write_jsonl(tmp_path / "in" / "b.jsonl", make_records(5, seed=43))
    with pytest.raises(UsageError, match="it did not read b.jsonl: use --overwrite"):
        run_pipeline([str(tmp_path / "in")], out, cfg_of(fast_config, resume=True))
    (tmp_path / "in" / "b.jsonl").unlink()
    with (tmp_path / "in" / "a.jsonl").open("a") as f:
        f.write(json.dumps({"id": "late", "text": "A record added after the run finished."}) + "\n")
    with pytest.raises(UsageError, match="a.jsonl changed size since"):
        run_pipeline([str(tmp_path / "in")], out, cfg_of(fast_config, resume=True))


def test_a_run_stopped_by_bad_input_can_go_on_with_quarantine(tmp_path: Path, fast_config: dict) -> None:
    good, bad = make_records(30, seed=44), make_records(30, seed=45)
    write_jsonl(tmp_path / "in" / "a.jsonl", good)
    write_jsonl(tmp_path / "in" / "b.jsonl", bad)
    with (tmp_path / "in" / "b.jsonl").open("a") as f:
        f.write("[1]\n")
    # Nothing scored before the error (b.jsonl alone): nothing left behind, a plain rerun works.
    with pytest.raises(InputError, match=r"b.jsonl:31: expected a JSON object"):
        run_pipeline([str(tmp_path / "in" / "b.jsonl")], tmp_path / "solo", cfg_of(fast_config))
    assert not (tmp_path / "solo").exists()
    # a.jsonl scored first: kept for a --resume that sets the bad record aside.
    out = tmp_path / "out"
    with pytest.raises(InputError, match="1 shard already scored: .* rerun with --resume to keep it"):
        run_pipeline([str(tmp_path / "in")], out, cfg_of(fast_config))
    with pytest.raises(UsageError, match="holds an interrupted synthfilter run; pass --resume"):
        run_pipeline([str(tmp_path / "in")], out, cfg_of(fast_config, on_error="quarantine"))
    resumed = run_pipeline([str(tmp_path / "in")], out, cfg_of(fast_config, on_error="quarantine", resume=True))
    fresh = run_pipeline([str(tmp_path / "in")], tmp_path / "fresh", cfg_of(fast_config, on_error="quarantine"))
    assert resumed.report["output"] == fresh.report["output"]
    for part in ("kept/a.jsonl", "kept/b.jsonl", "rejected/b.jsonl"):
        assert (out / part).read_bytes() == (tmp_path / "fresh" / part).read_bytes()


def test_a_quarantining_run_is_not_resumed_as_one_that_stops_on_bad_input(tmp_path: Path, fast_config: dict) -> None:
    from synthfilter.pipeline.run import WORK_DIR, check_resumable, run_json

    quarantine = cfg_of(fast_config, on_error="quarantine")
    work = tmp_path / WORK_DIR
    work.mkdir()
    (work / "run.json").write_bytes(run_json(quarantine))
    prev = json.loads((work / "run.json").read_text())
    check_resumable(prev, quarantine, "out")
    with pytest.raises(UsageError, match="set bad records aside .* resume with it"):
        check_resumable(prev, cfg_of(fast_config), "out")
    # The other way is allowed: shards scored under "fail" held no bad record.
    check_resumable(json.loads(run_json(cfg_of(fast_config))), quarantine, "out")


def test_report_command_resumes_as_its_message_says(tmp_path: Path) -> None:
    from helpers import run_cli

    write_jsonl(tmp_path / "in" / "a.jsonl", make_records(30, seed=46))
    args = ["report", str(tmp_path / "in"), "--out", str(tmp_path / "rep"), "--no-detector", "-q", "--workers", "1"]
    assert run_cli(args)[0] == 0
    code, _, err = run_cli(args)
    assert code == 2 and "holds a finished synthfilter run; pass --overwrite to replace it" in err
    # --resume of it is accepted (it was "No such option: --resume") and has nothing left to do.
    code, _, err = run_cli([*args, "--resume"])
    assert code == 0 and "No such option" not in err
    assert run_cli([*args, "--overwrite"])[0] == 0


def test_an_id_field_missing_from_records_is_named(tmp_path: Path, fast_config: dict) -> None:
    rows = make_records(20, seed=8)
    for i, r in enumerate(rows):
        r["uid"] = f"u{i}" if i % 4 else None  # null in 5 of 20
    write_jsonl(tmp_path / "in" / "a.jsonl", rows)
    res = run_pipeline([str(tmp_path / "in")], tmp_path / "o1", cfg_of(fast_config, id_field="uid"))
    (w,) = [w for w in res.report["warnings"] if "id field" in w]
    assert "id field 'uid' is missing in 5 of 20 records" in w and "'<shard path>:<line>'" in w
    res = run_pipeline([str(tmp_path / "in")], tmp_path / "o2", cfg_of(fast_config, id_field="uuid"))
    assert any("id field 'uuid' is in none of the 20 records" in w for w in res.report["warnings"])
    # Without a field named, 'id' is read when present and the fallback is the documented default.
    res = run_pipeline([str(tmp_path / "in")], tmp_path / "o3", cfg_of(fast_config))
    assert not [w for w in res.report["warnings"] if "id field" in w]


def test_records_sharing_an_id_are_named(tmp_path: Path, fast_config: dict) -> None:
    rows = make_records(20, seed=12)
    for r in rows[5:9]:
        r["id"] = "7"  # four records with one id
    rows[12]["id"] = rows[13]["id"] = "pair"  # and two with another
    write_jsonl(tmp_path / "in" / "a.jsonl", rows)
    res = run_pipeline([str(tmp_path / "in")], tmp_path / "o1", cfg_of(fast_config))
    (w,) = [w for w in res.report["warnings"] if "share their id" in w]
    assert w.startswith("6 records share their id with another record of the same shard (e.g. '7')")
    unique = make_records(20, seed=12)
    write_jsonl(tmp_path / "in2" / "a.jsonl", unique)
    res = run_pipeline([str(tmp_path / "in2")], tmp_path / "o2", cfg_of(fast_config))
    assert not [w for w in res.report["warnings"] if "share their id" in w]


def test_ids_repeated_across_shards_are_named(tmp_path: Path, fast_config: dict) -> None:
    # A shard exported again with its ids (and some texts edited) next to the first export: the
    # per-shard check sees nothing wrong, yet duplicate_of and every seeded choice key on the id.
    first = make_records(12, seed=21)
    first[4] = {"id": "post-0412", "text": "The harbour office reopens on Monday after the storm damage to its roof "
                                           "was repaired over the long weekend."}
    first[9] = {"id": "post-0077", "text": "Volunteers counted forty-one herons along the estuary this spring, "
                                           "eight more than the survey found last year."}
    again = make_records(10, seed=22)
    again[2] = {"id": "post-0412", "text": "The harbour office reopens on Monday, once the roof damaged in the "
                                           "storm has been repaired."}
    again[6] = {"id": "post-0077", "text": "Forty-one herons were counted along the estuary by volunteers this "
                                           "spring, up eight on last year's survey."}
    third = make_records(8, seed=23)
    third[5] = {"id": "post-0412", "text": "Harbour office: open again from Monday; the storm-damaged roof is "
                                           "fixed."}
    write_jsonl(tmp_path / "in" / "a.jsonl", first)
    write_jsonl(tmp_path / "in" / "b.jsonl", again)
    write_jsonl(tmp_path / "in" / "c.jsonl", third)
    res = run_pipeline([str(tmp_path / "in")], tmp_path / "o1", cfg_of(fast_config))
    (w,) = [w for w in res.report["warnings"] if "across shards" in w]
    # Two ids (one of them in all three shards, counted once), the smallest named with two shards.
    assert w.startswith("2 ids are repeated across shards (e.g. 'post-0077', in a.jsonl and in b.jsonl)"), w
    assert "duplicate_of then names more than one record" in w
    assert not [w for w in res.report["warnings"] if "share their id" in w]  # none within a shard
    # Distinct ids across the shards: no warning; and one within a shard is warned of as before,
    # without the note that shards are not checked against each other (they now are).
    third[5]["id"] = third[1]["id"]
    for name, rows in (("a", make_records(12, seed=21)), ("b", make_records(10, seed=22)), ("c", third)):
        write_jsonl(tmp_path / "in2" / f"{name}.jsonl", rows)
    res = run_pipeline([str(tmp_path / "in2")], tmp_path / "o2", cfg_of(fast_config))
    assert not [w for w in res.report["warnings"] if "across shards" in w]
    (w,) = [w for w in res.report["warnings"] if "share their id" in w]
    assert w.startswith("2 records share their id with another record of the same shard (e.g. 's23-1')")
    assert w.endswith("(each is then named <shard path>:<line>)")


def test_gate_settings_do_not_stand_in_the_way_of_a_resume() -> None:
    # A run started before gate.post_statuses existed was refused on resume for that setting.
    from synthfilter.pipeline.run import config_fingerprint, differing_settings

    before = Config.from_dict({}).to_dict()
    del before["gate"]["post_statuses"]
    now = Config.from_dict({})
    assert differing_settings(before, now) == [] and config_fingerprint(before) == config_fingerprint(now)
    assert differing_settings(before, Config.from_dict({"seed": 4})) == ["seed"]


def test_an_earlier_runs_output_directory_is_not_read_as_a_corpus(tmp_path: Path, fast_config) -> None:
    # Its rejected/ would come back in: refused with the way out (its kept/), which is read.
    write_jsonl(tmp_path / "in" / "a.jsonl", make_records(30, seed=2, dup_every=5))
    first = tmp_path / "runs" / "first"
    run_pipeline([str(tmp_path / "in")], first, cfg_of(fast_config))
    for given in (first, tmp_path / "runs", str(tmp_path / "runs" / "**" / "*.jsonl")):
        with pytest.raises(UsageError, match=f"{first}: this is a synthfilter output directory .* pass {first / 'kept'}"):
            run_pipeline([str(given)], tmp_path / "second", cfg_of(fast_config))
    # Reached through a symbolic link from an input directory, it is the same directory.
    (tmp_path / "linked").mkdir()
    (tmp_path / "linked" / "run").symlink_to(first, target_is_directory=True)
    with pytest.raises(UsageError, match="this is a synthfilter output directory"):
        run_pipeline([str(tmp_path / "linked")], tmp_path / "second", cfg_of(fast_config))
    res = run_pipeline([str(first / "kept")], tmp_path / "second", cfg_of(fast_config))
    assert res.report["input"]["records"] == json.loads((first / "report.json").read_text())["output"]["kept"]
    # An output directory under a recursive glob's root would be read by the next run of that glob.
    with pytest.raises(UsageError, match="output directory is inside input glob"):
        run_pipeline([str(tmp_path / "in" / "**" / "*.jsonl")], tmp_path / "in" / "out", cfg_of(fast_config))


def test_a_directory_holding_an_interrupted_or_finished_run_says_which(tmp_path: Path, fast_config) -> None:
    write_jsonl(tmp_path / "in" / "a.jsonl", make_records(20, seed=4))
    out = tmp_path / "out"
    run_pipeline([str(tmp_path / "in")], out, cfg_of(fast_config))
    with pytest.raises(UsageError, match="holds a finished synthfilter run; pass --overwrite"):
        run_pipeline([str(tmp_path / "in")], out, cfg_of(fast_config))
    (out / "manifest.json").unlink()
    (out / "_synthfilter").mkdir()
    (out / "_synthfilter" / "run.json").write_text("{}")
    with pytest.raises(UsageError, match="holds an interrupted synthfilter run; pass --resume to continue it"):
        run_pipeline([str(tmp_path / "in")], out, cfg_of(fast_config))
