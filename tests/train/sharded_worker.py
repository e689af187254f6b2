"""Worker of test_sharded_cpu.py, one per process: smorm's Trainer under accelerate's FSDP2 or
DeepSpeed ZeRO, on CPU with gloo.

    python -m torch.distributed.run --nproc_per_node 2 -m tests.train.sharded_worker ENGINE CONFIG REPORT

ENGINE is ``fsdp``, the name of a shipped DeepSpeed file, ``zero2`` or ``zero3``
(configs/accelerate/ENGINE.yaml), or ``zero3-whole``: zero3.yaml with ``zero3_init_flag: false``. accelerate enables FSDP and DeepSpeed only for accelerator process
groups (MULTI_GPU and kin), though FSDP2 (DTensor shards, all-gather, reduce-scatter) and DeepSpeed's
ZeRO engine (with ``DS_ACCELERATOR=cpu``) both run on CPU with gloo. So the worker builds the Trainer
as ``smorm train`` does, then switches accelerate's shared state to the engine, with the plugin the
config file describes, before setup() prepares the model: everything from accelerate's wrapping to
the gathered save is then accelerate's, the engine's and smorm's own code.
"""

from __future__ import annotations

import json
import os
import sys
from pathlib import Path
from typing import Any

import torch
import yaml
from accelerate.utils import DeepSpeedPlugin, DistributedType, FullyShardedDataParallelPlugin
from torch.distributed.tensor import DTensor

from smorm.train.config import load_config
from smorm.train.trainer import Trainer

REPO = Path(__file__).resolve().parents[2]


def use_fsdp(trainer: Trainer) -> DistributedType:
    # built first: constructing the plugin re-reads accelerate's distributed setup and would put
    # the state back to MULTI_CPU
    plugin = FullyShardedDataParallelPlugin(
        fsdp_version=2, reshard_after_forward=True, auto_wrap_policy="transformer_based_wrap",
        transformer_cls_names_to_wrap=["LlamaDecoderLayer"], state_dict_type="SHARDED_STATE_DICT",
    )
    trainer.accelerator.state.fsdp_plugin = plugin
    return DistributedType.FSDP


def use_deepspeed(trainer: Trainer, engine: str) -> DistributedType:
    # the shipped file's deepspeed_config keys are DeepSpeedPlugin's arguments (accelerate launch
    # passes them the same way, through the environment)
    name, _, variant = engine.partition("-")
    options = yaml.safe_load((REPO / "configs" / "accelerate" / f"{name}.yaml").read_text())["deepspeed_config"]
    if variant == "whole":
        options["zero3_init_flag"] = False
    plugin = DeepSpeedPlugin(**options)
    plugin.set_mixed_precision(trainer.precision if trainer.precision == "bf16" else "no")
    plugin.select(_from_accelerator_state=True)
    trainer.accelerator.state.deepspeed_plugins = plugin
    trainer.accelerator.deepspeed_engine_wrapped = None  # Accelerator() sets it only under DeepSpeed
    return DistributedType.DEEPSPEED


def sharded_parameters(trainer: Trainer) -> dict[str, tuple[list[int], list[int]]]:
    """Name -> (full shape, this process's local shape) of every weight split across processes."""
    found = {}
    for name, p in trainer.model_unwrapped.named_parameters():
        if isinstance(p, DTensor) and p.to_local().numel() < p.numel():
            found[name] = (list(p.shape), list(p.to_local().shape))
        elif hasattr(p, "ds_shape") and p.ds_tensor.numel() < p.ds_numel:  # ZeRO-3 partition
            found[name] = (list(p.ds_shape), [p.ds_tensor.numel()])
    return found


def main(engine: str, config_path: Path, report_path: Path) -> None:
    trainer = Trainer(load_config(config_path), show_progress=False)
    kind = use_fsdp(trainer) if engine == "fsdp" else use_deepspeed(trainer, engine)
    state = trainer.accelerator.state
    state.distributed_type = kind
    prepare = trainer.accelerator.prepare

    def prepare_sharded(*objects: Any) -> Any:
        # accelerate's FSDP step re-reads the distributed setup: put the engine back after it, as a
        # GPU run would have it, for what the trainer asks later (clipping, saving)
        prepared = prepare(*objects)
        state.distributed_type = kind
        return prepared

    trainer.accelerator.prepare = prepare_sharded  # type: ignore[method-assign]
    trainer.setup()
    sharded = sharded_parameters(trainer)  # proof that the weights really were split
    result = trainer.train()
    if trainer.is_main:
        metrics = [json.loads(line) for line in (trainer.output_dir / "metrics.jsonl").read_text().splitlines()]
        report = {"parameters": len(dict(trainer.model.named_parameters())), "sharded": sharded,
                  "steps": result.steps, "processes": trainer.accelerator.num_processes,
                  "engine": type(trainer.model).__name__, "metrics": metrics,
                  "torch_threads": torch.get_num_threads()}
        report_path.write_text(json.dumps(report))
    # leave together and close the process group before the interpreter tears the engine's and
    # gloo's threads down (left to exit, a rank now and then aborted: "terminate called without an
    # active exception")
    trainer.accelerator.wait_for_everyone()
    torch.distributed.destroy_process_group()
    # and skip the interpreter's teardown: even after the group is closed, a C++ thread left joinable
    # by gloo or the engine aborted one rank at exit once more (a fresh clone in session 12), which
    # fails a run whose report is already written. Everything this worker says is flushed first.
    sys.stdout.flush()
    sys.stderr.flush()
    os._exit(0)


if __name__ == "__main__":
    main(sys.argv[1], Path(sys.argv[2]), Path(sys.argv[3]))
