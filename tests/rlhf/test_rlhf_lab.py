"""`smorm bon` end to end on tiny models: pool, scores, curves, attribute view, judges' table, CLI."""

from __future__ import annotations

import csv
import json

import numpy as np
import pytest
from typer.testing import CliRunner

from smorm.cli import app
from smorm.rlhf.scorers import parse_scorer
from tests.rlhf.rlhf_helpers import ATTRIBUTES, save_reward_model, write_prompts


@pytest.fixture(scope="module")
def lab(tmp_path_factory, tiny_llama_dir):
    """Run `smorm bon` once through the CLI: two proxies (one read in two modes) and a gold."""
    folder = tmp_path_factory.mktemp("bon")
    smorm_proxy = save_reward_model(folder / "smorm", tiny_llama_dir, seed=1)
    bt_proxy = save_reward_model(folder / "bt", tiny_llama_dir, seed=2, heads={"single": {"kind": "linear"}})
    gold = save_reward_model(folder / "gold", tiny_llama_dir, seed=3)
    prompts = write_prompts(folder / "prompts.jsonl")
    bench = folder / "bench.jsonl"
    bench.write_text("".join(json.dumps({"prompt": f"q{i}", "chosen": "yes " * (i + 1), "rejected": "no"}) + "\n"
                             for i in range(6)))
    out = folder / "out"
    args = ["bon", "--policy", str(tiny_llama_dir), "--proxy", str(bt_proxy), "--proxy", f"{smorm_proxy}:F",
            "--proxy", f"{smorm_proxy}:M", "--gold", f"{gold}:M", "--prompts", str(prompts), "--num-prompts", "4",
            "--n", "5", "--max-new-tokens", "6", "--out", str(out), "--bench", f"pairs:{bench}",
            "--bench-sample", "4"]
    result = CliRunner().invoke(app, args)
    assert result.exit_code == 0, result.output
    return {"out": out, "output": result.output, "gold": gold, "bt": bt_proxy, "smorm": smorm_proxy,
            "prompts": prompts}


def read_csv(path) -> list[dict[str, str]]:
    with open(path) as handle:
        return list(csv.DictReader(handle))


def independent_scores(folder, entries, mode):
    """Scores through RewardModel.score (not the lab's scoring path), as [P, N]."""
    from smorm.models.reward_model import RewardModel

    model = RewardModel.from_pretrained(folder)
    prompts = [e.prompt for e in entries for _ in e.responses]
    responses = [r for e in entries for r in e.responses]
    return np.asarray(model.score(prompts, responses, mode=mode).reward).reshape(len(entries), -1)


def test_bon_curves_match_an_independent_computation(lab):
    from smorm.rlhf.generate import read_pool

    entries = read_pool(lab["out"] / "pool.jsonl")
    assert len(entries) == 4 and all(len(e.responses) == 5 for e in entries)
    rows = read_csv(lab["out"] / "bon.csv")
    labels = ["bt", "smorm:F", "smorm:M"]
    assert sorted({r["proxy"] for r in rows}) == labels
    assert len(rows) == 3 * 5  # every n from 1 to N for a pool of 5
    gold = independent_scores(lab["gold"], entries, "M")
    gold_picks: dict[str, list[float]] = {}
    tokens = np.asarray([e.response_tokens for e in entries], dtype=float)
    for label, folder, mode in (("bt", lab["bt"], "F"), ("smorm:F", lab["smorm"], "F"),
                                ("smorm:M", lab["smorm"], "M")):
        proxy = independent_scores(folder, entries, mode)
        mine = [r for r in rows if r["proxy"] == label]
        assert float(mine[0]["gold_score"]) == pytest.approx(0.0, abs=1e-9)
        assert float(mine[0]["proxy_score"]) == pytest.approx(0.0, abs=1e-9)
        best = proxy.argmax(axis=1)  # n = N: the proxy's top response, surely
        gold_at_n = np.mean([gold[p, best[p]] - gold[p].mean() for p in range(4)])
        proxy_at_n = np.mean([proxy[p, best[p]] - proxy[p].mean() for p in range(4)])
        assert float(mine[-1]["gold_score"]) == pytest.approx(gold_at_n, abs=1e-4)
        assert float(mine[-1]["proxy_score"]) == pytest.approx(proxy_at_n, abs=1e-4)
        assert float(mine[-1]["chosen_tokens"]) == pytest.approx(np.mean(tokens[np.arange(4), best]), abs=1e-4)
        assert float(mine[-1]["kl_bon"]) == pytest.approx(np.log(5) - 4 / 5, abs=1e-5)
        gold_picks[label] = [gold[p, best[p]] for p in range(4)]
    assert (lab["out"] / "bon.png").stat().st_size > 0
    paired = [r for r in read_csv(lab["out"] / "bon_paired.csv") if int(r["n"]) == 5]
    assert [r["proxy"] for r in paired] == ["smorm:F", "smorm:M"] and {r["reference"] for r in paired} == {"bt"}
    for row in paired:  # at n = N: the per-prompt gold of the two top picks, differenced and averaged
        diff = np.subtract(gold_picks[row["proxy"]], gold_picks["bt"])
        assert float(row["gold_difference"]) == pytest.approx(diff.mean(), abs=1e-4)
        assert float(row["gold_difference_sem"]) == pytest.approx(diff.std(ddof=1) / 2, abs=1e-4)
    assert "fall from the peak" in lab["output"]


def test_attribute_view_uses_the_gold_multi_head(lab):
    from smorm.models.reward_model import RewardModel
    from smorm.rlhf.generate import read_pool

    entries = read_pool(lab["out"] / "pool.jsonl")
    rows = read_csv(lab["out"] / "attributes.csv")
    assert list(rows[0]) == ["proxy", "n", "kl_bon", *ATTRIBUTES]
    gold = RewardModel.from_pretrained(lab["gold"])
    prompts = [e.prompt for e in entries for _ in e.responses]
    scores = gold.score(prompts, [r for e in entries for r in e.responses], mode="F")
    helpfulness = np.asarray(scores.attributes["helpfulness"]).reshape(4, 5)
    first = [r for r in rows if r["proxy"] == "bt"][0]  # n = 1: the pool mean
    assert float(first["helpfulness"]) == pytest.approx(helpfulness.mean(), abs=1e-5)
    assert (lab["out"] / "attributes.png").is_file()


def test_judges_table_and_summary(lab):
    summary = json.loads((lab["out"] / "summary.json").read_text())
    judges = summary["judges"]
    assert [row["judge"] for row in judges["rows"]] == ["bt", "smorm:F", "smorm:M", "gold:M"]
    assert [row["role"] for row in judges["rows"]] == ["proxy", "proxy", "proxy", "gold"]
    assert all(0 <= cell["score"] <= 1 for row in judges["rows"] for cell in row["scores"].values())
    assert "dev-benchmark scores of the judges in %" in lab["output"]
    assert summary["pool"]["prompts"] == 4 and summary["pool"]["samples_per_prompt"] == 5
    assert len(list((lab["out"] / "scores").glob("*.json"))) == 3  # one scoring pass per model folder


def test_rerun_reuses_pool_and_cached_scores(lab, tiny_llama_dir, monkeypatch):
    import smorm.rlhf.generate
    import smorm.rlhf.lab
    import smorm.rlhf.scorers
    from smorm.rlhf.lab import run_bon
    from smorm.rlhf.settings import BoNSettings, SamplingConfig

    def refuse(*args, **kwargs):
        raise AssertionError("a complete pool with cached scores must not load any model")

    monkeypatch.setattr(smorm.rlhf.generate, "load_policy", refuse)
    monkeypatch.setattr(smorm.rlhf.scorers, "load_scorer", refuse)
    monkeypatch.setattr(smorm.rlhf.lab, "load_scorer", refuse)  # the judges' table loads through this name
    before = read_csv(lab["out"] / "bon.csv")
    settings = BoNSettings(policy=str(tiny_llama_dir), proxies=[str(lab["bt"])], gold=f"{lab['gold']}:M",
                           prompts=str(lab["prompts"]), num_prompts=4, out_dir=lab["out"],
                           sampling=SamplingConfig(num_samples=5, max_new_tokens=6), benches=[])
    run_bon(settings, log=lambda _: None)
    assert read_csv(lab["out"] / "bon.csv") == [r for r in before if r["proxy"] == "bt"]
    other = BoNSettings(**{**settings.__dict__, "policy": str(lab["gold"])})
    with pytest.raises(ValueError, match="different policy"):
        run_bon(other, log=lambda _: None)


def test_parse_scorer_and_cli_errors(tmp_path):
    assert parse_scorer("runs/smorm:M").mode == "M" and parse_scorer("runs/smorm:M").label == "smorm:M"
    assert parse_scorer("runs/bt").mode is None and parse_scorer("runs/bt/model").label == "bt"
    result = CliRunner().invoke(app, ["bon", "--proxy", str(tmp_path / "nope"), "--gold", str(tmp_path),
                                      "--prompts", "x.jsonl"])
    assert result.exit_code == 2 and "reward model folder not found" in result.output
    help_text = CliRunner().invoke(app, ["bon", "--help"]).output
    assert "--proxy" in help_text and "KL_BoN" in help_text


def test_a_hugging_face_sequence_classifier_can_be_the_gold(lab, tmp_path, tiny_tokenizer):
    """The gold may be any AutoModelForSequenceClassification folder (mode F, the classifier's logit)."""
    import torch
    from transformers import LlamaConfig, LlamaForSequenceClassification

    from smorm.rlhf.generate import read_pool
    from smorm.rlhf.scorers import pool_scores

    config = LlamaConfig(vocab_size=len(tiny_tokenizer), hidden_size=32, intermediate_size=64, num_hidden_layers=2,
                         num_attention_heads=4, num_key_value_heads=2, pad_token_id=tiny_tokenizer.pad_token_id,
                         num_labels=1)
    torch.manual_seed(5)
    classifier = LlamaForSequenceClassification(config).eval()
    folder = tmp_path / "hf-gold"
    classifier.save_pretrained(folder, safe_serialization=True)
    tiny_tokenizer.save_pretrained(folder)
    entries = read_pool(lab["out"] / "pool.jsonl")
    scores = pool_scores(folder, entries, lab["out"] / "pool.jsonl", cache_dir=None)
    assert scores.attributes is None and scores.default_mode == "F"
    entry, response = entries[1], entries[1].responses[2]
    text = tiny_tokenizer.apply_chat_template([*entry.prompt, {"role": "assistant", "content": response}],
                                              tokenize=False)
    ids = torch.tensor([tiny_tokenizer(text, add_special_tokens=False)["input_ids"]])
    with torch.no_grad():
        direct = classifier(input_ids=ids).logits[0, 0].item()
    assert scores.reward(None)[1, 2] == pytest.approx(direct, abs=1e-4)


@pytest.mark.parametrize("native", [True, False])
def test_policy_dtype_auto_picks_bf16_only_where_it_is_native(monkeypatch, native):
    from smorm.rlhf import lab
    from smorm.rlhf.settings import BoNSettings

    monkeypatch.setattr(lab, "fast_bf16", lambda device: native)
    settings = BoNSettings(proxies=["p"], gold="g", policy_dtype="auto", device="cpu")
    assert lab.policy_dtype(settings) == ("bfloat16" if native else "float32")
    assert lab.policy_dtype(BoNSettings(proxies=["p"], gold="g", policy_dtype="float16")) == "float16"


def test_top_k_proxies_score_a_pool_through_one_lower_pass(lab, tiny_llama_dir, tmp_path):
    """Two top_k models on one backbone: pool scores through the feature store equal the full forward,
    and the second model finds every lower-layer state the first one stored (the lower layers run once)."""
    import torch

    from smorm.models.backbone import load_backbone
    from smorm.models.cached_scoring import trained_top_layers
    from smorm.models.feature_cache import FeatureStore
    from smorm.models.reward_model import RewardModel, RewardModelConfig
    from smorm.models.trunk import apply_trunk_mode
    from smorm.rlhf.generate import read_pool
    from smorm.rlhf.scorers import pool_scores

    folders = []
    for seed in (1, 2):
        loaded = load_backbone(str(tiny_llama_dir))
        model = RewardModel(loaded.model, loaded.tokenizer, RewardModelConfig(
            backbone=str(tiny_llama_dir), heads={"single": {"kind": "linear"}}, max_length=96))
        apply_trunk_mode(model, "top_k", 1)  # the top layer (of 2) and the final norm train
        torch.manual_seed(seed)
        with torch.no_grad():
            for parameter in [*model.base_model.layers[1].parameters(), *model.heads.parameters()]:
                parameter.add_(0.3 * torch.randn_like(parameter))
        folders.append(model.save_pretrained(tmp_path / f"proxy-{seed}"))
    assert [trained_top_layers(f, 2) for f in folders] == [1, 1]
    assert trained_top_layers(lab["bt"], 2) == 1  # heads only: the reference backbone whole
    entries = read_pool(lab["out"] / "pool.jsonl")
    pool = lab["out"] / "pool.jsonl"
    computed: list[int] = []
    original = FeatureStore.build

    def counting(self, sequences, compute, *args, **kwargs):
        def counted(chunk):
            computed.append(len(chunk))
            return compute(chunk)
        return original(self, sequences, counted, *args, **kwargs)

    FeatureStore.build = counting  # type: ignore[method-assign]
    through_store, counts = [], []
    try:
        for folder in folders:
            through_store.append(pool_scores(folder, entries, pool, None, store_root=tmp_path / "store"))
            counts.append(sum(computed))
    finally:
        FeatureStore.build = original  # type: ignore[method-assign]
    distinct = {(json.dumps(e.prompt), r) for e in entries for r in e.responses}
    assert counts == [len(distinct), len(distinct)]  # the first model computed them all, the second none
    for folder, cached in zip(folders, through_store, strict=True):
        full = pool_scores(folder, entries, pool, None)
        np.testing.assert_allclose(cached.single, full.single, rtol=1e-4, atol=1e-4)
    assert not np.allclose(through_store[0].single, through_store[1].single)  # two different models
