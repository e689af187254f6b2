"""Device and precision, from one place: tensors go where the model is, autocast follows its device.

Nothing in smorm names a device type: batches are built on the host and moved with
:func:`move_to` to the device of the module they meet (:func:`module_device`), autocast takes
that device's type (:func:`autocast`), and a user's ``--device`` goes through
:func:`resolve_device`, whose default is the machine's accelerator when there is one.
"""

from __future__ import annotations

import dataclasses
from contextlib import AbstractContextManager, nullcontext
from typing import Any, TypeVar

import torch

T = TypeVar("T")



def host_device() -> torch.device:
    """The device new tensors get by default (the host CPU unless the user changed torch's default)."""
    return torch.get_default_device()


def accelerator_device() -> torch.device | None:
    """The machine's accelerator (CUDA, MPS, XPU, ...), or None when there is none."""
    accelerator = torch.accelerator.current_accelerator(check_available=True)
    return torch.device(accelerator.type) if accelerator is not None else None


def resolve_device(name: str | None = "auto") -> torch.device:
    """``auto`` / None: the accelerator if present, else the host; otherwise ``torch.device(name)``."""
    if name is None or name == "auto":
        return accelerator_device() or host_device()
    try:
        return torch.device(name)
    except RuntimeError as error:
        raise ValueError(f"--device {name!r}: {error}") from None


def module_device(module: torch.nn.Module) -> torch.device:
    """Where ``module``'s weights live (its first parameter or buffer); the host for a weightless one."""
    for parameter in module.parameters():
        return parameter.device
    for buffer in module.buffers():
        return buffer.device
    return host_device()


def autocast(device: torch.device, enabled: bool) -> AbstractContextManager[Any]:
    """bf16 autocast on ``device``'s type; a plain no-op context when not ``enabled`` (so devices that
    have no autocast, such as ``meta``, still run fp32)."""
    if not enabled:
        return nullcontext()
    return torch.autocast(device.type, dtype=torch.bfloat16)


def move_to(value: T, device: torch.device) -> T:
    """``value`` with every tensor in it on ``device``: tensors, dicts, lists, tuples and dataclasses."""
    if isinstance(value, torch.Tensor):
        return value.to(device)  # type: ignore[return-value]
    if isinstance(value, dict):
        return {key: move_to(item, device) for key, item in value.items()}  # type: ignore[return-value]
    if isinstance(value, list | tuple):
        return type(value)(move_to(item, device) for item in value)
    if dataclasses.is_dataclass(value) and not isinstance(value, type):
        changes = {f.name: move_to(getattr(value, f.name), device) for f in dataclasses.fields(value) if f.init}
        return dataclasses.replace(value, **changes)
    return value


def preferred_dtype(device: torch.device, requested: str | None = None) -> str:
    """The weight dtype to load a model in: what was asked for, else bf16 on an accelerator, fp32 on the host."""
    if requested is not None:
        return requested
    return "bfloat16" if device.type not in (host_device().type, "meta") else "float32"


def fast_bf16(device: torch.device) -> bool:
    """Does ``device`` multiply bf16 natively? CUDA with bf16 support; a CPU with AVX512-BF16 or AMX.

    Elsewhere bf16 is emulated: on a 2-core AVX2-only EPYC a 1024² bf16 matmul ran at 0.8 GFLOP/s
    against 116 in fp32, so ``precision: auto`` must not pick it there.
    """
    if device.type == "cuda":
        return bool(torch.cuda.is_available() and torch.cuda.is_bf16_supported())
    if device.type == host_device().type:
        checks = ("_is_avx512_bf16_supported", "_is_amx_tile_supported")  # torch.cpu's own CPU probes
        return any(bool(getattr(torch.cpu, name, lambda: False)()) for name in checks)
    return False


def resolve_precision(precision: str, device: torch.device) -> str:
    """``auto`` -> ``bf16`` where ``device`` multiplies bf16 natively, else ``fp32``; others unchanged."""
    if precision == "auto":
        return "bf16" if fast_bf16(device) else "fp32"
    return precision


def attention_implementation(device: torch.device) -> str | None:
    """flash-attention 2 on CUDA when the package is installed; else None, transformers' own choice
    (SDPA wherever the architecture has it, eager where it does not)."""
    import importlib.util

    if device.type == "cuda" and importlib.util.find_spec("flash_attn") is not None:
        return "flash_attention_2"
    return None
