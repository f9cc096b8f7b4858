"""Writes the labelled review set the MiniLM fine-tune ships with (examples/inputs/reviews-*.jsonl).

Short product and place reviews, labelled 1 (positive) or 0 (negative). Half of them turn on a
negation or a contrast ("was not bad", "I expected it to be awful but it was great"), which a
frozen sentence embedding's mean pooling blurs: the set a head-only probe finds hard and an adapter
inside the encoder can learn. Deterministic (a seeded PCG64); the held-out split uses subjects the
training split never saw.

    python examples/data/make_reviews.py
"""

import json
from pathlib import Path

import numpy as np

GOOD = ["good", "great", "excellent", "wonderful", "lovely", "superb", "pleasant", "fantastic", "delightful",
        "impressive", "enjoyable", "brilliant"]
BAD = ["bad", "awful", "terrible", "poor", "dreadful", "disappointing", "horrible", "boring", "mediocre",
       "unpleasant", "frustrating", "dull"]
SUBJECTS_TRAIN = ["the movie", "the food", "the hotel", "the service", "the book", "the concert", "the phone",
                  "the app", "the coffee", "the room", "the staff", "the game", "the album", "the tour",
                  "the class", "the car"]
SUBJECTS_HELDOUT = ["the restaurant", "the laptop", "the show", "the flight", "the museum", "the course"]
TEMPLATES = [  # (text, does the adjective's polarity flip)
    ("{s} was {a}.", False),
    ("honestly, {s} was {a}.", False),
    ("{s} was really {a}.", False),
    ("{s} could not have been more {a}.", False),
    ("{s} was not {a}.", True),
    ("{s} was not {a} at all.", True),
    ("{s} was never {a}.", True),
    ("i would not call {s} {a}.", True),
    ("nobody would say {s} was {a}.", True),
    ("i expected {s} to be {o}, but it was {a}.", False),
    ("they said {s} would be {o}; it was {a}.", False),
    ("{s} was far from {a}.", True),
]


def rows(subjects: list[str], n: int, seed: int) -> list[dict]:
    rng = np.random.Generator(np.random.PCG64(seed))
    out = []
    for _ in range(n):
        positive = bool(rng.integers(2))
        text, flips = TEMPLATES[int(rng.integers(len(TEMPLATES)))]
        adjective_good = positive != flips
        a = (GOOD if adjective_good else BAD)[int(rng.integers(12))]
        o = (BAD if adjective_good else GOOD)[int(rng.integers(12))]
        s = subjects[int(rng.integers(len(subjects)))]
        sentence = text.format(s=s, a=a, o=o)
        out.append({"text": sentence[0].upper() + sentence[1:], "label": int(positive)})
    return out


if __name__ == "__main__":
    here = Path(__file__).resolve().parent.parent / "inputs"
    for name, subjects, n, seed in (("reviews-train", SUBJECTS_TRAIN, 320, 1), ("reviews-heldout", SUBJECTS_HELDOUT, 160, 2)):
        (here / f"{name}.jsonl").write_text("".join(json.dumps(r) + "\n" for r in rows(subjects, n, seed)))
        print(f"wrote {here / name}.jsonl")
