"""One registry type for losses, heads, benchmarks, metrics and data adapters.

A name can be registered once; looking up an unknown name fails with the closest names.
"""

from __future__ import annotations

import difflib
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from typing import Any, Generic, TypeVar

T = TypeVar("T")


@dataclass(frozen=True)
class Entry(Generic[T]):
    name: str
    obj: T
    description: str


class Registry(Generic[T]):
    """A named collection of things of one kind (e.g. ``LOSSES``)."""

    def __init__(self, kind: str) -> None:
        self.kind = kind
        self._entries: dict[str, Entry[T]] = {}

    def register(self, name: str, description: str = "") -> Callable[[T], T]:
        """Decorator: ``@LOSSES.register("bt", "Bradley-Terry")``. Refuses a duplicate name."""

        def decorator(obj: T) -> T:
            self.add(name, obj, description)
            return obj

        return decorator

    def add(self, name: str, obj: T, description: str = "") -> None:
        if name in self._entries:
            raise ValueError(f"{self.kind} {name!r} is already registered")
        if not description:
            doc = getattr(obj, "__doc__", None) or ""
            description = doc.strip().splitlines()[0] if doc.strip() else ""
        self._entries[name] = Entry(name, obj, description)

    def get(self, name: str) -> T:
        try:
            return self._entries[name].obj
        except KeyError:
            raise KeyError(self.unknown_message(name)) from None

    def unknown_message(self, name: str) -> str:
        near = difflib.get_close_matches(name, list(self._entries), n=3, cutoff=0.5)
        hint = f"; did you mean {', '.join(repr(n) for n in near)}?" if near else ""
        return f"unknown {self.kind} {name!r}{hint} (known: {', '.join(sorted(self._entries))})"

    def __contains__(self, name: object) -> bool:
        return name in self._entries

    def __iter__(self) -> Iterator[str]:
        return iter(sorted(self._entries))

    def entries(self) -> list[Entry[T]]:
        return [self._entries[n] for n in sorted(self._entries)]

    def __len__(self) -> int:
        return len(self._entries)


LOSSES: Registry[Any] = Registry("loss")
HEADS: Registry[Any] = Registry("head")
BENCHMARKS: Registry[Any] = Registry("benchmark")
METRICS: Registry[Any] = Registry("metric")
DATA_ADAPTERS: Registry[Any] = Registry("data adapter")
