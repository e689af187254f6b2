"""Evaluation: metrics over scores and hidden states, and benchmarks over score tables.

Importing this package registers the benchmarks (``reward-bench``, ``rm-bench``, ``pairs``,
``ranked``) in ``smorm.registry.BENCHMARKS``. Only numpy is imported here; scipy and
matplotlib load inside the functions that need them.
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
    Theorem1Constants,
    best_of_accuracy,
    bootstrap_ci,
    effective_rank,
    expected_calibration_error,
    hidden_state_norms,
    kendall_tau_b,
    pairwise_accuracy,
    plot_reliability,
    reward_difference_outliers,
    theorem1_constants,
)

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
