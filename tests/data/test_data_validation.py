"""Validation while loading (file:line:field errors, skip policy, limits), rescaling, options, transcripts."""

from __future__ import annotations

import json

import pytest

from smorm.data import DataError, DataSpec, as_spec, collate_ratings, load_pairs, load_ranked, load_ratings
from smorm.data.errors import FieldError
from smorm.data.messages import parse_helpsteer2_prompt, parse_hh_transcript, split_hh_pair


def jsonl(tmp_path, name: str, lines: list[str]) -> str:
    path = tmp_path / name
    path.write_text("\n".join(lines) + "\n", encoding="utf-8")
    return str(path)


GOOD = json.dumps({"prompt": "q", "chosen": "good answer", "rejected": "bad answer"})


def error_of(call) -> str:
    with pytest.raises(DataError) as info:
        call()
    return str(info.value)


def test_bare_boolean_where_text_belongs(tmp_path):
    path = jsonl(tmp_path, "bool.jsonl", [GOOD, '{"prompt": "Is 2 even?", "chosen": true, "rejected": "no"}'])
    assert (
        error_of(lambda: load_pairs(path))
        == f"{path}:2: field 'chosen': expected text, got a bare boolean True"
    )


def test_number_and_null_where_text_belongs(tmp_path):
    path = jsonl(tmp_path, "num.jsonl", ['{"prompt": "2+2?", "chosen": 4, "rejected": "5"}'])
    assert error_of(lambda: load_pairs(path)) == f"{path}:1: field 'chosen': expected text, got a number 4"
    path = jsonl(tmp_path, "null.jsonl", ['{"prompt": "q", "chosen": "a", "rejected": null}'])
    assert error_of(lambda: load_pairs(path)) == f"{path}:1: field 'rejected': expected text, got null"


def test_missing_field(tmp_path):
    path = jsonl(tmp_path, "missing.jsonl", [GOOD, GOOD, '{"prompt": "q", "chosen": "a"}'])
    assert (
        error_of(lambda: load_pairs(DataSpec(path, format="pairs"))) == f"{path}:3: field 'rejected': missing"
    )


def test_empty_and_invisible_responses(tmp_path):
    path = jsonl(
        tmp_path,
        "empty.jsonl",
        [
            '{"prompt": "q", "chosen": "  \\n ", "rejected": "b"}',
            '{"prompt": "q", "chosen": "a", "rejected": "\\u200b"}',
        ],
    )
    assert error_of(lambda: load_pairs(path)) == f"{path}:1: field 'chosen': empty text"
    _, report = load_pairs(path, on_error="skip")
    assert report.skipped == {"empty text (chosen)": 1, "empty text (rejected)": 1} and report.kept == 0


def test_nan_and_inf_ratings(tmp_path):
    nan = jsonl(
        tmp_path,
        "nan.jsonl",
        [
            '{"prompt": "q", "response": "r", "helpfulness": 3}',
            '{"prompt": "q", "response": "r", "helpfulness": NaN}',
        ],
    )
    assert error_of(lambda: load_ratings(nan)) == f"{nan}:2: field 'helpfulness': nan is not a finite number"
    inf = jsonl(tmp_path, "inf.jsonl", ['{"prompt": "q", "response": "r", "score": Infinity}'])
    assert (
        error_of(lambda: load_ratings(DataSpec(inf, format="ratings")))
        == f"{inf}:1: field 'score': inf is not a finite number"
    )
    margin = jsonl(
        tmp_path, "margin.jsonl", ['{"prompt": "q", "chosen": "a", "rejected": "b", "margin": NaN}']
    )
    assert error_of(lambda: load_pairs(margin)) == f"{margin}:1: field 'margin': nan is not a finite number"


def test_rating_outside_its_declared_scale(tmp_path):
    path = jsonl(
        tmp_path, "hs.jsonl", ['{"prompt": "q", "response": "r", "helpfulness": 5, "correctness": 4}']
    )
    assert (
        error_of(lambda: load_ratings(DataSpec(path, format="helpsteer")))
        == f"{path}:1: field 'helpfulness': 5 outside the scale [0, 4]"
    )
    generic = jsonl(tmp_path, "g.jsonl", ['{"prompt": "q", "response": "r", "score": 8}'])
    spec = DataSpec(generic, format="ratings", options={"scales": {"score": [1, 7]}})
    assert error_of(lambda: load_ratings(spec)) == f"{generic}:1: field 'score': 8 outside the scale [1, 7]"


def test_skip_policy_counts_each_reason(tmp_path):
    lines = [
        GOOD,
        '{"prompt": "q", "chosen": false, "rejected": "b"}',
        '{"prompt": "q", "chosen": "a"',
        '{"prompt": "q", "chosen": "", "rejected": "b"}',
        '{"prompt": "q", "chosen": "same", "rejected": "same"}',
        '{"prompt": "q", "chosen": "a", "rejected": "b", "margin": "big"}',
        GOOD,
    ]
    path = jsonl(tmp_path, "mixed.jsonl", lines)
    pairs, report = load_pairs(DataSpec(path, format="pairs"), on_error="skip")
    assert [p.origin for p in pairs] == [f"{path}:1", f"{path}:7"]
    assert report.read == 7 and report.kept == 2
    assert report.skipped == {
        "not text (chosen)": 1,
        "malformed record": 1,
        "empty text (chosen)": 1,
        "identical chosen and rejected": 1,
        "not a number (margin)": 1,
    }
    assert (
        error_of(lambda: load_pairs(DataSpec(path, format="pairs")))
        == f"{path}:2: field 'chosen': expected text, got a bare boolean False"
    )


def test_spec_policy_and_limit(tmp_path):
    path = jsonl(tmp_path, "p.jsonl", ['{"prompt": "q", "chosen": "", "rejected": "b"}', GOOD, GOOD, GOOD])
    pairs, report = load_pairs(DataSpec(path, limit=2, on_error="skip"))  # the spec's policy wins
    assert [p.origin for p in pairs] == [f"{path}:2", f"{path}:3"]
    assert report.read == 3 and report.skipped == {"empty text (chosen)": 1}


def test_rescaling_with_given_and_observed_scales(tmp_path):
    rows = [
        {"prompt": "q", "response": "r1", "score": 4, "stars": 2, "id": 7},
        {"prompt": "q", "response": "r2", "score": 1, "stars": 10},
        {"prompt": "q", "response": "r3", "score": 7, "stars": 4},
    ]
    path = jsonl(tmp_path, "r.jsonl", [json.dumps(r) for r in rows])
    ratings, report = load_ratings(DataSpec(path, format="ratings", options={"scales": {"score": [1, 7]}}))
    # score on the given scale [1, 7]: (4-1)/6, (1-1)/6, (7-1)/6; stars on the observed [2, 10]: (v-2)/8.
    assert [r.ratings for r in ratings] == [
        {"score": 0.5, "stars": 0.0},
        {"score": 0.0, "stars": 1.0},
        {"score": 1.0, "stars": 0.25},
    ]
    assert report.scales == {"score": (1.0, 7.0), "stars": (2.0, 10.0)}
    assert "scale of 'stars' observed in the loaded records: [2, 10]" in report.notes


def test_rating_scale_raw_keeps_the_ratings_as_given(tmp_path):
    rows = [
        {"prompt": "q", "response": "r1", "score": 4, "stars": 2},
        {"prompt": "q", "response": "r2", "score": 1, "stars": 2},  # stars: one observed value, fine when raw
    ]
    path = jsonl(tmp_path, "r.jsonl", [json.dumps(r) for r in rows])
    spec = DataSpec(path, format="ratings", options={"scales": {"score": [1, 7]}})
    ratings, report = load_ratings(spec, rating_scale="raw")
    assert [r.ratings for r in ratings] == [{"score": 4.0, "stars": 2.0}, {"score": 1.0, "stars": 2.0}]
    assert report.scales == {} and "ratings kept on their raw scale (rating_scale: raw)" in report.notes
    # the default, unit: score (4-1)/6 = 0.5, (1-1)/6 = 0; stars cannot be rescaled from a single value
    with pytest.raises(DataError, match="single observed value 2"):
        load_ratings(spec)
    one = jsonl(tmp_path, "one.jsonl", [json.dumps({"prompt": "q", "response": "r", "score": 4})])
    assert load_ratings(DataSpec(one, format="ratings", options={"scales": {"score": [1, 7]}}))[0][0].ratings == {
        "score": 0.5}
    # a declared scale is still checked when raw
    bad = jsonl(tmp_path, "bad.jsonl", [json.dumps({"prompt": "q", "response": "r", "score": 9})])
    with pytest.raises(DataError, match="outside the scale"):
        load_ratings(DataSpec(bad, format="ratings", options={"scales": {"score": [1, 7]}}), rating_scale="raw")
    with pytest.raises(ValueError, match="rating_scale must be one of"):
        load_ratings(spec, rating_scale="minmax")


def test_missing_attribute_is_absent_then_masked(tmp_path):
    rows = [
        {"prompt": "q", "response": "a", "helpfulness": 4, "verbosity": None},
        {"prompt": "q", "response": "b", "verbosity": 2},
    ]
    path = jsonl(tmp_path, "hs.jsonl", [json.dumps(r) for r in rows])
    ratings, _ = load_ratings(DataSpec(path, format="helpsteer"))
    assert [r.ratings for r in ratings] == [{"helpfulness": 1.0}, {"verbosity": 0.5}]
    batch = collate_ratings(
        [[1, 2], [3]], [r.ratings for r in ratings], ["helpfulness", "verbosity"], pad_id=0
    )
    assert batch.rating_mask.tolist() == [[True, False], [False, True]]
    assert batch.ratings.tolist() == [[1.0, 0.0], [0.0, 0.5]]


def test_csv_ratings_empty_cell_is_missing_and_text_is_not_a_rating(tmp_path):
    path = tmp_path / "r.csv"
    path.write_text(
        "prompt,response,helpful,safe,note\nq,True,3,,fine\nq,an answer,1,1,ok\n", encoding="utf-8"
    )
    ratings, report = load_ratings(
        DataSpec(str(path), format="ratings", options={"scales": {"helpful": [1, 3], "safe": [0, 1]}})
    )
    assert ratings[0].response == "True"
    assert [r.ratings for r in ratings] == [{"helpful": 1.0}, {"helpful": 0.0, "safe": 1.0}]


def test_rating_field_turning_into_text_is_an_error(tmp_path):
    path = jsonl(
        tmp_path,
        "r.jsonl",
        ['{"prompt": "q", "response": "a", "score": 3}', '{"prompt": "q", "response": "b", "score": "high"}'],
    )
    assert (
        error_of(lambda: load_ratings(DataSpec(path, format="ratings")))
        == f"{path}:2: field 'score': expected a rating, got a str"
    )


def test_single_observed_value_needs_a_scale(tmp_path):
    path = jsonl(tmp_path, "r.jsonl", ['{"prompt": "q", "response": "a", "score": 3}'])
    assert "attribute 'score' has a single observed value 3" in error_of(lambda: load_ratings(path))


def test_rename_attributes_filter_and_listed_booleans(tmp_path):
    path = jsonl(
        tmp_path,
        "r.jsonl",
        ['{"prompt": "q", "response": "a", "helpfulness": 2, "correctness": 4, "is_safe": true}'],
    )
    hs = DataSpec(
        path,
        format="helpsteer",
        options={"rename": {"helpfulness": "helpful"}, "attributes": ["helpfulness"]},
    )
    ratings, report = load_ratings(hs)
    assert ratings[0].ratings == {"helpful": 0.5} and report.scales == {"helpful": (0.0, 4.0)}
    listed = DataSpec(
        path,
        format="ratings",
        options={
            "attributes": ["is_safe", "correctness"],
            "scales": {"is_safe": [0, 1], "correctness": [0, 4]},
        },
    )
    assert load_ratings(listed)[0][0].ratings == {"is_safe": 1.0, "correctness": 1.0}


def test_unknown_option_and_wrong_loader(tmp_path):
    path = jsonl(tmp_path, "p.jsonl", [GOOD])
    assert "unknown option(s) ['view']" in error_of(
        lambda: load_pairs(DataSpec(path, options={"view": "safer"}))
    )
    assert "format 'pairs' gives pairs (load_pairs), not ratings" in error_of(
        lambda: load_ratings(DataSpec(path, format="pairs"))
    )
    assert "unknown data adapter 'hhh'; did you mean 'hh'" in error_of(
        lambda: load_pairs(DataSpec(path, format="hhh"))
    )


def test_generic_pairs_with_conversations(tmp_path):
    implicit = {
        "chosen": [{"role": "user", "content": "hi"}, {"role": "assistant", "content": "hello!"}],
        "rejected": [{"role": "user", "content": "hi"}, {"role": "assistant", "content": "go away"}],
        "source": "mine",
        "subset": "chat",
    }
    diverging = {
        **implicit,
        "rejected": [{"role": "user", "content": "hey"}, {"role": "assistant", "content": "x"}],
    }
    path = jsonl(tmp_path, "c.jsonl", [json.dumps(implicit), json.dumps(diverging)])
    pairs, report = load_pairs(path, on_error="skip")
    assert pairs[0].prompt == [{"role": "user", "content": "hi"}] and pairs[0].chosen == "hello!"
    assert (pairs[0].source, pairs[0].subset) == ("mine", "chat")
    assert report.skipped == {"diverging transcripts (rejected)": 1}


def test_ranked_generic_validates_scores(tmp_path):
    path = jsonl(
        tmp_path,
        "k.jsonl",
        [
            '{"prompt": "q", "responses": ["a", "b"], "scores": [1, 2]}',
            '{"prompt": "q", "responses": ["a", "b"], "scores": [1]}',
        ],
    )
    assert (
        error_of(lambda: load_ranked(path))
        == f"{path}:2: field 'scores': expected a list of 2 numbers, got a list"
    )


def test_as_spec_parses_format_prefixes():
    assert (as_spec("rm-bench:../data").format, as_spec("rm-bench:../data").path) == ("rm-bench", "../data")
    assert as_spec("hf:owner/name:test").path == "hf:owner/name:test"
    assert as_spec("data/x.jsonl").format == "auto"
    assert as_spec("data/my-pairs.jsonl.gz").source == "my-pairs"


def test_hh_transcript_parsing():
    text = "\n\nHuman: Hi there\n\nAssistant: Hello.\n\nAssistant: Anything else?\n\nHuman: Yes: one thing\n\nAssistant:"
    assert parse_hh_transcript(text, "chosen") == [
        {"role": "user", "content": "Hi there"},
        {"role": "assistant", "content": "Hello.\n\nAnything else?"},
        {"role": "user", "content": "Yes: one thing"},
    ]
    prompt, chosen, rejected = split_hh_pair(text + " Sure, go on.", text + " No.")
    assert (prompt, chosen, rejected) == (text, "Sure, go on.", "No.")
    with pytest.raises(FieldError, match="does not start with 'Human:'"):
        parse_hh_transcript("hello\n\nHuman: hi", "chosen")


def test_helpsteer2_multi_turn_prompt():
    text = "first question\n<extra_id_1>Assistant\nfirst answer\n<extra_id_1>User\nsecond question"
    assert parse_helpsteer2_prompt(text) == [
        {"role": "user", "content": "first question"},
        {"role": "assistant", "content": "first answer"},
        {"role": "user", "content": "second question"},
    ]
