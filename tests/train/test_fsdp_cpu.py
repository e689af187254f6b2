"""FSDP2 on two CPU processes (gloo): the sharded run saves a whole model folder that reloads and
scores like a one-process run of the same config."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest
import torch
from safetensors.torch import load_file

from smorm.models.reward_model import RewardModel
from tests.train.helpers import tiny_config, write_config

REPO = Path(__file__).resolve().parents[2]


@pytest.mark.slow
def test_fsdp_run_saves_full_weights_that_score_like_a_single_process_run(tiny_llama_dir, tmp_path):
    # checkpoint_every is set to show that it is skipped under FSDP (sharded Adam state), not fatal
    one = write_config(tmp_path / "one", tiny_config(tmp_path / "one", tiny_llama_dir, steps=2))
    two = write_config(tmp_path / "two", tiny_config(tmp_path / "two", tiny_llama_dir, steps=2, checkpoint_every=1))
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    single = subprocess.run([sys.executable, "-m", "smorm", "train", str(one), "--quiet"],
                            capture_output=True, text=True, env=env, timeout=600)
    assert single.returncode == 0, single.stderr[-3000:]
    report_path = tmp_path / "fsdp-report.json"
    sharded = subprocess.run(
        [sys.executable, "-m", "torch.distributed.run", "--nproc_per_node", "2", "--master_port", "29519",
         "-m", "tests.train.fsdp_worker", str(two), str(report_path)],
        capture_output=True, text=True, env=env, timeout=600, cwd=REPO,
    )
    assert sharded.returncode == 0, sharded.stderr[-3000:]
    assert "checkpoint_every=1 is ignored under DeepSpeed/FSDP" in sharded.stderr
    assert not (tmp_path / "two" / "run" / "checkpoints").exists()
    report = json.loads(report_path.read_text())
    assert report["processes"] == 2 and report["steps"] == 2
    # decoder-layer weights were split in two along dim 0 during training (FSDP2 pads an odd dim)
    assert any(".layers." in name for name in report["sharded"]), report
    for full, local in report["sharded"].values():
        assert local[0] == (full[0] + 1) // 2 and local[1:] == full[1:]

    a, b = (RewardModel.from_pretrained(tmp_path / name / "run" / "model") for name in ("one", "two"))
    a_state, b_state = a.state_dict(), b.state_dict()
    assert a_state.keys() == b_state.keys()
    for name in report["sharded"]:
        assert list(b_state[name].shape) == report["sharded"][name][0], name  # saved whole, not a shard
    # reduction order differs between one process and two (see test_distributed.py): 1e-3
    worst = max((a_state[k] - b_state[k]).abs().max().item() for k in a_state)
    assert worst < 1e-3, worst
    initial = {f"backbone.{k.removeprefix('model.')}": v for k, v in load_file(tiny_llama_dir / "model.safetensors").items()}
    moved = max((b_state[k] - initial[k]).abs().max().item() for k in initial if k in b_state)
    assert moved > 1e-2, moved  # the sharded run trained, so the match above is not trivial
    prompts = ["How do I boil an egg?", "Name a prime number."]
    responses = ["Put it in boiling water for 8 minutes.", "8."]
    with torch.no_grad():
        sa, sb = a.score(prompts, responses, mode="M"), b.score(prompts, responses, mode="M")
    assert sa.reward == pytest.approx(sb.reward, abs=1e-3)
