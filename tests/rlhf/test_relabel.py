"""``smorm relabel``: gold labels for a data set, checked against the gold scored directly in the test."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
from typer.testing import CliRunner

from smorm.cli import app
from smorm.data.loading import load_pairs, load_ratings
from smorm.data.spec import DataSpec
from smorm.rlhf import relabel as relabel_module
from smorm.rlhf.relabel import relabel, sidecar
from smorm.rlhf.settings import RelabelSettings
from tests.rlhf.rlhf_helpers import ATTRIBUTES, save_reward_model
from tests.train.helpers import tiny_config, write_config

runner = CliRunner()
TAIL = " and so on" * 20  # longer than the gold's max_length (96 tokens): only the tail is scored
PAIRS = [
    ("Name a fruit.", "An apple.", "A car."),
    ("Say hi.", "Hi there!", "No."),
    ("Count to three.", "1, 2, 3.", "1, 2, 4."),
    ("What is 2 + 2?", "4", "5"),
    ("Give a color.", "Blue.", "Loud."),
    ("Tell a joke.", "Why did the chicken cross the road?", "I will not."),
    ("Name a fruit.", "A pear.", "An apple."),  # "An apple." again: scored once
    ("Name a planet.", "Mars.", "Bread."),
    ("Say bye.", "Goodbye!", "Hello!"),
    ("Spell cat.", "c-a-t", "d-o-g"),
    ("Is ice cold?", "Yes, ice is cold.", "No, ice is hot."),
    ("Name a tree.", "Oak.", "Iron."),
    ("Long answer, please.", "First" + TAIL, "Second" + TAIL),  # identical tokens once truncated: an exact tie
]


def write_pairs(path: Path, pairs=PAIRS) -> Path:
    path.write_text("".join(json.dumps({"prompt": p, "chosen": c, "rejected": r}) + "\n" for p, c, r in pairs))
    return path


@pytest.fixture(scope="module")
def gold(tiny_llama_dir, tmp_path_factory) -> Path:
    return save_reward_model(tmp_path_factory.mktemp("gold") / "gold", tiny_llama_dir, seed=3)


@pytest.fixture
def data(tmp_path) -> Path:
    (tmp_path / "input").mkdir()
    return write_pairs(tmp_path / "input" / "pairs.jsonl")


def settings(gold: Path, data: Path, out: Path, **options) -> RelabelSettings:
    return RelabelSettings(gold=str(gold), data=str(data), out=out, device="cpu", **options)


def direct(gold: Path, prompts: list, responses: list[str], mode: str = "F"):
    """The gold's rewards and attribute predictions through ``RewardModel.score`` (not relabel's path)."""
    from smorm.models.reward_model import RewardModel

    scores = RewardModel.from_pretrained(gold).score(prompts, responses, mode=mode)
    return np.asarray(scores.reward), {name: np.asarray(v) for name, v in scores.attributes.items()}


def read_rows(path: Path) -> list[dict]:
    return [json.loads(line) for line in path.read_text().splitlines()]


def gold_deltas(gold: Path, pairs=PAIRS) -> np.ndarray:
    """``[P]`` gold reward of each input pair's chosen minus its rejected."""
    chosen, _ = direct(gold, [p for p, _, _ in pairs], [c for _, c, _ in pairs])
    rejected, _ = direct(gold, [p for p, _, _ in pairs], [r for _, _, r in pairs])
    return chosen - rejected


def test_chosen_is_the_gold_winner_and_margin_the_reward_difference(gold, data, tmp_path):
    result = relabel(settings(gold, data, tmp_path / "gold-pairs.jsonl"))
    rows = read_rows(result.out)
    deltas = gold_deltas(gold)
    assert deltas[-1] == 0 and np.all(deltas[:-1] != 0)  # the truncated pair is the only exact tie
    assert len(rows) == len(PAIRS) - 1
    chosen, _ = direct(gold, [row["prompt"] for row in rows], [row["chosen"] for row in rows])
    rejected, _ = direct(gold, [row["prompt"] for row in rows], [row["rejected"] for row in rows])
    assert np.all(chosen > rejected)
    np.testing.assert_allclose([row["margin"] for row in rows], chosen - rejected, atol=1e-5)
    # the same pairs as the input (in input order), each oriented by the gold
    assert [{row["chosen"], row["rejected"]} for row in rows] == [{c, r} for _, c, r in PAIRS[:-1]]
    assert rows[0]["prompt"] == [{"role": "user", "content": "Name a fruit."}] and rows[0]["source"] == "pairs"
    provenance = json.loads(result.provenance.read_text())
    assert provenance["counts"] == {
        "read": 13, "pairs": 13, "responses": 25, "sequences": 24, "kept": 12, "ties_dropped": 1, "flipped": 0,
        "gold_agrees": int((deltas > 0).sum()), "truncated": 2}
    assert provenance["gold"] == str(gold) and provenance["gold_kind"] == "smorm" and provenance["mode"] == "F"
    assert (provenance["noise"], provenance["seed"], provenance["tie_threshold"]) == (0.0, 0, 0.0)
    assert provenance["input"]["path"] == str(data) and provenance["smorm_version"]
    assert result.provenance == tmp_path / "gold-pairs.provenance.json"


def test_noise_flips_exactly_round_p_n_pairs_deterministic_for_a_seed(gold, data, tmp_path):
    first = relabel(settings(gold, data, tmp_path / "a.jsonl", noise=0.25, seed=0))
    again = relabel(settings(gold, data, tmp_path / "b.jsonl", noise=0.25, seed=0))
    other = relabel(settings(gold, data, tmp_path / "c.jsonl", noise=0.25, seed=1))
    assert first.out.read_text() == again.out.read_text()

    def flipped(result) -> list[int]:
        rows = read_rows(result.out)
        chosen, _ = direct(gold, [row["prompt"] for row in rows], [row["chosen"] for row in rows])
        rejected, _ = direct(gold, [row["prompt"] for row in rows], [row["rejected"] for row in rows])
        assert all(row["margin"] > 0 for row in rows)  # flipped pairs keep |delta|: noise is not in the file
        np.testing.assert_allclose([row["margin"] for row in rows], np.abs(chosen - rejected), atol=1e-5)
        return [number for number, (c, r) in enumerate(zip(chosen, rejected), 1) if c < r]

    assert len(flipped(first)) == round(0.25 * 12) == 3
    assert flipped(first) == json.loads(first.provenance.read_text())["flipped_rows"]
    assert flipped(other) == json.loads(other.provenance.read_text())["flipped_rows"]
    assert len(flipped(other)) == 3 and flipped(other) != flipped(first)
    assert json.loads(other.provenance.read_text())["counts"]["flipped"] == 3


def test_flipped_pairs_are_a_seeded_round_p_n_subset():
    for kept, noise in ((12, 0.25), (10, 0.25), (7, 0.5), (5, 0.0)):
        chosen = relabel_module.flipped_pairs(kept, noise, seed=4)
        assert len(chosen) == round(noise * kept) and len(set(chosen.tolist())) == len(chosen)
        assert all(0 <= i < kept for i in chosen)
        np.testing.assert_array_equal(chosen, relabel_module.flipped_pairs(kept, noise, seed=4))


def test_ties_are_dropped_by_threshold(gold, data, tmp_path):
    deltas = np.abs(gold_deltas(gold))
    threshold = float(np.sort(deltas)[5])  # the six smallest |delta| (the exact tie among them) are ties
    result = relabel(settings(gold, data, tmp_path / "out.jsonl", tie_threshold=threshold))
    expected = [{c, r} for (_, c, r), d in zip(PAIRS, deltas) if d > threshold]
    assert [{row["chosen"], row["rejected"]} for row in read_rows(result.out)] == expected
    assert len(expected) == 7 and result.counts["ties_dropped"] == 6


def test_ratings_rows_are_the_gold_attribute_predictions(gold, data, tmp_path):
    result = relabel(settings(gold, data, tmp_path / "out.jsonl", ratings=tmp_path / "gold-ratings.jsonl"))
    rows = read_rows(result.ratings)
    distinct = list(dict.fromkeys((p, text) for p, c, r in PAIRS for text in (c, r)))
    assert [(row["prompt"][0]["content"], row["response"]) for row in rows] == distinct
    _, attributes = direct(gold, [p for p, _ in distinct], [text for _, text in distinct])
    for name in ATTRIBUTES:
        np.testing.assert_allclose([row[name] for row in rows], attributes[name], atol=1e-5)
    # read back by smorm's loader with the provenance file's data source: raw, and on the declared scale
    entry = json.loads(result.provenance.read_text())["ratings"]
    assert entry["attributes"] == ATTRIBUTES and entry["rows"] == len(distinct)
    spec = DataSpec(**entry["data_source"])
    raw, _ = load_ratings(spec, rating_scale="raw")
    unit, report = load_ratings(spec)
    for name in ATTRIBUTES:
        low, high = min(0.0, attributes[name].min()), max(1.0, attributes[name].max())
        assert report.scales[name] == pytest.approx((low, high), abs=1e-5)
        np.testing.assert_allclose([r.ratings[name] for r in raw], attributes[name], atol=1e-5)
        np.testing.assert_allclose([r.ratings[name] for r in unit], (attributes[name] - low) / (high - low),
                                   atol=1e-5)


def test_outputs_are_read_back_and_a_run_config_using_them_validates(gold, data, tmp_path, tiny_llama_dir):
    result = relabel(settings(gold, data, tmp_path / "labels" / "gold-pairs.jsonl", noise=0.25,
                              ratings=tmp_path / "labels" / "gold-ratings.jsonl"))
    pairs, report = load_pairs(DataSpec(path=str(result.out), format="pairs"))
    rows = read_rows(result.out)
    assert report.kept == len(rows) == 12
    assert [pair.margin for pair in pairs] == [row["margin"] for row in rows]
    assert [(pair.chosen, pair.rejected) for pair in pairs] == [(row["chosen"], row["rejected"]) for row in rows]
    config = tiny_config(tmp_path / "run", tiny_llama_dir)
    config["data"]["pairs"] = [{"path": str(result.out), "format": "pairs"}]
    config["data"]["ratings"] = [json.loads(result.provenance.read_text())["ratings"]["data_source"]]
    config["losses"] = [{"name": "margin"}, {"name": "regression"}]
    outcome = runner.invoke(app, ["validate", str(write_config(tmp_path, config))])
    assert outcome.exit_code == 0, outcome.output
    assert f"12 pairs, {len(read_rows(result.ratings))} rated responses" in outcome.output
    assert "helpfulness, verbosity" in outcome.output


def test_a_rerun_and_another_noise_reuse_the_scores(gold, data, tmp_path, monkeypatch, tiny_llama_dir):
    out = tmp_path / "out.jsonl"
    first = relabel(settings(gold, data, out))
    assert first.scored == 24
    scores = sidecar(out, ".scores.safetensors")
    stamp = scores.stat().st_mtime_ns
    real = relabel_module.score_sequences

    def refuse(*args, **kwargs):
        raise AssertionError("scored again")

    monkeypatch.setattr(relabel_module, "score_sequences", refuse)
    again = relabel(settings(gold, data, out))
    noisy = relabel(settings(gold, data, out, noise=0.25, seed=5, mode="M", tie_threshold=0.01))
    assert again.scored == noisy.scored == 0 and scores.stat().st_mtime_ns == stamp
    assert again.counts == first.counts and noisy.counts["flipped"] == round(0.25 * noisy.counts["kept"])
    assert json.loads(noisy.provenance.read_text())["mode"] == "M"
    monkeypatch.setattr(relabel_module, "score_sequences", real)
    other_gold = save_reward_model(tmp_path / "other-gold", tiny_llama_dir, seed=8)  # another gold: scored anew
    assert relabel(settings(other_gold, data, out)).scored == 24 and scores.stat().st_mtime_ns != stamp


def test_an_interrupted_pass_resumes_at_the_first_missing_chunk(gold, data, tmp_path, monkeypatch):
    out = tmp_path / "out.jsonl"
    real = relabel_module.score_sequences
    calls: list[int] = []

    def interrupted(model, sequences, *args, **kwargs):
        calls.append(len(sequences))
        if len(calls) == 3:
            raise KeyboardInterrupt
        return real(model, sequences, *args, **kwargs)

    monkeypatch.setattr(relabel_module, "score_sequences", interrupted)
    with pytest.raises(KeyboardInterrupt):
        relabel(settings(gold, data, out), chunk_size=8)
    parts = sorted(path.name for path in sidecar(out, ".scores.parts").iterdir())
    assert len(parts) == 2 and not out.exists() and not sidecar(out, ".scores.safetensors").exists()
    calls.clear()
    resumed = relabel(settings(gold, data, out), chunk_size=8)
    assert calls == [8] and resumed.scored == 8  # 24 sequences: chunks 0-8 and 8-16 were kept
    assert not sidecar(out, ".scores.parts").exists()
    fresh = relabel(settings(gold, data, tmp_path / "fresh.jsonl"))
    resumed_rows, fresh_rows = read_rows(resumed.out), read_rows(fresh.out)
    assert [(r["chosen"], r["rejected"]) for r in resumed_rows] == [(r["chosen"], r["rejected"]) for r in fresh_rows]
    np.testing.assert_allclose([r["margin"] for r in resumed_rows], [r["margin"] for r in fresh_rows], atol=1e-5)


def test_a_gated_gold_labels_in_mode_g(tiny_llama_dir, data, tmp_path):
    from tests.rlhf.rlhf_helpers import GATED_HEADS

    gated = save_reward_model(tmp_path / "gated", tiny_llama_dir, seed=1, heads=GATED_HEADS, mode="G")
    result = relabel(settings(gated, data, tmp_path / "out.jsonl"))
    rows = read_rows(result.out)
    chosen, _ = direct(gated, [row["prompt"] for row in rows], [row["chosen"] for row in rows], mode="G")
    rejected, _ = direct(gated, [row["prompt"] for row in rows], [row["rejected"] for row in rows], mode="G")
    np.testing.assert_allclose([row["margin"] for row in rows], chosen - rejected, atol=1e-5)
    provenance = json.loads(result.provenance.read_text())
    assert provenance["mode"] == "G" and provenance["gold_kind"] == "smorm-gated"


def test_a_hugging_face_classifier_gold_labels_with_its_logit(tiny_tokenizer, tmp_path):
    from tests.rlhf.rlhf_helpers import direct_hf_rewards, save_hf_classifier

    classifier = save_hf_classifier(tmp_path / "classifier", tiny_tokenizer, seed=7)
    short = PAIRS[:-1]  # within the classifier's budget: the direct forward below does not truncate
    (tmp_path / "in").mkdir()
    result = relabel(settings(classifier, write_pairs(tmp_path / "in" / "pairs.jsonl", short), tmp_path / "o.jsonl"))
    rows = read_rows(result.out)
    chosen = direct_hf_rewards(classifier, [row["prompt"] for row in rows], [row["chosen"] for row in rows])
    rejected = direct_hf_rewards(classifier, [row["prompt"] for row in rows], [row["rejected"] for row in rows])
    np.testing.assert_allclose([row["margin"] for row in rows], chosen - rejected, atol=1e-5)
    assert len(rows) == len(short) and json.loads(result.provenance.read_text())["gold_kind"] == "hf-classifier"


def test_the_command_writes_labels_end_to_end(gold, data, tmp_path):
    out, ratings = tmp_path / "gold-pairs.jsonl", tmp_path / "gold-ratings.jsonl"
    result = runner.invoke(app, ["relabel", str(gold), "--data", str(data), "--format", "pairs", "--out", str(out),
                                 "--noise", "0.25", "--seed", "2", "--ratings", str(ratings), "--device", "cpu",
                                 "--batch-size", "4", "--quiet"])
    assert result.exit_code == 0, result.output
    assert "12 of 13 pairs (1 ties dropped, 3 flipped; 24 sequences scored now" in result.output
    provenance = json.loads(sidecar(out, ".provenance.json").read_text())
    assert (provenance["noise"], provenance["seed"], provenance["settings"]["batch_size"]) == (0.25, 2, 4)
    assert len(read_rows(out)) == 12 and len(read_rows(ratings)) == 25


@pytest.mark.parametrize("flags, field", [
    (["--noise", "1"], "noise"),
    (["--noise", "-0.1"], "noise"),
    (["--tie-threshold", "-1"], "tie_threshold"),
    (["--mode", "X"], "mode"),
])
def test_the_command_refuses_bad_options_naming_the_field(gold, data, tmp_path, flags, field, monkeypatch):
    monkeypatch.setattr(relabel_module, "load_scorer", lambda *a, **k: pytest.fail("the gold was loaded"))
    result = runner.invoke(app, ["relabel", str(gold), "--data", str(data), "--out", str(tmp_path / "o.jsonl"),
                                 *flags])
    assert result.exit_code == 2 and field in result.output, result.output


def test_the_command_refuses_bad_input_before_scoring(gold, data, tmp_path, monkeypatch, tiny_llama_dir):
    monkeypatch.setattr(relabel_module, "score_sequences", lambda *a, **k: pytest.fail("scoring started"))

    def refused(*arguments: str) -> str:
        result = runner.invoke(app, ["relabel", *arguments, "--device", "cpu"])
        assert result.exit_code == 2, result.output
        return " ".join(result.output.split())

    out = str(tmp_path / "o.jsonl")
    assert "gold:" in refused(str(tmp_path / "no-gold"), "--data", str(data), "--out", out)
    assert "data:" in refused(str(gold), "--data", str(tmp_path / "missing.jsonl"), "--out", out)
    assert "out:" in refused(str(gold), "--data", str(data), "--out", str(data))
    assert "out:" in refused(str(gold), "--data", str(data.parent), "--out", str(data.parent / "o.jsonl"))
    assert "ratings:" in refused(str(gold), "--data", str(data), "--out", out, "--ratings", out)
    assert "mode: the gold" in refused(str(gold), "--data", str(data), "--out", out, "--mode", "G")
    bad = tmp_path / "bad.jsonl"
    bad.write_text(json.dumps({"prompt": "p", "chosen": "a", "rejected": "b"}) + "\n"
                   + json.dumps({"prompt": "p", "chosen": 3, "rejected": "b"}) + "\n")
    assert f"{bad}:2" in refused(str(gold), "--data", str(bad), "--out", out)
    single = save_reward_model(tmp_path / "single", tiny_llama_dir, seed=0, heads={"single": {"kind": "linear"}})
    assert "ratings: the gold" in refused(str(single), "--data", str(data), "--out", out, "--ratings",
                                          str(tmp_path / "r.jsonl"))
    assert not Path(out).exists()


def test_bf16_scoring_is_its_own_cache_entry_and_close_to_fp32(gold, data, tmp_path, monkeypatch):
    out = tmp_path / "out.jsonl"
    fp32 = relabel(settings(gold, data, out))
    fp32_margins = [row["margin"] for row in read_rows(out)]
    fp32_key = json.loads(fp32.provenance.read_text())["scores_key"]
    seen: list[bool] = []
    real = relabel_module.score_sequences

    def spy(scorer, sequences, batch_size, bf16, *args, **kwargs):
        seen.append(bf16)
        return real(scorer, sequences, batch_size, bf16, *args, **kwargs)

    monkeypatch.setattr(relabel_module, "score_sequences", spy)
    bf16 = relabel(settings(gold, data, out, precision="bf16"))
    assert bf16.scored == 24 and seen and all(seen)  # the fp32 scores are not reused for a bf16 run
    provenance = json.loads(bf16.provenance.read_text())
    assert provenance["precision"] == "bf16" and provenance["scores_key"] != fp32_key
    rows = read_rows(out)  # the same pairs in input order (the truncated one an exact tie in bf16 too)
    assert len(rows) == len(fp32_margins)
    np.testing.assert_allclose([r["margin"] for r in rows], fp32_margins, atol=0.05 * max(fp32_margins))
    seen.clear()
    monkeypatch.setattr(relabel_module, "resolve_precision", lambda precision, device: "fp32")
    again = relabel(settings(gold, data, out, precision="auto"))  # auto on a device without native bf16: fp32
    assert again.scored == 24 and seen == [False] * len(seen) and seen
    assert json.loads(again.provenance.read_text())["precision"] == "fp32"


def test_on_error_skip_drops_a_bad_record_and_counts_it(gold, data, tmp_path):
    lines = data.read_text().splitlines()
    data.write_text("\n".join([*lines, json.dumps({"prompt": "Say hi.", "chosen": "", "rejected": "No."})]) + "\n")
    with pytest.raises(Exception, match=rf"{data}:{len(lines) + 1}.*chosen"):
        relabel(settings(gold, data, tmp_path / "strict.jsonl"))
    result = relabel(settings(gold, data, tmp_path / "out.jsonl", on_error="skip"))
    assert result.counts["pairs"] == len(PAIRS) and result.counts["read"] == len(PAIRS) + 1
    assert json.loads(result.provenance.read_text())["input"]["skipped"]
