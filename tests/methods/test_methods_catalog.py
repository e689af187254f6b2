"""`smorm ls` lists every registered loss and every method, one line each; each method is runnable."""

from __future__ import annotations

from pathlib import Path

from typer.testing import CliRunner

from smorm.catalog import METHODS, catalog
from smorm.cli import app

REPO = Path(__file__).resolve().parents[2]
COMPOSITES = {"ensemble", "baseline_sm"}  # built from other runs by `smorm ensemble` / `smorm combine`


def section(output: str, title: str) -> list[str]:
    lines = output.splitlines()
    start = lines.index(title) + 1
    rows = []
    for line in lines[start:]:
        if not line.startswith("  "):
            break
        rows.append(line.strip())
    return rows


def test_ls_lists_every_loss_and_method_with_a_description():
    import smorm.losses  # noqa: F401 - registers the losses
    from smorm.registry import LOSSES

    result = CliRunner().invoke(app, ["ls"])
    assert result.exit_code == 0, result.output
    for title, names in (("losses", list(LOSSES)), ("methods", list(METHODS))):
        rows = section(result.output, title)
        listed = {row.split()[0]: row[len(row.split()[0]):].strip() for row in rows}
        assert set(listed) == set(names), title
        assert all(listed.values()), f"{title} without a description: {[n for n, d in listed.items() if not d]}"
    assert {"bt", "margin", "label_smoothing", "hinge", "bt_norm", "bt_dr", "bsr", "center", "grm_sft", "grm_dpo",
            "odin", "regression", "more"} <= set(LOSSES)
    for title in ("heads", "benchmarks", "data formats"):
        assert section(result.output, title), title


def test_every_method_has_a_config_or_a_command():
    configs = {p.stem for p in (REPO / "configs").rglob("*.yaml")}
    assert set(METHODS) - COMPOSITES <= configs
    assert all("smorm " in METHODS[name] for name in COMPOSITES)  # the line says which command builds it
    assert all("\n" not in line for line in METHODS.values())
    assert dict(catalog()["methods"]) == METHODS
