"""Library code logs and never prints; the CLI shows smorm's log messages on stderr through rich."""

from __future__ import annotations

import ast
import logging
from collections.abc import Iterator
from pathlib import Path

import pytest
from rich.logging import RichHandler
from typer.testing import CliRunner

from smorm.cli import app
from smorm.logs import setup_logging

SRC = Path(__file__).resolve().parents[1] / "src" / "smorm"
CLI_MODULES = {SRC / "cli.py", SRC / "rlhf" / "cli.py"}  # the command line may write to stdout (typer.echo)


def bare_prints(path: Path) -> list[int]:
    """Lines that use the builtin ``print``: called, or passed on (``log=print`` prints just the same)."""
    tree = ast.parse(path.read_text(), filename=str(path))
    return sorted({node.lineno for node in ast.walk(tree)
                   if isinstance(node, ast.Name) and node.id == "print" and isinstance(node.ctx, ast.Load)})


def test_the_print_finder_sees_calls_and_references_but_not_methods(tmp_path):
    sample = tmp_path / "sample.py"
    sample.write_text("def f(log=print):\n    console.print('ok')\n    print('hi')\n    printer = 1\n")
    assert bare_prints(sample) == [1, 3]


def test_library_code_logs_instead_of_printing():
    library = [path for path in sorted(SRC.rglob("*.py")) if path not in CLI_MODULES]
    assert len(library) > 20 and SRC / "train" / "trainer.py" in library  # the walk found the package
    found = [f"{path.relative_to(SRC.parent)}:{line}" for path in library for line in bare_prints(path)]
    assert found == [], "use logger = logging.getLogger(__name__), not print: " + ", ".join(found)


@pytest.fixture
def smorm_logger() -> Iterator[logging.Logger]:
    """The ``smorm`` logger, put back as it was: setup_logging changes process-wide state."""
    logger = logging.getLogger("smorm")
    handlers, level = list(logger.handlers), logger.level
    yield logger
    logger.handlers[:] = handlers
    logger.setLevel(level)


def test_setup_logging_shows_smorm_messages_on_stderr_once(smorm_logger, capsys):
    setup_logging("info")
    setup_logging("INFO")  # a second call replaces the handler: no message shown twice
    logging.getLogger("smorm.train.trainer").info("resuming from step-000004")
    logging.getLogger("smorm.train.trainer").debug("a debug detail")
    logging.getLogger("other.library").info("not ours")
    captured = capsys.readouterr()
    assert captured.out == ""
    assert captured.err.count("resuming from step-000004") == 1 and "INFO" in captured.err
    assert "a debug detail" not in captured.err and "not ours" not in captured.err


def test_the_cli_log_level_option_sets_the_level(smorm_logger):
    runner = CliRunner()
    assert runner.invoke(app, ["--log-level", "warning", "ls"]).exit_code == 0
    assert smorm_logger.level == logging.WARNING
    assert runner.invoke(app, ["ls"], env={"SMORM_LOG_LEVEL": "debug"}).exit_code == 0
    assert smorm_logger.level == logging.DEBUG
    assert runner.invoke(app, ["ls"]).exit_code == 0
    assert smorm_logger.level == logging.INFO
    assert sum(isinstance(handler, RichHandler) for handler in smorm_logger.handlers) == 1  # replaced, not added
    bad = runner.invoke(app, ["--log-level", "loud", "ls"])
    assert bad.exit_code == 2 and "Invalid value for --log-level" in bad.output and "got 'loud'" in bad.output
