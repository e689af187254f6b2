"""configs/accelerate/: each file goes through accelerate's own launcher code to the plugin it sets up.

``accelerate launch --config_file F`` loads F (ClusterConfig), copies its nested keys onto the
launcher's arguments by name, turns them into environment variables, and the Accelerator in each
process builds its DeepSpeed / FSDP plugin from those. The same chain runs here, short of
starting processes, so a misspelt key or a wrong value fails here and not on a GPU cluster.
"""

from __future__ import annotations

import os
from pathlib import Path

import pytest
from accelerate.commands.config.config_args import ClusterConfig, load_config_from_file
from accelerate.utils import DistributedType

REPO = Path(__file__).resolve().parents[2]
ACCELERATE_CONFIGS = REPO / "configs" / "accelerate"
EXPECTED = {"ddp": DistributedType.MULTI_GPU, "zero2": DistributedType.DEEPSPEED,
            "zero3": DistributedType.DEEPSPEED, "fsdp": DistributedType.FSDP}


def launcher_env(path: Path) -> dict[str, str]:
    """The environment variables ``accelerate launch --config_file path`` adds for its processes."""
    # _validate_launch_command is accelerate's private merge of the file into the arguments, the
    # step that launch_command runs first; constraints.txt pins the accelerate it is tested with.
    from accelerate.commands.launch import _validate_launch_command, launch_command_parser
    from accelerate.utils.launch import prepare_deepspeed_cmd_env, prepare_multi_gpu_env

    args = launch_command_parser().parse_args(
        ["--config_file", str(path), "-m", "smorm", "train", "configs/smorm.yaml"])
    args, defaults, mp_from_config = _validate_launch_command(args)
    if not args.use_deepspeed:
        env = prepare_multi_gpu_env(args)
    else:  # launch_command's own lines before deepspeed_launcher: which fields the file set
        fields = list(defaults.deepspeed_config) + (["mixed_precision"] if mp_from_config else [])
        args.deepspeed_fields_from_accelerate_config = ",".join(fields)
        env = prepare_deepspeed_cmd_env(args)[1]
    return {k: v for k, v in env.items() if os.environ.get(k) != v}


def test_the_folder_holds_the_four_setups():
    assert {p.stem for p in ACCELERATE_CONFIGS.glob("*.y*ml")} == set(EXPECTED)


@pytest.mark.parametrize("name", sorted(EXPECTED))
def test_each_file_loads_with_accelerates_loader(name):
    config = load_config_from_file(str(ACCELERATE_CONFIGS / f"{name}.yaml"))
    assert isinstance(config, ClusterConfig)
    assert config.distributed_type == EXPECTED[name]
    assert config.num_machines == 1 and config.num_processes == 8 and not config.use_cpu


@pytest.mark.parametrize("name", sorted(EXPECTED))
def test_every_nested_key_is_a_launcher_option(name):
    # The launcher copies deepspeed_config/fsdp_config keys onto its arguments with setattr, so a
    # misspelt key is set on nothing anyone reads, silently. Each must be a real option.
    from accelerate.commands.launch import launch_command_parser

    options = {action.dest for action in launch_command_parser()._actions}
    config = load_config_from_file(str(ACCELERATE_CONFIGS / f"{name}.yaml"))
    nested = {**(config.deepspeed_config or {}), **(config.fsdp_config or {})}
    assert set(nested) <= options, sorted(set(nested) - options)
    assert bool(nested) is (name != "ddp")


def test_ddp_launches_plain_data_parallel():
    env = launcher_env(ACCELERATE_CONFIGS / "ddp.yaml")
    assert env["ACCELERATE_MIXED_PRECISION"] == "bf16"
    assert "ACCELERATE_USE_DEEPSPEED" not in env and "ACCELERATE_USE_FSDP" not in env


@pytest.mark.parametrize(("name", "stage"), [("zero2", 2), ("zero3", 3)])
def test_deepspeed_files_set_their_zero_stage(name, stage, monkeypatch):
    from accelerate.utils import DeepSpeedPlugin

    env = launcher_env(ACCELERATE_CONFIGS / f"{name}.yaml")
    assert env["ACCELERATE_USE_DEEPSPEED"] == "true"
    for key, value in env.items():
        monkeypatch.setenv(key, value)
    plugin = DeepSpeedPlugin()  # reads the launcher's environment, as each process does
    zero = plugin.deepspeed_config["zero_optimization"]
    assert plugin.zero_stage == stage and zero["stage"] == stage
    assert zero["offload_optimizer"]["device"] == "none" and zero["offload_param"]["device"] == "none"
    # left to the run config (smorm.train.sharding.configure_deepspeed fills them at prepare)
    assert plugin.deepspeed_config["gradient_accumulation_steps"] == "auto"
    assert plugin.deepspeed_config["gradient_clipping"] == "auto"
    # ZeRO-3 partitions the backbone as it loads (smorm.train.sharding.loading)
    assert plugin.zero3_init_flag is (stage == 3)
    # ZeRO-3 must gather on save, or accelerator.get_state_dict refuses and no model folder is written
    assert zero["stage3_gather_16bit_weights_on_model_save"] is (stage == 3)


def test_fsdp_file_sets_full_shard_per_decoder_layer(monkeypatch, tiny_llama_dir, tmp_path):
    from accelerate.utils import FullyShardedDataParallelPlugin
    from torch.distributed.fsdp import CPUOffloadPolicy, StateDictType
    from torch.distributed.fsdp.wrap import transformer_auto_wrap_policy

    from smorm.train.config import RunConfig
    from smorm.train.trainer import build_model
    from tests.train.helpers import tiny_config

    env = launcher_env(ACCELERATE_CONFIGS / "fsdp.yaml")
    assert env["ACCELERATE_USE_FSDP"] == "true"
    for key, value in env.items():
        monkeypatch.setenv(key, value)
    plugin = FullyShardedDataParallelPlugin()
    assert plugin.fsdp_version == 2
    assert plugin.reshard_after_forward is True  # FSDP2's FULL_SHARD
    assert plugin.state_dict_type == StateDictType.SHARDED_STATE_DICT
    assert not isinstance(plugin.cpu_offload, CPUOffloadPolicy)  # weights stay on the GPUs
    assert plugin.auto_wrap_policy is transformer_auto_wrap_policy
    assert plugin.transformer_cls_names_to_wrap == ["LlamaDecoderLayer"]
    # accelerate resolves the class name inside the model it wraps and raises if it is not there:
    # a smorm RewardModel on a Llama backbone must have it
    config = RunConfig.model_validate(tiny_config(tmp_path, tiny_llama_dir))
    model = build_model(config, ["helpfulness", "verbosity"])
    plugin.set_auto_wrap_policy(model)
    wrapped = {type(m).__name__ for m in model.modules()
               if plugin.auto_wrap_policy(module=m, recurse=False, nonwrapped_numel=0)}
    assert wrapped == {"LlamaDecoderLayer"}
