"""``smorm study CONFIG``: train every (method, seed), score each on the dev benchmarks, compare.

Steps, each resumable:

1. Every run config is built and validated, and every benchmark read, before anything trains.
2. Runs train one after another (seed by seed, so a stopped study has whole seeds); a run whose folder
   holds a finished model of the same config is not trained again, an interrupted one resumes from
   its checkpoints (:func:`smorm.train.ensemble.finished`).
3. Each run scores the study's benchmark table once (``RUN/study-scores.safetensors``, kept while the
   table and precision are the same). A ``top_k`` run reads its lower layers from the shared feature
   store (:class:`~smorm.models.cached_scoring.CachedTrunkScorer`), so the table's lower layers are
   computed once for the whole study. Baseline SM is computed from its SORM's and MORM's scores.
4. ``study.json`` and ``study.md``: per benchmark column, each method's mode with a 95% interval over
   items and seeds, the length floor, the paired differences, and the weight sweep (000 Fig. 6).
"""

from __future__ import annotations

import json
import logging
import re
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from smorm.eval.runner import BenchSpec, LoadedBenchmarks, load_benchmarks, response_lengths
from smorm.io import atomic_save_tensors, atomic_write_json, atomic_write_text, read_json
from smorm.settings import load_mapping, validate_settings
from smorm.study.settings import StudyConfig, StudyMethod, merge
from smorm.study.stats import Resampler, item_outcomes
from smorm.train.config import RunConfig, resolve_path, resolve_paths
from smorm.train.ensemble import finished

logger = logging.getLogger(__name__)
SCORES_NAME = "study-scores.safetensors"


@dataclass
class PlannedRun:
    """One trained run (``config``) or one Baseline SM of two trained runs (``members``)."""

    label: str  # the method's row name: SMORM, SORM, SMORM@w=0.1, Baseline SM
    seed: int
    modes: list[str]
    config: RunConfig | None = None
    members: list[str] = field(default_factory=list)  # Baseline SM: the labels of its SORM and MORM

    @property
    def folder(self) -> Path:
        assert self.config is not None
        return Path(self.config.output_dir)


def slug(text: str) -> str:
    return re.sub(r"[^A-Za-z0-9.=-]+", "-", text).strip("-").lower()


def load_study(path: str | Path) -> tuple[StudyConfig, Path]:
    """The validated study config and the folder its relative data paths are read from."""
    return validate_settings(StudyConfig, load_mapping(path), where=str(path)), Path(path).resolve().parent


def _run_config(study: StudyConfig, base_dir: Path, overlay: dict[str, Any], seed: int, folder: Path,
                where: str) -> RunConfig:
    tree = merge(study.base, overlay)
    tree["output_dir"] = str(folder)
    tree.setdefault("train", {})["seed"] = seed
    tree.pop("eval", None)  # the study evaluates every run itself, on its own benchmarks
    resolve_paths(tree, base_dir)
    return validate_settings(RunConfig, tree, where=where)


def _with_weight(overlay: dict[str, Any], base: dict[str, Any], loss: str, weight: float, where: str
                 ) -> dict[str, Any]:
    losses = [dict(entry) for entry in merge(base, overlay).get("losses") or []]
    names = [entry.get("name") for entry in losses]
    if loss not in names:
        raise ValueError(f"{where}: the swept method has no loss {loss!r} (its losses: {names})")
    for entry in losses:
        if entry.get("name") == loss:
            entry["weight"] = weight
    return merge(overlay, {"losses": losses})


def plan_runs(study: StudyConfig, base_dir: Path, where: str = "study") -> list[PlannedRun]:
    """Every run of the study, validated: the methods seed by seed, then the sweep (a sweep point equal to
    a method's run reuses it)."""
    root = Path(study.output_dir) / "runs"
    methods = {m.name: m for m in study.methods}
    runs: list[PlannedRun] = []
    by_config: dict[str, PlannedRun] = {}
    seeds_of = study.method_seeds()
    for seed in study.seeds:
        for method in study.methods:
            if method.baseline_sm is not None or seed not in seeds_of[method.name]:
                continue
            config = _run_config(study, base_dir, method.config, seed, root / f"{slug(method.name)}-s{seed}",
                                 f"{where}: methods.{method.name}")
            run = PlannedRun(method.name, seed, _modes(method, config), config)
            by_config[_config_identity(config)] = run
            runs.append(run)
        for method in study.methods:
            if method.baseline_sm is not None and seed in seeds_of[method.name]:
                runs.append(PlannedRun(method.name, seed, method.modes or ["M"], members=list(method.baseline_sm)))
    if study.sweep is None:
        return runs
    swept = methods[study.sweep.method]
    for seed in study.sweep.seeds if study.sweep.seeds is not None else study.seeds:  # after every method
        for weight in study.sweep.weights:
            label = f"{swept.name}@w={weight:g}"
            overlay = _with_weight(swept.config, study.base, study.sweep.loss, weight, f"{where}: sweep")
            config = _run_config(study, base_dir, overlay, seed, root / f"{slug(label)}-s{seed}",
                                 f"{where}: sweep {label}")
            same = by_config.get(_config_identity(config))
            if same is not None:  # this weight is the method's own: its runs are the sweep point
                config = same.config
            runs.append(PlannedRun(label, seed, list(study.sweep.modes), config))
    return runs


def _config_identity(config: RunConfig) -> str:
    return json.dumps(config.model_dump(mode="json", exclude={"output_dir"}), sort_keys=True)


def _modes(method: StudyMethod, config: RunConfig) -> list[str]:
    return list(method.modes) if method.modes else [config.model.mode]


def bench_specs(study: StudyConfig, base_dir: Path) -> list[BenchSpec]:
    specs = []
    for bench in study.benches:
        specs.append(BenchSpec(bench.kind, resolve_path(bench.path, base_dir), bench.limit, bench.label,
                               bench.sample, bench.seed))
    return specs


# ------------------------------------------------------------------ scoring


def table_fingerprint(loaded: LoadedBenchmarks, precision: str, max_length: int) -> str:
    import hashlib

    digest = hashlib.sha256(json.dumps([loaded.table.items, precision, max_length]).encode())
    return digest.hexdigest()[:16]


def score_run(run: PlannedRun, loaded: LoadedBenchmarks, study: StudyConfig, show_progress: bool) -> Path:
    """Score the benchmark table with a trained run (lower layers from the store under ``top_k``); a run
    whose stored scores are of this table and precision is not loaded again."""
    from safetensors import safe_open

    from smorm.data.formatting import Formatter
    from smorm.eval.scoring import score_sequences
    from smorm.models.cached_scoring import CachedTrunkScorer
    from smorm.models.composite import member_config
    from smorm.models.devices import resolve_device, resolve_precision
    from smorm.models.feature_cache import feature_store_root
    from smorm.models.gate_spec import GATE_HEAD
    from smorm.models.reward_model import RewardModel
    from smorm.models.scorers import stored_outputs

    assert run.config is not None
    path = run.folder / SCORES_NAME
    device = resolve_device("auto")
    precision = resolve_precision(study.eval_precision, device)
    key = table_fingerprint(loaded, precision, member_config(run.folder).max_length)
    if path.is_file():
        with safe_open(str(path), framework="pt") as handle:
            if (handle.metadata() or {}).get("table") == key:
                return path
    model = RewardModel.from_pretrained(run.folder, device=device)
    scorer: Any = model
    if run.config.train.trunk == "top_k" and GATE_HEAD not in model.heads:
        scorer = CachedTrunkScorer(model, run.config.train.top_k, feature_store_root(run.config.train.cache_dir))
    formatter = Formatter(model.tokenizer, model.config.max_length)
    encoded = [formatter.encode(prompt, response) for prompt, response in loaded.table.items]
    started = time.time()
    output = score_sequences(scorer, [e.input_ids for e in encoded], study.eval_batch_size, precision == "bf16",
                             show_progress, f"scoring {run.folder.name}", [e.response_start for e in encoded])
    meta = {"table": key, "precision": precision, "seconds": f"{time.time() - started:.1f}",
            "head_scales": json.dumps(model.config.head_scales or {}), "mode_scale": model.config.mode_scale,
            "truncated": str(formatter.num_truncated)}
    return atomic_save_tensors(path, stored_outputs(output), metadata=meta)


def read_scores(path: Path) -> tuple[Any, dict[str, str]]:
    """A run's stored outputs (:func:`~smorm.models.scorers.stored_outputs`) as a RewardOutput (pooled
    left empty) and the file's metadata."""
    from safetensors import safe_open

    from smorm.models.scorers import output_from_stored

    with safe_open(str(path), framework="pt") as handle:
        tensors = {k: handle.get_tensor(k) for k in handle.keys()}  # noqa: SIM118
        meta = dict(handle.metadata() or {})
    return output_from_stored(tensors), meta


def mode_rewards(run: PlannedRun, scores: dict[tuple[str, int], Path]) -> dict[str, np.ndarray]:
    """``{mode: [num_sequences]}`` of a run (a Baseline SM combines its two members' stored outputs)."""
    from smorm.models.composite import combine_baseline_sm
    from smorm.models.reward_model import reward_for_mode

    if run.members:
        (sorm, sorm_meta), (morm, morm_meta) = (read_scores(scores[(m, run.seed)]) for m in run.members)
        sorm_scales, morm_scales = json.loads(sorm_meta["head_scales"]), json.loads(morm_meta["head_scales"])
        scales = {head: part[head] for head, part in (("F", sorm_scales), ("L", morm_scales)) if head in part}
        output = combine_baseline_sm(sorm, morm, scales, sorm_meta.get("mode_scale", "standardized"))
    else:
        output, _ = read_scores(scores[(run.label, run.seed)])
    return {mode: reward_for_mode(output, mode).double().numpy() for mode in run.modes}


# ------------------------------------------------------------------ tables


def bench_columns(loaded: LoadedBenchmarks, rewards: np.ndarray) -> dict[str, np.ndarray]:
    """``{"<bench> <column>": per-item outcomes}`` over every benchmark of the study."""
    columns: dict[str, np.ndarray] = {}
    for items in loaded.items:
        for name, outcomes in item_outcomes(items.spec.kind, items.rows, rewards).items():
            columns[f"{items.spec.label} {name}"] = outcomes
    return columns


def aggregate(study: StudyConfig, runs: list[PlannedRun], loaded: LoadedBenchmarks,
              scores: dict[tuple[str, int], Path]) -> dict[str, Any]:
    """Scores with intervals per (method, mode) and column, the length floor, differences, sweep."""
    outcomes: dict[str, dict[int, dict[str, np.ndarray]]] = {}  # "METHOD/MODE" -> seed -> column -> items
    for run in runs:
        for mode, rewards in mode_rewards(run, scores).items():
            outcomes.setdefault(f"{run.label}/{mode}", {})[run.seed] = bench_columns(loaded, rewards)
    lengths = response_lengths(loaded.table)
    floors = {"longer wins": bench_columns(loaded, lengths), "shorter wins": bench_columns(loaded, -lengths)}
    columns = list(floors["longer wins"])
    resampler = Resampler(study.bootstrap, max(len(study.seeds), 1), study.bootstrap_seed)

    def stacked(key: str, column: str) -> tuple[list[int], np.ndarray]:
        seeds = sorted(outcomes[key])
        return seeds, np.stack([outcomes[key][s][column] for s in seeds])

    table: dict[str, dict[str, Any]] = {}
    for key in outcomes:
        table[key] = {column: resampler.estimate(stacked(key, column)[1]) for column in columns}
    for name, by_column in floors.items():
        table[name] = {column: resampler.estimate(by_column[column][None]) for column in columns}
    differences: dict[str, dict[str, Any]] = {}
    for comparison in study.comparisons:
        label = f"{comparison.a} − {comparison.b}"
        differences[label] = {}
        for column in columns:
            seeds_a, a = stacked(comparison.a, column)
            seeds_b, b = stacked(comparison.b, column)
            if seeds_a != seeds_b:
                raise ValueError(f"{label}: seeds differ ({seeds_a} vs {seeds_b})")
            differences[label][column] = resampler.difference(a, b)
    longer = floors["longer wins"]
    floor_differences = {}
    for key in outcomes:
        floor_differences[key] = {column: resampler.difference(stacked(key, column)[1], longer[column][None])
                                  for column in columns}
    benchmarks: dict[str, list[str]] = {}
    for items in loaded.items:
        benchmarks[items.spec.label] = list(item_outcomes(items.spec.kind, items.rows, lengths))
    return {"columns": columns, "benchmarks": benchmarks, "table": table, "differences": differences,
            "versus_longer": floor_differences, "seeds": list(study.seeds),
            "items": {column: int(floors["longer wins"][column].size) for column in columns},
            "bootstrap": {"resamples": study.bootstrap, "seed": study.bootstrap_seed,
                          "over": "items and seeds, drawn together; one draw shared by every row (paired)"}}


def _cell(estimate: dict[str, Any], signed: bool = False) -> str:
    if estimate.get("mean") is None:
        return "–"
    mean, (low, high) = estimate["mean"] * 100, (v * 100 for v in estimate["ci"])
    star = "*" if estimate.get("excludes_zero") else ""
    return f"{mean:+.1f} [{low:+.1f}, {high:+.1f}]{star}" if signed else f"{mean:.1f} [{low:.1f}, {high:.1f}]"


def _groups(results: dict[str, Any]) -> dict[str, list[tuple[str, str]]]:
    """Columns by benchmark: ``{label: [(column key, column name), ...]}``."""
    groups: dict[str, list[tuple[str, str]]] = {}
    for label, names in results["benchmarks"].items():
        groups[label] = [(f"{label} {name}", name) for name in names]
    return groups


def _row_name(key: str, row: dict[str, Any], study: StudyConfig) -> str:
    """``key``, with its seed count where a method ran fewer seeds than the study (a screened candidate)."""
    seeds = next((cell.get("seeds") for cell in row.values() if isinstance(cell, dict)), None)
    if key in ("longer wins", "shorter wins") or seeds is None or seeds == len(study.seeds):
        return key
    return f"{key} ({seeds} seed{'s' if seeds > 1 else ''})"


def markdown(study: StudyConfig, results: dict[str, Any], command: str, seconds: float) -> str:
    from smorm.eval.report import markdown_table

    lines = [f"# Study: {Path(study.output_dir).name}", "",
             f"`{command}` — {len(study.seeds)} seeds ({', '.join(map(str, study.seeds))}), "
             f"wall time {seconds / 60:.1f} min on this machine.", "",
             "Accuracy in %, mean over seeds of the mean over items; [95% interval] from a bootstrap over items "
             f"and seeds drawn together ({study.bootstrap} resamples). RM-Bench columns: the share of an item's "
             "hard / normal / easy comparisons won (avg: all nine). `length-neutral`: RewardBench's "
             "mt-bench-easy/med/hard and llmbar-natural pairs. `longer wins` / `shorter wins`: the response's "
             "length in characters as the reward (the length floor).", ""]
    main = [key for key in results["table"] if "@w=" not in key]
    for label, columns in _groups(results).items():
        header = ["method / mode", *[f"{name} (n={results['items'][key]})" for key, name in columns]]
        lines += [f"## {label}", "", markdown_table(header, [[_row_name(key, results["table"][key], study),
                                                               *[_cell(results["table"][key][c]) for c, _ in columns]]
                                                              for key in main]), ""]
        if results["differences"]:
            lines += ["Paired differences (points; * where the 95% interval excludes 0):", "",
                      markdown_table(["difference", *[name for _, name in columns]],
                                     [[d, *[_cell(by[c], signed=True) for c, _ in columns]]
                                      for d, by in results["differences"].items()]), ""]
        lines += ["Minus `longer wins`, paired over items:", "",
                  markdown_table(["method / mode", *[name for _, name in columns]],
                                 [[key, *[_cell(by[c], signed=True) for c, _ in columns]]
                                  for key, by in results["versus_longer"].items() if "@w=" not in key]), ""]
    sweep = [key for key in results["table"] if "@w=" in key]
    if sweep and study.sweep is not None:
        all_columns = [(c, f"{label} {name}") for label, cols in _groups(results).items() for c, name in cols]
        lines += [f"## Weight sweep (000 Fig. 6): {study.sweep.method}, weight of `{study.sweep.loss}` "
                  f"(seeds {', '.join(map(str, study.sweep.seeds or study.seeds))})", "",
                  markdown_table(["run / mode", *[name for _, name in all_columns]],
                                 [[key, *[_cell(results["table"][key][c]) for c, _ in all_columns]] for key in sweep]),
                  ""]
    return "\n".join(lines)


def run_study(path: str | Path, show_progress: bool = True, command: str | None = None) -> Path:
    """Run (or finish) the study ``path`` describes; returns the folder holding study.md."""
    from smorm.train.trainer import train

    started = time.time()
    study, base_dir = load_study(path)
    runs = plan_runs(study, base_dir, where=str(path))  # every config validated before training
    loaded = load_benchmarks(bench_specs(study, base_dir))
    out = Path(study.output_dir)
    out.mkdir(parents=True, exist_ok=True)
    progress_file = out / "progress.json"
    progress = read_json(progress_file) if progress_file.is_file() else {"seconds": 0.0}
    scores: dict[tuple[str, int], Path] = {}
    trained = [run for run in runs if run.config is not None]
    for number, run in enumerate(trained, 1):
        assert run.config is not None
        if not finished(run.config):
            logger.info("study: training %s seed %s (%d/%d) in %s", run.label, run.seed, number, len(trained),
                        run.folder)
            train(run.config, show_progress=show_progress)
        scores[(run.label, run.seed)] = score_run(run, loaded, study, show_progress)
        atomic_write_json(progress_file, {"seconds": progress["seconds"] + time.time() - started,
                                          "done": number, "of": len(trained)})
    results = aggregate(study, runs, loaded, scores)
    seconds = progress["seconds"] + time.time() - started
    results["wall_seconds"] = round(seconds, 1)
    results["config"] = study.model_dump(mode="json")
    atomic_write_json(out / "study.json", results)
    atomic_write_text(out / "study.md", markdown(study, results, command or f"smorm study {path}", seconds))
    return out
