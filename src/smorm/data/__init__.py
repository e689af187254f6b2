"""Data: readers, format adapters, validation, rescaling, chat formatting, collation and batching.

Typical use::

    from smorm.data import DataSpec, load_pairs, load_ratings, Formatter, collate_pairs

    pairs, report = load_pairs(DataSpec("../shared/data/pairs/hh-rlhf/helpful-base-train-sample.jsonl"))
    ratings, report = load_ratings("../shared/data/ratings/helpsteer/helpsteer2-train-first100.jsonl")
    formatter = Formatter(tokenizer, max_length=1024)
    chosen = [formatter.encode(p.prompt, p.chosen).input_ids for p in pairs[:8]]

Every loader validates while loading and raises ``DataError("path:line: field 'x': problem")`` at
the first bad record, or with ``on_error="skip"`` skips it and counts the reason in the report.
"""

from smorm.data import adapters  # noqa: F401  (registers the adapters)
from smorm.data.adapters.bench import load_mt_bench_answers
from smorm.data.collate import (
    collate_pairs,
    collate_ratings,
    collate_sequences,
    length_grouped_batches,
    sorted_batches,
)
from smorm.data.errors import DataError
from smorm.data.formatting import EncodedSequence, Formatter
from smorm.data.loading import (
    detect_format,
    load_pairs,
    load_prompt_records,
    load_prompts,
    load_ranked,
    load_ratings,
    load_rmbench,
)
from smorm.data.readers import iter_rows, read_records
from smorm.data.spec import DataSpec, LoadReport, PromptRecord, as_spec

__all__ = [
    "DataError",
    "DataSpec",
    "EncodedSequence",
    "Formatter",
    "LoadReport",
    "PromptRecord",
    "as_spec",
    "collate_pairs",
    "collate_ratings",
    "collate_sequences",
    "detect_format",
    "iter_rows",
    "length_grouped_batches",
    "load_mt_bench_answers",
    "load_pairs",
    "load_prompt_records",
    "load_prompts",
    "load_ranked",
    "load_ratings",
    "load_rmbench",
    "read_records",
    "sorted_batches",
]
