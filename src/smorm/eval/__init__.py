"""Evaluation: metrics over scores and hidden states, benchmarks over score tables, reports.

Importing this package registers the benchmarks (``reward-bench``, ``rm-bench``, ``pairs``,
``ranked``) in ``smorm.registry.BENCHMARKS``. Only numpy is imported here; scipy, matplotlib,
torch and transformers load inside the functions that need them. Modules: ``metrics``
(accuracy, ECE, outliers, norms, effective rank, tau-b), ``benchmarks`` (official scoring),
``theory`` (000 Theorem 1), ``diagnostics``, ``runner`` (scoring models; any HF
sequence-classification reward model), ``report`` and ``plots``.
"""

from smorm.eval.benchmarks import (
    Benchmark,
    attribute_difference_stats,
    reward_bench_overall,
    reward_bench_section_scores,
    rm_bench_matrix_scores,
    score_pairs,
    score_ranked,
    score_reward_bench,
    score_rm_bench,
)
from smorm.eval.metrics import (
    ECEResult,
    RewardDifferenceOutliers,
    best_of_accuracy,
    bootstrap_ci,
    effective_rank,
    expected_calibration_error,
    hidden_state_norms,
    kendall_tau_b,
    pairwise_accuracy,
    reward_difference_outliers,
)
from smorm.eval.plots import plot_reliability
from smorm.eval.theory import Theorem1Constants, theorem1_constants

__all__ = [
    "Benchmark",
    "ECEResult",
    "RewardDifferenceOutliers",
    "Theorem1Constants",
    "attribute_difference_stats",
    "best_of_accuracy",
    "bootstrap_ci",
    "effective_rank",
    "expected_calibration_error",
    "hidden_state_norms",
    "kendall_tau_b",
    "pairwise_accuracy",
    "plot_reliability",
    "reward_bench_overall",
    "reward_bench_section_scores",
    "reward_difference_outliers",
    "rm_bench_matrix_scores",
    "score_pairs",
    "score_ranked",
    "score_reward_bench",
    "score_rm_bench",
    "theorem1_constants",
]
