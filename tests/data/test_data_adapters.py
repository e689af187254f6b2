"""Every adapter on the real shared files, in their original formats.

Expected counts were found by reading the raw files; fields are checked against the raw JSON read
here with the standard library, never through the code under test.
"""

from __future__ import annotations

import gzip
import json
from pathlib import Path

import pytest

from smorm.data import (
    DataError,
    DataSpec,
    detect_format,
    load_mt_bench_answers,
    load_pairs,
    load_prompt_records,
    load_prompts,
    load_ranked,
    load_ratings,
    load_rmbench,
)


def raw_line(path: Path, number: int) -> dict:
    opener = gzip.open if path.suffix == ".gz" else open
    with opener(path, "rt", encoding="utf-8") as handle:
        for i, line in enumerate(handle, start=1):
            if i == number:
                return json.loads(line)
    raise AssertionError(f"{path} has no line {number}")


def by_line(records: list, path: Path, number: int):
    return next(r for r in records if r.origin == f"{path}:{number}")


@pytest.mark.parametrize(
    ("relative", "expected"),
    [
        ("pairs/hh-rlhf/helpful-base-train-sample.jsonl", "hh"),
        ("pairs/hh-rlhf/harmless-base-test.jsonl.gz", "hh"),
        ("pairs/hh-rlhf/full-hh-rlhf-sample.jsonl", "full-hh"),
        ("pairs/ultrafeedback/binarized-train-1k.jsonl", "ultrafeedback"),
        ("pairs/ultrafeedback/argilla-1k.jsonl", "argilla-ultrafeedback"),
        ("pairs/chatbot-arena/arena-human-preference-55k-sample.jsonl", "arena"),
        ("pairs/pku-saferlhf/pku-saferlhf-sample.jsonl", "pku"),
        ("pairs/stack-exchange/stack-exchange-preferences-sample.jsonl", "stack-exchange"),
        ("pairs/rmb/Pairwise_set", "rmb"),
        ("ratings/helpsteer/helpsteer2-train-first100.jsonl", "helpsteer"),
        ("ratings/prometheus/vicuna_eval.json", "prometheus"),
        ("ratings/autoj/single_traindata.jsonl", "autoj"),
        ("ratings/arena-bench-v1/model_judgment", "arena-bench"),
        ("eval/rm-bench/chat_filtered.json", "rm-bench"),
        ("eval/reward-bench/filtered-first500.jsonl", "reward-bench"),
        ("eval/mt-bench/question.jsonl", "mt-bench"),
    ],
)
def test_auto_detects_every_shared_format(shared_data, relative, expected):
    assert detect_format(str(shared_data / relative)).name == expected


def test_auto_detection_failure_lists_formats(tmp_path):
    path = tmp_path / "odd.jsonl"
    path.write_text('{"foo": 1, "bar": 2}\n')
    with pytest.raises(DataError) as info:
        load_pairs(str(path))
    message = str(info.value)
    assert message.startswith(f"{path}:1: cannot detect the data format from fields [bar, foo]")
    for name in ("hh (", "pairs (", "helpsteer (", "rm-bench ("):
        assert name in message


def test_hh_transcripts_become_chat_messages(shared_data):
    path = shared_data / "pairs/hh-rlhf/helpful-base-train-sample.jsonl"
    pairs, report = load_pairs(str(path), on_error="skip")
    assert (report.read, report.kept, report.skipped) == (500, 499, {"empty text (rejected)": 1})
    first = pairs[0]
    assert first.prompt == [
        {"role": "user", "content": "Hi, I want to learn to play horseshoes. Can you teach me?"},
        {
            "role": "assistant",
            "content": "I can, but maybe I should begin by telling you that a typical game consists of 2 players and 6 or 8 horseshoes.",
        },
        {"role": "user", "content": "Okay. What else is needed to play, and what are the rules?"},
    ]
    raw = raw_line(path, 1)
    assert raw["chosen"].endswith("\n\nAssistant: " + first.chosen)
    assert raw["rejected"].endswith("\n\nAssistant: " + first.rejected)
    assert first.origin == f"{path}:1" and first.source == "helpful-base-train-sample"


def test_hh_empty_reply_is_an_error_by_default(shared_data):
    path = shared_data / "pairs/hh-rlhf/helpful-base-train-sample.jsonl"
    assert raw_line(path, 248)["rejected"].endswith("\n\nAssistant: ")  # nothing after the marker
    with pytest.raises(DataError, match=rf"^{path}:248: field 'rejected': empty text$"):
        load_pairs(str(path))


def test_hh_gzip_test_split(shared_data):
    pairs, report = load_pairs(
        str(shared_data / "pairs/hh-rlhf/harmless-base-test.jsonl.gz"), on_error="skip"
    )
    assert (report.read, report.kept, report.skipped) == (2312, 2308, {"empty text (chosen)": 4})
    assert "prompts with consecutive same-role turns merged: 4" in report.notes


def test_full_hh(shared_data):
    path = shared_data / "pairs/hh-rlhf/full-hh-rlhf-sample.jsonl"
    pairs, report = load_pairs(str(path), on_error="skip")
    # line 375 has rejected " "; four rows repeat the chosen reply as the rejected one.
    assert report.skipped == {"empty text (rejected)": 1, "identical chosen and rejected": 4}
    assert report.kept == 495
    assert pairs[0].prompt[0] == {
        "role": "user",
        "content": "Should you buy a case to protect your cell phone?",
    }
    assert pairs[0].prompt[-1] == {"role": "user", "content": "Thanks for letting me know."}
    assert pairs[0].chosen == raw_line(path, 1)["chosen"].strip() == "You’re welcome."


def test_ultrafeedback_margin_from_gpt4_scores(shared_data):
    path = shared_data / "pairs/ultrafeedback/binarized-train-1k.jsonl"
    pairs, report = load_pairs(str(path), on_error="skip")
    assert report.skipped == {
        "empty text (chosen)": 1,
        "empty text (rejected)": 2,
        "identical chosen and rejected": 4,
    }
    raw = raw_line(path, 1)
    assert pairs[0].prompt == [{"role": "user", "content": "how to cook t-bone in the oven"}]
    assert pairs[0].margin == raw["metadata"]["score_chosen"] - raw["metadata"]["score_rejected"] == 1.0
    # line 34's rejected reply is a lone zero-width space: empty.
    with pytest.raises(DataError, match=rf"^{path}:34: field 'rejected': empty text$"):
        load_pairs(str(path))
    tie_free, tie_report = load_pairs(DataSpec(str(path), options={"drop_ties": True}), on_error="skip")
    assert tie_report.skipped["equal scores (drop_ties)"] > 0
    assert all(p.margin != 0 for p in tie_free)


def test_ultrafeedback_scores_as_ratings(shared_data):
    ratings, report = load_ratings(str(shared_data / "pairs/ultrafeedback/binarized-eval-200.jsonl"))
    assert report.scales == {"overall": (1.0, 10.0)} and report.kept == 400
    assert ratings[0].ratings == {"overall": pytest.approx((9.0 - 1) / 9)}  # line 1: score_chosen 9
    assert ratings[1].ratings == {"overall": pytest.approx((7.0 - 1) / 9)}  # score_rejected 7


def test_argilla_keeps_true_false_answers_as_text(shared_data):
    path = shared_data / "pairs/ultrafeedback/argilla-1k.jsonl"
    pairs, report = load_pairs(str(path))
    assert report.kept == 999 and report.skipped == {"identical chosen and rejected": 1}
    assert by_line(pairs, path, 168).chosen == "True"  # a real true/false-task answer, a string
    assert pairs[0].margin == 5.0 - 4.5


def test_arena_drops_ties_and_finds_nulls(shared_data):
    path = shared_data / "pairs/chatbot-arena/arena-human-preference-55k-sample.jsonl"
    pairs, report = load_pairs(str(path), on_error="skip")
    assert report.skipped == {"tie": 150, "missing (response_a[1])": 1, "missing (response_a[6])": 1}
    assert report.kept == 348
    with pytest.raises(DataError, match=rf"^{path}:208: field 'response_a\[1\]': expected text, got null$"):
        load_pairs(str(path))
    raw = raw_line(path, 1)  # two turns, model a won
    questions, answers_a, answers_b = (json.loads(raw[k]) for k in ("prompt", "response_a", "response_b"))
    first = pairs[0]
    assert first.prompt == [
        {"role": "user", "content": questions[0]},
        {"role": "assistant", "content": answers_a[0]},
        {"role": "user", "content": questions[1]},
    ]
    assert (first.chosen, first.rejected) == (answers_a[1], answers_b[1])
    first_turn, _ = load_pairs(DataSpec(str(path), options={"multi_turn": "first"}), on_error="skip")
    assert first_turn[0].prompt == [{"role": "user", "content": questions[0]}]
    assert first_turn[0].chosen == answers_a[0]
    rows = [json.loads(line) for line in path.open(encoding="utf-8")]
    multi_turn_decided = sum(1 for r in rows if len(json.loads(r["prompt"])) > 1 and r["winner_tie"] == 0)
    _, dropped = load_pairs(DataSpec(str(path), options={"multi_turn": "drop"}), on_error="skip")
    assert dropped.skipped == {"tie": 150, "multi-turn (multi_turn=drop)": multi_turn_decided}


def test_pku_views_and_safety_ratings(shared_data):
    path = shared_data / "pairs/pku-saferlhf/pku-saferlhf-sample.jsonl"
    raw = raw_line(path, 1)  # better_response_id 0, safer_response_id 1
    better, _ = load_pairs(str(path))
    safer, _ = load_pairs(DataSpec(str(path), options={"view": "safer"}))
    assert (better[0].chosen, better[0].rejected) == (raw["response_0"], raw["response_1"])
    assert (safer[0].chosen, safer[0].rejected) == (raw["response_1"], raw["response_0"])
    ratings, report = load_ratings(str(path))
    assert report.kept == 1000 and report.scales == {"safe": (0.0, 1.0), "harmlessness": (0.0, 3.0)}
    # line 3: response_0 unsafe with severity 3, response_1 unsafe with severity 2.
    row3 = [r for r in ratings if r.origin == f"{path}:3"]
    assert [r.ratings for r in row3] == [
        {"safe": 0.0, "harmlessness": 0.0},
        {"safe": 0.0, "harmlessness": pytest.approx(1 / 3)},
    ]
    assert ratings[0].ratings == {"safe": 1.0, "harmlessness": 1.0}


def test_stack_exchange_pairs_and_ranking(shared_data):
    path = shared_data / "pairs/stack-exchange/stack-exchange-preferences-sample.jsonl"
    raw_rows = [json.loads(line) for line in path.open(encoding="utf-8")]
    pairs, report = load_pairs(str(path))
    assert report.skipped == {"answers have equal scores": 35} and report.kept == 465
    answers = raw_rows[0]["answers"]  # pm_scores 2, 2, 4
    assert (pairs[0].chosen, pairs[0].rejected, pairs[0].margin) == (
        answers[2]["text"],
        answers[0]["text"],
        2.0,
    )
    all_pairs, _ = load_pairs(DataSpec(str(path), options={"pairs": "all"}))
    expected = sum(
        1 for row in raw_rows for a in row["answers"] for b in row["answers"] if a["pm_score"] > b["pm_score"]
    )
    assert len(all_pairs) == expected
    ranked, _ = load_ranked(str(path))
    assert len(ranked) == 500 and ranked[0].scores == [2.0, 2.0, 4.0]


def test_rmb_folder_is_read_recursively(shared_data):
    root = shared_data / "pairs/rmb/Pairwise_set"
    files = sorted(root.rglob("*.json.gz"))
    total = sum(len(json.load(gzip.open(f, "rt", encoding="utf-8"))) for f in files)
    pairs, report = load_pairs(str(root), on_error="skip")
    assert report.read == total == 14543
    assert report.skipped == {"empty text (reject.answer)": 5, "identical chosen and rejected": 11}
    assert {p.origin.rsplit(":", 1)[0] for p in pairs} == {str(f) for f in files}
    first_file = json.load(gzip.open(files[0], "rt", encoding="utf-8"))
    first = pairs[0]
    assert first.subset == first_file[0]["category_path"]
    assert first.chosen == first_file[0]["chosen"]["answer"]
    assert first.prompt == [
        {"role": m["role"], "content": m["content"]} for m in first_file[0]["conversation_input"]
    ]


def test_helpsteer_rescaled_from_0_4(shared_data):
    path = shared_data / "ratings/helpsteer/helpsteer-train-first500.jsonl"
    ratings, report = load_ratings(str(path))
    assert report.kept == 500
    raw = raw_line(path, 1)  # helpfulness 3, correctness 4, coherence 4, complexity 2, verbosity 2
    assert ratings[0].ratings == {
        "helpfulness": 0.75,
        "correctness": 1.0,
        "coherence": 1.0,
        "complexity": 0.5,
        "verbosity": 0.5,
    }
    assert ratings[0].response == raw["response"]
    hs2, report2 = load_ratings(str(shared_data / "ratings/helpsteer/helpsteer2-train-first100.jsonl"))
    assert report2.kept == 100 and hs2[0].prompt == [{"role": "user", "content": "c#"}]


def test_prometheus_parses_rubric_prompts(shared_data):
    mt, report = load_ratings(str(shared_data / "ratings/prometheus/mt_bench_eval.json"))
    assert report.kept == 320 and report.scales == {"overall": (1.0, 5.0)}
    first = mt[0]  # gpt4_score [3, 2, 3]: mean 8/3 on 1..5
    assert first.ratings == {"overall": pytest.approx((8 / 3 - 1) / 4)}
    assert [m["role"] for m in first.prompt] == ["user", "assistant", "user"]
    assert first.prompt[0]["content"].startswith(
        "Imagine you are writing a blog post comparing two popular smartphone models."
    )
    assert first.prompt[2]["content"] == "Take your previous response and rephrase it as a limerick."
    assert first.response.startswith("Sure, here's a limerick comparing two smartphone models:")
    assert first.response.endswith("But one was a better buy, so fine.")
    assert first.meta["rubric"].startswith("[Does the response properly address")
    vicuna, _ = load_ratings(str(shared_data / "ratings/prometheus/vicuna_eval.json"))
    assert vicuna[0].prompt == [{"role": "user", "content": "How can I improve my time management skills?"}]
    assert vicuna[0].ratings == {"overall": 1.0}  # [5, 5, 5]


def test_autoj_parses_query_and_response(shared_data):
    path = shared_data / "ratings/autoj/single_traindata.jsonl"
    ratings, report = load_ratings(str(path), on_error="skip")
    assert (report.read, report.kept) == (960, 959)
    assert report.skipped == {"empty text (usrmsg (response))": 1}  # line 301 has an empty response
    assert ratings[0].prompt == [
        {
            "role": "user",
            "content": "Evaluate the efficiency of the popular programming languages you have got to know.",
        }
    ]
    assert ratings[0].response.startswith("As an AI language model, I do not have personal opinions")
    assert ratings[0].ratings == {"overall": pytest.approx((3 - 1) / 9)}
    assert ratings[0].meta["scenario"] == "default"


def test_rm_bench_domains_from_file_names(shared_data):
    items, report = load_rmbench(str(shared_data / "eval/rm-bench"))
    assert report.kept == 129 + 157
    domains = [item.domain for item in items]
    assert domains.count("chat") == 129 and domains.count("safety-response") == 157
    raw = json.load(open(shared_data / "eval/rm-bench/chat_filtered.json", encoding="utf-8"))[0]
    chat = next(i for i in items if i.domain == "chat")
    assert chat.prompt == [{"role": "user", "content": raw["prompt"]}]
    assert (chat.chosen, chat.rejected) == (raw["chosen"], raw["rejected"])
    assert chat.meta["id"] == raw["id"] and chat.origin.endswith("chat_filtered.json:2")
    with pytest.raises(DataError, match="gives rmbench"):
        load_pairs(DataSpec(str(shared_data / "eval/rm-bench"), format="rm-bench"))


def test_reward_bench_subsets(shared_data):
    path = shared_data / "eval/reward-bench/filtered-first500.jsonl"
    pairs, report = load_pairs(str(path))
    raw_subsets = [json.loads(line)["subset"] for line in path.open(encoding="utf-8")]
    assert [p.subset for p in pairs] == raw_subsets
    assert by_line(pairs, path, 481).chosen == "5"  # a bare-looking number that is text


def test_mt_bench_questions_and_reference_answers(shared_data):
    records, report = load_prompt_records(str(shared_data / "eval/mt-bench/question.jsonl"))
    assert report.kept == 80
    assert records[0].category == "writing" and records[0].meta["question_id"] == 81
    assert records[0].prompt == [{"role": "user", "content": records[0].meta["turns"][0]}]
    prompts = load_prompts(str(shared_data / "eval/mt-bench/question.jsonl"))
    assert prompts[0][0]["content"].startswith(
        "Compose an engaging travel blog post about a recent trip to Hawaii"
    )
    answers = load_mt_bench_answers(shared_data / "eval/mt-bench/reference_answer_gpt-4.jsonl")
    assert len(answers) == 30 and answers[101][0].startswith("If you have just overtaken the second person")


def test_prompts_from_a_pairs_file_are_distinct(shared_data):
    path = shared_data / "eval/reward-bench/filtered-first500.jsonl"
    distinct = {json.loads(line)["prompt"] for line in path.open(encoding="utf-8")}
    records, _ = load_prompt_records(str(path))
    assert len(records) == len(distinct)
    assert records[0].category == "alpacaeval-easy"


def test_bad_adapter_option_value_names_the_choices(shared_data):
    spec = DataSpec(
        str(shared_data / "pairs/pku-saferlhf/pku-saferlhf-sample.jsonl"), options={"view": "worst"}
    )
    with pytest.raises(
        DataError,
        match=r"pku-saferlhf-sample\.jsonl: option 'view' must be one of 'better', 'safer', got 'worst'",
    ):
        load_pairs(spec)
