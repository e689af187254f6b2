"""A study's numbers: per-item outcomes, seed-averaged accuracy and paired differences with a
bootstrap over items and seeds.

Each benchmark column is a vector of per-item outcomes per (method, mode, seed): 1/0 for a pair
(chosen strictly above rejected; a tie is wrong, as RewardBench scores it), and for an RM-Bench item
the share of its hard / normal / easy comparisons won (000 Sec. 5.1; the mean over items is the
official accuracy-matrix score of a one-domain file). A method's score is the mean over seeds of its
mean over items. Its 95% interval comes from resampling items and seeds with replacement together
(items: one draw shared by every method, so differences are paired; seeds: one draw of seed
positions, shared likewise), which puts both the benchmark's finite size and the training seed's
variation into the interval. A paired difference ``a - b`` is bootstrapped the same way on the
per-item differences of seed-aligned runs.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any

import numpy as np

from smorm.eval.benchmarks import rm_bench_matrix_scores

# RewardBench subsets where "the longer response wins" says little (46-56% on the dev sample):
# issue 14's target set.
LENGTH_NEUTRAL_SUBSETS = ("mt-bench-easy", "mt-bench-med", "mt-bench-hard", "llmbar-natural")


def item_outcomes(kind: str, rows: Sequence[Mapping[str, Any]], rewards: np.ndarray) -> dict[str, np.ndarray]:
    """Per-item outcomes of one benchmark under one reward vector (indexed like the sequence table).

    ``reward-bench`` / ``pairs``: ``acc`` (every pair), and for RewardBench ``length-neutral`` (the
    pairs of :data:`LENGTH_NEUTRAL_SUBSETS`). ``rm-bench``: ``hard``, ``normal``, ``easy`` and ``avg``
    per item.
    """
    if kind in ("reward-bench", "pairs"):
        chosen = rewards[[int(r["chosen"]) for r in rows]]
        rejected = rewards[[int(r["rejected"]) for r in rows]]
        won = (chosen > rejected).astype(np.float64)
        out = {"acc": won}
        if kind == "reward-bench":
            neutral = np.array([r.get("subset") in LENGTH_NEUTRAL_SUBSETS for r in rows], dtype=bool)
            out["length-neutral"] = won[neutral]
        return out
    if kind == "rm-bench":
        chosen = np.array([[rewards[i] for i in r["chosen"]] for r in rows], dtype=np.float64)
        rejected = np.array([[rewards[i] for i in r["rejected"]] for r in rows], dtype=np.float64)
        scores = rm_bench_matrix_scores((chosen[:, :, None] > rejected[:, None, :]).astype(np.float64))
        return {"hard": np.asarray(scores["hard"]), "normal": np.asarray(scores["normal"]),
                "easy": np.asarray(scores["easy"]), "avg": np.asarray(scores["score"])}
    raise ValueError(f"a study reads reward-bench, rm-bench and pairs benchmarks, not {kind!r}")


class Resampler:
    """One shared draw of items (per column size) and of seed positions, so every estimate is paired."""

    def __init__(self, n_resamples: int, n_seeds: int, seed: int = 0) -> None:
        self.n_resamples = n_resamples
        self.seed = seed
        self.seed_draws = np.random.default_rng([seed, 1]).integers(0, n_seeds, size=(n_resamples, n_seeds))
        self._items: dict[int, np.ndarray] = {}

    def items(self, n_items: int) -> np.ndarray:
        if n_items not in self._items:
            rng = np.random.default_rng([self.seed, 2, n_items])
            self._items[n_items] = rng.integers(0, n_items, size=(self.n_resamples, n_items))
        return self._items[n_items]

    def estimate(self, outcomes: np.ndarray) -> dict[str, Any]:
        """``outcomes [n_seeds, n_items]`` (one row for a seed-free floor): mean, 95% CI, seed spread."""
        outcomes = np.atleast_2d(np.asarray(outcomes, dtype=np.float64))
        n_seeds, n_items = outcomes.shape
        if n_items == 0:
            return {"mean": None, "ci": None, "items": 0, "seeds": n_seeds}
        per_seed_items = outcomes[:, self.items(n_items)].mean(axis=-1)  # [n_seeds, R]
        if n_seeds == 1:
            replicates = per_seed_items[0]
        else:
            draws = self.seed_draws[:, :n_seeds] % n_seeds
            replicates = per_seed_items[draws, np.arange(self.n_resamples)[:, None]].mean(axis=1)
        per_seed = outcomes.mean(axis=1)
        low, high = np.quantile(replicates, [0.025, 0.975])
        return {"mean": float(per_seed.mean()), "ci": [float(low), float(high)], "items": int(n_items),
                "seeds": int(n_seeds), "per_seed": [float(v) for v in per_seed],
                "seed_sd": float(per_seed.std(ddof=1)) if n_seeds > 1 else None}

    def difference(self, a: np.ndarray, b: np.ndarray) -> dict[str, Any]:
        """Paired ``a - b`` over the same items and seed-aligned runs, with the share of replicates above 0."""
        a, b = np.atleast_2d(a), np.atleast_2d(b)
        if a.shape[1] != b.shape[1]:
            raise ValueError(f"paired outcomes must cover the same items: {a.shape} vs {b.shape}")
        if a.shape[0] != b.shape[0]:  # a seed-free floor against seeded runs: the floor on every seed
            a, b = np.broadcast_arrays(a, b)
        result = self.estimate(a - b)
        if result["ci"] is not None:
            result["excludes_zero"] = bool(result["ci"][0] > 0 or result["ci"][1] < 0)
        return result
