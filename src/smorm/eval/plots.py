"""PNG plots for evaluation reports: reliability diagrams, reward histograms, attribute bars.

Matplotlib is optional and imported inside each function; only the ``Figure`` API is used (no
pyplot), so no global backend or figure state is touched and plotting is safe in threads and
tests. Every file is written to a temporary name and renamed, so a crash never leaves half a PNG.
"""

from __future__ import annotations

from collections.abc import Mapping
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np

from smorm.io import atomic_write

if TYPE_CHECKING:
    from matplotlib.figure import Figure

    from smorm.eval.metrics import ECEResult

CHOSEN_COLOR, REJECTED_COLOR = "tab:green", "tab:red"


def save_figure(figure: Figure, path: str | Path) -> Path:
    """Write ``figure`` as a PNG at ``path`` atomically (temporary file, then rename)."""
    return atomic_write(path, lambda temporary: figure.savefig(temporary, format="png", dpi=120, bbox_inches="tight"))


def _panels(count: int, width: float = 4.2, height: float = 4.0) -> tuple[Figure, list[Any]]:
    from matplotlib.figure import Figure  # optional dependency; no pyplot, no global backend

    figure = Figure(figsize=(width * max(count, 1), height))
    axes = figure.subplots(1, max(count, 1), squeeze=False)[0]
    return figure, list(axes)


def _draw_reliability(axes: Any, ece: Mapping[str, Any], title: str) -> None:
    """One reliability diagram from an ``ECEResult.to_dict()`` (None = empty bin)."""
    edges = np.asarray(ece["bin_edges"], dtype=np.float64)
    accuracy = np.array([np.nan if v is None else v for v in ece["bin_accuracy"]], dtype=np.float64)
    confidence = np.array([np.nan if v is None else v for v in ece["bin_confidence"]], dtype=np.float64)
    axes.bar(edges[:-1], np.nan_to_num(accuracy, nan=0.0), width=np.diff(edges), align="edge",
             edgecolor="black", label="accuracy")
    filled = ~np.isnan(confidence)
    axes.plot(confidence[filled], accuracy[filled], "o", color="tab:red", label="at mean confidence")
    axes.plot([0, 1], [0, 1], "--", color="gray", label="perfect calibration")
    axes.set(xlim=(0, 1), ylim=(0, 1), xlabel="confidence σ(|r_c − r_r|)", ylabel="accuracy",
             title=f"{title}  ECE = {ece['ece']:.3f}")
    axes.legend(loc="upper left", fontsize="small")


def plot_reliability(result: ECEResult, path: str | Path, title: str = "") -> Path:
    """Write one reliability diagram (accuracy and mean confidence per bin, 003 Sec. 2)."""
    figure, (axes,) = _panels(1, 4.5, 4.5)
    _draw_reliability(axes, result.to_dict(), title)
    return save_figure(figure, path)


def plot_reliability_panels(ece_by_mode: Mapping[str, Mapping[str, Any]], path: str | Path, title: str) -> Path:
    """Reliability diagrams of several inference modes side by side, one panel per mode.

    Args:
        ece_by_mode: ``{mode: ECEResult.to_dict()}``.
    """
    figure, axes = _panels(len(ece_by_mode))
    for panel, (mode, ece) in zip(axes, ece_by_mode.items()):
        _draw_reliability(panel, ece, f"mode {mode}")
    figure.suptitle(title)
    return save_figure(figure, path)


def plot_reward_histograms(histograms: Mapping[str, Mapping[str, Any]], path: str | Path, title: str) -> Path:
    """Chosen vs rejected reward distributions, one panel per inference mode.

    Args:
        histograms: ``{mode: {"edges": [B + 1], "chosen": [B], "rejected": [B]}}`` (counts).
    """
    figure, axes = _panels(len(histograms))
    for panel, (mode, histogram) in zip(axes, histograms.items()):
        edges = np.asarray(histogram["edges"], dtype=np.float64)
        for name, color in (("chosen", CHOSEN_COLOR), ("rejected", REJECTED_COLOR)):
            panel.stairs(np.asarray(histogram[name], dtype=np.float64), edges, fill=True, alpha=0.45,
                         color=color, label=f"{name} (n={int(np.sum(histogram[name]))})")
        panel.set(xlabel="reward", ylabel="responses", title=f"mode {mode}")
        panel.legend(fontsize="small")
    figure.suptitle(title)
    return save_figure(figure, path)


def plot_attribute_bars(attribute_means: Mapping[str, Mapping[str, float]], path: str | Path, title: str) -> Path:
    """Mean predicted attribute of chosen vs rejected responses, one pair of bars per attribute.

    Args:
        attribute_means: ``{"chosen": {attribute: mean}, "rejected": {attribute: mean}}``.
    """
    names = list(attribute_means["chosen"])
    positions = np.arange(len(names))
    figure, (axes,) = _panels(1, max(4.5, 1.1 * len(names) + 1.5), 4.0)
    for offset, (group, color) in zip((-0.2, 0.2), (("chosen", CHOSEN_COLOR), ("rejected", REJECTED_COLOR))):
        axes.bar(positions + offset, [attribute_means[group][n] for n in names], width=0.4, color=color,
                 label=group, edgecolor="black")
    axes.axhline(0.0, color="gray", linewidth=0.8)
    axes.set_xticks(positions, names, rotation=20, ha="right")
    axes.set(ylabel="mean predicted attribute", title=title)
    axes.legend(fontsize="small")
    return save_figure(figure, path)
