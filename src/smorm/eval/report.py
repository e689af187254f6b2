"""Reports: report.json (everything), report.md (for people), a compact terminal table, PNG plots.

Every table shows the inference modes side by side (F, L, M, G) and every accuracy with its 95%
bootstrap interval. Plots go to ``plots/`` beside the report; matplotlib is optional.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any

from smorm.io import atomic_write_json, atomic_write_text

MODE_LEGEND = {
    "F": "F = single-objective (BT) head",
    "L": "L = mean of the attribute head",
    "M": "M = mean of F and L",
    "G": "G = gated mixture of the attributes (ArmoRM gate)",
}
LEVELS = ("normal", "hard", "easy")


@dataclass
class EvalReport:
    report: dict[str, Any]
    table: str
    json_path: Path
    markdown_path: Path


def headline(entry: dict[str, Any], mode: str) -> tuple[float | None, list[float] | None]:
    """The one number per benchmark and mode shown in tables, with its 95% CI.

    RewardBench / RM-Bench: the overall score; pairs: accuracy; ranked: mean Kendall tau-b
    (best-of accuracy when no reference scores were given).
    """
    result = entry["modes"][mode]
    if entry["kind"] in ("reward-bench", "rm-bench"):
        return result["score"], result.get("ci") or result.get("score_ci")
    if entry["kind"] == "pairs":
        return result["accuracy"], result.get("ci")
    if result.get("kendall_tau_b") is not None:
        return result["kendall_tau_b"], result.get("kendall_tau_b_ci")
    return result.get("best_of_accuracy"), result.get("best_of_accuracy_ci")


def _pct(value: float | None) -> str:
    return "-" if value is None else f"{100 * value:.1f}"


def _ci(ci: list[float] | None) -> str:
    return "" if not ci else f" [{100 * ci[0]:.1f}, {100 * ci[1]:.1f}]"


def _pct_ci(value: float | None, ci: list[float] | None) -> str:
    return f"{_pct(value)}{_ci(ci)}"


def _num(value: float | None, digits: int = 3) -> str:
    return "-" if value is None else f"{value:.{digits}f}"


def _is_ranked(entry: dict[str, Any]) -> bool:
    return entry["kind"] == "ranked" and any(r.get("kendall_tau_b") is not None for r in entry["modes"].values())


FLOOR_COLUMNS = {"longer": "longer wins", "shorter": "shorter wins"}
FLAG = "†"
FLAG_NOTE = (f"{FLAG}: not above the length floor (the score is at or below the upper end of the 95% interval "
             "of the better of 'longer wins' / 'shorter wins' on the same items)")


def columns(entry: dict[str, Any]) -> list[tuple[str, dict[str, Any]]]:
    """A benchmark's result columns: each mode, then the length floors where the report has them."""
    out = list(entry["modes"].items())
    out += [(FLOOR_COLUMNS[name], result) for name, result in (entry.get("length_floor") or {}).items()]
    return out


def _flag(entry: dict[str, Any], mode: str) -> str:
    check = (entry.get("length_floor_checks") or {}).get(mode)
    return FLAG if check and check["not_above_floor"] else ""


def _headline_cell(entry: dict[str, Any], value: float | None, ci: list[float] | None) -> str:
    if _is_ranked(entry):
        return "-" if value is None else f"τ {value:.3f}" + ("" if not ci else f" [{ci[0]:.3f}, {ci[1]:.3f}]")
    return _pct_ci(value, ci)


def accuracy_rows(report: dict[str, Any]) -> tuple[list[str], list[list[str]]]:
    """Benchmarks x modes (and the length floors): headline score with 95% bootstrap CI, in percent
    (tau-b for rankings); a head not above the length floor is marked with :data:`FLAG`."""
    modes = report["modes"]
    floors = [name for name in FLOOR_COLUMNS
              if any(name in (e.get("length_floor") or {}) for e in report["benchmarks"].values())]
    rows = []
    for label, entry in report["benchmarks"].items():
        row = [label, str(entry["items"])]
        for mode in modes:
            row.append(_headline_cell(entry, *headline(entry, mode)) + _flag(entry, mode))
        for name in floors:
            floor = (entry.get("length_floor") or {}).get(name)
            row.append("-" if floor is None else _headline_cell(entry, *headline({**entry, "modes": {name: floor}}, name)))
        rows.append(row)
    return ["benchmark", "items", *modes, *(FLOOR_COLUMNS[name] for name in floors)], rows


def markdown_table(header: list[str], rows: list[list[str]]) -> str:
    lines = ["| " + " | ".join(header) + " |", "|" + "|".join("---" for _ in header) + "|"]
    lines += ["| " + " | ".join(row) + " |" for row in rows]
    return "\n".join(lines)


def text_table(header: list[str], rows: list[list[str]]) -> str:
    widths = [max(len(h), *(len(r[i]) for r in rows)) if rows else len(h) for i, h in enumerate(header)]
    fmt = "  ".join(f"{{:<{w}}}" for w in widths)
    return "\n".join([fmt.format(*header), fmt.format(*("-" * w for w in widths)), *(fmt.format(*r) for r in rows)])


# ---------------------------------------------------------------------------------------
# one benchmark: modes side by side


def score_rows(entry: dict[str, Any]) -> list[list[str]]:
    """Rows ``[what, n, value per column]`` of a benchmark's accuracies (percent, 95% CI), one column
    per mode and per length floor (:func:`columns`)."""
    per_mode = [result for _, result in columns(entry)]
    first = per_mode[0]
    rows: list[list[str]] = []
    if entry["kind"] == "reward-bench":
        for name, subset in first["subsets"].items():
            rows.append([name, str(subset["num_examples"]),
                         *(_pct_ci(r["subsets"][name]["accuracy"], r["subsets"][name]["ci"]) for r in per_mode)])
        for name, section in first["sections"].items():
            rows.append([f"**{name}** (section)", str(section["num_examples"]),
                         *(_pct_ci(r["sections"][name]["accuracy"], r["sections"][name]["ci"]) for r in per_mode)])
            if "plain_accuracy" in section and len(section["subsets_present"]) > 1:
                rows.append([f"{name} (plain: every item counts once)", str(section["num_examples"]),
                             *(_pct_ci(r["sections"][name]["plain_accuracy"], r["sections"][name]["plain_ci"])
                               for r in per_mode)])
        rows.append(["**score**", str(first["num_examples"]), *(_pct_ci(r["score"], r["ci"]) for r in per_mode)])
    elif entry["kind"] == "rm-bench":
        for domain, values in first["domains"].items():
            for key in ("hard", "normal", "easy", "score"):
                rows.append([f"{domain} {'avg' if key == 'score' else key}", str(values["num_items"]),
                             *(_pct_ci(r["domains"][domain][key], r["domains"][domain][f"{key}_ci"])
                               for r in per_mode)])
        for key in ("hard", "normal", "easy", "score"):
            rows.append([f"**{'score' if key == 'score' else key}** (mean over domains)", str(first["num_items"]),
                         *(_pct_ci(r[key], r[f"{key}_ci"]) for r in per_mode)])
    elif entry["kind"] == "pairs":
        for name, subset in (first.get("subsets") or {}).items():
            rows.append([name, str(subset["num_pairs"]),
                         *(_pct_ci(r["subsets"][name]["accuracy"], r["subsets"][name]["ci"]) for r in per_mode)])
        if "macro_accuracy" in first:
            rows.append(["macro (mean of subsets)", str(first["num_pairs"]),
                         *(_pct_ci(r["macro_accuracy"], r["macro_accuracy_ci"]) for r in per_mode)])
        rows.append(["**accuracy**", str(first["num_pairs"]), *(_pct_ci(r["accuracy"], r["ci"]) for r in per_mode)])
    else:
        # Prompts a model scores all alike are left out of its tau, so the count can differ by mode.
        counts = [r["num_prompts_tau"] for r in per_mode]
        same = len(set(counts)) == 1
        rows.append(["Kendall τ-b (mean over prompts)", str(counts[0]) if same else "per mode",
                     *(_num(r["kendall_tau_b"]) + ("" if not r["kendall_tau_b_ci"] else
                       f" [{r['kendall_tau_b_ci'][0]:.3f}, {r['kendall_tau_b_ci'][1]:.3f}]")
                       + ("" if same else f" n={r['num_prompts_tau']}") for r in per_mode)])
        tied = [r.get("num_prompts_tau_tied_scores", 0) for r in per_mode]
        if any(tied):
            rows.append(["prompts left out of τ-b: scores all tied", "", *(str(t) for t in tied)])
        rows.append(["best-of accuracy %", str(first["num_prompts_best"]),
                     *(_pct_ci(r["best_of_accuracy"], r["best_of_accuracy_ci"]) for r in per_mode)])
    return rows


THIN_ITEMS, THIN_SHARE = 20, 0.25


def thin_sections(entry: dict[str, Any]) -> str:
    """A note on RewardBench sections whose official score rests on a handful of items.

    The official section score weights each subset by its full-benchmark example count; on a sample,
    a subset with few items can carry much of a section (a 3-item subset at half the weight moves
    the section by 17 points per item). Flagged: a subset of fewer than :data:`THIN_ITEMS` items
    carrying at least :data:`THIN_SHARE` of its section; the plain accuracy is in the table beside it.
    """
    if entry["kind"] != "reward-bench":
        return ""
    first = next(iter(entry["modes"].values()))
    notes = []
    for name, section in first["sections"].items():
        for subset, share in (section.get("subset_weights") or {}).items():
            n = first["subsets"][subset]["num_examples"]
            if n < THIN_ITEMS and share >= THIN_SHARE:
                notes.append(f"{name}: {subset} ({n} items) carries {100 * share:.0f}% of the section's weight")
    if not notes:
        return ""
    return ("**Thin sections:** " + "; ".join(notes) + ". Read the plain accuracy (every item counts once) "
            "beside the section score.")


def _outlier_cell(outliers: dict[str, Any], sign: str) -> str:
    mean = outliers[f"{sign}_mean"]
    return f"{outliers[f'{sign}_count']} of {outliers[f'num_{sign}']}" + ("" if mean is None else f" (mean {mean:.3f})")


def diagnostic_rows(entry: dict[str, Any]) -> list[list[str]]:
    """Rows ``[what, value per mode]``: ECE and reward-difference outliers (003 Sec. 2, App. C)."""
    per_mode = list(entry["modes"].values())
    if not isinstance(per_mode[0].get("ece"), dict):
        return []
    return [
        ["ECE (10 bins, σ(r_c − r_r))", *(f"{r['ece']['ece']:.3f}" for r in per_mode)],
        ["comparisons", *(str(r["num_comparisons"]) for r in per_mode)],
        ["outliers of r_c − r_r > 0", *(_outlier_cell(r["reward_difference_outliers"], "positive") for r in per_mode)],
        ["outliers of r_c − r_r < 0", *(_outlier_cell(r["reward_difference_outliers"], "negative") for r in per_mode)],
    ]


def attribute_stats_rows(stats: dict[str, Any], names: list[str]) -> list[list[str]]:
    """000 App. J Tables 12-13 layout: level x group rows, ``mean (variance)`` per attribute."""
    rows = []
    for level in LEVELS:
        for group, values in stats[level].items():
            cells = [f"{_num(v['mean'], 2)} ({_num(v['variance'], 2)})"
                     for v in (values["attributes"][n] for n in names)]
            rows.append([f"{level.capitalize()} {group}", str(values["count"]), *cells])
    return rows


def loading_line(entry: dict[str, Any]) -> str:
    """What loading kept and left out: blank responses scored as published, rows skipped by reason."""
    if "records_read" not in entry:
        return ""
    blank = entry.get("blank_responses", 0)
    skipped = entry.get("skipped") or {}
    reasons = ", ".join(f"{reason}: {n}" for reason, n in sorted(skipped.items()))
    return (f"Rows read: {entry['records_read']}; blank responses scored as published: {blank}; "
            f"rows left out: {sum(skipped.values())}" + (f" ({reasons})" if reasons else "")
            + f"; on_error: {entry.get('on_error', 'error')}.")


def benchmark_markdown(label: str, entry: dict[str, Any], plots: dict[str, str]) -> str:
    """A benchmark's section of report.md."""
    modes = list(entry["modes"])
    names = [name for name, _ in columns(entry)]
    sample = (f" (first {entry['limit']})" if entry.get("limit") else "") + (
        f" (seeded random sample of {entry['sample']}, seed {entry.get('seed', 0)})" if entry.get("sample") else "")
    parts = [f"### {label}", f"`{entry['path']}`: {entry['items']} items{sample}"]
    loading = loading_line(entry)
    if loading:
        parts.append(loading)
    parts.append(markdown_table(["", "n", *names], score_rows(entry)))
    flagged = [mode for mode in modes if _flag(entry, mode)]
    if flagged:
        check = entry["length_floor_checks"][flagged[0]]
        parts.append(f"**Not above the length floor:** {', '.join(flagged)} (the better floor here is "
                     f"'{FLOOR_COLUMNS[check['floor']]}', {_pct_ci(check['floor_score'], check['floor_ci'])}).")
    thin = thin_sections(entry)
    if thin:
        parts.append(thin)
    diagnostics = diagnostic_rows(entry)
    if diagnostics:
        over = " (over all 9 style comparisons of each item)" if entry["kind"] == "rm-bench" else ""
        parts.append(f"Calibration and reward-difference outliers{over}; outliers are outside the box-plot "
                     "fences Q1 − 1.5 IQR, Q3 + 1.5 IQR of each sign group:\n\n"
                     + markdown_table(["", *modes], diagnostics))
    if "head_spread" in entry:
        spread = ", ".join(f"{mode} {value:.3g}" for mode, value in entry["head_spread"].items())
        agree = ("" if "m_agrees_with_f" not in entry else
                 f"; M orders {100 * entry['m_agrees_with_f']:.1f}% of the comparisons as F does")
        parts.append(f"Reward spread (standard deviation over this benchmark's responses): {spread}{agree}.")
    parts.append(f"Pooled hidden states: norm mean {entry['hidden_state_norm_mean']:.3f}, variance "
                 f"{entry['hidden_state_norm_variance']:.3f}; effective rank {entry['effective_rank']:.1f}.")
    if "attribute_means" in entry:
        means = entry["attribute_means"]
        rows = [[name, _num(means["chosen"][name]), _num(means["rejected"][name]), _num(means["difference"][name])]
                for name in means["chosen"]]
        parts.append("Mean predicted attribute (multi head):\n\n"
                     + markdown_table(["attribute", "chosen", "rejected", "chosen − rejected"], rows))
    if "attribute_difference_stats" in entry:
        names = list(entry["attribute_means"]["chosen"])
        parts.append("Normalized pairwise attribute differences chosen − rejected by style level, mean (variance) "
                     "(000 App. J, Tables 12–13; attributes z-scored over all responses; correct / false = the "
                     f"comparison mode {entry['attribute_difference_stats_decided_by']} got right / wrong):\n\n"
                     + markdown_table(["comparisons", "n", *names],
                                      attribute_stats_rows(entry["attribute_difference_stats"], names)))
    if "gate_weight_means" in entry:
        weights = entry["gate_weight_means"]
        parts.append("Mean gate weights: " + ", ".join(f"{name} {value:.3f}" for name, value in weights.items()))
    if plots:
        parts.append(" ".join(f"![{kind}]({path})" for kind, path in plots.items()))
    return "\n\n".join(parts)


# ---------------------------------------------------------------------------------------
# Theorem 1


def theory_summary(theory: dict[str, Any]) -> str:
    """One line for the terminal."""
    population = theory["population"]
    coupling = sum(population["alpha"].values())
    verdict = "holds" if theory["coupling_holds"] else "does NOT hold"
    return (f"Theorem 1 (000 App. C.2): coupling 1ᵀα = {coupling:.4g} ≥ 0 {verdict}; c = {population['c']:.4g}, "
            f"ε = {population['epsilon']:.4g} ({theory['sample']['pairs']} pairs, {theory['sample']['rated']} rated)")


def theory_markdown(theory: dict[str, Any]) -> str:
    """The Theorem 1 section of report.md."""
    population, trained = theory["population"], theory.get("trained_heads")
    sample = theory["sample"]
    names = theory["attributes"]
    constants = [
        ["c = 1ᵀα / (K μ_Sᵀ Σ_S⁻¹ μ_S)", f"{population['c']:.4g}"],
        ["ε = B ‖E‖_op / √λ_min(Σ_S)", f"{population['epsilon']:.4g}"],
        ["ε on the K-average (tighter)", f"{population['epsilon_tight']:.4g}"],
        ["B = max ‖f‖", f"{population['feature_bound']:.4g}"],
        ["μ_Sᵀ Σ_S⁻¹ μ_S", f"{population['whitened_mean_sq_norm']:.4g}"],
        ["λ_min(Σ_S), λ_min(Σ_M)", f"{population['lambda_min_sigma_S']:.4g}, {population['lambda_min_sigma_M']:.4g}"],
        ["‖E‖_op", f"{population['E_operator_norm']:.4g}"],
        ["ridge on Σ_S, Σ_M", f"{theory['ridge']:.4g} ({theory['relative_ridge']:g} × trace(Σ_S)/d)"],
    ]
    checks = [["population heads (Eq. 11)", f"{100 * population['bound_holds_fraction']:.1f}%",
               f"{population['min_slack']:.4g}"]]
    if trained is not None:
        checks.append(["trained heads", f"{100 * trained['bound_holds_fraction']:.1f}%", f"{trained['min_slack']:.4g}"])
    coupling = sum(population["alpha"].values())
    parts = [
        "## Theorem 1 check (000 App. C.2)",
        f"Features f of a seeded sample (seed {sample['seed']}) of the run's own training data: "
        f"{sample['pairs']} of {sample['pairs_available']} pairs (D_S) and {sample['rated']} rated responses (D_M; "
        f"{sample['rated_incomplete_dropped']} of {sample['rated_available']} left out for a missing attribute); "
        f"{theory['feature']}, d = {theory['hidden_size']}.",
        f"**Coupling assumption (3): 1ᵀα = {coupling:.4g} — "
        f"{'holds' if theory['coupling_holds'] else 'does NOT hold'}.**",
        markdown_table(["attribute", "α", "β"],
                       [[n, f"{population['alpha'][n]:.4g}", f"{population['beta'][n]:.4g}"] for n in names]),
        markdown_table(["quantity", "value"], constants),
        "Bound r_m ≥ c·r_s − ε on the sampled rows:\n\n"
        + markdown_table(["heads", "rows where it holds", "min slack"], checks),
    ]
    if theory.get("ridge_sensitivity"):
        parts.append("1ᵀα at other ridges (relative to trace(Σ_S)/d): " + ", ".join(
            f"{row['relative_ridge']:g}: {row['coupling']:.4g}" for row in theory["ridge_sensitivity"]))
    parts += [f"- {note}" for note in theory.get("notes", [])]
    return "\n\n".join(parts)


# ---------------------------------------------------------------------------------------
# plots and files


def _safe(label: str) -> str:
    return "".join(c if c.isalnum() or c in "-_." else "_" for c in label)


def write_plots(report: dict[str, Any], out_dir: Path) -> dict[str, dict[str, str]]:
    """Reliability diagrams, chosen-vs-rejected reward histograms and attribute bars per benchmark.

    Returns:
        ``{benchmark label: {plot kind: path relative to out_dir}}``; empty (with a note in the
        report) when matplotlib is not installed.
    """
    try:
        import matplotlib  # noqa: F401
    except ImportError:
        report.setdefault("notes", []).append("matplotlib not installed (pip install smorm[plots]): no plots written")
        return {}
    from smorm.eval.plots import plot_attribute_bars, plot_reliability_panels, plot_reward_histograms

    written: dict[str, dict[str, str]] = {}
    for label, entry in report["benchmarks"].items():
        stem = out_dir / "plots" / _safe(label)
        paths: dict[str, Path] = {}
        results = entry["modes"]
        if all(isinstance(r.get("ece"), dict) for r in results.values()) and results:
            paths["reliability"] = plot_reliability_panels(
                {m: r["ece"] for m, r in results.items()}, f"{stem}_reliability.png", f"{label}: reliability")
        if all("reward_histogram" in r for r in results.values()) and results:
            paths["rewards"] = plot_reward_histograms(
                {m: r["reward_histogram"] for m, r in results.items()}, f"{stem}_rewards.png",
                f"{label}: chosen vs rejected rewards")
        if "attribute_means" in entry:
            paths["attributes"] = plot_attribute_bars(entry["attribute_means"], f"{stem}_attributes.png",
                                                      f"{label}: mean predicted attribute")
        written[label] = {kind: str(path.relative_to(out_dir)) for kind, path in paths.items()}
    return written


def write_reports(report: dict[str, Any], out_dir: Path, preamble: str = "") -> EvalReport:
    """Write plots, report.json and report.md into ``out_dir``; returns an ``EvalReport``."""
    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    plots = write_plots(report, out_dir)
    for label, paths in plots.items():
        report["benchmarks"][label]["plots"] = paths
    report["plots"] = [path for paths in plots.values() for path in paths.values()]
    header, rows = accuracy_rows(report)
    table = text_table(header, rows) if report["benchmarks"] else "(no benchmarks)"
    if report.get("theory"):
        table += "\n\n" + theory_summary(report["theory"])
    legend = ("; ".join(MODE_LEGEND[m] for m in report["modes"] if m in MODE_LEGEND) + ". RewardBench: official "
              "section weighting over the subsets present, prior sets at half weight; RM-Bench: mean of "
              "hard/normal/easy over the domains present; pairs: accuracy; ranked: Kendall τ-b.")
    if any("length_floor" in entry for entry in report["benchmarks"].values()):
        legend += (" Length floor: 'longer wins' / 'shorter wins' use the response's length in characters as the "
                   f"reward, on the same items with the same intervals. {FLAG_NOTE}.")
        if any(_flag(entry, mode) for entry in report["benchmarks"].values() for mode in entry["modes"]):
            table += "\n" + FLAG_NOTE
    sections = ["# smorm evaluation report", preamble]
    if report.get("model"):
        sections.append(f"Model: `{report['model']}` ({report.get('scorer', 'RewardModel')}); "
                        f"{report['num_sequences']} sequences scored once each, max length {report['max_length']} "
                        f"tokens ({report['truncated_sequences']} truncated), batch size {report['batch_size']}, "
                        f"{report['precision']}."
                        + (" Under bf16 autocast rewards change with batch composition at bf16 rounding, so "
                           "near-tied comparisons can flip between batch sizes; fp32 results agree to 1e-5."
                           if report["precision"] == "bf16" else ""))
    if report["benchmarks"]:
        sections.append("## Scores (percent, 95% bootstrap CI)\n\n" + markdown_table(header, rows) + "\n\n" + legend)
    if report.get("theory"):
        sections.append(theory_markdown(report["theory"]))
    if report["benchmarks"]:
        sections.append("## Benchmarks\n\n" + "\n\n".join(
            benchmark_markdown(label, entry, plots.get(label, {})) for label, entry in report["benchmarks"].items()))
    sections += [f"- {note}" for note in report.get("notes", [])]
    markdown = "\n\n".join(part for part in sections if part)
    json_path, md_path = out_dir / "report.json", out_dir / "report.md"
    atomic_write_json(json_path, report, default=float, newline=False)
    atomic_write_text(md_path, markdown + "\n")
    return EvalReport(report, table, json_path, md_path)
