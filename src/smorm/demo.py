"""`smorm demo` / `make demo`: train SMORM on the shared data with the embedded backbone, evaluate
heads F, L and M on the development benchmarks, and write a Markdown report.

Progress goes to the ``smorm`` logger; the final table is the demo's output and goes to stdout."""

from __future__ import annotations

import json
import logging
import time
from pathlib import Path

from smorm.models.devices import module_device, resolve_precision
from smorm.train.config import RunConfig, load_config

logger = logging.getLogger(__name__)


def describe_setup(config: RunConfig, summary: dict, seconds: dict[str, float]) -> str:
    """The report's preamble: what was trained on what, with which budget."""
    lines = [
        "## Setup",
        "",
        f"- method: **{config.method}**; backbone `{config.model.backbone}` (dtype {config.model.dtype}); "
        f"trunk mode `{config.train.trunk}`" + (f" (top {config.train.top_k} layers trained, lower layers "
                                                  "cached once)" if config.train.trunk == "top_k" else ""),
        "- losses: " + ", ".join(f"{loss.name} ×{loss.weight}" for loss in config.losses),
        f"- D_S: {summary.get('pairs')} pairs from {', '.join(summary.get('sources') or [])}; "
        f"D_M: {summary.get('rated_responses')} rated responses, attributes {', '.join(summary.get('attributes') or [])}",
        f"- max length {config.data.max_length} tokens ({summary.get('truncated_sequences')} training sequences "
        "truncated: prompt cut from the left, end of response kept)",
        f"- {summary.get('steps')} optimizer steps, pair batch {config.train.pair_batch_size}, rating batch "
        f"{config.train.rating_batch_size}, lr {config.train.lr} (heads {config.train.head_lr or config.train.lr}), "
        f"{config.train.scheduler} schedule, warmup {config.train.warmup_ratio}, precision "
        f"{summary.get('precision', config.train.precision)} (train.precision {config.train.precision}) on "
        f"{summary.get('device', '?')}",
        "- final training metrics: " + ", ".join(
            f"{k} {v:.4f}" for k, v in (summary.get("final_metrics") or {}).items()
            if isinstance(v, float) and ("loss" in k or "accuracy" in k)),
        "- wall time: " + ", ".join(f"{k} {v:.0f}s" for k, v in seconds.items()),
    ]
    if summary.get("note"):
        lines.append(f"- note: {summary['note']}")
    skipped = [(r.get("path"), r.get("skipped")) for r in summary.get("data_reports", []) if r.get("skipped")]
    for path, counts in skipped:
        lines.append(f"- skipped records in `{Path(str(path)).name}`: {json.dumps(counts)}")
    lines.append("- Sample sizes are small so the demo finishes in minutes on 2 CPU cores: "
                 "read the confidence intervals before reading the differences.")
    return "\n".join(lines)


def run_demo(config_path: Path, overrides: list[str]) -> None:
    from rich.console import Console

    from smorm.eval.report import write_reports
    from smorm.eval.runner import BenchSpec, evaluate_model
    from smorm.models.reward_model import RewardModel
    from smorm.train.trainer import train

    started = time.time()
    config = load_config(config_path, overrides)
    logger.info("smorm demo: %s on %s, trunk %s; run folder %s", config.method, config.model.backbone,
                config.train.trunk, config.output_dir)
    result = train(config)
    trained = time.time()
    model = RewardModel.from_pretrained(result.model_dir, device="auto")
    specs = [BenchSpec(**bench.model_dump()) for bench in config.eval.benches]
    precision = resolve_precision(config.eval.precision, module_device(model))
    report = evaluate_model(model, specs, batch_size=config.eval.batch_size, bf16=precision == "bf16")
    evaluated = time.time()
    seconds = {"training (incl. loading, caching)": trained - started, "evaluation": evaluated - trained}
    report["model"] = str(result.model_dir)
    report["train_summary"] = {k: v for k, v in result.summary.items() if k != "config"}
    preamble = describe_setup(config, result.summary, seconds)
    written = write_reports(report, Path(config.output_dir), preamble=preamble)
    # The table is what the command is for, so it is output (stdout), not a log message; rich writes
    # it verbatim: no markup, no highlighting, no wrapping of wide tables.
    console = Console(soft_wrap=True, markup=False, highlight=False, emoji=False)
    console.print(f"\n{written.table}\n")
    console.print(f"total wall time {time.time() - started:.0f}s")
    console.print(f"report: {written.markdown_path}")
