"""Pool files: smorm's own (plain or gzip, appended as they grow) and pools imported from another generator.

**smorm's layout.** One JSON line per prompt: ``index``, ``key`` (:func:`prompt_key`), ``prompt``
(messages), ``responses``, ``response_tokens``, ``finished``, ``category``, ``origin``, ``meta``;
``<pool>.meta.json`` beside it says how it was sampled (:mod:`smorm.rlhf.generate`). A name ending
in ``.gz`` is gzip-compressed: every appended batch is a gzip member of its own, closed (CRC and
length written) and fsynced before the next one starts. A gzip file of several members is one valid
gzip stream (RFC 1952 Sec. 2.2; ``zcat`` and :mod:`gzip` read it whole), and a kill can only cut the
member being written: its decoded lines are kept up to the cut, as for a plain file's unterminated
last line, and a resume rewrites the file whole before appending. This keeps resume exact without
a separate compression step, at the cost of compressing each batch apart (a batch holds whole
prompts of N responses, so each member still has kilobytes to compress).

**Imported pools** (``smorm bon --pool FILE --import-pool``): a jsonl file (``.gz`` too) written by
any generator (vLLM on a GPU, say), one line per prompt:

* ``prompt`` (required): text (one user turn) or a list of ``{"role", "content"}`` messages ending
  with the turn the responses answer;
* ``responses`` (required): a non-empty list of response texts, the same number on every line;
* ``response_tokens``, ``finished`` (optional, on every line or on none): per response, its length
  in policy tokens and whether it ended by itself (not cut at the token limit);
* ``category`` (optional): text, e.g. an MT-Bench category;
* any other field (``model``, ``sampling``, ``request_id`` …) is the file's own provenance: kept in
  ``summary.json`` (its distinct values, the first few of them), never read otherwise.

No smorm meta file is needed. A last line cut short (no final newline, not JSON) is dropped with a
warning and its number is recorded in the provenance; any other bad line is an error naming the
file, the line and the field.
"""

from __future__ import annotations

import gzip
import hashlib
import json
import logging
import os
import zlib
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

from smorm.data.errors import DataError, FieldError
from smorm.data.messages import describe, messages, require_response
from smorm.io import atomic_write
from smorm.types import Message

logger = logging.getLogger(__name__)

IMPORT_FIELDS = ("prompt", "responses", "response_tokens", "finished", "category")
SHOWN_VALUES = 5  # distinct values of a provenance field kept in the summary


@dataclass
class PoolEntry:
    """One prompt of a pool and its responses (``response_tokens`` / ``finished``: None when an imported
    pool does not give them)."""

    index: int
    key: str
    prompt: list[Message]
    responses: list[str]
    response_tokens: list[int] | None
    finished: list[bool] | None
    category: str | None = None
    origin: str = ""
    meta: dict[str, Any] = field(default_factory=dict)


def prompt_key(prompt: list[Message]) -> str:
    """A short stable id of a prompt (hash of its messages)."""
    return hashlib.sha256(json.dumps(prompt, sort_keys=True).encode()).hexdigest()[:16]


# ------------------------------------------------------------------------------------ bytes and text


def is_gzip(path: Path) -> bool:
    return path.name.lower().endswith(".gz")


def read_pool_text(path: Path) -> tuple[str, bool]:
    """``(text, complete)`` of a pool file; ``complete`` is False when a gzip member was cut short.

    A cut member's data are decoded up to the cut (deflate decodes any prefix of its stream), so its
    whole lines survive and only the unterminated tail is lost, as in a plain file.
    """
    data = path.read_bytes()
    if not is_gzip(path):
        return _decode(data, path), True
    decoded: list[bytes] = []
    complete = True
    while data:
        inflater = zlib.decompressobj(wbits=16 + zlib.MAX_WBITS)  # one gzip member
        try:
            decoded.append(inflater.decompress(data))
        except zlib.error as error:
            raise ValueError(f"{path}: not gzip data, or corrupt ({error})") from None
        if not inflater.eof:
            complete = False
            break
        data = inflater.unused_data
    raw = b"".join(decoded)
    if complete:
        return _decode(raw, path), True
    # the cut may fall inside a UTF-8 character of the unterminated last line: that line is lost anyway
    cut = raw.rfind(b"\n") + 1
    return _decode(raw[:cut], path) + raw[cut:].decode("utf-8", errors="replace"), False


def _decode(data: bytes, path: Path) -> str:
    try:
        return data.decode("utf-8")
    except UnicodeDecodeError as error:
        line = data[: error.start].count(b"\n") + 1
        raise ValueError(f"{path}:{line}: not UTF-8 text (byte 0x{data[error.start]:02x})") from None


def _gzip_member(raw: Any, text: str) -> None:
    # mtime=0 and no file name in the header: the same lines give the same bytes on any machine
    with gzip.GzipFile(filename="", mode="wb", fileobj=raw, mtime=0) as member:
        member.write(text.encode("utf-8"))


def write_pool_text(path: Path, text: str) -> None:
    """Replace the pool file with ``text`` atomically (one gzip member for a ``.gz`` name; no text: an
    empty file, so the first batch's member is the first one)."""

    def write(temporary: Path) -> None:
        with open(temporary, "wb") as raw:
            if is_gzip(path) and text:
                _gzip_member(raw, text)
            else:
                raw.write(text.encode("utf-8"))

    atomic_write(path, write)


def append_pool_lines(path: Path, lines: list[str]) -> None:
    """Append whole lines and fsync: one closed gzip member per call for a ``.gz`` name."""
    text = "".join(line + "\n" for line in lines)
    with open(path, "ab") as raw:
        if is_gzip(path):
            _gzip_member(raw, text)
        else:
            raw.write(text.encode("utf-8"))
        raw.flush()
        os.fsync(raw.fileno())


def _split_lines(text: str) -> tuple[list[str], bool]:
    """The lines of ``text`` and whether the last one is unterminated (the tail of a cut append)."""
    lines = text.split("\n")
    if text.endswith("\n") or not text:
        lines.pop()
        return lines, False
    return lines, True


# ------------------------------------------------------------------------------------ smorm pools


def read_pool(path: str | os.PathLike[str]) -> list[PoolEntry]:
    """The complete lines of a smorm pool file (plain or ``.gz``); a last line cut short by a kill is ignored.

    Raises:
        ValueError: a malformed line that is not the last one (``path:line``).
    """
    path = Path(path)
    if not path.is_file():
        return []
    lines, unterminated = _split_lines(read_pool_text(path)[0])
    entries: list[PoolEntry] = []
    for number, line in enumerate(lines, 1):
        if not line.strip():
            continue
        try:
            entries.append(_parse_entry(line, f"{path}:{number}"))
        except ValueError:
            if unterminated and number == len(lines):
                continue
            raise
    return entries


def _parse_entry(line: str, origin: str) -> PoolEntry:
    try:
        return PoolEntry(**json.loads(line))
    except (json.JSONDecodeError, TypeError) as error:
        raise ValueError(
            f"{origin}: not a pool entry ({error}); a pool written by another generator "
            "is read with `smorm bon --pool FILE --import-pool`"
        ) from None


def rewrite_complete(path: Path, entries: list[PoolEntry]) -> None:
    """Make the file hold exactly ``entries``' lines (drops a cut-short tail), so appends start clean."""
    text = "".join(json.dumps(asdict(e)) + "\n" for e in entries)
    if path.is_file():
        current, complete = read_pool_text(path)
        if complete and current == text:
            return
    write_pool_text(path, text)


# ------------------------------------------------------------------------------------ imported pools


def read_imported_pool(path: str | os.PathLike[str]) -> tuple[list[PoolEntry], dict[str, Any]]:
    """Read and check a pool written by another generator (the layout in the module docstring).

    Returns:
        The entries in file order, and the provenance kept in ``summary.json``: the file, its
        sha256, counts, the dropped cut-short line if any, and the file's own other fields.

    Raises:
        DataError: ``path:line: field 'x': problem`` for a bad line, or a problem with the whole file.
    """
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"{path}: pool file not found")
    text, complete = read_pool_text(path)
    lines, unterminated = _split_lines(text)
    entries: list[PoolEntry] = []
    first_line: dict[str, int] = {}  # prompt key -> its line
    shape: tuple[int, int, bool, bool] | None = None  # (line, N, has tokens, has finished) of the first line
    extra: dict[str, dict[str, Any]] = {}
    cut_short = None
    for number, line in enumerate(lines, 1):
        if not line.strip():
            continue
        origin = f"{path}:{number}"
        try:
            record = json.loads(line)
        except json.JSONDecodeError as error:
            if unterminated and number == len(lines):
                cut_short = number
                logger.warning("%s: the last line is cut short (no final newline, not JSON): dropped", origin)
                continue
            raise DataError(
                f"{origin}: not JSON ({error.msg}, column {error.colno})", origin=origin
            ) from None
        if not isinstance(record, dict):
            raise DataError(f"{origin}: expected a JSON object, got {describe(record)}", origin=origin)
        try:
            entry = _imported_entry(record, len(entries), origin)
        except FieldError as error:
            raise DataError(f"{origin}: {error}", origin=origin, field=error.field, kind=error.kind) from None
        this = (len(entry.responses), entry.response_tokens is not None, entry.finished is not None)
        if shape is None:
            shape = (number, *this)
        _check_like_first(this, shape, origin)
        if entry.key in first_line:
            raise DataError(
                f"{origin}: field 'prompt': the same prompt as line {first_line[entry.key]}; "
                "give each prompt once, with all its responses",
                origin=origin,
                field="prompt",
            )
        first_line[entry.key] = number
        entries.append(entry)
        for name, value in record.items():
            if name not in IMPORT_FIELDS:
                _note_value(extra.setdefault(name, {"lines": 0, "values": {}}), value)
    if not entries:
        raise DataError(f"{path}: no pool lines (each line: prompt, responses)")
    assert shape is not None
    provenance = {
        "file": str(path),
        "sha256": hashlib.sha256(path.read_bytes()).hexdigest(),
        "prompts": len(entries),
        "samples_per_prompt": shape[1],
        "response_tokens": shape[2],
        "finished": shape[3],
        "cut_short_last_line": cut_short,
        "gzip_complete": complete if is_gzip(path) else None,
        "fields": {
            name: {
                "lines": seen["lines"],
                "distinct": len(seen["values"]),
                "values": [json.loads(v) for v in list(seen["values"])[:SHOWN_VALUES]],
            }
            for name, seen in extra.items()
        },
    }
    return entries, provenance


def _imported_entry(record: dict[str, Any], index: int, origin: str) -> PoolEntry:
    """One checked line of an imported pool (FieldError names the field at fault)."""
    if "prompt" not in record:
        raise FieldError("prompt", "missing (text, or a list of messages)", kind="missing field")
    prompt = messages(record["prompt"], "prompt")
    if prompt[-1]["role"] == "assistant":
        raise FieldError(
            "prompt",
            "the last message is the assistant's: a prompt ends with the turn the responses answer",
            kind="bad prompt",
        )
    responses = record.get("responses")
    if not isinstance(responses, list) or not responses:
        raise FieldError(
            "responses",
            f"expected a non-empty list of texts, got {describe(responses)}",
            kind="bad responses",
        )
    texts = [require_response(r, f"responses[{i}]", allow_blank=True) for i, r in enumerate(responses)]
    tokens = _per_response(
        record,
        "response_tokens",
        len(texts),
        lambda v: isinstance(v, int) and not isinstance(v, bool) and v >= 0,
        "an integer >= 0",
    )
    finished = _per_response(record, "finished", len(texts), lambda v: isinstance(v, bool), "true or false")
    category = record.get("category")
    if category is not None and not isinstance(category, str):
        raise FieldError("category", f"expected text, got {describe(category)}", kind="not text")
    return PoolEntry(
        index=index,
        key=prompt_key(prompt),
        prompt=prompt,
        responses=texts,
        response_tokens=tokens,
        finished=finished,
        category=category,
        origin=origin,
    )


def _per_response(
    record: dict[str, Any], name: str, count: int, valid: Any, expected: str
) -> list[Any] | None:
    if record.get(name) is None:
        return None
    values = record[name]
    if not isinstance(values, list) or len(values) != count:
        raise FieldError(
            name,
            f"expected a list of {count} values (one per response), got {describe(values)}"
            + (f" of {len(values)}" if isinstance(values, list) else ""),
            kind="bad list",
        )
    for i, value in enumerate(values):
        if not valid(value):
            raise FieldError(f"{name}[{i}]", f"expected {expected}, got {describe(value)}", kind="bad value")
    return values


def _check_like_first(this: tuple[int, bool, bool], first: tuple[int, int, bool, bool], origin: str) -> None:
    """Every line has the first line's N and the same optional per-response fields."""
    line, size, tokens, finished = first
    if this[0] != size:
        raise DataError(
            f"{origin}: field 'responses': {this[0]} responses, but line {line} has {size} "
            "(Best-of-N needs the same N for every prompt)",
            origin=origin,
            field="responses",
        )
    for name, given, expected in (("response_tokens", this[1], tokens), ("finished", this[2], finished)):
        if given != expected:
            state = "given here but not" if given else "missing here but given"
            raise DataError(
                f"{origin}: field '{name}': {state} on line {line} (give it on every line or on none)",
                origin=origin,
                field=name,
            )


def _note_value(seen: dict[str, Any], value: Any) -> None:
    seen["lines"] += 1
    # a dict, not a list: distinct values in first-seen order, without a quadratic scan of unique ids
    seen["values"].setdefault(json.dumps(value, sort_keys=True), None)
