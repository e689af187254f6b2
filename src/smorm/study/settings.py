"""A study config: methods × seeds on one data budget and trunk, read on the dev benchmarks.

Torch-free, so ``smorm study --help`` starts fast. Every method is a run-config overlay on one
``base`` (dicts merge key by key, lists are replaced), so the methods differ only where the overlay
says; a composite method (Baseline SM) names the two trained methods it averages and trains nothing.
"""

from __future__ import annotations

import copy
from typing import Any, Literal

from pydantic import Field, model_validator

from smorm.settings import Strict

Mode = Literal["F", "L", "M", "G"]


class StudyMethod(Strict):
    """One row group of the study table."""

    name: str = Field(description="the method's name in tables and run folders (e.g. SMORM, SORM)")
    config: dict[str, Any] = Field(default_factory=dict, description="run-config overlay on the study's base "
                                   "(method, model.heads, losses, data.ratings: [] for a pairs-only method ...)")
    modes: list[Mode] = Field(default_factory=list, description="inference modes read (default: the model's "
                              "default mode)")
    baseline_sm: list[str] | None = Field(None, min_length=2, max_length=2, description="[SORM, MORM]: a "
                                          "Baseline SM of these two trained methods, same seed (000 Sec. 3); "
                                          "trains nothing")
    seeds: list[int] | None = Field(None, min_length=1, description="the seeds this method runs, a subset of the "
                                    "study's (default: all of them); e.g. one seed to screen candidates")


class Comparison(Strict):
    """A paired difference ``a - b`` (``METHOD/MODE``), bootstrapped over items and seeds."""

    a: str
    b: str


class Sweep(Strict):
    """000 Fig. 6: a method retrained with one loss's weight set to each value (the others kept)."""

    method: str = Field(description="the method swept (a trained method of the study)")
    loss: str = Field("regression", description="the loss whose weight is set (the weight ratio w_M / w_S "
                      "when the other loss has weight 1)")
    weights: list[float] = Field(default_factory=lambda: [0.01, 0.1, 1.0, 10.0], min_length=1)
    seeds: list[int] | None = Field(None, description="seeds of the sweep (default: the study's)")
    modes: list[Mode] = Field(default_factory=lambda: ["F", "L", "M"])


class StudyBench(Strict):
    """A benchmark of the study (the same keys as a run config's eval.benches)."""

    kind: Literal["reward-bench", "rm-bench", "pairs"]
    path: str
    limit: int | None = Field(None, ge=1)
    sample: int | None = Field(None, ge=1)
    seed: int = 0
    label: str | None = None


class StudyConfig(Strict):
    """What ``smorm study`` trains, evaluates and compares."""

    output_dir: str = Field(description="the study folder: runs/<method>-s<seed>/, study.json, study.md")
    base: dict[str, Any] = Field(description="the run config every method starts from (model, data, train)")
    methods: list[StudyMethod] = Field(min_length=1)
    seeds: list[int] = Field(default_factory=lambda: [0, 1, 2], min_length=1)
    benches: list[StudyBench] = Field(min_length=1)
    comparisons: list[Comparison] = Field(default_factory=list)
    sweep: Sweep | None = None
    eval_batch_size: int = Field(16, ge=1)
    eval_precision: Literal["auto", "bf16", "fp32"] = "auto"
    bootstrap: int = Field(2000, ge=100, description="bootstrap resamples of items and seeds")
    bootstrap_seed: int = 0

    def method_seeds(self) -> dict[str, set[int]]:
        """The seeds each method runs: its own ``seeds``, else the study's; a Baseline SM's are those both
        of its members run."""
        seeds = {m.name: set(m.seeds if m.seeds is not None else self.seeds) for m in self.methods}
        for method in self.methods:
            if method.baseline_sm is not None:
                seeds[method.name] = set.intersection(*(seeds.get(name, set()) for name in method.baseline_sm))
        return seeds

    @model_validator(mode="after")
    def _names(self) -> StudyConfig:
        names = [m.name for m in self.methods]
        if len(set(names)) != len(names):
            raise ValueError(f"methods: names must differ, got {names}")
        trained = {m.name for m in self.methods if m.baseline_sm is None}
        for method in self.methods:
            if method.baseline_sm is not None and not set(method.baseline_sm) <= trained:
                raise ValueError(f"methods.{method.name}.baseline_sm: {method.baseline_sm} must name trained "
                                 f"methods of this study ({sorted(trained)})")
        if len(set(self.seeds)) != len(self.seeds):
            raise ValueError(f"seeds must differ, got {self.seeds}")
        for method in self.methods:
            if method.seeds is not None and not set(method.seeds) <= set(self.seeds):
                raise ValueError(f"methods.{method.name}.seeds: {method.seeds} must be seeds of the study ({self.seeds})")
            if method.baseline_sm is not None and method.seeds is not None:
                raise ValueError(f"methods.{method.name}: a Baseline SM runs on its members' seeds; remove seeds")
        seeds_of = self.method_seeds()
        for comparison in self.comparisons:
            for side in (comparison.a, comparison.b):
                method, _, mode = side.rpartition("/")
                if method not in names or mode not in ("F", "L", "M", "G"):
                    raise ValueError(f"comparisons: {side!r} is not METHOD/MODE with a method of this study")
            a, b = (seeds_of[side.rpartition("/")[0]] for side in (comparison.a, comparison.b))
            if a != b:
                raise ValueError(f"comparisons: {comparison.a} and {comparison.b} run on different seeds "
                                 f"({sorted(a)} vs {sorted(b)}); a paired difference needs the same ones")
        if self.sweep is not None and self.sweep.method not in trained:
            raise ValueError(f"sweep.method {self.sweep.method!r} is not a trained method of this study")
        return self


def merge(base: dict[str, Any], overlay: dict[str, Any]) -> dict[str, Any]:
    """``overlay`` on ``base``: mappings merge key by key, anything else (lists included) is replaced."""
    merged = copy.deepcopy(base)
    for key, value in overlay.items():
        if isinstance(value, dict) and isinstance(merged.get(key), dict):
            merged[key] = merge(merged[key], value)
        else:
            merged[key] = copy.deepcopy(value)
    return merged
