"""What the trainer must do differently when accelerate shards the model (DeepSpeed, FSDP).

Under DeepSpeed ZeRO-3 and FSDP each process holds only a shard of every weight, so the module's
own tensors are not the model: saving gathers the full state dict through accelerate. Under any
DeepSpeed stage or FSDP the optimizer state is sharded too, which smorm's single-file checkpoints
cannot hold. accelerate is imported where it is used (STYLE 8).
"""

from __future__ import annotations

import contextlib
import logging
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import torch

from smorm.train import checkpoint as ckpt
from smorm.train.config import RunConfig, TrainConfig

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


def _zero3_plugin(accelerator: Any) -> Any:
    """The active DeepSpeed plugin under ZeRO-3, else None."""
    from accelerate.utils import DistributedType

    if accelerator.distributed_type != DistributedType.DEEPSPEED:
        return None
    plugin = accelerator.state.deepspeed_plugin
    return plugin if int(plugin.zero_stage) == 3 else None


@contextlib.contextmanager
def loading(accelerator: Any) -> Iterator[None]:
    """Where the backbone loads under ZeRO-3: partitioned at load time only if ``zero3_init_flag``.

    accelerate registers its DeepSpeed config with transformers whenever ZeRO-3 is selected, and
    transformers' ``from_pretrained`` then partitions the weights as it loads them (``zero.Init``)
    whatever ``zero3_init_flag`` says. Here the flag decides: true (configs/accelerate/zero3.yaml),
    each process only ever holds its shard, the way a model larger than one GPU loads; false, each
    process loads the whole backbone into host memory and DeepSpeed partitions it at ``prepare``.
    A no-op without ZeRO-3.
    """
    plugin = _zero3_plugin(accelerator)
    if plugin is None or plugin.zero3_init_flag:
        yield
        return
    from transformers.integrations import unset_hf_deepspeed_config

    unset_hf_deepspeed_config()
    try:
        yield
    finally:
        plugin.set_deepspeed_weakref()  # what accelerate had registered, for the engine's own use


@contextlib.contextmanager
def gathered(accelerator: Any, module: torch.nn.Module) -> Iterator[None]:
    """``module``'s weights whole on every process for a read-only pass outside the engine.

    The ``top_k``/``frozen`` caching pass runs the lower layers before ``prepare``; under ZeRO-3
    with load-time partitioning each process holds only a flat shard of them, so they are gathered
    for the pass (``deepspeed.zero.GatheredParameters``, no process modifies them) and released
    after. The trainer gathers the whole backbone (the lower trunk is a view whose parameters are
    the backbone's), so for that pass each process holds the whole backbone once, in its load dtype.
    A no-op where weights are whole.
    """
    plugin = _zero3_plugin(accelerator)
    parameters = [p for p in module.parameters() if hasattr(p, "ds_id")]
    if plugin is None or not parameters:
        yield
        return
    import deepspeed

    with deepspeed.zero.GatheredParameters(parameters, modifier_rank=None):
        yield


def configure_deepspeed(accelerator: Any, train: TrainConfig) -> None:
    """Fill the DeepSpeed config from the run's own schedule, before ``prepare`` builds the engine.

    accelerate sizes a DeepSpeed engine from a DataLoader it is given; smorm's trainer draws its own
    length-grouped batches, so the sizes are set here: ``train_micro_batch_size_per_gpu`` is one
    process's share of ``train.pair_batch_size`` (DeepSpeed only books it), ``gradient_accumulation_steps``
    is ``train.grad_accum`` (DeepSpeed scales the loss by it and steps only at the last micro-batch, so
    the trainer hands it the unscaled loss; see :func:`backward`), and ``gradient_clipping`` is
    ``train.max_grad_norm`` (DeepSpeed clips inside its own step). A value the accelerate config file
    set otherwise is overridden, with a warning: the run config is the one source of the schedule.
    A no-op without DeepSpeed.
    """
    from accelerate.utils import DistributedType

    if accelerator.distributed_type != DistributedType.DEEPSPEED:
        return
    ds = accelerator.state.deepspeed_plugin.deepspeed_config
    world = accelerator.num_processes
    micro = max(1, train.pair_batch_size // world)
    wanted = {
        "train_micro_batch_size_per_gpu": micro,
        "gradient_accumulation_steps": train.grad_accum,
        "train_batch_size": micro * train.grad_accum * world,
        "gradient_clipping": float(train.max_grad_norm or 0.0),  # 0: DeepSpeed does not clip
    }
    for key, value in wanted.items():
        old = ds.get(key, "auto")
        if old not in ("auto", value):
            logger.warning("DeepSpeed config %s=%s overridden by the run config: %s", key, old, value)
        ds[key] = value
    if "optimizer" in ds or "scheduler" in ds:
        raise ValueError(
            "the DeepSpeed config names an optimizer or scheduler: smorm builds both from train.lr, "
            "train.scheduler and train.warmup_ratio; remove them from the DeepSpeed config"
        )


def backward(accelerator: Any, loss: torch.Tensor, grad_accum: int, sync: bool) -> None:
    """One micro-batch's backward, averaged over ``grad_accum`` micro-batches.

    Under DeepSpeed the engine divides by its ``gradient_accumulation_steps`` (set equal to
    ``grad_accum`` by :func:`configure_deepspeed`) and clips and steps at the micro-batch where
    ``sync`` is true, so it gets the raw loss and the boundary; elsewhere the loss is divided here
    and the optimizer is stepped by the trainer.
    """
    from accelerate.utils import DistributedType

    if accelerator.distributed_type == DistributedType.DEEPSPEED:
        accelerator.deepspeed_engine_wrapped.backward(loss, sync_gradients=sync)
    else:
        accelerator.backward(loss / grad_accum)


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
