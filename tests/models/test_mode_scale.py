"""Mode M on one scale (issue 14): the heads are standardised by their mean and spread on the
training data, stored with the model at save time; Baseline SM and export do the same; raw keeps
the literal mean. Every expected number is computed here from the heads' own outputs."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
import torch

from smorm.models.composite import write_baseline_sm
from smorm.models.reward_model import RewardModel, combine_heads
from smorm.models.scorers import load_scorer
from smorm.train.config import RunConfig
from smorm.train.trainer import Trainer
from tests.methods.test_methods_composite import PROMPTS, RESPONSES, make_member
from tests.train.helpers import PAIRS, RATINGS, tiny_config


def test_combine_heads_by_hand():
    single, mean_attr = torch.tensor([1.0, 3.0]), torch.tensor([0.2, 0.6])
    scales = {"F": [2.0, 1.0], "L": [0.4, 0.2]}
    # 0.5 * ((1 - 2)/1 + (0.2 - 0.4)/0.2) = 0.5 * (-1 - 1) = -1;  0.5 * (1 + 1) = 1
    assert combine_heads(single, mean_attr, scales).tolist() == pytest.approx([-1.0, 1.0])
    assert combine_heads(single, mean_attr, scales, "raw") is None
    assert combine_heads(single, mean_attr, {"F": [0.0, 1.0]}) is None  # L unmeasured: the raw mean
    with pytest.raises(ValueError, match="mode_scale 'z'"):
        combine_heads(single, mean_attr, scales, "z")


@pytest.fixture(scope="module")
def run(tiny_llama_dir, tmp_path_factory) -> tuple[Path, list[list[int]]]:
    """The saved model folder, and every training sequence's token ids as the trainer built them."""
    folder = tmp_path_factory.mktemp("scaled")
    config = RunConfig.model_validate(tiny_config(folder, tiny_llama_dir, steps=3))
    trainer = Trainer(config, show_progress=False)
    trainer.setup()
    return trainer.train().model_dir, [list(s) for s in trainer.data.all_sequences()]


@pytest.fixture(scope="module")
def trained(run) -> Path:
    return run[0]


def test_training_stores_each_heads_mean_and_spread_on_the_training_data(run):
    trained, sequences = run
    # 8 pairs' chosen and rejected and 5 rated responses: all of them, fewer than the sample cap
    assert len(sequences) == 2 * len(PAIRS) + len(RATINGS)
    model = RewardModel.from_pretrained(trained)
    output = model.score_token_ids(sequences, batch_size=1)  # one at a time, no padding: another path
    f = output.single.double().numpy()
    l_mean = output.attributes.double().mean(dim=-1).numpy()
    scales = model.config.head_scales
    assert scales["F"] == pytest.approx([f.mean(), f.std()], abs=1e-4)
    assert scales["L"] == pytest.approx([l_mean.mean(), l_mean.std()], abs=1e-4)
    # mode M is then the mean of the two standardised heads, on texts as on token ids
    scores = model.score(PROMPTS, RESPONSES, mode="M")
    f_new, l_new = np.array(scores.single), np.array(list(scores.attributes.values())).mean(axis=0)
    expected = 0.5 * ((f_new - f.mean()) / f.std() + (l_new - l_mean.mean()) / l_mean.std())
    assert scores.reward == pytest.approx(expected.tolist(), abs=1e-3)
    assert [row["M"] for row in scores.rows()] == pytest.approx(expected.tolist(), abs=1e-3)
    saved = json.loads((trained / "smorm_config.json").read_text())
    assert saved["mode_scale"] == "standardized" and set(saved["head_scales"]) == {"F", "L"}


def test_raw_mode_scale_keeps_the_literal_mean(trained):
    model = RewardModel.from_pretrained(trained)
    model.config.mode_scale = "raw"
    scores = model.score(PROMPTS, RESPONSES, mode="M")
    f = np.array(scores.single)
    l_mean = np.array(list(scores.attributes.values())).mean(axis=0)
    assert scores.reward == pytest.approx((0.5 * (f + l_mean)).tolist(), abs=1e-6)


def test_baseline_sm_puts_sorm_and_morm_on_one_scale(tiny_llama_dir, tmp_path):
    sorm = make_member(tmp_path / "sorm", tiny_llama_dir, {"single": {"kind": "linear"}}, 0, "F")
    morm = make_member(tmp_path / "morm", tiny_llama_dir, {"multi": {"kind": "linear", "out": 2}}, 1, "L")
    for folder, key, scale in ((sorm, "F", [0.3, 2.0]), (morm, "L", [-0.1, 0.5])):
        path = folder / "smorm_config.json"
        config = json.loads(path.read_text())
        config["head_scales"] = {key: scale}
        path.write_text(json.dumps(config))
    write_baseline_sm(tmp_path / "sm", sorm, morm)
    scorer = load_scorer(tmp_path / "sm")
    f = np.array(scorer.score(PROMPTS, RESPONSES, mode="F").reward)
    l_mean = np.array(scorer.score(PROMPTS, RESPONSES, mode="L").reward)
    expected = 0.5 * ((f - 0.3) / 2.0 + (l_mean + 0.1) / 0.5)
    assert scorer.score(PROMPTS, RESPONSES, mode="M").reward == pytest.approx(expected.tolist(), abs=1e-5)


def test_export_of_a_standardised_mode_m_differs_by_the_stated_constant(trained, tmp_path):
    from transformers import AutoModelForSequenceClassification, AutoTokenizer

    from smorm.data.formatting import Formatter
    from smorm.models.export import export_reward_model

    model = RewardModel.from_pretrained(trained)
    meta = export_reward_model(model, tmp_path / "hf", mode="M")
    (mu_f, sd_f), (mu_l, sd_l) = model.config.head_scales["F"], model.config.head_scales["L"]
    assert meta["score_offset"] == pytest.approx(-0.5 * (mu_f / sd_f + mu_l / sd_l))
    classifier = AutoModelForSequenceClassification.from_pretrained(tmp_path / "hf").eval()
    tokenizer = AutoTokenizer.from_pretrained(tmp_path / "hf")
    formatter = Formatter(tokenizer, model.config.max_length)
    got = []
    for prompt, response in zip(PROMPTS, RESPONSES, strict=True):
        ids = torch.tensor([formatter.encode([{"role": "user", "content": prompt}], response).input_ids])
        with torch.no_grad():
            got.append(float(classifier(input_ids=ids).logits[0, 0]) + meta["score_offset"])
    assert got == pytest.approx(model.score(PROMPTS, RESPONSES, mode="M").reward, abs=1e-4)
