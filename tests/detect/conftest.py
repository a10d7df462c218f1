"""Programmatic corpora for the detector tests: two writing styles, no real data."""

from __future__ import annotations

import json
import random
from pathlib import Path

import pytest

_SUBJECTS = ["the council", "my neighbour", "a small bakery", "the river trust", "our coach", "the museum",
             "a local farmer", "the school board", "her brother", "the night bus", "an old friend", "the mayor",
             "a delivery driver", "the city library", "his landlord", "the football club", "a retired nurse"]
_VERBS = ["closed", "repainted", "argued about", "forgot", "rebuilt", "sold", "measured", "photographed",
          "cancelled", "celebrated", "inspected", "borrowed", "moved", "fixed", "ignored", "promised"]
_OBJECTS = ["the east gate", "twelve bicycles", "a leaking roof", "the spring fair", "three old maps",
            "the parking rules", "a wooden boat", "the evening menu", "two broken clocks", "the tram timetable",
            "a box of letters", "the rose garden", "an unpaid bill", "the marathon route", "a stray dog"]
_TIMES = ["on Tuesday", "last winter", "after lunch", "in 1987", "before the storm", "around midnight",
          "this morning", "during the strike", "at the weekend", "two years ago"]
_ASIDES = ["honestly", "no idea why", "typical", "which surprised nobody", "go figure", "or so they say",
           "don't ask", "long story", "I think", "as usual"]
_CONNECTIVES = ["Furthermore", "Additionally", "Moreover", "In addition", "Overall", "Ultimately",
                "Consequently", "Notably", "Importantly", "As a result"]
_ABSTRACT = ["community engagement", "sustainable growth", "meaningful collaboration", "long-term resilience",
             "innovative solutions", "essential resources", "significant benefits", "valuable insights",
             "a comprehensive approach", "diverse perspectives", "effective communication"]


def human_text(rng: random.Random, n_sentences: int = 8) -> str:
    """Uneven, informal sentences with asides, dashes and questions."""
    out = []
    for _ in range(n_sentences):
        kind = rng.random()
        s = f"{rng.choice(_SUBJECTS)} {rng.choice(_VERBS)} {rng.choice(_OBJECTS)} {rng.choice(_TIMES)}"
        if kind < 0.25:
            out.append(f"{s[0].upper()}{s[1:]} - {rng.choice(_ASIDES)}.")
        elif kind < 0.4:
            out.append(f"Why {rng.choice(_SUBJECTS)}?")
        elif kind < 0.55:
            out.append(f"{rng.choice(_ASIDES).capitalize()}.")
        else:
            extra = f", and then {rng.choice(_SUBJECTS)} {rng.choice(_VERBS)} {rng.choice(_OBJECTS)}" \
                if rng.random() < 0.5 else ""
            out.append(f"{s[0].upper()}{s[1:]}{extra}.")
    return " ".join(out)


def machine_text(rng: random.Random, n_sentences: int = 8) -> str:
    """Even, formal sentences with stock connectives and abstract nouns."""
    out = []
    for i in range(n_sentences):
        s = (f"{rng.choice(_SUBJECTS)} {rng.choice(_VERBS)} {rng.choice(_OBJECTS)}, fostering "
             f"{rng.choice(_ABSTRACT)} and {rng.choice(_ABSTRACT)}")
        if i and rng.random() < 0.6:
            out.append(f"{rng.choice(_CONNECTIVES)}, {s}.")
        else:
            out.append(f"{s[0].upper()}{s[1:]}.")
    return " ".join(out)


def write_corpus(path: Path, n_human: int, n_machine: int, seed: int = 0, **field_names: str) -> Path:
    rng = random.Random(seed)
    text_f = field_names.get("text_field", "text")
    label_f = field_names.get("label_field", "label")
    h_lab = field_names.get("human_label", "human")
    m_lab = field_names.get("machine_label", "machine")
    rows = [{text_f: human_text(rng, rng.randint(5, 12)), label_f: h_lab, "domain": rng.choice(["blog", "news"])}
            for _ in range(n_human)]
    rows += [{text_f: machine_text(rng, rng.randint(5, 12)), label_f: m_lab, "domain": rng.choice(["blog", "news"])}
             for _ in range(n_machine)]
    rng.shuffle(rows)
    with open(path, "w", encoding="utf-8") as f:
        for r in rows:
            f.write(json.dumps(r) + "\n")
    return path


@pytest.fixture
def rng() -> random.Random:
    return random.Random(1234)
