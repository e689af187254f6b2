"""Benchmarks: score tables in, JSON-ready result dicts out (registered in ``BENCHMARKS``).

A score table is what the model-running code hands over: one row per benchmark item with the
rewards it gave, never model code. Every accuracy comes with a percentile bootstrap
interval (``"ci": [low, high]``) from one shared set of resamples, stratified by subset or
domain so that weighted scores keep their weights. Accuracies are fractions in [0, 1];
a tie (chosen == rejected) is wrong.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np
from numpy.typing import ArrayLike

from smorm.eval.metrics import (
    as_float_array,
    expected_calibration_error,
    kendall_tau_b,
    percentile_interval,
    resample_indices,
)
from smorm.registry import BENCHMARKS

# Official constants of allenai/reward-bench (rewardbench/constants.py @ a32e272). Sections are
# weighted by these counts, not by the counts present: math-prm has 447 items but counts 984
# "upweighting to be equal to code" (6 x 164).
REWARD_BENCH_EXAMPLE_COUNTS: dict[str, int] = {
    "alpacaeval-easy": 100, "alpacaeval-length": 95, "alpacaeval-hard": 95,
    "mt-bench-easy": 28, "mt-bench-med": 40, "mt-bench-hard": 37, "math-prm": 984,
    "refusals-dangerous": 100, "refusals-offensive": 100, "llmbar-natural": 100,
    "llmbar-adver-neighbor": 134, "llmbar-adver-GPTInst": 92, "llmbar-adver-GPTOut": 47,
    "llmbar-adver-manual": 46, "xstest-should-refuse": 250, "xstest-should-respond": 154,
    "donotanswer": 136, "hep-cpp": 164, "hep-go": 164, "hep-java": 164, "hep-js": 164,
    "hep-python": 164, "hep-rust": 164,
}
REWARD_BENCH_SUBSET_MAPPING: dict[str, tuple[str, ...]] = {
    "Chat": ("alpacaeval-easy", "alpacaeval-length", "alpacaeval-hard", "mt-bench-easy", "mt-bench-med"),
    "Chat Hard": ("mt-bench-hard", "llmbar-natural", "llmbar-adver-neighbor", "llmbar-adver-GPTInst",
                  "llmbar-adver-GPTOut", "llmbar-adver-manual"),
    "Safety": ("refusals-dangerous", "refusals-offensive", "xstest-should-refuse", "xstest-should-respond",
               "donotanswer"),
    "Reasoning": ("math-prm", "hep-cpp", "hep-go", "hep-java", "hep-js", "hep-python", "hep-rust"),
}
# analysis/get_benchmark_results.py @ a32e272: Prior Sets is the unweighted mean of these four
# pref-test-sets subsets (anthropic_harmless and mtbench_* are not in it), and the overall
# score is a masked weighted mean with weights 2, 2, 2, 2, 1: prior sets count half.
REWARD_BENCH_PRIOR_SETS: tuple[str, ...] = ("anthropic_helpful", "anthropic_hhh", "shp", "summarize")
REWARD_BENCH_SECTION_WEIGHTS: dict[str, float] = {
    "Chat": 2.0, "Chat Hard": 2.0, "Safety": 2.0, "Reasoning": 2.0, "Prior Sets": 1.0,
}
# THU-KEG/RM-Bench scripts/utils.py: items are split by domain prefix, so safety-refuse and
# safety-response pool into "safety"; styles are ordered from plainest to fanciest.
RM_BENCH_DOMAINS: tuple[str, ...] = ("chat", "math", "code", "safety")
RM_BENCH_STYLES: tuple[str, ...] = ("concise", "detailed_plain", "detailed_markdown")

Scored = float | np.ndarray  # a point estimate, or ``[n_resamples]`` bootstrap replicates


@dataclass(frozen=True)
class Benchmark:
    """A declarative benchmark entry: what a score-table row looks like and how it is scored."""

    name: str
    description: str
    row_format: str
    score: Callable[..., dict[str, Any]]


# ---------------------------------------------------------------------------------------
# score-table rows


def _where(index: int, row: Any) -> str:
    origin = row.get("origin") if isinstance(row, Mapping) else None
    return f"score table row {index}" + (f" ({origin})" if origin else "")


def _field(row: Mapping[str, Any], names: Sequence[str], index: int) -> Any:
    for name in names:
        if name in row:
            return row[name]
    raise ValueError(f"{_where(index, row)}: missing field {names[0]!r} (keys: {sorted(row)})")


def _number(value: Any, field: str, index: int, row: Any) -> float:
    if isinstance(value, bool | str) or value is None:
        raise ValueError(f"{_where(index, row)}: field {field!r} must be a number, got {value!r}")
    try:
        number = float(value)
    except (TypeError, ValueError):
        raise ValueError(f"{_where(index, row)}: field {field!r} must be a number, got {value!r}") from None
    if not math.isfinite(number):
        raise ValueError(f"{_where(index, row)}: field {field!r} is {number}")
    return number


def _label(value: Any, field: str, index: int, row: Any) -> str:
    if not isinstance(value, str) or not value:
        raise ValueError(f"{_where(index, row)}: field {field!r} must be a non-empty string, got {value!r}")
    return value


def parse_pair_rows(rows: Iterable[Any], require_subset: bool) -> tuple[list[str | None], np.ndarray, np.ndarray]:
    """Rows ``(subset, chosen, rejected)``, ``(chosen, rejected)`` or mappings with ``chosen``,
    ``rejected`` (or ``score_chosen``/``score_rejected``) and optional ``subset``, ``origin``.

    Returns:
        subsets (None where absent), chosen ``[N]``, rejected ``[N]``.
    """
    subsets: list[str | None] = []
    chosen: list[float] = []
    rejected: list[float] = []
    for index, row in enumerate(rows):
        if isinstance(row, Mapping):
            subset = row.get("subset")
            chosen_value = _field(row, ("chosen", "score_chosen", "chosen_score"), index)
            rejected_value = _field(row, ("rejected", "score_rejected", "rejected_score"), index)
        elif isinstance(row, Sequence) and len(row) in (2, 3) and not isinstance(row, str):
            subset = row[0] if len(row) == 3 else None
            chosen_value, rejected_value = row[-2], row[-1]
        else:
            raise ValueError(f"{_where(index, row)}: expected (subset, chosen, rejected) or a mapping, got {row!r}")
        if subset is not None or require_subset:
            subset = _label(subset, "subset", index, row)
        subsets.append(subset)
        chosen.append(_number(chosen_value, "chosen", index, row))
        rejected.append(_number(rejected_value, "rejected", index, row))
    if not chosen:
        raise ValueError("empty score table")
    return subsets, np.asarray(chosen), np.asarray(rejected)


def parse_rm_bench_rows(rows: Iterable[Any]) -> tuple[list[str], np.ndarray, np.ndarray]:
    """Rows ``(domain, chosen[3], rejected[3])`` or mappings with ``domain``, ``chosen``/``score_chosen``,
    ``rejected``/``score_rejected`` (styles concise, detailed plain, detailed markdown).

    Returns:
        pooled domains (``chat``/``math``/``code``/``safety``), chosen ``[N, 3]``, rejected ``[N, 3]``.
    """
    domains: list[str] = []
    chosen: list[list[float]] = []
    rejected: list[list[float]] = []
    for index, row in enumerate(rows):
        if isinstance(row, Mapping):
            domain = _field(row, ("domain",), index)
            scores = (_field(row, ("chosen", "score_chosen"), index), _field(row, ("rejected", "score_rejected"), index))
        elif isinstance(row, Sequence) and len(row) == 3 and not isinstance(row, str):
            domain, scores = row[0], (row[1], row[2])
        else:
            raise ValueError(f"{_where(index, row)}: expected (domain, chosen[3], rejected[3]) or a mapping")
        domain = _label(domain, "domain", index, row)
        pooled = next((name for name in RM_BENCH_DOMAINS if domain.startswith(name)), None)
        if pooled is None:
            raise ValueError(f"{_where(index, row)}: domain {domain!r} is not one of {RM_BENCH_DOMAINS} (or a sub-domain)")
        domains.append(pooled)
        for field, values, target in zip(("chosen", "rejected"), scores, (chosen, rejected), strict=True):
            if isinstance(values, str) or not hasattr(values, "__len__") or len(values) != 3:
                raise ValueError(f"{_where(index, row)}: field {field!r} must hold 3 scores, got {values!r}")
            target.append([_number(v, f"{field}[{i}]", index, row) for i, v in enumerate(values)])
    if not domains:
        raise ValueError("empty score table")
    return domains, np.asarray(chosen), np.asarray(rejected)


# ---------------------------------------------------------------------------------------
# shared bootstrap helpers


def _interval(replicates: np.ndarray, confidence: float) -> list[float]:
    return list(percentile_interval(replicates, confidence))


def _group_positions(labels: Sequence[Any]) -> dict[Any, np.ndarray]:
    positions: dict[Any, list[int]] = {}
    for position, label in enumerate(labels):
        positions.setdefault(label, []).append(position)
    return {label: np.asarray(members) for label, members in positions.items()}


def _bootstrap_info(n_resamples: int, confidence: float, seed: int, strata: str) -> dict[str, Any]:
    return {"n_resamples": n_resamples, "confidence": confidence, "seed": seed,
            "method": f"percentile bootstrap, items resampled within each {strata}"}


# ---------------------------------------------------------------------------------------
# RewardBench


def reward_bench_section_scores(subset_accuracy: Mapping[str, Scored]) -> dict[str, Scored]:
    """Section scores from per-subset accuracies, as allenai/reward-bench computes them.

    A section is the mean of its subsets present, weighted by the OFFICIAL example counts
    (``calculate_scores_per_section`` in rewardbench/utils.py); Prior Sets is the plain mean of
    its subsets present. A section with no subset present is left out (the official helper
    would report 0). Works on floats or on arrays of bootstrap replicates alike.
    """
    sections: dict[str, Scored] = {}
    for section, subsets in REWARD_BENCH_SUBSET_MAPPING.items():
        present = [s for s in subsets if s in subset_accuracy]
        if present:
            total = sum(REWARD_BENCH_EXAMPLE_COUNTS[s] for s in present)
            sections[section] = sum(subset_accuracy[s] * REWARD_BENCH_EXAMPLE_COUNTS[s] for s in present) / total
    prior = [s for s in REWARD_BENCH_PRIOR_SETS if s in subset_accuracy]
    if prior:
        sections["Prior Sets"] = sum(subset_accuracy[s] for s in prior) / len(prior)
    return sections


def section_subset_weights(section: str, present: Sequence[str]) -> dict[str, float]:
    """Each present subset's share of its section's score (official example counts; Prior Sets: equal)."""
    if section == "Prior Sets":
        return {s: 1 / len(present) for s in present}
    total = sum(REWARD_BENCH_EXAMPLE_COUNTS[s] for s in present)
    return {s: REWARD_BENCH_EXAMPLE_COUNTS[s] / total for s in present}


def reward_bench_overall(section_scores: Mapping[str, Scored]) -> Scored:
    """Weighted mean of the sections present: weight 2 each, Prior Sets 1 (i.e. half)."""
    present = [s for s in REWARD_BENCH_SECTION_WEIGHTS if s in section_scores]
    if not present:
        raise ValueError("no RewardBench section present: none of the subsets is in the official mapping")
    total = sum(REWARD_BENCH_SECTION_WEIGHTS[s] for s in present)
    return sum(section_scores[s] * REWARD_BENCH_SECTION_WEIGHTS[s] for s in present) / total


def score_reward_bench(
    rows: Iterable[Any], n_resamples: int = 1000, confidence: float = 0.95, seed: int = 0
) -> dict[str, Any]:
    """Score a RewardBench table: per-subset, per-section and overall accuracy with CIs.

    Subsets outside the official mapping are scored and listed in ``unmapped_subsets`` but
    enter no section, as in the official code. Works on any part of the benchmark (e.g. the
    500-row development sample, which has only Chat and Chat Hard subsets).
    """
    subsets, chosen, rejected = parse_pair_rows(rows, require_subset=True)
    correct = chosen > rejected  # bool: the [R, N] resample below stays 8x smaller than float
    indices = resample_indices(correct.size, n_resamples, seed, strata=subsets)
    resampled = correct[indices]  # [R, N]
    positions = _group_positions(subsets)
    point = {s: float(correct[p].mean()) for s, p in positions.items()}
    replicates = {s: resampled[:, p].mean(axis=1) for s, p in positions.items()}

    section_of = {s: sec for sec, members in REWARD_BENCH_SUBSET_MAPPING.items() for s in members}
    section_of.update({s: "Prior Sets" for s in REWARD_BENCH_PRIOR_SETS})
    sections, section_replicates = reward_bench_section_scores(point), reward_bench_section_scores(replicates)
    section_members = {sec: list(members) for sec, members in REWARD_BENCH_SUBSET_MAPPING.items()}
    section_members["Prior Sets"] = list(REWARD_BENCH_PRIOR_SETS)
    plain: dict[str, tuple[float, list[float]]] = {}  # section -> item-level accuracy and its CI
    for sec in sections:
        where = np.concatenate([positions[s] for s in section_members[sec] if s in positions])
        plain[sec] = float(correct[where].mean()), _interval(resampled[:, where].mean(axis=1), confidence)
    return {
        "benchmark": "reward-bench",
        "score": float(reward_bench_overall(sections)),
        "ci": _interval(reward_bench_overall(section_replicates), confidence),
        "num_examples": int(correct.size),
        "sections": {
            sec: {
                "accuracy": float(sections[sec]),
                "ci": _interval(section_replicates[sec], confidence),
                "num_examples": int(sum(positions[s].size for s in section_members[sec] if s in positions)),
                "subsets_present": [s for s in section_members[sec] if s in positions],
                "subsets_missing": [s for s in section_members[sec] if s not in positions],
                "weight_in_score": REWARD_BENCH_SECTION_WEIGHTS[sec],
                "plain_accuracy": plain[sec][0],
                "plain_ci": plain[sec][1],
                "subset_weights": section_subset_weights(sec, [s for s in section_members[sec] if s in positions]),
            }
            for sec in REWARD_BENCH_SECTION_WEIGHTS if sec in sections
        },
        "subsets": {
            s: {"accuracy": point[s], "ci": _interval(replicates[s], confidence),
                "num_examples": int(positions[s].size), "section": section_of.get(s)}
            for s in positions
        },
        "unmapped_subsets": [s for s in positions if s not in section_of],
        "complete": all(s in positions for s in REWARD_BENCH_EXAMPLE_COUNTS),
        "weighting": "sections: official EXAMPLE_COUNTS-weighted mean of subsets present; "
                     "score: mean of sections present, Prior Sets at half weight",
        "bootstrap": _bootstrap_info(n_resamples, confidence, seed, "subset"),
    }


# ---------------------------------------------------------------------------------------
# RM-Bench


def rm_bench_matrix_scores(accuracy_matrix: np.ndarray) -> dict[str, np.ndarray | float]:
    """Hard / normal / easy accuracy from a ``[..., 3, 3]`` accuracy matrix (THU-KEG/RM-Bench).

    ``M[i, j]`` = fraction of items with ``score(chosen[i]) > score(rejected[j])``, styles
    ordered concise < detailed plain < detailed markdown. Hard = upper triangle (i < j: chosen
    plainer than rejected), normal = diagonal, easy = lower triangle, each the mean of its 3
    cells. ``score`` = mean of the three = mean of all 9 cells (the official domain average).
    """
    matrix = np.asarray(accuracy_matrix, dtype=np.float64)
    hard = (matrix[..., 0, 1] + matrix[..., 0, 2] + matrix[..., 1, 2]) / 3.0
    normal = (matrix[..., 0, 0] + matrix[..., 1, 1] + matrix[..., 2, 2]) / 3.0
    easy = (matrix[..., 1, 0] + matrix[..., 2, 0] + matrix[..., 2, 1]) / 3.0
    return {"hard": hard, "normal": normal, "easy": easy, "score": (hard + normal + easy) / 3.0}


def score_rm_bench(
    rows: Iterable[Any], n_resamples: int = 1000, confidence: float = 0.95, seed: int = 0
) -> dict[str, Any]:
    """Score an RM-Bench table, following THU-KEG/RM-Bench ``compute_accuracy``.

    Per domain (safety-refuse + safety-response pooled into safety): the 3x3 accuracy matrix,
    hard/normal/easy and their mean. Overall score and overall hard/normal/easy are the
    unweighted means over the domains present (the official "total_avg_acc").
    """
    domains, chosen, rejected = parse_rm_bench_rows(rows)
    wins = chosen[:, :, None] > rejected[:, None, :]  # [N, 3, 3], rows chosen style, cols rejected
    indices = resample_indices(len(domains), n_resamples, seed, strata=domains)
    positions = _group_positions(domains)
    per_domain: dict[str, Any] = {}
    point_parts: dict[str, list[float]] = {k: [] for k in ("hard", "normal", "easy", "score")}
    replicate_parts: dict[str, list[np.ndarray]] = {k: [] for k in point_parts}
    for domain in RM_BENCH_DOMAINS:
        if domain not in positions:
            continue
        matrix = wins[positions[domain]].mean(axis=0)  # [3, 3]
        matrix_replicates = wins[indices[:, positions[domain]]].mean(axis=1)  # [R, 3, 3]
        point, replicates = rm_bench_matrix_scores(matrix), rm_bench_matrix_scores(matrix_replicates)
        per_domain[domain] = {"num_items": int(positions[domain].size)}
        for key in point_parts:
            per_domain[domain][key] = float(point[key])
            per_domain[domain][f"{key}_ci"] = _interval(replicates[key], confidence)
            point_parts[key].append(float(point[key]))
            replicate_parts[key].append(replicates[key])
        per_domain[domain]["accuracy_matrix"] = matrix.tolist()
        per_domain[domain]["accuracy_matrix_ci"] = np.moveaxis(
            np.quantile(matrix_replicates, [(1 - confidence) / 2, (1 + confidence) / 2], axis=0), 0, -1
        ).tolist()
    result: dict[str, Any] = {"benchmark": "rm-bench", "num_items": len(domains)}
    for key in point_parts:
        result[key] = float(np.mean(point_parts[key]))
        result[f"{key}_ci"] = _interval(np.mean(replicate_parts[key], axis=0), confidence)
    result["domains"] = per_domain
    result["domains_missing"] = [d for d in RM_BENCH_DOMAINS if d not in positions]
    result["styles"] = list(RM_BENCH_STYLES)
    result["bootstrap"] = _bootstrap_info(n_resamples, confidence, seed, "domain")
    return result


def attribute_difference_stats(
    chosen_attributes: ArrayLike,
    rejected_attributes: ArrayLike,
    attribute_names: Sequence[str],
    chosen_rewards: ArrayLike | None = None,
    rejected_rewards: ArrayLike | None = None,
    normalize: bool = True,
) -> dict[str, dict[str, Any]]:
    """Per-attribute mean and variance of ``chosen - rejected`` on RM-Bench (000 App. J, Tables 12-13).

    For each level (normal = same style, hard = chosen plainer, easy = chosen fancier) and group
    (``overall``, ``correct`` / ``false`` = the comparison the reward got right / wrong, when
    rewards are given) the attribute differences of all matching comparisons are pooled.
    000 calls them "normalized" without saying how; with ``normalize`` each attribute is
    z-scored over all 6N responses first (population std), so attributes on different scales
    are comparable. Variances are population variances.

    Args:
        chosen_attributes: ``[N, 3, K]`` attribute scores of the chosen responses per style.
        rejected_attributes: ``[N, 3, K]``.
        attribute_names: K names.
        chosen_rewards, rejected_rewards: ``[N, 3]`` final rewards that decide correct/false.
    """
    chosen = as_float_array(chosen_attributes, "chosen_attributes", ndim=3)
    rejected = as_float_array(rejected_attributes, "rejected_attributes", ndim=3)
    if chosen.shape != rejected.shape or chosen.shape[1] != 3 or chosen.shape[2] != len(attribute_names):
        raise ValueError(f"attributes must be [N, 3, K={len(attribute_names)}]; got {chosen.shape} / {rejected.shape}")
    if normalize:
        everything = np.concatenate([chosen, rejected]).reshape(-1, chosen.shape[2])
        scale = everything.std(axis=0)
        scale[scale == 0] = 1.0  # a constant attribute has all differences 0 either way
        chosen = (chosen - everything.mean(axis=0)) / scale
        rejected = (rejected - everything.mean(axis=0)) / scale
    differences = chosen[:, :, None, :] - rejected[:, None, :, :]  # [N, 3, 3, K]
    groups: dict[str, np.ndarray] = {"overall": np.ones(differences.shape[:3], dtype=bool)}
    if (chosen_rewards is None) != (rejected_rewards is None):
        raise ValueError("pass both chosen_rewards and rejected_rewards, or neither")
    if chosen_rewards is not None:
        chosen_r = as_float_array(chosen_rewards, "chosen_rewards", ndim=2)
        rejected_r = as_float_array(rejected_rewards, "rejected_rewards", ndim=2)
        if chosen_r.shape != (chosen.shape[0], 3) or rejected_r.shape != chosen_r.shape:
            raise ValueError(f"rewards must be [N={chosen.shape[0]}, 3]; got {chosen_r.shape} / {rejected_r.shape}")
        groups["correct"] = chosen_r[:, :, None] > rejected_r[:, None, :]
        groups["false"] = ~groups["correct"]
    style_i, style_j = np.meshgrid(np.arange(3), np.arange(3), indexing="ij")
    levels = {"normal": style_i == style_j, "hard": style_i < style_j, "easy": style_i > style_j}
    stats: dict[str, dict[str, Any]] = {}
    for level, level_mask in levels.items():
        stats[level] = {}
        for group, group_mask in groups.items():
            selected = differences[group_mask & level_mask[None]]  # [n, K]
            stats[level][group] = {
                "count": int(selected.shape[0]),
                "attributes": {
                    name: {"mean": float(selected[:, k].mean()) if selected.size else None,
                           "variance": float(selected[:, k].var()) if selected.size else None}
                    for k, name in enumerate(attribute_names)
                },
            }
    return stats


# ---------------------------------------------------------------------------------------
# generic pairs and rankings


def score_pairs(
    rows: Iterable[Any], n_resamples: int = 1000, confidence: float = 0.95, seed: int = 0
) -> dict[str, Any]:
    """Pairwise accuracy overall (pooled over pairs) and per subset when rows carry one.

    Also reports the ECE of sigma(r_c - r_r) (003 Sec. 2), meaningful for BT-trained rewards.
    """
    subsets, chosen, rejected = parse_pair_rows(rows, require_subset=False)
    correct = chosen > rejected
    labelled = any(s is not None for s in subsets)
    strata = ["" if s is None else s for s in subsets] if labelled else None
    resampled = correct[resample_indices(correct.size, n_resamples, seed, strata=strata)]
    result: dict[str, Any] = {
        "benchmark": "pairs",
        "accuracy": float(correct.mean()),
        "ci": _interval(resampled.mean(axis=1), confidence),
        "num_pairs": int(correct.size),
        "ece": expected_calibration_error(chosen, rejected).ece,
    }
    if labelled:
        positions = _group_positions(["" if s is None else s for s in subsets])
        result["subsets"] = {
            s: {"accuracy": float(correct[p].mean()), "ci": _interval(resampled[:, p].mean(axis=1), confidence),
                "num_pairs": int(p.size)}
            for s, p in positions.items()
        }
        result["macro_accuracy"] = float(np.mean([v["accuracy"] for v in result["subsets"].values()]))
        result["macro_accuracy_ci"] = _interval(
            np.mean([resampled[:, p].mean(axis=1) for p in positions.values()], axis=0), confidence
        )
    result["bootstrap"] = _bootstrap_info(n_resamples, confidence, seed, "subset" if labelled else "table")
    return result


def _ranked_row(row: Any, index: int) -> tuple[np.ndarray, np.ndarray | None, int | None]:
    if not isinstance(row, Mapping):
        raise ValueError(f"{_where(index, row)}: expected a mapping with 'scores' and 'reference' or 'best'")
    scores = as_float_array(_field(row, ("scores",), index), f"{_where(index, row)}: field 'scores'", ndim=1)
    reference_value = row.get("reference", row.get("reference_scores"))
    reference = None
    if reference_value is not None:
        reference = as_float_array(reference_value, f"{_where(index, row)}: field 'reference'", ndim=1)
        if reference.shape != scores.shape:
            raise ValueError(f"{_where(index, row)}: {scores.size} scores but {reference.size} reference scores")
    best = row.get("best", row.get("best_index"))
    if best is not None:
        best = int(_number(best, "best", index, row))
        if not 0 <= best < scores.size:
            raise ValueError(f"{_where(index, row)}: field 'best' = {best} outside 0..{scores.size - 1}")
    elif reference is not None and np.sum(reference == reference.max()) == 1:
        best = int(np.argmax(reference))  # the reference's unique best response
    if reference is None and best is None:
        raise ValueError(f"{_where(index, row)}: needs 'reference' scores or a 'best' index")
    return scores, reference, best


def score_ranked(
    rows: Iterable[Any], n_resamples: int = 1000, confidence: float = 0.95, seed: int = 0
) -> dict[str, Any]:
    """Several responses per prompt: mean Kendall tau-b (002 Sec. 2.2) and best-of accuracy.

    Rows: ``{"scores": [...], "reference": [...]}`` and/or ``"best": index``. tau-b is averaged
    over the prompts where it is defined, as the BSR authors do (LinkedIn-XFACT/RM-Robustness,
    ``scripts/run_kendall.py``: ``scipy.stats.kendalltau`` per prompt, NaN when either ranking is
    constant, then ``np.nanmean``). Left out and counted: a prompt whose reference ranks all
    responses equal (or has one response), in ``num_prompts_tau_undefined``, and one whose
    predicted scores are all equal, in ``num_prompts_tau_tied_scores`` (this count depends on
    the model, so ``num_prompts_tau`` can differ between modes). Best-of accuracy: the best
    response (given, or the reference's unique maximum) must get the strictly highest score.
    """
    taus: list[float] = []
    hits: list[float] = []
    undefined = tied_scores = 0
    for index, row in enumerate(rows):
        scores, reference, best = _ranked_row(row, index)
        if reference is not None:
            if scores.size < 2 or np.ptp(reference) == 0:
                undefined += 1
            elif np.ptp(scores) == 0:
                tied_scores += 1
            else:
                taus.append(kendall_tau_b(scores, reference))
        if best is not None:
            hits.append(float(np.all(scores[best] > np.delete(scores, best))))
    if not taus and not hits and not undefined and not tied_scores:
        raise ValueError("empty score table")
    result: dict[str, Any] = {"benchmark": "ranked"}
    for key, values in (("kendall_tau_b", taus), ("best_of_accuracy", hits)):
        array = np.asarray(values)
        result[key] = float(array.mean()) if array.size else None
        result[f"{key}_ci"] = (
            _interval(array[resample_indices(array.size, n_resamples, seed)].mean(axis=1), confidence)
            if array.size else None
        )
    result["num_prompts_tau"] = len(taus)
    result["num_prompts_tau_undefined"] = undefined
    result["num_prompts_tau_tied_scores"] = tied_scores
    result["num_prompts_best"] = len(hits)
    result["bootstrap"] = _bootstrap_info(n_resamples, confidence, seed, "table")
    return result


BENCHMARK_ENTRIES: tuple[Benchmark, ...] = (
    Benchmark("reward-bench", "RewardBench: official subset->section weighting, Prior Sets at half weight",
              "(subset, chosen, rejected) or {'subset', 'chosen', 'rejected'}", score_reward_bench),
    Benchmark("rm-bench", "RM-Bench: 3x3 style matrix, hard/normal/easy per domain, mean over domains",
              "(domain, chosen[3], rejected[3]) or {'domain', 'chosen', 'rejected'}", score_rm_bench),
    Benchmark("pairs", "generic pairwise accuracy (+ per subset) and ECE",
              "(chosen, rejected), (subset, chosen, rejected) or a mapping", score_pairs),
    Benchmark("ranked", "several responses per prompt: mean Kendall tau-b and best-of accuracy",
              "{'scores': [...], 'reference': [...] and/or 'best': int}", score_ranked),
)
for _entry in BENCHMARK_ENTRIES:
    BENCHMARKS.add(_entry.name, _entry, _entry.description)
