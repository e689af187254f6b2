"""Small synthetic runs on a tiny random Llama, shared by the trainer tests."""

from __future__ import annotations

import json
from pathlib import Path

import yaml

PAIRS = [
    ("How do I boil an egg?", "Put it in boiling water for 8 minutes.", "Eggs are birds."),
    ("Name a prime number.", "7 is prime.", "8."),
    ("What is 2 + 2?", "2 + 2 = 4.", "5"),
    ("Say hello politely.", "Hello, nice to meet you!", "go away"),
    ("Capital of Italy?", "Rome is the capital of Italy.", "Paris"),
    ("Translate 'chat' to English.", "It means 'cat'.", "dog"),
    ("Give a color.", "Blue.", "Seven."),
    ("Is water wet?", "Water makes things wet.", "No idea lol"),
]
RATINGS = [
    ("Explain rain.", "Water vapour condenses and falls as drops.", {"helpfulness": 4, "verbosity": 2}),
    ("Explain rain.", "It rains.", {"helpfulness": 1, "verbosity": 0}),
    ("Define a noun.", "A noun names a person, place or thing.", {"helpfulness": 3}),
    ("Define a noun.", "Word.", {"helpfulness": 0, "verbosity": 0}),
    ("What is DNA?", "DNA carries genetic information in living things.", {"helpfulness": 4, "verbosity": 3}),
]


def write_data(folder: Path) -> tuple[Path, Path]:
    folder.mkdir(parents=True, exist_ok=True)
    pairs = folder / "pairs.jsonl"
    pairs.write_text("".join(json.dumps({"prompt": p, "chosen": c, "rejected": r}) + "\n" for p, c, r in PAIRS))
    ratings = folder / "ratings.jsonl"
    ratings.write_text("".join(json.dumps({"prompt": p, "response": r, **a}) + "\n" for p, r, a in RATINGS))
    return pairs, ratings


def tiny_config(folder: Path, backbone: Path, trunk: str = "full", steps: int = 4, **train) -> dict:
    pairs, ratings = write_data(folder / "data")
    return {
        "method": "smorm",
        "output_dir": str(folder / "run"),
        "model": {"backbone": str(backbone)},
        "data": {
            "pairs": [{"path": str(pairs), "format": "pairs"}],
            "ratings": [{"path": str(ratings), "format": "ratings",
                         "options": {"scales": {"helpfulness": [0, 4], "verbosity": [0, 4]}}}],
            "max_length": 48,
        },
        "losses": [{"name": "bt"}, {"name": "regression"}],
        "train": {"trunk": trunk, "max_steps": steps, "pair_batch_size": 4, "rating_batch_size": 2,
                  "lr": 1e-2, "warmup_ratio": 0.0, "top_k": 1, "log_every": 1, **train},
    }


def write_config(folder: Path, config: dict) -> Path:
    path = folder / "config.yaml"
    path.write_text(yaml.safe_dump(config))
    return path
