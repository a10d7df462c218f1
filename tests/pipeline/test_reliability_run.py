"""The reliability checks through `synthfilter run`: the drift message, the refusal (exit 1,
nothing written), the override (kept share unknown), provenance re-measurement, report.html.

The detector is the shipped one, but its card is re-measured here on a calibration split of
project-made text (operating points, score histograms, held-out-source rate shifts: the v3
card schema), so that "in distribution" means more text from the same maker, whatever model
ships. The off-distribution corpus is built from the same texts, chosen by score: human texts the
detector finds machine-like and machine texts it finds human-like (what an unseen source does to
a detector), which no mixture of the card's class histograms can explain.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import numpy as np
import pytest

from helpers import make_records, run_cli, write_jsonl

EDGES = [0.0, 0.02, 0.05, 0.1, 0.2, 0.3, 0.4, 0.5, 0.6, 0.7, 0.8, 0.9, 0.95, 0.98, 0.99, 0.995, 1.0]


@pytest.fixture(scope="module")
def setup(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Any]:
    from synthfilter.detect.model import CONFIG_FILE, ModelError, default_model_path, get_detector

    if not (default_model_path() / CONFIG_FILE).is_file():
        pytest.skip("no shipped detector model in models/default")
    try:
        det = get_detector(None)
    except ModelError as e:
        pytest.skip(f"the shipped detector does not load here: {e}")
    root = tmp_path_factory.mktemp("reliability")
    rows = make_records(2400, seed=31, machine_share=0.5)
    scores = np.asarray(det.predict_proba([r["text"] for r in rows]), dtype=np.float32)
    y = np.array([r["label"] == "machine" for r in rows])
    cal = np.arange(len(rows)) % 2 == 0  # calibration split: the card is measured on it
    h, m = scores[cal & ~y], scores[cal & y]
    points = []
    for name, q in (("fpr1", 0.99), ("fpr5", 0.95)):
        t = float(np.quantile(h, q))
        tp, fp = int((m >= np.float32(t)).sum()), int((h >= np.float32(t)).sum())
        points.append({"name": name, "threshold": t, "tpr": tp / len(m), "fpr": fp / len(h),
                       "confusion": {"tp": tp, "fn": len(m) - tp, "fp": fp, "tn": len(h) - fp}})
    card = dict(det.card)
    card.pop("train_prior", None)  # the shipped calibration is not this text's
    card.update({
        "operating_points_measured_on": "held-out calibration split of project-made text, shipped model",
        "operating_points": points,
        "score_distribution": {"measured_on": "the same split", "edges": EDGES,
                               "human": np.histogram(h, EDGES)[0].tolist(), "machine": np.histogram(m, EDGES)[0].tolist()},
        "source_shift": {"measured_on": "made up for the test", "points": {p["name"]: [
            {"held_out": "a", "train_tpr": p["tpr"], "train_fpr": p["fpr"], "tpr": p["tpr"] * 0.7, "fpr": p["fpr"] * 2},
            {"held_out": "b", "train_tpr": p["tpr"], "train_fpr": p["fpr"], "tpr": p["tpr"] * 0.4, "fpr": p["fpr"] * 5}]
            for p in points}},
    })
    model = root / "model"
    model.mkdir()
    for f in default_model_path().iterdir():
        if f.name != "card.json":
            (model / f.name).symlink_to(f.resolve())
    (model / "card.json").write_text(json.dumps(card), encoding="utf-8")

    rest = np.flatnonzero(~cal)
    rng = np.random.default_rng(0)
    humans, machines = rest[~y[rest]], rest[y[rest]]
    # In distribution: 30 % machine, drawn at random from the held-out half.
    ind = np.concatenate([rng.choice(humans, 560, replace=False), rng.choice(machines, 240, replace=False)])
    # Off distribution: the most machine-like humans and the most human-like machines.
    off = np.concatenate([humans[np.argsort(-scores[humans])][:400], machines[np.argsort(scores[machines])][:200]])
    corpora = {}
    for name, idx in (("in", ind), ("off", off)):
        recs = [{"id": rows[i]["id"], "text": rows[i]["text"], "who": rows[i]["label"]} for i in sorted(idx)]
        corpora[name] = write_jsonl(root / name / "part.jsonl", recs)
    return {"model": str(model), "root": root, "corpora": corpora, "truth": {"in": 0.3, "off": 200 / 600}}


def run(setup: dict[str, Any], corpus: str, out: Path, *extra: str) -> tuple[int, str, str]:
    return run_cli(["run", str(setup["corpora"][corpus].parent), "--out", str(out), "--model", setup["model"],
                    "--workers", "1", "--no-near-dedup", *extra])


def synthetic(out: Path) -> dict[str, Any]:
    return json.loads((out / "report.json").read_text())["synthetic"]


def test_in_distribution_no_drift_message_and_the_target_is_met(setup: dict[str, Any], tmp_path: Path) -> None:
    code, stdout, stderr = run(setup, "in", tmp_path / "o", "--target-ratio", "0.1")
    assert code == 0, stderr
    syn = synthetic(tmp_path / "o")
    assert syn["reliability"]["verdict"] == "ok", syn["reliability"]
    assert syn["weak_detector"] is False and syn["kept_share_known"] is True
    assert syn["reliability"]["checks"]["mixture_fit"]["level"] == "ok"
    assert "reliable" not in stdout and syn["estimated_share_after"] <= 0.1 + 1e-9
    assert syn["ci95_before"][0] <= setup["truth"]["in"] <= syn["ci95_before"][1]


def test_off_distribution_the_drift_message_says_what_how_big_and_what_to_do(setup: dict[str, Any],
                                                                            tmp_path: Path) -> None:
    code, stdout, stderr = run(setup, "off", tmp_path / "o")
    assert code == 0, stderr
    syn = synthetic(tmp_path / "o")
    assert syn["reliability"]["verdict"] == "unreliable" and syn["weak_detector"] is True
    warning = next(line for line in stdout.splitlines() if line.startswith("warning: the detector looks"))
    assert "synthfilter adapt LABELLED.jsonl --out DIR" in warning and "widened to [" in warning
    assert "em " not in warning and "acc " not in warning
    # The interval is widened over the card's held-out-source rates, and covers the truth.
    lo, hi = syn["ci95_before"]
    slo, shi = syn["reliability"]["ci95_sampling"]
    assert syn["reliability"]["interval"] == "source_shift"
    assert lo <= slo and shi <= hi and hi - lo > 2 * (shi - slo)
    assert lo <= setup["truth"]["off"] <= hi
    html = (tmp_path / "o" / "report.html").read_text()
    assert "Detector reliability on this corpus: unreliable" in html and "score histogram fit" in html


def test_off_distribution_target_ratio_is_refused_and_nothing_is_written(setup: dict[str, Any],
                                                                        tmp_path: Path) -> None:
    out = tmp_path / "o"
    code, stdout, stderr = run(setup, "off", out, "--target-ratio", "0.1")
    assert code == 1
    errors = [line for line in stderr.splitlines() if line.startswith("error:")]
    assert len(errors) == 1 and errors[0].startswith("error: refusing to downsample to target ratio 0.1: ")
    assert "--allow-unreliable-detector" in errors[0] and "synthfilter adapt" in errors[0]
    assert "`synthfilter report INPUT... --out DIR` shows the estimate and these checks" in errors[0]
    assert not out.exists()


def test_off_distribution_override_goes_on_and_says_the_kept_share_is_unknown(setup: dict[str, Any],
                                                                             tmp_path: Path) -> None:
    code, stdout, stderr = run(setup, "off", tmp_path / "o", "--target-ratio", "0.1", "--allow-unreliable-detector")
    assert code == 0, stderr
    syn = synthetic(tmp_path / "o")
    assert syn["kept_share_known"] is False and syn["estimated_share_after"] is None and syn["ci95_after"] is None
    assert syn["downsampled"] > 0
    assert "-> unknown (the detector is unreliable on this corpus)" in stdout
    assert "Synthetic share" in (tmp_path / "o" / "report.html").read_text()


def test_provenance_re_measures_the_rates(setup: dict[str, Any], tmp_path: Path) -> None:
    # Part of the off-distribution corpus carries provenance: the rates are re-measured on it and
    # the estimate moves to the truth (the records are all of one maker, so they are representative).
    cfg = tmp_path / "c.toml"
    cfg.write_text('[ratio]\nprovenance_field = "who"\n', encoding="utf-8")
    src = setup["corpora"]["off"]
    recs = [json.loads(line) for line in src.read_text().splitlines()]
    for i, r in enumerate(recs):
        if i % 3:
            del r["who"]  # two thirds without provenance
    corpus = write_jsonl(tmp_path / "in" / "part.jsonl", recs)
    common = ["run", str(corpus.parent), "--model", setup["model"], "--workers", "1", "--no-near-dedup",
              "--config", str(cfg)]
    code, _, stderr = run_cli([*common, "--out", str(tmp_path / "a")])
    assert code == 0, stderr
    off = tmp_path / "off.toml"
    off.write_text('[ratio]\nprovenance_field = "who"\nremeasure_rates = false\n', encoding="utf-8")
    code, _, stderr = run_cli([*common[:-1], str(off), "--out", str(tmp_path / "b")])
    assert code == 0, stderr
    a, b = synthetic(tmp_path / "a"), synthetic(tmp_path / "b")
    check = a["reliability"]["checks"]["provenance"]
    assert check["rates_used"] == "corpus" and check["labelled"]["human"] >= 100
    point = check["points"][-1]
    # Off distribution means worse rates than the card: more humans flagged, no more machines caught.
    assert point["measured_fpr"] > point["card_fpr"] and point["measured_tpr"] <= point["card_tpr"]
    assert b["reliability"]["checks"]["provenance"]["level"] == "not_run"
    unknown = [r for r in recs if "who" not in r]
    machine_ids = {json.loads(line)["id"] for line in src.read_text().splitlines() if json.loads(line)["who"] == "machine"}
    truth = sum(r["id"] in machine_ids for r in unknown) / len(unknown)
    err_a = abs(a["estimated_share_before"] - (a["known_provenance"]["machine"] + truth * len(unknown)) / len(recs))
    err_b = abs(b["estimated_share_before"] - (b["known_provenance"]["machine"] + truth * len(unknown)) / len(recs))
    assert err_a <= max(err_b, 0.02)  # re-measured rates: at least as close to the truth (within 2 points)


def test_off_distribution_target_ratio_is_refused_on_ray_too(setup: dict[str, Any], tmp_path: Path) -> None:
    # On Ray the plan runs inside the decide task (a worker): the refusal must reach the user as
    # the same one-line error and exit code, not as a worker's traceback.
    pytest.importorskip("ray")
    out = tmp_path / "o"
    code, stdout, stderr = run(setup, "off", out, "--target-ratio", "0.1", "--engine", "ray")
    assert code == 1, stderr
    errors = [line for line in stderr.splitlines() if line.startswith("error:")]
    assert len(errors) == 1 and errors[0].startswith("error: refusing to downsample to target ratio 0.1: "), stderr
    assert "Traceback" not in stderr and "ray::" not in stderr
    assert not out.exists()
