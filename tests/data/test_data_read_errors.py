"""Every read error is a DataError that names the file, and the line where there is one."""

from __future__ import annotations

import builtins
import bz2
import gzip
import json
import lzma
import os
import re
from pathlib import Path

import pytest

from smorm.data import DataError, DataSpec, iter_rows, load_pairs, read_records

# bz2 decompresses whole blocks (100 kB at level 1), so a cut file must span several to yield lines.
COMPRESSORS = {".gz": gzip.compress, ".bz2": lambda data: bz2.compress(data, compresslevel=1), ".xz": lzma.compress}


def pair_lines(count: int) -> bytes:
    rows = [{"prompt": f"question {i}", "chosen": f"good answer {i}", "rejected": f"bad {i}"} for i in range(count)]
    return "".join(json.dumps(row) + "\n" for row in rows).encode()


@pytest.mark.parametrize("suffix", sorted(COMPRESSORS))
def test_truncated_compressed_file_names_the_file_and_the_line_it_stopped_at(tmp_path, suffix):
    whole = COMPRESSORS[suffix](pair_lines(6000))
    path = tmp_path / f"pairs.jsonl{suffix}"
    path.write_bytes(whole[: len(whole) // 2])  # a download cut short
    read: list[int] = []
    with pytest.raises(DataError) as info:
        for number, _ in iter_rows(path):
            read.append(number)
    assert read == list(range(1, len(read) + 1)) and len(read) > 10  # the lines before the cut were read
    message = str(info.value)
    assert message.startswith(f"{path}:{len(read) + 1}: compressed data is truncated or corrupt")
    assert info.value.origin == f"{path}:{len(read) + 1}"


def test_truncation_stops_loading_even_when_skipping_bad_records(tmp_path):
    whole = gzip.compress(pair_lines(2000))
    path = tmp_path / "pairs.jsonl.gz"
    path.write_bytes(whole[:-30])
    with pytest.raises(DataError, match=re.escape(str(path)) + r":\d+: compressed data is truncated"):
        load_pairs(DataSpec(path=str(path), format="pairs"), on_error="skip")


def test_a_file_that_is_not_compressed_as_its_name_says(tmp_path):
    path = tmp_path / "pairs.jsonl.gz"
    path.write_bytes(pair_lines(3))  # plain text named .gz
    with pytest.raises(DataError, match=re.escape(f"{path}:1: compressed data is truncated or corrupt")):
        list(read_records(path))


def test_undecodable_bytes_name_the_exact_line_and_column(tmp_path):
    # Many good lines first, so a reader that decodes in blocks would report the wrong line.
    good = pair_lines(500)
    path = tmp_path / "pairs.jsonl"
    path.write_bytes(good + b'{"prompt": "caf\xe9"}\n' + pair_lines(2))
    with pytest.raises(DataError) as info:
        list(iter_rows(path))
    assert str(info.value).startswith(f"{path}:501: not UTF-8 text: byte 0xe9 at column 16")
    pairs, report = load_pairs(DataSpec(path=str(path), format="pairs"), on_error="skip")
    assert len(pairs) == 502 and report.skipped == {"malformed record": 1}


def test_binary_garbage_in_json_and_csv_files(tmp_path):
    garbage = bytes(range(128, 256)) * 4  # no newline in it, so all of it is one line
    for name in ("blob.json", "blob.csv"):
        path = tmp_path / name
        path.write_bytes(b"prompt,chosen\n" + garbage if name.endswith("csv") else garbage)
        with pytest.raises(DataError) as info:
            list(read_records(path))
        # the JSON blob starts with it; the CSV has a header line before it
        line = 2 if name.endswith("csv") else 1
        assert str(info.value).startswith(f"{path}:{line}: not UTF-8 text: byte 0x80 at column 1")


def test_byte_order_mark_and_windows_line_ends_are_read_as_text(tmp_path):
    path = tmp_path / "a.csv"
    path.write_bytes(b"\xef\xbb\xbfprompt,chosen\r\nq,\"two\r\nlines\"\r\n")
    assert list(iter_rows(path)) == [(2, {"prompt": "q", "chosen": "two\nlines"})]


def test_permission_denied_names_the_file(tmp_path, monkeypatch):
    # Tests run as root, whom chmod 000 does not stop, so the OS's refusal is simulated at open().
    path = tmp_path / "secret.jsonl"
    path.write_bytes(pair_lines(2))
    real_open = builtins.open

    def refusing_open(file, *args, **kwargs):
        if Path(file) == path:
            raise PermissionError(13, "Permission denied", str(file))
        return real_open(file, *args, **kwargs)

    monkeypatch.setattr(builtins, "open", refusing_open)
    with pytest.raises(DataError, match=re.escape(f"{path}: cannot open: Permission denied")):
        list(read_records(path))
    with pytest.raises(DataError, match=re.escape(f"{path}: cannot open: Permission denied")):
        list(read_records(tmp_path))  # found in a folder: the file is still named


def test_a_folder_that_may_not_be_listed(tmp_path, monkeypatch):
    folder = tmp_path / "locked"
    folder.mkdir()
    (folder / "a.jsonl").write_bytes(pair_lines(1))
    real_access = os.access
    monkeypatch.setattr(os, "access", lambda p, mode, **kw: Path(p) != folder and real_access(p, mode, **kw))
    with pytest.raises(DataError, match=re.escape(f"{folder}: cannot read: permission denied")):
        list(read_records(folder))


def test_a_folder_with_no_data_files_says_what_it_holds(tmp_path):
    empty = tmp_path / "empty"
    empty.mkdir()
    with pytest.raises(DataError, match=re.escape(f"{empty}: folder holds no data files") + r".*it is empty"):
        list(read_records(empty))
    other = tmp_path / "other"
    other.mkdir()
    (other / "notes.txt").write_text("x")
    (other / "model.bin").write_bytes(b"\0")
    with pytest.raises(DataError, match=r"holds 2 other file\(s\): model\.bin, notes\.txt"):
        list(read_records(other))


@pytest.mark.parametrize(
    ("name", "content"),
    [("a.jsonl", b""), ("b.jsonl", b"\n  \n"), ("c.json", b"[]"), ("d.csv", b"prompt,chosen,rejected\n"),
     ("e.jsonl.gz", gzip.compress(b""))],
)
def test_an_empty_file_is_an_error_naming_it(tmp_path, name, content):
    path = tmp_path / name
    path.write_bytes(content)
    with pytest.raises(DataError, match=re.escape(f"{path}: holds no records")):
        list(read_records(path))
    with pytest.raises(DataError, match=re.escape(f"{path}: holds no records")):
        load_pairs(DataSpec(path=str(path), format="pairs"), on_error="skip")


def test_an_empty_file_inside_a_folder_is_named(tmp_path):
    (tmp_path / "a.jsonl").write_bytes(pair_lines(2))
    (tmp_path / "b.jsonl").write_bytes(b"")
    with pytest.raises(DataError, match=re.escape(f"{tmp_path / 'b.jsonl'}: holds no records")):
        list(read_records(tmp_path))


def test_unreadable_parquet_names_the_file(tmp_path):
    path = tmp_path / "a.parquet"
    path.write_bytes(b"PAR1 this is not parquet")
    with pytest.raises(DataError, match=re.escape(f"{path}: not a readable Parquet file")):
        list(read_records(path))
