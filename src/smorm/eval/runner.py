"""Run a reward model over benchmarks: every sequence scored once, every head side by side.

The benchmark formulas live in :mod:`smorm.eval.benchmarks` and the diagnostics in
:mod:`smorm.eval.diagnostics`; this module loads benchmark data (all of it, validated, before any
model work), formats and scores each unique (prompt, response) once in globally length-sorted
batches, and hands each mode's rewards to the benchmarks as score tables.

A scorer is anything with the scoring surface of :class:`~smorm.models.reward_model.RewardModel`:
``tokenizer`` (with a chat template), ``config.max_length``, ``config.attributes``, ``heads``
(names) and ``score_token_ids(sequences, batch_size, autocast_bf16) -> RewardOutput``; e.g.
:class:`~smorm.models.hf_scorer.HFRewardModel` for any sequence-classification reward model.
"""

from __future__ import annotations

import dataclasses
import json
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from smorm.eval.report import EvalReport, headline, write_reports
from smorm.eval.scoring import packs_by_default, score_sequences
from smorm.eval.theory import load_theory_data, run_theorem1
from smorm.types import Message

BENCH_KINDS = ("reward-bench", "rm-bench", "pairs", "ranked")


@dataclass
class BenchSpec:
    """A benchmark to run.

    ``limit`` takes the first N items, ``sample`` a seeded random N (of the first ``limit`` when
    both are given; see :class:`smorm.data.DataSpec`). Items are loaded as published: a blank
    response is scored and counted (``blank_responses`` in the report). ``on_error`` decides what
    a structurally broken item does (a missing field, a wrong type, unparsable JSON): ``"error"``
    stops with ``file:line: field …``, ``"skip"`` leaves it out and counts it per reason.
    """

    kind: str
    path: str
    limit: int | None = None
    name: str | None = None
    sample: int | None = None
    seed: int = 0
    on_error: str = "error"

    @property
    def label(self) -> str:
        return self.name or f"{self.kind}:{Path(self.path).name}"


def parse_bench(text: str) -> BenchSpec:
    """``KIND:PATH[:LIMIT]`` -> :class:`BenchSpec`."""
    kind, sep, rest = text.partition(":")
    if not sep or not rest:
        raise ValueError(f"--bench {text!r}: expected KIND:PATH[:LIMIT] with KIND in {', '.join(BENCH_KINDS)}")
    if kind not in BENCH_KINDS:
        import smorm.eval.benchmarks  # noqa: F401 - registers
        from smorm.registry import BENCHMARKS

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
    load: Any = None  # the smorm.data LoadReport: records read, skipped by reason, blank responses


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


def load_bench(spec: BenchSpec, table: SequenceTable) -> BenchItems:
    """Load one benchmark's items (blank responses kept) and add their sequences to ``table``.

    A seeded ``sample`` keeps the items in file order, so every subset is represented in
    proportion (unlike the first N of a file sorted by subset).
    """
    from smorm.data import DataSpec, load_pairs, load_ranked, load_rmbench

    data_spec = DataSpec(path=spec.path, format={"reward-bench": "reward-bench", "rm-bench": "rm-bench"}.get(
        spec.kind, "auto"), limit=spec.limit, sample=spec.sample, seed=spec.seed, on_error=spec.on_error,
        allow_blank_responses=True)
    rows: list[dict[str, Any]] = []
    if spec.kind in ("reward-bench", "pairs"):
        pairs, report = load_pairs(data_spec)
        for pair in pairs:
            rows.append({"subset": pair.subset, "chosen": table.add(pair.prompt, pair.chosen),
                         "rejected": table.add(pair.prompt, pair.rejected), "origin": pair.origin})
    elif spec.kind == "rm-bench":
        items, report = load_rmbench(data_spec)
        for item in items:
            rows.append({"domain": item.domain, "chosen": [table.add(item.prompt, r) for r in item.chosen],
                         "rejected": [table.add(item.prompt, r) for r in item.rejected], "origin": item.origin})
    elif spec.kind == "ranked":
        ranked, report = load_ranked(data_spec)
        for group in ranked:
            row: dict[str, Any] = {"responses": [table.add(group.prompt, r) for r in group.responses],
                                   "origin": group.origin}
            if group.scores is not None:
                row["reference"] = list(group.scores)
            if group.best is not None:
                row["best"] = group.best
            rows.append(row)
    else:
        raise ValueError(f"benchmark {spec.label}: unknown kind {spec.kind!r} (known: {', '.join(BENCH_KINDS)})")
    return BenchItems(spec, rows, load=report)


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


@dataclass
class LoadedBenchmarks:
    """Every benchmark's items, referring into one de-duplicated table of sequences."""

    table: SequenceTable
    items: list[BenchItems]


def load_benchmarks(specs: list[BenchSpec], on_error: str | None = None) -> LoadedBenchmarks:
    """Read and validate every benchmark before any model is loaded (a bad record fails in seconds).

    ``on_error`` (``"error"`` / ``"skip"``), when given, replaces every spec's own ``on_error``.
    """
    if on_error is not None:
        specs = [dataclasses.replace(spec, on_error=on_error) for spec in specs]
    table = SequenceTable()
    return LoadedBenchmarks(table, [load_bench(spec, table) for spec in specs])


def available_modes(model: Any) -> list[str]:
    """Inference modes the scorer supports (:func:`smorm.models.scorers.available_modes`)."""
    from smorm.models.scorers import available_modes as modes

    return modes(model)


def evaluate_model(model: Any, specs: list[BenchSpec], batch_size: int = 16, bf16: bool = False,
                   show_progress: bool = True, modes: list[str] | None = None, pack: bool | None = None,
                   on_error: str | None = None) -> dict[str, Any]:
    """Score every benchmark with every available mode; returns a JSON-ready report dict.

    ``on_error``: see :func:`load_benchmarks`.
    """
    loaded = load_benchmarks(specs, on_error)
    return evaluate_loaded(model, loaded, batch_size, bf16, show_progress, modes, pack)


def evaluate_loaded(model: Any, loaded: LoadedBenchmarks, batch_size: int = 16, bf16: bool = False,
                    show_progress: bool = True, modes: list[str] | None = None, pack: bool | None = None
                    ) -> dict[str, Any]:
    """Score already-loaded benchmarks (see :func:`load_benchmarks`) with every available mode.

    ``pack``: encode a prompt shared by several responses once (default: on for a smorm RewardModel
    on a causal backbone, see :func:`score_sequences`); scores are the same up to float rounding.
    """
    from smorm.data.formatting import Formatter
    from smorm.models.reward_model import reward_for_mode

    supported = available_modes(model)
    unknown = [m for m in modes or [] if m not in supported]
    if unknown:
        raise ValueError(f"mode(s) {unknown} not available for this model (it has {', '.join(supported)})")
    chosen_modes = [m for m in supported if modes is None or m in modes]
    formatter = Formatter(model.tokenizer, model.config.max_length)
    encoded = [formatter.encode(prompt, response) for prompt, response in loaded.table.items]
    report: dict[str, Any] = {
        "modes": chosen_modes, "attributes": list(getattr(model.config, "attributes", []) or []),
        "num_sequences": len(encoded), "batch_size": batch_size, "precision": "bf16" if bf16 else "fp32",
        "truncated_sequences": int(formatter.num_truncated), "max_length": int(model.config.max_length),
        "shared_prompt_packing": packs_by_default(model) if pack is None else bool(pack), "benchmarks": {},
    }
    if not encoded:
        return report
    started = time.time()
    output = score_sequences(model, [e.input_ids for e in encoded], batch_size, bf16, show_progress,
                             "scoring benchmarks", [e.response_start for e in encoded], pack)
    report["scoring_seconds"] = round(time.time() - started, 1)
    arrays = ScoredArrays(
        rewards={mode: reward_for_mode(output, mode).double().numpy() for mode in chosen_modes},
        pooled=output.pooled.double().numpy(),
        attributes=None if output.attributes is None else output.attributes.double().numpy(),
        gate_weights=None if output.gate_weights is None else output.gate_weights.double().numpy(),
        attribute_names=report["attributes"],
        response_lengths=response_lengths(loaded.table),
    )
    report["length_floor"] = LENGTH_FLOOR_NOTE
    for items in loaded.items:
        label = items.spec.label
        while label in report["benchmarks"]:  # the same file twice (e.g. two samples) keeps both
            label += "'"
        report["benchmarks"][label] = benchmark_entry(items, arrays)
    return report


@dataclass
class ScoredArrays:
    """Per-sequence model outputs, indexed like the de-duplicated sequence table.

    Attributes:
        rewards: ``{mode: [num_sequences]}``.
        pooled: ``[num_sequences, d]`` last-real-token hidden states.
        attributes: ``[num_sequences, K]`` multi-head outputs, or None.
        gate_weights: ``[num_sequences, K]`` gate weights, or None.
    """

    rewards: dict[str, np.ndarray]
    pooled: np.ndarray
    attributes: np.ndarray | None
    gate_weights: np.ndarray | None
    attribute_names: list[str]
    response_lengths: np.ndarray | None = None
    """``[num_sequences]`` response length in characters: the length floor's reward."""


LENGTH_FLOORS = {"longer": 1.0, "shorter": -1.0}
LENGTH_FLOOR_NOTE = ("length floor: 'longer' / 'shorter' score each benchmark with the response's length in "
                     "characters as the reward (longer / shorter response wins; equal lengths are a tie, scored "
                     "as the benchmark scores ties), with the same bootstrap intervals as the model's heads")


def response_lengths(table: SequenceTable) -> np.ndarray:
    """Each sequence's response length in characters (model-free, untruncated: one floor for every model)."""
    return np.array([float(len(response)) for _, response in table.items])


def length_floor_checks(kind: str, modes: dict[str, Any], floors: dict[str, Any]) -> dict[str, Any]:
    """Per mode: the better length floor, and whether the head's score is not above its interval.

    A head whose headline score is at or below the upper end of the better floor's 95% interval is
    flagged (``not_above_floor``): on that benchmark it is not shown to beat "the longer (or shorter)
    response wins".
    """
    checks: dict[str, Any] = {}
    floor_heads = {name: headline({"kind": kind, "modes": floors}, name) for name in floors}
    usable = {name: value for name, value in floor_heads.items() if value[0] is not None}
    if not usable:
        return checks
    best = max(usable, key=lambda name: usable[name][0])
    floor_score, floor_ci = usable[best]
    upper = floor_ci[1] if floor_ci else floor_score
    for mode in modes:
        score, _ = headline({"kind": kind, "modes": modes}, mode)
        checks[mode] = {"floor": best, "floor_score": floor_score, "floor_ci": floor_ci,
                        "not_above_floor": score is not None and score <= upper}
    return checks


def benchmark_entry(items: BenchItems, arrays: ScoredArrays) -> dict[str, Any]:
    """One benchmark's results: scores with CIs and diagnostics per mode, plus mode-free statistics."""
    from smorm.eval import diagnostics
    from smorm.eval.metrics import effective_rank, hidden_state_norms

    kind = items.spec.kind
    entry: dict[str, Any] = {"kind": kind, "path": items.spec.path, "items": len(items.rows),
                             "limit": items.spec.limit, "sample": items.spec.sample, "seed": items.spec.seed,
                             "on_error": items.spec.on_error, "modes": {}}
    if items.load is not None:
        # a blank response is scored as published; a broken row (under on_error skip) is not
        entry.update({"records_read": items.load.read, "skipped": dict(items.load.skipped),
                      "blank_responses": items.load.blank_responses, "load_notes": list(items.load.notes)})
    used = sorted({i for row in items.rows for i in _indices(row)})
    entry["hidden_state_norm_mean"], entry["hidden_state_norm_variance"] = hidden_state_norms(arrays.pooled[used])
    entry["effective_rank"] = effective_rank(arrays.pooled[used])
    entry["head_spread"] = {mode: float(np.std(rewards[used])) for mode, rewards in arrays.rewards.items()}
    pairs = diagnostics.comparisons(kind, items.rows)  # on index rows: the sequence indices of each comparison
    if {"F", "M"} <= set(arrays.rewards) and pairs is not None and pairs[0].size:
        chosen, rejected = (side.astype(np.int64) for side in pairs)
        sign_f = np.sign(arrays.rewards["F"][chosen] - arrays.rewards["F"][rejected])
        sign_m = np.sign(arrays.rewards["M"][chosen] - arrays.rewards["M"][rejected])
        entry["m_agrees_with_f"] = float((sign_f == sign_m).mean())
    scorer = _benchmark(kind)
    for mode, rewards in arrays.rewards.items():
        rows = score_table(items, rewards)
        result = scorer.score(rows)
        result.update(diagnostics.pairwise_diagnostics(kind, rows))  # ECE dict replaces the pairs' float
        entry["modes"][mode] = result
    if arrays.response_lengths is not None:
        floors = {name: scorer.score(score_table(items, sign * arrays.response_lengths))
                  for name, sign in LENGTH_FLOORS.items()}
        entry["length_floor"] = floors
        entry["length_floor_checks"] = length_floor_checks(kind, entry["modes"], floors)
    responses = diagnostics.benchmark_response_indices(kind, items.rows)
    if arrays.attributes is not None and responses is not None:
        entry["attribute_means"] = diagnostics.attribute_means(arrays.attributes, *responses, arrays.attribute_names)
        if kind == "rm-bench":
            # Tables 12-13 of 000 split comparisons by whether the multi-objective reward (L) got them right
            decisive = arrays.rewards.get("L", arrays.attributes.mean(axis=1))
            entry["attribute_difference_stats"] = diagnostics.rm_bench_attribute_stats(
                items.rows, arrays.attributes, decisive, arrays.attribute_names)
            entry["attribute_difference_stats_decided_by"] = "L"
    if arrays.gate_weights is not None:
        entry["gate_weight_means"] = diagnostics.gate_weight_means(arrays.gate_weights, used, arrays.attribute_names)
    return entry


def _benchmark(kind: str) -> Any:
    import smorm.eval.benchmarks  # noqa: F401 - registers the benchmarks
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


# ---------------------------------------------------------------------------------------
# a run, a model folder or a hub id -> report files


def load_scorer_for(run: str | Path, hf: bool | None = None, max_length: int | None = None,
                    device: str | None = None) -> tuple[Any, str]:
    """The scorer (:func:`smorm.models.scorers.load_scorer`) and the folder or id it came from, for reports."""
    from smorm.models.reward_model import model_folder
    from smorm.models.scorers import load_scorer, looks_like_hub_id

    model = load_scorer(run, hf=hf, max_length=max_length, device=device)
    folder = model_folder(run)
    return model, str(folder) if folder.exists() or not looks_like_hub_id(str(run)) else str(run)


def evaluate_run(run: str | Path, specs: list[BenchSpec], out_dir: Path, batch_size: int = 16, bf16: bool = False,
                 show_progress: bool = True, *, hf: bool | None = None, max_length: int | None = None,
                 theory: bool = False, theory_sample: int = 200, theory_seed: int = 0,
                 theory_ridge: float = 1e-3, modes: list[str] | None = None, pack: bool | None = None,
                 on_error: str | None = None, device: str | None = None) -> EvalReport:
    """Evaluate a model on benchmarks (and, with ``theory``, check Theorem 1 on its training data);
    write report.json, report.md and plots into ``out_dir``.

    All data (benchmarks, and the run's D_S / D_M for ``theory``) is read and validated before the
    model is loaded. ``on_error`` (``"error"`` / ``"skip"``), when given, replaces every
    benchmark's ``BenchSpec.on_error``; skipped rows are counted per reason in the report.
    ``device``: where to score (``auto``: the accelerator if present; default: the host).
    """

    if not specs and not theory:
        raise ValueError("nothing to do: give at least one benchmark (--bench KIND:PATH) or --theory")
    loaded = load_benchmarks(specs, on_error)
    theory_data = load_theory_data(run, theory_sample, theory_seed) if theory else None
    model, source = load_scorer_for(run, hf=hf, max_length=max_length, device=device)
    report = evaluate_loaded(model, loaded, batch_size, bf16, show_progress, modes, pack)
    report["model"] = source
    report["scorer"] = type(model).__name__
    if theory_data is not None:
        report["theory"] = run_theorem1(model, theory_data, batch_size, bf16, theory_ridge, show_progress)
    return write_reports(report, Path(out_dir))
