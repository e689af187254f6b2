"""`smorm export`: a plain HF sequence-classification folder scoring like smorm, checked without smorm."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest
import torch

from smorm.models.export import (
    ExportError,
    choose_pad_token,
    closing_token_ids,
    export_reward_model,
    score_weight,
)
from tests.serve.conftest import build_reward_model

CONVERSATIONS = [
    ([{"role": "user", "content": "What is 2 + 2?"}], "4"),
    ([{"role": "system", "content": "Be brief."}, {"role": "user", "content": "A colour?"}], "Green, like grass in May."),
    ([{"role": "user", "content": "Hello"}], "Hi there! How can I help you today?"),
    ([{"role": "user", "content": "Ok"}], ""),
]

# Loads each exported folder with transformers only and scores the conversations as ONE right-padded
# batch, the way a user of the folder would (chat template text, then the tokenizer).
NO_SMORM_SCRIPT = r"""
import json, sys
import torch
from transformers import AutoModelForSequenceClassification, AutoTokenizer
folders, conversations = json.loads(sys.argv[1]), json.loads(sys.argv[2])
out = {}
for folder in folders:
    tokenizer = AutoTokenizer.from_pretrained(folder)
    model = AutoModelForSequenceClassification.from_pretrained(folder, use_safetensors=True).eval()
    assert model.config.num_labels == 1 and tokenizer.chat_template
    texts = [tokenizer.apply_chat_template(p + [{"role": "assistant", "content": r}], tokenize=False)
             for p, r in conversations]
    batch = tokenizer(texts, padding=True, add_special_tokens=False, return_tensors="pt")
    assert (batch["attention_mask"] == 0).any(), "the batch should need padding"
    with torch.no_grad():
        out[folder] = model(**batch).logits[:, 0].tolist()
out["smorm_imported"] = any(name == "smorm" or name.startswith("smorm.") for name in sys.modules)
print(json.dumps(out))
"""


def score_without_smorm(folders: list[Path], tmp_path: Path) -> dict:
    env = {key: value for key, value in os.environ.items() if key != "PYTHONPATH"}
    env.update(HF_HUB_OFFLINE="1", TRANSFORMERS_OFFLINE="1")
    result = subprocess.run(
        [sys.executable, "-c", NO_SMORM_SCRIPT, json.dumps([str(f) for f in folders]), json.dumps(CONVERSATIONS)],
        capture_output=True, text=True, cwd=tmp_path, env=env, timeout=300,
    )
    assert result.returncode == 0, result.stderr[-3000:]
    answer = json.loads(result.stdout.strip().splitlines()[-1])
    assert answer.pop("smorm_imported") is False
    return answer


def smorm_rewards(model, mode: str) -> list[float]:
    return model.score([p for p, _ in CONVERSATIONS], [r for _, r in CONVERSATIONS], mode=mode).reward


def test_score_weight_of_each_mode(reward_model):
    w_single = reward_model.heads["single"].weight.detach()
    w_multi = reward_model.heads["multi"].weight.detach()
    assert torch.equal(score_weight(reward_model, "F"), w_single)
    # L: the mean of the K attribute rows; M: the mean of F's and L's weights (000 Sec. 3).
    manual_l = (w_multi[0] + w_multi[1] + w_multi[2]) / 3
    assert torch.allclose(score_weight(reward_model, "L")[0], manual_l, atol=1e-7)
    assert torch.allclose(score_weight(reward_model, "M")[0], (w_single[0] + manual_l) / 2, atol=1e-7)


@pytest.mark.slow
def test_exported_modes_score_like_smorm_in_a_process_without_smorm(reward_model, tmp_path):
    folders = {}
    for mode in ("F", "L", "M"):
        folders[mode] = tmp_path / f"export-{mode}"
        meta = export_reward_model(reward_model, folders[mode], mode=mode)
        assert meta["probe_max_abs_deviation"] < 1e-4 and meta["pad"]["changed"] is False
        files = {p.name for p in folders[mode].iterdir()}
        assert "model.safetensors" in files and not any(name.endswith((".bin", ".pt")) for name in files)
        config = json.loads((folders[mode] / "config.json").read_text())
        assert len(config["id2label"]) == 1  # num_labels = 1
        assert config["architectures"] == ["LlamaForSequenceClassification"]
        assert config["problem_type"] == "regression"  # HF pipelines then return the raw reward
    scores = score_without_smorm(list(folders.values()), tmp_path)
    for mode, folder in folders.items():
        assert scores[str(folder)] == pytest.approx(smorm_rewards(reward_model, mode), abs=1e-4)


def _closing_pad_backbone(folder: Path) -> Path:
    """A tiny Llama whose tokenizer pads with <|im_end|>, the token that closes every assistant turn."""
    from smorm.testing import tiny_llama, tiny_tokenizer

    tokenizer = tiny_tokenizer()
    tokenizer.chat_template = (
        "{% for message in messages %}{{ '<|im_start|>' + message['role'] + '\n' + message['content'] + '<|im_end|>' }}"
        "{% endfor %}{% if add_generation_prompt %}{{ '<|im_start|>assistant\n' }}{% endif %}"
    )
    tokenizer.pad_token = "<|im_end|>"
    model = tiny_llama(tokenizer)
    model.save_pretrained(folder)
    tokenizer.save_pretrained(folder)
    return folder


@pytest.mark.slow
def test_pad_token_that_ends_every_sequence_is_replaced(tmp_path):
    from transformers import AutoModelForSequenceClassification, AutoTokenizer

    backbone = _closing_pad_backbone(tmp_path / "backbone")
    model = build_reward_model(backbone)
    im_end = model.tokenizer.convert_tokens_to_ids("<|im_end|>")
    assert model.tokenizer.pad_token_id == im_end
    assert closing_token_ids(model.tokenizer, 256) == [im_end]
    choice = choose_pad_token(model.tokenizer, 256)
    assert choice.changed and not choice.added and choice.token_id != im_end

    folder = tmp_path / "export"
    meta = export_reward_model(model, folder, mode="M")
    assert meta["pad"]["token"] == choice.token and meta["pad"]["changed"]
    tokenizer = AutoTokenizer.from_pretrained(folder)
    assert tokenizer.pad_token == choice.token and tokenizer.padding_side == "right"
    exported = score_without_smorm([folder], tmp_path)[str(folder)]
    assert exported == pytest.approx(smorm_rewards(model, "M"), abs=1e-4)

    # Without the fix HF pooling skips the closing <|im_end|> and reads another token: the check can fail.
    naive = AutoModelForSequenceClassification.from_pretrained(folder).eval()
    naive.config.pad_token_id = im_end
    texts = [tokenizer.apply_chat_template([*p, {"role": "assistant", "content": r}], tokenize=False)
             for p, r in CONVERSATIONS]
    ids = tokenizer(texts, padding=True, add_special_tokens=False, return_tensors="pt")
    with torch.no_grad():
        wrong = naive(**ids).logits[:, 0].tolist()
    assert max(abs(a - b) for a, b in zip(wrong, smorm_rewards(model, "M"))) > 1e-3


def test_a_new_pad_token_is_added_when_no_special_token_is_free(tmp_path):
    from tokenizers import Tokenizer, decoders, models, pre_tokenizers
    from transformers import PreTrainedTokenizerFast

    from smorm.testing import tiny_llama

    alphabet = pre_tokenizers.ByteLevel.alphabet()
    backend = Tokenizer(models.BPE(vocab={ch: i for i, ch in enumerate(sorted(alphabet))}, merges=[]))
    backend.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False, use_regex=True)
    backend.decoder = decoders.ByteLevel()
    # Its one special token is the EOS that closes every turn, and it is also the pad token.
    tokenizer = PreTrainedTokenizerFast(tokenizer_object=backend, eos_token="</s>", pad_token="</s>")
    tokenizer.chat_template = ("{% for m in messages %}{{ m['role'] + ': ' + m['content'] + eos_token }}{% endfor %}"
                               "{% if add_generation_prompt %}{{ 'assistant: ' }}{% endif %}")
    backbone = tmp_path / "backbone"
    tiny_llama(tokenizer).save_pretrained(backbone)
    tokenizer.save_pretrained(backbone)
    model = build_reward_model(backbone)
    assert choose_pad_token(model.tokenizer, 256).added
    meta = export_reward_model(model, tmp_path / "export", mode="F")
    assert meta["pad"]["added"] and meta["pad"]["token"] == "<|smorm_pad|>"
    assert meta["probe_max_abs_deviation"] < 1e-4


def test_modes_and_heads_that_are_not_one_linear_layer_are_refused(tiny_llama_dir, reward_model, tmp_path):
    with pytest.raises(ExportError, match="gate weights depend on the prompt"):
        export_reward_model(reward_model, tmp_path / "g", mode="G")
    with pytest.raises(ExportError, match="Exportable modes: F, L, M"):
        export_reward_model(reward_model, tmp_path / "x", mode="X")
    mlp = build_reward_model(tiny_llama_dir, heads={"single": {"kind": "mlp", "hidden": 8}, "multi": {"kind": "linear"}})
    with pytest.raises(ExportError, match="'mlp', not a bias-free linear map"):
        export_reward_model(mlp, tmp_path / "mlp", mode="F")
    with pytest.raises(ExportError, match="'mlp'"):
        export_reward_model(mlp, tmp_path / "mlp", mode="M")
    export_reward_model(mlp, tmp_path / "mlp-l", mode="L")  # L reads only the linear attribute head
    single_only = build_reward_model(tiny_llama_dir, heads={"single": {"kind": "linear"}})
    with pytest.raises(ExportError, match="needs the 'multi' head"):
        export_reward_model(single_only, tmp_path / "l", mode="L")
    assert not (tmp_path / "g").exists() and not (tmp_path / "mlp").exists()
    assert not [p for p in tmp_path.iterdir() if ".tmp-" in p.name]  # no half-written folder left


def test_lora_backbone_must_be_merged_and_merged_or_delta_backbones_export(tiny_llama_dir, tmp_path):
    from smorm.models.export import export_run
    from smorm.models.reward_model import RewardModel
    from smorm.models.trunk import apply_lora, merge_lora

    model = build_reward_model(tiny_llama_dir)
    apply_lora(model, {"r": 4})
    for name, parameter in model.backbone.named_parameters():
        if "lora_B" in name:
            torch.nn.init.normal_(parameter, std=0.5)  # adapters that change the scores
    with pytest.raises(ExportError, match="merge them first"):
        export_reward_model(model, tmp_path / "unmerged", mode="F")
    merge_lora(model)
    model.save_pretrained(tmp_path / "lora-run" / "model", backbone_weights="full")

    delta = build_reward_model(tiny_llama_dir, seed=1)
    for parameter in delta.backbone.parameters():
        parameter.requires_grad_(False)
    top = delta.base_model.layers[-1]
    for parameter in top.parameters():
        parameter.requires_grad_(True)
        parameter.data.add_(0.05)
    delta.save_pretrained(tmp_path / "delta-run" / "model")  # only the top layer is stored

    for run, original in (("lora-run", model), ("delta-run", delta)):
        reloaded = RewardModel.from_pretrained(tmp_path / run / "model")
        assert smorm_rewards(reloaded, "M") == pytest.approx(smorm_rewards(original, "M"), abs=1e-5)
        meta = export_run(tmp_path / run, tmp_path / f"{run}-export", mode="M")
        assert meta["probe_max_abs_deviation"] < 1e-4


def test_export_does_not_replace_a_folder_it_did_not_write(reward_model, tmp_path):
    keep = tmp_path / "precious"
    keep.mkdir()
    (keep / "notes.txt").write_text("mine")
    with pytest.raises(FileExistsError, match="not a smorm export"):
        export_reward_model(reward_model, keep, mode="F")
    assert (keep / "notes.txt").read_text() == "mine"
    export_reward_model(reward_model, tmp_path / "again", mode="F")
    export_reward_model(reward_model, tmp_path / "again", mode="L")  # an earlier export is replaced
    assert json.loads((tmp_path / "again" / "smorm_export.json").read_text())["mode"] == "L"


def test_cli_export_refuses_mode_g_with_a_clear_message(reward_model_dir, tmp_path):
    from typer.testing import CliRunner

    from smorm.cli import app

    runner = CliRunner()
    refused = runner.invoke(app, ["export", str(reward_model_dir.parent), str(tmp_path / "out"), "--mode", "G"])
    assert refused.exit_code == 2 and "gate weights depend on the prompt" in refused.output
    done = runner.invoke(app, ["export", str(reward_model_dir.parent), str(tmp_path / "out"), "--mode", "L"])
    assert done.exit_code == 0, done.output
    assert "exported mode L" in done.output and (tmp_path / "out" / "config.json").is_file()


def test_gated_model_exports_f_but_not_g(tiny_llama_dir, tmp_path):
    gated = build_reward_model(tiny_llama_dir, heads={"single": {"kind": "linear"}, "multi": {"kind": "linear"},
                                                      "gate": {"kind": "gate", "hidden_sizes": [8]}})
    with pytest.raises(ExportError, match="gate weights depend on the prompt"):
        export_reward_model(gated, tmp_path / "g", mode="G")
    assert export_reward_model(gated, tmp_path / "f", mode="F")["probe_max_abs_deviation"] < 1e-4
