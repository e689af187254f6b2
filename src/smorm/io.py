"""Atomic file writes and JSON reading: the one place smorm writes a file that others may read.

A reader never sees a half-written file: every write goes to a temporary file in the target's own
folder (so the final rename stays on one file system) and ``os.replace`` puts it in place; a failed
write removes its temporary file. A whole folder (a model, an export, a checkpoint) is built in a
staging folder beside its target and swapped in with :func:`replace_folder`.

Standard library only (safetensors is imported inside :func:`atomic_save_tensors`), so every layer
can use it.
"""

from __future__ import annotations

import json
import os
import shutil
import tempfile
from collections.abc import Callable, Mapping
from pathlib import Path
from typing import Any


def atomic_write(path: str | os.PathLike[str], write: Callable[[Path], None]) -> Path:
    """Have ``write(temporary_path)`` fill a temporary file beside ``path``, then rename it to ``path``.

    The temporary file is made by :func:`tempfile.mkstemp` (owner-only permissions) and named
    ``.<name>.<random>``, so globs for the final names never match it.
    """
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, name = tempfile.mkstemp(prefix=f".{path.name}.", dir=path.parent)
    os.close(fd)
    temporary = Path(name)
    try:
        write(temporary)
        os.replace(temporary, path)
    except BaseException:
        temporary.unlink(missing_ok=True)
        raise
    return path


def atomic_write_text(path: str | os.PathLike[str], text: str) -> Path:
    """Write ``text`` to ``path`` atomically."""

    def write(temporary: Path) -> None:
        with open(temporary, "w") as handle:
            handle.write(text)

    return atomic_write(path, write)


def atomic_write_json(path: str | os.PathLike[str], value: Any, *, indent: int | None = 2,
                      default: Callable[[Any], Any] | None = None, newline: bool = True) -> Path:
    """Write ``json.dumps(value, indent=indent, default=default)`` (plus ``"\\n"`` if ``newline``) atomically."""
    return atomic_write_text(path, json.dumps(value, indent=indent, default=default) + ("\n" if newline else ""))


def atomic_save_tensors(path: str | os.PathLike[str], tensors: Mapping[str, Any],
                        metadata: Mapping[str, str] | None = None) -> Path:
    """Write a dict of tensors (and string ``metadata`` in its header) as a safetensors file atomically
    (no pickle)."""
    from safetensors.torch import save_file

    return atomic_write(path, lambda temporary: save_file(dict(tensors), str(temporary),
                                                          metadata=dict(metadata) if metadata else None))


def read_json(path: str | os.PathLike[str]) -> Any:
    """The JSON value stored in ``path``."""
    return json.loads(Path(path).read_text())


def replace_folder(staged: str | os.PathLike[str], target: str | os.PathLike[str]) -> Path:
    """Move the finished folder ``staged`` to ``target`` (same parent), replacing any folder there.

    An existing ``target`` is first renamed aside (``.<name>.old-<pid>``), so ``target`` is at every
    moment either the old folder or the new one, and the old one is deleted afterwards.
    """
    staged, target = Path(staged), Path(target)
    if target.exists():
        old = target.with_name(f".{target.name}.old-{os.getpid()}")
        os.replace(target, old)
        os.replace(staged, target)
        shutil.rmtree(old, ignore_errors=True)
    else:
        os.replace(staged, target)
    return target
