"""Best-of-N curves: the expected score of the response a proxy ranks first among n draws.

For each prompt a pool of N sampled responses is scored once by the proxy and once by the gold.
Best-of-n picks, among n responses drawn from the policy, the one the proxy scores highest; its
expected gold score is estimated from the pool WITHOUT drawing subsets: with the pool sorted by
proxy score (ascending, 1-based rank i), the probability that rank i is the maximum of a uniformly
random n-subset drawn without replacement is

    p_i = C(i - 1, n - 1) / C(N, n)            (zero for i < n)

and the expected gold score of the pick is ``sum_i p_i * gold_(i)``: the unbiased order-statistics
estimator of the BoN gold score (the estimator used by Gao et al. 2023, which the SMORM paper's
BoN experiments follow, 000 Sec. 3 and Sec. 5.3). Binomials are computed in log space
(``math.lgamma``) so N in the hundreds or thousands does not overflow.

Ties in the proxy score: a pick among tied maxima is taken uniformly at random, so every value
(gold, attributes, length) is replaced by its mean over the tied group before weighting. Averaged
over the subsets, this equals breaking ties uniformly at random (tested against enumeration).

The x-axis is the KL divergence of the best-of-n policy from the sampling policy,
``KL_BoN = log n - (n - 1) / n`` (000 Sec. 3, after Stiennon et al. 2020; KL 5 is n = 405).
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from typing import Any

import numpy as np


def kl_bon(n: int | np.ndarray) -> float | np.ndarray:
    """``KL_BoN = log n - (n - 1) / n`` in nats (000 Sec. 3); 0 at n = 1."""
    n_array = np.asarray(n, dtype=np.float64)
    if np.any(n_array < 1):
        raise ValueError(f"n must be >= 1, got {n}")
    value = np.log(n_array) - (n_array - 1.0) / n_array
    return float(value) if value.ndim == 0 else value


def n_for_kl(kl: float) -> int:
    """The smallest n with ``KL_BoN(n) >= kl`` (KL_BoN increases with n)."""
    if kl <= 0:
        return 1
    n = max(1, int(math.exp(kl + 1.0)) - 1)  # log n - 1 < KL_BoN < log n brackets the answer
    while kl_bon(n) < kl:
        n += 1
    while n > 1 and kl_bon(n - 1) >= kl:
        n -= 1
    return n


def bon_grid(max_n: int, points: int = 30) -> list[int]:
    """Values of n for a curve: every n up to ``points``, else n at evenly spaced KL_BoN values.

    Always contains 1 and ``max_n``, sorted, without repeats.
    """
    if max_n < 1:
        raise ValueError(f"max_n must be >= 1, got {max_n}")
    if max_n <= points:
        return list(range(1, max_n + 1))
    targets = np.linspace(0.0, float(kl_bon(max_n)), points)
    grid = {min(n_for_kl(float(kl)), max_n) for kl in targets} | {1, max_n}
    return sorted(grid)


def log_binomial(n: int, k: int) -> float:
    """``log C(n, k)`` via ``lgamma``; ``-inf`` when ``k < 0`` or ``k > n``."""
    if k < 0 or k > n:
        return float("-inf")
    return math.lgamma(n + 1) - math.lgamma(k + 1) - math.lgamma(n - k + 1)


def best_of_n_weights(pool_size: int, n: int) -> np.ndarray:
    """``[N]`` probability that the sample of ascending rank i is the best of a random n-subset.

    ``p_i = C(i - 1, n - 1) / C(N, n)`` for 1-based rank i; index 0 of the result is rank 1
    (the lowest proxy score). Sums to 1.
    """
    if not 1 <= n <= pool_size:
        raise ValueError(f"n must be in [1, {pool_size}] for a pool of {pool_size}, got {n}")
    log_total = log_binomial(pool_size, n)
    ranks = np.arange(1, pool_size + 1)
    log_weights = np.array([log_binomial(int(i) - 1, n - 1) for i in ranks]) - log_total
    return np.exp(log_weights)  # exp(-inf) = 0 for ranks below n


def tie_averaged(proxy_scores: np.ndarray, values: np.ndarray) -> np.ndarray:
    """Replace each row of ``values`` by its mean over the samples with an equal proxy score.

    Args:
        proxy_scores: ``[N]``.
        values: ``[N]`` or ``[N, m]``.
    Returns:
        Same shape as ``values``.
    """
    _, group, counts = np.unique(proxy_scores, return_inverse=True, return_counts=True)
    if counts.max(initial=1) == 1:
        return values
    flat = values.reshape(len(values), -1).astype(np.float64)
    sums = np.zeros((len(counts), flat.shape[1]))
    np.add.at(sums, group, flat)
    return (sums / counts[:, None])[group].reshape(values.shape)


def expected_best_of_n(proxy_scores: np.ndarray, values: np.ndarray, n: int) -> np.ndarray:
    """Expected ``values`` of the proxy's pick among n draws without replacement from one pool.

    Args:
        proxy_scores: ``[N]`` proxy rewards of the pool.
        values: ``[N]`` or ``[N, m]`` what to average (gold score, proxy score, attributes, length).
        n: draws per pick, ``1 <= n <= N``.
    Returns:
        ``[]`` or ``[m]``: ``sum_i p_i * values_(i)`` over ascending proxy ranks.
    """
    proxy_scores = np.asarray(proxy_scores, dtype=np.float64)
    values = np.asarray(values, dtype=np.float64)
    if proxy_scores.ndim != 1 or len(values) != len(proxy_scores):
        raise ValueError(f"proxy_scores [N] and values [N, ...] must match, got {proxy_scores.shape}, {values.shape}")
    order = np.argsort(proxy_scores, kind="stable")
    averaged = tie_averaged(proxy_scores, values)[order]
    weights = best_of_n_weights(len(proxy_scores), n)
    return np.tensordot(weights, averaged, axes=(0, 0))


@dataclass
class BoNCurve:
    """Best-of-n curve of one proxy, averaged over prompts.

    Attributes:
        proxy: the proxy's label (``run:mode``).
        n: ``[G]`` grid of n.
        kl: ``[G]`` KL_BoN of each n.
        proxy_score: ``[G]`` mean expected proxy score of the pick, minus its value at n = 1.
        gold_score: ``[G]`` same for the gold score.
        proxy_sem, gold_sem: ``[G]`` standard error over prompts of the normalised scores.
        extra: name -> ``[G]`` unnormalised expected value of other per-sample quantities
            (attributes, response length).
        num_prompts: prompts averaged over.
        gold_by_prompt: ``[P][G]`` the normalised gold score of each prompt, from which proxies on the
            same pool are compared prompt by prompt (:func:`paired_gold_difference`).
    """

    proxy: str
    n: list[int]
    kl: list[float]
    proxy_score: list[float]
    gold_score: list[float]
    proxy_sem: list[float]
    gold_sem: list[float]
    extra: dict[str, list[float]] = field(default_factory=dict)
    num_prompts: int = 0
    gold_by_prompt: list[list[float]] = field(default_factory=list)


def bon_curve(
    label: str,
    proxy_scores: np.ndarray,
    gold_scores: np.ndarray,
    grid: list[int],
    extra: dict[str, np.ndarray] | None = None,
) -> BoNCurve:
    """Expected proxy and gold score of the proxy's best-of-n pick for every n in ``grid``.

    Args:
        label: the proxy's name in tables and plots.
        proxy_scores: ``[P, N]`` proxy score of each of N responses to each of P prompts.
        gold_scores: ``[P, N]`` gold score of the same responses.
        grid: values of n (each at most N).
        extra: name -> ``[P, N]`` other per-response values to follow (attributes, length).
    Returns:
        A :class:`BoNCurve`; proxy and gold are normalised to 0 at n = 1 (000 Figs. 2–5), i.e. the
        pool mean is subtracted per prompt before averaging, so the curves start at exactly 0.
    """
    proxy_scores = np.asarray(proxy_scores, dtype=np.float64)
    gold_scores = np.asarray(gold_scores, dtype=np.float64)
    if proxy_scores.ndim != 2 or proxy_scores.shape != gold_scores.shape:
        raise ValueError(f"proxy and gold scores must both be [P, N], got {proxy_scores.shape}, {gold_scores.shape}")
    extra = extra or {}
    num_prompts, pool_size = proxy_scores.shape
    if max(grid) > pool_size:
        raise ValueError(f"n = {max(grid)} exceeds the pool size {pool_size}")
    names = list(extra)
    followed = np.stack([proxy_scores, gold_scores, *(np.asarray(extra[k], np.float64) for k in names)], axis=-1)
    # [P, G, 2 + m]: expected values of the pick for each prompt and n.
    expected = np.stack(
        [np.stack([expected_best_of_n(proxy_scores[p], followed[p], n) for n in grid]) for p in range(num_prompts)]
    )
    baseline = followed[:, :, :2].mean(axis=1)  # n = 1 picks a uniform sample: the pool mean
    normalised = expected[:, :, :2] - baseline[:, None, :]
    sem = normalised.std(axis=0, ddof=1) / math.sqrt(num_prompts) if num_prompts > 1 else np.zeros_like(
        normalised[0])
    means = expected.mean(axis=0)
    return BoNCurve(
        proxy=label,
        n=list(grid),
        kl=[float(kl_bon(n)) for n in grid],
        proxy_score=normalised[:, :, 0].mean(axis=0).tolist(),
        gold_score=normalised[:, :, 1].mean(axis=0).tolist(),
        proxy_sem=sem[:, 0].tolist(),
        gold_sem=sem[:, 1].tolist(),
        extra={name: means[:, 2 + j].tolist() for j, name in enumerate(names)},
        num_prompts=num_prompts,
        gold_by_prompt=normalised[:, :, 1].tolist(),
    )


def _mean_sem(values: np.ndarray) -> tuple[float, float]:
    sem = float(values.std(ddof=1) / math.sqrt(len(values))) if len(values) > 1 else 0.0
    return float(values.mean()), sem


def paired_gold_difference(curve: BoNCurve, reference: BoNCurve) -> tuple[list[float], list[float]]:
    """``[G]`` mean and s.e.m. over prompts of ``curve``'s gold score minus ``reference``'s, per prompt.

    Both proxies pick from the same pool, so most of the prompt-to-prompt spread (some prompts' pools
    simply hold better responses) is common to both; the paired s.e.m. is what says whether the two
    curves differ, not the overlap of the per-curve bands.
    """
    if curve.n != reference.n or len(curve.gold_by_prompt) != len(reference.gold_by_prompt):
        raise ValueError(f"{curve.proxy} and {reference.proxy} were not computed on the same pool and grid")
    diff = np.asarray(curve.gold_by_prompt) - np.asarray(reference.gold_by_prompt)  # [P, G]
    pairs = [_mean_sem(diff[:, g]) for g in range(diff.shape[1])]
    return [m for m, _ in pairs], [e for _, e in pairs]


def crossfit_drop(curve: BoNCurve) -> dict[str, Any]:
    """The fall from the peak with the peak chosen on the *other* half of the prompts.

    :func:`drop_from_peak` picks the peak as the argmax of the very means it then compares, so its fall
    is biased upwards: a flat curve with noise shows a positive fall. Here the prompts are split into
    even and odd positions (the prompt sets are seeded samples, so the halves are random); each half's
    fall is measured at the peak of the other half's mean curve, and the per-prompt falls of both halves
    give the mean and s.e.m. (cross-fitting; a held-out choice of the peak, not a value from 000).
    """
    by_prompt = np.asarray(curve.gold_by_prompt)  # [P, G]
    if by_prompt.shape[0] < 2:
        raise ValueError(f"{curve.proxy}: a cross-fitted fall needs at least 2 prompts")
    halves = (np.arange(0, len(by_prompt), 2), np.arange(1, len(by_prompt), 2))
    falls = np.empty(len(by_prompt))
    peaks = []
    for own, other in (halves, halves[::-1]):
        peak = int(np.argmax(by_prompt[other].mean(axis=0)))
        peaks.append(curve.n[peak])
        falls[own] = by_prompt[own, peak] - by_prompt[own, -1]
    drop, sem = _mean_sem(falls)
    return {"crossfit_drop": drop, "crossfit_drop_sem": sem, "crossfit_peak_n": peaks}


def drop_from_peak(curve: BoNCurve) -> dict[str, float]:
    """How far the gold score falls from its peak (over the grid) to the largest n, paired per prompt.

    ``drop`` > 0 by several ``sem`` is reward over-optimisation (000 Sec. 3: gold rises, then falls).
    """
    by_prompt = np.asarray(curve.gold_by_prompt)  # [P, G]
    peak = int(np.argmax(by_prompt.mean(axis=0)))
    drop, sem = _mean_sem(by_prompt[:, peak] - by_prompt[:, -1])
    return {"peak_n": curve.n[peak], "peak_kl": curve.kl[peak], "peak_gold": float(by_prompt[:, peak].mean()),
            "last_n": curve.n[-1], "drop": drop, "drop_sem": sem}
