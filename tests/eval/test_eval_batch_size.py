"""Results do not depend on the batch size (1 vs 16) on the tiny Llama.

Not bit-identical: with right padding the real tokens' states are mathematically unchanged, but the
padded matmuls sum in a different order, so rewards and hidden states differ by float rounding
(about 1e-6 here). The test allows 1e-5 on every continuous number and requires every accuracy to
be exactly equal, after checking that no comparison is closer than the tolerance (where rounding
could flip it).
"""

from __future__ import annotations

import numpy as np
import pytest

from smorm.eval.runner import BenchSpec, evaluate_model, load_benchmarks, score_sequences

TOLERANCE = 1e-5


def flatten(value, prefix=""):
    """Every number in a nested report as ``{path: value}``."""
    if isinstance(value, dict):
        return {k: v for key, item in value.items() for k, v in flatten(item, f"{prefix}/{key}").items()}
    if isinstance(value, list | tuple):
        return {k: v for i, item in enumerate(value) for k, v in flatten(item, f"{prefix}/{i}").items()}
    if isinstance(value, bool) or not isinstance(value, int | float):
        return {}
    return {prefix: float(value)}


# numbers that depend only on which of two rewards is larger (or on counts of such)
ORDER_ONLY = {
    "accuracy", "score", "hard", "normal", "easy", "ci", "hard_ci", "normal_ci", "easy_ci", "score_ci",
    "macro_accuracy", "macro_accuracy_ci", "kendall_tau_b", "kendall_tau_b_ci", "best_of_accuracy",
    "best_of_accuracy_ci", "accuracy_matrix", "accuracy_matrix_ci", "positive_count", "negative_count",
    "num_positive", "num_negative", "bin_counts", "bin_accuracy",
}


def is_decided_by_order(key: str) -> bool:
    parts = key.split("/")
    if "attribute_difference_stats" in parts:  # means and variances of attributes are continuous
        return parts[-1] == "count"
    return bool(ORDER_ONLY & set(parts))


def test_batch_size_1_and_16_give_the_same_results(tiny_reward_model, bench_files):
    from smorm.data.formatting import Formatter

    specs = [BenchSpec(kind, str(path)) for kind, path in bench_files.items()]
    loaded = load_benchmarks(specs)
    formatter = Formatter(tiny_reward_model.tokenizer, 96)
    sequences = [formatter.encode(p, r).input_ids for p, r in loaded.table.items]
    assert len({len(s) for s in sequences}) > 10  # lengths vary, so padding differs between the runs
    one = score_sequences(tiny_reward_model, sequences, 1, False, False)
    sixteen = score_sequences(tiny_reward_model, sequences, 16, False, False)
    for name in ("single", "attributes", "pooled"):
        difference = (getattr(one, name) - getattr(sixteen, name)).abs().max().item()
        assert difference <= TOLERANCE, name

    first = evaluate_model(tiny_reward_model, specs, batch_size=1, show_progress=False)
    second = evaluate_model(tiny_reward_model, specs, batch_size=16, show_progress=False)
    # no two sequences' rewards (in any mode) are closer than twice the rounding difference between
    # the runs, so no comparison can flip and the accuracies below must be exactly equal
    for mode in (lambda o: o.single, lambda o: o.attributes.mean(dim=-1),
                 lambda o: 0.5 * (o.single + o.attributes.mean(dim=-1))):
        rounding = (mode(one) - mode(sixteen)).abs().max().item()
        assert np.diff(np.sort(mode(one).double().numpy())).min() > 2 * rounding
    flat_one, flat_sixteen = flatten(first["benchmarks"]), flatten(second["benchmarks"])
    assert flat_one.keys() == flat_sixteen.keys()
    assert sum(map(is_decided_by_order, flat_one)) > 100 and sum(not is_decided_by_order(k) for k in flat_one) > 100
    for key, value in flat_one.items():
        if is_decided_by_order(key):
            assert flat_sixteen[key] == value, key  # accuracies, their CIs, counts: exactly equal
        else:
            assert flat_sixteen[key] == pytest.approx(value, abs=TOLERANCE, rel=TOLERANCE), key
    assert np.isclose(first["benchmarks"]["pairs:pairs.jsonl"]["effective_rank"],
                      second["benchmarks"]["pairs:pairs.jsonl"]["effective_rank"], atol=TOLERANCE)
