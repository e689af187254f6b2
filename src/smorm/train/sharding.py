"""What the trainer must do differently when accelerate shards the model (DeepSpeed, FSDP).

Under DeepSpeed ZeRO-3 and FSDP each process holds only a shard of every weight, so the module's
own tensors are not the model: saving gathers the full state dict through accelerate. Under any
DeepSpeed stage or FSDP the optimizer state is sharded too, which smorm's single-file checkpoints
cannot hold. accelerate is imported where it is used (STYLE 8).
"""

from __future__ import annotations

import logging
from pathlib import Path
from typing import Any

import torch

from smorm.train import checkpoint as ckpt
from smorm.train.config import RunConfig

logger = logging.getLogger(__name__)


def weights_are_sharded(accelerator: Any) -> bool:
    """True under DeepSpeed ZeRO-3 and FSDP, where no process holds a whole weight."""
    from accelerate.utils import DistributedType

    if accelerator.distributed_type == DistributedType.FSDP:
        return True
    if accelerator.distributed_type == DistributedType.DEEPSPEED:
        return int(accelerator.state.deepspeed_plugin.zero_stage) == 3
    return False


def optimizer_is_sharded(accelerator: Any) -> bool:
    """True under every DeepSpeed stage and FSDP: each process keeps only its part of the Adam state."""
    from accelerate.utils import DistributedType

    return accelerator.distributed_type in (DistributedType.DEEPSPEED, DistributedType.FSDP)


def check_engine(accelerator: Any) -> None:
    """Refuse DeepSpeed before the model is prepared, with the reason and what works instead.

    Two things are not done yet (both need a GPU to test): accelerate prepares a DeepSpeed engine
    only with a DataLoader or an explicit ``train_micro_batch_size_per_gpu``, and DeepSpeed scales
    the loss and steps by its own ``gradient_accumulation_steps`` while smorm's trainer does both
    itself, so the two would accumulate twice.
    """
    from accelerate.utils import DistributedType

    if accelerator.distributed_type == DistributedType.DEEPSPEED:
        raise NotImplementedError(
            "smorm's trainer does not run under DeepSpeed yet (no DataLoader for accelerate to size the "
            "engine by, and DeepSpeed's gradient accumulation would double smorm's); shard with FSDP "
            "instead: accelerate launch --config_file configs/accelerate/fsdp.yaml -m smorm train CONFIG"
        )


def check_run(accelerator: Any, config: RunConfig) -> None:
    """Refuse, before the first step, what a sharded run could not save or resume correctly."""
    if weights_are_sharded(accelerator) and config.train.trunk == "lora":
        # peft merges adapters into whole weights in place; a shard has no whole weight to merge
        # into, and LoRA's few trainable tensors are what DDP or ZeRO-2 already handle well.
        raise ValueError(
            "train.trunk=lora cannot be saved under DeepSpeed ZeRO-3 or FSDP (the adapters would have "
            "to be merged into sharded weights); launch with configs/accelerate/ddp.yaml"
        )
    if not optimizer_is_sharded(accelerator):
        return
    checkpoints = Path(config.output_dir) / "checkpoints"
    if ckpt.latest_checkpoint(checkpoints) is not None:
        raise ValueError(
            f"{checkpoints} holds a checkpoint, and smorm cannot resume under "
            "DeepSpeed or FSDP (its checkpoints hold one process's optimizer state); use another output_dir"
        )
    if config.train.checkpoint_every:
        logger.warning(
            "train.checkpoint_every=%d is ignored under DeepSpeed/FSDP: the optimizer state is sharded "
            "across processes and smorm's checkpoints hold one copy; the final model is still saved whole",
            config.train.checkpoint_every,
        )


def gathered_state_dict(accelerator: Any, model: torch.nn.Module) -> dict[str, torch.Tensor] | None:
    """The full state dict of a sharded model on the main process; None when weights are whole.

    A collective: every process must call it (each sends its shards), though only the main
    process gets the tensors back (ZeRO-3 needs ``zero3_save_16bit_model: true`` for this).
    """
    if not weights_are_sharded(accelerator):
        return None
    state: dict[str, torch.Tensor] = accelerator.get_state_dict(model)
    return state
