"""Metrics over reward scores and hidden states: pure functions, numpy in, plain floats out.

Inputs may be numpy arrays, torch tensors or sequences of numbers. Every accuracy here
counts a tie (chosen score == rejected score) as wrong, as RewardBench and RM-Bench do.
Papers: 000 = SMORM, 002 = BSR robustness, 003 = MORE. Theorem 1 of 000 is in
:mod:`smorm.eval.theory` and the reliability diagram in :mod:`smorm.eval.plots` (both names still
import from here).
"""

from __future__ import annotations

import math
from collections.abc import Callable, Hashable, Sequence
from dataclasses import asdict, dataclass
from typing import Any

import numpy as np
from numpy.typing import ArrayLike

# ---------------------------------------------------------------------------------------
# input checking


def as_float_array(values: ArrayLike, name: str, ndim: int | None = None) -> np.ndarray:
    """``values`` as a float64 numpy array; a torch tensor is detached and moved to CPU.

    Raises:
        ValueError: naming ``name`` and the first offending index when a value is NaN/inf,
            or when the number of dimensions is not ``ndim``.
    """
    if hasattr(values, "detach"):  # torch.Tensor, without importing torch here
        values = values.detach().cpu().double().numpy()
    try:
        array = np.asarray(values, dtype=np.float64)
    except (TypeError, ValueError) as err:
        raise ValueError(f"{name}: expected numbers, got {type(values).__name__} ({err})") from None
    if ndim is not None and array.ndim != ndim:
        raise ValueError(f"{name}: expected {ndim} dimension(s), got shape {array.shape}")
    bad = np.flatnonzero(~np.isfinite(array))
    if bad.size:
        where = np.unravel_index(bad[0], array.shape)
        raise ValueError(f"{name}: value at index {tuple(int(i) for i in where)} is {array[where]}")
    return array


def _pair_arrays(chosen: ArrayLike, rejected: ArrayLike) -> tuple[np.ndarray, np.ndarray]:
    chosen_rewards = as_float_array(chosen, "chosen rewards", ndim=1)
    rejected_rewards = as_float_array(rejected, "rejected rewards", ndim=1)
    if chosen_rewards.shape != rejected_rewards.shape:
        raise ValueError(
            f"chosen rewards {chosen_rewards.shape} and rejected rewards {rejected_rewards.shape} differ in length"
        )
    if chosen_rewards.size == 0:
        raise ValueError("no pairs to score (empty chosen/rejected rewards)")
    return chosen_rewards, rejected_rewards


def _json_float(value: float) -> float | None:
    """NaN (an empty bin, an undefined statistic) becomes None so results serialise to JSON."""
    return None if math.isnan(value) else float(value)


# ---------------------------------------------------------------------------------------
# accuracy and bootstrap


def pairwise_accuracy(chosen: ArrayLike, rejected: ArrayLike) -> float:
    """Fraction of pairs with ``chosen > rejected`` (a tie counts as wrong).

    Args:
        chosen: ``[N]`` rewards of the preferred responses.
        rejected: ``[N]`` rewards of the dispreferred responses.
    """
    chosen_rewards, rejected_rewards = _pair_arrays(chosen, rejected)
    return float(np.mean(chosen_rewards > rejected_rewards))


def resample_indices(
    n_items: int, n_resamples: int, seed: int = 0, strata: Sequence[Hashable] | None = None
) -> np.ndarray:
    """Bootstrap index draws ``[n_resamples, n_items]`` (with replacement).

    With ``strata`` (one label per item) each stratum is resampled within itself and keeps its
    size and its positions, so a statistic that weights strata (RewardBench subsets, RM-Bench
    domains) keeps the same weights in every resample and no stratum ever goes missing.
    """
    if n_items <= 0:
        raise ValueError("bootstrap needs at least one item")
    rng = np.random.default_rng(seed)
    if strata is None:
        return rng.integers(0, n_items, size=(n_resamples, n_items))
    if len(strata) != n_items:
        raise ValueError(f"strata has {len(strata)} labels for {n_items} items")
    indices = np.empty((n_resamples, n_items), dtype=np.int64)
    # dict keeps first-appearance order, so draws do not depend on how labels sort
    positions: dict[Hashable, list[int]] = {}
    for position, label in enumerate(strata):
        positions.setdefault(label, []).append(position)
    for members in positions.values():
        member_positions = np.asarray(members)
        draws = rng.integers(0, member_positions.size, size=(n_resamples, member_positions.size))
        indices[:, member_positions] = member_positions[draws]
    return indices


def percentile_interval(statistics: np.ndarray, confidence: float = 0.95) -> tuple[float, float]:
    """Percentile bootstrap interval of a ``[n_resamples]`` array of resampled statistics."""
    if not 0.0 < confidence < 1.0:
        raise ValueError(f"confidence must be in (0, 1), got {confidence}")
    tail = (1.0 - confidence) / 2.0
    low, high = np.quantile(np.asarray(statistics, dtype=np.float64), [tail, 1.0 - tail])
    return float(low), float(high)


def bootstrap_ci(
    values_or_statistic: ArrayLike | Callable[[np.ndarray], float],
    n_resamples: int = 1000,
    confidence: float = 0.95,
    seed: int = 0,
    *,
    n_items: int | None = None,
    strata: Sequence[Hashable] | None = None,
) -> tuple[float, float]:
    """Percentile bootstrap confidence interval, deterministic for a given ``seed``.

    Two forms:
      * ``bootstrap_ci(correct)`` with ``correct`` ``[N]`` per-example values (e.g. 0/1
        correctness): interval of their mean.
      * ``bootstrap_ci(statistic, n_items=N)`` with ``statistic(indices) -> float`` taking an
        ``[N]`` array of resampled item indices: interval of any score recomputed on resampled
        items (e.g. a benchmark's overall score).

    ``strata`` resamples within groups (see ``resample_indices``).

    Returns:
        ``(low, high)``.
    """
    if callable(values_or_statistic):
        if n_items is None:
            raise ValueError("bootstrap_ci with a statistic needs n_items")
        indices = resample_indices(n_items, n_resamples, seed, strata)
        statistics = np.array([float(values_or_statistic(row)) for row in indices])
        return percentile_interval(statistics, confidence)
    values = as_float_array(values_or_statistic, "bootstrap values", ndim=1)
    indices = resample_indices(values.size, n_resamples, seed, strata)
    return percentile_interval(values[indices].mean(axis=1), confidence)


# ---------------------------------------------------------------------------------------
# calibration (003 Sec. 2)


@dataclass(frozen=True)
class ECEResult:
    """Expected calibration error and the reliability-diagram data behind it.

    Attributes:
        ece: ``sum_m |B_m|/N * |acc(B_m) - conf(B_m)|``.
        bin_edges: ``[n_bins + 1]`` equal-width edges over [0, 1]; bin m is ``(edge_m, edge_m+1]``.
        bin_confidence: ``[n_bins]`` mean confidence per bin (NaN where empty).
        bin_accuracy: ``[n_bins]`` fraction correct per bin (NaN where empty).
        bin_counts: ``[n_bins]`` number of pairs per bin.
    """

    ece: float
    bin_edges: tuple[float, ...]
    bin_confidence: tuple[float, ...]
    bin_accuracy: tuple[float, ...]
    bin_counts: tuple[int, ...]

    def to_dict(self) -> dict[str, Any]:
        """JSON-ready dict (empty bins give None)."""
        out = asdict(self)
        out["bin_confidence"] = [_json_float(v) for v in self.bin_confidence]
        out["bin_accuracy"] = [_json_float(v) for v in self.bin_accuracy]
        out["bin_edges"] = list(self.bin_edges)
        out["bin_counts"] = list(self.bin_counts)
        return out


def expected_calibration_error(chosen: ArrayLike, rejected: ArrayLike, n_bins: int = 10) -> ECEResult:
    """ECE of the Bradley-Terry preference probabilities, as defined in 003 Sec. 2.

    The model's probability that the chosen response wins is ``p = sigma(r_c - r_r)`` (003
    Eq. 1). 003 bins "model predictions ... according to their prediction confidence" and
    scores ``acc(B_m) = mean 1[y_hat = y]``, i.e. the confidence is that of the predicted
    winner: ``p_hat = max(p, 1 - p) = sigma(|r_c - r_r|)`` and the prediction is correct iff
    ``r_c > r_r`` (Guo et al. 2017, whom 003 follows). Bins are ``((m-1)/M, m/M]``, M = 10 in
    003. Confidences lie in [0.5, 1], so the lower bins are empty. Binning both orientations
    of every pair over [0, 1] gives the same ECE except for exact ties, which here count as
    wrong with confidence 0.5 (as in ``pairwise_accuracy``).

    Args:
        chosen: ``[N]`` rewards of the preferred responses.
        rejected: ``[N]`` rewards of the dispreferred responses.
        n_bins: M, the number of equal-width bins over [0, 1].
    """
    if n_bins < 1:
        raise ValueError(f"n_bins must be >= 1, got {n_bins}")
    chosen_rewards, rejected_rewards = _pair_arrays(chosen, rejected)
    reward_margin = chosen_rewards - rejected_rewards
    confidence = 1.0 / (1.0 + np.exp(-np.abs(reward_margin)))  # sigma(|margin|), no overflow
    correct = (reward_margin > 0).astype(np.float64)
    edges = np.linspace(0.0, 1.0, n_bins + 1)
    # searchsorted on the inner edges, side="left", puts a value equal to an edge in the bin
    # below it: the right-closed intervals ((m-1)/M, m/M] of 003
    bin_index = np.searchsorted(edges[1:-1], confidence, side="left")
    counts = np.bincount(bin_index, minlength=n_bins)
    confidence_sum = np.bincount(bin_index, weights=confidence, minlength=n_bins)
    correct_sum = np.bincount(bin_index, weights=correct, minlength=n_bins)
    with np.errstate(invalid="ignore", divide="ignore"):
        bin_confidence = np.where(counts > 0, confidence_sum / counts, np.nan)
        bin_accuracy = np.where(counts > 0, correct_sum / counts, np.nan)
    ece = float(np.sum(np.abs(correct_sum - confidence_sum)) / reward_margin.size)
    return ECEResult(
        ece=ece,
        bin_edges=tuple(float(e) for e in edges),
        bin_confidence=tuple(float(c) for c in bin_confidence),
        bin_accuracy=tuple(float(a) for a in bin_accuracy),
        bin_counts=tuple(int(n) for n in counts),
    )


@dataclass(frozen=True)
class RewardDifferenceOutliers:
    """Box-plot outliers of the reward differences ``r_c - r_r`` (003 App. C, Tables 4-6).

    Means are None when there is no outlier of that sign.
    """

    positive_count: int
    positive_mean: float | None
    negative_count: int
    negative_mean: float | None
    num_positive: int
    num_negative: int
    positive_fences: tuple[float, float] | None
    negative_fences: tuple[float, float] | None


def _tukey_fences(values: np.ndarray, whisker: float) -> tuple[float, float]:
    first_quartile, third_quartile = np.percentile(values, [25, 75])
    spread = third_quartile - first_quartile
    return float(first_quartile - whisker * spread), float(third_quartile + whisker * spread)


def reward_difference_outliers(
    chosen: ArrayLike, rejected: ArrayLike, whisker: float = 1.5
) -> RewardDifferenceOutliers:
    """Count and average the outlying reward differences, as in 003 App. C.

    003 draws one box plot of the positive reward differences (correct pairs) and one of the
    negative ones (Fig. 5, 8) and tabulates their outliers' count and mean (Tables 4-6). The
    paper does not define outliers further; we use the box-plot convention (Tukey, matplotlib's
    default): within each sign group, values outside ``[Q1 - 1.5 IQR, Q3 + 1.5 IQR]`` with
    linearly interpolated quartiles. Zero differences belong to neither group.

    Args:
        chosen: ``[N]`` rewards of the preferred responses.
        rejected: ``[N]`` rewards of the dispreferred responses.
        whisker: the IQR multiple of the fences.
    """
    chosen_rewards, rejected_rewards = _pair_arrays(chosen, rejected)
    reward_margin = chosen_rewards - rejected_rewards
    summary: dict[str, Any] = {}
    for sign, group in (("positive", reward_margin[reward_margin > 0]), ("negative", reward_margin[reward_margin < 0])):
        summary[f"num_{sign}"] = int(group.size)
        if group.size == 0:
            summary.update({f"{sign}_count": 0, f"{sign}_mean": None, f"{sign}_fences": None})
            continue
        low, high = _tukey_fences(group, whisker)
        outliers = group[(group < low) | (group > high)]
        summary[f"{sign}_count"] = int(outliers.size)
        summary[f"{sign}_mean"] = float(outliers.mean()) if outliers.size else None
        summary[f"{sign}_fences"] = (low, high)
    return RewardDifferenceOutliers(**summary)


# ---------------------------------------------------------------------------------------
# hidden-state geometry (002)


def hidden_state_norms(hidden: ArrayLike, ddof: int = 0) -> tuple[float, float]:
    """Mean and variance of the L2 norms ``||h(x, y)||`` of pooled hidden states.

    002 Sec. 4.1 and Fig. 3 track the dispersion of these norms as the source of BT
    over-optimisation. Variance is the population variance unless ``ddof=1``.

    Args:
        hidden: ``[N, d]`` pooled (last-real-token) hidden states.
    """
    states = as_float_array(hidden, "hidden states", ndim=2)
    if states.shape[0] == 0:
        raise ValueError("hidden states: no rows")
    norms = np.linalg.norm(states, axis=1)
    return float(norms.mean()), float(norms.var(ddof=ddof))


def effective_rank(hidden: ArrayLike) -> float:
    """Effective rank (Roy & Vetterli 2007) of a hidden-state matrix, 002 Eq. 32.

    ``erank(H) = exp(-sum_j p_j log p_j)`` with ``p_j = sigma_j / sum_i sigma_i`` over the
    ``Q = min(N, d)`` singular values of H itself (002 does not centre H, nor do we); a zero
    singular value contributes 0 (0 log 0 = 0).

    Args:
        hidden: ``[N, d]`` hidden states, one row per (prompt, response).
    """
    states = as_float_array(hidden, "hidden states", ndim=2)
    singular_values = np.linalg.svd(states, compute_uv=False)
    total = singular_values.sum()
    if total <= 0:
        raise ValueError("effective rank of an all-zero matrix is undefined")
    weights = singular_values[singular_values > 0] / total
    return float(np.exp(-np.sum(weights * np.log(weights))))


# ---------------------------------------------------------------------------------------
# rankings (002 Sec. 2.2: several responses per prompt)


def kendall_tau_b(predicted: ArrayLike, reference: ArrayLike) -> float:
    """Kendall's tau-b between predicted and reference scores of one prompt's responses.

    ``(n_c - n_d) / sqrt((n_0 - n_1)(n_0 - n_2))`` with n_1, n_2 the pairs tied in each
    ranking; NaN when either ranking is constant (tau-b is then 0/0), as ``scipy.stats.kendalltau``
    gives; ``benchmarks.score_ranked`` leaves such prompts out of the mean and counts them.
    """
    from scipy.stats import kendalltau  # scipy.stats is slow to import; only here

    predicted_scores = as_float_array(predicted, "predicted scores", ndim=1)
    reference_scores = as_float_array(reference, "reference scores", ndim=1)
    if predicted_scores.shape != reference_scores.shape:
        raise ValueError(f"predicted {predicted_scores.shape} and reference {reference_scores.shape} differ")
    if predicted_scores.size < 2:
        return float("nan")
    if np.ptp(predicted_scores) == 0 or np.ptp(reference_scores) == 0:
        return float("nan")
    return float(kendalltau(predicted_scores, reference_scores, variant="b").statistic)


def best_of_accuracy(scores_per_prompt: Sequence[ArrayLike], best_index: Sequence[int]) -> float:
    """Fraction of prompts whose reference-best response gets the strictly highest score.

    A tie for the top score counts as wrong. Prompts may have different numbers of responses.
    """
    if len(scores_per_prompt) != len(best_index):
        raise ValueError(f"{len(scores_per_prompt)} prompts but {len(best_index)} best indices")
    if not scores_per_prompt:
        raise ValueError("no prompts to score")
    hits = []
    for prompt_number, (scores, best) in enumerate(zip(scores_per_prompt, best_index, strict=True)):
        response_scores = as_float_array(scores, f"prompt {prompt_number} scores", ndim=1)
        if not 0 <= int(best) < response_scores.size:
            raise ValueError(f"prompt {prompt_number}: best index {best} outside 0..{response_scores.size - 1}")
        others = np.delete(response_scores, int(best))
        hits.append(bool(np.all(response_scores[int(best)] > others)))
    return float(np.mean(hits))


def __getattr__(name: str) -> object:
    """Names that moved to their own modules stay importable from here (imported lazily)."""
    moved = {"Theorem1Constants": "smorm.eval.theory", "theorem1_constants": "smorm.eval.theory",
             "plot_reliability": "smorm.eval.plots"}
    if name in moved:
        import importlib

        return getattr(importlib.import_module(moved[name]), name)
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
