"""Reports: report.json (everything), report.md (for people), a compact terminal table, PNG plots."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

from smorm.train.checkpoint import atomic_write_text


def _pct(value: float | None) -> str:
    return "-" if value is None else f"{100 * value:.1f}"


def _ci(ci: list[float] | None) -> str:
    return "" if not ci else f" [{100 * ci[0]:.1f}, {100 * ci[1]:.1f}]"


def accuracy_rows(report: dict[str, Any]) -> tuple[list[str], list[list[str]]]:
    """Benchmarks x modes: headline score with 95% bootstrap CI, in percent."""
    from smorm.eval.runner import headline

    modes = report["modes"]
    rows = []
    for label, entry in report["benchmarks"].items():
        row = [label, str(entry["items"])]
        for mode in modes:
            value, ci = headline(entry, mode)
            row.append(f"{_pct(value)}{_ci(ci)}")
        rows.append(row)
    return ["benchmark", "items", *[f"{m}" for m in modes]], rows


def markdown_table(header: list[str], rows: list[list[str]]) -> str:
    lines = ["| " + " | ".join(header) + " |", "|" + "|".join("---" for _ in header) + "|"]
    lines += ["| " + " | ".join(row) + " |" for row in rows]
    return "\n".join(lines)


def text_table(header: list[str], rows: list[list[str]]) -> str:
    widths = [max(len(h), *(len(r[i]) for r in rows)) if rows else len(h) for i, h in enumerate(header)]
    fmt = "  ".join("{:<%d}" % w for w in widths)
    return "\n".join([fmt.format(*header), fmt.format(*("-" * w for w in widths)), *(fmt.format(*r) for r in rows)])


def detail_markdown(report: dict[str, Any]) -> str:
    parts = []
    for label, entry in report["benchmarks"].items():
        parts.append(f"### {label}\n\n`{entry['path']}` — {entry['items']} items"
                     + (f" (first {entry['limit']})" if entry.get("limit") else "")
                     + (f" (seeded random sample of {entry['sample']})" if entry.get("sample") else ""))
        parts.append(f"hidden-state norm mean {entry['hidden_state_norm_mean']:.2f}, variance "
                     f"{entry['hidden_state_norm_variance']:.2f}; effective rank {entry['effective_rank']:.1f}")
        for mode, result in entry["modes"].items():
            if entry["kind"] == "reward-bench":
                rows = [[name, str(s["num_examples"]), f"{_pct(s['accuracy'])}{_ci(s['ci'])}"]
                        for name, s in result["subsets"].items()]
                rows += [[f"**{name}**", str(s["num_examples"]), f"{_pct(s['accuracy'])}{_ci(s['ci'])}"]
                         for name, s in result["sections"].items()]
                parts.append(f"**mode {mode}** — score {_pct(result['score'])}{_ci(result['ci'])}, "
                             f"ECE {result['ece']['ece']:.3f}\n\n" + markdown_table(["subset / section", "n", "accuracy %"], rows))
            elif entry["kind"] == "rm-bench":
                rows = [[d, str(v["num_items"]), _pct(v["hard"]), _pct(v["normal"]), _pct(v["easy"]),
                         f"{_pct(v['score'])}{_ci(v['score_ci'])}"] for d, v in result["domains"].items()]
                parts.append(f"**mode {mode}** — score {_pct(result['score'])}{_ci(result['score_ci'])} "
                             f"(hard {_pct(result['hard'])}, normal {_pct(result['normal'])}, easy {_pct(result['easy'])})\n\n"
                             + markdown_table(["domain", "items", "hard", "normal", "easy", "avg %"], rows))
            elif entry["kind"] == "pairs":
                parts.append(f"**mode {mode}** — accuracy {_pct(result['accuracy'])}{_ci(result['ci'])}, "
                             f"ECE {result['ece']['ece'] if isinstance(result['ece'], dict) else result['ece']:.3f}")
            else:
                parts.append(f"**mode {mode}** — Kendall tau-b {result.get('kendall_tau_b')}, "
                             f"best-of accuracy {result.get('best_of_accuracy')}")
    return "\n\n".join(parts)


def write_plots(report: dict[str, Any], out_dir: Path) -> list[Path]:
    """Reliability diagrams for pairwise benchmarks (needs matplotlib; skipped with a note if absent)."""
    try:
        import matplotlib  # noqa: F401
    except ImportError:
        report.setdefault("notes", []).append("matplotlib not installed: no plots written")
        return []
    from smorm.eval.metrics import ECEResult, plot_reliability

    paths = []
    for label, entry in report["benchmarks"].items():
        for mode, result in entry["modes"].items():
            ece = result.get("ece")
            if isinstance(ece, dict):
                safe = "".join(c if c.isalnum() or c in "-_" else "_" for c in label)
                path = out_dir / "plots" / f"reliability_{safe}_{mode}.png"
                path.parent.mkdir(parents=True, exist_ok=True)
                data = {k: tuple(v if v is not None else float("nan") for v in ece[k]) if isinstance(ece[k], list)
                        else ece[k] for k in ece}
                plot_reliability(ECEResult(**data), path, title=f"{label} — mode {mode}")
                paths.append(path)
    return paths


def write_reports(report: dict[str, Any], out_dir: Path, preamble: str = "") -> Any:
    from smorm.eval.runner import EvalReport

    out_dir.mkdir(parents=True, exist_ok=True)
    plots = write_plots(report, out_dir)
    report["plots"] = [str(p.relative_to(out_dir)) for p in plots]
    header, rows = accuracy_rows(report)
    table = text_table(header, rows)
    legend = ("F = single-objective (BT) head, L = mean of the attribute head, M = mean of F and L. "
              "RewardBench: official section weighting over the subsets present; RM-Bench: mean of "
              "hard/normal/easy over the domains present.")
    plot_lines = "\n".join(f"![{p.name}]({p.relative_to(out_dir)})" for p in plots)
    sections = [
        "# smorm evaluation report",
        preamble,
        "## Scores (percent, 95% bootstrap CI)\n\n" + markdown_table(header, rows) + "\n\n" + legend,
        "## Details\n\n" + detail_markdown(report),
        ("## Plots\n\n" + plot_lines) if plots else "",
    ]
    markdown = "\n\n".join(part for part in sections if part)
    json_path, md_path = out_dir / "report.json", out_dir / "report.md"
    atomic_write_text(json_path, json.dumps(report, indent=2, default=float))
    atomic_write_text(md_path, markdown + "\n")
    return EvalReport(report, table, json_path, md_path)
