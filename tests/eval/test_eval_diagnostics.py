"""Diagnostics and plots on hand-made score tables with known answers."""

from __future__ import annotations

import numpy as np
import pytest

from smorm.eval import diagnostics
from smorm.eval.metrics import expected_calibration_error

PNG = b"\x89PNG\r\n\x1a\n"


def test_rm_bench_comparisons_are_the_nine_style_pairs():
    rows = [{"domain": "chat", "chosen": [1.0, 2.0, 3.0], "rejected": [10.0, 20.0, 30.0]}]
    chosen, rejected = diagnostics.comparisons("rm-bench", rows)
    assert list(zip(chosen, rejected, strict=True)) == [
        (1, 10), (1, 20), (1, 30), (2, 10), (2, 20), (2, 30), (3, 10), (3, 20), (3, 30)]
    responses = diagnostics.response_rewards("rm-bench", rows)
    assert responses[0].tolist() == [1, 2, 3] and responses[1].tolist() == [10, 20, 30]
    assert diagnostics.comparisons("ranked", [{"scores": [1, 2]}]) is None


def test_pairwise_diagnostics_by_hand():
    rows = [{"chosen": c, "rejected": r} for c, r in [(2.0, 0.0), (0.0, 1.0), (0.5, 0.0), (1.0, 0.0), (9.0, 0.0)]]
    out = diagnostics.pairwise_diagnostics("pairs", rows)
    assert out["num_comparisons"] == 5
    assert out["ece"] == expected_calibration_error([2, 0, 0.5, 1, 9], [0, 1, 0, 0, 0]).to_dict()
    # positive margins 0.5, 1, 2, 9: Q1 = 0.875, Q3 = 3.75, IQR 2.875 -> upper fence 8.0625: 9 is out
    assert out["reward_difference_outliers"]["positive_count"] == 1
    assert out["reward_difference_outliers"]["positive_mean"] == 9.0
    assert out["reward_difference_outliers"]["negative_count"] == 0
    histogram = out["reward_histogram"]
    assert histogram["edges"][0] == 0.0 and histogram["edges"][-1] == 9.0 and len(histogram["edges"]) == 31
    assert sum(histogram["chosen"]) == 5 and histogram["rejected"][0] == 4 and sum(histogram["rejected"]) == 5
    assert diagnostics.pairwise_diagnostics("ranked", [{"scores": [1.0, 2.0], "best": 1}]) == {}


def test_attribute_means_and_gate_weights_by_hand():
    attributes = np.array([[1.0, 0.0], [3.0, 2.0], [0.0, 1.0], [2.0, 5.0]])
    means = diagnostics.attribute_means(attributes, [0, 1], [2, 3], ["a", "b"])
    assert means == {"chosen": {"a": 2.0, "b": 1.0}, "rejected": {"a": 1.0, "b": 3.0},
                     "difference": {"a": 1.0, "b": -2.0}}
    weights = np.array([[0.2, 0.8], [0.6, 0.4], [0.9, 0.1]])
    assert diagnostics.gate_weight_means(weights, [0, 1], ["a", "b"]) == pytest.approx({"a": 0.4, "b": 0.6})
    assert list(diagnostics.gate_weight_means(weights, [2], [])) == ["attribute_0", "attribute_1"]


def test_rm_bench_attribute_stats_use_the_decisive_reward():
    # one item, K = 1 attribute; sequences 0-2 chosen styles, 3-5 rejected styles
    rows = [{"chosen": [0, 1, 2], "rejected": [3, 4, 5]}]
    attributes = np.array([[2.0], [2.0], [2.0], [0.0], [0.0], [6.0]])
    decisive = np.array([1.0, 1.0, 1.0, 0.0, 0.0, 2.0])  # only chosen-vs-rejected[2] comparisons are wrong
    stats = diagnostics.rm_bench_attribute_stats(rows, attributes, decisive, ["x"])
    assert stats["normal"]["correct"]["count"] == 2 and stats["normal"]["false"]["count"] == 1
    assert stats["hard"]["false"]["count"] == 2  # (0, 2) and (1, 2)
    # z-scoring over the six responses: mean 2, population std 2 -> chosen 0, 0, 0 and rejected
    # -1, -1, 2, so the same-style differences are 1, 1, -2: mean 0, variance 2
    assert stats["normal"]["overall"]["attributes"]["x"]["mean"] == pytest.approx(0.0)
    assert stats["normal"]["overall"]["attributes"]["x"]["variance"] == pytest.approx(2.0)


def test_plots_write_pngs(tmp_path):
    from smorm.eval.plots import plot_attribute_bars, plot_reliability_panels, plot_reward_histograms

    ece = expected_calibration_error([2.0, 1.0, -1.0], [0.0, 0.0, 0.0]).to_dict()
    histogram = diagnostics.reward_histogram(np.array([1.0, 2.0]), np.array([0.0, 1.5]))
    paths = [
        plot_reliability_panels({"F": ece, "L": ece}, tmp_path / "r.png", "reliability"),
        plot_reward_histograms({"F": histogram}, tmp_path / "h.png", "rewards"),
        plot_attribute_bars({"chosen": {"a": 1.0, "b": -0.5}, "rejected": {"a": 0.5, "b": 0.2}},
                            tmp_path / "sub" / "a.png", "attributes"),
    ]
    for path in paths:
        assert path.read_bytes()[:8] == PNG
    assert sorted(p.name for p in tmp_path.rglob("*")) == ["a.png", "h.png", "r.png", "sub"]
