"""Readers: every file type, line numbers, folders, malformed lines, Hugging Face datasets."""

from __future__ import annotations

import gzip
import json
import subprocess
import sys

import pytest

from smorm.data import DataError, DataSpec, iter_rows, load_pairs, read_records


def write(path, text: str) -> str:
    path.write_text(text, encoding="utf-8")
    return str(path)


def test_jsonl_line_numbers_skip_blank_lines(tmp_path):
    path = write(tmp_path / "a.jsonl", '{"x": 1}\n\n{"x": 2}\n')
    assert list(iter_rows(path)) == [(1, {"x": 1}), (3, {"x": 2})]


def test_gzip_jsonl(tmp_path):
    path = tmp_path / "a.jsonl.gz"
    with gzip.open(path, "wt", encoding="utf-8") as handle:
        handle.write('{"x": 1}\n{"x": 2}\n')
    assert [r for _, r in iter_rows(path)] == [{"x": 1}, {"x": 2}]


def test_json_array_reports_the_line_each_record_starts_on(tmp_path):
    text = json.dumps([{"x": 1}, {"x": 2}], indent=2)  # "[", "  {", '    "x": 1', "  },", "  {" ...
    path = write(tmp_path / "a.json", text)
    assert [n for n, _ in iter_rows(path)] == [2, 5]


def test_json_object_wrapping_a_list_and_json_lines_named_json(tmp_path):
    wrapped = write(tmp_path / "w.json", json.dumps({"data": [{"x": 1}, {"x": 2}], "version": 3}))
    assert list(iter_rows(wrapped)) == [(1, {"x": 1}), (2, {"x": 2})]
    lines = write(tmp_path / "l.json", '{"x": 1}\n{"x": 2}\n')
    assert list(iter_rows(lines)) == [(1, {"x": 1}), (2, {"x": 2})]


def test_csv_keeps_text_as_text_and_numbers_rows_by_line(tmp_path):
    # The second row's prompt spans two lines, so the third row starts on line 5.
    text = 'prompt,chosen,rejected\nq1,True,no\n"multi\nline",a,b\nq3,5,6\n'
    path = write(tmp_path / "a.csv", text)
    rows = list(iter_rows(path))
    assert [n for n, _ in rows] == [2, 3, 5]
    assert rows[0][1] == {"prompt": "q1", "chosen": "True", "rejected": "no"}
    assert rows[2][1]["chosen"] == "5"


def test_tsv_and_extra_csv_fields(tmp_path):
    assert list(iter_rows(write(tmp_path / "a.tsv", "a\tb\n1\t2\n"))) == [(2, {"a": "1", "b": "2"})]
    with pytest.raises(DataError, match=r"b\.csv:2: row has 1 more field\(s\) than the header"):
        list(iter_rows(write(tmp_path / "b.csv", "a,b\n1,2,3\n")))


def test_parquet(tmp_path):
    import pyarrow as pa
    import pyarrow.parquet as pq

    path = tmp_path / "a.parquet"
    pq.write_table(pa.table({"prompt": ["p1", "p2"], "score": [1.5, None]}), path)
    assert list(iter_rows(path)) == [
        (1, {"prompt": "p1", "score": 1.5}),
        (2, {"prompt": "p2", "score": None}),
    ]


def test_folder_is_read_recursively_in_sorted_order(tmp_path):
    (tmp_path / "b").mkdir()
    write(tmp_path / "b" / "z.jsonl", '{"x": 3}\n')
    write(tmp_path / "a.jsonl", '{"x": 1}\n')
    write(tmp_path / "notes.txt", "not data")
    write(tmp_path / ".hidden.jsonl", '{"x": 9}\n')
    records = list(read_records(tmp_path))
    assert [r.fields["x"] for r in records] == [1, 3]
    assert records[1].origin == f"{tmp_path / 'b' / 'z.jsonl'}:1"


def test_malformed_json_line_names_file_and_line(tmp_path):
    path = write(tmp_path / "bad.jsonl", '{"x": 1}\n{"x": 2}\n{"x": \n')
    with pytest.raises(DataError, match=r"bad\.jsonl:3: malformed JSON"):
        list(iter_rows(path))


def test_malformed_json_document_names_the_line(tmp_path):
    path = write(tmp_path / "bad.json", '[\n  {"x": 1},\n  {"x": }\n]\n')
    with pytest.raises(DataError, match=r"bad\.json:3: malformed JSON"):
        list(iter_rows(path))


def test_non_object_record(tmp_path):
    with pytest.raises(DataError, match=r"a\.jsonl:1: expected a JSON object, got list"):
        list(iter_rows(write(tmp_path / "a.jsonl", "[1, 2]\n")))


def test_unknown_extension_and_missing_path(tmp_path):
    with pytest.raises(DataError, match="unsupported file type"):
        list(iter_rows(write(tmp_path / "a.txt", "x")))
    with pytest.raises(DataError, match="no such file or folder"):
        list(iter_rows(tmp_path / "nope.jsonl"))


def test_hub_dataset_gives_a_clear_error_when_the_hub_is_unreachable(monkeypatch):
    monkeypatch.delenv("HF_HUB_OFFLINE", raising=False)
    monkeypatch.delenv("HF_DATASETS_OFFLINE", raising=False)
    monkeypatch.setenv("HF_ENDPOINT", "http://127.0.0.1:9")  # the discard port: refused at once
    with pytest.raises(DataError) as info:
        load_pairs("hf:someone/some-preferences:test")
    message = str(info.value)
    assert message.startswith("hf:someone/some-preferences:test: the Hugging Face hub is not reachable")
    assert "pass a local path" in message


def test_hub_reader_with_a_local_file_through_datasets(tmp_path):
    rows = [
        {"prompt": "2+2?", "chosen": "4", "rejected": "5"},
        {"prompt": "hi", "chosen": "hello", "rejected": "go away"},
    ]
    data = write(tmp_path / "pairs.jsonl", "\n".join(json.dumps(r) for r in rows) + "\n")
    spec = DataSpec(
        path="hf:json:train",
        format="pairs",
        options={"hf": {"data_files": data, "cache_dir": str(tmp_path / "cache")}},
    )
    pairs, report = load_pairs(spec)
    assert [p.chosen for p in pairs] == ["4", "hello"]
    assert pairs[1].origin == "hf:json:train:2"
    assert report.source == "json"


def test_importing_smorm_data_does_not_import_heavy_optional_libraries():
    code = "import sys, smorm.data; print(sorted(m for m in ('datasets', 'matplotlib', 'peft', 'pyarrow') if m in sys.modules))"
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True).stdout
    assert out.strip() == "[]"
