"""What `smorm ls` lists: every registered loss, head, benchmark, data format, and the methods."""

from __future__ import annotations

METHODS: dict[str, str] = {
    # name: one line; the config is configs/<name>.yaml or configs/methods/<name>.yaml
    "smorm": "bt on D_S + regression on D_M, one backbone, two heads (000 Eq. 5); score in mode F, L or M",
    "sorm": "single-objective BT reward model, bt only (000 Sec. 5.1 'Baseline (Single)')",
    "morm": "multi-objective regression only, regression on D_M (000 Sec. 5.1 'Baseline (Multi)')",
    "margin": "BT minus the data's score-difference margin (000 App. G.1; UltraFeedback/Argilla margins)",
    "label_smoothing": "label-smoothed BT, ε = 0.1 (000 App. G.1, sign slip fixed as in the GRM code)",
    "hinge": "BT-Hinge max(0, m - Δr), m = 0 as in the authors' code (002 Eq. 30)",
    "bt_norm": "BT on norm-divided rewards, logit normalisation (002 Eq. 29)",
    "bt_dr": "BT plus separate chosen/rejected logistic terms (002 Eq. 31)",
    "bsr": "BT + λ·B·(batch mean reward)², batch sum-to-zero, λ = 1e-3 times B pairs per device (002 Eq. 24-25)",
    "center": "BT + 0.01·mean((r_c + r_r)²), TRL's reward centering",
    "grm_sft": "GRM, linear head: (1-α)·BT + α·SFT regulariser through the kept LM head (000 App. G.1)",
    "grm_dpo": "GRM, linear head: (1-α)·BT + α·reference-free DPO regulariser (000 App. G.1)",
    "grm_sft_mlp": "GRM w/ sft with the MLP(1024) reward head, as in the GRM code (000 App. G.1)",
    "grm_dpo_mlp": "GRM w/ dpo with the MLP(1024) reward head (000 App. G.1)",
    "odin": "quality + length heads, length-decorrelated; scores with the quality head (000 Sec. 3)",
    "more": "per-source BT weighted by Frank-Wolfe min-norm λ, equal share per source (003 Eq. 7-9)",
    "plackett_luce": "listwise -log Plackett-Luce likelihood of ranked lists (Stack Exchange, HelpSteer, Arena-Bench), ties by Breslow",
    "ensemble": "k seeds of any method, mean, min or uwo (mean - λ·var, Coste et al. 2024) of rewards: smorm ensemble CONFIG --seeds 0 1 2 (000 App. G.1)",
    "baseline_sm": "SORM + MORM trained apart, F and L averaged, 2 passes: smorm combine --sorm A --morm B OUT (000 Sec. 3)",
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
