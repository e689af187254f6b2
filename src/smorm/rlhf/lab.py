"""``smorm bon``: sample a pool, score it with every proxy and the gold, draw the Best-of-N curves.

Reads top to bottom: prompts -> pool (generated or resumed) -> scores (one pass per model folder,
cached) -> curves (order-statistics estimator, :mod:`smorm.rlhf.bon`) -> CSV + PNG -> the judges'
dev-benchmark accuracy side by side, so a reader can check that the gold is the stronger judge.
"""

from __future__ import annotations

import hashlib
import json
import logging
import time
from collections.abc import Callable
from dataclasses import asdict
from pathlib import Path
from typing import Any

import numpy as np

from smorm.io import atomic_write_json, read_json
from smorm.models.devices import fast_bf16, resolve_device
from smorm.models.feature_cache import feature_store_root
from smorm.models.reward_model import model_folder
from smorm.models.scorers import load_scorer
from smorm.rlhf.bon import (
    BoNCurve,
    bon_curve,
    bon_grid,
    crossfit_drop,
    drop_from_peak,
    paired_gold_difference,
)
from smorm.rlhf.generate import generate_pool
from smorm.rlhf.pools import PoolEntry, read_imported_pool
from smorm.rlhf.scorers import PoolScores, ScorerRef, parse_scorer, pool_scores
from smorm.rlhf.settings import BoNSettings

logger = logging.getLogger(__name__)


def load_prompt_set(settings: BoNSettings) -> tuple[list[Any], dict[str, Any]]:
    """The in-distribution held-out set (``id``) or a prompt file's seeded sample."""
    from smorm.rlhf.prompts import file_prompts, heldout_prompts

    if settings.prompts == "id":
        runs = [parse_scorer(p).path for p in settings.proxies]
        return heldout_prompts(runs, settings.num_prompts, settings.prompt_seed, settings.max_prompt_chars)
    return file_prompts(settings.prompts, settings.num_prompts, settings.prompt_seed)


def pool_summary(entries: list[PoolEntry]) -> dict[str, Any]:
    """Counts, mean length and finished share (None where an imported pool does not give them)."""
    tokens = response_tokens(entries)
    finished = None if entries[0].finished is None else np.asarray([e.finished for e in entries], dtype=bool)
    return {"prompts": len(entries), "samples_per_prompt": len(entries[0].responses),
            "mean_response_tokens": None if tokens is None else round(float(tokens.mean()), 1),
            "finished_fraction": None if finished is None else round(float(finished.mean()), 3)}


def response_tokens(entries: list[PoolEntry]) -> np.ndarray | None:
    """``[P, N]`` response lengths in policy tokens, or None when the pool does not give them."""
    if any(e.response_tokens is None for e in entries):
        return None
    return np.asarray([e.response_tokens for e in entries], dtype=np.float64)


def policy_dtype(settings: BoNSettings) -> str:
    """The policy's weight dtype: ``auto`` is bfloat16 where the sampling device multiplies bf16 natively
    (:func:`~smorm.models.devices.fast_bf16`), else float32; the pool's meta file records the result."""
    if settings.policy_dtype != "auto":
        return settings.policy_dtype
    return "bfloat16" if fast_bf16(resolve_device(settings.device)) else "float32"


def load_pool(settings: BoNSettings, pool_path: Path, log: Callable[[str], None]
              ) -> tuple[list[PoolEntry], dict[str, Any], dict[str, Any] | None]:
    """``(entries, prompt report, provenance)``: an imported pool as it is, else the prompt set's pool,
    generated or resumed (provenance None: the pool's meta file says how it was sampled)."""
    if settings.import_pool:
        entries, provenance = read_imported_pool(pool_path)
        log(f"imported pool: {len(entries)} prompts x {provenance['samples_per_prompt']} responses "
            f"from {pool_path}" + (f" (cut-short line {provenance['cut_short_last_line']} dropped)"
                                   if provenance["cut_short_last_line"] else ""))
        return entries, {"kind": "imported pool", "file": str(pool_path), "selected": len(entries)}, provenance
    prompts, prompt_report = load_prompt_set(settings)
    log(f"prompts: {len(prompts)} ({prompt_report['kind']})")
    entries = generate_pool(settings.policy, prompts, pool_path, settings.sampling, batch_rows=settings.batch_rows,
                            dtype=policy_dtype(settings), device=settings.device,
                            progress=lambda done, total: log(f"pool: {done}/{total} prompts sampled"))
    return entries, prompt_report, None


def attribute_source(settings: BoNSettings, scores: dict[Path, PoolScores], proxy: ScorerRef,
                     gold: ScorerRef) -> PoolScores | None:
    """Whose multi head rates a proxy's picks: the explicit model, else the gold, else the proxy."""
    if settings.attribute_model is not None:
        return scores[model_folder(parse_scorer(settings.attribute_model).path)]
    for ref in (gold, proxy):
        candidate = scores[model_folder(ref.path)]
        if candidate.attributes is not None:
            return candidate
    return None


def compute_curves(
    settings: BoNSettings, entries: list[PoolEntry], scores: dict[Path, PoolScores],
) -> tuple[list[BoNCurve], list[str]]:
    """One curve per proxy against the gold; attributes followed when a multi head is available."""
    gold = parse_scorer(settings.gold)
    gold_scores = scores[model_folder(gold.path)].reward(gold.mode)
    pool_size = gold_scores.shape[1]
    grid = bon_grid(pool_size, settings.grid_points)
    tokens = response_tokens(entries)
    curves: list[BoNCurve] = []
    followed: list[str] = []
    for text in settings.proxies:
        proxy = parse_scorer(text)
        proxy_scores = scores[model_folder(proxy.path)]
        extra: dict[str, np.ndarray] = {} if tokens is None else {"response_tokens": tokens}
        judge = attribute_source(settings, scores, proxy, gold)
        if judge is not None and judge.attributes is not None:
            for k, name in enumerate(judge.attribute_names):
                extra[f"attribute:{name}"] = judge.attributes[:, :, k]
                if name not in followed:
                    followed.append(name)
        curves.append(bon_curve(proxy.label, proxy_scores.reward(proxy.mode), gold_scores, grid, extra))
    followed = [a for a in followed if all(f"attribute:{a}" in c.extra for c in curves)]
    return curves, followed


def run_bon(settings: BoNSettings, log: Callable[[str], None] = logger.info) -> dict[str, Any]:
    """Run the whole Best-of-N experiment; returns (and writes) ``summary.json``."""
    from smorm.rlhf.plots import attribute_rows, bon_rows, plot_attributes, plot_bon, write_csv

    started = time.time()
    out = Path(settings.out_dir)
    out.mkdir(parents=True, exist_ok=True)
    refs = [parse_scorer(p) for p in [*settings.proxies, settings.gold]]
    for ref in refs:  # fail before generating anything
        if not model_folder(ref.path).is_dir():
            raise FileNotFoundError(f"reward model folder not found: {ref.path}")
    specs = bench_specs(settings)
    pool_path = Path(settings.pool) if settings.pool else out / "pool.jsonl"
    entries, prompt_report, provenance = load_pool(settings, pool_path, log)
    generated = time.time()
    folders = list(dict.fromkeys(model_folder(r.path) for r in refs))
    if settings.attribute_model:
        folders.append(model_folder(parse_scorer(settings.attribute_model).path))
    scores = {}
    for folder in dict.fromkeys(folders):
        log(f"scoring the pool with {folder}")
        scores[folder] = pool_scores(folder, entries, pool_path, out / "scores", settings.score_batch_size,
                                     settings.bf16, device=settings.device,
                                     store_root=feature_store_root() if settings.feature_cache else None)
    scored = time.time()
    curves, attributes = compute_curves(settings, entries, scores)
    title = f"{prompt_report['kind']}: {len(entries)} prompts × N={len(entries[0].responses)}"
    write_csv(out / "bon.csv", *bon_rows(curves))
    comparison = compare_curves(curves)
    write_csv(out / "bon_paired.csv", *comparison["rows"])
    plot_bon(curves, out / "bon.png", title=title)
    if attributes:
        write_csv(out / "attributes.csv", *attribute_rows(curves, attributes))
        plot_attributes(curves, attributes, out / "attributes.png", title=title)
    bench = judges_table(refs, specs, settings, out / "bench") if specs else None
    summary = {
        "settings": {**settings.model_dump(mode="json"), "pool": str(pool_path)},
        "prompts": prompt_report,
        "pool": {**pool_summary(entries), **({} if provenance is None else {"imported": provenance})},
        "curves": [asdict(c) for c in curves],
        "comparison": {"drop_from_peak": comparison["drop_from_peak"], "table": comparison["table"]},
        "attributes": attributes,
        "judges": bench,
        "seconds": {"prompts_and_pool": round(generated - started, 1), "scoring": round(scored - generated, 1),
                    "total": round(time.time() - started, 1)},
    }
    atomic_write_json(out / "summary.json", summary, default=str)
    log(curve_table(curves))
    log(comparison["table"])
    if bench:
        log(bench["table"])
    log(f"wrote {out / 'bon.csv'}, {out / 'bon.png'}" + (f", {out / 'attributes.png'}" if attributes else ""))
    return summary


def curve_table(curves: list[BoNCurve]) -> str:
    """Gold score of each proxy's pick at a few n (plain text)."""
    if not curves:
        return ""
    picks = sorted({0, len(curves[0].n) // 2, len(curves[0].n) - 1})
    header = "proxy".ljust(24) + "".join(f"n={curves[0].n[g]} (KL {curves[0].kl[g]:.2f})".rjust(20) for g in picks)
    lines = ["gold score of the pick, 0 at n = 1 (± s.e.m. over prompts)", header]
    for curve in curves:
        lines.append(curve.proxy.ljust(24) + "".join(
            f"{curve.gold_score[g]:+.3f} ± {curve.gold_sem[g]:.3f}".rjust(20) for g in picks))
    return "\n".join(lines)


def compare_curves(curves: list[BoNCurve]) -> dict[str, Any]:
    """Paired comparisons on the one pool: each proxy's gold minus the first proxy's at every n
    (``bon_paired.csv``), and each proxy's fall of the gold from its peak to the largest n."""
    drops = {c.proxy: {**drop_from_peak(c), **crossfit_drop(c)} for c in curves}
    lines = ["gold: fall from the peak to the largest n, paired over prompts (> 2 s.e.m.: over-optimised; the "
             "cross-fitted fall takes each half's peak from the other half, so noise alone does not make a fall)"]
    lines += [f"  {label:<22}peak {d['peak_gold']:+.3f} at n={d['peak_n']} (KL {d['peak_kl']:.2f}); "
              f"fall to n={d['last_n']}: {d['drop']:+.3f} ± {d['drop_sem']:.3f}; cross-fitted "
              f"{d['crossfit_drop']:+.3f} ± {d['crossfit_drop_sem']:.3f}" for label, d in drops.items()]
    header = ["proxy", "reference", "n", "kl_bon", "gold_difference", "gold_difference_sem"]
    rows: list[list[Any]] = []
    if len(curves) > 1:
        reference, last = curves[0], len(curves[0].n) - 1
        lines.append(f"gold minus {reference.proxy}'s, paired over prompts (mean ± s.e.m.)")
        for curve in curves[1:]:
            mean, sem = paired_gold_difference(curve, reference)
            rows += [[curve.proxy, reference.proxy, n, kl, m, e]
                     for n, kl, m, e in zip(curve.n, curve.kl, mean, sem, strict=True)]
            mid = last // 2
            lines.append(f"  {curve.proxy:<22}n={curve.n[mid]}: {mean[mid]:+.3f} ± {sem[mid]:.3f}   "
                         f"n={curve.n[last]}: {mean[last]:+.3f} ± {sem[last]:.3f}")
    return {"rows": (header, rows), "drop_from_peak": drops, "table": "\n".join(lines)}


def bench_specs(settings: BoNSettings) -> list[Any]:
    """The judges' benchmarks, checked before any long work starts."""
    from smorm.eval.runner import parse_bench

    specs = []
    for text in settings.benches:
        spec = parse_bench(text)
        if not Path(spec.path).exists():
            raise FileNotFoundError(f"--bench {text}: file not found (run from the repo folder, or pass --no-bench)")
        spec.sample = settings.bench_sample
        specs.append(spec)
    return specs


def judges_table(refs: list[ScorerRef], specs: list[Any], settings: BoNSettings, cache_dir: Path) -> dict[str, Any]:
    """Dev-benchmark score of the gold and every proxy in its mode, side by side (cached per model)."""
    from smorm.eval.report import headline
    from smorm.rlhf.scorers import folder_fingerprint

    reports: dict[Path, dict[str, Any]] = {}
    for folder in dict.fromkeys(model_folder(r.path) for r in refs):
        key = json.dumps([folder_fingerprint(folder), [asdict(s) for s in specs], settings.bf16])
        stem = folder.parent.name if folder.name == "model" else folder.name
        cache = cache_dir / f"{stem}-{hashlib.sha256(key.encode()).hexdigest()[:16]}.json"
        if cache.is_file() and read_json(cache).get("key") == key:
            reports[folder] = read_json(cache)["report"]
            continue
        from smorm.eval.runner import evaluate_model

        scorer = load_scorer(folder, device=settings.device)
        report = evaluate_model(scorer, specs, batch_size=settings.score_batch_size, bf16=settings.bf16,
                                show_progress=False)
        report["default_mode"] = str(getattr(scorer.config, "mode", "F"))
        atomic_write_json(cache, {"key": key, "report": report}, indent=None, default=str)
        reports[folder] = report
    labels = [s.label for s in specs]
    rows = []
    for role, ref in [("proxy", r) for r in refs[:-1]] + [("gold", refs[-1])]:
        report = reports[model_folder(ref.path)]
        mode = ref.mode or report["default_mode"]
        cells = {}
        for label in labels:
            entry = report["benchmarks"][label]
            if mode in entry["modes"]:
                score, ci = headline(entry, mode)
                if score is not None:
                    cells[label] = {"score": score, "ci": ci, "items": entry["items"], "kind": entry["kind"]}
        rows.append({"judge": ref.label, "role": role, "mode": mode, "scores": cells})
    width = max(len(r["judge"]) for r in rows) + 2
    lines = ["dev-benchmark scores of the judges in %, Kendall tau for ranked (seeded sample; 95% bootstrap CI)",
             "judge".ljust(width) + "role   " + "".join(label[:30].rjust(32) for label in labels)]
    for row in rows:
        lines.append(row["judge"].ljust(width) + row["role"].ljust(7)
                     + "".join(_cell(row["scores"].get(label)).rjust(32) for label in labels))
    return {"benchmarks": labels, "rows": rows, "table": "\n".join(lines)}


def _cell(cell: dict[str, Any] | None) -> str:
    """``61.0 [50.5, 70.0] n=100``: accuracies in %, a ranked benchmark's tau as is."""
    if cell is None:
        return "-"
    scale = 1.0 if cell["kind"] == "ranked" else 100.0
    text = f"{scale * cell['score']:.1f}"
    if cell["ci"]:
        text += f" [{scale * cell['ci'][0]:.1f}, {scale * cell['ci'][1]:.1f}]"
    return f"{text} n={cell['items']}"
