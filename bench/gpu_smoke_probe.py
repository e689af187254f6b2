"""Helpers of bench/gpu_smoke.sh: a measured ``smorm train`` and the throughput / MFU report.

    python bench/gpu_smoke_probe.py train RUN_DIR -- configs/smorm.yaml key=value ...
    python bench/gpu_smoke_probe.py report RUN_DIR [RUN_DIR ...]

``train`` runs the ordinary ``smorm train`` command in this process, counting the real
(non-padding) tokens every training forward pass reads and the peak CUDA memory, and writes them
to ``RUN_DIR/gpu_probe.json``: train_summary.json and metrics.jsonl hold steps, pairs and seconds
but no token counts. ``report`` prints pairs/s, tokens/s, peak memory and MFU per run.
"""

from __future__ import annotations

import json
import sys
from pathlib import Path
from typing import Any

# H200 (and H100 SXM) dense bf16 tensor-core peak, no sparsity; override with --peak-tflops.
DEFAULT_PEAK_TFLOPS = 989.0


def count_tokens(counter: dict[str, Any]) -> None:
    """Wrap RewardModel.forward so each call adds its real tokens to ``counter['tokens']``.

    The sums stay tensors on the model's device until the end, so counting adds no GPU sync.
    """
    from smorm.models.reward_model import RewardModel

    original = RewardModel.forward

    def forward(self: RewardModel, *args: Any, **kwargs: Any) -> Any:
        if self.training:
            if kwargs.get("packed") is not None:
                counter["tokens"].append(kwargs["packed"].real_tokens.sum())
            elif kwargs.get("attention_mask") is not None:
                counter["tokens"].append(kwargs["attention_mask"].sum())
        return original(self, *args, **kwargs)

    RewardModel.forward = forward  # type: ignore[method-assign]


def parameter_counts(run_dir: Path) -> dict[str, int]:
    """Parameters of the saved model: all, and all but the input embedding (a lookup, no FLOPs)."""
    from smorm.models.reward_model import RewardModel

    model = RewardModel.from_pretrained(run_dir / "model")
    total = sum(p.numel() for p in model.parameters())
    embedding = model.base_model.get_input_embeddings().weight.numel()
    return {"parameters": total, "matmul_parameters": total - embedding}


def train(run_dir: Path, smorm_args: list[str]) -> None:
    import torch

    from smorm.cli import main

    counter: dict[str, Any] = {"tokens": []}
    count_tokens(counter)
    if torch.cuda.is_available():
        torch.cuda.reset_peak_memory_stats()
    sys.argv = ["smorm", "train", *smorm_args, f"output_dir={run_dir}"]
    try:
        main()
    except SystemExit as stop:  # typer ends with SystemExit(0) on success
        if stop.code not in (0, None):
            raise
    probe = {
        "tokens": int(sum(int(t) for t in counter["tokens"])),
        "peak_memory_allocated_gb": round(torch.cuda.max_memory_allocated() / 2**30, 3)
        if torch.cuda.is_available() else None,
        "peak_memory_reserved_gb": round(torch.cuda.max_memory_reserved() / 2**30, 3)
        if torch.cuda.is_available() else None,
        "device": torch.cuda.get_device_name(0) if torch.cuda.is_available() else "cpu",
        **parameter_counts(run_dir),
    }
    (run_dir / "gpu_probe.json").write_text(json.dumps(probe, indent=2) + "\n")


def report(run_dirs: list[Path], peak_tflops: float) -> None:
    for run_dir in run_dirs:
        summary = json.loads((run_dir / "train_summary.json").read_text())
        probe = json.loads((run_dir / "gpu_probe.json").read_text())
        train_config = summary["config"]["train"]
        seconds = float(summary["train_seconds"])
        pairs = summary["steps"] * train_config["pair_batch_size"] * train_config["grad_accum"]
        tokens_per_s = probe["tokens"] / seconds
        # 6·N per token: forward 2N + backward 4N (activation and weight gradients). With LoRA the
        # frozen weights get no gradient, so ~4N is the work really done; 6N is printed for both so
        # the two rows compare, and the LoRA row overstates its MFU by about 1.5x.
        flops = 6 * probe["matmul_parameters"] * probe["tokens"]
        mfu = flops / seconds / (peak_tflops * 1e12)
        print(f"{run_dir.name}: trunk={summary['trunk']} steps={summary['steps']} train_seconds={seconds:.1f} "
              f"pairs/s={pairs / seconds:.1f} tokens/s={tokens_per_s:.0f} "
              f"peak_mem_allocated={probe['peak_memory_allocated_gb']} GB "
              f"peak_mem_reserved={probe['peak_memory_reserved_gb']} GB "
              f"N={probe['matmul_parameters'] / 1e6:.1f}M (non-embedding) "
              f"MFU={100 * mfu:.2f}% of {peak_tflops:.0f} TFLOP/s ({probe['device']})")


def cli() -> None:
    if len(sys.argv) >= 3 and sys.argv[1] == "train":
        rest = sys.argv[3:]
        train(Path(sys.argv[2]), rest[1:] if rest[:1] == ["--"] else rest)
    elif len(sys.argv) >= 3 and sys.argv[1] == "report":
        args = sys.argv[2:]
        peak = DEFAULT_PEAK_TFLOPS
        if "--peak-tflops" in args:
            at = args.index("--peak-tflops")
            peak = float(args[at + 1])
            del args[at:at + 2]
        report([Path(a) for a in args], peak)
    else:
        sys.exit(__doc__)


if __name__ == "__main__":
    cli()
