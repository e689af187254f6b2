"""Options from one source: YAML 1.2 values, dotted overrides, and flags generated from the settings models."""

from __future__ import annotations

from pathlib import Path
from typing import Literal

import pytest
import typer
from pydantic import Field
from typer.main import get_command
from typer.testing import CliRunner

from smorm.cli import app
from smorm.cli_options import leaves_of, settings_command
from smorm.eval.settings import EvalSettings
from smorm.gating.settings import GateSettings
from smorm.rlhf.settings import BoNSettings, RelabelSettings, RLSettings
from smorm.serve.settings import ServeCommand
from smorm.settings import Strict, apply_overrides, parse_value, set_dotted
from smorm.train.config import load_config

REPO = Path(__file__).resolve().parents[1]
COMMANDS = {"eval": (EvalSettings, ("run",)), "gate": (GateSettings, ("run",)), "serve": (ServeCommand, ("run",)),
            "bon": (BoNSettings, ()), "rl": (RLSettings, ()), "relabel": (RelabelSettings, ("gold",))}
# Options that are not settings: the glue's own (--config), the progress switch, click's --help.
GLUE = {"--config", "--quiet", "--no-quiet", "--help"}


@pytest.mark.parametrize("text, value", [
    ("1e-3", 1e-3), ("5E+2", 500.0), ("-2.5e-1", -0.25), (".5e1", 5.0), ("1.0e-5", 1e-5), ("3", 3),
    ("0.1", 0.1), ("true", True), ("null", None), ("[1, 2e-1]", [1, 0.2]), ("abc", "abc"), ("1e", "1e"),
    ("e5", "e5"), ("1_000", 1000)])
def test_values_are_read_as_yaml_1_2(text, value):
    parsed = parse_value(text)
    assert parsed == value and type(parsed) is type(value)


def test_a_loss_option_in_scientific_notation_is_a_number(shared_data):
    # The bug: PyYAML read 1e-3 as a string, and the loss's option check refused "got str".
    config = load_config(REPO / "configs" / "methods" / "bsr.yaml", ["losses.0.options.bsr_lambda=2e-3"])
    assert config.losses[0].options["bsr_lambda"] == 2e-3


def test_set_dotted_and_its_errors():
    tree: dict = {"a": [{"b": 1}], "v": 3}
    set_dotted(tree, "a.0.b", 2)
    set_dotted(tree, "a.1", {"b": 5})  # index len(list) appends
    set_dotted(tree, "c.d", 3)
    assert tree == {"a": [{"b": 2}, {"b": 5}], "v": 3, "c": {"d": 3}}
    with pytest.raises(ValueError, match="past the end of a list of 2"):
        set_dotted(tree, "a.5.b", 1)
    with pytest.raises(ValueError, match="must be a number"):
        set_dotted(tree, "a.x", 1)
    with pytest.raises(ValueError, match="is not key=value"):
        apply_overrides({}, ["train.lr"])


@pytest.mark.parametrize("name", sorted(COMMANDS))
def test_every_command_flag_is_a_settings_field_and_every_field_a_flag(name):
    model, arguments = COMMANDS[name]
    command = get_command(app).commands[name]
    flags = {opt for param in command.params for opt in param.opts + param.secondary_opts if opt.startswith("--")}
    declared = {part for leaf in leaves_of(model, arguments) for flag in leaf.flags for part in flag.split("/")}
    assert flags - GLUE - {f.replace("--", "--no-", 1) for f in declared} == declared
    positional = [param.name for param in command.params if not param.opts[0].startswith("-")]
    assert positional == [*arguments, "overrides"]


@pytest.mark.parametrize("name", sorted(COMMANDS))
def test_help_text_is_the_field_description(name):
    model, arguments = COMMANDS[name]
    help_text = CliRunner().invoke(app, [name, "--help"], env={"COLUMNS": "400"}).output
    for leaf in leaves_of(model, arguments):
        first_words = " ".join((leaf.info.description or "").split()[:4])
        assert first_words and first_words in " ".join(help_text.split()), (leaf.dotted, first_words)


class Toy(Strict):
    name: str = Field(description="the positional one")
    rate: float = Field(0.5, description="a float")
    mode: Literal["a", "b"] = Field("a", description="a choice")
    tags: list[str] = Field(default_factory=list, description="repeatable", json_schema_extra={"flag": "--tag"})
    sizes: list[int] = Field(default_factory=lambda: [1], description="numbers")
    on: bool = Field(False, description="a switch")


class Nested(Strict):
    toy: Toy
    depth: int = Field(1, description="top level")


def toy_app(model: type[Strict], arguments: tuple[str, ...]) -> tuple[typer.Typer, list]:
    seen: list = []
    toy = typer.Typer()
    settings_command(toy, "go", model, lambda settings: seen.append(settings), arguments=arguments)
    toy.command("other")(lambda: None)  # two commands, so typer keeps the subcommand name
    return toy, seen


def test_precedence_defaults_then_file_then_overrides_then_flags(tmp_path):
    toy, seen = toy_app(Toy, ("name",))
    config = tmp_path / "toy.yaml"
    config.write_text("rate: 2e-1\nmode: b\ntags: [x]\nsizes: [3, 4]\n")
    runner = CliRunner()
    result = runner.invoke(toy, ["go", "n1"])
    assert result.exit_code == 0, result.output
    assert seen[-1].model_dump() == {"name": "n1", "rate": 0.5, "mode": "a", "tags": [], "sizes": [1], "on": False}
    result = runner.invoke(toy, ["go", "n2", "--config", str(config)])
    assert seen[-1].rate == 0.2 and seen[-1].mode == "b" and seen[-1].tags == ["x"] and seen[-1].sizes == [3, 4]
    result = runner.invoke(toy, ["go", "n3", "rate=1e-3", "sizes=[7]", "--config", str(config)])
    assert seen[-1].rate == 1e-3 and seen[-1].sizes == [7] and seen[-1].mode == "b"
    result = runner.invoke(toy, ["go", "n4", "rate=1e-3", "--config", str(config), "--rate", "9",
                                 "--tag", "p", "--tag", "q", "--sizes", "5", "--on"])
    assert result.exit_code == 0, result.output
    assert (seen[-1].rate, seen[-1].tags, seen[-1].sizes, seen[-1].on) == (9.0, ["p", "q"], [5], True)


def test_errors_name_the_flag_and_the_file(tmp_path):
    toy, seen = toy_app(Toy, ("name",))
    result = CliRunner().invoke(toy, ["go", "n", "--mode", "c"])
    assert result.exit_code == 2 and "mode (--mode): Input should be 'a' or 'b'" in result.output
    config = tmp_path / "bad.yaml"
    config.write_text("rat: 1\n")
    result = CliRunner().invoke(toy, ["go", "n", "--config", str(config)])
    assert result.exit_code == 2 and f"{config}: rat: Extra inputs are not permitted" in result.output
    assert not seen


def test_nested_models_flatten_to_their_leaf_names():
    toy, seen = toy_app(Nested, ())
    result = CliRunner().invoke(toy, ["go", "toy.name=n", "--rate", "3", "--depth", "2"])
    assert result.exit_code == 0, result.output
    assert seen[-1].toy.rate == 3.0 and seen[-1].depth == 2 and seen[-1].toy.name == "n"


def test_a_flag_taken_twice_is_refused_when_the_command_is_built():
    class Clash(Strict):
        toy: Toy
        rate: float = 1.0

    with pytest.raises(ValueError, match="flag --rate is taken by both toy.rate and rate"):
        leaves_of(Clash, ())


def test_every_option_of_every_command_has_help_text():
    from smorm.settings import describe_fields
    from smorm.train.config import RunConfig

    for model in (RunConfig, *(model for model, _ in COMMANDS.values())):
        missing = [key for key, _, text in describe_fields(model) if not text.strip()]
        assert not missing, f"{model.__name__}: options without a description: {missing}"
