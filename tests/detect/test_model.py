"""The shipped default model: loads without pickle, calibrated output, robust to cheap evasion."""

from __future__ import annotations

import json
import random
from pathlib import Path

import numpy as np
import pytest

from synthfilter.detect.model import Detector, default_model_path, files_sha256, get_detector

from .conftest import human_text, machine_text

ZERO_WIDTH = ["\u200b", "\u200c", "\u200d", "\ufeff", "\u2060"]
HOMOGLYPHS = {"a": "\u0430", "e": "\u0435", "o": "\u043e", "p": "\u0440", "c": "\u0441", "x": "\u0445",
              "i": "\u0456", "A": "\u0391", "E": "\u0395", "O": "\u039f"}


@pytest.fixture(scope="module")
def detector() -> Detector:
    return get_detector(None)


@pytest.fixture(scope="module")
def texts() -> list[str]:
    r = random.Random(99)
    return [human_text(r, r.randint(6, 30)) for _ in range(12)] + [machine_text(r, r.randint(6, 30))
                                                                   for _ in range(12)]


def test_default_model_is_shipped_and_small():
    path = default_model_path()
    assert (path / "card.json").is_file()
    total = sum(f.stat().st_size for f in path.iterdir() if f.is_file())
    assert total <= 50 * 1024 * 1024
    assert not any(f.suffix in (".pkl", ".pickle", ".joblib") for f in path.iterdir())


def test_arrays_load_without_pickle():
    path = default_model_path()
    for name in json.loads((path / "config.json").read_text())["files"]:
        if name.endswith(".npz"):
            with np.load(path / name, allow_pickle=False) as z:
                for key in z.files:
                    assert z[key].dtype != object


def test_card_describes_the_model(detector):
    card = detector.card
    names = {p["name"] for p in card["operating_points"]}
    assert {"default", "fpr1", "fpr5"} <= names
    for p in card["operating_points"]:
        assert 0.0 <= p["threshold"] <= 1.0 and 0.0 <= p["tpr"] <= 1.0 and 0.0 <= p["fpr"] <= 1.0
    assert 0.0 < card["train_prior"] < 1.0
    assert card["model_id"] == detector.model_id == "synthfilter-default-en@3"
    assert {s["licence"] for s in card["training_data"]["sources"]} >= {"MIT", "Apache-2.0", "CC BY 3.0"}
    assert "validation" in card["metrics"]
    for name, meta in card["files"].items():
        import hashlib

        assert hashlib.sha256((default_model_path() / name).read_bytes()).hexdigest() == meta["sha256"]
    assert card["sha256"] == detector.sha256 == files_sha256(default_model_path())


def test_predict_proba_shape_range_and_batching(detector, texts):
    p = detector.predict_proba(texts)
    assert p.dtype == np.float32 and p.shape == (len(texts),)
    assert np.all((p >= 0) & (p <= 1))
    small = Detector.load(default_model_path())
    small.batch_size = 5
    np.testing.assert_allclose(small.predict_proba(texts), p, atol=1e-6)
    assert detector.predict_proba([]).shape == (0,)
    assert np.isfinite(detector.predict_proba(["", " ", "Hi.", "\u200b"])).all()
    with pytest.raises(TypeError):
        detector.predict_proba("a single string")


def test_get_detector_caches_per_process(detector):
    assert get_detector(None) is detector
    assert get_detector(str(default_model_path())) is detector


def _zero_width(t: str, r: random.Random) -> str:
    return "".join(ch + (r.choice(ZERO_WIDTH) if r.random() < 0.3 else "") for ch in t)


def _homoglyph(t: str, r: random.Random) -> str:
    return "".join(HOMOGLYPHS[ch] if ch in HOMOGLYPHS and r.random() < 0.5 else ch for ch in t)


def _whitespace(t: str, r: random.Random) -> str:
    return "".join(r.choice([" ", "  ", "\n", "\t", " \u00a0", "\n\n   "]) if ch == " " else ch for ch in t)


def _casing(t: str, r: random.Random) -> str:
    return "".join(ch.upper() if r.random() < 0.3 else ch.lower() for ch in t)


@pytest.mark.parametrize("attack", [_zero_width, _homoglyph, _whitespace, _casing, lambda t, r: t.upper(),
                                    lambda t, r: _homoglyph(_zero_width(_whitespace(t, r), r), r)])
def test_cheap_evasion_moves_scores_less_than_005(detector, texts, attack):
    r = random.Random(5)
    before = detector.predict_proba(texts)
    after = detector.predict_proba([attack(t, r) for t in texts])
    assert np.max(np.abs(after - before)) < 0.05


def test_styles_are_ranked_sensibly(detector):
    r = random.Random(3)
    h = detector.predict_proba([human_text(r, 15) for _ in range(30)])
    m = detector.predict_proba([machine_text(r, 15) for _ in range(30)])
    assert m.mean() > h.mean()


def test_load_rejects_a_directory_that_is_not_a_model(tmp_path):
    from synthfilter.detect.model import ModelError

    with pytest.raises(ModelError, match="does not exist"):
        Detector.load(tmp_path / "nope")
    (tmp_path / "card.json").write_text(json.dumps({}))
    with pytest.raises(ModelError, match="missing"):
        Detector.load(tmp_path)


@pytest.mark.parametrize("damage", ["cut", "empty", "card"])
def test_a_damaged_model_file_is_named_in_a_model_error(tmp_path, damage):
    import shutil

    from synthfilter.detect.model import ModelError

    d = tmp_path / "model"
    shutil.copytree(default_model_path(), d)
    if damage == "card":
        victim = d / "card.json"
        victim.write_text("{ not json", encoding="utf-8")
    else:
        victim = sorted(d.glob("expert_*.npz"))[0]
        data = victim.read_bytes()
        victim.write_bytes(data[:1000] if damage == "cut" else b"")
    with pytest.raises(ModelError, match=f"{victim.name}: damaged or unreadable model file"):
        Detector.load(d)
    # The CLI's one line, exit 2 (it was an internal error, exit 3, naming no file).
    from helpers import run_cli

    (tmp_path / "in.jsonl").write_text(json.dumps({"text": "A short note about the weather today."}) + "\n")
    code, _, err = run_cli(["run", str(tmp_path / "in.jsonl"), "--out", str(tmp_path / "out"), "--model", str(d), "-q"])
    assert code == 2 and victim.name in err and "Traceback" not in err and len(err.strip().splitlines()) == 1


@pytest.mark.parametrize("victim, edit, what", [
    ("config.json", lambda c: [], "a list, expected a JSON object"),
    ("card.json", lambda c: [], "a list, expected a JSON object"),
    ("card.json", lambda c: "card", "a string, expected a JSON object"),
    ("config.json", lambda c: {**c, "adapter": "linear"}, "'adapter' is a string"),
    ("config.json", lambda c: {**c, "kinds": "chat"}, "'kinds' is not a list of strings"),
    ("card.json", lambda c: {**c, "operating_points": {"default": 0.5}}, "'operating_points' is not a list"),
    ("card.json", lambda c: {**c, "operating_points": [0.5]}, "'operating_points' is not a list of objects"),
    ("card.json", lambda c: {**c, "train_prior": [0.5]}, "'train_prior' is a list, expected a number or null"),
    ("card.json", lambda c: {**c, "model_id": ["x"]}, "'model_id' is a list"),
    ("card.json", lambda c: {**c, "metrics": []}, "'metrics' is a list"),
])
def test_config_or_card_of_the_wrong_json_type_is_a_damaged_model_file(tmp_path, victim, edit, what):
    # Valid JSON of the wrong shape ([] for an object) used to reach .get() and end in "internal
    # error: AttributeError", exit 3; now it is the damaged-file error a bad JSON file gets.
    import shutil

    from synthfilter.detect.model import ModelError

    d = tmp_path / "model"
    shutil.copytree(default_model_path(), d)
    path = d / victim
    path.write_text(json.dumps(edit(json.loads(path.read_text(encoding="utf-8")))), encoding="utf-8")
    with pytest.raises(ModelError, match=f"{victim}: damaged or unreadable model file") as e:
        Detector.load(d)
    assert what in str(e.value) and "reinstall" in str(e.value)
    if victim == "config.json" and what.startswith("a list"):  # the CLI's one line, exit 2
        from helpers import run_cli

        (tmp_path / "in.jsonl").write_text(json.dumps({"text": "A short note about the weather today."}) + "\n")
        code, _, err = run_cli(["run", str(tmp_path / "in.jsonl"), "--out", str(tmp_path / "out"), "--model", str(d),
                                "-q"])
        assert code == 2 and "config.json: damaged or unreadable model file" in err
        assert "Traceback" not in err and len(err.strip().splitlines()) == 1


def test_a_model_file_that_is_not_the_cards_is_refused(tmp_path):
    # Files that load but were never trained together (one model's LM copied over another's, or
    # an edited config) score with a model the card does not describe: refused, naming the file.
    import shutil

    from synthfilter.detect.model import ModelError

    d = tmp_path / "model"
    shutil.copytree(default_model_path(), d)
    from synthfilter.detect.model import files_sha256

    # A faithful copy loads; its digest for the manifest, from the digests the check computed,
    # is the one reading the files again gives.
    assert Detector.load(d).sha256 == files_sha256(d)
    shutil.copyfile(d / "lm_chat.npz", d / "lm_base.npz")
    with pytest.raises(ModelError, match="lm_base.npz: does not match the model card"):
        Detector.load(d)
    # A card without the file list (hand-written, older) is not checked.
    card = json.loads((d / "card.json").read_text(encoding="utf-8"))
    del card["files"]
    (d / "card.json").write_text(json.dumps(card), encoding="utf-8")
    Detector.load(d)


def test_default_model_path_points_at_the_repo_or_the_wheel():
    p = default_model_path()
    assert p.name == "default"
    assert p.parent.name in ("models", "_models")
    assert Path(p).is_dir()


def test_a_model_replaced_in_place_is_loaded_again_in_the_same_process(tmp_path: Path) -> None:
    # adapt --overwrite replaces a model's files at the same path: a long-lived process (a
    # notebook, a service) must not go on scoring with the copy it loaded before.
    import shutil

    from helpers import replace_model_in_place

    model = tmp_path / "model"
    shutil.copytree(default_model_path(), model)
    first = get_detector(model)
    assert get_detector(model) is first
    replace_model_in_place(model)
    again = get_detector(model)
    assert again is not first and again.sha256 != first.sha256


def test_model_identity_is_the_loaded_detectors_read_without_loading_it(tmp_path: Path, monkeypatch) -> None:
    # What a --resume of a finished run compares with the sha256 its manifest recorded: the same
    # digest (files_sha256) and id as the loaded model's, from the files alone.
    import shutil

    from synthfilter.detect.model import model_identity

    d = tmp_path / "model"
    shutil.copytree(default_model_path(), d)
    loaded = Detector.load(d)
    card = json.loads((d / "card.json").read_text(encoding="utf-8"))
    del card["model_id"]
    (tmp_path / "unnamed").mkdir()
    for f in d.iterdir():
        shutil.copyfile(f, tmp_path / "unnamed" / f.name)
    (tmp_path / "unnamed" / "card.json").write_text(json.dumps(card), encoding="utf-8")
    unnamed = Detector.load(tmp_path / "unnamed")

    def no_loading(*args, **kwargs):
        raise AssertionError("the model was loaded")

    monkeypatch.setattr(Detector, "load", no_loading)
    assert model_identity(d) == {"id": loaded.model_id, "sha256": loaded.sha256}
    assert model_identity(None) == {"id": "synthfilter-default-en@3", "sha256": files_sha256(default_model_path())}
    assert model_identity(tmp_path / "unnamed") == {"id": "unnamed@unversioned", "sha256": unnamed.sha256}
    assert unnamed.model_id == "unnamed@unversioned"


def test_scores_do_not_depend_on_the_batch(texts):
    # Bit for bit, so that --batch-size may change on resume and a datasets .map gives each
    # record one score whatever its batch size: the language models' percentiles and the linear
    # expert's sum once differed in their last bits with the texts scored together.
    det = Detector.load(default_model_path())
    got = {}
    for size in (1024, 5, 1):
        det.batch_size = size
        got[size] = (det.raw_scores(texts).tobytes(), det.predict_proba(texts).tobytes())
    assert got[5] == got[1024]
    assert got[1] == got[1024]


def test_a_batch_of_texts_without_tokens_is_scored(detector):
    p = detector.predict_proba(["\x00"])
    assert p.shape == (1,) and np.isfinite(p).all()
