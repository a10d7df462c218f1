"""normalize_for_dedup: evasions (zero-width characters, homoglyphs, look-alike forms) do not hide copies."""

from __future__ import annotations

from synthfilter.text.normalize import NORMALIZATION_NAME, clean_text, normalize_for_dedup

ZERO_WIDTH = ["\u200b", "\u200c", "\u200d", "\u2060", "\ufeff", "\u00ad", "\u034f", "\ufe0f", "\U000e0101", "\u3164"]
# Latin letter -> look-alikes an evader can swap in (Cyrillic, Greek, Armenian, Cherokee).
HOMOGLYPHS = {"a": "аα", "e": "еε", "o": "оοօ", "p": "рρ", "c": "сϲ", "x": "хχ", "i": "іι", "y": "у", "A": "АΑᎪ",
              "B": "ВΒᏴ", "E": "ЕΕᎬ", "H": "НΗᎻ", "K": "КΚᏦ", "M": "МΜᎷ", "O": "ОΟՕ", "P": "РΡᏢ", "T": "ТΤᎢ"}


def test_zero_width_insertions_do_not_change_the_canonical_form(maker):
    for _ in range(50):
        text = maker.doc(40)
        chars = list(text)
        for _ in range(15):
            chars.insert(maker.rng.randrange(len(chars) + 1), maker.rng.choice(ZERO_WIDTH))
        assert normalize_for_dedup("".join(chars)) == normalize_for_dedup(text)


def test_homoglyph_swaps_do_not_change_the_canonical_form(maker):
    for _ in range(50):
        text = maker.doc(40) + " OPEN THE BOX, Maria? Hamburg Express Kit"
        swapped = "".join(
            maker.rng.choice(HOMOGLYPHS[c]) if c in HOMOGLYPHS and maker.rng.random() < 0.5 else c for c in text
        )
        assert swapped != text
        assert normalize_for_dedup(swapped) == normalize_for_dedup(text)


def test_compatibility_forms_case_punctuation_and_spacing_collapse():
    variants = [
        "The quick brown fox - jumps!",
        "ＴＨＥ ＱＵＩＣＫ ｂｒｏｗｎ ｆｏｘ jumps",  # full-width letters
        "the   quick\tbrown\n\nfox — jumps…",
        "𝐓𝐡𝐞 quick brown fox jumps",  # mathematical bold
        "The quick brown fox jumps\u2028",
    ]
    assert {normalize_for_dedup(v) for v in variants} == {"the quick brown fox jumps"}


def test_clean_text_keeps_punctuation_and_case_for_the_detector():
    assert clean_text("Hello,\u200b  Wоrld!") == "Hello, World!"


def test_normalization_is_pinned_to_its_name():
    # If this fails, normalize_for_dedup changed: bump NORMALIZATION_NAME (stored signatures differ).
    assert NORMALIZATION_NAME == "nfkc-homoglyph-casefold-nopunct-v1"
    tricky = "Ｆｕｌｌ ｗｉｄｔｈ, Sоmе Ꭺrmenian օ; naïve CAFÉ — 東京！ ﬁne\u200b\u00ad x²"
    assert normalize_for_dedup(tricky) == "full width some armenian o naïve café 東京 fine x2"
