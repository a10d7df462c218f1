"""Made-up documents for the text and dedup tests: pseudo-words, CJK and Thai strings, edited copies."""

from __future__ import annotations

import random


_SYLLABLES = [c + v for c in "bcdfghjklmnprstvwz" for v in ("a", "e", "i", "o", "u", "ai", "ou")]


class TextMaker:
    """Seeded generator of unrelated documents and of copies with a given share of words edited."""

    def __init__(self, seed: int = 0, vocab_size: int = 5000) -> None:
        self.rng = random.Random(seed)
        vocab = set()
        while len(vocab) < vocab_size:
            vocab.add("".join(self.rng.choice(_SYLLABLES) for _ in range(self.rng.randint(1, 4))))
        self.vocab = sorted(vocab)

    def words(self, n: int) -> list[str]:
        return [self.rng.choice(self.vocab) for _ in range(n)]

    def doc(self, n_words: int) -> str:
        """Sentences of pseudo-words with capitals and punctuation."""
        out, words = [], self.words(n_words)
        i = 0
        while i < len(words):
            k = self.rng.randint(4, 14)
            sentence = " ".join(words[i : i + k])
            out.append(sentence[:1].upper() + sentence[1:] + self.rng.choice([".", ".", "!", "?", ";"]))
            i += k
        return " ".join(out)

    def edit(self, text: str, share: float) -> str:
        """Replace ``share`` of the words (at least one) with random vocabulary words."""
        words = text.split()
        k = max(1, round(share * len(words)))
        for i in self.rng.sample(range(len(words)), k):
            words[i] = self.rng.choice(self.vocab)
        return " ".join(words)

    def cjk(self, n_chars: int) -> str:
        pool = [chr(c) for c in range(0x4E00, 0x4E00 + 800)] + [chr(c) for c in range(0x3041, 0x3097)]
        return "".join(self.rng.choice(pool) for _ in range(n_chars))

    def thai(self, n_chars: int) -> str:
        return "".join(chr(self.rng.randint(0x0E01, 0x0E2E)) for _ in range(n_chars))

    def mixed(self) -> str:
        """Any of: prose, CJK, Thai, CJK with Latin words, emoji, very short, empty."""
        kind = self.rng.randrange(8)
        if kind == 0:
            return self.cjk(self.rng.randint(1, 200))
        if kind == 1:
            return self.thai(self.rng.randint(1, 120))
        if kind == 2:
            return " ".join(self.cjk(self.rng.randint(2, 9)) + " " + w for w in self.words(self.rng.randint(1, 20)))
        if kind == 3:
            return " ".join(w + self.rng.choice(["", " 😀", " €5", " naïve", " Ωmega"]) for w in self.words(30))
        if kind == 4:
            return " ".join(self.words(self.rng.randint(0, 4)))
        return self.doc(self.rng.randint(5, 150))


