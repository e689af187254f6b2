"""Theorem 1 on a run: sampling, rating matrix, ridge, head weights, and the constants recomputed from
features taken one sequence at a time."""

from __future__ import annotations

import math
from types import SimpleNamespace

import numpy as np
import pytest
import torch

from smorm.eval.theory import (
    TheoryData,
    linear_head_weights,
    rating_matrix,
    relative_ridge_value,
    ridge_sensitivity,
    run_theorem1,
    seeded_sample,
    theorem1_constants,
)
from smorm.types import PreferencePair, RatedResponse
from tests.eval.eval_data import ATTRIBUTES, BAD, GOOD, QUESTIONS


def test_relative_ridge_by_hand():
    # differences (2, 0) and (0, 2): mean squared norm 4, d = 2 -> trace(Sigma_S) / d = 2
    chosen, rejected = np.array([[2.0, 0.0], [1.0, 3.0]]), np.array([[0.0, 0.0], [1.0, 1.0]])
    assert relative_ridge_value(chosen, rejected, 0.5) == pytest.approx(1.0)


def test_seeded_sample_is_deterministic_and_ordered():
    records = list(range(20))
    first, again = seeded_sample(records, 5, 3), seeded_sample(records, 5, 3)
    assert first == again == sorted(first) and len(set(first)) == 5
    assert seeded_sample(records, 5, 4) != first
    assert seeded_sample(records, 50, 0) == records


def test_rating_matrix_follows_attribute_order():
    ratings = [RatedResponse([], "a", {"verbosity": 0.25, "helpfulness": 1.0}),
               RatedResponse([], "b", {"helpfulness": 0.5, "verbosity": 0.0})]
    assert rating_matrix(ratings, ["helpfulness", "verbosity"]).tolist() == [[1.0, 0.25], [0.5, 0.0]]


def test_linear_head_weights_reorder_and_refuse_mlp(tiny_reward_model):
    w_S, w_M = linear_head_weights(tiny_reward_model, ["verbosity", "helpfulness"])
    multi = tiny_reward_model.heads["multi"].weight.detach().double().numpy()  # [K, d] in config order
    assert np.array_equal(w_M, multi[[1, 0]].T)
    assert np.array_equal(w_S, tiny_reward_model.heads["single"].weight.detach().double().numpy()[0])
    assert linear_head_weights(tiny_reward_model, ["harmlessness"]) is None
    assert linear_head_weights(SimpleNamespace(heads=("single",)), ATTRIBUTES) is None


def test_run_theorem1_matches_independent_features(tiny_reward_model):
    from smorm.data.formatting import Formatter

    prompt = lambda q: [{"role": "user", "content": q}]  # noqa: E731
    pairs = [PreferencePair(prompt(q), g, b) for q, g, b in zip(QUESTIONS, GOOD, BAD, strict=True)]
    ratings = [RatedResponse(prompt(q), g, {"helpfulness": 0.2 * i, "verbosity": 1.0 - 0.1 * i})
               for i, (q, g) in enumerate(zip(QUESTIONS, GOOD, strict=True))]
    data = TheoryData(pairs, ratings, list(ATTRIBUTES), "config.json", seed=0, requested=6,
                      num_pairs_available=6, num_rated_available=6, num_rated_incomplete=0)
    result = run_theorem1(tiny_reward_model, data, batch_size=4, relative_ridge=1e-2)

    formatter = Formatter(tiny_reward_model.tokenizer, 96)

    def feature(messages, response):
        ids = torch.tensor([formatter.encode(messages, response).input_ids])
        with torch.no_grad():
            return tiny_reward_model(input_ids=ids, attention_mask=torch.ones_like(ids)).pooled[0].double().numpy()

    chosen = np.stack([feature(p.prompt, p.chosen) for p in pairs])
    rejected = np.stack([feature(p.prompt, p.rejected) for p in pairs])
    rated = np.stack([feature(r.prompt, r.response) for r in ratings])
    ratings_matrix = np.array([[0.2 * i, 1.0 - 0.1 * i] for i in range(6)])
    ridge = 1e-2 * np.mean(np.sum((chosen - rejected) ** 2, axis=1)) / chosen.shape[1]
    expected = theorem1_constants(chosen, rejected, rated, ratings_matrix, ridge=ridge)
    assert result["ridge"] == pytest.approx(ridge, rel=1e-4)
    assert list(result["population"]["alpha"].values()) == pytest.approx(expected.alpha, rel=1e-3, abs=1e-6)
    assert result["population"]["c"] == pytest.approx(expected.c, rel=1e-3, abs=1e-6)
    assert result["population"]["epsilon"] == pytest.approx(expected.epsilon, rel=1e-3)
    assert result["coupling_holds"] == expected.coupling_holds
    assert result["hidden_size"] == 32 and any("6 sampled rows < d = 32" in n for n in result["notes"])
    # the trained-head check uses the model's own linear heads on the same rows
    w_S, w_M = linear_head_weights(tiny_reward_model, list(ATTRIBUTES))
    given = theorem1_constants(chosen, rejected, rated, ratings_matrix, w_S, w_M, ridge=ridge)
    assert result["trained_heads"]["bound_holds_fraction"] == given.bound_holds_fraction
    assert result["trained_heads"]["heads"] == "given"
    grid = [row["relative_ridge"] for row in result["ridge_sensitivity"]]
    assert grid == sorted(grid) and 1e-2 in grid
    at_default = next(r for r in result["ridge_sensitivity"] if r["relative_ridge"] == 1e-2)
    assert at_default["coupling"] == pytest.approx(sum(result["population"]["alpha"].values()), rel=1e-9)


def test_ridge_sensitivity_by_hand():
    # the 2-d example of test_eval_theorem1.py: mu_S = (1, 1), Sigma_M = diag(1/2, 1/2),
    # C_M 1 = (1/2, 1): with ridge l, 1^T alpha = mu_S^T (Sigma_M + l I)^-1 C_M 1 = 1.5 / (0.5 + l);
    # trace(Sigma_S) / d = 2, so a relative ridge g is l = 2 g
    chosen, rejected = np.array([[2.0, 0.0], [0.0, 2.0]]), np.zeros((2, 2))
    rated, ratings = np.eye(2), np.array([[1.0, 0.0], [1.0, 1.0]])
    rows = ridge_sensitivity(chosen, rejected, rated, ratings, grid=(0.25, 1.0))
    assert [r["coupling"] for r in rows] == pytest.approx([1.5 / (0.5 + 0.5), 1.5 / (0.5 + 2.0)])
    assert all(r["coupling_holds"] for r in rows)
    assert math.isclose(rows[0]["c"], 1.5 / 2 / (2 / (2 + 0.5)), rel_tol=1e-9)  # mu~^2 = 2 / (2 + l)


def test_theory_needs_both_data_sets(tmp_path, tiny_llama_dir):
    from smorm.eval.theory import load_theory_data
    from smorm.train.config import RunConfig
    from tests.train.helpers import tiny_config

    raw = tiny_config(tmp_path, tiny_llama_dir)
    raw["data"]["ratings"] = []
    raw["losses"] = [{"name": "bt"}]
    run = tmp_path / "run"
    (run / "model").mkdir(parents=True)  # a run folder as `smorm train` leaves it: config.json beside model/
    (run / "config.json").write_text(RunConfig.model_validate(raw).model_dump_json())
    with pytest.raises(ValueError, match=r"no D_M \(data.ratings\)"):
        load_theory_data(run)
    with pytest.raises(FileNotFoundError, match="no config.json beside a model/ folder.*Theorem 1"):
        load_theory_data(tmp_path)
    (run / "config.json").write_text('{"method": 3}')
    with pytest.raises(ValueError, match="not a valid run config"):
        load_theory_data(run)
