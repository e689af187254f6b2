"""Generic record readers: local JSON Lines / JSON / Parquet / CSV files (optionally compressed),
folders of them, and Hugging Face ``datasets`` by name.

Every reader yields :class:`RawRecord` objects that carry the file and the line (or row) the
record came from, so that a later validation error can point at it. A line that cannot be parsed
is yielded as a record with ``error`` set rather than raised, so a caller may skip it and go on.
"""

from __future__ import annotations

import bz2
import csv
import gzip
import io
import json
import lzma
import os
import socket
import sys
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import IO, Any
from urllib.parse import urlparse

from smorm.data.errors import DataError

COMPRESSIONS = {".gz": gzip.open, ".bz2": bz2.open, ".xz": lzma.open}
FILE_KINDS = {
    ".jsonl": "jsonl",
    ".ndjson": "jsonl",
    ".json": "json",
    ".parquet": "parquet",
    ".csv": "csv",
    ".tsv": "tsv",
}
HF_PREFIX = "hf:"
# `datasets` builders that read local files and never need the hub.
HF_PACKAGED_BUILDERS = {"json", "csv", "parquet", "text", "arrow", "pandas", "sql", "webdataset"}


@dataclass
class RawRecord:
    """One record as read from a file, before any adapter looks at it.

    Attributes:
        path: the file it came from (``hf:name:split`` for a hub dataset).
        number: line number for JSON Lines, CSV and top-level JSON arrays (the line where the
            record starts); 1-based row index for Parquet, hub datasets and JSON objects that wrap a list.
        fields: the record.
        error: set (and ``fields`` empty) when the record could not be parsed.
        text_table: True when values came from a text table (CSV), so numbers arrive as strings.
    """

    path: str
    number: int
    fields: dict[str, Any] = field(default_factory=dict)
    error: str | None = None
    text_table: bool = False

    @property
    def origin(self) -> str:
        return f"{self.path}:{self.number}"


def file_kind(path: str | Path) -> str:
    """``jsonl`` / ``json`` / ``parquet`` / ``csv`` / ``tsv`` from the file name, compression suffix ignored."""
    suffixes = [s.lower() for s in Path(path).suffixes]
    if suffixes and suffixes[-1] in COMPRESSIONS:
        suffixes = suffixes[:-1]
    if suffixes and suffixes[-1] in FILE_KINDS:
        return FILE_KINDS[suffixes[-1]]
    known = ", ".join(sorted(FILE_KINDS))
    raise DataError(f"{path}: unsupported file type (known: {known}, each optionally .gz/.bz2/.xz)")


def is_data_file(path: Path) -> bool:
    try:
        file_kind(path)
    except DataError:
        return False
    return True


def data_files(path: str | Path) -> list[Path]:
    """The file itself, or every data file below a folder (recursively, sorted, hidden files skipped)."""
    root = Path(path)
    if root.is_file():
        return [root]
    if not root.exists():
        raise DataError(f"{path}: no such file or folder")
    files = sorted(
        p
        for p in root.rglob("*")
        if p.is_file()
        and is_data_file(p)
        and not any(part.startswith(".") for part in p.relative_to(root).parts)
    )
    if not files:
        raise DataError(f"{path}: folder holds no data files ({', '.join(sorted(FILE_KINDS))})")
    return files


def read_records(path: str | Path, hf_options: dict[str, Any] | None = None) -> Iterator[RawRecord]:
    """Yield the records of a file, of every data file below a folder, or of ``hf:owner/name[:split]``.

    Args:
        path: a local path, or ``hf:owner/name[:split]`` (split defaults to ``train``).
        hf_options: keyword arguments for ``datasets.load_dataset`` (e.g. ``data_files``, ``name``).

    Raises:
        DataError: the path does not exist, the file type is unknown, a whole-file JSON document is
            malformed, or a hub dataset cannot be loaded. A malformed JSON *line* is not raised: it is
            yielded with ``error`` set.
    """
    text = str(path)
    if text.startswith(HF_PREFIX):
        yield from read_hub_dataset(text, hf_options or {})
        return
    for file in data_files(path):
        # Keep the path as the user wrote it (relative stays relative) for readable errors.
        shown = str(path) if Path(path).is_file() else str(file)
        yield from read_file(file, shown)


def iter_rows(
    path: str | Path, hf_options: dict[str, Any] | None = None
) -> Iterator[tuple[int, dict[str, Any]]]:
    """Yield ``(line_or_row_number, record)``; raise :class:`DataError` at the first malformed record."""
    for record in read_records(path, hf_options):
        if record.error is not None:
            raise DataError(f"{record.origin}: {record.error}", origin=record.origin, kind="malformed record")
        yield record.number, record.fields


def read_file(file: Path, shown: str | None = None) -> Iterator[RawRecord]:
    """Records of one local file (see :func:`read_records`)."""
    shown = shown or str(file)
    kind = file_kind(file)
    if kind == "parquet":
        yield from _read_parquet(file, shown)
        return
    with _open_text(file) as handle:
        if kind == "jsonl":
            yield from _read_jsonl_lines(handle, shown)
        elif kind == "json":
            yield from _read_json_document(handle.read(), shown)
        else:
            yield from _read_csv(handle, shown, delimiter="\t" if kind == "tsv" else ",")


def _open_text(file: Path) -> IO[str]:
    opener = COMPRESSIONS.get(file.suffix.lower())
    # utf-8-sig drops a byte-order mark that some exporters write at the start of a file.
    if opener is not None:
        return opener(file, "rt", encoding="utf-8-sig")  # type: ignore[operator]
    return open(file, encoding="utf-8-sig")


def _as_object(value: Any, path: str, number: int) -> RawRecord:
    if isinstance(value, dict):
        return RawRecord(path, number, value)
    return RawRecord(path, number, error=f"expected a JSON object, got {type(value).__name__}")


def _read_jsonl_lines(lines: Iterator[str] | IO[str], path: str, first_line: int = 1) -> Iterator[RawRecord]:
    for number, line in enumerate(lines, start=first_line):
        if not line.strip():
            continue
        try:
            value = json.loads(line)
        except json.JSONDecodeError as exc:
            yield RawRecord(path, number, error=f"malformed JSON: {exc.msg} (column {exc.colno})")
            continue
        yield _as_object(value, path, number)


def _skip_space(text: str, pos: int) -> int:
    while pos < len(text) and text[pos] in " \t\r\n":
        pos += 1
    return pos


def _read_json_document(text: str, path: str) -> Iterator[RawRecord]:
    """A JSON array of records (with the line each starts on), an object wrapping one, or JSON Lines."""
    decoder = json.JSONDecoder()
    pos = _skip_space(text, 0)
    if pos == len(text):
        return
    try:
        if text[pos] == "[":
            yield from _read_json_array(text, pos, path, decoder)
            return
        value, end = decoder.raw_decode(text, pos)
    except json.JSONDecodeError as exc:
        raise DataError(
            f"{path}:{exc.lineno}: malformed JSON: {exc.msg} (column {exc.colno})", kind="malformed JSON"
        ) from None
    if _skip_space(text, end) < len(text):
        # More than one top-level value: a JSON Lines file named .json (common on the hub).
        yield from _read_jsonl_lines(io.StringIO(text), path)
        return
    if not isinstance(value, dict):
        raise DataError(
            f"{path}: expected a JSON array of records or an object holding one, got {type(value).__name__}"
        )
    key = _records_key(value)
    if key is None:
        yield RawRecord(path, 1, value)  # a single record
        return
    for index, item in enumerate(value[key], start=1):
        yield _as_object(item, path, index)


def _records_key(document: dict[str, Any]) -> str | None:
    """The key of the list of records in an object like ``{"data": [...]}``, or None for a lone record."""
    lists = [
        k for k, v in document.items() if isinstance(v, list) and v and all(isinstance(x, dict) for x in v)
    ]
    if len(lists) == 1 and len(document) <= 3:
        return lists[0]
    for preferred in ("data", "records", "rows", "examples", "instances", "train"):
        if preferred in lists:
            return preferred
    return None


def _read_json_array(text: str, pos: int, path: str, decoder: json.JSONDecoder) -> Iterator[RawRecord]:
    pos += 1  # past "["
    line, counted = 1, 0
    while True:
        pos = _skip_space(text, pos)
        if pos < len(text) and text[pos] == "]":
            return
        line += text.count("\n", counted, pos)
        counted = pos
        value, pos = decoder.raw_decode(text, pos)
        yield _as_object(value, path, line)
        pos = _skip_space(text, pos)
        if pos < len(text) and text[pos] == ",":
            pos += 1
        elif pos < len(text) and text[pos] == "]":
            return
        else:
            line += text.count("\n", counted, pos)
            raise DataError(
                f"{path}:{line}: malformed JSON: expected ',' or ']' between records", kind="malformed JSON"
            )


def _read_csv(handle: IO[str], path: str, delimiter: str) -> Iterator[RawRecord]:
    # Responses can be long; the csv module's default field limit (128 KiB) is too small.
    csv.field_size_limit(min(sys.maxsize, 2**31 - 1))
    reader = csv.DictReader(handle, delimiter=delimiter)
    previous_end = 1  # the header line
    for row in reader:
        number = previous_end + 1
        previous_end = reader.line_num
        if None in row:
            extra = row.pop(None)
            yield RawRecord(
                path, number, error=f"row has {len(extra)} more field(s) than the header", text_table=True
            )
            continue
        yield RawRecord(path, number, dict(row), text_table=True)


def _read_parquet(file: Path, path: str) -> Iterator[RawRecord]:
    import pyarrow.parquet as pq

    source: Any = file
    if file.suffix.lower() in COMPRESSIONS:
        with COMPRESSIONS[file.suffix.lower()](file, "rb") as handle:  # type: ignore[operator]
            source = io.BytesIO(handle.read())
    number = 0
    for batch in pq.ParquetFile(source).iter_batches(batch_size=1024):
        for row in batch.to_pylist():
            number += 1
            yield RawRecord(path, number, row)


def parse_hub_name(path: str) -> tuple[str, str]:
    """``hf:owner/name[:split]`` -> ``(owner/name, split)``; the split defaults to ``train``."""
    rest = path[len(HF_PREFIX) :]
    name, _, split = rest.partition(":")
    if not name:
        raise DataError(f"{path}: expected hf:owner/name[:split]")
    return name, split or "train"


def _offline_mode() -> bool:
    return any(
        os.environ.get(v, "").lower() in ("1", "true", "yes", "on")
        for v in ("HF_HUB_OFFLINE", "HF_DATASETS_OFFLINE")
    )


def hub_reachable(timeout: float = 3.0) -> bool:
    """Whether a TCP connection to the hub endpoint (``HF_ENDPOINT``) opens within ``timeout`` seconds."""
    endpoint = urlparse(os.environ.get("HF_ENDPOINT", "https://huggingface.co"))
    port = endpoint.port or (443 if endpoint.scheme == "https" else 80)
    try:
        with socket.create_connection((endpoint.hostname or "", port), timeout=timeout):
            return True
    except OSError:
        return False


def read_hub_dataset(path: str, hf_options: dict[str, Any]) -> Iterator[RawRecord]:
    """Rows of a Hugging Face dataset loaded with ``datasets.load_dataset``."""
    name, split = parse_hub_name(path)
    advice = (
        "download the files and pass a local path (jsonl/json/parquet/csv), "
        "or set HF_HUB_OFFLINE=1 to use a copy already in the Hugging Face cache"
    )
    # Without this check `datasets` retries for ~30 s before failing when there is no network.
    if name not in HF_PACKAGED_BUILDERS and not _offline_mode() and not hub_reachable():
        raise DataError(f"{path}: the Hugging Face hub is not reachable (offline?); {advice}")
    try:
        import datasets
    except ImportError:
        raise DataError(
            f"{path}: reading hub datasets needs the `datasets` package (pip install 'smorm[hub]')"
        ) from None
    try:
        dataset = datasets.load_dataset(name, split=split, **hf_options)
    except Exception as exc:  # `datasets` raises many unrelated types; all mean "cannot load"
        raise DataError(
            f"{path}: cannot load Hugging Face dataset {name!r} split {split!r}: {exc}; {advice}"
        ) from None
    shown = f"{HF_PREFIX}{name}:{split}"
    for number, row in enumerate(dataset, start=1):
        yield RawRecord(shown, number, dict(row))
