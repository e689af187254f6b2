"""How cost grows with the work (issue 15 item 5): time and peak memory for training on more pairs,
for scoring bigger Best-of-N pools and for sampling them, so a user can predict a run.

Three parts, each size in its own process (peak RSS is that process's own):

* ``train``: the trainer on the shipped defaults for ``--pairs`` sizes of every pair file in
  ``../shared/data/pairs`` but the UltraFeedback eval split (``trunk_modes.py --data all``), one epoch
  in each ``--modes`` trunk mode (``top_k``: the one-time caching pass and the epoch from the cache,
  timed apart; ``full``: the epoch). Each size gets a feature store of its own, so the caching pass is
  the cost from an empty store.
* ``pool``: ``smorm bon``'s scoring of a pool (:func:`smorm.rlhf.scorers.score_pool`, the shared prompt
  packed once for its responses) with a SMORM model of random heads, for ``--pool-sizes`` responses,
  ``--per-prompt`` to a prompt. The pool is made up, since no real pool of these sizes exists here:
  the prompts are UltraFeedback train prompts, each response a random chosen/rejected response of
  the 1k mix cut to ``--response-chars`` characters (about a ``max_new_tokens: 64`` response). Cost
  depends on token counts, not on what the words say.
* ``generate``: sampling a pool with the policy (:func:`smorm.rlhf.generate.generate_pool`, the
  recipe's ``--per-prompt`` samples of at most 64 new tokens), ``--gen-prompts`` prompts, in the
  dtype ``precision: auto`` would pick here (bf16 only where this CPU multiplies bf16 natively).

    python bench/cost_growth.py --parts pool,generate --backbone smollm2-135m-instruct --threads 2
    python bench/cost_growth.py --parts train --pairs 1000,4000 --modes top_k --backbone smollm2-135m-instruct
"""

from __future__ import annotations

import argparse
import random
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parent))

import _common as common  # noqa: E402

SCRIPT = Path(__file__).resolve()
TRUNK_MODES = SCRIPT.parent / "trunk_modes.py"
UF_TRAIN = common.SHARED_DATA / "pairs/ultrafeedback/binarized-train-1k.jsonl"


def made_up_pool(size: int, per_prompt: int, response_chars: int, seed: int) -> list[Any]:
    """``size`` responses, ``per_prompt`` to each UltraFeedback train prompt (see the module docstring)."""
    from smorm.data import DataSpec, load_pairs
    from smorm.rlhf.pools import PoolEntry, prompt_key

    pairs = load_pairs(DataSpec(path=str(UF_TRAIN), format="ultrafeedback"), on_error="skip")[0]
    texts = [pair.chosen for pair in pairs] + [pair.rejected for pair in pairs]
    rng = random.Random(seed)
    entries = []
    for index in range(-(-size // per_prompt)):
        prompt = pairs[index % len(pairs)].prompt
        n = min(per_prompt, size - index * per_prompt)
        responses = [rng.choice(texts)[:response_chars] for _ in range(n)]
        entries.append(PoolEntry(index, prompt_key(prompt), prompt, responses, None, None))
    return entries


def pool_worker(args: argparse.Namespace) -> None:
    import torch

    from smorm.models.reward_model import RewardModel
    from smorm.models.scorers import load_scorer
    from smorm.rlhf.scorers import score_pool

    torch.set_num_threads(args.threads)
    entries = made_up_pool(args.size, args.per_prompt, args.response_chars, args.seed)
    scorer = load_scorer(args.model)
    assert isinstance(scorer, RewardModel)
    score_pool(scorer, entries[:1], batch_size=args.batch)  # warm-up: first-call allocations and kernels
    start, cpu_start = time.perf_counter(), time.process_time()
    out = score_pool(scorer, entries, batch_size=args.batch, bf16=args.bf16)
    seconds, cpu_seconds = time.perf_counter() - start, time.process_time() - cpu_start
    responses = sum(len(e.responses) for e in entries)
    assert out.single is not None and out.single.shape[0] == responses
    common.emit({"responses": responses, "prompts": len(entries), "seconds": round(seconds, 2),
                 "cpu_seconds": round(cpu_seconds, 2), "responses_per_s": round(responses / seconds, 2)})


def generate_worker(args: argparse.Namespace) -> None:
    import torch

    from smorm.data.spec import PromptRecord
    from smorm.rlhf.generate import generate_pool, load_policy
    from smorm.rlhf.pools import read_pool
    from smorm.rlhf.settings import SamplingConfig

    torch.set_num_threads(args.threads)
    entries = made_up_pool(args.gen_prompts, 1, 0, args.seed)
    prompts = [PromptRecord(prompt=e.prompt) for e in entries]
    config = SamplingConfig(num_samples=args.per_prompt, max_new_tokens=args.max_new_tokens)
    model, tokenizer, _ = load_policy(args.policy, args.dtype)
    with tempfile.TemporaryDirectory() as folder:
        start, cpu_start = time.perf_counter(), time.process_time()
        generate_pool(args.policy, prompts, Path(folder) / "pool.jsonl.gz", config, batch_rows=args.batch_rows,
                      dtype=args.dtype, loaded=(model, tokenizer))
        seconds, cpu_seconds = time.perf_counter() - start, time.process_time() - cpu_start
        pool = read_pool(Path(folder) / "pool.jsonl.gz")
    tokens = sum(sum(e.response_tokens or []) for e in pool)
    responses = sum(len(e.responses) for e in pool)
    common.emit({"prompts": len(pool), "responses": responses, "new_tokens": tokens, "dtype": args.dtype,
                 "seconds": round(seconds, 2), "cpu_seconds": round(cpu_seconds, 2),
                 "responses_per_s": round(responses / seconds, 3), "new_tokens_per_s": round(tokens / seconds, 1),
                 "seconds_per_prompt": round(seconds / len(pool), 2)})


def scoring_model(ref: str, folder: Path, max_length: int) -> str:
    """A SMORM folder on ``ref`` with random single and 5-attribute heads (speed does not depend on them)."""
    from scoring import write_models

    return write_models(ref, folder, max_length)["smorm"]


def fit_line(sizes: list[int], seconds: list[float]) -> dict[str, float]:
    """Least-squares ``seconds = fixed + per_item * size`` (two sizes: the line through both)."""
    import numpy as np

    slope, intercept = np.polyfit(np.array(sizes, dtype=float), np.array(seconds, dtype=float), 1)
    return {"fixed_seconds": round(float(intercept), 2), "seconds_per_item": round(float(slope), 5)}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--parts", default="train,pool,generate")
    parser.add_argument("--backbone", default="tiny")
    parser.add_argument("--tiny-layers", type=int, default=4)
    parser.add_argument("--tiny-hidden", type=int, default=256)
    parser.add_argument("--max-length", type=int, default=256)
    parser.add_argument("--pairs", default="1000,4000", help="train: pair counts")
    parser.add_argument("--modes", default="top_k,full", help="train: trunk modes")
    parser.add_argument("--batch", type=int, default=16, help="pairs per step (train), sequences per forward (pool)")
    parser.add_argument("--pool-sizes", default="1000,4000,10000", help="pool: responses scored")
    parser.add_argument("--per-prompt", type=int, default=128, help="pool and generate: responses to one prompt")
    parser.add_argument("--response-chars", type=int, default=300)
    parser.add_argument("--gen-prompts", type=int, default=2)
    parser.add_argument("--max-new-tokens", type=int, default=64)
    parser.add_argument("--batch-rows", type=int, default=128, help="generate: sequences per generate call")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--bf16", action="store_true")
    parser.add_argument("--name", default=None)
    parser.add_argument("--worker", action="store_true", help=argparse.SUPPRESS)
    parser.add_argument("--part", default="pool", help=argparse.SUPPRESS)
    parser.add_argument("--size", type=int, default=0, help=argparse.SUPPRESS)
    parser.add_argument("--model", default=None, help=argparse.SUPPRESS)
    parser.add_argument("--policy", default=None, help=argparse.SUPPRESS)
    parser.add_argument("--dtype", default="float32", help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.worker:
        (pool_worker if args.part == "pool" else generate_worker)(args)
        return
    common.refuse_slow_bf16(args.bf16)
    name = args.name or f"cost_growth-{args.backbone}" + ("-bf16" if args.bf16 else "")
    info = common.banner(name)
    work = Path(tempfile.mkdtemp(prefix="smorm-bench-cost-"))
    ref = (str(common.tiny_backbone(work, args.tiny_layers, args.tiny_hidden)) if args.backbone == "tiny"
           else args.backbone)
    parts = [p for p in args.parts.split(",") if p]
    results: dict[str, Any] = {}
    if "train" in parts:
        peak = common.matmul_peak(args.bf16, args.threads)
        rows = []
        for pairs in [int(n) for n in args.pairs.split(",")]:
            for mode in [m for m in args.modes.split(",") if m]:
                result = common.run_worker(TRUNK_MODES, [
                    "--mode", mode, "--backbone-ref", ref, "--data", "all", "--max-length", str(args.max_length),
                    "--pairs", str(pairs), "--batch", str(args.batch), "--epochs", "1", "--top-k", "2",
                    "--seed", str(args.seed), "--threads", str(args.threads), *(["--bf16"] if args.bf16 else [])],
                    timeout=6 * 3600)
                common.add_mfu(result, peak)
                common.add_mfu(result, peak, "cache_model_flops", "cache_seconds", "cache_mfu")
                rows.append({"asked_pairs": pairs, **result})
                print(f"train {mode:6s} {result['pairs']:5d} pairs: cache {result['cache_seconds']:.0f} s, epoch "
                      f"{result['epoch_seconds']:.0f} s, peak RSS {result['peak_rss_mb']:.0f} MB, "
                      f"MFU {common.percent(result['mfu'])}", flush=True)
        results["train"] = {"runs": rows, "matmul_peak": peak}
    if "pool" in parts:
        model = scoring_model(ref, work, args.max_length)
        sizes = [int(n) for n in args.pool_sizes.split(",")]
        rows = []
        for size in sizes:
            result = common.run_worker(SCRIPT, ["--part", "pool", "--size", str(size), "--model", model, "--per-prompt",
                                                str(args.per_prompt), "--response-chars", str(args.response_chars),
                                                "--batch", str(args.batch), "--threads", str(args.threads),
                                                "--seed", str(args.seed), *(["--bf16"] if args.bf16 else [])],
                                       timeout=6 * 3600)
            rows.append(result)
            print(f"pool {size:6d} responses: {result['seconds']:.0f} s ({result['responses_per_s']:.1f}/s), "
                  f"peak RSS {result['peak_rss_mb']:.0f} MB", flush=True)
        results["pool"] = {"runs": rows, **({"fit": fit_line(sizes, [r["seconds"] for r in rows])}
                                            if len(sizes) > 1 else {})}
    if "generate" in parts:
        import torch

        from smorm.models.devices import fast_bf16

        dtype = "bfloat16" if fast_bf16(torch.device("cpu")) else "float32"
        result = common.run_worker(SCRIPT, ["--part", "generate", "--policy", ref, "--dtype", dtype, "--gen-prompts",
                                            str(args.gen_prompts), "--per-prompt", str(args.per_prompt),
                                            "--max-new-tokens", str(args.max_new_tokens), "--batch-rows",
                                            str(args.batch_rows), "--threads", str(args.threads), "--seed",
                                            str(args.seed)], timeout=6 * 3600)
        results["generate"] = result
        print(f"generate {result['responses']} responses ({result['prompts']} prompts, {dtype}): {result['seconds']:.0f} s, "
              f"{result['seconds_per_prompt']:.0f} s per prompt of {args.per_prompt}, "
              f"{result['new_tokens_per_s']:.0f} new tokens/s, peak RSS {result['peak_rss_mb']:.0f} MB", flush=True)
    settings = {k: v for k, v in vars(args).items() if k not in ("worker", "part", "size", "model", "policy", "dtype")}
    common.finish(info, {"settings": settings, "backbone_path": ref, **results})


if __name__ == "__main__":
    main()
