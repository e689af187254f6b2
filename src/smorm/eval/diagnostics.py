"""Per-benchmark diagnostics beyond accuracy: calibration, outliers, reward and attribute distributions.

Pure functions over score tables (see :mod:`smorm.eval.benchmarks`) and per-sequence arrays; the
runner calls them once per benchmark and mode. Papers: 000 (App. J), 003 (Sec. 2, App. C).
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import asdict
from typing import Any

import numpy as np

from smorm.eval.benchmarks import attribute_difference_stats
from smorm.eval.metrics import expected_calibration_error, reward_difference_outliers

PAIRWISE_KINDS = ("reward-bench", "pairs")
HISTOGRAM_BINS = 30


def comparisons(kind: str, rows: Sequence[Mapping[str, Any]]) -> tuple[np.ndarray, np.ndarray] | None:
    """Chosen and rejected rewards ``[P]`` of every comparison a benchmark makes; None for rankings.

    Pairwise benchmarks: one comparison per row. RM-Bench: all 9 style comparisons
    ``score(chosen[i])`` vs ``score(rejected[j])`` of each item (its 3x3 matrix), so calibration
    and outliers are measured on the very comparisons the accuracy counts.
    """
    if kind in PAIRWISE_KINDS:
        return (np.array([row["chosen"] for row in rows], dtype=np.float64),
                np.array([row["rejected"] for row in rows], dtype=np.float64))
    if kind == "rm-bench":
        chosen = np.array([row["chosen"] for row in rows], dtype=np.float64)  # [N, 3]
        rejected = np.array([row["rejected"] for row in rows], dtype=np.float64)  # [N, 3]
        return (np.repeat(chosen, 3, axis=1).ravel(), np.tile(rejected, (1, 3)).ravel())
    return None


def response_rewards(kind: str, rows: Sequence[Mapping[str, Any]]) -> tuple[np.ndarray, np.ndarray] | None:
    """Rewards of the chosen and of the rejected responses (each response once), for histograms."""
    if kind in PAIRWISE_KINDS:
        return comparisons(kind, rows)
    if kind == "rm-bench":
        return (np.array([row["chosen"] for row in rows], dtype=np.float64).ravel(),
                np.array([row["rejected"] for row in rows], dtype=np.float64).ravel())
    return None


def reward_histogram(chosen: np.ndarray, rejected: np.ndarray, bins: int = HISTOGRAM_BINS) -> dict[str, list[Any]]:
    """Counts of chosen and rejected rewards over shared equal-width bins.

    Returns:
        ``{"edges": [bins + 1], "chosen": [bins], "rejected": [bins]}``.
    """
    edges = np.histogram_bin_edges(np.concatenate([chosen, rejected]), bins=bins)
    return {"edges": edges.tolist(), "chosen": np.histogram(chosen, edges)[0].tolist(),
            "rejected": np.histogram(rejected, edges)[0].tolist()}


def pairwise_diagnostics(kind: str, rows: Sequence[Mapping[str, Any]]) -> dict[str, Any]:
    """ECE with its reliability data (003 Sec. 2), reward-difference outliers (003 App. C) and a
    chosen/rejected reward histogram, for one benchmark and mode; empty for rankings."""
    pairs = comparisons(kind, rows)
    if pairs is None:
        return {}
    chosen, rejected = pairs
    outliers = asdict(reward_difference_outliers(chosen, rejected))
    responses = response_rewards(kind, rows)
    assert responses is not None
    return {
        "ece": expected_calibration_error(chosen, rejected).to_dict(),
        "num_comparisons": int(chosen.size),
        "reward_difference_outliers": outliers,
        "reward_histogram": reward_histogram(*responses),
    }


def benchmark_response_indices(kind: str, rows: Sequence[Mapping[str, Any]]) -> tuple[list[int], list[int]] | None:
    """Sequence indices of the chosen and of the rejected responses of a benchmark's rows."""
    if kind in PAIRWISE_KINDS:
        return [row["chosen"] for row in rows], [row["rejected"] for row in rows]
    if kind == "rm-bench":
        return ([i for row in rows for i in row["chosen"]], [i for row in rows for i in row["rejected"]])
    return None


def attribute_means(attributes: np.ndarray, chosen: list[int], rejected: list[int],
                    names: Sequence[str]) -> dict[str, dict[str, float]]:
    """Mean predicted attribute of chosen and of rejected responses (raw head outputs).

    Args:
        attributes: ``[num_sequences, K]`` multi-head outputs.
        chosen, rejected: sequence indices of the benchmark's chosen / rejected responses.
    """
    chosen_mean = attributes[chosen].mean(axis=0)
    rejected_mean = attributes[rejected].mean(axis=0)
    return {
        "chosen": {name: float(v) for name, v in zip(names, chosen_mean, strict=True)},
        "rejected": {name: float(v) for name, v in zip(names, rejected_mean, strict=True)},
        "difference": {name: float(v) for name, v in zip(names, chosen_mean - rejected_mean, strict=True)},
    }


def rm_bench_attribute_stats(rows: Sequence[Mapping[str, Any]], attributes: np.ndarray, decisive: np.ndarray,
                             names: Sequence[str]) -> dict[str, Any]:
    """000 App. J Tables 12-13: per-attribute pairwise-difference mean and variance by style level.

    Args:
        rows: RM-Bench rows with sequence indices ``chosen[3]``, ``rejected[3]``.
        attributes: ``[num_sequences, K]`` multi-head outputs.
        decisive: ``[num_sequences]`` rewards that decide the correct / false groups.
    """
    chosen_index = np.array([row["chosen"] for row in rows])  # [N, 3]
    rejected_index = np.array([row["rejected"] for row in rows])
    return attribute_difference_stats(attributes[chosen_index], attributes[rejected_index], list(names),
                                      decisive[chosen_index], decisive[rejected_index])


def gate_weight_means(gate_weights: np.ndarray, used: list[int], names: Sequence[str]) -> dict[str, float]:
    """Mean gating weight per attribute over a benchmark's sequences (``gate_weights [num_sequences, K]``)."""
    means = gate_weights[used].mean(axis=0)
    labels = list(names) if len(names) == means.size else [f"attribute_{k}" for k in range(means.size)]
    return {name: float(v) for name, v in zip(labels, means, strict=True)}
