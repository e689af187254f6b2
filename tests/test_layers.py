"""The package's layers point down: no module imports a higher layer, siblings stay apart, no import cycles.

Every ``smorm.*`` import is read with ``ast`` from the source (module level, inside functions, and
under ``if TYPE_CHECKING:``), so an import that only runs inside a function, where a cycle or an
upward dependency is easiest to hide, counts like any other. See ARCHITECTURE.md.
"""

from __future__ import annotations

import ast
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

SRC = Path(__file__).resolve().parents[1] / "src"
PACKAGE = SRC / "smorm"

# Low to high. A unit is a subpackage or a top-level module of smorm; "" is smorm/__init__.py.
LAYERS: list[tuple[str, ...]] = [
    # foundation: the registry type, the named batch/output types, atomic file I/O, settings glue
    # (pydantic), logging setup; they import nothing of smorm above them
    ("", "registry", "types", "io", "settings", "logs"),
    ("data",),  # readers, adapters, validation, formatting, collation; a run's D_S and D_M
    # models: backbone, heads (gate included), RewardModel, scoring, export. losses: pure functions over
    # named tensors. Neither needs the other (a model never computes its loss; a loss never sees a
    # model), so they share a layer and INDEPENDENT keeps them apart.
    ("models", "losses"),
    ("run_config",),  # the typed run config: names losses, points at data; read by train and eval
    ("train", "eval"),  # the trainer; benchmarks and reports of any scorer (siblings: INDEPENDENT)
    ("gating", "rlhf", "serve", "integrations", "study"),  # recipes and apps on trained models; studies
    # the command line and what only it uses: cli_options (flags from settings models), catalog
    # (`smorm ls`), demo (`smorm demo`), __main__, and testing (tiny models for tests and benches)
    ("cli", "cli_options", "catalog", "demo", "__main__", "testing"),
]

# Units of one layer that must not import each other.
INDEPENDENT: list[tuple[str, str]] = [("models", "losses"), ("train", "eval")]

# (importing file relative to src/, imported module) pairs let through on purpose, each with its reason.
# Empty: every import follows the layers.
ALLOWED: set[tuple[str, str]] = set()

LAYER_OF = {unit: index for index, units in enumerate(LAYERS) for unit in units}


@dataclass(frozen=True)
class Import:
    file: Path
    line: int
    importer: str  # dotted module name of the importing file
    imported: str  # dotted module name imported (a submodule when ``from pkg import sub`` names one)
    type_only: bool  # under ``if TYPE_CHECKING:``: never runs

    @property
    def where(self) -> str:
        return f"{self.file.relative_to(SRC)}:{self.line}"


def module_name(path: Path) -> str:
    parts = list(path.relative_to(SRC).with_suffix("").parts)
    if parts[-1] == "__init__":
        parts.pop()
    return ".".join(parts)


def all_modules() -> set[str]:
    return {module_name(path) for path in PACKAGE.rglob("*.py")}


def unit_of(module: str) -> str:
    """``smorm.eval.runner`` -> ``eval``; ``smorm`` -> ``""``."""
    return module.split(".")[1] if "." in module else ""


def _type_checking_nodes(tree: ast.AST) -> set[int]:
    inside: set[int] = set()
    for node in ast.walk(tree):
        if isinstance(node, ast.If) and "TYPE_CHECKING" in ast.unparse(node.test):
            inside.update(id(child) for statement in node.body for child in ast.walk(statement))
    return inside


def imports_of(path: Path, modules: set[str]) -> Iterator[Import]:
    tree = ast.parse(path.read_text(), filename=str(path))
    importer = module_name(path)
    type_only = _type_checking_nodes(tree)
    package = importer if path.name == "__init__.py" else importer.rpartition(".")[0]
    for node in ast.walk(tree):
        targets: list[str] = []
        if isinstance(node, ast.Import):
            targets = [alias.name for alias in node.names]
        elif isinstance(node, ast.ImportFrom):
            if node.level:  # relative: from . import x / from ..data import y
                base = package.split(".")[: len(package.split(".")) - node.level + 1]
                source = ".".join(base + ([node.module] if node.module else []))
            else:
                source = node.module or ""
            # ``from smorm.eval import diagnostics`` imports the submodule smorm.eval.diagnostics
            targets = [f"{source}.{a.name}" if f"{source}.{a.name}" in modules else source for a in node.names]
        for target in dict.fromkeys(targets):
            if target == "smorm" or target.startswith("smorm."):
                yield Import(path, node.lineno, importer, target, id(node) in type_only)


def every_import() -> list[Import]:
    modules = all_modules()
    return [i for path in sorted(PACKAGE.rglob("*.py")) for i in imports_of(path, modules)]


def test_every_unit_has_a_layer():
    units = {unit_of(m) for m in all_modules()}
    assert units - set(LAYER_OF) == set(), "place these in LAYERS (and ARCHITECTURE.md)"
    assert set(LAYER_OF) - units == set(), "LAYERS names units that no longer exist"


def layer_violations(imports: list[Import]) -> list[str]:
    problems = []
    for imp in imports:
        low, high = unit_of(imp.importer), unit_of(imp.imported)
        if low == high or (str(imp.file.relative_to(SRC)), imp.imported) in ALLOWED:
            continue
        if LAYER_OF[high] > LAYER_OF[low]:
            problems.append(f"{imp.where}: {imp.importer} (layer {LAYER_OF[low]}: {low or 'smorm'}) imports "
                            f"{imp.imported} (layer {LAYER_OF[high]}: {high}), a higher layer")
        elif (low, high) in INDEPENDENT or (high, low) in INDEPENDENT:
            problems.append(f"{imp.where}: {imp.importer} imports {imp.imported}; {low} and {high} must not "
                            "depend on each other")
    return problems


def test_no_module_imports_a_higher_layer():
    problems = layer_violations(every_import())
    assert not problems, "imports against the layers (low to high: " + " -> ".join(
        "/".join(u or "smorm" for u in units) for units in LAYERS) + "):\n" + "\n".join(problems)


def import_cycles(imports: list[Import]) -> list[list[str]]:
    """Strongly connected groups of modules (Tarjan), over the imports that run."""
    graph: dict[str, set[str]] = {}
    for imp in imports:
        if not imp.type_only and imp.imported != imp.importer:
            graph.setdefault(imp.importer, set()).add(imp.imported)
    index: dict[str, int] = {}
    low: dict[str, int] = {}
    stack: list[str] = []
    cycles: list[list[str]] = []

    def visit(node: str) -> None:
        index[node] = low[node] = len(index)
        stack.append(node)
        for nxt in sorted(graph.get(node, ())):
            if nxt not in index:
                visit(nxt)
                low[node] = min(low[node], low[nxt])
            elif nxt in stack:
                low[node] = min(low[node], index[nxt])
        if low[node] == index[node]:
            group = []
            while True:
                member = stack.pop()
                group.append(member)
                if member == node:
                    break
            if len(group) > 1:
                cycles.append(sorted(group))

    for node in sorted(graph):
        if node not in index:
            visit(node)
    return cycles


def test_no_import_cycles():
    imports = every_import()
    cycles = import_cycles(imports)
    lines = []
    for group in cycles:
        members = set(group)
        lines.append(" <-> ".join(group) + ": " + ", ".join(
            f"{i.where} imports {i.imported}" for i in imports
            if i.importer in members and i.imported in members and not i.type_only))
    assert not cycles, "modules that import each other (a function-level import does not hide it):\n" + "\n".join(lines)


def test_the_checks_catch_what_they_should():
    # an upward import, a sibling import, a cycle, and a submodule named through its package
    here = PACKAGE / "models" / "heads.py"
    upward = Import(here, 1, "smorm.models.heads", "smorm.gating.head", False)
    sibling = Import(here, 2, "smorm.models.heads", "smorm.losses.base", False)
    downward = Import(here, 3, "smorm.models.heads", "smorm.registry", False)
    problems = layer_violations([upward, sibling, downward])
    assert len(problems) == 2 and problems[0].startswith("smorm/models/heads.py:1: ") and "higher layer" in problems[0]
    assert "must not depend on each other" in problems[1]
    back = Import(here, 4, "smorm.gating.head", "smorm.models.heads", False)
    assert import_cycles([upward, back]) == [["smorm.gating.head", "smorm.models.heads"]]
    assert import_cycles([upward, Import(here, 5, "smorm.gating.head", "smorm.models.heads", True)]) == []
    found = [i.imported for i in imports_of(PACKAGE / "eval" / "runner.py", all_modules())]
    assert "smorm.eval.report" in found
