"""Theorem 1 of 000 (App. C.1-C.2): its constants from features, and the run-level check.

``theorem1_constants`` estimates alpha, beta, c and epsilon from feature matrices (pure numpy).
``run_theorem1`` computes those features with a trained model on a seeded sample of the run's
own D_S and D_M (read from the run's ``config.json``), so a user can see whether the coupling
the theory needs, ``1^T alpha >= 0``, holds for their model and data.
"""

from __future__ import annotations

import math
import random
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

import numpy as np
from numpy.typing import ArrayLike

from smorm.eval.metrics import as_float_array
from smorm.eval.scoring import score_sequences
from smorm.run_config import find_run_config, read_run_config


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


# ---------------------------------------------------------------------------------------
# the check on a trained run: features of a seeded sample of its own D_S and D_M

DEFAULT_THEORY_SAMPLE = 200
DEFAULT_RELATIVE_RIDGE = 1e-3
RIDGE_GRID = (1e-4, 1e-3, 1e-2, 1e-1, 1.0)  # relative ridges of the sensitivity line
FEATURE_NOTE = "f = pooled last-real-token hidden state, the input of the reward heads"


@dataclass
class TheoryData:
    """A seeded sample of a run's D_S and D_M, validated, with what was left out.

    Attributes:
        pairs: sampled preference pairs (D_S).
        ratings: sampled rated responses (D_M) that carry every attribute.
        attributes: K attribute names, in the order of the rating matrix.
        num_pairs_available, num_rated_available: sizes before sampling.
        num_rated_incomplete: rated responses dropped because an attribute was missing
            (Theorem 1's ``C_M = E[f r^T]`` needs the whole rating vector ``r``).
    """

    pairs: list[Any]
    ratings: list[Any]
    attributes: list[str]
    config_path: str
    seed: int
    requested: int
    num_pairs_available: int
    num_rated_available: int
    num_rated_incomplete: int


def seeded_sample(records: list[Any], size: int, seed: int) -> list[Any]:
    """A seeded random ``size`` of ``records`` (all of them when fewer), in their original order."""
    if size >= len(records):
        return list(records)
    keep = sorted(random.Random(seed).sample(range(len(records)), size))
    return [records[i] for i in keep]


def load_theory_data(run: str | Path, sample: int = DEFAULT_THEORY_SAMPLE, seed: int = 0) -> TheoryData:
    """Read and validate the run's D_S and D_M and take a seeded sample of each (no model needed)."""
    if sample < 2:
        raise ValueError(f"the Theorem 1 sample needs at least 2 records of each set, got {sample}")
    config = read_run_config(run, needed_for="the Theorem 1 check reads the run's training config to find D_S and D_M")
    path = find_run_config(run)
    if not config.data.pairs or not config.data.ratings:
        missing = "D_S (data.pairs)" if not config.data.pairs else "D_M (data.ratings)"
        raise ValueError(f"{path}: the run has no {missing}; Theorem 1 couples a pairwise set and a rated set")
    loaded = config.data.load()
    complete = [r for r in loaded.ratings if all(name in r.ratings for name in loaded.attributes)]
    if len(loaded.pairs) < 2 or len(complete) < 2:
        raise ValueError(f"{path}: Theorem 1 needs at least 2 pairs and 2 rated responses with every attribute "
                         f"({', '.join(loaded.attributes)}); found {len(loaded.pairs)} and {len(complete)}")
    return TheoryData(
        pairs=seeded_sample(loaded.pairs, sample, seed), ratings=seeded_sample(complete, sample, seed + 1),
        attributes=list(loaded.attributes), config_path=str(path), seed=seed, requested=sample,
        num_pairs_available=len(loaded.pairs), num_rated_available=len(loaded.ratings),
        num_rated_incomplete=len(loaded.ratings) - len(complete),
    )


def rating_matrix(ratings: list[Any], attributes: list[str]) -> np.ndarray:
    """``[N_M, K]`` rating vectors ``r`` (as the run's ``data.rating_scale`` left them), in ``attributes`` order."""
    return np.array([[float(record.ratings[name]) for name in attributes] for record in ratings], dtype=np.float64)


def theory_features(model: Any, data: TheoryData, batch_size: int = 16, bf16: bool = False,
                    show_progress: bool = False) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Pooled features ``f`` of chosen ``[N_S, d]``, rejected ``[N_S, d]`` and rated ``[N_M, d]`` responses."""
    from smorm.data.formatting import Formatter

    formatter = Formatter(model.tokenizer, model.config.max_length)
    sequences = [formatter.encode(p.prompt, p.chosen).input_ids for p in data.pairs]
    sequences += [formatter.encode(p.prompt, p.rejected).input_ids for p in data.pairs]
    sequences += [formatter.encode(r.prompt, r.response).input_ids for r in data.ratings]
    pooled = score_sequences(model, sequences, batch_size, bf16, show_progress, "Theorem 1 features").pooled
    features = pooled.double().numpy()
    num_pairs = len(data.pairs)
    return features[:num_pairs], features[num_pairs : 2 * num_pairs], features[2 * num_pairs :]


def linear_head_weights(model: Any, attributes: list[str]) -> tuple[np.ndarray, np.ndarray] | None:
    """The trained ``w_S [d]`` and ``w_M [d, K]`` (columns in ``attributes`` order) when both heads are
    the paper's bias-free linear maps (000 Eq. 5); None otherwise (an MLP head has no ``w``)."""
    from torch import nn

    from smorm.models.heads import LinearHead

    heads = getattr(model, "heads", None)
    if not isinstance(heads, nn.ModuleDict) or "single" not in heads or "multi" not in heads:
        return None
    if not isinstance(heads["single"], LinearHead) or not isinstance(heads["multi"], LinearHead):
        return None
    names = list(model.config.attributes)
    if any(name not in names for name in attributes):
        return None
    w_S = heads["single"].weight.detach().double().cpu().numpy()[0]
    w_M = heads["multi"].weight.detach().double().cpu().numpy().T  # [d, K_model]
    return w_S, w_M[:, [names.index(name) for name in attributes]]


def relative_ridge_value(chosen: np.ndarray, rejected: np.ndarray, relative: float) -> float:
    """``relative * trace(Sigma_S) / d``: a ridge on the scale of Sigma_S's mean eigenvalue."""
    difference = chosen - rejected
    return float(relative * np.mean(np.sum(difference**2, axis=1)) / difference.shape[1])


def ridge_sensitivity(chosen: np.ndarray, rejected: np.ndarray, rated: np.ndarray, ratings: np.ndarray,
                      grid: tuple[float, ...] = RIDGE_GRID) -> list[dict[str, float | bool]]:
    """``1^T alpha`` and ``c`` over a grid of relative ridges: whether the coupling verdict depends on
    the ridge (it can, when fewer rows than dimensions leave the second moments singular)."""
    rows: list[dict[str, float | bool]] = []
    for relative in grid:
        constants = theorem1_constants(chosen, rejected, rated, ratings,
                                       ridge=relative_ridge_value(chosen, rejected, relative))
        rows.append({"relative_ridge": relative, "coupling": float(sum(constants.alpha)), "c": constants.c,
                     "coupling_holds": constants.coupling_holds})
    return rows


def constants_dict(constants: Theorem1Constants, attributes: list[str]) -> dict[str, Any]:
    """JSON-ready constants with ``alpha`` and ``beta`` keyed by attribute name."""
    out = asdict(constants)
    out["alpha"] = dict(zip(attributes, constants.alpha, strict=True))
    out["beta"] = dict(zip(attributes, constants.beta, strict=True))
    return out


def run_theorem1(model: Any, data: TheoryData, batch_size: int = 16, bf16: bool = False,
                 relative_ridge: float = DEFAULT_RELATIVE_RIDGE, show_progress: bool = False) -> dict[str, Any]:
    """Theorem 1's constants from the model's features of a sample of its D_S and D_M.

    ``population`` uses the theorem's own heads (the least-squares minimisers, 000 Eq. 11), for
    which ``r_m >= c r_s - epsilon`` must hold; ``trained_heads`` checks the same bound with the
    model's trained linear heads, an empirical check only. A ridge ``relative_ridge * trace(Sigma_S)
    / d`` is added to both second-moment matrices, since a sample smaller than the hidden size
    leaves them singular; alpha and c depend on it and epsilon grows as it shrinks.
    """
    chosen, rejected, rated = theory_features(model, data, batch_size, bf16, show_progress)
    ratings = rating_matrix(data.ratings, data.attributes)
    ridge = relative_ridge_value(chosen, rejected, relative_ridge) if relative_ridge > 0 else 0.0
    population = theorem1_constants(chosen, rejected, rated, ratings, ridge=ridge)
    result: dict[str, Any] = {
        "config": data.config_path, "feature": FEATURE_NOTE, "attributes": list(data.attributes),
        "hidden_size": int(chosen.shape[1]), "ridge": ridge, "relative_ridge": relative_ridge,
        "sample": {"requested": data.requested, "seed": data.seed, "pairs": len(data.pairs),
                   "rated": len(data.ratings), "pairs_available": data.num_pairs_available,
                   "rated_available": data.num_rated_available,
                   "rated_incomplete_dropped": data.num_rated_incomplete},
        "coupling_holds": population.coupling_holds,
        "population": constants_dict(population, data.attributes),
        "trained_heads": None, "notes": [],
    }
    result["ridge_sensitivity"] = ridge_sensitivity(chosen, rejected, rated, ratings)
    weights = linear_head_weights(model, data.attributes)
    if weights is not None:
        trained = theorem1_constants(chosen, rejected, rated, ratings, *weights, ridge=ridge)
        result["trained_heads"] = constants_dict(trained, data.attributes)
    else:
        result["notes"].append("no trained-head check: it needs linear 'single' and 'multi' heads over these attributes")
    smallest = min(len(data.pairs), len(data.ratings))
    if smallest < chosen.shape[1]:
        result["notes"].append(
            f"{smallest} sampled rows < d = {chosen.shape[1]}: the second moments are singular without the ridge "
            f"({ridge:.3g}); alpha and c depend on it, and epsilon ~ 1/sqrt(lambda_min(Sigma_S)) is loose"
        )
    return result
