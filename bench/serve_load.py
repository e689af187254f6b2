"""Load test of `smorm serve` on loopback: N requests at concurrency C, bounded in count and time.

    .venv/bin/python bench/serve_load.py                       # tiny random model, 2,000 requests, concurrency 32
    .venv/bin/python bench/serve_load.py --backbone smollm2-135m-instruct --requests 500
    .venv/bin/python bench/serve_load.py --model runs/smorm --out bench/results/serve.json

Starts `python -m smorm serve MODEL --host 127.0.0.1 --port <free port>` as a child process (never
any other address), waits for /health, sends POST /score requests with httpx, stops the server it
started, and prints (and optionally writes) the zero-error count, throughput and p50/p99 latency.
Without --model it builds a reward model with random heads on the chosen backbone in a temporary
folder (the tiny 2-layer Llama by default): this measures the serving path, not reward quality.
Exits 1 if any request failed.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import sys
import tempfile
import time
from pathlib import Path


def build_model(backbone: str, folder: Path) -> Path:
    """A smorm model folder with random single + multi heads on ``backbone`` ('tiny' = the test Llama)."""
    import torch

    from smorm.models.backbone import load_backbone
    from smorm.models.reward_model import RewardModel, RewardModelConfig
    from smorm.testing import save_tiny_llama

    reference = str(save_tiny_llama(folder / "tiny-backbone")) if backbone == "tiny" else backbone
    loaded = load_backbone(reference)
    config = RewardModelConfig(backbone=reference, attributes=["helpfulness", "correctness", "coherence"],
                               heads={"single": {"kind": "linear"}, "multi": {"kind": "linear"}}, max_length=512)
    torch.manual_seed(0)
    model = RewardModel(loaded.model, loaded.tokenizer, config)
    return model.save_pretrained(folder / "model", backbone_weights="reference")


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--model", help="a run or smorm model folder (default: build one with random heads)")
    parser.add_argument("--backbone", default="tiny", help="backbone for the built model: tiny | a smorm backbone ref")
    parser.add_argument("--requests", type=int, default=2000)
    parser.add_argument("--concurrency", type=int, default=32)
    parser.add_argument("--items", type=int, default=1, help="items per request")
    parser.add_argument("--max-seconds", type=float, default=600.0, help="stop sending after this long")
    parser.add_argument("--server-args", default="", help="extra `smorm serve` options, e.g. '--max-batch-size 32'")
    parser.add_argument("--out", type=Path, help="also write the result JSON here")
    args = parser.parse_args()

    from smorm.serve.loadtest import (
        free_port,
        machine_summary,
        run_load,
        start_server,
        stop_server,
        wait_healthy,
    )

    load_at_start = round(os.getloadavg()[0], 2)
    with tempfile.TemporaryDirectory(prefix="smorm-serve-load-") as scratch:
        model_dir = Path(args.model) if args.model else build_model(args.backbone, Path(scratch))
        port = free_port()
        url = f"http://127.0.0.1:{port}"
        log_path = Path(scratch) / "server.log"
        process = start_server(model_dir, port, args.server_args.split(), log_path=log_path)
        try:
            started = time.perf_counter()
            wait_healthy(url, process, timeout_s=300)
            startup_s = time.perf_counter() - started
            result = asyncio.run(run_load(url, requests=args.requests, concurrency=args.concurrency,
                                          items_per_request=args.items, max_seconds=args.max_seconds))
            import httpx

            stats = httpx.get(f"{url}/info", trust_env=False).json()["stats"]
        finally:
            stop_server(process)
        report = {
            "command": " ".join([Path(sys.executable).name, *sys.argv]),
            "machine": machine_summary(),
        # The machine may be shared: the 1-minute load average before the run says how busy it was.
        "load_average_1min_at_start": load_at_start,
            "model": str(args.model or f"random heads on {args.backbone}"),
            "server_startup_s": round(startup_s, 2),
            **{k: (round(v, 2) if isinstance(v, float) else v) for k, v in result.as_dict().items()},
            "server_batches": stats["batches"],
            "mean_batch_size": round(stats["sequences"] / max(stats["batches"], 1), 2),
            "largest_batch": stats["largest_batch"],
        }
    text = json.dumps(report, indent=2)
    print(text)
    if args.out:
        args.out.parent.mkdir(parents=True, exist_ok=True)
        args.out.write_text(text + "\n")
    return 0 if result.errors == 0 and result.not_sent == 0 else 1


if __name__ == "__main__":
    sys.exit(main())
