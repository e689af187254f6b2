"""What a run computed, counted from its batches, and its MFU (``train_summary.json``'s ``compute``).

The trainer adds each micro-step's model inputs to a :class:`WorkCounter`: real tokens (the
attention mask's ones; a packed row's real tokens, so a shared prompt counts once), pooled rows (one
per sequence the heads score) and, for a GRM loss, the response tokens the LM head predicts. The
counts stay on the device until the end, so counting adds no synchronisation to a step. FLOPs and
the peak they are measured against: :mod:`smorm.models.flops`.
"""

from __future__ import annotations

import logging
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any

import torch

from smorm.models.flops import FORWARD, MatmulPeak, StepWeights, matmul_peak, mfu, model_flops, step_flops

logger = logging.getLogger(__name__)

FORMULA = ("model FLOPs (Kaplan et al. 2020; PaLM appendix B): per token a part's matmul weights cost "
           "2 N_run forward + 2 N_run input gradients + 2 N_trained weight gradients (6 N when all train), "
           "the caching pass 2 N; trunk weights per real token, heads per pooled row, the LM head per "
           "predicted response token; attention scores, embeddings, norms and recomputation left out")


def real_tokens(inputs: dict[str, Any]) -> tuple[torch.Tensor | int, int]:
    """``(real tokens, pooled rows)`` of one step's model inputs (the token count may be a device tensor)."""
    if "packed" in inputs:
        return inputs["packed"].real_tokens.sum(), int(inputs["packed_slots"].shape[0])
    if "pooled" in inputs:  # frozen trunk: the heads alone, on cached features
        return 0, int(inputs["pooled"].shape[0])
    mask = inputs["attention_mask"]
    return mask.sum(), int(mask.shape[0])


def lm_tokens(chosen: Sequence[Sequence[int]], rejected: Sequence[Sequence[int]], chosen_prompt: Sequence[int],
              rejected_prompt: Sequence[int], pairs: Sequence[int]) -> int:
    """Response tokens the LM head predicts for ``pairs`` (GRM): positions ``max(start, 1) .. len - 1`` of each."""
    return sum(max(len(seqs[i]) - max(starts[i], 1), 0)
               for seqs, starts in ((chosen, chosen_prompt), (rejected, rejected_prompt)) for i in pairs)


class WorkCounter:
    """Real tokens, pooled rows and LM-head tokens of the steps this process ran."""

    def __init__(self) -> None:
        self.tokens: torch.Tensor | int = 0
        self.rows = 0
        self.lm_tokens = 0

    def add(self, inputs: dict[str, Any], lm_tokens: int = 0) -> None:
        tokens, rows = real_tokens(inputs)
        self.tokens = self.tokens + tokens
        self.rows += rows
        self.lm_tokens += lm_tokens

    def totals(self, accelerator: Any) -> tuple[int, int, int]:
        """``(tokens, rows, lm_tokens)`` summed over every process (a collective: all processes call it)."""
        mine = [int(self.tokens), self.rows, self.lm_tokens]
        if accelerator.num_processes == 1:
            return mine[0], mine[1], mine[2]
        from accelerate.utils import gather_object

        gathered: list[list[int]] = gather_object([mine])
        return (sum(part[0] for part in gathered), sum(part[1] for part in gathered),
                sum(part[2] for part in gathered))


@dataclass
class CachingWork:
    """The caching pass (``top_k``/``frozen``): sequences computed (those the store lacked), their tokens, time."""

    parameters: int
    sequences: int = 0
    tokens: int = 0
    seconds: float = 0.0

    def counting(self, compute: Callable[[list[list[int]]], list[torch.Tensor]], packed: Any = None
                 ) -> Callable[[list[list[int]]], list[torch.Tensor]]:
        """``compute`` that counts the sequences it is given and the real tokens it computes: every token
        of a padded pass, or, for a packed pass (``packed``, a
        :class:`~smorm.models.cached_scoring.PackedStates`), its rows' real tokens (a shared prompt once)."""

        def counted(chunk: list[list[int]]) -> list[torch.Tensor]:
            self.sequences += len(chunk)
            states = compute(chunk)
            self.tokens += packed.last_tokens if packed is not None else sum(len(ids) for ids in chunk)
            return states

        return counted


def compute_dtype(model: torch.nn.Module, precision: str) -> torch.dtype:
    """The dtype the run's matmuls run in: bf16 under bf16 autocast, else the weights' own."""
    if precision == "bf16":
        return torch.bfloat16
    for parameter in model.parameters():
        return parameter.dtype
    return torch.float32


def _rate(flops: int, seconds: float, peak: MatmulPeak, devices: int) -> dict[str, Any]:
    return {"model_flops": flops, "seconds": seconds,
            "flops_per_s": flops / seconds if seconds > 0 else None,
            "mfu": mfu(flops, seconds, peak.flops_per_s, devices) if flops else None}  # None: nothing computed


def compute_summary(weights: StepWeights, totals: tuple[int, int, int], train_seconds: float,
                    caching: CachingWork | None, peak: MatmulPeak, devices: int) -> dict[str, Any]:
    """``train_summary.json``'s ``compute``: tokens, model FLOPs, FLOP/s and MFU of training and caching.

    Training runs on ``devices`` processes, each against ``peak``; the caching pass on the main one.
    """
    tokens, rows, lm = totals
    flops = step_flops(weights, tokens, rows, lm)
    summary: dict[str, Any] = {
        "train": {"tokens": tokens, "rows": rows, "lm_tokens": lm, **_rate(flops, train_seconds, peak, devices),
                  "weights": weights.as_dict()},
        "peak": {**peak.as_dict(), "devices": devices},
        "formula": FORMULA,
    }
    if caching is not None:
        cache_flops = model_flops(caching.tokens, caching.parameters, FORWARD)
        summary["caching"] = {"sequences": caching.sequences, "tokens": caching.tokens,
                              **_rate(cache_flops, caching.seconds, peak, 1), "weights": caching.parameters}
    return summary


def measured_peak(model: torch.nn.Module, precision: str, device: torch.device) -> MatmulPeak:
    """The matmul peak of ``device`` in the run's compute dtype (cached per machine; ``$SMORM_PEAK_FLOPS``)."""
    return matmul_peak(compute_dtype(model, precision), device)


def log_mfu(summary: dict[str, Any]) -> None:
    train, peak = summary["train"], summary["peak"]
    share = "n/a" if train["mfu"] is None else f"{100 * train['mfu']:.2f}%"
    logger.info("MFU %s: %.3g model FLOPs over %.1f s (%s real tokens) against a %.3g FLOP/s %s peak (%s, %s)",
                share, train["model_flops"], train["seconds"], train["tokens"], peak["flops_per_s"],
                peak["dtype"], peak["source"], peak["device"])
