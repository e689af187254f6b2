"""FSDP2 and DeepSpeed ZeRO-2/ZeRO-3 on two CPU processes (gloo): each sharded run follows the
one-process run of the same config step by step (loss, learning rate, gradient norm) and saves a
whole model folder that reloads and scores like it.

The one-process run accumulates two micro-batches per step and clips, so a second accumulation in
DeepSpeed's engine, a lost clip, or a learning-rate schedule the engine ignored would each show as a
difference in the logged steps or the weights.
"""

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
# warmup + cosine over 3 steps: every step has its own learning rate; a small clip norm so clipping acts
TRAIN = {"steps": 3, "grad_accum": 2, "warmup_ratio": 0.34, "scheduler": "cosine", "max_grad_norm": 0.5}
PORTS = {("fsdp", "full"): 29519, ("zero2", "full"): 29521, ("zero3", "full"): 29523, ("zero3", "top_k"): 29525,
         ("zero3-whole", "top_k"): 29527}


@pytest.fixture(scope="module")
def single_runs(tiny_llama_dir, tmp_path_factory):
    """trunk -> the run folder of the one-process run (trained once per trunk)."""
    runs: dict[str, Path] = {}

    def run(trunk: str) -> Path:
        if trunk not in runs:
            folder = tmp_path_factory.mktemp(f"one-{trunk}")
            config = write_config(folder, tiny_config(folder, tiny_llama_dir, trunk=trunk, **TRAIN))
            done = subprocess.run([sys.executable, "-m", "smorm", "train", str(config), "--quiet"], capture_output=True,
                                  text=True, env={**os.environ, "OMP_NUM_THREADS": "1"}, timeout=600)
            assert done.returncode == 0, done.stderr[-3000:]
            runs[trunk] = folder / "run"
        return runs[trunk]

    return run


def read_metrics(run: Path) -> list[dict]:
    return [json.loads(line) for line in (run / "metrics.jsonl").read_text().splitlines()]


@pytest.mark.slow
@pytest.mark.parametrize(("engine", "trunk"), [("fsdp", "full"), ("zero2", "full"), ("zero3", "full"), ("zero3", "top_k"),
                                               ("zero3-whole", "top_k")])
def test_sharded_run_follows_and_saves_like_a_single_process_run(engine, trunk, single_runs, tiny_llama_dir, tmp_path):
    # top_k: the lower layers' features are cached before the engine wraps (and, under ZeRO-3,
    # partitions) the model; only the upper layer trains.
    single_run = single_runs(trunk)
    # checkpoint_every is set to show that it is skipped under sharding (sharded Adam state), not fatal
    config = write_config(tmp_path, tiny_config(tmp_path, tiny_llama_dir, trunk=trunk, checkpoint_every=1, **TRAIN))
    report_path = tmp_path / "report.json"
    env = {**os.environ, "OMP_NUM_THREADS": "1", "DS_ACCELERATOR": "cpu"}
    sharded = subprocess.run(
        [sys.executable, "-m", "torch.distributed.run", "--nproc_per_node", "2", "--master_port", str(PORTS[engine, trunk]),
         "-m", "tests.train.sharded_worker", engine, str(config), str(report_path)],
        capture_output=True, text=True, env=env, timeout=600, cwd=REPO,
    )
    assert sharded.returncode == 0, sharded.stderr[-3000:]
    assert "checkpoint_every=1 is ignored under DeepSpeed/FSDP" in sharded.stderr
    assert not (tmp_path / "run" / "checkpoints").exists()
    report = json.loads(report_path.read_text())
    assert report["processes"] == 2 and report["steps"] == TRAIN["steps"]
    if engine == "zero2":  # weights whole on every process; only gradients and Adam state split
        assert report["engine"] == "DeepSpeedEngine" and report["sharded"] == {}
    elif engine.startswith("zero3"):  # each process holds half of every weight's elements, flattened
        assert report["engine"] == "DeepSpeedEngine"
        assert any(".layers." in name for name in report["sharded"]), report
        for full, local in report["sharded"].values():
            assert local[0] == (torch.Size(full).numel() + 1) // 2
    else:  # decoder-layer weights split in two along dim 0 (FSDP2 pads an odd dim)
        assert any(".layers." in name for name in report["sharded"]), report
        for full, local in report["sharded"].values():
            assert local[0] == (full[0] + 1) // 2 and local[1:] == full[1:]

    # the same steps: learning rates equal, losses and clipped-gradient norms equal up to reduction order
    one, two = read_metrics(single_run), report["metrics"]
    assert [m["step"] for m in two] == [m["step"] for m in one] == [1, 2, 3]
    for a, b in zip(one, two, strict=True):
        assert b["lr"] == pytest.approx(a["lr"], rel=1e-9)
        assert b["loss"] == pytest.approx(a["loss"], abs=1e-4)
        assert b["grad_norm"] == pytest.approx(a["grad_norm"], rel=1e-3)
    assert len({m["lr"] for m in one}) == 3 and max(m["grad_norm"] for m in one) > TRAIN["max_grad_norm"]
    # the MFU's weights count a partitioned weight whole, and its tokens are every process's share
    # (the caching pass's tokens are not compared: the sharded run finds the one-process run's features)
    compute_one, compute_two = (json.loads((run / "train_summary.json").read_text())["compute"]
                                for run in (single_run, tmp_path / "run"))
    assert compute_two["train"]["weights"] == compute_one["train"]["weights"]
    assert compute_two["train"]["tokens"] == compute_one["train"]["tokens"]
    assert compute_two.get("caching", {}).get("weights") == compute_one.get("caching", {}).get("weights")

    a, b = RewardModel.from_pretrained(single_run), RewardModel.from_pretrained(tmp_path / "run")
    a_state, b_state = a.state_dict(), b.state_dict()
    assert a_state.keys() == b_state.keys()
    for name, (full, _) in report["sharded"].items():
        assert list(b_state[name].shape) == full, name  # saved whole, not a shard
    # reduction order differs between one process and two (see test_distributed.py): 1e-3
    worst = max((a_state[k] - b_state[k]).abs().max().item() for k in a_state)
    assert worst < 1e-3, worst
    initial = {f"backbone.{k.removeprefix('model.')}": v for k, v in load_file(tiny_llama_dir / "model.safetensors").items()}
    moved = max((b_state[k] - initial[k]).abs().max().item() for k in initial if k in b_state)  # top_k: the top layer
    assert moved > 1e-2, moved  # the sharded run trained, so the match above is not trivial
    prompts = ["How do I boil an egg?", "Name a prime number."]
    responses = ["Put it in boiling water for 8 minutes.", "8."]
    with torch.no_grad():
        sa, sb = a.score(prompts, responses, mode="M"), b.score(prompts, responses, mode="M")
    assert sa.reward == pytest.approx(sb.reward, abs=1e-3)
