"""Worker of test_fsdp_cpu.py, one per process: smorm's Trainer under accelerate's FSDP2 (gloo).

    python -m torch.distributed.run --nproc_per_node 2 -m tests.train.fsdp_worker CONFIG REPORT

accelerate enables FSDP only for GPU process groups (MULTI_GPU and kin), though FSDP2 itself
(DTensor shards, all-gather, reduce-scatter) runs on CPU with gloo. So the worker builds the
Trainer as ``smorm train`` does, then switches accelerate's shared state to FSDP2 with the plugin
configs/accelerate/fsdp.yaml describes, before setup() prepares the model: everything from
accelerate's fully_shard wrapping to the gathered save is then accelerate's and smorm's own code.
"""

from __future__ import annotations

import json
import sys
from pathlib import Path
from typing import Any

from accelerate.utils import DistributedType, FullyShardedDataParallelPlugin
from torch.distributed.tensor import DTensor

from smorm.train.config import load_config
from smorm.train.trainer import Trainer


def main(config_path: Path, report_path: Path) -> None:
    trainer = Trainer(load_config(config_path), show_progress=False)
    # built first: constructing the plugin re-reads accelerate's distributed setup and would put
    # the state back to MULTI_CPU
    plugin = FullyShardedDataParallelPlugin(
        fsdp_version=2, reshard_after_forward=True, auto_wrap_policy="transformer_based_wrap",
        transformer_cls_names_to_wrap=["LlamaDecoderLayer"], state_dict_type="SHARDED_STATE_DICT",
    )
    state = trainer.accelerator.state
    state.fsdp_plugin = plugin
    state.distributed_type = DistributedType.FSDP
    assert trainer.accelerator.is_fsdp2
    prepare = trainer.accelerator.prepare

    def prepare_as_fsdp(*objects: Any) -> Any:
        # accelerate's fully_shard step re-reads the distributed setup too: put FSDP back after it,
        # as a GPU run would have it, for what the trainer asks later (clipping, saving)
        prepared = prepare(*objects)
        state.distributed_type = DistributedType.FSDP
        return prepared

    trainer.accelerator.prepare = prepare_as_fsdp  # type: ignore[method-assign]
    trainer.setup()
    # proof that the weights were really sharded: DTensors whose local piece is a part of the whole
    parameters = dict(trainer.model.named_parameters())
    sharded = {n: (list(p.shape), list(p.to_local().shape)) for n, p in parameters.items()
               if isinstance(p, DTensor) and p.to_local().numel() < p.numel()}
    result = trainer.train()
    if trainer.is_main:
        report = {"parameters": len(parameters), "sharded": sharded, "steps": result.steps,
                  "processes": trainer.accelerator.num_processes}
        report_path.write_text(json.dumps(report))


if __name__ == "__main__":
    main(Path(sys.argv[1]), Path(sys.argv[2]))
