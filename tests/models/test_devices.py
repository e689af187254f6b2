"""Device-neutral code, proved on a CPU-only machine.

The model's weights are faked on a CUDA device (:class:`FakeTensor` carries a device of its own and
no data), and the trainer builds every kind of batch under :class:`FakeTensorMode`: each tensor must
come out on the model's device. A source scan makes sure nothing names the host as a device or
autocast type.

What is not proved here: forward passes on the faked device. In a CPU-only build of torch, indexing
or slicing a fake CUDA tensor (``h[:, 0]``) calls into CUDA and fails, and so do transformers' mask
functions, so scoring and the training forward on a GPU are left to bench/gpu_smoke.sh.
"""

from __future__ import annotations

import ast
from pathlib import Path

import pytest
import torch
from torch._subclasses.fake_tensor import FakeTensor, FakeTensorDeviceMismatchError, FakeTensorMode

from smorm.models.devices import autocast, module_device, move_to, preferred_dtype, resolve_device
from smorm.models.packing import pack_rows

SRC = Path(__file__).resolve().parents[2] / "src" / "smorm"
CUDA = torch.device("cuda", 0)


def fake_on(module: torch.nn.Module, mode: FakeTensorMode, device: torch.device = CUDA) -> torch.nn.Module:
    """Replace every parameter and buffer of ``module`` by a fake tensor on ``device`` (no data).

    The fakes do not require grad: autograd on a fake CUDA tensor aborts a CPU-only build of torch, so
    these tests run forward passes (where every input must meet the weights on their device).
    """
    for sub in module.modules():
        for name, parameter in list(sub._parameters.items()):
            if parameter is not None:
                sub._parameters[name] = FakeTensor(mode, parameter.detach().to("meta"), device)  # type: ignore[assignment]
        for name, buffer in list(sub._buffers.items()):
            if buffer is not None:
                sub._buffers[name] = FakeTensor(mode, buffer.to("meta"), device)
    return module


def test_the_fake_device_catches_a_tensor_left_on_the_host():
    mode = FakeTensorMode(allow_non_fake_inputs=True)
    layer = fake_on(torch.nn.Linear(4, 2), mode)
    with mode:
        assert layer(torch.ones(3, 4, device=module_device(layer))).device == CUDA
        with pytest.raises(FakeTensorDeviceMismatchError):
            layer(torch.ones(3, 4))


def test_a_packed_batch_moves_to_the_device_whole():
    packed = pack_rows([[1, 2]], [[[3], [4, 5]]], pad_id=0)
    mode = FakeTensorMode(allow_non_fake_inputs=True)
    with mode:
        target = FakeTensor(mode, torch.empty(1, device="meta"), CUDA).device
        moved = move_to({"packed": packed, "slots": [torch.zeros(2)]}, target)
    assert {f: getattr(moved["packed"], f).device for f in ("input_ids", "attention_mask", "position_ids",
                                                              "last_index", "real_tokens")} == dict.fromkeys(
        ("input_ids", "attention_mask", "position_ids", "last_index", "real_tokens"), CUDA)
    assert moved["slots"][0].device == CUDA and isinstance(moved["slots"], list)


@pytest.mark.parametrize("trunk, shared_prompt", [("full", False), ("full", True), ("lora", True), ("top_k", False),
                                                   ("frozen", False)])
def test_every_training_batch_goes_to_the_models_device(tmp_path, tiny_llama_dir, trunk, shared_prompt):
    from smorm.train.batches import step_indices
    from smorm.train.config import RunConfig
    from smorm.train.trainer import Trainer
    from tests.train.helpers import tiny_config

    raw = tiny_config(tmp_path, tiny_llama_dir, trunk=trunk, shared_prompt=shared_prompt)
    trainer = Trainer(RunConfig.model_validate(raw), show_progress=False)
    trainer.setup()
    trainer._all_sequences = trainer.data.all_sequences()
    indices = step_indices(trainer.plan, 0, 0, 0, trainer.data.chosen, trainer.data.rating_ids)
    seq = ([i for i in indices.pairs] + [trainer.data.num_pairs + i for i in indices.pairs]
           + [2 * trainer.data.num_pairs + j for j in indices.ratings])
    mode = FakeTensorMode(allow_non_fake_inputs=True)
    fake_on(trainer.model_unwrapped, mode)
    with mode:
        inputs = trainer._packed_inputs(indices) if shared_prompt else trainer._inputs(seq)
    tensors = list(_tensors(inputs))
    assert len(tensors) >= (6 if shared_prompt else 1)
    assert all(t.device == CUDA for t in tensors), [t.device for t in tensors]


def _tensors(value):
    if isinstance(value, torch.Tensor):
        yield value
    elif isinstance(value, dict):
        for item in value.values():
            yield from _tensors(item)
    elif hasattr(value, "__dataclass_fields__"):
        for name in value.__dataclass_fields__:
            yield from _tensors(getattr(value, name))


def test_device_resolution_and_dtype_defaults():
    host = torch.get_default_device()
    assert resolve_device("auto") == (torch.accelerator.current_accelerator(check_available=True) or host)
    assert resolve_device(None) == resolve_device("auto")
    assert resolve_device("meta") == torch.device("meta")
    with pytest.raises(ValueError, match="--device 'gpu0'"):
        resolve_device("gpu0")
    assert preferred_dtype(host) == "float32" and preferred_dtype(CUDA) == "bfloat16"
    assert preferred_dtype(CUDA, "float32") == "float32"
    with autocast(host, enabled=True):
        assert torch.get_autocast_dtype(host.type) == torch.bfloat16 and torch.is_autocast_enabled(host.type)
    with autocast(host, enabled=False):
        assert not torch.is_autocast_enabled(host.type)


HOST_NAMES = {"cpu"}


def host_device_literals(source: str) -> list[int]:
    """Lines where a string literal names the host as a device: ``"cpu"``, ``"cpu:0"``."""
    return [node.lineno for node in ast.walk(ast.parse(source))
            if isinstance(node, ast.Constant) and isinstance(node.value, str)
            and node.value.split(":")[0] in HOST_NAMES]


def literal_autocast_types(source: str) -> list[int]:
    """Lines of ``torch.autocast("…")`` / ``autocast(device_type="…")`` with a literal device type."""
    lines = []
    for node in ast.walk(ast.parse(source)):
        if isinstance(node, ast.Call) and getattr(node.func, "attr", getattr(node.func, "id", None)) == "autocast":
            values = list(node.args[:1]) + [k.value for k in node.keywords if k.arg == "device_type"]
            if any(isinstance(v, ast.Constant) and isinstance(v.value, str) for v in values):
                lines.append(node.lineno)
    return lines


def test_the_scan_finds_what_it_looks_for():
    planted = 'x.to("cpu")\ntorch.autocast("cu" + "da")\ntorch.autocast("cuda")\nautocast(device_type="mps")\n'
    assert host_device_literals(planted) == [1]
    assert literal_autocast_types(planted) == [3, 4]


@pytest.mark.parametrize("path", sorted(SRC.rglob("*.py")), ids=lambda p: str(p.relative_to(SRC)))
def test_no_source_file_names_a_device_or_an_autocast_type(path):
    source = path.read_text()
    assert not host_device_literals(source), f"{path.name}: a literal host device at lines {host_device_literals(source)}"
    assert not literal_autocast_types(source), f"{path.name}: a literal autocast type at lines {literal_autocast_types(source)}"
