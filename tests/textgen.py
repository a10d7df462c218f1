"""Project-made text for tests: varied, realistic-looking prose from a seeded grammar.

Two registers: a plain, uneven "human" register (anecdotes, asides, varied sentence lengths)
and a smooth, formulaic "assistant" register (signposting, balanced triads, hedged summaries).
Nothing here comes from any dataset.
"""

from __future__ import annotations

import random

SUBJECTS = [
    "my neighbour", "the old ferry captain", "our county library", "a retired welder", "the night nurse",
    "my grandmother", "the bakery on Elm Street", "a kid from the swim team", "the town council",
    "our landlord", "the mechanic down the road", "a woman I met on the train", "the choir director",
    "my brother-in-law", "the beekeeper two farms over", "the new science teacher", "a street musician",
    "the harbour master", "our dog", "the man who fixes bicycles", "my first editor", "the janitor",
]
VERBS = [
    "swore that", "told me", "kept insisting", "once admitted", "wrote in a letter", "mumbled",
    "always said", "figured out", "was convinced", "laughed when I said", "argued for an hour that",
]
CLAIMS = [
    "the tide comes in crooked on Tuesdays", "rhubarb grows better next to a compost heap",
    "nobody reads the minutes of those meetings", "the bridge was painted the wrong green in 1987",
    "you can hear the freight trains better when it snows", "the cheap flour makes a denser loaf",
    "the clock tower runs four minutes slow", "half the parking tickets were never paid",
    "cats avoid the west side of the market", "the best tomatoes come after a dry June",
    "the ferry timetable was printed upside down once", "the pond froze solid only twice in his life",
    "the hymn book has a typo on page forty", "the roof leaks only when the wind is from the north",
    "his van had two hundred thousand miles on it", "the festival lost money every single year",
]
ASIDES = [
    "I still don't know if that's true.", "Anyway.", "Which, honestly, tracks.", "Go figure.",
    "We argued about it over soup.", "Nobody checked.", "I wrote it down on a receipt.",
    "My sister disagrees, loudly.", "It rained the whole week.", "That was before the flood.",
    "The dog did not care.", "I believed him for about a day.", "Small towns, right?",
]
PLACES = [
    "Harwick", "the valley", "Port Ellis", "the east ward", "Millbrook", "the old quarry road",
    "Lower Fenton", "the marina", "Castleford", "the allotments", "Brindle Cross", "the ring road",
]
TOPICS = [
    "remote work", "urban gardening", "renewable energy", "personal finance", "digital literacy",
    "sustainable travel", "mental health", "community engagement", "time management", "online learning",
    "healthy eating", "small business growth", "data privacy", "public transport", "customer service",
]
OPENERS = [
    "In today's fast-paced world, {t} has become more important than ever.",
    "{T} plays a crucial role in shaping the way we live and work.",
    "When it comes to {t}, there are several key factors to consider.",
    "Understanding {t} is essential for anyone looking to thrive in the modern landscape.",
    "{T} is a multifaceted topic that offers numerous benefits and opportunities.",
]
BODY = [
    "First and foremost, it is important to note that {t} can significantly enhance overall well-being.",
    "Additionally, {t} fosters collaboration, innovation, and a sense of shared purpose.",
    "Furthermore, by embracing {t}, individuals and organizations can unlock new possibilities.",
    "Moreover, it is worth noting that {t} requires careful planning, clear communication, and consistent effort.",
    "Another key aspect of {t} is its ability to promote resilience and adaptability.",
    "By leveraging the right tools and strategies, stakeholders can navigate the challenges of {t} effectively.",
    "It is also crucial to recognize that {t} is not a one-size-fits-all solution.",
]
CLOSERS = [
    "In conclusion, {t} offers a wealth of benefits that should not be overlooked.",
    "Ultimately, embracing {t} can pave the way for a brighter and more sustainable future.",
    "Overall, {t} represents a valuable opportunity for growth, learning, and positive change.",
    "By taking these steps, we can ensure that {t} continues to make a meaningful impact.",
]


def human_text(rng: random.Random, sentences: int | None = None) -> str:
    """Uneven, anecdotal prose with concrete names, numbers and asides."""
    n = sentences or rng.randint(4, 9)
    out = []
    for _ in range(n):
        kind = rng.random()
        if kind < 0.55:
            s = f"{rng.choice(SUBJECTS).capitalize()} {rng.choice(VERBS)} {rng.choice(CLAIMS)}"
            if rng.random() < 0.4:
                s += f", at least in {rng.choice(PLACES)}"
            out.append(s + rng.choice([".", ".", ".", "!", "..."]))
        elif kind < 0.8:
            out.append(rng.choice(ASIDES))
        else:
            out.append(
                f"In {rng.randint(1961, 2019)} we drove {rng.randint(3, 240)} miles to {rng.choice(PLACES)} "
                f"for {rng.choice(['a wedding', 'a funeral', 'a cheap sofa', 'the county fair', 'nothing much'])}."
            )
    return " ".join(out)


def assistant_text(rng: random.Random, sentences: int | None = None) -> str:
    """Smooth, formulaic, signposted prose in the register of a writing assistant."""
    t = rng.choice(TOPICS)
    n = sentences or rng.randint(4, 7)
    out = [rng.choice(OPENERS)]
    out += rng.sample(BODY, k=min(n - 2, len(BODY)))
    out.append(rng.choice(CLOSERS))
    return " ".join(s.format(t=t, T=t[0].upper() + t[1:]) for s in out)


def corpus(n: int, seed: int = 0, machine_share: float = 0.3) -> list[tuple[str, str]]:
    """``n`` (label, text) pairs, labels "human"/"machine", all texts distinct."""
    rng = random.Random(seed)
    out = []
    seen: set[str] = set()
    while len(out) < n:
        label = "machine" if rng.random() < machine_share else "human"
        text = assistant_text(rng) if label == "machine" else human_text(rng)
        text = f"{text} (note {len(out)})" if text in seen else text
        seen.add(text)
        out.append((label, text))
    return out


def looping_text(rng: random.Random, repeats: int | None = None) -> str:
    """Degenerate generator output: a sound opening, then one sentence of the assistant register
    looping (as a model stuck in a repetition loop writes), cut off mid-loop."""
    t = rng.choice(TOPICS)
    loop = rng.choice(BODY).format(t=t, T=t[0].upper() + t[1:])
    body = " ".join([loop] * (repeats or rng.randint(6, 12)))
    return f"{rng.choice(OPENERS).format(t=t, T=t[0].upper() + t[1:])} {body} {loop[: len(loop) // 2]}"
