"""Language identification and the language rules, with the real py3langid model on text the
tests make (tests/langtext.py): the batched path against py3langid itself, the rules, and
``synthfilter run`` on mixed-language corpora."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import numpy as np
import pytest

from helpers import read_jsonl, write_jsonl
from langtext import LANGUAGES, document, sentences
from synthfilter.config import Config, ConfigError
from synthfilter.language import CODES, LanguageIdentifier, code_of, language_roles, names_of
from synthfilter.pipeline.run import run_pipeline


@pytest.fixture(scope="module")
def identifier() -> LanguageIdentifier:
    return LanguageIdentifier()


def test_batched_path_equals_py3langid_classify(identifier: LanguageIdentifier) -> None:
    from py3langid.langid import MODEL_FILE, LanguageIdentifier as Py3

    ref = Py3.from_model_file(MODEL_FILE, norm_probs=True, min_confidence=0.5)
    texts = [s for lang in LANGUAGES for s in sentences(lang, 8, seed=3)]
    texts += [document("en", 12), "", "   ", "12345 67890", "SHOUTING IN CAPITALS ABOUT THE FERRY", "ok", "😀🎉"]
    codes, conf = identifier.identify(texts)
    for text, code, c in zip(texts, names_of(codes), conf.tolist()):
        label, p = ref.classify(text[: identifier.sample_chars])
        assert code == label and abs(c - p) < 1e-3, text


def test_each_language_is_identified(identifier: LanguageIdentifier) -> None:
    for lang in LANGUAGES:
        codes, conf = identifier.identify(sentences(lang, 30, seed=11))
        assert (np.asarray(names_of(codes)) == lang).mean() >= 0.95, lang
        assert float(np.median(conf)) > 0.8


def test_the_code_table_holds_every_label_of_the_model(identifier: LanguageIdentifier) -> None:
    assert identifier.model.codes.max() < len(CODES) and CODES[0] == "und"
    assert code_of("en") == CODES.index("en") and code_of("klingon") == 0


def test_language_roles() -> None:
    codes = np.array([code_of(c) for c in ("en", "de", "und", "zh")], dtype=np.uint8)
    roles = language_roles(codes, ["en"], None)
    assert roles.scored.tolist() == [True, False, True, False]  # und: too short to tell, scored
    assert roles.allowed.all()
    assert language_roles(codes, ["*"], None).scored.all()
    assert language_roles(codes, ["en", "zh"], ["en", "de"]).allowed.tolist() == [True, True, False, False]
    assert language_roles(codes, ["en"], ["und"]).allowed.tolist() == [False, False, True, False]


def test_config_checks_language_codes() -> None:
    with pytest.raises(ConfigError, match="unknown language code"):
        Config.from_dict({"language": {"keep": ["english"]}})
    with pytest.raises(ConfigError, match="must not be empty"):
        Config.from_dict({"detector": {"languages": []}})
    assert Config.from_dict({"language": {"keep": "en, de"}}).language.keep == ["en", "de"]
    assert not Config.from_dict({"detector": {"enabled": False}}).identifies_language
    assert Config.from_dict({"detector": {"enabled": False}, "language": {"keep": ["en"]}}).identifies_language
    assert not Config.from_dict({"detector": {"languages": ["*"]}}).identifies_language


# -- through synthfilter run --------------------------------------------------------------------


def _mixed(n_per_lang: int = 6) -> list[dict[str, Any]]:
    rows = []
    for lang in LANGUAGES:
        for k in range(n_per_lang if lang != "en" else n_per_lang * 9):
            rows.append({"id": f"{lang}-{k}", "text": document(lang, 4, seed=k), "lang": lang})
    return rows


def _run(tmp_path: Path, rows: list[dict[str, Any]], **options: Any) -> tuple[Any, dict[str, dict[str, Any]]]:
    write_jsonl(tmp_path / "in" / "part.jsonl", rows)
    base = {"quiet": True, "workers": 1, "annotate": True, "dedup": {"near": False},
            "report": {"diversity": False, "html": False}}
    cfg = Config.from_dict({**base, **options})
    res = run_pipeline([str(tmp_path / "in")], tmp_path / "out", cfg)
    out: dict[str, dict[str, Any]] = {}
    for kind in ("kept", "rejected"):
        path = tmp_path / "out" / kind / "part.jsonl"
        for line in read_jsonl(path) if path.exists() else []:
            rec = json.loads(line)
            out[rec["id"]] = rec["synthfilter"]
    return res, out


def test_other_languages_get_no_score_and_are_left_out_of_the_estimate(tmp_path: Path) -> None:
    rows = _mixed()
    res, out = _run(tmp_path, rows)
    english = [r["id"] for r in rows if r["lang"] == "en"]
    other = [r["id"] for r in rows if r["lang"] != "en"]
    assert all(out[i]["score"] is not None and out[i]["language"] == "en" for i in english)
    assert all(out[i]["score"] is None for i in other)  # the detector scored none of them
    assert sum(out[i]["language"] == i.split("-")[0] for i in other) >= 0.95 * len(other)
    syn, langs = res.report["synthetic"], res.report["languages"]
    assert syn["detector_scored"] == len(english)
    assert syn["scope"] == {"detector_languages": ["en"], "records_in_estimate": len(english), "not_estimated": len(other)}
    assert langs["not_scored"] == len(other) and langs["by_language"]["en"]["in_estimate"] == len(english)
    assert langs["by_language"]["zh"]["detector_scored"] == 0
    assert any("estimated over the records in en" in w for w in res.report["warnings"])


def test_downsampled_records_stay_counted_in_the_estimate(tmp_path: Path) -> None:
    # The languages table counted "in the estimate" after downsampling, so it showed the kept
    # records only (a user saw it equal the kept count, under the records the estimate read).
    rows = _mixed()
    res, out = _run(tmp_path, rows, ratio={"target_ratio": 0.05, "on_unreliable": "proceed"})
    english = [r["id"] for r in rows if r["lang"] == "en"]
    assert sum(out[i].get("reason") == "synthetic_downsampled" for i in english) > 0
    en = res.report["languages"]["by_language"]["en"]
    assert en["in_estimate"] == len(english) == res.report["synthetic"]["scope"]["records_in_estimate"]
    assert en["kept"] < en["in_estimate"]


def test_languages_filter_rejects_the_rest_before_dedup(tmp_path: Path) -> None:
    rows = _mixed(3)
    rows.append({"id": "fr-copy", "text": rows[-1]["text"] if rows[-1]["lang"] == "fr" else document("fr", 4, seed=0), "lang": "fr"})
    rows.append({"id": "en-copy", "text": rows[0]["text"], "lang": "en"})
    res, out = _run(tmp_path, rows, detector={"enabled": False}, language={"keep": ["en", "de"]})
    for r in rows:
        reason = out[r["id"]].get("reason")
        if r["lang"] in ("en", "de"):
            assert reason in (None, "exact_duplicate"), r["id"]
        else:
            assert reason == "language" and "duplicate_of" not in out[r["id"]], r["id"]
    assert out["en-copy"]["reason"] == "exact_duplicate"
    n_other = sum(r["lang"] not in ("en", "de") for r in rows)
    assert res.report["output"]["rejected_by_reason"]["language"] == n_other
    assert res.report["languages"]["keep"] == ["en", "de"]


def test_provenance_still_decides_for_other_languages(tmp_path: Path) -> None:
    rows = []
    for k in range(40):
        rows.append({"id": f"en-h{k}", "text": document("en", 3, seed=k), "who": "human"})
    for k in range(20):
        rows.append({"id": f"en-m{k}", "text": document("en", 3, seed=100 + k), "who": "machine"})
    for k in range(10):
        rows.append({"id": f"fr-m{k}", "text": document("fr", 3, seed=k), "who": "machine"})
        rows.append({"id": f"de-u{k}", "text": document("de", 3, seed=k), "who": None})
    res, out = _run(tmp_path, rows, detector={"enabled": False}, language={"identify": "always"},
                    ratio={"target_ratio": 0.1, "provenance_field": "who",
                           "provenance_map": {"human": "human", "machine": "machine"}})
    assert all(out[f"de-u{k}"]["decision"] == "kept" for k in range(10))  # unknown, other language: never dropped
    assert all(out[f"en-h{k}"]["decision"] == "kept" for k in range(40))
    dropped = {i for i, f in out.items() if f.get("reason") == "synthetic_downsampled"}
    assert dropped and any(i.startswith("fr-m") for i in dropped)  # known machine, whatever its language
    assert res.report["synthetic"]["scope"]["not_estimated"] == 10


# -- dedup in every script --------------------------------------------------------------------

_THAI = ["แม่ค้าที่ตลาดเช้าบอกว่าฝนจะตกหนักในคืนนี้", "คุณยายของฉันปลูกมะม่วงไว้หลังบ้านตั้งแต่ยังสาว",
         "รถไฟขบวนสุดท้ายออกจากสถานีช้ากว่ากำหนดเสมอ", "ครูคนใหม่ชอบเล่านิทานเรื่องแม่น้ำให้เด็กฟัง",
         "ร้านกาแฟหัวมุมถนนเปิดตั้งแต่ตีห้าทุกวัน", "ชาวประมงกลับเข้าฝั่งพร้อมปลาเต็มเรือ"]


def _doc(script: str, seed: int) -> str:
    if script == "th":  # seeds 1 and 2 share no phrase
        half = _THAI[:3] if seed % 2 else _THAI[3:]
        return " ".join(half[i] for i in [0, 1, 2, 1, 0, 2, 2, 0, 1])
    if script == "mixed":
        return " ".join([document("en", 2, seed), document("zh", 2, seed), document("ar", 2, seed), document("ru", 2, seed)])
    return document(script, 8, seed)


def _edited(text: str) -> str:
    """A near copy: one word replaced mid-text, or (scripts written without spaces) two runs of
    about 3 % of the characters swapped."""
    words = text.split(" ")
    if len(words) > 40:
        words[len(words) // 2] = words[len(words) // 3]
        return " ".join(words)
    k, n = len(text) // 2, max(2, len(text) // 33)
    return text[:k] + text[k + n:k + 2 * n] + text[k:k + n] + text[k + 2 * n:]


@pytest.mark.parametrize("script", ["zh", "ja", "th", "ar", "ru", "mixed"])
def test_dedup_in_every_script(script: str) -> None:
    from synthfilter import SynthFilter

    base, other = _doc(script, 1), _doc(script, 2)
    texts = [base, _edited(base), "  " + base.upper() + " \n", other]  # exact: case and spacing differ
    sf = SynthFilter({"detector": {"enabled": False}})
    ids = ["a", "near", "exact", "other"]
    res = sf.decide(sf.annotate({"id": ids, "text": texts}), ids=ids)
    assert res.reason[:3] == ["kept", "near_duplicate", "exact_duplicate"], (script, res.reason)
    assert res.duplicate_of[1:3] == ["a", "a"] and res.reason[3] == "kept"
