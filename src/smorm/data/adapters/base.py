"""The adapter type: how one file format becomes smorm records.

An adapter is a small declarative entry: a detector and one pure function per record kind it can
produce. Each function maps one raw record to a list of records (a PKU row gives two rated
responses) or raises ``FieldError`` / ``DropRecord``; the loader does the rest (origin, policy,
limits, rescaling).
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

from smorm.registry import DATA_ADAPTERS

KINDS = ("pairs", "ratings", "ranked", "rmbench", "prompts")
# Options every adapter accepts; they are handled by the loader, not by adapters.
COMMON_OPTIONS = {
    "scales": "{attribute: [lo, hi]} raw rating scale mapped to [0, 1] (overrides the source's known scale)",
    "rename": "{old: new} attribute renames",
    "attributes": "rating fields to keep (or, for `ratings`, the fields that are ratings)",
    "hf": "keyword arguments for datasets.load_dataset (hf: paths)",
}


@dataclass
class Context:
    """What an adapter function may know besides the record.

    Attributes:
        source: source name.
        path: file the record came from.
        options: adapter options from the DataSpec.
        text_table: values came from a CSV file, so numbers are written as strings.
        counts: adapter-level facts for the report's notes (e.g. merged turns).
        state: per-load scratch space (e.g. fields seen so far).
        allow_blank_responses: a blank response is kept (benchmarks), not an error (training data);
            adapters pass it to :func:`~smorm.data.messages.require_response`.
    """

    source: str
    path: str = ""
    options: dict[str, Any] = field(default_factory=dict)
    text_table: bool = False
    counts: Counter[str] = field(default_factory=Counter)
    state: dict[str, Any] = field(default_factory=dict)
    allow_blank_responses: bool = False

    def option(self, name: str, default: Any, choices: tuple[Any, ...] | None = None) -> Any:
        value = self.options.get(name, default)
        if choices is not None and value not in choices:
            from smorm.data.errors import DataError

            raise DataError(
                f"{self.path}: option {name!r} must be one of {', '.join(map(repr, choices))}, got {value!r}"
            )
        return value


RecordFn = Callable[[dict[str, Any], Context], list[Any]]
DetectFn = Callable[[str, dict[str, Any]], bool]


@dataclass(frozen=True)
class Adapter:
    """One file format.

    Attributes:
        name: format name, as a DataSpec names it.
        description: one line for ``--help`` and error messages.
        detect: ``(path, first_record) -> bool`` for ``format="auto"``; None: never auto-detected.
        pairs / ratings / ranked / rmbench / prompts: record functions for the kinds it gives.
        scales: known raw scale of each rating attribute, mapped to [0, 1].
        options: adapter-specific option name -> help.
        fields: the fields that identify the format (shown when auto-detection fails).
        priority: detectors run from high to low priority (specific formats before generic ones).
        ranking_score: the attribute that ranks a prompt's responses when a ``ranking`` source names
            no ``score`` (HelpSteer: helpfulness); None: the source's only attribute.
    """

    name: str
    description: str
    detect: DetectFn | None = None
    pairs: RecordFn | None = None
    ratings: RecordFn | None = None
    ranked: RecordFn | None = None
    rmbench: RecordFn | None = None
    prompts: RecordFn | None = None
    scales: dict[str, tuple[float, float]] = field(default_factory=dict)
    options: dict[str, str] = field(default_factory=dict)
    fields: str = ""
    priority: int = 50
    ranking_score: str | None = None

    def kinds(self) -> list[str]:
        return [kind for kind in KINDS if getattr(self, kind) is not None]


def register(adapter: Adapter) -> Adapter:
    DATA_ADAPTERS.add(adapter.name, adapter, adapter.description)
    return adapter


def has(record: dict[str, Any], *names: str) -> bool:
    return all(name in record for name in names)
