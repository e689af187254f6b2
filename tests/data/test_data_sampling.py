"""DataSpec.sample: a seeded random N of the valid records, chosen by content, not by position."""

from __future__ import annotations

import json
import random

import pytest

from smorm.data import DataSpec, load_pairs, load_ratings
from smorm.data.sampling import seeded_sample

N = 200


def write_pairs(path, indices: list[int], broken_every: int = 0) -> str:
    lines = []
    for i in indices:
        if broken_every and i % broken_every == 0:
            lines.append(json.dumps({"prompt": f"q{i}", "chosen": f"a{i}"}))  # no rejected: invalid
        else:
            lines.append(json.dumps({"prompt": f"q{i}", "chosen": f"good {i}", "rejected": f"bad {i}"}))
    path.write_text("\n".join(lines) + "\n")
    return str(path)


def numbers(pairs) -> list[int]:
    return [int(p.prompt[0]["content"][1:]) for p in pairs]


def sampled(path: str, size: int, seed: int, **spec) -> list[int]:
    pairs, _ = load_pairs(DataSpec(path=path, format="pairs", sample=size, seed=seed, **spec))
    return numbers(pairs)


def test_same_seed_same_records_different_seed_different_records(tmp_path):
    path = write_pairs(tmp_path / "p.jsonl", list(range(N)))
    first = sampled(path, 20, seed=0)
    assert len(first) == 20 == len(set(first))
    assert sampled(path, 20, seed=0) == first
    assert sampled(path, 20, seed=1) != first
    assert set(sampled(path, 20, seed=1)) != set(first)


def test_records_are_spread_over_the_file_and_kept_in_file_order(tmp_path):
    path = write_pairs(tmp_path / "p.jsonl", list(range(N)))
    chosen = sampled(path, 40, seed=3)
    assert chosen == sorted(chosen)
    assert chosen != list(range(40))  # not the first N
    # a uniform 40 of 200 lands in each half; all 40 in one half has probability ~2e-13
    assert any(i < N // 2 for i in chosen) and any(i >= N // 2 for i in chosen)


def test_the_choice_does_not_depend_on_file_order(tmp_path):
    in_order = write_pairs(tmp_path / "a.jsonl", list(range(N)))
    shuffled_indices = list(range(N))
    random.Random(7).shuffle(shuffled_indices)
    shuffled = write_pairs(tmp_path / "b.jsonl", shuffled_indices)
    for seed in (0, 5):
        assert set(sampled(in_order, 30, seed)) == set(sampled(shuffled, 30, seed))
    # and the shuffled file's sample comes back in that file's order
    position = {value: k for k, value in enumerate(shuffled_indices)}
    assert [position[i] for i in sampled(shuffled, 30, 0)] == sorted(position[i] for i in sampled(shuffled, 30, 0))


def test_only_valid_records_are_sampled(tmp_path):
    path = write_pairs(tmp_path / "p.jsonl", list(range(N)), broken_every=3)  # 67 invalid, 133 valid
    pairs, report = load_pairs(DataSpec(path=path, format="pairs", sample=50, on_error="skip"))
    assert len(pairs) == 50 and all(i % 3 for i in numbers(pairs))
    assert report.skipped == {"missing field (rejected)": 67} and report.read == N
    assert any("seeded sample (seed 0) of 50 of 133 valid records" in note for note in report.notes)


def test_a_sample_larger_than_the_data_keeps_everything_with_a_note(tmp_path):
    path = write_pairs(tmp_path / "p.jsonl", list(range(12)))
    pairs, report = load_pairs(DataSpec(path=path, format="pairs", sample=500))
    assert numbers(pairs) == list(range(12))
    assert "sample of 500 asked for, 12 valid records: all kept" in report.notes


def test_limit_and_sample_together_sample_the_first_limit(tmp_path):
    path = write_pairs(tmp_path / "p.jsonl", list(range(N)))
    chosen = sampled(path, 10, seed=0, limit=50)
    assert len(chosen) == 10 and max(chosen) < 50
    assert chosen == numbers(seeded_sample(load_pairs(DataSpec(path=path, format="pairs", limit=50))[0], 10, 0))


def test_ratings_are_sampled_before_observed_scales_are_taken(tmp_path):
    path = tmp_path / "r.jsonl"
    path.write_text("".join(json.dumps({"prompt": f"q{i}", "response": f"r{i}", "quality": i}) + "\n"
                            for i in range(N)))
    records, report = load_ratings(DataSpec(path=str(path), format="ratings", sample=25, seed=2))
    raw = [int(r.response[1:]) for r in records]
    assert len(raw) == 25 and raw == sorted(raw)
    assert report.scales["quality"] == (min(raw), max(raw))  # observed on the sample
    assert [r.ratings["quality"] for r in records] == pytest.approx(
        [(v - min(raw)) / (max(raw) - min(raw)) for v in raw])


def test_seeded_sample_ignores_where_a_record_came_from():
    from smorm.types import PreferencePair

    prompt = [{"role": "user", "content": "q"}]
    records = [PreferencePair(prompt, f"c{i}", "r", origin=f"a.jsonl:{i}", source="a") for i in range(30)]
    moved = [PreferencePair(prompt, f"c{i}", "r", origin=f"b.jsonl:{i + 99}", source="b") for i in range(30)]
    assert [r.chosen for r in seeded_sample(records, 7, 4)] == [r.chosen for r in seeded_sample(moved, 7, 4)]


def test_negative_sample_is_refused():
    with pytest.raises(ValueError, match="DataSpec.sample must be >= 0"):
        DataSpec(path="x.jsonl", sample=-1)


def test_prompt_sets_sample_distinct_prompts(tmp_path):
    from smorm.data import load_prompt_records

    path = write_pairs(tmp_path / "p.jsonl", [i // 2 for i in range(N)])  # every prompt twice
    spec = DataSpec(path=path, format="pairs", sample=15, seed=1)
    prompts, report = load_prompt_records(spec)
    texts = [p.prompt[0]["content"] for p in prompts]
    assert len(texts) == 15 == len(set(texts)) and texts == sorted(texts, key=lambda t: int(t[1:]))
    assert [p.prompt[0]["content"] for p in load_prompt_records(spec)[0]] == texts
    assert any("of 15 of 100 distinct prompts" in note for note in report.notes)
