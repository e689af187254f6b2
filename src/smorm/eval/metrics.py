"""Metrics over reward scores and hidden states: pure functions, numpy in, plain floats out.

Inputs may be numpy arrays, torch tensors or sequences of numbers. Every accuracy here
counts a tie (chosen score == rejected score) as wrong, as RewardBench and RM-Bench do.
Papers: 000 = SMORM, 002 = BSR robustness, 003 = MORE.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Hashable, Sequence
from dataclasses import asdict, dataclass
from pathlib import Path
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


def plot_reliability(result: ECEResult, path: str | Path, title: str = "") -> Path:
    """Write a reliability diagram (accuracy and mean confidence per bin) as an image file."""
    from matplotlib.figure import Figure  # optional dependency; no pyplot, no global backend

    edges = np.asarray(result.bin_edges)
    width = np.diff(edges)
    accuracy = np.nan_to_num(np.asarray(result.bin_accuracy), nan=0.0)
    confidence = np.asarray(result.bin_confidence)
    figure = Figure(figsize=(4.5, 4.5))
    axes = figure.add_subplot()
    axes.bar(edges[:-1], accuracy, width=width, align="edge", edgecolor="black", label="accuracy")
    filled = ~np.isnan(confidence)
    axes.plot(confidence[filled], np.asarray(result.bin_accuracy)[filled], "o", color="tab:red",
              label="mean confidence")
    axes.plot([0, 1], [0, 1], "--", color="gray", label="perfect calibration")
    axes.set(xlim=(0, 1), ylim=(0, 1), xlabel="confidence", ylabel="accuracy",
             title=title or f"ECE = {result.ece:.4f}")
    axes.legend(loc="upper left")
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    figure.savefig(path, dpi=120, bbox_inches="tight")
    return path


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
    ranking; NaN when either ranking is constant (tau-b is then 0/0).
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


# ---------------------------------------------------------------------------------------
# Theorem 1 of 000 (App. C.1-C.2)


@dataclass(frozen=True)
class Theorem1Constants:
    """The quantities of 000 Theorem 1, estimated from features of D_S and D_M.

    Attributes:
        alpha: ``[K]`` raw coupling ``mu_S^T Sigma_M^-1 C_M``.
        beta: ``[K]`` normalised coupling ``alpha / (mu_S^T Sigma_S^-1 mu_S)``.
        c: ``1^T alpha / (K mu_S^T Sigma_S^-1 mu_S)``, the slope of the lower bound.
        epsilon: ``B ||E||_op / sqrt(lambda_min(Sigma_S))``, the proof's epsilon.
        epsilon_tight: ``B ||E 1|| / (K sqrt(lambda_min(Sigma_S))) <= epsilon / sqrt(K)``.
        feature_bound: B, the bound on ``||f||``.
        whitened_mean_sq_norm: ``||mu~_S||^2 = mu_S^T Sigma_S^-1 mu_S``.
        lambda_min_sigma_S, lambda_min_sigma_M: smallest eigenvalues (after ``ridge``).
        E_operator_norm: ``||E||_op`` of the part of ``C~_M`` orthogonal to ``mu~_S``.
        coupling_holds: assumption (3), ``1^T alpha >= 0``.
        bound_holds: ``r_m >= c r_s - epsilon`` on every evaluated row.
        bound_holds_fraction: fraction of evaluated rows where it holds.
        min_slack: ``min(r_m - c r_s + epsilon)`` over the evaluated rows.
        heads: ``"given"`` (the trained w_S, w_M) or ``"population"`` (Eq. 11 minimisers).
    """

    alpha: tuple[float, ...]
    beta: tuple[float, ...]
    c: float
    epsilon: float
    epsilon_tight: float
    feature_bound: float
    whitened_mean_sq_norm: float
    lambda_min_sigma_S: float
    lambda_min_sigma_M: float
    E_operator_norm: float
    coupling_holds: bool
    bound_holds: bool
    bound_holds_fraction: float
    min_slack: float
    heads: str
    ridge: float


def _positive_definite_eigh(matrix: np.ndarray, name: str, count: int) -> tuple[np.ndarray, np.ndarray]:
    eigenvalues, eigenvectors = np.linalg.eigh(matrix)
    tolerance = 1e-10 * max(float(np.abs(eigenvalues).max()), 1e-300)
    if eigenvalues[0] <= tolerance:
        raise ValueError(
            f"{name} is not positive definite (smallest eigenvalue {eigenvalues[0]:.3g}): its {count} "
            f"rows span fewer than d={matrix.shape[0]} directions; pass ridge > 0 or more rows"
        )
    return eigenvalues, eigenvectors


def theorem1_constants(
    chosen_features_S: ArrayLike,
    rejected_features_S: ArrayLike,
    features_M: ArrayLike,
    ratings_M: ArrayLike,
    w_S: ArrayLike | None = None,
    w_M: ArrayLike | None = None,
    *,
    eval_features: ArrayLike | None = None,
    feature_bound: float | None = None,
    ridge: float = 0.0,
) -> Theorem1Constants:
    """Estimate alpha, beta, c and epsilon of 000 Theorem 1 and check the bound empirically.

    Definitions (000 App. C.1-C.2), expectations replaced by means over the given rows:
      * ``Sigma_S = E_S[(f_c - f_r)(f_c - f_r)^T]``, ``mu_S = E_S[f_c - f_r]``  (second moments,
        not centred covariances), ``Sigma_M = E_M[f_m f_m^T]``, ``C_M = E_M[f_m r^T]`` ``[d, K]``.
      * ``alpha = mu_S^T Sigma_M^-1 C_M``; ``beta = alpha / ||mu~_S||^2`` with
        ``mu~_S = Sigma_S^-1/2 mu_S``; ``c = 1^T alpha / (K ||mu~_S||^2)`` (Theorem 1; the proof's
        ``max(0, .)`` clipping is not applied, so the identity below holds for any sign).
      * ``C~_M = Sigma_S^1/2 Sigma_M^-1 C_M``, ``E = C~_M - mu~_S beta^T`` (Eq. 13), and for the
        population heads ``w_S = Sigma_S^-1 mu_S``, ``w_M = Sigma_M^-1 C_M`` (Eq. 11) exactly
        ``r_m(f) = c r_s(f) + (1/K) 1^T E^T Sigma_S^-1/2 f``.
      * ``epsilon = B ||E||_op / sqrt(lambda_min(Sigma_S))``: each attribute's residual is at
        most this, so ``r_m >= c r_s - epsilon`` (Eq. 6/10). The proof's Eq. 14 writes
        ``epsilon / K``, which does not follow in general; ``epsilon_tight`` is the valid bound
        on the K-average.

    The bound is checked with ``r_s = f^T w_S`` and ``r_m = mean_k (w_M^T f)_k`` on
    ``eval_features`` (default: every feature row given). With the trained heads this is an
    empirical check (the theorem is about the least-squares minimisers); without heads the
    population minimisers are used and it must hold.

    Args:
        chosen_features_S: ``[N_S, d]`` ``f(x_s, y_c)`` of the preference pairs.
        rejected_features_S: ``[N_S, d]`` ``f(x_s, y_r)``.
        features_M: ``[N_M, d]`` ``f(x_m, y_m)`` of the rated responses.
        ratings_M: ``[N_M, K]`` attribute ratings ``r``.
        w_S: ``[d]`` single-objective head, or None for ``Sigma_S^-1 mu_S``.
        w_M: ``[d, K]`` multi-attribute head, or None for ``Sigma_M^-1 C_M``.
        eval_features: ``[N, d]`` rows on which to check the bound.
        feature_bound: B; default the largest ``||f||`` over all rows given.
        ridge: added to the diagonal of Sigma_S and Sigma_M when N < d makes them singular.
    """
    chosen = as_float_array(chosen_features_S, "chosen_features_S", ndim=2)
    rejected = as_float_array(rejected_features_S, "rejected_features_S", ndim=2)
    rated = as_float_array(features_M, "features_M", ndim=2)
    ratings = as_float_array(ratings_M, "ratings_M", ndim=2)
    if chosen.shape != rejected.shape:
        raise ValueError(f"chosen_features_S {chosen.shape} and rejected_features_S {rejected.shape} differ")
    if rated.shape[0] != ratings.shape[0] or rated.shape[1] != chosen.shape[1]:
        raise ValueError(f"features_M {rated.shape} does not match ratings_M {ratings.shape} / d={chosen.shape[1]}")
    dim, num_attributes = chosen.shape[1], ratings.shape[1]
    feature_difference = chosen - rejected
    sigma_S = feature_difference.T @ feature_difference / feature_difference.shape[0] + ridge * np.eye(dim)
    mu_S = feature_difference.mean(axis=0)
    sigma_M = rated.T @ rated / rated.shape[0] + ridge * np.eye(dim)
    C_M = rated.T @ ratings / rated.shape[0]

    eigenvalues_S, eigenvectors_S = _positive_definite_eigh(sigma_S, "Sigma_S", chosen.shape[0])
    eigenvalues_M, _ = _positive_definite_eigh(sigma_M, "Sigma_M", rated.shape[0])
    sqrt_sigma_S = (eigenvectors_S * np.sqrt(eigenvalues_S)) @ eigenvectors_S.T
    inv_sqrt_sigma_S = (eigenvectors_S / np.sqrt(eigenvalues_S)) @ eigenvectors_S.T
    population_w_M = np.linalg.solve(sigma_M, C_M)  # [d, K], Eq. 11
    population_w_S = np.linalg.solve(sigma_S, mu_S)  # [d]
    alpha = mu_S @ population_w_M  # [K]
    whitened_mean = inv_sqrt_sigma_S @ mu_S
    whitened_mean_sq_norm = float(whitened_mean @ whitened_mean)
    beta = alpha / whitened_mean_sq_norm
    c = float(alpha.sum() / (num_attributes * whitened_mean_sq_norm))
    residual = sqrt_sigma_S @ population_w_M - np.outer(whitened_mean, beta)  # E, [d, K]
    E_operator_norm = float(np.linalg.norm(residual, ord=2))

    all_rows = [chosen, rejected, rated]
    evaluated = as_float_array(eval_features, "eval_features", ndim=2) if eval_features is not None else None
    if evaluated is not None:
        all_rows.append(evaluated)
    else:
        evaluated = np.concatenate(all_rows[:3], axis=0)
    bound = float(feature_bound) if feature_bound is not None else float(
        max(np.linalg.norm(rows, axis=1).max() for rows in all_rows)
    )
    sqrt_lambda_min = math.sqrt(float(eigenvalues_S[0]))
    epsilon = bound * E_operator_norm / sqrt_lambda_min
    epsilon_tight = bound * float(np.linalg.norm(residual.sum(axis=1))) / (num_attributes * sqrt_lambda_min)

    heads = "given" if w_S is not None and w_M is not None else "population"
    if (w_S is None) != (w_M is None):
        raise ValueError("pass both w_S and w_M, or neither (population minimisers)")
    head_S = as_float_array(w_S, "w_S", ndim=1) if w_S is not None else population_w_S
    head_M = as_float_array(w_M, "w_M", ndim=2) if w_M is not None else population_w_M
    if head_S.shape != (dim,) or head_M.shape != (dim, num_attributes):
        raise ValueError(f"w_S {head_S.shape} / w_M {head_M.shape} must be ({dim},) / ({dim}, {num_attributes})")
    single_reward = evaluated @ head_S
    attribute_mean_reward = (evaluated @ head_M).mean(axis=1)
    slack = attribute_mean_reward - (c * single_reward - epsilon)
    # a small tolerance so the exact population identity is not failed by rounding
    holds = slack >= -1e-9 * max(1.0, epsilon)
    return Theorem1Constants(
        alpha=tuple(float(a) for a in alpha),
        beta=tuple(float(b) for b in beta),
        c=c,
        epsilon=float(epsilon),
        epsilon_tight=float(epsilon_tight),
        feature_bound=bound,
        whitened_mean_sq_norm=whitened_mean_sq_norm,
        lambda_min_sigma_S=float(eigenvalues_S[0]),
        lambda_min_sigma_M=float(eigenvalues_M[0]),
        E_operator_norm=E_operator_norm,
        coupling_holds=bool(alpha.sum() >= 0),
        bound_holds=bool(holds.all()),
        bound_holds_fraction=float(holds.mean()),
        min_slack=float(slack.min()),
        heads=heads,
        ridge=float(ridge),
    )
