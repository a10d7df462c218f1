"""normalize_for_dedup: evasions (zero-width characters, homoglyphs, look-alike forms) do not hide copies."""

from __future__ import annotations

import random
import string
import unicodedata

from synthfilter.text import normalize as N
from synthfilter.text.normalize import NORMALIZATION_NAME, clean_text, normalize_for_dedup

ZERO_WIDTH = ["\u200b", "\u200c", "\u200d", "\u2060", "\ufeff", "\u00ad", "\u034f", "\ufe0f", "\U000e0101", "\u3164"]
# Latin letter -> look-alikes an evader can swap in (Cyrillic, Greek, Armenian, Cherokee).
HOMOGLYPHS = {
    "a": "аα", "e": "еε", "o": "оοօ", "p": "рρ", "c": "сϲ", "x": "хχ", "i": "іι", "y": "у",
    "A": "АΑᎪ", "B": "ВΒᏴ", "E": "ЕΕᎬ", "H": "НΗᎻ", "K": "КΚᏦ", "M": "МΜᎷ", "O": "ОΟՕ", "P": "РΡᏢ", "T": "ТΤᎢ",
}


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
    assert NORMALIZATION_NAME == "nfkc-casefold-homoglyph-nopunct-v2"
    tricky = "Ｆｕｌｌ ｗｉｄｔｈ, Sоmе Ꭺrmenian օ; naïve CAFÉ — 東京！ ﬁne\u200b\u00ad x² 1.5 Η -3"
    assert normalize_for_dedup(tricky) == "full width some armenian o naïve café 東京 fine x2 1 5 h \u22123"


def _reference_clean_text(text: str, casefold: bool) -> str:
    """The plain-Python definition the fast path must reproduce: dict translate, then split/join."""
    if not text.isascii():
        text = text.replace("\u03f2", "c").replace("\u03f9", "C")
        text = unicodedata.normalize("NFKC", text)
    text = text.translate(N._CLEAN_TABLE)
    if casefold:
        text = text.casefold()
    text = N._INVISIBLE.sub("", text)
    return " ".join(text.split())


def test_fast_path_equals_the_plain_definition():
    rng = random.Random(5)
    low = [chr(c) for c in range(0x3040) if not 0xD800 <= c <= 0xDFFF]
    pools = [
        low,
        list(string.printable),
        [chr(c) for c in (0x3000, 0x1680, 0x2007, 0x00A0, 0xFEFF, 0xFE0F, 0x3164, 0xFFA0, 0x03F2, 0x03F9, 0xD800, 0x1D400)],
        [chr(rng.randrange(0x3040, 0x10FFFF)) for _ in range(3000)],
        list("東京の天気 ภาษาไทย Ωμέγα Ꭺ ＡＢＣ ﬁ ß İ"),
    ]
    for _ in range(3000):
        text = "".join(rng.choice(rng.choice(pools)) for _ in range(rng.randint(0, 60)))
        for casefold in (False, True):
            assert N.clean_text(text, casefold=casefold) == _reference_clean_text(text, casefold), repr(text)
        once = normalize_for_dedup(text)
        assert normalize_for_dedup(once) == once, repr(text)


def test_the_canonical_form_is_a_fixed_point_for_every_code_point():
    # Each code point alone, after a letter, before a combining mark, after an invisible joiner
    # and between digits, in blocks of texts joined by spaces (one call per block; a failing
    # block is then searched for its code point): normalising again changes nothing. Every
    # assigned code point; of the unassigned and private-use ones (three quarters of the range,
    # which no normalisation step maps), every 16th.
    import unicodedata

    def contexts(c: str) -> list[str]:
        return [c, "a" + c + "b", "A" + c, c + "\u0301", "e\u200d" + c, "1" + c + "2"]

    points = [cp for cp in range(0x110000) if not 0xD800 <= cp <= 0xDFFF
              and (cp % 16 == 0 or unicodedata.category(chr(cp)) not in ("Cn", "Co"))]
    assert len(points) > 150_000
    for lo in range(0, len(points), 2048):
        block = points[lo : lo + 2048]
        text = " ".join(t for cp in block for t in contexts(chr(cp)))
        once = normalize_for_dedup(text)
        if normalize_for_dedup(once) != once:
            for cp in block:
                for t in contexts(chr(cp)):
                    one = normalize_for_dedup(t)
                    assert normalize_for_dedup(one) == one, (hex(cp), t)
            raise AssertionError(f"block from {hex(block[0])}: not a fixed point, though each text alone is")


def test_both_cases_of_a_letter_give_one_canonical_form():
    # Greek, Cyrillic, Armenian and Cherokee capitals that look like Latin letters fold onto
    # their small letters first: upper- and lower-case text of one script agree.
    pairs = [
        ("Η ΑΘΗΝΑ ΕΙΝΑΙ ΜΙΑ ΠΟΛΗ ΜΕ ΖΕΣΤΟ ΚΑΛΟΚΑΙΡΙ", "η αθηνα ειναι μια πολη με ζεστο καλοκαιρι"),
        ("Ο ΝΕΟΣ ΥΜΝΟΣ", "ο νεος υμνος"),
        ("МОСКВА НЕ СРАЗУ СТРОИЛАСЬ", "москва не сразу строилась"),
        ("ՏՈՒՆ ՕՐ", "տուն օր"),
        ("ᎠᏍᎦᏯ ᎪᎳ", "ꭰꮝꭶꮿ ꭺꮃ"),
    ]
    for upper, lower in pairs:
        assert normalize_for_dedup(upper) == normalize_for_dedup(lower), upper
    for cp in range(0x3040):
        c = chr(cp)
        if c.lower() != c and len(c.lower()) == 1 and c.lower().upper() == c:
            assert normalize_for_dedup(c + "x") == normalize_for_dedup(c.lower() + "x"), hex(cp)


def test_punctuation_touching_a_digit_separates_and_a_minus_sign_stays():
    apart = [
        ("costs $10.50", "costs $1,050"),
        ("the low was -5 degrees", "the low was 5 degrees"),
        ("due 1/12/2024", "due 11/2/2024"),
        ("version 1.2.3", "version 12.3"),
        ("(-40)", "(40)"),
    ]
    for a, b in apart:
        assert normalize_for_dedup(a) != normalize_for_dedup(b), (a, b)
    together = [
        ("don't stop", "dont stop"),
        ("e-mail me", "email me"),
        ("the low was -5 degrees", "The low was \u22125 degrees!"),
        ("costs $10.50", "COSTS $10 50"),
    ]
    for a, b in together:
        assert normalize_for_dedup(a) == normalize_for_dedup(b), (a, b)


def test_invisible_characters_beside_punctuation_and_digits_change_nothing():
    # The minus and digit rules are decided once every invisible character is gone: a zero-width
    # space, soft hyphen, NUL, BOM or variation selector inserted next to them hides no copy.
    for invisible in ("\u200b", "\u00ad", "\x00", "\ufeff", "\ufe0f", "\U000e0101"):
        for plain in ("a-5", "low: -5", "5.x", "10.50", "x -5", "1/2"):
            for at in range(len(plain) + 1):
                hidden = plain[:at] + invisible + plain[at:]
                assert normalize_for_dedup(hidden) == normalize_for_dedup(plain), (hidden, plain)
    # Punctuation beyond the fast table follows the digit rule too, and dashes are minus signs.
    assert normalize_for_dedup("10\u30fb50") != normalize_for_dedup("1050")
    assert normalize_for_dedup("\u20135") == normalize_for_dedup("\u20105") == normalize_for_dedup("-5") == "\u22125"


def test_long_runs_of_punctuation_are_read_whole():
    # A separator line of 100,000 marks (once quadratic in the digit rule): the same form as a
    # short run, beside digits and letters.
    for run in ("!" * 100_000, "-" * 100_000, "._" * 50_000):
        assert normalize_for_dedup("1" + run + "2") == "1 2"
        assert normalize_for_dedup("a" + run + "b") == "ab"
        assert normalize_for_dedup(run) == ""
