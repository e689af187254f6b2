"""The repo runs from a fresh clone in any folder: no absolute path of one machine in src/, tests/, configs/.

A path into one checkout's virtual environment passes on the machine that wrote it and fails everywhere
else (it did: two tokenizer tests read MiniLM from one checkout's virtual environment). Python
files are read as syntax trees, so every string literal is checked, not only those a regex
happens to catch; YAML and JSON files are parsed and every string value is checked.
"""

from __future__ import annotations

import ast
import json
import re
from collections.abc import Iterator
from pathlib import Path

import pytest
import yaml

REPO = Path(__file__).resolve().parents[1]
SCANNED = ("src", "tests", "configs")
# System locations that are the same on every POSIX machine, and the server's URL routes.
ALLOWED_ROOTS = {"dev", "proc", "sys", "usr", "etc", "bin"}
POSIX_ABSOLUTE = re.compile(r"^(/[A-Za-z0-9_.~-]+){2,}/?$")
WINDOWS_ABSOLUTE = re.compile(r"^[A-Za-z]:[\\/]")


def machine_paths_in_strings(strings: Iterator[tuple[int, str]]) -> list[tuple[int, str]]:
    """The (line, text) of every string that is an absolute filesystem path of one machine."""
    found = []
    for line, text in strings:
        for token in text.split():
            token = token.strip("'\"`,;()[]{}")
            if WINDOWS_ABSOLUTE.match(token) or (
                    POSIX_ABSOLUTE.match(token) and token.split("/")[1] not in ALLOWED_ROOTS):
                found.append((line, token))
    return found


def python_strings(source: str) -> Iterator[tuple[int, str]]:
    for node in ast.walk(ast.parse(source)):
        if isinstance(node, ast.Constant) and isinstance(node.value, str):
            yield node.lineno, node.value


def data_strings(value: object) -> Iterator[tuple[int, str]]:
    if isinstance(value, str):
        yield 0, value
    elif isinstance(value, dict):
        for key, item in value.items():
            yield from data_strings(key)
            yield from data_strings(item)
    elif isinstance(value, list):
        for item in value:
            yield from data_strings(item)


def scanned_files() -> list[Path]:
    files = []
    for folder in SCANNED:
        files += [p for p in (REPO / folder).rglob("*") if p.suffix in {".py", ".yaml", ".yml", ".json"}]
    return sorted(p for p in files if "__pycache__" not in p.parts)


def test_the_scan_covers_the_tree():
    names = {p.relative_to(REPO).as_posix() for p in scanned_files()}
    assert "src/smorm/cli.py" in names and "tests/test_repo_hygiene.py" in names
    assert any(name.startswith("configs/methods/") for name in names)


def test_the_detector_finds_machine_paths_and_passes_routes():
    # Built from pieces, so that this file does not itself hold the paths it plants.
    venv_path = "/".join(["", "work", "main", ".venv", "lib", "site-packages", "x", "model", ""])
    windows_path = "C:" + "\\models"
    planted = f'MINILM = "{venv_path}"\nHOME = "~/data"\nWIN = r"{windows_path}"\n'
    planted += 'ROUTE = "/score"\nDEV = "/dev/null"\nTEXT = "see ../shared/data/README.md"\n'
    assert [text for _, text in machine_paths_in_strings(python_strings(planted))] == [
        venv_path, windows_path]
    user_path = "/".join(["", "home", "me", "pairs.jsonl"])
    config = yaml.safe_load(f"data:\n  pairs:\n    - path: {user_path}\n    - path: ../shared/x.jsonl\n")
    assert [text for _, text in machine_paths_in_strings(data_strings(config))] == [user_path]


@pytest.mark.parametrize("path", scanned_files(), ids=lambda p: p.relative_to(REPO).as_posix())
def test_no_absolute_path_of_one_machine(path):
    text = path.read_text()
    if path.suffix == ".py":
        strings = python_strings(text)
    elif path.suffix == ".json":
        strings = data_strings(json.loads(text))
    else:
        strings = data_strings(list(yaml.safe_load_all(text)))
    found = machine_paths_in_strings(strings)
    assert not found, f"{path.relative_to(REPO)}: absolute paths of one machine: {found}"
