"""Any HF AutoModelForSequenceClassification reward model, evaluated on the same footing (mode F).

The model is a tiny random LlamaForSequenceClassification built here from the tiny tokenizer and
saved with safetensors; expected rewards come from running it directly, one unpadded sequence at
a time, on text rendered here with the tokenizer's chat template.
"""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
import torch

from smorm.eval.runner import BenchSpec, evaluate_run
from smorm.models.hf_scorer import HFRewardModel, is_sequence_classifier_folder, load_hf_reward_model
from smorm.models.scorers import looks_like_hub_id
from tests.eval.eval_data import BAD, GOOD, QUESTIONS


def build_classifier(tokenizer, num_labels: int = 1):
    from transformers import LlamaConfig, LlamaForSequenceClassification

    config = LlamaConfig(vocab_size=len(tokenizer), hidden_size=32, intermediate_size=64, num_hidden_layers=2,
                         num_attention_heads=4, num_key_value_heads=2, max_position_embeddings=512,
                         pad_token_id=tokenizer.pad_token_id, bos_token_id=tokenizer.bos_token_id,
                         eos_token_id=tokenizer.eos_token_id, num_labels=num_labels)
    torch.manual_seed(3)
    return LlamaForSequenceClassification(config).eval()


@pytest.fixture(scope="module")
def classifier_dir(tmp_path_factory, tiny_tokenizer) -> Path:
    folder = tmp_path_factory.mktemp("hf-rm")
    build_classifier(tiny_tokenizer).save_pretrained(folder, safe_serialization=True)
    tiny_tokenizer.save_pretrained(folder)
    return folder


def direct_rewards(folder: Path, prompts: list[str], responses: list[str]) -> np.ndarray:
    from transformers import AutoModelForSequenceClassification, AutoTokenizer

    model = AutoModelForSequenceClassification.from_pretrained(folder).eval()
    tokenizer = AutoTokenizer.from_pretrained(folder)
    rewards = []
    for prompt, response in zip(prompts, responses, strict=True):
        text = tokenizer.apply_chat_template(
            [{"role": "user", "content": prompt}, {"role": "assistant", "content": response}], tokenize=False)
        ids = torch.tensor([tokenizer(text, add_special_tokens=False)["input_ids"]])
        with torch.no_grad():
            rewards.append(float(model(input_ids=ids).logits[0, 0]))
    return np.array(rewards)


def test_classifier_folder_is_detected_and_scored_like_its_own_forward(classifier_dir, bench_files, tmp_path):
    assert (classifier_dir / "model.safetensors").is_file()
    assert is_sequence_classifier_folder(classifier_dir)
    written = evaluate_run(classifier_dir, [BenchSpec("pairs", str(bench_files["pairs"])),
                                            BenchSpec("rm-bench", str(bench_files["rm-bench"]))],
                           tmp_path, batch_size=4, show_progress=False)
    report = written.report
    assert report["scorer"] == "HFRewardModel" and report["modes"] == ["F"]
    chosen = direct_rewards(classifier_dir, QUESTIONS, GOOD)
    rejected = direct_rewards(classifier_dir, QUESTIONS, BAD)
    pairs = report["benchmarks"]["pairs:pairs.jsonl"]
    assert pairs["modes"]["F"]["accuracy"] == np.mean(chosen > rejected)
    assert "attribute_means" not in pairs  # no multi head, so no attribute tables or bars
    histogram = pairs["modes"]["F"]["reward_histogram"]
    assert histogram["edges"][0] == pytest.approx(min(chosen.min(), rejected.min()), abs=1e-5)
    assert histogram["edges"][-1] == pytest.approx(max(chosen.max(), rejected.max()), abs=1e-5)
    assert "| benchmark | items | F |" in written.markdown_path.read_text()
    assert json.loads(written.json_path.read_text())["benchmarks"]["rm-bench:rm-bench"]["modes"]["F"]["score"] >= 0


def test_batching_matches_single_sequences(classifier_dir):
    model = load_hf_reward_model(str(classifier_dir))
    from smorm.data.formatting import Formatter

    formatter = Formatter(model.tokenizer, model.config.max_length)
    sequences = [formatter.encode([{"role": "user", "content": q}], r).input_ids
                 for q, r in zip(QUESTIONS + QUESTIONS, GOOD + BAD, strict=True)]
    batched = model.score_token_ids(sequences, batch_size=5)
    expected = direct_rewards(classifier_dir, QUESTIONS + QUESTIONS, GOOD + BAD)
    assert batched.single.numpy() == pytest.approx(expected, abs=1e-5)
    assert batched.attributes is None and batched.pooled.shape == (12, 32)


def test_multi_label_classifier_and_smorm_folders_are_refused(tmp_path, tiny_tokenizer, tiny_model_dir):
    folder = tmp_path / "two-labels"
    build_classifier(tiny_tokenizer, num_labels=2).save_pretrained(folder, safe_serialization=True)
    tiny_tokenizer.save_pretrained(folder)
    with pytest.raises(ValueError, match="num_labels=2"):
        load_hf_reward_model(str(folder))
    assert not is_sequence_classifier_folder(tiny_model_dir)  # a smorm folder is never taken for HF
    with pytest.raises((ValueError, FileNotFoundError)):
        load_hf_reward_model(str(tiny_model_dir))


def test_pickle_only_folder_is_refused(tmp_path, classifier_dir):
    folder = tmp_path / "pickled"
    folder.mkdir()
    (folder / "config.json").write_text((classifier_dir / "config.json").read_text())
    (folder / "pytorch_model.bin").write_bytes(b"not loaded")
    with pytest.raises(ValueError, match="safetensors"):
        load_hf_reward_model(str(folder))


def test_hub_ids_are_told_apart_from_paths(tmp_path):
    assert looks_like_hub_id("Skywork/Skywork-Reward-Llama-3.1-8B")
    assert not looks_like_hub_id("./runs/x")
    assert not looks_like_hub_id("runs/a/model")
    (tmp_path / "owner").mkdir()
    assert not looks_like_hub_id(str(tmp_path / "owner"))


def test_wrapper_exposes_the_runner_surface(classifier_dir):
    model = load_hf_reward_model(str(classifier_dir), max_length=40)
    assert isinstance(model, HFRewardModel)
    assert model.config.max_length == 40 and model.config.attributes == []
    assert model.pad_id == model.model.config.pad_token_id
    assert model.model.config.pad_token_id is not None


def test_eval_without_bench_does_not_read_a_classifiers_config_json_as_a_run_config(classifier_dir):
    from typer.testing import CliRunner

    from smorm.cli import app

    # The classifier's config.json is Hugging Face's, not a training run's: there are no benchmarks of its own.
    result = CliRunner().invoke(app, ["eval", str(classifier_dir)])
    assert result.exit_code == 2
    assert "nothing to evaluate" in result.output and "not a training run" in result.output
