"""Model FLOPs of the work a model really did, and the matmul peak of this machine they are measured against.

MFU (model FLOPs utilisation, PaLM, Chowdhery et al. 2022, appendix B) is the model FLOPs of the real
tokens over wall time, divided by the peak FLOP/s of the device. The model FLOPs follow the usual
convention (Kaplan et al. 2020, Sec. 2.1; PaLM appendix B): a weight matrix of ``N`` entries costs
``2 N`` FLOPs per token it is applied to in the forward pass (a multiply and an add per entry) and
``4 N`` more in the backward pass (``2 N`` for the gradient of its input, ``2 N`` for the gradient of
the weight), so ``6 N`` per trained token. Here only the weights of matrix multiplies count
(``nn.Linear``, and transformers' ``Conv1D``): the input embedding is a lookup, and norms, biases,
activations, rotary embeddings and softmax are left out, and so are the attention score FLOPs
(``QK^T`` and ``AV``, about ``4 T d`` per token and layer; PaLM adds them, Kaplan leaves them out).
Weights that run but do not train (LoRA's frozen base weights, a frozen LM head) still cost the
forward ``2 N`` and the input gradient ``2 N``, but no weight gradient::

    training FLOPs per token = 2 N_run (forward) + 2 N_run (input gradients) + 2 N_trained (weight gradients)

which is ``6 N`` when every weight that runs trains (``full``, ``top_k``) and ``4 N + 2 N_lora`` under
LoRA. The input gradient of a part's first matmul is counted even where its input needs none (cached
hidden states under ``top_k``, pooled features under ``frozen``), as the convention does. Recomputed
activations (gradient checkpointing) are not model FLOPs and are not counted (PaLM's MFU, not HFU).

The peak is not a datasheet figure: :func:`measure_matmul_peak` times square matmuls on this device,
in the dtype the run computes in, and :func:`matmul_peak` keeps the figure per machine in
``$SMORM_CACHE/matmul_peak.json`` (``$SMORM_PEAK_FLOPS`` overrides it).
"""

from __future__ import annotations

import os
import platform
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch
from torch import nn

from smorm.io import atomic_write_json, read_json
from smorm.models.devices import host_device
from smorm.models.feature_cache import cache_root
from smorm.models.reward_model import RewardModel
from smorm.models.trunk import layer_list, num_layers

FORWARD, TRAINING = "forward", "training"
PEAK_ENV = "SMORM_PEAK_FLOPS"  # FLOP/s of one device: skips measuring
PEAK_FILE = "matmul_peak.json"


# ---------------------------------------------------------------- parameter counts


def matmul_parameters(module: nn.Module, trained_only: bool = False) -> int:
    """Entries of the weight matrices that ``module``'s matmuls apply (``nn.Linear``, ``Conv1D``).

    ``trained_only``: only those whose weight requires a gradient. A weight shared by two modules
    (tied embeddings) counts once per module that applies it.
    """
    total = 0
    for child in module.modules():
        if isinstance(child, nn.Linear) or type(child).__name__ == "Conv1D":
            weight = child.weight
            if isinstance(weight, torch.Tensor) and (weight.requires_grad or not trained_only):
                # a ZeRO-3 partitioned weight holds an empty shard here; ds_numel is its full size
                total += int(getattr(weight, "ds_numel", weight.numel()))
    return total


@dataclass(frozen=True)
class MatmulWeights:
    """Matmul weights that one pass applies to each of its inputs, and how many of them train."""

    runs: int
    trains: int = 0


@dataclass(frozen=True)
class StepWeights:
    """The matmul weights of a training step, by what they are applied to.

    Attributes:
        trunk: the backbone layers that run, once per real token.
        heads: the reward heads, once per pooled row (sequence).
        lm_head: the kept LM head (GRM), once per response token it predicts; zero when it does not run.
    """

    trunk: MatmulWeights
    heads: MatmulWeights
    lm_head: MatmulWeights = MatmulWeights(0, 0)

    def as_dict(self) -> dict[str, int]:
        return {"trunk": self.trunk.runs, "trunk_trained": self.trunk.trains, "heads": self.heads.runs,
                "lm_head": self.lm_head.runs, "lm_head_trained": self.lm_head.trains}


def _layers(model: RewardModel, start: int, stop: int) -> nn.Module:
    return nn.ModuleList(list(layer_list(model.base_model))[start:stop])


def training_weights(model: RewardModel, trunk: str, top_k: int = 2, lm_head: bool = False) -> StepWeights:
    """The matmul weights a training step of ``trunk`` mode runs (after ``apply_trunk_mode`` set what trains).

    ``full``/``lora``: every layer (under LoRA its frozen base weights and the adapters; only the
    adapters train); ``top_k``: the top ``k`` layers; ``frozen``: none. The heads always run and
    train. ``lm_head``: the step runs the kept LM head (a GRM loss).
    """
    total = num_layers(model)
    if trunk in ("full", "lora"):
        layers: nn.Module = _layers(model, 0, total)
    elif trunk == "top_k":
        layers = _layers(model, total - top_k, total)
    elif trunk == "frozen":
        layers = nn.ModuleList()
    else:
        raise ValueError(f"unknown trunk mode {trunk!r}")
    head = model.backbone.get_output_embeddings() if lm_head else None
    return StepWeights(
        trunk=MatmulWeights(matmul_parameters(layers), matmul_parameters(layers, trained_only=True)),
        heads=MatmulWeights(matmul_parameters(model.heads), matmul_parameters(model.heads, trained_only=True)),
        lm_head=(MatmulWeights(matmul_parameters(head), matmul_parameters(head, trained_only=True))
                 if isinstance(head, nn.Module) else MatmulWeights(0, 0)),
    )


def caching_weights(model: RewardModel, trunk: str, top_k: int = 2) -> int:
    """Matmul weights per token of the caching pass: the lower ``L - k`` layers (``top_k``), all (``frozen``)."""
    total = num_layers(model)
    if trunk == "top_k":
        return matmul_parameters(_layers(model, 0, total - top_k))
    if trunk == "frozen":
        return matmul_parameters(_layers(model, 0, total))
    raise ValueError(f"trunk mode {trunk!r} has no caching pass")


def layer_weights(base_model: nn.Module) -> int:
    """Matmul weights per token of every layer of a plain Hugging Face base model (no heads, no LM head)."""
    return matmul_parameters(layer_list(base_model))


# ---------------------------------------------------------------- FLOPs and MFU


def model_flops(tokens: int, parameters: int, kind: str, trained: int | None = None) -> int:
    """Model FLOPs of applying ``parameters`` matmul weights to ``tokens`` inputs.

    ``forward``: ``2 N`` per token. ``training``: ``2 N`` forward, ``2 N`` input gradients and
    ``2 N_trained`` weight gradients (``trained`` defaults to ``N``: ``6 N``).
    """
    if kind == FORWARD:
        return 2 * parameters * tokens
    if kind == TRAINING:
        return (4 * parameters + 2 * (parameters if trained is None else trained)) * tokens
    raise ValueError(f"kind must be {FORWARD!r} or {TRAINING!r}, not {kind!r}")


def step_flops(weights: StepWeights, tokens: int, rows: int, lm_tokens: int = 0) -> int:
    """Training FLOPs of steps that ran ``tokens`` real tokens, ``rows`` pooled rows, ``lm_tokens`` LM-head tokens."""
    return (model_flops(tokens, weights.trunk.runs, TRAINING, weights.trunk.trains)
            + model_flops(rows, weights.heads.runs, TRAINING, weights.heads.trains)
            + model_flops(lm_tokens, weights.lm_head.runs, TRAINING, weights.lm_head.trains))


def mfu(flops: float, seconds: float, peak_flops_per_s: float, devices: int = 1) -> float | None:
    """``flops / seconds / (devices * peak)``; None when nothing was timed or no peak is known."""
    if seconds <= 0 or peak_flops_per_s <= 0 or devices <= 0:
        return None
    return flops / seconds / (peak_flops_per_s * devices)


# ---------------------------------------------------------------- the matmul peak of this machine


@dataclass(frozen=True)
class MatmulPeak:
    """A device's matmul FLOP/s in one dtype, and where the figure came from (measured, cached, env)."""

    flops_per_s: float
    source: str
    dtype: str
    device: str

    def as_dict(self) -> dict[str, Any]:
        return {"flops_per_s": self.flops_per_s, "source": self.source, "dtype": self.dtype, "device": self.device}


def device_name(device: torch.device | str) -> str:
    """``cuda: NVIDIA H200``, ``cpu: <model name of /proc/cpuinfo>`` (the host), or the device type alone."""
    device = torch.device(device)
    if device.type == "cuda":
        return f"cuda: {torch.cuda.get_device_name(device)}"
    if device.type == host_device().type:
        return f"{device.type}: {cpu_model_name()}"
    return device.type


def cpu_model_name() -> str:
    """The CPU's ``model name`` from /proc/cpuinfo, else what :mod:`platform` knows."""
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or platform.machine() or "unknown"


def _synchronize(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)
    elif device.type != host_device().type and hasattr(torch, device.type):
        sync = getattr(getattr(torch, device.type), "synchronize", None)
        if sync is not None:
            sync()


def default_matmul_size(device: torch.device | str) -> int:
    """1024 on the host; 4096 on an accelerator, where a 2048 matmul is too small to fill it."""
    return 1024 if torch.device(device).type == host_device().type else 4096


def measure_matmul_peak(dtype: torch.dtype, device: torch.device | str, size: int | None = None,
                        seconds: float = 1.0) -> float:
    """FLOP/s of ``[size, size] @ [size, size]`` matmuls in ``dtype`` on ``device``, timed for about ``seconds``.

    A matmul is ``2 size^3`` FLOPs. After one untimed warm-up, matmuls run in timed rounds (a round
    doubles in length until it takes a twentieth of the budget, so that launch and synchronisation
    overheads stay small), and the fastest round gives the figure: the peak this device reaches,
    not the mean over the neighbours' noise. The host runs with ``torch.get_num_threads()`` threads.
    """
    device = torch.device(device)
    size = size or default_matmul_size(device)
    generator = torch.Generator().manual_seed(0)
    a = torch.randn(size, size, generator=generator).to(device=device, dtype=dtype)
    b = torch.randn(size, size, generator=generator).to(device=device, dtype=dtype)
    out = torch.empty(size, size, device=device, dtype=dtype)
    per_matmul = 2 * size**3
    with torch.no_grad():
        torch.matmul(a, b, out=out)
        _synchronize(device)
        repeat, best = 1, 0.0
        deadline = time.perf_counter() + seconds
        while True:
            start = time.perf_counter()
            for _ in range(repeat):
                torch.matmul(a, b, out=out)
            _synchronize(device)
            elapsed = time.perf_counter() - start
            if elapsed > 0:
                best = max(best, repeat * per_matmul / elapsed)
            if time.perf_counter() >= deadline:
                break
            if elapsed < seconds / 20:
                repeat *= 2
    return best


def peak_cache_file() -> Path:
    """``$SMORM_CACHE/matmul_peak.json``, else ``~/.cache/smorm/matmul_peak.json``."""
    return cache_root() / PEAK_FILE


def peak_key(dtype: torch.dtype, device: torch.device | str, size: int) -> str:
    """What the peak depends on: the device and its name, the dtype, the host's torch threads, the matmul size."""
    device = torch.device(device)
    threads = f"threads={torch.get_num_threads()}" if device.type == host_device().type else "threads=-"
    return f"{device_name(device)} | {str(dtype).removeprefix('torch.')} | {threads} | size={size}"


def matmul_peak(dtype: torch.dtype, device: torch.device | str, size: int | None = None, seconds: float = 1.0,
                cache_file: str | os.PathLike[str] | None = None) -> MatmulPeak:
    """This machine's matmul peak: ``$SMORM_PEAK_FLOPS`` if set, else the cached figure, else measured and cached.

    The cache (``cache_file``, default :func:`peak_cache_file`) holds one figure per :func:`peak_key`,
    so ``smorm train`` measures once per machine, dtype and thread count; it is written atomically.
    """
    device = torch.device(device)
    name = device_name(device)
    dtype_name = str(dtype).removeprefix("torch.")
    override = os.environ.get(PEAK_ENV, "").strip()
    if override:
        try:
            value = float(override)
        except ValueError as error:
            raise ValueError(f"${PEAK_ENV} must be a number of FLOP/s, got {override!r}") from error
        if value <= 0:
            raise ValueError(f"${PEAK_ENV} must be positive, got {override!r}")
        return MatmulPeak(value, "env", dtype_name, name)
    size = size or default_matmul_size(device)
    path = Path(cache_file) if cache_file is not None else peak_cache_file()
    key = peak_key(dtype, device, size)
    cached: dict[str, Any] = {}
    if path.is_file():
        try:
            cached = read_json(path)
        except ValueError:  # a damaged cache is measured anew and rewritten
            cached = {}
    entry = cached.get(key) if isinstance(cached, dict) else None
    if isinstance(entry, dict) and float(entry.get("flops_per_s", 0)) > 0:
        return MatmulPeak(float(entry["flops_per_s"]), "cached", dtype_name, name)
    value = measure_matmul_peak(dtype, device, size=size, seconds=seconds)
    cached = cached if isinstance(cached, dict) else {}
    cached[key] = {"flops_per_s": value, "seconds": seconds, "measured": time.strftime("%Y-%m-%d %H:%M:%S"),
                   "torch": torch.__version__}
    atomic_write_json(path, cached)
    return MatmulPeak(value, "measured", dtype_name, name)
