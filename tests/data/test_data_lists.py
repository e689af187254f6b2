"""Ranked lists: rated or ranked responses of one prompt read as all pairs or as linked lists.

Expected pairs are worked out by hand for small files written here, and, for the shared files,
counted from the raw JSON with the standard library, never through the code under test.
"""

from __future__ import annotations

import gzip
import json
from collections import defaultdict
from itertools import combinations
from pathlib import Path

import pytest

from smorm.data import DataError, DataSpec, load_pairs, load_ratings
from smorm.data.lists import list_links, prompt_key, ranks_of
from smorm.types import RankedResponses


def write_jsonl(path: Path, rows: list[dict]) -> Path:
    path.write_text("".join(json.dumps(row) + "\n" for row in rows))
    return path


# Prompt "p": four responses; helpfulness a=3, b=1, c=3, d=0; correctness a=0, b=4, c=2, d=2.
RATED = [
    {"prompt": "p", "response": "a", "helpfulness": 3, "correctness": 0},
    {"prompt": "q", "response": "only", "helpfulness": 2, "correctness": 2},
    {"prompt": "p", "response": "b", "helpfulness": 1, "correctness": 4},
    {"prompt": " P\n", "response": "c", "helpfulness": 3, "correctness": 2},  # the same prompt, written loosely
    {"prompt": "p", "response": "d", "helpfulness": 0, "correctness": 2},
    {"prompt": "r", "response": "x", "helpfulness": 1, "correctness": 1},
    {"prompt": "r", "response": "y", "helpfulness": 1, "correctness": 3},
]
SCALES = {"helpfulness": [0, 4], "correctness": [0, 4]}


def rated_spec(tmp_path: Path, **ranking) -> DataSpec:
    path = write_jsonl(tmp_path / "rated.jsonl", RATED)
    return DataSpec(str(path), format="ratings", options={"scales": SCALES}, ranking=ranking)


def test_prompt_key_normalises_whitespace_case_and_unicode_but_keeps_roles():
    assert prompt_key([{"role": "user", "content": "  Hello\n\tWORLD "}]) == "user: hello world"
    assert prompt_key([{"role": "user", "content": "ﬁle"}]) == prompt_key([{"role": "user", "content": "file"}])
    system = [{"role": "system", "content": "hello world"}]
    assert prompt_key(system) != prompt_key([{"role": "user", "content": "hello world"}])


def test_ratings_become_all_pairs_with_distinct_scores(tmp_path):
    pairs, report = load_pairs(rated_spec(tmp_path, score="helpfulness"))
    # p: a=3 b=1 c=3 d=0 -> a>b, a>d, b>d, c>b, c>d (a=c tied); q: one response; r: x=y tied.
    got = [(p.chosen, p.rejected) for p in pairs]
    assert got == [("a", "b"), ("a", "d"), ("b", "d"), ("c", "b"), ("c", "d")]
    assert [p.margin for p in pairs] == pytest.approx([0.5, 0.75, 0.25, 0.5, 0.75])  # gaps on the [0, 1] scale
    assert all(p.list_link is None and p.prompt == [{"role": "user", "content": "p"}] for p in pairs)
    assert report.kept == 5 and report.read == 7
    assert report.skipped == {"lists of a single response": 1, "lists whose responses all score the same": 1}
    assert "tied response pairs left out: 1" in report.notes


def test_a_weighted_score_ranks_by_the_sum(tmp_path):
    pairs, _ = load_pairs(rated_spec(tmp_path, score={"helpfulness": 1.0, "correctness": 1.0}))
    # sums on [0, 1]: a=.75 b=1.25 c=1.25 d=.5; r: x=.5 y=1.0
    got = [(p.chosen, p.rejected) for p in pairs]
    assert got == [("a", "d"), ("b", "a"), ("b", "d"), ("c", "a"), ("c", "d"), ("y", "x")]


def test_max_pairs_per_prompt_keeps_the_widest_gaps(tmp_path):
    pairs, report = load_pairs(rated_spec(tmp_path, score="helpfulness", max_pairs_per_prompt=2))
    assert [(p.chosen, p.rejected) for p in pairs] == [("a", "d"), ("c", "d")]  # gaps 3 and 3 of the 5
    assert "pairs over ranking.max_pairs_per_prompt left out: 3" in report.notes


def test_limit_counts_lists_not_responses(tmp_path):
    spec = rated_spec(tmp_path, score={"helpfulness": 1.0, "correctness": 1.0})
    spec.limit = 1
    pairs, _ = load_pairs(spec)
    assert {p.chosen for p in pairs} == {"a", "b", "c"} and len(pairs) == 5  # the whole list of "p", nothing of "r"


def test_lists_are_carried_by_strict_links_naming_every_response(tmp_path):
    pairs, report = load_pairs(rated_spec(tmp_path, score="helpfulness", into="list"))
    links = [p.list_link for p in pairs]
    assert all(link is not None for link in links)
    # p: items a0 b1 c2 d3, ranks a=0 b=1 c=0 d=2: a->b, b->d, c->b (rank 0 to the first of rank 1), then
    # no further response of the last rank; 4 responses, 3 links.
    assert [(p.chosen, p.rejected) for p in pairs] == [("a", "b"), ("b", "d"), ("c", "b")]
    assert {link.list_id for link in links} == {f"{tmp_path / 'rated.jsonl'}:1"}
    assert [(k.chosen_item, k.rejected_item, k.chosen_rank, k.rejected_rank) for k in links] == [
        (0, 1, 0, 1), (1, 3, 1, 2), (2, 1, 0, 1)]
    assert report.kept == 3


@pytest.mark.parametrize("scores", [[5.0, 3.0, 3.0, 1.0, 1.0], [2.0, 2.0, 1.0], [1.0, 2.0], [4.0, 1.0, 3.0, 2.0]])
def test_list_links_are_n_minus_one_strict_pairs_covering_the_list(scores):
    ranked = RankedResponses([{"role": "user", "content": "p"}], [f"r{i}" for i in range(len(scores))], scores)
    pairs = list_links(ranked, scores, "L")
    assert len(pairs) == len(scores) - 1
    items = set()
    for pair in pairs:
        link = pair.list_link
        assert scores[link.chosen_item] > scores[link.rejected_item]  # a true preference for any pair loss
        assert link.chosen_rank < link.rejected_rank
        assert (pair.chosen, pair.rejected) == (f"r{link.chosen_item}", f"r{link.rejected_item}")
        items |= {link.chosen_item, link.rejected_item}
    assert items == set(range(len(scores)))
    assert ranks_of(scores) == [sorted(set(scores), reverse=True).index(s) for s in scores]


def test_helpsteer2_binarized_by_helpfulness_as_its_paper_does(shared_data):
    path = shared_data / "ratings/helpsteer/helpsteer2-train-first100.jsonl"
    groups: dict[str, list[dict]] = defaultdict(list)
    for line in path.open(encoding="utf-8"):
        row = json.loads(line)
        groups[row["prompt"]].append(row)
    expected = [(a["response"], b["response"]) if a["helpfulness"] > b["helpfulness"] else (b["response"], a["response"])
                for rows in groups.values() for a, b in combinations(rows, 2) if a["helpfulness"] != b["helpfulness"]]
    pairs, report = load_pairs(DataSpec(str(path), format="helpsteer", ranking={}))  # default score: helpfulness
    assert [(p.chosen, p.rejected) for p in pairs] == expected
    assert len(pairs) == 29 and report.skipped == {"lists whose responses all score the same": 21}


def test_stack_exchange_ranked_as_pairs_gives_the_all_pairs_option(shared_data):
    path = str(shared_data / "pairs/stack-exchange/stack-exchange-preferences-sample.jsonl")
    option, _ = load_pairs(DataSpec(path, options={"pairs": "all"}))
    ranked, _ = load_pairs(DataSpec(path, ranking={"into": "pairs"}))
    assert [(p.chosen, p.rejected, p.margin) for p in ranked] == [(p.chosen, p.rejected, p.margin) for p in option]
    lists, report = load_pairs(DataSpec(path, ranking={"into": "list"}))
    assert len(lists) == 1039 and "465 lists of 1504 responses give 1039 pairs" in report.notes[-1]


def test_arena_bench_judgments_are_gpt4_ratings_of_the_judged_text(shared_data):
    folder = shared_data / "ratings/arena-bench-v1"
    rated, report = load_ratings(DataSpec(str(folder / "model_judgment"), on_error="skip"))
    assert report.format == "arena-bench" and report.read == 4500 and report.kept == 4162
    assert report.skipped == {"llama-13b judge (judges: all keeps it)": 300, "no score (the judge gave none)": 37,
                              "empty text (user_prompt (answer))": 1}
    assert report.scales == {"overall": (1.0, 10.0)}
    # The text comes from the judge prompt: for Llama-2-70b-chat it is not the file in model_answer/.
    answers = {json.loads(line)["question_id"]: json.loads(line)["choices"][0]["turns"][0]
               for line in gzip.open(folder / "model_answer/Llama-2-70b-chat.jsonl.gz", "rt")}
    start, end = "[The Start of Assistant's Answer]\n", "\n[The End of Assistant's Answer]"
    differing = []
    for line in gzip.open(folder / "model_judgment/Llama-2-70b-chat.jsonl.gz", "rt"):
        row = json.loads(line)
        text = row["user_prompt"].split(start, 1)[1].rsplit(end, 1)[0]
        if text.strip() != answers[row["question_id"]].strip():
            differing.append((row, text))
    assert len(differing) == 195
    judged, text = next((row, text) for row, text in differing if row["score"] is not None)
    record = next(r for r in rated if r.meta == {"question_id": judged["question_id"], "model": "Llama-2-70b-chat"})
    assert record.response == text
    assert record.ratings["overall"] == pytest.approx((judged["score"] - 1) / 9)
    whole, whole_report = load_ratings(DataSpec(str(folder), format="arena-bench", on_error="skip",
                                                options={"judges": "all"}))
    assert len(whole) == 4434  # + the llama-13b judge's 300, less 2 null scores and 26 blank llama-13b answers
    assert whole_report.skipped == {"not a judgment (question, answer or reference file)": 5700,
                                    "no score (the judge gave none)": 39, "empty text (user_prompt (answer))": 27}
    lists, list_report = load_pairs(DataSpec(str(folder / "model_judgment"), on_error="skip",
                                             ranking={"into": "list"}))
    assert "299 lists of 4147 responses give 3848 pairs" in list_report.notes[-1]


def test_ranking_errors_name_the_file_and_the_field(tmp_path, shared_data):
    with pytest.raises(DataError, match=r"ranking.score: attribute 'helpfulnes' is not in the data; did you mean "
                                        r"'helpfulness'"):
        load_pairs(rated_spec(tmp_path, score="helpfulnes"))
    with pytest.raises(DataError, match=r"rated.jsonl: ranking.score is needed: the ratings have attributes "
                                        r"helpfulness, correctness"):
        load_pairs(rated_spec(tmp_path))
    hh = str(shared_data / "pairs/hh-rlhf/helpful-base-train-sample.jsonl")
    with pytest.raises(DataError, match="ranking needs a ranked or ratings format; format 'hh' gives pairs"):
        load_pairs(DataSpec(hh, ranking={}))
    stack = str(shared_data / "pairs/stack-exchange/stack-exchange-preferences-sample.jsonl")
    with pytest.raises(DataError, match="format 'stack-exchange' ranks its responses with its own scores"):
        load_pairs(DataSpec(stack, ranking={"score": "votes"}))
    with pytest.raises(ValueError, match="ranking.into must be one of"):
        DataSpec(stack, ranking={"into": "lists"})
    with pytest.raises(ValueError, match="a list is kept whole"):
        DataSpec(stack, ranking={"into": "list", "max_pairs_per_prompt": 3})
