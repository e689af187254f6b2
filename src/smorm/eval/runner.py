"""Run a reward model over benchmarks: every sequence scored once, every head side by side.

The benchmark formulas live in :mod:`smorm.eval.benchmarks`; this module loads benchmark data,
formats and scores each unique (prompt, response) once in length-sorted batches, and hands each
mode's rewards to the benchmark as a score table.
"""

from __future__ import annotations

import json
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import torch

from smorm.types import Message

BENCH_KINDS = ("reward-bench", "rm-bench", "pairs", "ranked")


@dataclass
class BenchSpec:
    """A benchmark to run: ``limit`` takes the first N items, ``sample`` a seeded random N."""

    kind: str
    path: str
    limit: int | None = None
    name: str | None = None
    sample: int | None = None
    seed: int = 0

    @property
    def label(self) -> str:
        return self.name or f"{self.kind}:{Path(self.path).name}"


def parse_bench(text: str) -> BenchSpec:
    """``KIND:PATH[:LIMIT]`` -> :class:`BenchSpec`."""
    kind, sep, rest = text.partition(":")
    if not sep or not rest:
        raise ValueError(f"--bench {text!r}: expected KIND:PATH[:LIMIT] with KIND in {', '.join(BENCH_KINDS)}")
    if kind not in BENCH_KINDS:
        from smorm.registry import BENCHMARKS
        import smorm.eval.benchmarks  # noqa: F401 - registers

        raise ValueError(BENCHMARKS.unknown_message(kind))
    limit = None
    head, sep2, tail = rest.rpartition(":")
    if sep2 and tail.isdigit():
        rest, limit = head, int(tail)
    return BenchSpec(kind, rest, limit)


@dataclass
class BenchItems:
    """A benchmark's items as (prompt, response) references into one shared list of sequences."""

    spec: BenchSpec
    rows: list[dict[str, Any]]  # each: kind-specific, with sequence indices instead of texts
    notes: list[str] = field(default_factory=list)


class SequenceTable:
    """De-duplicates (prompt, response) so each sequence is scored once."""

    def __init__(self) -> None:
        self.items: list[tuple[list[Message], str]] = []
        self._index: dict[str, int] = {}

    def add(self, prompt: list[Message], response: str) -> int:
        key = json.dumps([prompt, response])
        if key not in self._index:
            self._index[key] = len(self.items)
            self.items.append((prompt, response))
        return self._index[key]


def _subsample(records: list[Any], spec: BenchSpec) -> list[Any]:
    """A seeded random ``spec.sample`` of the records, in file order (so every subset is represented
    in proportion, unlike the first N of a file sorted by subset)."""
    if spec.sample is None or spec.sample >= len(records):
        return records
    import random

    keep = sorted(random.Random(spec.seed).sample(range(len(records)), spec.sample))
    return [records[i] for i in keep]


def load_bench(spec: BenchSpec, table: SequenceTable) -> BenchItems:
    from smorm.data import DataSpec, load_pairs, load_ranked, load_rmbench

    data_spec = DataSpec(path=spec.path, format={"reward-bench": "reward-bench", "rm-bench": "rm-bench"}.get(
        spec.kind, "auto"), limit=spec.limit)
    rows: list[dict[str, Any]] = []
    if spec.kind in ("reward-bench", "pairs"):
        pairs, _ = load_pairs(data_spec)
        for pair in _subsample(pairs, spec):
            rows.append({"subset": pair.subset, "chosen": table.add(pair.prompt, pair.chosen),
                         "rejected": table.add(pair.prompt, pair.rejected), "origin": pair.origin})
    elif spec.kind == "rm-bench":
        items, _ = load_rmbench(data_spec)
        for item in _subsample(items, spec):
            rows.append({"domain": item.domain, "chosen": [table.add(item.prompt, r) for r in item.chosen],
                         "rejected": [table.add(item.prompt, r) for r in item.rejected], "origin": item.origin})
    elif spec.kind == "ranked":
        ranked, _ = load_ranked(data_spec)
        for group in _subsample(ranked, spec):
            row: dict[str, Any] = {"responses": [table.add(group.prompt, r) for r in group.responses],
                                   "origin": group.origin}
            if group.scores is not None:
                row["reference"] = list(group.scores)
            if group.best is not None:
                row["best"] = group.best
            rows.append(row)
    return BenchItems(spec, rows)


def score_table(items: BenchItems, rewards: np.ndarray) -> list[dict[str, Any]]:
    """Replace sequence indices by rewards: the score table a benchmark function takes."""
    table = []
    for row in items.rows:
        if items.spec.kind in ("reward-bench", "pairs"):
            out = {"chosen": float(rewards[row["chosen"]]), "rejected": float(rewards[row["rejected"]])}
            if row.get("subset"):
                out["subset"] = row["subset"]
        elif items.spec.kind == "rm-bench":
            out = {"domain": row["domain"], "chosen": [float(rewards[i]) for i in row["chosen"]],
                   "rejected": [float(rewards[i]) for i in row["rejected"]]}
        else:
            out = {"scores": [float(rewards[i]) for i in row["responses"]]}
            out.update({k: row[k] for k in ("reference", "best") if k in row})
        out["origin"] = row["origin"]
        table.append(out)
    return table


def available_modes(model: Any) -> list[str]:
    heads = set(model.heads)
    modes = []
    if "single" in heads:
        modes.append("F")
    if "multi" in heads:
        modes.append("L")
    if {"single", "multi"} <= heads:
        modes.append("M")
    return modes


def evaluate_model(model: Any, specs: list[BenchSpec], batch_size: int = 16, bf16: bool = False,
                   show_progress: bool = True) -> dict[str, Any]:
    """Score every benchmark with every available mode; returns a JSON-ready report dict."""
    from smorm.data.formatting import Formatter
    import smorm.eval.benchmarks  # noqa: F401 - registers the benchmarks
    from smorm.eval.metrics import effective_rank, expected_calibration_error, hidden_state_norms
    from smorm.models.reward_model import reward_for_mode

    table = SequenceTable()
    loaded = [load_bench(spec, table) for spec in specs]  # validates all data before scoring
    formatter = Formatter(model.tokenizer, model.config.max_length)
    sequences = [formatter.encode(prompt, response).input_ids for prompt, response in table.items]
    started = time.time()
    output = _score_with_progress(model, sequences, batch_size, bf16, show_progress)
    seconds = time.time() - started
    modes = available_modes(model)
    report: dict[str, Any] = {
        "modes": modes, "num_sequences": len(sequences), "scoring_seconds": round(seconds, 1),
        "truncated_sequences": int(getattr(formatter, "num_truncated", 0)), "benchmarks": {},
    }
    pooled = output.pooled.numpy()
    for items in loaded:
        scorer = _benchmark(items.spec.kind)
        entry: dict[str, Any] = {"kind": items.spec.kind, "path": items.spec.path, "items": len(items.rows),
                                 "limit": items.spec.limit, "sample": items.spec.sample, "modes": {}}
        used = sorted({i for row in items.rows for i in _indices(row)})
        norms_mean, norms_var = hidden_state_norms(pooled[used])
        entry["hidden_state_norm_mean"], entry["hidden_state_norm_variance"] = norms_mean, norms_var
        entry["effective_rank"] = effective_rank(pooled[used])
        for mode in modes:
            rewards = reward_for_mode(output, mode).numpy()
            rows = score_table(items, rewards)
            result = scorer.score(rows)
            if items.spec.kind in ("reward-bench", "pairs"):
                chosen = np.array([r["chosen"] for r in rows])
                rejected = np.array([r["rejected"] for r in rows])
                result["ece"] = expected_calibration_error(chosen, rejected).to_dict()
            entry["modes"][mode] = result
        report["benchmarks"][items.spec.label] = entry
    return report


def _benchmark(kind: str) -> Any:
    from smorm.registry import BENCHMARKS

    return BENCHMARKS.get(kind)


def _indices(row: dict[str, Any]) -> list[int]:
    out: list[int] = []
    for key in ("chosen", "rejected", "responses"):
        value = row.get(key)
        if isinstance(value, int):
            out.append(value)
        elif isinstance(value, list):
            out.extend(value)
    return out


def _score_with_progress(model: Any, sequences: list[list[int]], batch_size: int, bf16: bool,
                         show_progress: bool) -> Any:
    """Score in chunks so a progress bar can move; results keep input order."""
    from tqdm.auto import tqdm

    from smorm.types import RewardOutput

    chunk = max(batch_size * 8, 1)
    parts = []
    with tqdm(total=len(sequences), desc="scoring benchmarks", unit="seq", disable=not show_progress) as bar:
        for start in range(0, len(sequences), chunk):
            parts.append(model.score_token_ids(sequences[start : start + chunk], batch_size=batch_size,
                                               autocast_bf16=bf16))
            bar.update(len(sequences[start : start + chunk]))

    def cat(name: str) -> torch.Tensor | None:
        values = [getattr(p, name) for p in parts]
        return None if not values or values[0] is None else torch.cat(values)

    return RewardOutput(single=cat("single"), attributes=cat("attributes"), pooled=cat("pooled"))  # type: ignore[arg-type]


@dataclass
class EvalReport:
    report: dict[str, Any]
    table: str
    json_path: Path
    markdown_path: Path


def headline(entry: dict[str, Any], mode: str) -> tuple[float, list[float] | None]:
    """The one number per benchmark and mode shown in tables, with its 95% CI."""
    result = entry["modes"][mode]
    if entry["kind"] in ("reward-bench", "rm-bench"):
        return result["score"], result.get("ci") or result.get("score_ci")
    if entry["kind"] == "pairs":
        return result["accuracy"], result.get("ci")
    return result.get("kendall_tau_b") or 0.0, result.get("kendall_tau_b_ci")


def evaluate_run(run: Path, specs: list[BenchSpec], out_dir: Path, batch_size: int = 16, bf16: bool = False,
                 show_progress: bool = True) -> EvalReport:
    """Load a run's model, evaluate it, write report.json / report.md (+ plots) into ``out_dir``."""
    from smorm.eval.report import write_reports
    from smorm.models.reward_model import RewardModel

    model_dir = run / "model" if (run / "model").is_dir() else run
    model = RewardModel.from_pretrained(model_dir)
    report = evaluate_model(model, specs, batch_size=batch_size, bf16=bf16, show_progress=show_progress)
    report["model"] = str(model_dir)
    return write_reports(report, Path(out_dir))
