"""Verbosity debiasing of the attribute rewards (004 Sec. 3.2, Eq. 2-3).

Most attributes correlate with verbosity, and a gate with non-negative weights would pass that bias
on. ArmoRM therefore replaces each attribute reward by ``r_i' = r_i - λ_i r_verbosity`` (Eq. 2), with
λ_i chosen so that ``Spearman_D(r_i', r_verbosity) = 0`` on a reference distribution D (Eq. 3; 004
Sec. 4 uses Spearman and UltraFeedback as D). For the verbosity attribute itself Eq. 3 gives λ = 1:
its debiased reward is 0, so the gate cannot buy length back through it.

λ_i is solved, not searched on a coarse grid: as λ grows, two responses swap order only when the
more verbose one falls below the other, so Spearman(r_i - λ r_v, r_v) is a non-increasing step
function of λ, and bisection on a bracket with a sign change finds its zero crossing. The step can
jump over 0; the residual correlation (of order 1/n) is reported per attribute.

All heads are linear in the attributes, so the correction is the ``[K, K]`` matrix ``T`` with
``r' = r @ T`` (:func:`debias_matrix`), stored in the gate, or folded into a linear multi head
(:func:`debias_linear_weights`).
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field

import numpy as np
import torch


def spearman(a: np.ndarray, b: np.ndarray) -> float:
    """Spearman rank correlation (average ranks for ties); NaN when either side is constant."""
    from scipy.stats import rankdata

    ra, rb = rankdata(a), rankdata(b)
    ra, rb = ra - ra.mean(), rb - rb.mean()
    denominator = math.sqrt(float(ra @ ra) * float(rb @ rb))
    return float(ra @ rb) / denominator if denominator > 0 else float("nan")


def solve_penalty(rewards: np.ndarray, verbosity: np.ndarray, max_iter: int = 200) -> float:
    """λ with ``Spearman(rewards - λ verbosity, verbosity) ≈ 0`` (Eq. 3), by bracketing and bisection.

    Args:
        rewards: ``[n]`` one attribute's rewards on the reference set.
        verbosity: ``[n]`` the verbosity rewards of the same responses.
    """
    def corr(lam: float) -> float:
        return spearman(rewards - lam * verbosity, verbosity)

    start = corr(0.0)
    if math.isnan(start) or start == 0.0:
        return 0.0  # constant rewards are uncorrelated already; nothing to remove
    direction = 1.0 if start > 0 else -1.0  # a negative correlation needs a negative λ
    inner, outer = 0.0, direction
    while direction * corr(outer) > 0:
        inner, outer = outer, outer * 2.0
        if abs(outer) > 1e12:
            raise ValueError("no λ brings the Spearman correlation to 0 (are the verbosity rewards constant?)")
    for _ in range(max_iter):
        middle = 0.5 * (inner + outer)
        if middle in (inner, outer):
            break
        if direction * corr(middle) > 0:
            inner = middle
        else:
            outer = middle
    return inner if abs(corr(inner)) <= abs(corr(outer)) else outer


@dataclass
class VerbosityDebias:
    """λ per attribute and the Spearman correlation with verbosity before and after (Eq. 3).

    Attributes:
        attributes: names, in head order.
        verbosity: name of the verbosity attribute.
        lambdas: λ_i (1 for verbosity itself).
        corr_before / corr_after: Spearman(r_i, r_v) and Spearman(r_i', r_v) on the reference set.
        reference_size: responses in the reference set.
    """

    attributes: list[str]
    verbosity: str
    lambdas: list[float]
    corr_before: list[float]
    corr_after: list[float]
    reference_size: int
    notes: list[str] = field(default_factory=list)

    @property
    def verbosity_index(self) -> int:
        return self.attributes.index(self.verbosity)

    def rows(self) -> list[dict[str, float | str]]:
        return [{"attribute": a, "lambda": lam, "spearman_before": b, "spearman_after": c}
                for a, lam, b, c in zip(self.attributes, self.lambdas, self.corr_before, self.corr_after)]


def verbosity_penalties(rewards: torch.Tensor, attributes: list[str], verbosity: str = "verbosity") -> VerbosityDebias:
    """Solve Eq. 3 for every attribute on reference rewards ``[n, K]`` (the multi head's raw output)."""
    if verbosity not in attributes:
        raise ValueError(f"verbosity attribute {verbosity!r} is not one of the model's attributes {attributes}; "
                         "name it with --verbosity or skip debiasing with --no-debias")
    if rewards.ndim != 2 or rewards.shape[1] != len(attributes):
        raise ValueError(f"reference rewards have shape {tuple(rewards.shape)}, expected [n, {len(attributes)}]")
    if rewards.shape[0] < 3:
        raise ValueError(f"the reference set has {rewards.shape[0]} responses; Spearman needs at least 3")
    values = rewards.double().cpu().numpy()
    v = attributes.index(verbosity)
    verbose = values[:, v]
    if np.ptp(verbose) == 0:
        raise ValueError("the verbosity rewards are constant on the reference set; cannot debias")
    lambdas, before, after, notes = [], [], [], []
    for k, name in enumerate(attributes):
        lam = 1.0 if k == v else solve_penalty(values[:, k], verbose)
        lambdas.append(lam)
        before.append(spearman(values[:, k], verbose))
        after.append(0.0 if k == v else spearman(values[:, k] - lam * verbose, verbose))
        if k != v and math.isnan(before[-1]):
            notes.append(f"{name}: constant on the reference set, λ = 0")
    return VerbosityDebias(list(attributes), verbosity, lambdas, before, after, int(values.shape[0]), notes)


def debias_matrix(lambdas: list[float], verbosity_index: int) -> torch.Tensor:
    """``[K, K]`` T with ``r @ T = r - λ r_v`` column by column: ``T = I - e_v λ^T``."""
    transform = torch.eye(len(lambdas), dtype=torch.float32)
    transform[verbosity_index] -= torch.tensor(lambdas, dtype=torch.float32)
    return transform


def debias_linear_weights(weights: torch.Tensor, lambdas: list[float], verbosity_index: int) -> torch.Tensor:
    """``[K, d] -> [K, d]``: ``w_i' = w_i - λ_i w_v``, the same correction folded into a linear head."""
    lam = torch.tensor(lambdas, dtype=weights.dtype, device=weights.device)
    return weights - lam[:, None] * weights[verbosity_index][None, :]
