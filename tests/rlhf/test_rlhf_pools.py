"""Pool files: gzip pools that grow and resume, and pools imported from another generator (`--import-pool`)."""

from __future__ import annotations

import csv
import gzip
import json
import logging
import zlib

import numpy as np
import pytest
from typer.testing import CliRunner

from smorm.cli import app
from smorm.data.errors import DataError
from smorm.data.spec import PromptRecord
from smorm.rlhf.generate import generate_pool, load_policy
from smorm.rlhf.pools import read_imported_pool, read_pool
from smorm.rlhf.settings import SamplingConfig
from tests.rlhf.rlhf_helpers import model_rewards, save_reward_model

PROMPTS = [
    PromptRecord([{"role": "user", "content": text}]) for text in ("Hi.", "Name a long river please.", "2+2?")
]


@pytest.fixture(scope="module")
def policy(tiny_llama_dir):
    return load_policy(str(tiny_llama_dir))[:2]


def gzip_members(data: bytes) -> list[bytes]:
    """Each gzip member's decompressed bytes, by hand with zlib (independent of the code under test)."""
    members = []
    while data:
        inflater = zlib.decompressobj(wbits=31)
        members.append(inflater.decompress(data))
        assert inflater.eof, "a member is cut short"
        data = inflater.unused_data
    return members


def test_a_gzip_pool_holds_the_same_lines_one_member_per_batch(tmp_path, tiny_llama_dir, policy):
    config = SamplingConfig(num_samples=2, max_new_tokens=5, seed=3)
    plain = generate_pool(
        str(tiny_llama_dir), PROMPTS, tmp_path / "p.jsonl", config, batch_rows=2, loaded=policy
    )
    packed = generate_pool(
        str(tiny_llama_dir), PROMPTS, tmp_path / "p.jsonl.gz", config, batch_rows=2, loaded=policy
    )
    assert packed == plain
    data = (tmp_path / "p.jsonl.gz").read_bytes()
    # batch_rows 2 with N = 2: one prompt per generate call, so one member per prompt
    members = gzip_members(data)
    assert len(members) == 3 and all(m.count(b"\n") == 1 for m in members)
    assert gzip.decompress(data) == (tmp_path / "p.jsonl").read_bytes()  # any gzip reader reads it whole
    assert (tmp_path / "p.jsonl.gz.meta.json").is_file()
    assert read_pool(tmp_path / "p.jsonl.gz") == plain
    with pytest.raises(ValueError, match="different sampling"):
        generate_pool(
            str(tiny_llama_dir),
            PROMPTS,
            tmp_path / "p.jsonl.gz",
            SamplingConfig(num_samples=2, max_new_tokens=5, seed=4),
            loaded=policy,
        )


@pytest.mark.parametrize("kept_of_last", ["half", "all but the trailer"])
def test_a_gzip_pool_cut_by_a_kill_resumes_to_the_same_lines(tmp_path, tiny_llama_dir, policy, kept_of_last):
    config = SamplingConfig(num_samples=2, max_new_tokens=5, seed=1)
    full = tmp_path / "full.jsonl.gz"
    generate_pool(str(tiny_llama_dir), PROMPTS, full, config, batch_rows=2, loaded=policy)
    data = full.read_bytes()
    members = gzip_members(data)
    last = len(gzip.compress(members[-1], mtime=0))  # the last member's compressed size
    cut = last // 2 if kept_of_last == "half" else last - 8  # the trailer: CRC32 and length, 4 bytes each
    killed = tmp_path / "killed.jsonl.gz"
    killed.write_bytes(data[: len(data) - last + cut])
    (tmp_path / "killed.jsonl.gz.meta.json").write_bytes((tmp_path / "full.jsonl.gz.meta.json").read_bytes())
    # half a member: its line is unterminated and dropped; without the trailer: every byte of the line decodes
    expected = [0, 1] if kept_of_last == "half" else [0, 1, 2]
    assert [e.index for e in read_pool(killed)] == expected
    generate_pool(str(tiny_llama_dir), PROMPTS, killed, config, batch_rows=2, loaded=policy)
    assert gzip.decompress(killed.read_bytes()) == gzip.decompress(data)  # a valid gzip file again


# ---------------------------------------------------------------- imported pools


def write_lines(path, lines: list, end: str = "\n") -> None:
    text = "\n".join(line if isinstance(line, str) else json.dumps(line) for line in lines) + end
    if path.name.endswith(".gz"):
        path.write_bytes(gzip.compress(text.encode()))
    else:
        path.write_text(text)


EXTERNAL = [
    {
        "prompt": "Name a fruit.",
        "responses": ["apple", "a pear", ""],
        "model": "vllm-test",
        "request_id": "r0",
    },
    {
        "prompt": [{"role": "system", "content": "Be brief."}, {"role": "user", "content": "Say hi."}],
        "responses": ["hi", "hello there", "hey"],
        "model": "vllm-test",
        "request_id": "r1",
        "category": "chat",
    },
    {"prompt": "What is 2 + 2?", "responses": ["4", "four", "5"], "model": "vllm-test", "request_id": "r2"},
]


def test_an_imported_pool_is_read_as_given_with_its_provenance(tmp_path):
    path = tmp_path / "vllm.jsonl"
    write_lines(path, EXTERNAL)
    entries, provenance = read_imported_pool(path)
    assert [e.prompt for e in entries] == [
        [{"role": "user", "content": "Name a fruit."}],
        EXTERNAL[1]["prompt"],
        [{"role": "user", "content": "What is 2 + 2?"}],
    ]
    # a blank response is scored, as the generator wrote it
    assert entries[0].responses == ["apple", "a pear", ""]
    assert entries[1].category == "chat" and entries[2].origin == f"{path}:3"
    assert all(e.response_tokens is None and e.finished is None for e in entries)
    assert provenance["prompts"] == 3 and provenance["samples_per_prompt"] == 3
    assert provenance["fields"]["model"] == {"lines": 3, "distinct": 1, "values": ["vllm-test"]}
    assert provenance["fields"]["request_id"] == {"lines": 3, "distinct": 3, "values": ["r0", "r1", "r2"]}
    assert provenance["cut_short_last_line"] is None and len(provenance["sha256"]) == 64
    # a last line without its final newline is still a whole line
    write_lines(path, EXTERNAL, end="")
    assert len(read_imported_pool(path)[0]) == 3


@pytest.mark.parametrize("suffix", [".jsonl", ".jsonl.gz"])
def test_a_cut_short_last_line_of_an_import_is_dropped_and_recorded(tmp_path, caplog, suffix):
    path = tmp_path / f"vllm{suffix}"
    whole = "".join(json.dumps(line) + "\n" for line in EXTERNAL)
    cut = whole[: len(whole) - 25]  # the third line loses its end and its newline
    if suffix == ".jsonl":
        path.write_text(cut)
    else:  # a writer killed mid-member: a gzip stream without its end
        data = gzip.compress(whole.encode(), mtime=0)
        path.write_bytes(data[: len(data) - 30])
    with caplog.at_level(logging.WARNING):
        entries, provenance = read_imported_pool(path)
    assert len(entries) == 2 and provenance["cut_short_last_line"] == 3
    assert f"{path}:3: the last line is cut short" in caplog.text
    if suffix == ".jsonl.gz":
        assert provenance["gzip_complete"] is False


@pytest.mark.parametrize(
    ("second", "message"),
    [
        ({"responses": ["a", "b", "c"]}, "field 'prompt': missing"),
        ({"prompt": "Hi", "responses": "abc"}, "field 'responses': expected a non-empty list of texts"),
        ({"prompt": "Hi", "responses": []}, "field 'responses': expected a non-empty list"),
        (
            {"prompt": "Hi", "responses": ["a", 7, "c"]},
            r"field 'responses\[1\]': expected text, got a number 7",
        ),
        ({"prompt": "Hi", "responses": ["a", "b"]}, "field 'responses': 2 responses, but line 1 has 3"),
        ({"prompt": "", "responses": ["a", "b", "c"]}, "field 'prompt': empty text"),
        (
            {
                "prompt": [{"role": "user", "content": "Hi"}, {"role": "assistant", "content": "Yo"}],
                "responses": ["a", "b", "c"],
            },
            "field 'prompt': the last message is the assistant's",
        ),
        (
            {"prompt": [{"role": "narrator", "content": "Hi"}], "responses": ["a", "b", "c"]},
            r"field 'prompt\[0\]': unknown role 'narrator'",
        ),
        (
            {"prompt": "Name a fruit.", "responses": ["a", "b", "c"]},
            "field 'prompt': the same prompt as line 1",
        ),
        (
            {"prompt": "Hi", "responses": ["a", "b", "c"], "response_tokens": [1, 2]},
            "field 'response_tokens': expected a list of 3 values",
        ),
        (
            {"prompt": "Hi", "responses": ["a", "b", "c"], "finished": [True, "yes", False]},
            r"field 'finished\[1\]': expected true or false",
        ),
        ({"prompt": "Hi", "responses": ["a", "b", "c"], "category": 3}, "field 'category': expected text"),
        ('{"prompt": "Hi", "responses": [', "not JSON"),
        ("[1, 2]", "expected a JSON object, got a list"),
    ],
)
def test_a_bad_imported_line_names_file_line_and_field(tmp_path, second, message):
    path = tmp_path / "vllm.jsonl"
    write_lines(path, [EXTERNAL[0], second, EXTERNAL[2]])
    with pytest.raises(DataError, match=rf"vllm.jsonl:2: {message}"):
        read_imported_pool(path)


def test_optional_per_response_fields_come_on_every_line_or_none(tmp_path):
    path = tmp_path / "vllm.jsonl"
    first = {**EXTERNAL[0], "response_tokens": [1, 2, 0], "finished": [True, True, False]}
    write_lines(path, [first, EXTERNAL[1]])
    with pytest.raises(
        DataError, match="vllm.jsonl:2: field 'response_tokens': missing here but given on line 1"
    ):
        read_imported_pool(path)
    write_lines(path, [first, {**EXTERNAL[1], "response_tokens": [1, 1, 1], "finished": [True, False, True]}])
    entries, provenance = read_imported_pool(path)
    assert entries[0].response_tokens == [1, 2, 0] and provenance["response_tokens"] is True
    path.write_text("\n\n")
    with pytest.raises(DataError, match="no pool lines"):
        read_imported_pool(path)
    with pytest.raises(FileNotFoundError, match="pool file not found"):
        read_imported_pool(tmp_path / "nowhere.jsonl")


def test_bon_scores_an_imported_gzip_pool_without_generating(tmp_path, tiny_llama_dir, monkeypatch):
    import smorm.rlhf.lab

    def refuse(*args, **kwargs):
        raise AssertionError("an imported pool is never generated")

    monkeypatch.setattr(smorm.rlhf.lab, "generate_pool", refuse)
    proxy = save_reward_model(tmp_path / "bt", tiny_llama_dir, seed=2, heads={"single": {"kind": "linear"}})
    gold = save_reward_model(tmp_path / "gold", tiny_llama_dir, seed=3)
    pool = tmp_path / "vllm.jsonl.gz"
    write_lines(pool, EXTERNAL)
    out = tmp_path / "out"
    args = [
        "bon",
        "--proxy",
        str(proxy),
        "--gold",
        f"{gold}:F",
        "--pool",
        str(pool),
        "--import-pool",
        "--out",
        str(out),
        "benches=[]",
    ]
    result = CliRunner().invoke(app, args)
    assert result.exit_code == 0, result.output
    summary = json.loads((out / "summary.json").read_text())
    assert summary["prompts"]["kind"] == "imported pool"
    imported = summary["pool"]["imported"]
    assert imported["file"] == str(pool) and imported["fields"]["model"]["values"] == ["vllm-test"]
    assert summary["pool"]["samples_per_prompt"] == 3 and summary["pool"]["mean_response_tokens"] is None
    # the curve at n = N against scores computed independently (RewardModel.score on the file's own texts)
    prompts = [line["prompt"] for line in EXTERNAL for _ in line["responses"]]
    responses = [r for line in EXTERNAL for r in line["responses"]]
    proxy_scores = model_rewards(proxy, prompts, responses, "F").reshape(3, 3)
    gold_scores = model_rewards(gold, prompts, responses, "F").reshape(3, 3)
    best = proxy_scores.argmax(axis=1)
    expected = np.mean([gold_scores[p, best[p]] - gold_scores[p].mean() for p in range(3)])
    with open(out / "bon.csv") as handle:
        rows = list(csv.DictReader(handle))
    assert [int(r["n"]) for r in rows] == [1, 2, 3]
    assert float(rows[-1]["gold_score"]) == pytest.approx(expected, abs=1e-4)
    assert rows[-1]["chosen_tokens"] == "nan"  # the file gives no token counts


def test_import_pool_needs_the_pool_file(tmp_path):
    result = CliRunner().invoke(
        app, ["bon", "--proxy", str(tmp_path), "--gold", str(tmp_path), "--import-pool"]
    )
    assert result.exit_code == 2 and "import_pool needs the file to import: --pool FILE" in result.output
