"""Command-line options generated from a settings model, so each option is declared once.

A command names its pydantic settings model; every leaf field becomes a flag whose help text is
the field's description and whose default is the field's default, nested models flattened
(``GatingOptions.train.steps`` -> ``--steps``). Besides the flags, every such command takes
``--config FILE`` (YAML) and ``KEY=VALUE`` overrides with dotted keys and YAML 1.2 values;
precedence: defaults < ``--config`` < overrides < flags. A field may name its flag in
``json_schema_extra={"flag": "--out"}`` (``"--hf/--smorm"`` for a boolean pair).

Why generated here rather than with pydantic-settings' CLI or jsonargparse: both would replace typer,
which already gives smorm its help rendering, completion-free subcommands and test runner, and
neither reads ``key=value`` overrides with YAML values the way ``smorm train`` always has. This
module is the thin bridge between the two well-kept libraries.
"""

from __future__ import annotations

import inspect
import types
import typing
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Annotated, Any, Literal

import typer
from pydantic import BaseModel
from pydantic.fields import FieldInfo
from rich.markup import escape

from smorm.settings import apply_overrides, load_mapping, parse_value, set_dotted, validate_settings

SCALARS = (str, int, float, bool, Path)
PRECEDENCE = ("Options also come from --config FILE (YAML) and KEY=VALUE overrides (dotted keys, YAML "
              "values: train.steps=100, benches=[]); precedence: defaults < --config < overrides < flags.")


@dataclass(frozen=True)
class Leaf:
    """One option: its dotted key in the settings model, the Python parameter and flag that carry it."""

    dotted: str
    parameter: str
    flags: tuple[str, ...]
    info: FieldInfo
    cli_type: Any  # what typer parses the flag as
    item_type: Any  # for lists: the element type values are checked against after YAML parsing


def _unwrap_optional(annotation: Any) -> Any:
    if typing.get_origin(annotation) in (typing.Union, types.UnionType):
        members = [a for a in typing.get_args(annotation) if a is not type(None)]
        return members[0] if len(members) == 1 else annotation
    return annotation


def _cli_type(annotation: Any) -> tuple[Any, Any]:
    """(typer type, list item type or None) for a field annotation."""
    annotation = _unwrap_optional(annotation)
    if typing.get_origin(annotation) is list:
        (item,) = typing.get_args(annotation) or (str,)
        return list[str], _unwrap_optional(item)
    if typing.get_origin(annotation) is Literal:
        return str, None
    if annotation in SCALARS:
        return annotation, None
    return str, None  # unions, dicts: the flag's text is read as YAML


def model_leaves(model: type[BaseModel], prefix: str = "") -> Iterator[tuple[str, FieldInfo]]:
    for name, info in model.model_fields.items():
        annotation = _unwrap_optional(info.annotation)
        if isinstance(annotation, type) and issubclass(annotation, BaseModel):
            yield from model_leaves(annotation, f"{prefix}{name}.")
        else:
            yield prefix + name, info


def leaves_of(model: type[BaseModel], arguments: Sequence[str]) -> list[Leaf]:
    """Every option of ``model`` but the positional ``arguments``; flag names checked to be unique."""
    leaves: list[Leaf] = []
    seen: dict[str, str] = {}
    for dotted, info in model_leaves(model):
        if dotted in arguments:
            continue
        extra = info.json_schema_extra if isinstance(info.json_schema_extra, dict) else {}
        flag = str(extra.get("flag") or "--" + dotted.rsplit(".", 1)[-1].replace("_", "-"))
        for name in flag.split("/"):
            if name in seen:
                raise ValueError(f"{model.__name__}: flag {name} is taken by both {seen[name]} and {dotted}")
            seen[name] = dotted
        cli_type, item_type = _cli_type(info.annotation)
        leaves.append(Leaf(dotted, dotted.replace(".", "__"), (flag,), info, cli_type, item_type))
    return leaves


def _help(info: FieldInfo) -> str:
    text = info.description or ""
    annotation = _unwrap_optional(info.annotation)
    if typing.get_origin(annotation) is Literal:
        text += f" (one of: {', '.join(str(a) for a in typing.get_args(annotation))})"
    if not info.is_required():
        default = info.get_default(call_default_factory=True)
        if default is not None and default != [] and not isinstance(default, BaseModel):
            text += f" [default: {default}]"
    else:
        text += " [required]"
    return escape(text)


def _flag_value(leaf: Leaf, value: Any) -> Any:
    """A flag's parsed value as the settings tree holds it (list items and free-form text as YAML)."""
    if leaf.cli_type == list[str]:
        if leaf.item_type is str or leaf.item_type is Path:
            return list(value)
        return [parse_value(item) for item in value]
    if leaf.cli_type is str and not _is_plain_str(leaf.info):
        return parse_value(value)
    if isinstance(value, Path):
        return str(value)
    return value


def _is_plain_str(info: FieldInfo) -> bool:
    annotation = _unwrap_optional(info.annotation)
    return annotation is str or typing.get_origin(annotation) is Literal


def resolve(model: type[BaseModel], leaves: Sequence[Leaf], arguments: dict[str, Any], config: Path | None,
            overrides: Sequence[str], flag_values: dict[str, Any]) -> BaseModel:
    """Defaults < ``config`` file < ``overrides`` < flags (``flag_values`` by parameter name), validated."""
    raw: dict[str, Any] = load_mapping(config) if config is not None else {}
    apply_overrides(raw, list(overrides))
    for leaf in leaves:
        value = flag_values.get(leaf.parameter)
        if value is None or (isinstance(value, list | tuple) and not value):
            continue  # not given on the command line
        set_dotted(raw, leaf.dotted, _flag_value(leaf, value))
    for name, value in arguments.items():
        raw[name] = str(value) if isinstance(value, Path) else value
    names = {leaf.dotted: leaf.flags[0] for leaf in leaves}
    return validate_settings(model, raw, where=str(config) if config else "options", names=names)


def settings_command(
    app: typer.Typer,
    name: str,
    model: type[BaseModel],
    run: Callable[..., None],
    *,
    arguments: Sequence[str] = (),
    extra: Sequence[inspect.Parameter] = (),
    help: str | None = None,
) -> None:
    """Register ``smorm NAME`` whose options are ``model``'s fields.

    Args:
        run: called as ``run(settings, **extra_values)``; raises ValueError / FileNotFoundError for
            the user's mistakes, shown as ``error: …`` with exit code 2.
        arguments: fields taken as positional arguments, in order (e.g. ``("run",)``).
        extra: parameters that are not settings (``--quiet``), passed to ``run`` by name.
    """
    leaves = leaves_of(model, arguments)
    fields = dict(model_leaves(model))
    parameters = []
    for argument in arguments:
        info = fields[argument]
        cli_type = _cli_type(info.annotation)[0]
        default = inspect.Parameter.empty if info.is_required() else info.get_default(call_default_factory=True)
        parameters.append(inspect.Parameter(
            argument, inspect.Parameter.POSITIONAL_OR_KEYWORD, default=default,
            annotation=Annotated[cli_type, typer.Argument(help=escape(info.description or ""), show_default=False)]))
    parameters.append(inspect.Parameter(
        "overrides", inspect.Parameter.POSITIONAL_OR_KEYWORD, default=None,
        annotation=Annotated[list[str] | None, typer.Argument(
            help="KEY=VALUE overrides (dotted keys, YAML values)", show_default=False)]))
    for leaf in leaves:
        parameters.append(inspect.Parameter(
            leaf.parameter, inspect.Parameter.KEYWORD_ONLY, default=None,
            annotation=Annotated[leaf.cli_type | None, typer.Option(*leaf.flags, help=_help(leaf.info),
                                                                    show_default=False)]))
    parameters.append(inspect.Parameter(
        "config", inspect.Parameter.KEYWORD_ONLY, default=None,
        annotation=Annotated[Path | None, typer.Option(help="YAML file of options (keys as below, nested "
                                                       "sections as in the settings)", show_default=False)]))
    parameters += list(extra)
    extra_names = [p.name for p in extra]

    def command(**values: Any) -> None:
        try:
            settings = resolve(model, leaves, {a: values[a] for a in arguments}, values["config"],
                               values["overrides"] or [], values)
            run(settings, **{n: values[n] for n in extra_names})
        except (ValueError, FileNotFoundError) as error:
            typer.secho(f"error: {error}", fg=typer.colors.RED, err=True)
            raise typer.Exit(2) from None

    command.__signature__ = inspect.Signature(parameters)  # type: ignore[attr-defined]
    command.__annotations__ = {p.name: p.annotation for p in parameters}
    command.__doc__ = help or run.__doc__
    command.__name__ = name
    app.command(name=name, epilog=escape(PRECEDENCE))(command)
