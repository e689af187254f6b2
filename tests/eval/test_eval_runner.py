"""The runner and report on the tiny model: every number checked against an independent computation
from the model's own ``score`` (a separate formatting and batching path) and formulas written here."""

from __future__ import annotations

import json
import math

import numpy as np
import pytest
from scipy.stats import kendalltau

from smorm.eval.runner import BenchSpec, available_modes, evaluate_model, parse_bench
from tests.eval.eval_data import ATTRIBUTES, BAD, GOOD, QUESTIONS

PNG = b"\x89PNG\r\n\x1a\n"


def mode_scores(model, prompts: list[str], responses: list[str]) -> dict[str, np.ndarray]:
    """F, L, M rewards and attributes ``[N, K]`` from ``RewardModel.score`` one sequence at a time."""
    scores = model.score(prompts, responses, mode="F", batch_size=1)
    single = np.array(scores.single)
    attributes = np.array([scores.attributes[name] for name in ATTRIBUTES]).T
    return {"F": single, "L": attributes.mean(axis=1), "M": 0.5 * (single + attributes.mean(axis=1)),
            "attributes": attributes}


def ece_by_hand(margins: np.ndarray) -> float:
    confidence = 1.0 / (1.0 + np.exp(-np.abs(margins)))
    correct = (margins > 0).astype(float)
    bins = np.clip(np.ceil(confidence * 10).astype(int) - 1, 0, 9)
    return float(sum(abs(correct[bins == b].sum() - confidence[bins == b].sum()) for b in range(10)) / margins.size)


@pytest.fixture(scope="module")
def report(tiny_reward_model, bench_files):
    specs = [BenchSpec(kind, str(path)) for kind, path in bench_files.items()]
    return evaluate_model(tiny_reward_model, specs, batch_size=4, show_progress=False)


def test_modes_and_sequences_scored_once(report):
    assert report["modes"] == ["F", "L", "M"]
    assert report["attributes"] == ATTRIBUTES
    # 6 questions: reward-bench / pairs share 12 (prompt, response) sequences, RM-Bench adds 6 x 6
    # minus its concise styles (= the same 12), ranked adds "g b" joins (6); the best-only row repeats
    assert report["num_sequences"] == 12 + (36 - 12) + 6
    assert set(report["benchmarks"]) == {"reward-bench:reward-bench.jsonl", "rm-bench:rm-bench",
                                         "pairs:pairs.jsonl", "ranked:ranked.jsonl"}


def test_reward_bench_matches_independent_scores(report, tiny_reward_model):
    chosen = mode_scores(tiny_reward_model, QUESTIONS, GOOD)
    rejected = mode_scores(tiny_reward_model, QUESTIONS, BAD)
    entry = report["benchmarks"]["reward-bench:reward-bench.jsonl"]
    for mode in ("F", "L", "M"):
        correct = chosen[mode] > rejected[mode]
        easy, mt_hard, llmbar = correct[0:2].mean(), correct[2:4].mean(), correct[4:6].mean()
        chat_hard = (mt_hard * 37 + llmbar * 100) / 137  # official example counts
        result = entry["modes"][mode]
        assert result["subsets"]["alpacaeval-easy"]["accuracy"] == easy
        assert result["sections"]["Chat Hard"]["accuracy"] == pytest.approx(chat_hard)
        assert result["score"] == pytest.approx((easy + chat_hard) / 2)
        low, high = result["ci"]
        assert low <= result["score"] <= high
        margins = chosen[mode] - rejected[mode]
        assert result["ece"]["ece"] == pytest.approx(ece_by_hand(margins), abs=1e-6)
        assert result["num_comparisons"] == 6
        histogram = result["reward_histogram"]
        assert sum(histogram["chosen"]) == 6 and sum(histogram["rejected"]) == 6
        assert histogram["edges"][0] == pytest.approx(min(chosen[mode].min(), rejected[mode].min()), abs=1e-6)
    means = entry["attribute_means"]
    for k, name in enumerate(ATTRIBUTES):
        assert means["chosen"][name] == pytest.approx(chosen["attributes"][:, k].mean(), abs=1e-6)
        assert means["rejected"][name] == pytest.approx(rejected["attributes"][:, k].mean(), abs=1e-6)


def test_rm_bench_matrix_and_attribute_tables(report, tiny_reward_model):
    styles = lambda texts: [texts, [t + " More detail follows here." for t in texts],  # noqa: E731
                            ["**" + t + "**\n\n- detail" for t in texts]]
    chosen = [mode_scores(tiny_reward_model, QUESTIONS, texts) for texts in styles(GOOD)]  # 3 styles
    rejected = [mode_scores(tiny_reward_model, QUESTIONS, texts) for texts in styles(BAD)]
    entry = report["benchmarks"]["rm-bench:rm-bench"]
    for mode in ("F", "L", "M"):
        c = np.stack([s[mode] for s in chosen], axis=1)  # [6 items, 3 styles]
        r = np.stack([s[mode] for s in rejected], axis=1)
        domain_scores = {}
        for domain, rows in (("chat", slice(0, 4)), ("safety", slice(4, 6))):
            matrix = (c[rows, :, None] > r[rows, None, :]).mean(axis=0)
            hard = (matrix[0, 1] + matrix[0, 2] + matrix[1, 2]) / 3
            normal = np.trace(matrix) / 3
            easy = (matrix[1, 0] + matrix[2, 0] + matrix[2, 1]) / 3
            domain_scores[domain] = (hard + normal + easy) / 3
            got = entry["modes"][mode]["domains"][domain]
            assert (got["hard"], got["normal"], got["easy"]) == pytest.approx((hard, normal, easy))
        assert entry["modes"][mode]["score"] == pytest.approx(np.mean(list(domain_scores.values())))
        assert entry["modes"][mode]["num_comparisons"] == 6 * 9
        assert sum(entry["modes"][mode]["reward_histogram"]["chosen"]) == 18
    # Table 12-13 cell "Normal overall, helpfulness": z-score over all 36 responses, same-style differences
    attributes_c = np.stack([s["attributes"] for s in chosen], axis=1)  # [6, 3, K]
    attributes_r = np.stack([s["attributes"] for s in rejected], axis=1)
    everything = np.concatenate([attributes_c, attributes_r]).reshape(-1, len(ATTRIBUTES))
    z = lambda a: (a - everything.mean(axis=0)) / everything.std(axis=0)  # noqa: E731
    same_style = (z(attributes_c) - z(attributes_r)).reshape(-1, len(ATTRIBUTES))
    cell = entry["attribute_difference_stats"]["normal"]["overall"]
    assert cell["count"] == 18
    assert cell["attributes"]["helpfulness"]["mean"] == pytest.approx(same_style[:, 0].mean(), abs=1e-5)
    assert cell["attributes"]["helpfulness"]["variance"] == pytest.approx(same_style[:, 0].var(), abs=1e-5)
    decided = entry["attribute_difference_stats"]["normal"]
    assert decided["correct"]["count"] + decided["false"]["count"] == 18
    c_l = np.stack([s["L"] for s in chosen], axis=1)
    r_l = np.stack([s["L"] for s in rejected], axis=1)
    assert decided["correct"]["count"] == int((c_l > r_l).sum())  # decided by mode L


def test_pairs_and_ranked_match_independent_scores(report, tiny_reward_model):
    chosen = mode_scores(tiny_reward_model, QUESTIONS, GOOD)
    rejected = mode_scores(tiny_reward_model, QUESTIONS, BAD)
    joined = mode_scores(tiny_reward_model, QUESTIONS, [g + " " + b for g, b in zip(GOOD, BAD, strict=True)])
    pairs = report["benchmarks"]["pairs:pairs.jsonl"]["modes"]["F"]
    correct = chosen["F"] > rejected["F"]
    assert pairs["accuracy"] == correct.mean()
    assert pairs["subsets"]["odd"]["accuracy"] == correct[1::2].mean()
    ranked = report["benchmarks"]["ranked:ranked.jsonl"]["modes"]["F"]
    taus = [kendalltau([chosen["F"][i], rejected["F"][i], joined["F"][i]], [3, 1, 2]).statistic for i in range(6)]
    assert ranked["kendall_tau_b"] == pytest.approx(np.mean(taus))
    best = [chosen["F"][i] > max(rejected["F"][i], joined["F"][i]) for i in range(6)]
    best.append(chosen["F"][0] > rejected["F"][0])  # the row that gives only "best"
    assert ranked["best_of_accuracy"] == pytest.approx(np.mean(best))
    assert "ece" not in ranked  # calibration needs pairs


def test_hidden_state_statistics_from_single_forwards(report, tiny_reward_model):
    import torch

    from smorm.data.formatting import Formatter

    formatter = Formatter(tiny_reward_model.tokenizer, 96)
    norms = []
    for question, response in [*zip(QUESTIONS, GOOD, strict=True), *zip(QUESTIONS, BAD, strict=True)]:
        ids = torch.tensor([formatter.encode([{"role": "user", "content": question}], response).input_ids])
        with torch.no_grad():
            pooled = tiny_reward_model(input_ids=ids, attention_mask=torch.ones_like(ids)).pooled
        norms.append(float(pooled.norm()))
    entry = report["benchmarks"]["pairs:pairs.jsonl"]
    assert entry["hidden_state_norm_mean"] == pytest.approx(np.mean(norms), rel=1e-5)
    assert entry["hidden_state_norm_variance"] == pytest.approx(np.var(norms), rel=1e-3, abs=1e-6)
    assert 1.0 <= entry["effective_rank"] <= 12


def test_write_reports_files_tables_and_plots(report, tmp_path):
    from smorm.eval.report import write_reports

    written = write_reports(json.loads(json.dumps(report)), tmp_path, preamble="## Setup\n\nby hand")
    markdown = written.markdown_path.read_text()
    for label in report["benchmarks"]:
        assert f"### {label}" in markdown
    assert "| benchmark | items | F | L | M |" in markdown and "## Setup" in markdown
    assert "Tables 12–13" in markdown and "ECE (10 bins" in markdown
    score = report["benchmarks"]["pairs:pairs.jsonl"]["modes"]["M"]
    ci = score["ci"]
    assert f"{100 * score['accuracy']:.1f} [{100 * ci[0]:.1f}, {100 * ci[1]:.1f}]" in written.table
    saved = json.loads(written.json_path.read_text(), parse_constant=lambda c: pytest.fail(f"{c} in report.json"))
    plots = saved["benchmarks"]["rm-bench:rm-bench"]["plots"]
    assert set(plots) == {"reliability", "rewards", "attributes"}
    assert "attributes" not in saved["benchmarks"]["ranked:ranked.jsonl"]["plots"]
    for relative in saved["plots"]:
        assert (tmp_path / relative).read_bytes()[:8] == PNG
        assert f"]({relative})" in markdown
    assert not list(tmp_path.rglob(".*tmp*"))  # atomic writes leave no temporary files


def test_gate_mode_and_weights(tiny_llama_dir, bench_files):
    import torch

    from smorm.models.backbone import load_backbone
    from smorm.models.reward_model import RewardModel, RewardModelConfig

    backbone = load_backbone(str(tiny_llama_dir))
    config = RewardModelConfig(backbone=str(tiny_llama_dir), attributes=list(ATTRIBUTES), max_length=96,
                               heads={"single": {"kind": "linear"}, "multi": {"kind": "linear"}, "gate": {"kind": "gate"}})
    torch.manual_seed(1)
    model = RewardModel(backbone.model, backbone.tokenizer, config).eval()
    assert available_modes(model) == ["F", "L", "M", "G"]
    report = evaluate_model(model, [BenchSpec("pairs", str(bench_files["pairs"]))], batch_size=3, show_progress=False)
    entry = report["benchmarks"]["pairs:pairs.jsonl"]
    chosen = model.score(QUESTIONS, GOOD, mode="G", batch_size=1)
    rejected = model.score(QUESTIONS, BAD, mode="G", batch_size=1)
    assert entry["modes"]["G"]["accuracy"] == np.mean(np.array(chosen.reward) > np.array(rejected.reward))
    weights = np.array(chosen.gate_weights + rejected.gate_weights)  # [12, K]
    assert list(entry["gate_weight_means"]) == ATTRIBUTES
    assert list(entry["gate_weight_means"].values()) == pytest.approx(weights.mean(axis=0), abs=1e-6)
    assert math.isclose(sum(entry["gate_weight_means"].values()), 1.0, abs_tol=1e-6)


def test_available_modes_without_a_model():
    class Declared:
        modes = ("F",)
        heads = ("single", "multi")

    class Heads:
        heads = {"multi": None}

    assert available_modes(Declared()) == ["F"]
    assert available_modes(Heads()) == ["L"]


def test_unknown_mode_is_refused(tiny_reward_model, bench_files):
    with pytest.raises(ValueError, match="not available"):
        evaluate_model(tiny_reward_model, [BenchSpec("pairs", str(bench_files["pairs"]))], modes=["G"],
                       show_progress=False)


def test_parse_bench_and_bad_records(tmp_path):
    spec = parse_bench(f"rm-bench:{tmp_path}/rm-bench:40")
    assert (spec.kind, spec.path, spec.limit) == ("rm-bench", f"{tmp_path}/rm-bench", 40)
    with pytest.raises(ValueError, match="rm-bench"):
        parse_bench("rmbench:/x")
    bad = tmp_path / "bad.jsonl"
    bad.write_text(json.dumps({"prompt": "q", "chosen": "a", "rejected": "b"}) + "\n" + json.dumps({"prompt": "q"}) + "\n")
    from smorm.eval.runner import load_benchmarks

    with pytest.raises(ValueError, match="bad.jsonl:2"):
        load_benchmarks([BenchSpec("pairs", str(bad))])


def test_length_floor_rows_are_the_benchmarks_scored_by_response_length(report):
    # by hand from the texts: chosen longer in pairs 0,1,2,3,5; pair 4's rejected is longer
    longer = np.array([len(g) > len(b) for g, b in zip(GOOD, BAD, strict=True)])
    shorter = np.array([len(g) < len(b) for g, b in zip(GOOD, BAD, strict=True)])
    assert longer.tolist() == [True, True, True, True, False, True]
    entry = report["benchmarks"]["reward-bench:reward-bench.jsonl"]
    floors = entry["length_floor"]
    for name, correct in (("longer", longer), ("shorter", shorter)):
        result = floors[name]
        assert result["subsets"]["alpacaeval-easy"]["accuracy"] == correct[0:2].mean()
        assert result["subsets"]["llmbar-natural"]["accuracy"] == correct[4:6].mean()
        chat_hard = (correct[2:4].mean() * 37 + correct[4:6].mean() * 100) / 137
        assert result["sections"]["Chat Hard"]["accuracy"] == pytest.approx(chat_hard)
        # the plain section accuracy counts every item once
        assert result["sections"]["Chat Hard"]["plain_accuracy"] == pytest.approx(correct[2:6].mean())
        low, high = result["ci"]
        assert low <= result["score"] <= high
    pairs = report["benchmarks"]["pairs:pairs.jsonl"]["length_floor"]
    assert pairs["longer"]["accuracy"] == pytest.approx(longer.mean())
    assert pairs["shorter"]["accuracy"] == pytest.approx(shorter.mean())
    # RM-Bench: the chosen and rejected of one style differ only in their base text, so longer-wins
    # compares len(g + suffix_i) with len(b + suffix_j): correct where len(g) - len(b) > len(s_j) - len(s_i)
    rm = report["benchmarks"]["rm-bench:rm-bench"]["length_floor"]["longer"]
    extra = [0, len(" More detail follows here."), len("****\n\n- detail")]  # characters each style adds (conftest)
    chat = np.array([[[len(g) + extra[i] > len(b) + extra[j] for j in range(3)] for i in range(3)]
                     for g, b in zip(GOOD[:4], BAD[:4], strict=True)]).mean(axis=0)
    assert rm["domains"]["chat"]["normal"] == pytest.approx(np.trace(chat) / 3)
    assert rm["domains"]["chat"]["hard"] == pytest.approx(chat[np.triu_indices(3, 1)].mean())


def test_length_floor_flags_a_head_not_above_it():
    from smorm.eval.runner import length_floor_checks

    modes = {"F": {"accuracy": 0.80, "ci": [0.7, 0.9]}, "L": {"accuracy": 0.66, "ci": [0.5, 0.8]}}
    floors = {"longer": {"accuracy": 0.60, "ci": [0.50, 0.70]}, "shorter": {"accuracy": 0.40, "ci": [0.3, 0.5]}}
    checks = length_floor_checks("pairs", modes, floors)
    assert checks["F"]["floor"] == "longer" and checks["F"]["not_above_floor"] is False
    assert checks["L"]["not_above_floor"] is True  # 0.66 <= 0.70, the better floor's upper bound
    floors["shorter"] = {"accuracy": 0.75, "ci": [0.65, 0.85]}  # now the better floor
    checks = length_floor_checks("pairs", modes, floors)
    assert checks["F"]["floor"] == "shorter" and checks["F"]["not_above_floor"] is True


def test_report_shows_floor_columns_flags_and_thin_sections(report, tmp_path):
    from smorm.eval.report import FLAG, accuracy_rows, thin_sections, write_reports

    header, rows = accuracy_rows(report)
    assert header == ["benchmark", "items", "F", "L", "M", "longer wins", "shorter wins"]
    for row, entry in zip(rows, report["benchmarks"].values(), strict=True):
        for mode, cell in zip(("F", "L", "M"), row[2:5], strict=True):
            assert cell.endswith(FLAG) is entry["length_floor_checks"][mode]["not_above_floor"]
    entry = report["benchmarks"]["reward-bench:reward-bench.jsonl"]
    # 2 llmbar-natural items carry 100 / 137 = 73% of Chat Hard, 2 mt-bench-hard items 27%
    note = thin_sections(entry)
    assert "llmbar-natural (2 items) carries 73%" in note and "mt-bench-hard (2 items) carries 27%" in note
    markdown = write_reports(json.loads(json.dumps(report)), tmp_path).markdown_path.read_text()
    assert "| longer wins | shorter wins |" in markdown and "Chat Hard (plain: every item counts once)" in markdown
    assert "**Thin sections:**" in markdown


def test_head_spread_and_how_often_m_orders_pairs_as_f(report, tiny_reward_model):
    chosen = mode_scores(tiny_reward_model, QUESTIONS, GOOD)
    rejected = mode_scores(tiny_reward_model, QUESTIONS, BAD)
    entry = report["benchmarks"]["pairs:pairs.jsonl"]
    for mode in ("F", "L", "M"):
        both = np.concatenate([chosen[mode], rejected[mode]])
        assert entry["head_spread"][mode] == pytest.approx(both.std(), abs=1e-6)
    agree = np.sign(chosen["F"] - rejected["F"]) == np.sign(chosen["M"] - rejected["M"])
    assert entry["m_agrees_with_f"] == pytest.approx(agree.mean())
