"""data.dedup (exact repeats across sources) and data.exclude_prompts_of (no training on dev prompts)."""

from __future__ import annotations

import json

from smorm.data.run_data import (
    DUPLICATE_PAIR,
    DUPLICATE_RATED,
    EXCLUDED_PROMPT,
    REVERSED_PAIR,
    load_run_data,
)
from smorm.data.spec import DataSpec
from smorm.run_config import RunConfig
from tests.data.test_data_ratings_filter import write_jsonl


def test_dedup_keeps_the_first_of_each_pair_and_drops_repeats_and_reversals_in_later_sources(tmp_path):
    first = write_jsonl(tmp_path / "a.jsonl", [
        {"prompt": "Boil an egg?", "chosen": "Put it in water.", "rejected": "No."},
        {"prompt": "Boil an egg?", "chosen": "Put it in water.", "rejected": "no. "},  # same after normalising
        {"prompt": "Name a colour.", "chosen": "Red", "rejected": "Dog"},
    ])
    second = write_jsonl(tmp_path / "b.jsonl", [
        {"prompt": "name a  colour.", "chosen": "dog", "rejected": "red"},          # the reverse of a.jsonl:3
        {"prompt": "Name a colour.", "chosen": "Blue", "rejected": "Dog"},          # new
        {"prompt": "Name a colour!", "chosen": "Red", "rejected": "Dog"},           # another prompt
    ])
    specs = [DataSpec(str(first), format="pairs"), DataSpec(str(second), format="pairs")]
    loaded = load_run_data(specs, [], dedup=True)
    assert [(p.prompt[-1]["content"], p.chosen) for p in loaded.pairs] == [
        ("Boil an egg?", "Put it in water."), ("Name a colour.", "Red"), ("Name a colour.", "Blue"),
        ("Name a colour!", "Red")]
    a, b = (r for r in loaded.reports if r["kind"] == "pairs")
    assert (a["kept"], a["skipped"]) == (2, {DUPLICATE_PAIR: 1})
    assert (b["kept"], b["skipped"]) == (2, {REVERSED_PAIR: 1})
    assert len(load_run_data(specs, []).pairs) == 6  # off by default


def test_dedup_of_rated_responses_keeps_the_first_ratings(tmp_path):
    rows = [{"prompt": "Q", "response": "A", "helpfulness": 4}, {"prompt": "q", "response": "a ", "helpfulness": 0},
            {"prompt": "Q", "response": "B", "helpfulness": 0}]
    spec = DataSpec(str(write_jsonl(tmp_path / "r.jsonl", rows)), format="ratings",
                    options={"scales": {"helpfulness": [0, 4]}})
    loaded = load_run_data([], [spec], dedup=True)
    assert [(r.response, r.ratings["helpfulness"]) for r in loaded.ratings] == [("A", 1.0), ("B", 0.0)]
    assert next(r for r in loaded.reports if r["kind"] == "ratings")["skipped"] == {DUPLICATE_RATED: 1}


def test_ranked_list_links_are_not_deduplicated(tmp_path):
    rows = [{"prompt": "Q", "response": text, "helpfulness": score} for text, score in (("A", 4), ("B", 2), ("C", 0))]
    path = str(write_jsonl(tmp_path / "r.jsonl", rows))
    options = {"scales": {"helpfulness": [0, 4]}}
    lists = DataSpec(path, format="ratings", options=options, ranking={"into": "list"})
    loaded = load_run_data([lists, lists], [], dedup=True)  # the same list twice: both kept whole
    assert len(loaded.pairs) == 4 and all(p.list_link is not None for p in loaded.pairs)


def test_exclude_prompts_of_drops_every_record_whose_prompt_a_benchmark_has(tmp_path, shared_data):
    bench = shared_data / "eval/reward-bench/filtered-first500.jsonl"
    first = json.loads(bench.read_text().splitlines()[0])
    pairs = write_jsonl(tmp_path / "p.jsonl", [
        {"prompt": first["prompt"] + "  ", "chosen": "x", "rejected": "y"},  # a dev prompt, extra spaces
        {"prompt": "Something else", "chosen": "x", "rejected": "y"},
    ])
    ratings = write_jsonl(tmp_path / "r.jsonl", [{"prompt": first["prompt"].upper(), "response": "z", "helpfulness": 1}])
    loaded = load_run_data([DataSpec(str(pairs), format="pairs")],
                           [DataSpec(str(ratings), format="ratings", options={"scales": {"helpfulness": [0, 4]}})],
                           exclude_prompts_of=[DataSpec(str(bench), format="reward-bench")])
    assert [p.prompt[-1]["content"] for p in loaded.pairs] == ["Something else"] and loaded.ratings == []
    assert next(r for r in loaded.reports if r["kind"] == "pairs")["skipped"] == {EXCLUDED_PROMPT: 1}
    assert next(r for r in loaded.reports if r["kind"] == "ratings")["skipped"] == {EXCLUDED_PROMPT: 1}
    note = next(r for r in loaded.reports if r["kind"] == "note")["notes"][0]
    assert note.startswith("data.exclude_prompts_of: ") and "filtered-first500.jsonl" in note


def test_run_config_reads_data_through_every_option(tmp_path):
    pairs = write_jsonl(tmp_path / "p.jsonl", [{"prompt": "Q", "chosen": "x", "rejected": "y"}] * 3)
    config = RunConfig.model_validate({
        "model": {"heads": {"single": {}}}, "losses": [{"name": "bt"}],
        "data": {"pairs": [{"path": str(pairs), "format": "pairs"}], "dedup": True}})
    assert len(config.data.load().pairs) == 1


def test_length_balance_keeps_as_many_longer_chosen_as_shorter_chosen_per_source(tmp_path):
    from smorm.data.run_data import LENGTH_BALANCE_DROP

    rows = ([{"prompt": f"q{i}", "chosen": "x" * (10 + i), "rejected": "y"} for i in range(6)]      # chosen longer
            + [{"prompt": f"r{i}", "chosen": "x", "rejected": "y" * (5 + i)} for i in range(2)]      # chosen shorter
            + [{"prompt": "t", "chosen": "ab", "rejected": "cd"}])                                   # equal: kept
    spec = DataSpec(str(write_jsonl(tmp_path / "p.jsonl", rows)), format="pairs")
    loaded = load_run_data([spec], [], length_balance=True)
    longer = [p for p in loaded.pairs if len(p.chosen) > len(p.rejected)]
    shorter = [p for p in loaded.pairs if len(p.chosen) < len(p.rejected)]
    assert (len(longer), len(shorter), len(loaded.pairs)) == (2, 2, 5)
    report = next(r for r in loaded.reports if r["kind"] == "pairs")
    assert (report["kept"], report["skipped"]) == (5, {LENGTH_BALANCE_DROP: 4})
    again = load_run_data([spec], [], length_balance=True)
    assert [p.prompt for p in again.pairs] == [p.prompt for p in loaded.pairs]  # seeded: the same sample
    assert [p.prompt[-1]["content"] for p in loaded.pairs][-1] == "t"  # file order kept
