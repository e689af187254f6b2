"""Train the gate with the Bradley-Terry loss on cached features (004 Sec. 3.2, App. A).

Backbone and regression head are frozen, so a pair is fully described by the two prompt features
and the two attribute-reward vectors; training touches only the gate's MLP and β:

    min_{φ, β}  E[ -log σ(β R_chosen - β R_rejected) ],   R = g_φ(x)^T r'

App. A: AdamW, learning rate 1e-3, 10,000 steps of 1024 pairs, cosine decay. Batches are drawn
epoch by epoch from seeded permutations, so every pair is seen equally often and the same seed
gives the same gate.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from typing import Any

import torch

from smorm.gating.settings import GateTrainOptions
from smorm.losses.pairwise import bt_loss
from smorm.models.heads import GatingHead


@dataclass
class GatePairs:
    """P preference pairs as the gate sees them.

    Attributes:
        chosen_prompt / rejected_prompt: ``[P, d]`` prompt features (equal rows unless truncation
            cut the prompt differently for the two responses).
        chosen_rewards / rejected_rewards: ``[P, K]`` raw attribute rewards r (the gate debiases them).
    """

    chosen_prompt: torch.Tensor
    rejected_prompt: torch.Tensor
    chosen_rewards: torch.Tensor
    rejected_rewards: torch.Tensor

    def __post_init__(self) -> None:
        p = self.chosen_prompt.shape[0]
        if not (self.rejected_prompt.shape[0] == self.chosen_rewards.shape[0] == self.rejected_rewards.shape[0] == p):
            raise ValueError("GatePairs: every tensor needs the same number of pairs")

    def __len__(self) -> int:
        return int(self.chosen_prompt.shape[0])

    def subset(self, rows: torch.Tensor) -> GatePairs:
        return GatePairs(self.chosen_prompt[rows], self.rejected_prompt[rows], self.chosen_rewards[rows],
                         self.rejected_rewards[rows])


@dataclass
class GateTrainResult:
    """What training did. Accuracies are pairwise (chosen scored above rejected), in [0, 1].

    Attributes:
        beta_initial / beta_final: β before and after training.
        losses: ``(step, mean BT loss since the last record)``.
        train_pairs / val_pairs: pair counts of the split.
        val: held-out accuracy of the gate (``G``), of each fixed single debiased attribute and of their
            uniform mean, side by side (empty without a held-out set).
    """

    beta_initial: float
    beta_final: float
    losses: list[tuple[int, float]]
    train_pairs: int
    val_pairs: int
    epochs: float
    val: dict[str, float] = field(default_factory=dict)


def pairwise_accuracy(chosen: torch.Tensor, rejected: torch.Tensor) -> float:
    """Share of pairs with ``chosen > rejected`` (a tie counts half)."""
    wins = (chosen > rejected).double() + 0.5 * (chosen == rejected).double()
    return float(wins.mean())


def split_pairs(num_pairs: int, val_fraction: float, seed: int) -> tuple[torch.Tensor, torch.Tensor]:
    """Seeded (train rows, validation rows)."""
    order = torch.randperm(num_pairs, generator=torch.Generator().manual_seed(seed))
    num_val = int(round(val_fraction * num_pairs))
    if num_pairs - num_val < 1:
        raise ValueError(f"{num_pairs} pairs leave nothing to train the gate on")
    return order[num_val:], order[:num_val]


def batch_rows(num_rows: int, batch_size: int, steps: int, seed: int) -> list[torch.Tensor]:
    """``steps`` index batches, epoch after epoch of seeded permutations."""
    generator = torch.Generator().manual_seed(seed + 1)
    size = min(batch_size, num_rows)
    batches: list[torch.Tensor] = []
    order, position = torch.randperm(num_rows, generator=generator), 0
    while len(batches) < steps:
        if position + size > num_rows:
            order, position = torch.randperm(num_rows, generator=generator), 0
        batches.append(order[position : position + size])
        position += size
    return batches


def gated_pair_rewards(gate: GatingHead, pairs: GatePairs) -> tuple[torch.Tensor, torch.Tensor]:
    """``[P]`` gated rewards of chosen and rejected, in one gate pass over ``[2P, d]``."""
    rewards, _ = gate(torch.cat([pairs.chosen_prompt, pairs.rejected_prompt]),
                      torch.cat([pairs.chosen_rewards, pairs.rejected_rewards]))
    return rewards[: len(pairs)], rewards[len(pairs) :]


@torch.no_grad()
def validation_report(gate: GatingHead, pairs: GatePairs, attributes: list[str]) -> dict[str, float]:
    """Held-out pairwise accuracy of ``G`` next to every fixed single (debiased) attribute and their mean."""
    was_training = gate.training
    gate.eval()
    chosen, rejected = gated_pair_rewards(gate, pairs)
    gate.train(was_training)
    report = {"G": pairwise_accuracy(chosen, rejected), "G_loss": float(bt_loss(chosen, rejected))}
    chosen_r, rejected_r = gate.debiased(pairs.chosen_rewards), gate.debiased(pairs.rejected_rewards)
    for k, name in enumerate(attributes):
        report[f"attribute:{name}"] = pairwise_accuracy(chosen_r[:, k], rejected_r[:, k])
    report["mean_of_attributes"] = pairwise_accuracy(chosen_r.mean(-1), rejected_r.mean(-1))
    return report


def train_gate(
    gate: GatingHead,
    pairs: GatePairs,
    attributes: list[str],
    options: GateTrainOptions | None = None,
    show_progress: bool = True,
) -> GateTrainResult:
    """Fit ``gate`` (its MLP and β) to ``pairs`` with the BT loss; the gate is left in eval mode."""
    from tqdm.auto import tqdm

    options = options or GateTrainOptions()
    train_rows, val_rows = split_pairs(len(pairs), options.val_fraction, options.seed)
    train_pairs = pairs.subset(train_rows)
    decay = [p for n, p in gate.named_parameters() if n != "beta" and p.ndim > 1]
    no_decay = [p for n, p in gate.named_parameters() if n == "beta" or p.ndim <= 1]
    optimizer = torch.optim.AdamW(
        [{"params": decay, "weight_decay": options.weight_decay}, {"params": no_decay, "weight_decay": 0.0}],
        lr=options.lr,
    )
    scheduler = torch.optim.lr_scheduler.CosineAnnealingLR(optimizer, T_max=options.steps)
    beta_initial = float(gate.beta.detach())
    losses: list[tuple[int, float]] = []
    running, count = 0.0, 0
    torch.manual_seed(options.seed)  # dropout masks
    gate.train()
    batches = batch_rows(len(train_pairs), options.batch_size, options.steps, options.seed)
    for step, rows in enumerate(tqdm(batches, desc="training gate", unit="step", disable=not show_progress), 1):
        chosen, rejected = gated_pair_rewards(gate, train_pairs.subset(rows))
        loss = bt_loss(chosen, rejected)
        value = float(loss.detach())
        if not math.isfinite(value):
            raise FloatingPointError(f"gate training diverged at step {step} (loss {value}); lower --lr")
        optimizer.zero_grad(set_to_none=True)
        loss.backward()
        optimizer.step()
        scheduler.step()
        running, count = running + value, count + 1
        if step % options.log_every == 0 or step == options.steps:
            losses.append((step, running / count))
            running, count = 0.0, 0
    gate.eval()
    val = validation_report(gate, pairs.subset(val_rows), attributes) if len(val_rows) else {}
    return GateTrainResult(
        beta_initial=beta_initial, beta_final=float(gate.beta.detach()), losses=losses,
        train_pairs=len(train_rows), val_pairs=len(val_rows),
        epochs=options.steps * min(options.batch_size, len(train_rows)) / len(train_rows), val=val,
    )


def result_dict(result: GateTrainResult) -> dict[str, Any]:
    """JSON-ready summary."""
    return {"beta_initial": result.beta_initial, "beta_final": result.beta_final,
            "train_pairs": result.train_pairs, "val_pairs": result.val_pairs, "epochs": round(result.epochs, 2),
            "final_loss": result.losses[-1][1] if result.losses else None,
            "loss_curve": [[s, round(v, 6)] for s, v in result.losses], "validation_accuracy": result.val}
