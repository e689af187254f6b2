"""What `smorm ls` lists: every registered loss, head, benchmark, data format, and the methods."""

from __future__ import annotations

METHODS: dict[str, str] = {
    "smorm": "bt on D_S + regression on D_M, one backbone, two heads (000 Eq. 5); score in mode F, L or M",
    "sorm": "single-objective BT reward model (bt only)",
    "morm": "multi-objective regression only (regression on D_M)",
}


def _load_registries() -> None:
    """Import the modules that register things (kept out of `import smorm` for speed)."""
    import importlib

    for module in ("smorm.losses", "smorm.models.heads", "smorm.data", "smorm.eval.benchmarks"):
        try:
            importlib.import_module(module)
        except ImportError:  # pragma: no cover - every module ships with smorm
            pass


def catalog() -> dict[str, list[tuple[str, str]]]:
    from smorm.registry import BENCHMARKS, DATA_ADAPTERS, HEADS, LOSSES

    _load_registries()
    sections = {
        "losses": [(e.name, e.description) for e in LOSSES.entries()],
        "heads": [(e.name, e.description) for e in HEADS.entries()],
        "benchmarks": [(e.name, e.description) for e in BENCHMARKS.entries()],
        "data formats": [(e.name, e.description) for e in DATA_ADAPTERS.entries()],
        "methods": sorted(METHODS.items()),
    }
    return sections
