"""Benchmarks on hand-made score tables and on the shared development samples."""

from __future__ import annotations

import json

import numpy as np
import pytest

from smorm.eval import benchmarks as bm
from smorm.registry import BENCHMARKS

# allenai/reward-bench rewardbench/constants.py (commit a32e272), written out independently here
OFFICIAL_COUNTS = {
    "alpacaeval-easy": 100, "alpacaeval-length": 95, "alpacaeval-hard": 95, "mt-bench-easy": 28,
    "mt-bench-med": 40, "mt-bench-hard": 37, "math-prm": 984, "refusals-dangerous": 100,
    "refusals-offensive": 100, "llmbar-natural": 100, "llmbar-adver-neighbor": 134,
    "llmbar-adver-GPTInst": 92, "llmbar-adver-GPTOut": 47, "llmbar-adver-manual": 46,
    "xstest-should-refuse": 250, "xstest-should-respond": 154, "donotanswer": 136,
    "hep-cpp": 164, "hep-go": 164, "hep-java": 164, "hep-js": 164, "hep-python": 164, "hep-rust": 164,
}


def _strict_json(result):
    return json.loads(json.dumps(result, allow_nan=False))


def test_official_constants():
    assert bm.REWARD_BENCH_EXAMPLE_COUNTS == OFFICIAL_COUNTS
    mapped = [s for members in bm.REWARD_BENCH_SUBSET_MAPPING.values() for s in members]
    assert sorted(mapped) == sorted(OFFICIAL_COUNTS)


def test_reward_bench_toy_table_uses_official_counts():
    rows = [
        ("alpacaeval-easy", 2.0, 1.0), ("alpacaeval-easy", 1.0, 1.0),  # 1/2 (tie is wrong)
        ("mt-bench-easy", 3.0, 0.0),  # 1/1
        ("mt-bench-hard", 0.0, 1.0),  # 0/1
        ("llmbar-natural", 1.0, 0.0), {"subset": "llmbar-natural", "chosen": 5, "rejected": 4},  # 2/2
        ("xstest-should-refuse", 1.0, 0.0),  # 1/1
        ("anthropic_helpful", 1.0, 0.0), ("shp", 0.0, 1.0),  # prior sets 1 and 0
        ("my-own-subset", 1.0, 0.0),
    ]
    result = bm.score_reward_bench(rows, n_resamples=200)
    chat = (0.5 * 100 + 1.0 * 28) / (100 + 28)  # not (1 + 1) / 3 from the counts present
    chat_hard = (0.0 * 37 + 1.0 * 100) / (37 + 100)
    safety, prior = 1.0, 0.5
    sections = result["sections"]
    assert sections["Chat"]["accuracy"] == pytest.approx(chat)
    assert sections["Chat Hard"]["accuracy"] == pytest.approx(chat_hard)
    assert sections["Safety"]["accuracy"] == pytest.approx(safety)
    assert sections["Prior Sets"]["accuracy"] == pytest.approx(prior)
    assert "Reasoning" not in sections
    assert result["score"] == pytest.approx((2 * chat + 2 * chat_hard + 2 * safety + 1 * prior) / 7)
    assert result["subsets"]["alpacaeval-easy"] == {
        "accuracy": 0.5, "ci": [0.0, 1.0], "num_examples": 2, "section": "Chat"}
    assert result["unmapped_subsets"] == ["my-own-subset"]
    assert result["num_examples"] == 10 and not result["complete"]
    assert sections["Chat"]["subsets_missing"] == ["alpacaeval-length", "alpacaeval-hard", "mt-bench-med"]
    for entry in [*sections.values(), *result["subsets"].values(), result]:
        low, high = entry["ci"]
        assert low <= entry.get("accuracy", entry.get("score")) <= high
    assert _strict_json(result) == result
    assert bm.score_reward_bench(rows, n_resamples=200)["ci"] == result["ci"]  # deterministic


def test_reward_bench_full_table_weights_by_official_counts():
    rng = np.random.default_rng(0)
    rows, correct_by_subset = [], {}
    for subset in [*OFFICIAL_COUNTS, "anthropic_helpful", "anthropic_hhh", "shp", "summarize"]:
        chosen, rejected = rng.normal(size=6), rng.normal(size=6)
        rows += [(subset, c, r) for c, r in zip(chosen, rejected, strict=True)]
        correct_by_subset[subset] = float(np.mean(chosen > rejected))
    result = bm.score_reward_bench(rows, n_resamples=50)
    reasoning_subsets = ["math-prm", "hep-cpp", "hep-go", "hep-java", "hep-js", "hep-python", "hep-rust"]
    reasoning = sum(correct_by_subset[s] * OFFICIAL_COUNTS[s] for s in reasoning_subsets) / (984 + 6 * 164)
    assert result["sections"]["Reasoning"]["accuracy"] == pytest.approx(reasoning)
    prior = np.mean([correct_by_subset[s] for s in ["anthropic_helpful", "anthropic_hhh", "shp", "summarize"]])
    assert result["sections"]["Prior Sets"]["accuracy"] == pytest.approx(prior)
    section_scores = [result["sections"][s]["accuracy"] for s in ["Chat", "Chat Hard", "Safety", "Reasoning"]]
    assert result["score"] == pytest.approx((2 * sum(section_scores) + prior) / 9)
    assert result["complete"] and result["unmapped_subsets"] == []


def test_reward_bench_on_shared_first500(shared_data):
    path = shared_data / "eval" / "reward-bench" / "filtered-first500.jsonl"
    records = [json.loads(line) for line in path.read_text().splitlines()]
    # a length-preferring "reward model": score = number of characters
    rows = [{"subset": r["subset"], "chosen": len(r["chosen"]), "rejected": len(r["rejected"]),
             "origin": f"{path.name}:{i + 1}"} for i, r in enumerate(records)]
    result = bm.score_reward_bench(rows, n_resamples=200)
    accuracy = {}
    for r in records:
        accuracy.setdefault(r["subset"], []).append(len(r["chosen"]) > len(r["rejected"]))
    accuracy = {s: float(np.mean(v)) for s, v in accuracy.items()}
    chat_counts = {"alpacaeval-easy": 100, "alpacaeval-length": 95, "alpacaeval-hard": 95,
                   "mt-bench-easy": 28, "mt-bench-med": 40}
    chat = sum(accuracy[s] * n for s, n in chat_counts.items()) / sum(chat_counts.values())
    hard_counts = {"mt-bench-hard": 37, "llmbar-natural": 100, "llmbar-adver-neighbor": 134}
    chat_hard = sum(accuracy[s] * n for s, n in hard_counts.items()) / sum(hard_counts.values())
    assert set(result["sections"]) == {"Chat", "Chat Hard"}
    assert result["sections"]["Chat"]["accuracy"] == pytest.approx(chat)
    assert result["sections"]["Chat Hard"]["accuracy"] == pytest.approx(chat_hard)
    assert result["score"] == pytest.approx((chat + chat_hard) / 2)
    assert result["num_examples"] == 500


def test_rm_bench_two_items_by_hand_and_safety_pooling():
    rows = [
        # item A: M = [[1,1,1],[0,0,1],[0,0,1]]; item B (1 vs 1 is a tie): M = [[1,0,0]] * 3
        {"domain": "chat", "chosen": [3.0, 2.0, 1.0], "rejected": [2.5, 2.5, 0.0]},
        ("chat", [1.0, 1.0, 1.0], [0.0, 1.0, 2.0]),
        ("safety-refuse", [1.0, 1.0, 1.0], [0.0, 0.0, 0.0]),  # all 9 right
        ("safety-response", [0.0, 0.0, 0.0], [1.0, 1.0, 1.0]),  # all 9 wrong
    ]
    result = bm.score_rm_bench(rows, n_resamples=200)
    chat = result["domains"]["chat"]
    assert chat["accuracy_matrix"] == [[1.0, 0.5, 0.5], [0.5, 0.0, 0.5], [0.5, 0.0, 0.5]]
    # hard = upper triangle (chosen plainer than rejected), normal = diagonal, easy = lower triangle
    assert chat["hard"] == pytest.approx((0.5 + 0.5 + 0.5) / 3)
    assert chat["normal"] == pytest.approx((1.0 + 0.0 + 0.5) / 3)
    assert chat["easy"] == pytest.approx((0.5 + 0.5 + 0.0) / 3)
    assert chat["score"] == pytest.approx(4 / 9)
    safety = result["domains"]["safety"]
    assert safety["num_items"] == 2 and safety["hard"] == safety["normal"] == safety["easy"] == 0.5
    assert result["score"] == pytest.approx((4 / 9 + 0.5) / 2)
    assert result["easy"] == pytest.approx((1 / 3 + 0.5) / 2)
    assert result["hard"] == pytest.approx(0.5)
    assert result["domains_missing"] == ["math", "code"]
    assert np.array(chat["accuracy_matrix_ci"]).shape == (3, 3, 2)
    assert _strict_json(result) == result


def test_rm_bench_on_shared_files(shared_data):
    rows, wins = [], np.zeros((3, 3))
    folder = shared_data / "eval" / "rm-bench"
    for name in ["chat_filtered.json", "safety-response_filtered.json"]:
        for item in json.loads((folder / name).read_text()):
            chosen = [len(text) for text in item["chosen"]]
            rejected = [len(text) for text in item["rejected"]]
            rows.append({"domain": name.removesuffix("_filtered.json"), "chosen": chosen, "rejected": rejected})
            if name.startswith("chat"):
                wins += [[float(c > r) for r in rejected] for c in chosen]
    result = bm.score_rm_bench(rows, n_resamples=100)
    wins /= 129
    assert result["domains"]["chat"]["num_items"] == 129
    assert result["domains"]["safety"]["num_items"] == 157
    assert result["domains"]["chat"]["hard"] == pytest.approx((wins[0, 1] + wins[0, 2] + wins[1, 2]) / 3)
    assert result["domains"]["chat"]["easy"] == pytest.approx((wins[1, 0] + wins[2, 0] + wins[2, 1]) / 3)
    # a length-preferring score is style-biased: easy (chosen longer) beats hard (chosen shorter)
    assert result["easy"] > result["hard"]


def test_attribute_difference_stats_by_hand():
    # one item, one attribute: chosen (3, 5, 6), rejected (1, 4, 7) -> d_ij = c_i - r_j
    # normal: 2, 1, -1; hard (i<j): -1, -4, -2; easy (i>j): 4, 5, 2; each variance 14/9
    chosen = np.array([3.0, 5.0, 6.0]).reshape(1, 3, 1)
    rejected = np.array([1.0, 4.0, 7.0]).reshape(1, 3, 1)
    stats = bm.attribute_difference_stats(chosen, rejected, ["helpfulness"], chosen[..., 0], rejected[..., 0],
                                          normalize=False)
    for level, mean in (("normal", 2 / 3), ("hard", -7 / 3), ("easy", 11 / 3)):
        entry = stats[level]["overall"]["attributes"]["helpfulness"]
        assert entry["mean"] == pytest.approx(mean) and entry["variance"] == pytest.approx(14 / 9)
    # with the attribute as the reward: normal correct = {2, 1}, false = {-1}
    assert stats["normal"]["correct"]["count"] == 2
    assert stats["normal"]["correct"]["attributes"]["helpfulness"] == pytest.approx({"mean": 1.5, "variance": 0.25})
    assert stats["normal"]["false"]["attributes"]["helpfulness"] == pytest.approx({"mean": -1.0, "variance": 0.0})
    # z-scoring makes the statistics independent of each attribute's scale
    z = bm.attribute_difference_stats(chosen, rejected, ["h"])
    z10 = bm.attribute_difference_stats(10 * chosen + 3, 10 * rejected + 3, ["h"])
    assert z["hard"]["overall"]["attributes"]["h"] == pytest.approx(z10["hard"]["overall"]["attributes"]["h"])


def test_pairs_benchmark():
    rows = [("a", 1.0, 0.0), ("a", 0.0, 1.0), ("b", 2.0, 1.0), ("b", 3.0, 1.0), ("b", 1.0, 1.0)]
    result = bm.score_pairs(rows, n_resamples=200)
    assert result["accuracy"] == pytest.approx(3 / 5)
    assert result["subsets"]["a"]["accuracy"] == 0.5 and result["subsets"]["b"]["accuracy"] == pytest.approx(2 / 3)
    assert result["macro_accuracy"] == pytest.approx((0.5 + 2 / 3) / 2)
    assert 0.0 <= result["ece"] <= 1.0
    plain = bm.score_pairs([(1.0, 0.0), (0.0, 1.0)], n_resamples=50)
    assert plain["accuracy"] == 0.5 and "subsets" not in plain
    assert _strict_json(result) == result


def test_ranked_benchmark_by_hand():
    rows = [
        {"scores": [1, 2, 2, 3], "reference": [1, 2, 3, 3]},  # tau_b 0.8; reference top tied -> no best
        {"scores": [3, 2, 1], "reference": [1, 2, 3]},  # tau_b -1; best 2 missed
        {"scores": [1, 1, 1], "reference": [1, 2, 3]},  # constant prediction -> left out; best 2 tied -> missed
        {"scores": [1, 2], "reference": [5, 5]},  # reference constant -> tau undefined, no best
        {"scores": [0, 5, 1], "best": 1},  # hit
    ]
    result = bm.score_ranked(rows, n_resamples=100)
    # the mean over the two prompts where tau-b is defined (BSR's np.nanmean over scipy's kendalltau)
    assert result["kendall_tau_b"] == pytest.approx((0.8 - 1.0) / 2)
    assert result["num_prompts_tau"] == 2
    assert result["num_prompts_tau_undefined"] == 1 and result["num_prompts_tau_tied_scores"] == 1
    assert result["best_of_accuracy"] == pytest.approx(1 / 3) and result["num_prompts_best"] == 3
    assert _strict_json(result) == result


def test_ranked_tau_matches_nanmean_of_scipy_and_counts_tied_predictions():
    from scipy.stats import kendalltau

    rows = [
        {"scores": [0.3, 0.1, 0.2, 0.4], "reference": [4, 1, 2, 3]},  # 5 of 6 pairs concordant: 4/6
        {"scores": [2.0, 2.0, 2.0, 2.0], "reference": [4, 1, 2, 3]},  # a model that scores all alike
        {"scores": [0.4, 0.3, 0.2, 0.1], "reference": [1, 2, 3, 4]},  # reversed: -1
    ]
    result = bm.score_ranked(rows, n_resamples=50)
    assert result["kendall_tau_b"] == pytest.approx((4 / 6 - 1.0) / 2)
    # the independent formula, as the BSR authors' scripts/run_kendall.py computes it
    per_prompt = [kendalltau(r["reference"], r["scores"]).statistic for r in rows]  # NaN for the tied row
    assert np.isnan(per_prompt[1])
    assert result["kendall_tau_b"] == pytest.approx(float(np.nanmean(per_prompt)))
    assert result["num_prompts_tau"] == 2 and result["num_prompts_tau_tied_scores"] == 1
    every_prompt_tied = bm.score_ranked([rows[1]], n_resamples=50)
    assert every_prompt_tied["kendall_tau_b"] is None and every_prompt_tied["num_prompts_tau_tied_scores"] == 1


def test_report_shows_tau_counts_per_mode_when_ties_differ():
    from smorm.eval.report import score_rows

    rows = [{"scores": [1, 2, 3], "reference": [1, 2, 3]}, {"scores": [1, 3, 2], "reference": [1, 2, 3]}]
    tied = [{"scores": [1, 2, 3], "reference": [1, 2, 3]}, {"scores": [5, 5, 5], "reference": [1, 2, 3]}]
    entry = {"kind": "ranked", "modes": {"F": bm.score_ranked(rows, n_resamples=20),
                                         "M": bm.score_ranked(tied, n_resamples=20)}}
    tau_row, left_out, _best = score_rows(entry)
    # F: (1 + 1/3) / 2 over 2 prompts; M: 1 over 1 prompt, one left out
    assert tau_row[1] == "per mode"
    assert tau_row[2].startswith("0.667") and tau_row[2].endswith("n=2")
    assert tau_row[3].startswith("1.000") and tau_row[3].endswith("n=1")
    assert left_out == ["prompts left out of τ-b: scores all tied", "", "0", "1"]


def test_bad_rows_name_row_field_and_origin():
    with pytest.raises(ValueError, match=r"row 1: field 'subset'"):
        bm.score_reward_bench([("chat", 1.0, 0.0), (None, 1.0, 0.0)])
    with pytest.raises(ValueError, match=r"row 0 \(data.jsonl:7\): field 'chosen' must be a number"):
        bm.score_pairs([{"chosen": "x", "rejected": 0.0, "origin": "data.jsonl:7"}])
    with pytest.raises(ValueError, match=r"domain 'poetry' is not one of"):
        bm.score_rm_bench([("poetry", [1, 2, 3], [1, 2, 3])])
    with pytest.raises(ValueError, match=r"field 'rejected' must hold 3 scores"):
        bm.score_rm_bench([("chat", [1, 2, 3], [1, 2])])
    with pytest.raises(ValueError, match="no RewardBench section"):
        bm.score_reward_bench([("my-subset", 1.0, 0.0)])


def test_benchmarks_are_registered():
    assert BENCHMARKS.get("reward-bench").score is bm.score_reward_bench
    assert {"reward-bench", "rm-bench", "pairs", "ranked"} <= set(BENCHMARKS)
    with pytest.raises(KeyError, match="did you mean 'reward-bench'"):
        BENCHMARKS.get("reward-bnch")
