"""Seeded samples of loaded records that depend only on the seed and the records themselves.

Each record gets a key: the SHA-256 of the seed and the record's content (every field except
``origin`` and ``source``, which say where it came from, not what it is). The sample is the
``size`` records with the smallest keys, returned in their original order. So the same seed and
the same records give the same sample whatever order the files list them in, and the sample is
spread over the whole file, not its first rows.
"""

from __future__ import annotations

import dataclasses
import hashlib
import json
from typing import Any

# Where a record came from or sits, not what it is: kept out of its sampling key (a pair's place in
# a ranked list is added after sampling, and leaving it out keeps older pairs' keys unchanged).
PROVENANCE_FIELDS = ("origin", "source", "list_link")


def content_key(record: Any, seed: int) -> bytes:
    """SHA-256 of ``seed`` and the record's content (a dataclass or a mapping)."""
    if dataclasses.is_dataclass(record) and not isinstance(record, type):
        content = dataclasses.asdict(record)
    else:
        content = dict(record)
    for name in PROVENANCE_FIELDS:
        content.pop(name, None)
    # default=str: metadata may hold dates or other values JSON has no type for
    text = json.dumps(content, sort_keys=True, ensure_ascii=False, default=str)
    return hashlib.sha256(f"{seed}\n{text}".encode()).digest()


def seeded_sample(records: list[Any], size: int, seed: int = 0) -> list[Any]:
    """``size`` records chosen by seeded content hash, in their original order (all when fewer).

    Exact duplicates share a key; among them the earlier ones are taken first.
    """
    if size >= len(records):
        return list(records)
    ranked = sorted(range(len(records)), key=lambda i: (content_key(records[i], seed), i))
    return [records[i] for i in sorted(ranked[:size])]
