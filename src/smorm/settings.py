"""Typed settings from files and ``key=value`` overrides: one set of rules for every command.

Every command's options are a pydantic model (the run config of ``smorm train``, the settings of
``smorm eval``, ``gate``, ``serve``, ``bon``, ``rl``). Values come, in rising precedence, from the
model's defaults, a YAML file, ``key=value`` overrides with dotted keys (``train.lr=1e-5``,
``data.pairs.0.limit=100``), and, on the command line, flags. Values are read as YAML 1.2 reads
them, so ``1e-3`` is a number everywhere (PyYAML's YAML 1.1 rules read it as a string).
"""

from __future__ import annotations

import re
from pathlib import Path
from typing import Any, TypeVar

import yaml
from pydantic import BaseModel, ConfigDict, ValidationError

ModelT = TypeVar("ModelT", bound=BaseModel)
# Help of every --device option (smorm.models.devices.resolve_device reads the value).
DEVICE_HELP = "device to score on: auto (the accelerator if present, else the host), cuda, cuda:1, mps, ..."


class Strict(BaseModel):
    """A settings model that rejects unknown keys (a typo is an error, never silently ignored)."""

    model_config = ConfigDict(extra="forbid")


class _Yaml12Loader(yaml.SafeLoader):
    """SafeLoader whose floats follow YAML 1.2: ``1e-3`` and ``5E+2`` are numbers, not strings."""


_Yaml12Loader.add_implicit_resolver(
    "tag:yaml.org,2002:float",
    re.compile(r"""^(?:[-+]?(?:[0-9][0-9_]*)(?:\.[0-9_]*)?[eE][-+]?[0-9]+
                  |[-+]?\.[0-9_]+[eE][-+]?[0-9]+)$""", re.X),
    list("-+0123456789."),
)


def load_yaml(text: str) -> Any:
    """Parse YAML text with YAML 1.2 numbers."""
    return yaml.load(text, Loader=_Yaml12Loader)  # a SafeLoader subclass: no arbitrary objects


def parse_value(text: str) -> Any:
    """The value of one ``key=value`` override: YAML, so ``1e-3``, ``[a, b]`` and ``null`` are typed."""
    return load_yaml(text)


def load_mapping(path: str | Path) -> dict[str, Any]:
    """A YAML (or JSON) file whose top level is a mapping; errors name the file."""
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"config file not found: {path}")
    try:
        loaded = load_yaml(path.read_text())
    except yaml.YAMLError as error:
        raise ValueError(f"{path}: not valid YAML ({error})") from None
    except UnicodeDecodeError as error:
        raise ValueError(f"{path}: not a text file ({error.reason} at byte {error.start})") from None
    if loaded is not None and not isinstance(loaded, dict):
        raise ValueError(f"{path}: the top level must be a mapping, got {type(loaded).__name__}")
    return loaded or {}


def set_dotted(tree: dict[str, Any], dotted: str, value: Any) -> None:
    """Set ``tree[a][b][0][c] = value`` for ``dotted = "a.b.0.c"``; index ``len(list)`` appends."""
    keys = dotted.split(".")
    node: Any = tree
    for depth, key in enumerate(keys[:-1]):
        if isinstance(node, list):
            node = node[_index(key, node, dotted)]
            continue
        if key not in node or node[key] is None:
            node[key] = [] if keys[depth + 1].isdigit() else {}
        node = node[key]
    last = keys[-1]
    if isinstance(node, list):
        index = _index(last, node, dotted, allow_append=True)
        if index == len(node):
            node.append(value)
        else:
            node[index] = value
    elif isinstance(node, dict):
        node[last] = value
    else:
        raise ValueError(f"override {dotted!r}: {'.'.join(keys[:-1])} is a value, not a section")


def _index(key: str, node: list[Any], dotted: str, allow_append: bool = False) -> int:
    if not key.isdigit():
        raise ValueError(f"override {dotted!r}: {key!r} indexes a list and must be a number")
    index = int(key)
    if index > len(node) or (index == len(node) and not allow_append):
        raise ValueError(f"override {dotted!r}: index {index} is past the end of a list of {len(node)}")
    return index


def apply_overrides(raw: dict[str, Any], overrides: list[str] | tuple[str, ...]) -> dict[str, Any]:
    """Apply ``key=value`` overrides (YAML values) to a raw settings tree, in order."""
    for override in overrides:
        if "=" not in override:
            raise ValueError(f"override {override!r} is not key=value")
        key, value = override.split("=", 1)
        set_dotted(raw, key.strip(), parse_value(value))
    return raw


def validate_settings(model: type[ModelT], raw: dict[str, Any], where: str = "settings",
                      names: dict[str, str] | None = None) -> ModelT:
    """``model.model_validate(raw)``, with every error as ``where: key (flag): problem``.

    Args:
        names: how a dotted key is spelled for the user (``{"out_dir": "--out"}``), shown beside it.
    """
    try:
        return model.model_validate(raw)
    except ValidationError as error:
        lines = []
        for problem in error.errors():
            key = ".".join(str(part) for part in problem["loc"]) or "(top level)"
            shown = f"{key} ({names[key]})" if names and key in names else key
            lines.append(f"{where}: {shown}: {problem['msg']}")
        raise ValueError("\n".join(lines)) from None


def describe_fields(model: type[BaseModel], prefix: str = "") -> list[tuple[str, str, str]]:
    """``(dotted key, default, description)`` of every leaf option, nested models flattened."""
    rows: list[tuple[str, str, str]] = []
    for name, info in model.model_fields.items():
        annotation = info.annotation
        if isinstance(annotation, type) and issubclass(annotation, BaseModel):
            rows += describe_fields(annotation, f"{prefix}{name}.")
            continue
        default = "required" if info.is_required() else repr(info.get_default(call_default_factory=True))
        rows.append((prefix + name, default, info.description or ""))
    return rows
