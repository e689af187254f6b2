"""CSV tables and PNG plots of the reward-hacking lab (000 Figs. 2–5 and 7), written atomically.

Matplotlib is imported inside the functions (Figure API, no pyplot); PNGs go through
:func:`smorm.eval.plots.save_figure` (temporary file, then rename).
"""

from __future__ import annotations

import csv
import io
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np

from smorm.io import atomic_write_text
from smorm.rlhf.bon import BoNCurve


def write_csv(path: Path, header: Sequence[str], rows: Sequence[Sequence[Any]]) -> Path:
    """Write a CSV atomically; floats with 6 significant digits."""
    buffer = io.StringIO()
    writer = csv.writer(buffer, lineterminator="\n")
    writer.writerow(header)
    for row in rows:
        writer.writerow([f"{v:.6g}" if isinstance(v, float) else v for v in row])
    atomic_write_text(path, buffer.getvalue())
    return path


def bon_rows(curves: Sequence[BoNCurve]) -> tuple[list[str], list[list[Any]]]:
    """``bon.csv``: one row per proxy and n, with the expected length of the pick."""
    header = ["proxy", "n", "kl_bon", "proxy_score", "proxy_sem", "gold_score", "gold_sem", "chosen_tokens"]
    rows = [
        [c.proxy, n, c.kl[g], c.proxy_score[g], c.proxy_sem[g], c.gold_score[g], c.gold_sem[g],
         c.extra.get("response_tokens", [float("nan")] * len(c.n))[g]]
        for c in curves for g, n in enumerate(c.n)
    ]
    return header, rows


def attribute_rows(curves: Sequence[BoNCurve], attributes: Sequence[str]) -> tuple[list[str], list[list[Any]]]:
    """``attributes.csv``: expected attribute scores of the pick (raw head outputs) per proxy and n."""
    header = ["proxy", "n", "kl_bon", *attributes]
    rows = [[c.proxy, n, c.kl[g], *(c.extra[f"attribute:{a}"][g] for a in attributes)]
            for c in curves for g, n in enumerate(c.n)]
    return header, rows


def _figure(panels: int, width: float = 5.0, height: float = 4.0, sharey: bool = False) -> tuple[Any, list[Any]]:
    from matplotlib.figure import Figure

    figure = Figure(figsize=(width * panels, height))
    return figure, list(figure.subplots(1, panels, squeeze=False, sharey=sharey)[0])


def plot_bon(curves: Sequence[BoNCurve], path: Path, title: str = "") -> Path:
    """Two panels, proxy and gold score vs KL_BoN, one line per proxy (±1 s.e.m. over prompts)."""
    from smorm.eval.plots import save_figure

    figure, (proxy_axes, gold_axes) = _figure(2)
    for curve in curves:
        kl = np.asarray(curve.kl)
        for axes, mean, sem in ((proxy_axes, curve.proxy_score, curve.proxy_sem),
                                (gold_axes, curve.gold_score, curve.gold_sem)):
            line = axes.plot(kl, mean, marker=".", label=curve.proxy)[0]
            axes.fill_between(kl, np.subtract(mean, sem), np.add(mean, sem), color=line.get_color(), alpha=0.15)
    for axes, name in ((proxy_axes, "proxy score"), (gold_axes, "gold score")):
        axes.axhline(0.0, color="gray", linewidth=0.8)
        axes.set(xlabel="KL_BoN = log n − (n−1)/n  (nats)", ylabel=f"{name} (0 at n = 1)", title=name)
        axes.legend(fontsize="small")
    if title:
        figure.suptitle(title)
    return save_figure(figure, path)


def plot_attributes(curves: Sequence[BoNCurve], attributes: Sequence[str], path: Path, title: str = "") -> Path:
    """One panel per proxy: change of each attribute of the pick from n = 1, vs KL_BoN (000 Fig. 7)."""
    from smorm.eval.plots import save_figure

    figure, panels = _figure(max(len(curves), 1), width=4.5, sharey=True)  # one scale: proxies side by side
    for axes, curve in zip(panels, curves):
        for name in attributes:
            values = np.asarray(curve.extra[f"attribute:{name}"])
            axes.plot(curve.kl, values - values[0], marker=".", label=name)
        axes.axhline(0.0, color="gray", linewidth=0.8)
        axes.set(xlabel="KL_BoN (nats)", title=f"proxy {curve.proxy}")
        axes.legend(fontsize="small")
    panels[0].set_ylabel("attribute score of the pick − value at n = 1")
    if title:
        figure.suptitle(title)
    return save_figure(figure, path)


def running_mean(values: np.ndarray, window: int) -> np.ndarray:
    """Mean of the last ``window`` values at each position (fewer at the start)."""
    sums = np.cumsum(np.insert(values, 0, 0.0))
    ends = np.arange(1, len(values) + 1)
    starts = np.maximum(ends - window, 0)
    return (sums[ends] - sums[starts]) / (ends - starts)


def plot_rl(rows: Sequence[dict[str, Any]], path: Path, title: str = "", zero_window: bool = True,
            ylabel: str | None = None) -> Path:
    """Two panels, proxy and gold reward of the policy's samples vs step (Fig. 3).

    Each step's batch has different prompts, so single points are noisy: they are drawn faint
    (±1 s.e.m.) under a running mean over a fifth of the run, and 0 is the mean of that first
    window (one batch alone would put the zero wherever its prompts happened to land).
    """
    from smorm.eval.plots import save_figure

    figure, (proxy_axes, gold_axes) = _figure(2)
    steps = np.asarray([r["step"] for r in rows], dtype=np.float64)
    window = max(1, len(rows) // 5)
    for axes, key in ((proxy_axes, "proxy"), (gold_axes, "gold")):
        values = np.asarray([r[key] for r in rows], dtype=np.float64)
        sem = np.asarray([r.get(f"{key}_sem", 0.0) for r in rows], dtype=np.float64)
        if len(values) and zero_window:
            values = values - values[:window].mean()
        axes.errorbar(steps, values, yerr=sem, fmt="o", alpha=0.35, label="batch mean ± s.e.m.")
        axes.plot(steps, running_mean(values, window), linewidth=2, label=f"running mean ({window} steps)")
        axes.axhline(0.0, color="gray", linewidth=0.8)
        axes.set(xlabel="RL step", ylabel=f"{key} score, " + (ylabel or f"0 = mean of the first {window} steps"), title=f"{key} score")
        axes.legend(fontsize="small")
    if title:
        figure.suptitle(title)
    return save_figure(figure, path)
