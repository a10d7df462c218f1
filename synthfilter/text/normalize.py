"""Evasion-resistant text normalisation shared by exact dedup, near-dedup and the detector.

``normalize_for_dedup`` is the canonical form two texts must share to be exact duplicates:
NFKC, case-folded, look-alike Cyrillic/Greek letters mapped to Latin (after case-folding, so
that both cases of a letter map alike), zero-width, control and private-use characters removed,
punctuation stripped (a space where it touches a digit, so that 10.50 and 1,050 stay apart; a
minus sign before a number kept), whitespace collapsed. ``clean_text`` is the gentler form the
detector reads (case and punctuation kept, because they are style).
"""

from __future__ import annotations

import re
import unicodedata

import numpy as np
import regex

# Changes whenever ``normalize_for_dedup`` would return something different for some text:
# hashes and MinHash signatures computed under another name must not be mixed with new ones.
NORMALIZATION_NAME = "nfkc-casefold-homoglyph-nopunct-v2"

# Look-alike letters that are used to hide copies ("homoglyph swaps"). ``clean_text`` maps them
# as they are (an upper-case look-alike to an upper-case Latin letter); ``normalize_for_dedup``
# maps the case-folded text with ``_FOLDED_HOMOGLYPHS``, so that a letter's two cases agree.
_HOMOGLYPHS: dict[str, str] = {
    # Cyrillic lower case
    "а": "a", "в": "b", "е": "e", "ё": "e", "к": "k", "м": "m", "н": "h", "о": "o", "р": "p",
    "с": "c", "т": "t", "у": "y", "х": "x", "ѕ": "s", "і": "i", "ї": "i", "ј": "j", "ԁ": "d",
    "ԛ": "q", "ԝ": "w", "һ": "h", "ӏ": "l", "ɡ": "g", "ү": "y",
    # Cyrillic upper case
    "А": "A", "В": "B", "Е": "E", "Ё": "E", "К": "K", "М": "M", "Н": "H", "О": "O", "Р": "P",
    "С": "C", "Т": "T", "У": "Y", "Х": "X", "Ѕ": "S", "І": "I", "Ї": "I", "Ј": "J", "Ԁ": "D",
    "Ԛ": "Q", "Ԝ": "W", "Һ": "H", "Ӏ": "I", "Ү": "Y",
    # Greek lower case
    "α": "a", "β": "b", "ε": "e", "ι": "i", "κ": "k", "ν": "v", "ο": "o", "ρ": "p", "τ": "t",
    "υ": "u", "χ": "x", "ϲ": "c", "ϳ": "j",
    # Greek upper case
    "Α": "A", "Β": "B", "Ε": "E", "Ζ": "Z", "Η": "H", "Ι": "I", "Κ": "K", "Μ": "M", "Ν": "N",
    "Ο": "O", "Ρ": "P", "Τ": "T", "Υ": "Y", "Χ": "X", "Ϲ": "C",
    # Armenian and Cherokee capitals drawn like Latin letters
    "օ": "o", "ս": "u", "հ": "h", "ո": "n", "ց": "g", "զ": "q", "Տ": "S", "Օ": "O",
    "Ꭺ": "A", "Ᏼ": "B", "Ꮯ": "C", "Ꭼ": "E", "Ꮋ": "H", "Ꮶ": "K", "Ꮇ": "M", "Ꮲ": "P", "Ꭲ": "T",
    # Latin-script look-alikes outside ASCII that NFKC keeps
    "ı": "i", "ȷ": "j", "ℓ": "l", "ɑ": "a", "ɩ": "i", "ɪ": "i", "ʏ": "y", "ᴄ": "c", "ᴏ": "o",
    "ᴠ": "v", "ᴡ": "w", "ᴢ": "z",
}
_HOMOGLYPH_TABLE = str.maketrans(_HOMOGLYPHS)


def _folded_homoglyphs() -> dict[str, str]:
    """The map on case-folded text: each look-alike's case-folded form to its Latin letter in lower
    case. Where a capital folds onto a small letter that is a look-alike itself, the small letter's
    own twin wins (capital Nu folds to nu, which looks like v)."""
    out = {k: v.lower() for k, v in _HOMOGLYPHS.items() if k.casefold() == k}
    for k, v in _HOMOGLYPHS.items():
        out.setdefault(k.casefold(), v.lower())
    return out


_FOLDED_HOMOGLYPHS = _folded_homoglyphs()

# Whitespace-like controls become spaces; every other format/control/private character
# (zero-width space/joiners, BOM, soft hyphen, bidi marks, ...) disappears. Code points below
# _TABLE_LIMIT (Latin, Greek, Cyrillic, general punctuation, ...) go through one str.translate
# table (several times faster than regex substitutions); rarer scripts take the regex path.
_TABLE_LIMIT = 0x3040
_WHITESPACE = "\t\n\r\v\f\x85\u2028\u2029"
# Invisible although not in a C* category: combining grapheme joiner, Hangul fillers,
# variation selectors (inserted between letters they change nothing visible).
_INVISIBLE_OTHER = "\u034f\u115f\u1160\u3164\uffa0"
_INVISIBLE = regex.compile(
    r"[[\p{Cf}\p{Cc}\p{Co}\p{Cs}&&[^\t\n\r\v\f\x85]]\u3164\uffa0\ufe00-\ufe0f\U000e0100-\U000e01ef]",
    regex.V1,
)
# Punctuation touching a digit separates (10.50 and 1,050, 1/12 and 11/2 stay apart), and a
# hyphen or dash before a number that follows no word character is a minus sign (U+2212, a
# symbol that stays): -5 and 5 differ. Elsewhere punctuation goes (don't = dont, e-mail = email).
# The dedup table turns punctuation into _PUNCT_MARK and hyphens and dashes into _DASH_MARK
# (control characters, so none is left from the text: the table deletes those); what the marks
# become is decided once every invisible character is gone (``_resolve_marks``), so that a
# zero-width character next to them changes nothing.
_PUNCT_MARK = "\x01"
_DASH_MARK = "\x02"
_DASHES = "-\u2010\u2011\u2012\u2013"
# The first branch starts at the first mark of a run only: tried inside a long run (a line of
# 100,000 dashes), each start would scan the rest of the run (quadratic time); the second
# starts only right after a digit.
_NUMBER_PUNCT = regex.compile(r"(?<!\x01)\x01+(?=\d)|(?<=\d)\x01+")
_MINUS = regex.compile(r"(?<![\w\x02])\x02(?=\d)")  # not after a word character or another dash
_DIGIT = re.compile(r"\d")
# An ASCII text's skeleton: digits 0, marks as they are, spaces as they are, anything else a.
# A mark run changes the canonical form only where it sits between a digit and a character
# that is not a space (beside a space, a space or nothing collapse alike), which the skeleton
# finds at C speed; only then does the regex run.
_SKELETON = bytes(0x30 if 0x30 <= b <= 0x39 else b if b in (0x01, 0x02, 0x20) else 0x61 for b in range(256))
_SANDWICHES = (b"0\x010", b"0\x01a", b"a\x010")
# Above _TABLE_LIMIT: invisible characters (not the marks) and punctuation, for the dedup form.
_INVISIBLE_HIGH = regex.compile(
    r"[[\p{Cf}\p{Cc}\p{Co}\p{Cs}&&[^\t\n\r\v\f\x85\x01\x02]]\u3164\uffa0\ufe00-\ufe0f\U000e0100-\U000e01ef]",
    regex.V1,
)
_PUNCT_HIGH = regex.compile(r"[\p{P}&&[^\x00-\u303f]]+", regex.V1)


def _build_tables() -> tuple[dict[int, str | None], dict[int, str | None]]:
    keep_punct: dict[int, str | None] = {}
    for cp in range(_TABLE_LIMIT):
        ch = chr(cp)
        cat = unicodedata.category(ch)
        if ch in _WHITESPACE:
            keep_punct[cp] = " "
        elif cat in ("Cf", "Cc", "Co", "Cs") or ch in _INVISIBLE_OTHER:
            keep_punct[cp] = None
    strip_punct = dict(keep_punct)
    keep_punct.update({ord(k): v for k, v in _HOMOGLYPHS.items()})
    strip_punct.update({ord(k): v for k, v in _FOLDED_HOMOGLYPHS.items()})
    for cp in range(_TABLE_LIMIT):
        if unicodedata.category(chr(cp)).startswith("P"):
            strip_punct[cp] = _DASH_MARK if chr(cp) in _DASHES else _PUNCT_MARK
    return keep_punct, strip_punct


_CLEAN_TABLE, _DEDUP_TABLE = _build_tables()
_HIGH = re.compile(f"[{chr(_TABLE_LIMIT)}-\U0010ffff]")
_SPACE_RUN = re.compile("  +")
_DELETE = np.uint32(0xFFFFFFFF)


class _Translator:
    """One of the tables above applied at C speed: bytes.translate for ASCII text, numpy otherwise.

    Same result as ``str.translate(table)`` (dict lookups per character, ~20x slower). Every
    other whitespace character below _TABLE_LIMIT becomes a space too, so that afterwards a
    space is the only whitespace left and runs of spaces can be collapsed with one regex.
    """

    def __init__(self, table: dict[int, str | None]) -> None:
        codes = np.arange(_TABLE_LIMIT, dtype=np.uint32)
        for cp in range(_TABLE_LIMIT):
            if chr(cp).isspace():
                codes[cp] = 0x20
        for cp, value in table.items():
            codes[cp] = _DELETE if value is None else ord(value)
        self.codes = codes
        ascii_codes = codes[:128]
        self.ascii_table = bytes(int(c) if c < 128 else b for b, c in enumerate(ascii_codes)) + bytes(range(128, 256))
        self.ascii_delete = bytes(b for b, c in enumerate(ascii_codes) if c == _DELETE)

    def __call__(self, text: str) -> str:
        if text.isascii():
            return text.encode("ascii").translate(self.ascii_table, self.ascii_delete).decode("ascii")
        points = np.frombuffer(text.encode("utf-32-le", "surrogatepass"), dtype=np.uint32)
        mapped = np.where(points < _TABLE_LIMIT, self.codes[np.minimum(points, _TABLE_LIMIT - 1)], points)
        return mapped[mapped != _DELETE].tobytes().decode("utf-32-le", "surrogatepass")


_CLEAN, _DEDUP = _Translator(_CLEAN_TABLE), _Translator(_DEDUP_TABLE)


def map_homoglyphs(text: str) -> str:
    """Replace common Cyrillic/Greek look-alike letters with their Latin twins."""
    return text.translate(_HOMOGLYPH_TABLE)


def clean_text(text: str, *, casefold: bool = False) -> str:
    """The detector's view: NFKC + homoglyphs mapped + invisible characters removed + whitespace
    collapsed (case-folded too with ``casefold``)."""
    if not text.isascii():
        text = _unlunate(text)
        text = unicodedata.normalize("NFKC", text)
    text = _CLEAN(text)
    if casefold:
        text = text.casefold()
    if not text.isascii() and _HIGH.search(text):
        text = _INVISIBLE.sub("", text)
    return _collapse(text)


def normalize_for_dedup(text: str) -> str:
    """The canonical form used for exact-duplicate hashing and for shingling (module docstring).
    Idempotent: ``normalize_for_dedup(normalize_for_dedup(t)) == normalize_for_dedup(t)``."""
    text = _dedup_pass(text.lower() if text.isascii() else _fold(_unlunate(text)))
    if not text.isascii():
        # Removing an invisible character can join a letter and a combining mark that NFKC
        # composes, and folding can make a look-alike; fold again until nothing changes. A pass's
        # output is a fixed point of the pass itself (nothing it marks or maps is left in it:
        # tests/text/test_normalize.py checks every code point), so only folding can change it.
        for _ in range(4):
            if unicodedata.is_normalized("NFKC", text) and text.casefold() == text:
                break
            again = _dedup_pass(_fold(text))
            if again == text:
                break
            text = again
    return _collapse(text)


def _dedup_pass(text: str) -> str:
    """``_DEDUP_TABLE`` applied, invisible characters above it removed and punctuation above it
    marked, then the marks resolved (``_resolve_marks``)."""
    text = _DEDUP(text)
    if not text.isascii() and _HIGH.search(text):
        text = _PUNCT_HIGH.sub(_PUNCT_MARK, _INVISIBLE_HIGH.sub("", text))
    return _resolve_marks(text)


def _resolve_marks(text: str) -> str:
    """Dash marks before a number that follows no word character become minus signs; marks that
    touch a digit become a space; the rest go."""
    has_dash, has_punct = _DASH_MARK in text, _PUNCT_MARK in text
    if not (has_dash or has_punct):
        return text
    if text.isascii():
        skeleton = text.encode("ascii").translate(_SKELETON)
        digits = b"0" in skeleton
    else:
        skeleton, digits = None, _DIGIT.search(text) is not None
    if has_dash:
        if digits and (skeleton is None or b"\x020" in skeleton):
            text = _MINUS.sub("\u2212", text)
        text = text.replace(_DASH_MARK, _PUNCT_MARK)
        skeleton = skeleton.replace(b"\x02", b"\x01") if skeleton is not None and digits else skeleton
    if digits and (skeleton is None or b"\x01\x01" in skeleton or any(s in skeleton for s in _SANDWICHES)):
        text = _NUMBER_PUNCT.sub(" ", text)
    return text.replace(_PUNCT_MARK, "")


def _unlunate(text: str) -> str:
    if "\u03f2" in text or "\u03f9" in text:  # lunate sigmas look like C, but NFKC makes them sigmas
        text = text.replace("\u03f2", "c").replace("\u03f9", "C")
    return text


def _fold(text: str) -> str:
    """NFKC, case-folded, NFKC again (folding can leave a text that NFKC changes)."""
    text = unicodedata.normalize("NFKC", text).casefold()
    return text if text.isascii() else unicodedata.normalize("NFKC", text)


def _collapse(text: str) -> str:
    if "  " in text:
        text = _SPACE_RUN.sub(" ", text)
    return text.strip(" ")
