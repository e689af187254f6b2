"""A run killed with SIGKILL and started again ends with the same weights as an uninterrupted run.

Same batches, same RNG, same optimizer state: the two runs do the same arithmetic, so they agree to
float32 rounding. Not bit for bit: two processes may round a matmul differently (the BLAS picks kernels
by memory alignment), which made an exact comparison fail in CI about one run in ten. A resume that
replayed a wrong batch, lost the optimizer's moments or restarted the schedule moves weights by ~1e-3
and fails the tolerance below.
"""

from __future__ import annotations

import os
import signal
import subprocess
import sys

import torch
from safetensors.torch import load_file

from tests.train.helpers import tiny_config, write_config


def run_train(config_path, env_extra=None):
    env = {**os.environ, **(env_extra or {})}
    return subprocess.run([sys.executable, "-m", "smorm", "train", str(config_path), "--quiet"],
                          capture_output=True, text=True, env=env, timeout=600)


def final_weights(run_dir):
    model = run_dir / "model"
    weights = load_file(model / "heads.safetensors")
    weights.update({f"backbone.{k}": v for k, v in load_file(model / "backbone" / "model.safetensors").items()})
    return weights


def test_sigkill_then_resume_matches_uninterrupted_run(tiny_llama_dir, tmp_path):
    steps = dict(steps=6, checkpoint_every=2)
    straight = write_config(tmp_path / "a", tiny_config(tmp_path / "a", tiny_llama_dir, **steps))
    killed = write_config(tmp_path / "b", tiny_config(tmp_path / "b", tiny_llama_dir, **steps))

    done = run_train(straight)
    assert done.returncode == 0, done.stderr[-3000:]

    # killed after step 5: step 4's checkpoint exists, step 5's work is lost and redone
    first = run_train(killed, {"SMORM_KILL_AFTER_STEP": "5"})
    assert first.returncode == -signal.SIGKILL, first.stderr[-3000:]
    assert not (tmp_path / "b" / "run" / "model").exists()
    checkpoints = sorted(p.name for p in (tmp_path / "b" / "run" / "checkpoints").iterdir())
    assert checkpoints == ["step-000002", "step-000004"]

    second = run_train(killed)
    assert second.returncode == 0, second.stderr[-3000:]
    assert "resuming from" in second.stdout + second.stderr

    a, b = final_weights(tmp_path / "a" / "run"), final_weights(tmp_path / "b" / "run")
    assert a.keys() == b.keys()
    for key in a:
        torch.testing.assert_close(b[key], a[key], rtol=1e-5, atol=1e-6, msg=lambda m, key=key: f"{key}: {m}")
    steps_logged = [line for line in (tmp_path / "b" / "run" / "metrics.jsonl").read_text().splitlines()]
    assert len(steps_logged) == 6
