"""Texts and writers shared by the evaluation tests (the fixtures live in conftest.py)."""

from __future__ import annotations

import json
from pathlib import Path

ATTRIBUTES = ["helpfulness", "verbosity"]

# Texts of varied lengths, so length-sorted batches pad differently at different batch sizes.
QUESTIONS = [
    "How do I boil an egg?", "Name a prime number.", "What is 2 + 2?", "Say hello politely.",
    "Capital of Italy?", "Explain why the sky is blue in one or two sentences, please.",
]
GOOD = [
    "Put it in boiling water for about eight minutes, then cool it in cold water.", "7 is prime.",
    "2 + 2 = 4.", "Hello, it is very nice to meet you!", "Rome.",
    "Sunlight scatters off air molecules, and blue light scatters the most, so the sky looks blue.",
]
BAD = ["Eggs are birds.", "8", "5", "go away", "Paris is the capital of Italy, I think, or maybe Milan.", "Because."]


def write_jsonl(path: Path, records: list[dict]) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text("".join(json.dumps(r) + "\n" for r in records))
    return path
