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
import zlib
from collections.abc import Callable, Iterable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import IO, Any, cast
from urllib.parse import urlparse

from smorm.data.errors import DataError

COMPRESSIONS: dict[str, Callable[[IO[bytes]], IO[bytes]]] = {
    ".gz": lambda raw: cast(IO[bytes], gzip.GzipFile(fileobj=raw)),
    ".bz2": bz2.BZ2File,
    ".xz": lzma.LZMAFile,
}
# What a cut-short or corrupt compressed file raises while it is read (EOFError: gzip/bz2 end of
# stream missing; OSError: bad gzip/bz2 data, or the disk; zlib/lzma errors: bad deflate/xz data).
READ_ERRORS: tuple[type[BaseException], ...] = (EOFError, OSError, zlib.error, lzma.LZMAError)
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
    try:
        if root.is_file():
            return [root]
        if not root.exists():
            raise DataError(f"{path}: no such file or folder")
        if not os.access(root, os.R_OK | os.X_OK):
            # rglob passes over a folder it may not list, which would read as "no data files"
            raise DataError(f"{path}: cannot read: permission denied", kind="unreadable file")
        found = [
            p for p in root.rglob("*") if not any(part.startswith(".") for part in p.relative_to(root).parts)
        ]
        files = sorted(p for p in found if p.is_file() and is_data_file(p))
    except OSError as exc:
        raise DataError(f"{path}: cannot read: {exc.strerror or exc}", kind="unreadable file") from None
    if not files:
        others = sorted(str(p.relative_to(root)) for p in found if p.is_file())
        listing = ", ".join(others[:5])
        seen = f"; it holds {len(others)} other file(s): {listing}" if others else "; it is empty"
        raise DataError(
            f"{path}: folder holds no data files ({', '.join(sorted(FILE_KINDS))}, each optionally "
            f".gz/.bz2/.xz; hidden files are skipped){seen}",
            kind="no data files",
        )
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
    """Records of one local file (see :func:`read_records`).

    Raises:
        DataError: naming the file (and the line, where there is one) when it cannot be opened,
            its compressed data is cut short or corrupt, its text is not UTF-8 (a CSV or JSON
            document; a JSON Lines line that is not UTF-8 is yielded with ``error`` set), or it
            holds no records at all.
    """
    shown = shown or str(file)
    kind = file_kind(file)
    if kind == "parquet":
        records: Iterator[RawRecord] = _read_parquet(file, shown)
    elif kind == "jsonl":
        records = _read_jsonl_lines(byte_lines(file, shown), shown)
    elif kind == "json":
        records = _read_json_document(_read_text(file, shown), shown)
    else:
        lines = (_decode_or_raise(line, shown, number) for number, line in byte_lines(file, shown))
        records = _read_csv(lines, shown, delimiter="\t" if kind == "tsv" else ",")
    count = 0
    for record in records:
        count += 1
        yield record
    if count == 0:
        # An empty file is almost always a failed download or export, not a data set of size 0.
        raise DataError(
            f"{shown}: holds no records (the file is empty, or only whitespace, a header or an empty list)",
            kind="empty file",
        )


@contextmanager
def open_binary(file: Path, shown: str) -> Iterator[IO[bytes]]:
    """The file's bytes, decompressed by its suffix; a file that cannot be opened is a DataError."""
    try:
        raw = open(file, "rb")
    except OSError as exc:
        raise DataError(f"{shown}: cannot open: {exc.strerror or exc}", kind="unreadable file") from None
    with raw:
        decompress = COMPRESSIONS.get(file.suffix.lower())
        if decompress is None:
            yield raw
            return
        with decompress(raw) as stream:  # closing it leaves ``raw`` open, hence the outer ``with``
            yield stream


def byte_lines(file: Path, shown: str) -> Iterator[tuple[int, bytes]]:
    """``(line number, raw line)`` of a (compressed) file; a read error names the file and the line."""
    with open_binary(file, shown) as handle:
        number = 0
        lines = iter(handle)
        while True:
            try:
                line = next(lines)
            except StopIteration:
                return
            except READ_ERRORS as exc:
                problem = _read_problem(exc)
                raise DataError(f"{shown}:{number + 1}: {problem}", origin=f"{shown}:{number + 1}",
                                kind="unreadable file") from None
            number += 1
            yield number, line


def _read_problem(exc: BaseException) -> str:
    if isinstance(exc, OSError) and exc.errno is not None:  # the disk or the file system, not the data
        return f"cannot read: {exc.strerror or exc}"
    detail = str(exc) or type(exc).__name__
    return f"compressed data is truncated or corrupt ({detail}); download or compress the file again"


def decode_line(line: bytes, number: int) -> tuple[str | None, str | None]:
    """``(text, None)`` for a UTF-8 line, else ``(None, problem)``.

    A byte-order mark at the start of the file is dropped and CRLF becomes LF, as text mode did.
    """
    try:
        text = line.decode("utf-8")
    except UnicodeDecodeError as exc:
        return None, (
            f"not UTF-8 text: byte 0x{line[exc.start]:02x} at column {exc.start + 1} "
            "(a binary file, or text in another encoding?)"
        )
    if number == 1 and text.startswith("\ufeff"):
        text = text[1:]  # some exporters write a byte-order mark
    return (text[:-2] + "\n" if text.endswith("\r\n") else text), None


def _decode_or_raise(line: bytes, path: str, number: int) -> str:
    text, problem = decode_line(line, number)
    if problem is not None:
        raise DataError(f"{path}:{number}: {problem}", origin=f"{path}:{number}", kind="not UTF-8")
    return text or ""


def _read_text(file: Path, shown: str) -> str:
    """The whole (decompressed) file as text; undecodable bytes name the line they are on."""
    return "".join(_decode_or_raise(line, shown, number) for number, line in byte_lines(file, shown))


def _as_object(value: Any, path: str, number: int) -> RawRecord:
    if isinstance(value, dict):
        return RawRecord(path, number, value)
    return RawRecord(path, number, error=f"expected a JSON object, got {type(value).__name__}")


def _read_jsonl_lines(lines: Iterable[tuple[int, bytes]], path: str) -> Iterator[RawRecord]:
    for number, raw in lines:
        line, problem = decode_line(raw, number)
        if line is None:
            yield RawRecord(path, number, error=problem)
            continue
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
        numbered = enumerate((line.encode("utf-8") for line in io.StringIO(text)), start=1)
        yield from _read_jsonl_lines(numbered, path)
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


def _read_csv(handle: Iterable[str], path: str, delimiter: str) -> Iterator[RawRecord]:
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
    import pyarrow as pa
    import pyarrow.parquet as pq

    with open_binary(file, path) as handle:
        try:
            # A compressed stream cannot seek, and Parquet reads its footer first: decompress it whole.
            source: Any = handle if file.suffix.lower() not in COMPRESSIONS else io.BytesIO(handle.read())
            number = 0
            for batch in pq.ParquetFile(source).iter_batches(batch_size=1024):
                for row in batch.to_pylist():
                    number += 1
                    yield RawRecord(path, number, row)
        except (pa.ArrowException, *READ_ERRORS) as exc:
            raise DataError(f"{path}: not a readable Parquet file ({exc})", kind="unreadable file") from None


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
