"""Trunk modes: time per epoch for ``full``, ``top_k`` and ``frozen``, and the one-time cache cost.

Each mode trains smorm's BT setup (``losses: [bt]``, heads {single}) on the same pairs of the
shared 1k mix (``--pairs`` of them, evenly from its three sources) for one epoch. ``top_k`` and
``frozen`` first cache features of the frozen part (the lower layers' hidden states, or the final
pooled features) once; that cost is timed separately from the epochs, which are timed from the
start of the training loop to the end of the last optimizer step. Each measurement runs in its
own process (peak RSS is its own); repetitions interleave the modes. MFU: the trainer's model FLOPs
of the real tokens (6 N per token over the layers that train, the caching pass 2 N over the layers it
runs; :mod:`smorm.models.flops`) over the timed seconds, against the matmul peak this machine
measured once in the run's dtype (``$SMORM_PEAK_FLOPS`` overrides it).

    python bench/trunk_modes.py                                   # tiny random Llama
    python bench/trunk_modes.py --backbone smollm2-135m-instruct --pairs 32 --batch 8
    python bench/trunk_modes.py --backbone smollm2-135m-instruct --data hh --modes top_k --padded --bf16

Every variant runs the shipped defaults (the shared prompt and padding-free rows on for a causal
backbone, in training and in the caching pass); ``--padded`` adds ``top_k-padded``, top_k with
``train.shared_prompt: false``, to measure what they buy.
"""

from __future__ import annotations

import argparse
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parent))

import _common as common  # noqa: E402

SCRIPT = Path(__file__).resolve()
MODES = ["full", "top_k", "frozen"]
PADDED = "top_k-padded"  # top_k with train.shared_prompt: false (--padded): the caching pass and steps padded


def config_for(args: argparse.Namespace, variant: str, folder: str) -> dict[str, Any]:
    """The shipped defaults for ``variant`` (a trunk mode), or top_k with the shared prompt off (``PADDED``)."""
    mode = "top_k" if variant == PADDED else variant
    base = common.SOURCE_SETS[args.data]
    if args.data == "all":  # files of 500 or 1000 pairs: the first ones up to --pairs in all
        sources, left = [], args.pairs
        for source in base:
            if left > 0:
                sources.append({**source, "limit": left})
                left -= 1000 if "ultrafeedback" in source["path"] else 500
    else:
        share = [args.pairs // len(base) + (i < args.pairs % len(base)) for i in range(len(base))]
        sources = [{**source, "limit": n} for source, n in zip(base, share)]
    return {
        "method": f"trunk-{mode}", "output_dir": folder,
        "model": {"backbone": args.backbone_ref, "heads": {"single": {"kind": "linear"}}},
        "data": {"pairs": sources, "max_length": args.max_length, "on_error": "skip"},
        "losses": [{"name": "bt"}],
        "train": {"trunk": mode, "top_k": args.top_k, "epochs": args.epochs, "pair_batch_size": args.batch,
                  "lr": 1e-5, "warmup_ratio": 0.0, "log_every": 10**6, "seed": args.seed,
                  "cache_batch_size": args.batch, "precision": "bf16" if args.bf16 else "fp32",
                  # a store of its own: the one-time cache cost is what this bench measures
                  "cache_dir": str(Path(folder) / "features"),
                  **({"shared_prompt": False} if variant == PADDED else {})},
    }


def worker(args: argparse.Namespace) -> None:
    import torch

    from smorm.train.config import RunConfig
    from smorm.train.trainer import Trainer

    torch.set_num_threads(args.threads)
    with tempfile.TemporaryDirectory() as folder:
        trainer = Trainer(RunConfig.model_validate(config_for(args, args.mode, folder)), show_progress=False)
        cache_seconds = 0.0
        build = trainer._cache_features

        def timed_cache() -> Any:
            nonlocal cache_seconds
            start = time.perf_counter()
            out = build()
            cache_seconds = time.perf_counter() - start
            return out

        trainer._cache_features = timed_cache
        setup_start = time.perf_counter()
        trainer.setup()
        setup_seconds = time.perf_counter() - setup_start
        ends: list[float] = []
        cpu_ends: list[float] = []
        step = trainer.optimizer.step

        def timed_step(*a: Any, **k: Any) -> Any:
            out = step(*a, **k)
            ends.append(time.perf_counter())
            cpu_ends.append(time.process_time())
            return out

        trainer.optimizer.step = timed_step
        start, cpu_start = time.perf_counter(), time.process_time()
        done = trainer.train()
        trainable = sum(p.numel() for p in trainer.model.parameters() if p.requires_grad)
    seconds = ends[-1] - start
    compute = done.summary["compute"]
    common.emit({"mode": args.mode, "packed": trainer.packing, "seconds": seconds,
                 "cache_tokens": compute.get("caching", {}).get("tokens", 0), "train_tokens": compute["train"]["tokens"], "model_flops": compute["train"]["model_flops"],
                 "cache_model_flops": compute.get("caching", {}).get("model_flops", 0), "epoch_seconds": round(seconds / args.epochs, 3),
                 "epoch_cpu_seconds": round((cpu_ends[-1] - cpu_start) / args.epochs, 3), "steps": len(ends),
                 "pairs": trainer.data.num_pairs, "cache_seconds": round(cache_seconds, 3),
                 "setup_seconds": round(setup_seconds, 3), "trainable_parameters": trainable})


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--backbone", default="tiny")
    parser.add_argument("--data", choices=sorted(common.SOURCE_SETS), default="mix",
                        help="the 1k mix, HH (helpful + harmless) or all (every shared pair file, ~5k pairs)")
    parser.add_argument("--padded", action="store_true", help=f"also run {PADDED}: top_k with train.shared_prompt: false")
    parser.add_argument("--modes", default=",".join(MODES), help="comma-separated trunk modes to run")
    parser.add_argument("--tiny-layers", type=int, default=4)
    parser.add_argument("--tiny-hidden", type=int, default=256)
    parser.add_argument("--max-length", type=int, default=256)
    parser.add_argument("--pairs", type=int, default=64)
    parser.add_argument("--batch", type=int, default=8)
    parser.add_argument("--epochs", type=float, default=1.0)
    parser.add_argument("--top-k", type=int, default=2)
    parser.add_argument("--reps", type=int, default=3)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--threads", type=int, default=1)
    parser.add_argument("--bf16", action="store_true")
    parser.add_argument("--name", default=None)
    parser.add_argument("--worker", action="store_true", help=argparse.SUPPRESS)
    parser.add_argument("--mode", default="full", help=argparse.SUPPRESS)
    parser.add_argument("--backbone-ref", default=None, help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.worker:
        worker(args)
        return
    common.refuse_slow_bf16(args.bf16)
    name = args.name or f"trunk_modes-{args.backbone}-{args.data}" + ("-bf16" if args.bf16 else "")
    info = common.banner(name)
    work = Path(tempfile.mkdtemp(prefix="smorm-bench-trunk-"))
    ref = (str(common.tiny_backbone(work, args.tiny_layers, args.tiny_hidden)) if args.backbone == "tiny"
           else args.backbone)
    peak = common.matmul_peak(args.bf16, args.threads)
    variants = [m for m in args.modes.split(",") if m] + ([PADDED] if args.padded else [])
    runs: dict[str, list[dict[str, Any]]] = {m: [] for m in variants}
    for rep in range(args.reps):
        for mode in variants:
            result = common.run_worker(SCRIPT, [
                "--mode", mode, "--backbone-ref", ref, "--data", args.data, "--max-length", str(args.max_length), "--pairs",
                str(args.pairs), "--batch", str(args.batch), "--epochs", str(args.epochs), "--top-k",
                str(args.top_k), "--seed", str(args.seed), "--threads", str(args.threads),
                *(["--bf16"] if args.bf16 else [])])
            result["rep"] = rep
            common.add_mfu(result, peak)
            common.add_mfu(result, peak, "cache_model_flops", "cache_seconds", "cache_mfu")
            runs[mode].append(result)
            print(f"rep {rep} {mode:12s} epoch {result['epoch_seconds']:.2f} s  MFU {common.percent(result['mfu'])}  "
                  f"cache {result['cache_seconds']:.2f} s  cache MFU {common.percent(result['cache_mfu'])}  "
                  f"peak RSS {result['peak_rss_mb']:.0f} MB  load {result['load_average'][0]}")
    keys = ["epoch_seconds", "cache_seconds", "peak_rss_mb", "epoch_cpu_seconds", "mfu", "cache_mfu"]
    summary = {m: common.summarise(r, keys) for m, r in runs.items()}
    ratios: dict[str, Any] = {}
    if "full" in summary:
        full, full_cpu = summary["full"]["median_epoch_seconds"], summary["full"]["median_epoch_cpu_seconds"]
        for m in ("top_k", "frozen"):
            if m in summary:
                ratios[f"full_over_{m}_epoch"] = round(full / summary[m]["median_epoch_seconds"], 2)
                ratios[f"cpu_time_full_over_{m}_epoch"] = round(full_cpu / summary[m]["median_epoch_cpu_seconds"], 2)
                ratios[f"{m}_cache_over_full_epoch"] = round(summary[m]["median_cache_seconds"] / full, 3)
    if PADDED in summary and "top_k" in summary:  # what the shared prompt and padding-free rows buy under top_k
        padded, packed = runs[PADDED], runs["top_k"]
        ratios["top_k_cache_padded_over_packed"] = round(
            summary[PADDED]["median_cache_seconds"] / summary["top_k"]["median_cache_seconds"], 3)
        ratios["top_k_cache_padded_over_packed_per_rep"] = [round(a["cache_seconds"] / b["cache_seconds"], 3)
                                                            for a, b in zip(padded, packed)]
        ratios["top_k_epoch_padded_over_packed"] = round(
            summary[PADDED]["median_epoch_seconds"] / summary["top_k"]["median_epoch_seconds"], 3)
    for m in variants:
        print(f"median {m:12s} epoch {summary[m]['median_epoch_seconds']:.2f} s (range "
              f"{summary[m]['range_epoch_seconds']}), MFU {common.percent(summary[m].get('median_mfu'))}, "
              f"cache {summary[m]['median_cache_seconds']:.2f} s (MFU {common.percent(summary[m].get('median_cache_mfu'))}), "
              f"peak RSS {summary[m]['median_peak_rss_mb']:.0f} MB")
    for key, value in ratios.items():
        print(f"{key}: {value}")
    settings = {k: v for k, v in vars(args).items() if k not in ("worker", "mode", "backbone_ref")}
    common.finish(info, {"settings": settings, "backbone_path": ref, "variants": summary, "ratios": ratios,
                         "matmul_peak": peak})


if __name__ == "__main__":
    main()
