"""Compare ``smorm rl`` runs on the same fixed evaluation prompts: a table and one figure.

``python -m smorm.rlhf.rl_report RUNS_DIR`` reads every ``RUNS_DIR/NAME/rl_summary.json`` (one proxy
each, all evaluated on the same ID and OOD prompts with the same random streams, as
``scripts/synthetic_rl.sh`` runs them) and writes ``RUNS_DIR/rl_report.md`` and ``rl_report.png``.

Per proxy and set, at the last evaluation: the proxy's and the gold's change from step 0 (mean over
prompts ± paired s.e.m., and the change in s.e.m.), and the gold's final score paired per prompt
against a reference proxy's (default ``bt``). Every run's step 0 samples the same initial policy with
the same streams, so its step-0 completions and scores are the same for every proxy; the gold
difference of two runs at the last step is therefore the difference of their gold changes, and
pairing it per prompt removes the prompts' spread.
"""

from __future__ import annotations

import argparse
import json
import logging
import math
from collections import defaultdict
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np

from smorm.io import atomic_write_text
from smorm.rlhf.rl import EVAL_SETS, eval_suffix, final_change

logger = logging.getLogger(__name__)


def _sem(values: np.ndarray) -> float:
    return float(values.std(ddof=1) / math.sqrt(len(values))) if len(values) > 1 else float("nan")


def load_runs(runs_dir: Path) -> dict[str, dict[str, Any]]:
    """``{name: {"summary": ..., "gold": {set: {step: [per-prompt gold]}}}}``, by folder name."""
    runs: dict[str, dict[str, Any]] = {}
    for summary_path in sorted(Path(runs_dir).glob("*/rl_summary.json")):
        folder = summary_path.parent
        run: dict[str, Any] = {"summary": json.loads(summary_path.read_text()), "gold": {}}
        for name in EVAL_SETS:
            path = folder / f"rl_eval{eval_suffix(name)}_samples.jsonl"
            if not path.exists():
                continue
            by_step: dict[int, list[float]] = defaultdict(list)
            for line in path.read_text().splitlines():
                row = json.loads(line)
                by_step[int(row["step"])].append(float(row["gold"]))
            run["gold"][name] = dict(by_step)
        runs[folder.name] = run
    return runs


def compare(runs: dict[str, dict[str, Any]], reference: str = "bt") -> list[dict[str, Any]]:
    """One row per (proxy, set): last-step changes and the gold paired against ``reference``."""
    rows: list[dict[str, Any]] = []
    for name, run in runs.items():
        summary = run["summary"]
        for set_name in EVAL_SETS:
            eval_rows = summary.get(f"eval{eval_suffix(set_name)}_rows") or []
            if len(eval_rows) < 2:
                continue
            row: dict[str, Any] = {"name": name, "set": set_name, "prompts": int(eval_rows[-1]["samples"]),
                                   **final_change(eval_rows)}
            row["step"] = int(row["step"])
            ref = runs.get(reference)
            row["gold_vs_ref"] = row["gold_vs_ref_sem"] = float("nan")
            if ref is not None and name != reference and set_name in ref["gold"] and set_name in run["gold"]:
                mine, theirs = run["gold"][set_name], ref["gold"][set_name]
                step = min(max(mine), max(theirs))
                if step in mine and step in theirs and len(mine[step]) == len(theirs[step]):
                    diff = np.asarray(mine[step]) - np.asarray(theirs[step])
                    row["gold_vs_ref"], row["gold_vs_ref_sem"] = float(diff.mean()), _sem(diff)
            row["seconds_per_step"] = (summary.get("cost") or {}).get("seconds_per_step")
            row["minutes"] = round(float(summary.get("seconds", float("nan"))) / 60, 1)
            lengths = [float(r["completion_tokens"]) for r in summary.get("rows", [])
                       if not math.isnan(float(r.get("completion_tokens", float("nan"))))]
            row["tokens_first"] = lengths[0] if lengths else float("nan")
            row["tokens_last"] = lengths[-1] if lengths else float("nan")
            rows.append(row)
    return rows


def markdown(rows: Sequence[dict[str, Any]], reference: str = "bt") -> str:
    """The comparison as a markdown table (``±`` is the paired s.e.m. over prompts)."""
    head = (f"| proxy | set | step | proxy change | in s.e.m. | gold change | in s.e.m. | gold vs {reference} "
            "(paired) | s / step | completion tokens, first → last step |\n|---|---|---|---|---|---|---|---|---|---|\n")
    lines = []
    for r in rows:
        versus = "" if math.isnan(r["gold_vs_ref"]) else f"{r['gold_vs_ref']:+.3f} ± {r['gold_vs_ref_sem']:.3f}"
        lines.append(
            f"| {r['name']} | {r['set'].upper()} | {r['step']} | {r['proxy']:+.3f} ± {r['proxy_sem']:.3f} | "
            f"{r['proxy_z']:+.1f} | {r['gold']:+.3f} ± {r['gold_sem']:.3f} | {r['gold_z']:+.1f} | {versus} | "
            f"{r['seconds_per_step'] if r['seconds_per_step'] is not None else ''} | "
            f"{r['tokens_first']:.0f} → {r['tokens_last']:.0f} |")
    return head + "\n".join(lines) + "\n"


def plot(runs: dict[str, dict[str, Any]], path: Path, title: str = "") -> Path:
    """Rows ID / OOD, columns proxy / gold change from step 0 against the step, one line per proxy."""
    from matplotlib.figure import Figure

    from smorm.eval.plots import save_figure

    figure = Figure(figsize=(10, 7.5))
    axes = figure.subplots(2, 2, squeeze=False)
    for i, set_name in enumerate(EVAL_SETS):
        for j, score in enumerate(("proxy", "gold")):
            ax = axes[i][j]
            for name, run in runs.items():
                eval_rows = run["summary"].get(f"eval{eval_suffix(set_name)}_rows") or []
                if not eval_rows:
                    continue
                steps = [r["step"] for r in eval_rows]
                ax.errorbar(steps, [r[score] for r in eval_rows], yerr=[r[f"{score}_sem"] for r in eval_rows],
                            marker="o", capsize=3, label=name)
            ax.axhline(0.0, color="grey", linewidth=0.8)
            ax.set_title(f"{set_name.upper()}: {score} score")
            ax.set_xlabel("RLOO step")
            ax.set_ylabel("change from step 0 (same prompts and streams)")
    axes[0][0].legend(fontsize=8)
    if title:
        figure.suptitle(title)
    figure.tight_layout()
    return save_figure(figure, path)


def main(argv: Sequence[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("runs_dir", type=Path)
    parser.add_argument("--reference", default="bt", help="the proxy every gold score is paired against")
    parser.add_argument("--title", default="")
    args = parser.parse_args(argv)
    runs = load_runs(args.runs_dir)
    if not runs:
        raise SystemExit(f"no */rl_summary.json under {args.runs_dir}")
    table = markdown(compare(runs, args.reference), args.reference)
    atomic_write_text(args.runs_dir / "rl_report.md", table)
    plot(runs, args.runs_dir / "rl_report.png", args.title)
    logger.info(table)
    logger.info(f"wrote {args.runs_dir / 'rl_report.md'} and {args.runs_dir / 'rl_report.png'}")


if __name__ == "__main__":
    logging.basicConfig(level=logging.INFO, format="%(message)s")
    main()
