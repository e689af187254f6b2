"""Checkpoint state round trips through safetensors + JSON; a checkpoint appears whole or not at all;
pruning keeps the newest. (Atomic file writes themselves: tests/test_io.py.)"""

from __future__ import annotations

import torch

from smorm.train import checkpoint as ckpt


def test_nested_state_round_trips_exactly(tmp_path):
    state = {"state": {0: {"step": torch.tensor(3.0), "exp_avg": torch.randn(4, 2)}},
             "param_groups": [{"lr": 1e-3, "params": [0, 1], "betas": (0.9, 0.999), "name": None}],
             "flag": True}
    ckpt.save_state(tmp_path / "opt", state)
    loaded = ckpt.load_state(tmp_path / "opt")
    assert loaded["param_groups"][0]["betas"] == (0.9, 0.999)
    assert loaded["param_groups"][0]["params"] == [0, 1] and loaded["flag"] is True
    assert 0 in loaded["state"] and torch.equal(loaded["state"][0]["exp_avg"], state["state"][0]["exp_avg"])
    assert not list(tmp_path.glob("*.pt")) and not list(tmp_path.glob("*.pkl"))


def test_optimizer_state_dict_round_trip_restores_adamw(tmp_path):
    param = torch.nn.Parameter(torch.randn(3))
    opt = torch.optim.AdamW([param], lr=0.1)
    param.sum().backward()
    opt.step()
    ckpt.save_state(tmp_path / "o", opt.state_dict())
    other = torch.optim.AdamW([torch.nn.Parameter(param.detach().clone())], lr=0.1)
    other.load_state_dict(ckpt.load_state(tmp_path / "o"))
    assert torch.equal(other.state_dict()["state"][0]["exp_avg"], opt.state_dict()["state"][0]["exp_avg"])


def test_checkpoints_are_listed_in_order_pruned_and_partial_ones_ignored(tmp_path):
    folder = tmp_path / "checkpoints"
    for step in (2, 4, 6):
        ckpt.write_checkpoint(folder, step, {"trainable": {"w": torch.ones(1) * step}}, {}, keep=2)
    (folder / ".tmp-crashed").mkdir()  # what a killed write leaves behind
    (folder / "step-000008").mkdir()  # no meta.json: incomplete
    assert [p.name for p in ckpt.list_checkpoints(folder)] == ["step-000004", "step-000006"]
    parts, meta = ckpt.read_checkpoint(ckpt.latest_checkpoint(folder), ["trainable"])
    assert meta["step"] == 6 and parts["trainable"]["w"].item() == 6
