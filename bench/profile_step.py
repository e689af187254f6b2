"""Profile one smorm training step: tokenisation, collation, forward, loss glue, backward, optimizer.

The step is the trainer's own (``Trainer.setup()`` then the pieces of ``Trainer.micro_step`` and
``Trainer.train`` called one by one with a timer around each), on the SMORM setup (``bt`` +
``regression``, heads single + multi) with pairs from the shared 1k mix and HelpSteer ratings.
Tokenisation is a one-time cost per record (done in ``setup``), reported per step-equivalent:
the time to tokenise the records one step consumes. ``torch.profiler`` then records one whole
step and the operators with the most self CPU time are listed.

    python bench/profile_step.py                                   # SmolLM2-135M, 3 steps
    python bench/profile_step.py --backbone tiny --steps 5
"""

from __future__ import annotations

import argparse
import statistics
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))

import _common as common  # noqa: E402

PHASES = ["indices", "collate", "forward", "losses", "backward", "clip", "optimizer"]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--backbone", default="smollm2-135m-instruct")
    parser.add_argument("--max-length", type=int, default=256)
    parser.add_argument("--pair-batch", type=int, default=8)
    parser.add_argument("--rating-batch", type=int, default=8)
    parser.add_argument("--steps", type=int, default=3, help="timed steps after one warm-up step")
    parser.add_argument("--threads", type=int, default=1)
    parser.add_argument("--padded", action="store_true", help="train.shared_prompt: false (padded batches)")
    parser.add_argument("--bf16", action="store_true", help="train.precision: bf16 (autocast, as the trainer runs it)")
    parser.add_argument("--name", default=None)
    args = parser.parse_args()
    common.refuse_slow_bf16(args.bf16)
    import torch

    from smorm.train.batches import step_indices
    from smorm.train.config import RunConfig
    from smorm.train.losses_glue import compute_losses
    from smorm.train.trainer import Trainer

    torch.set_num_threads(args.threads)
    name = (args.name or f"profile_step-{args.backbone}" + ("-padded" if args.padded else "")
            + ("-bf16" if args.bf16 else ""))
    info = common.banner(name)
    work = Path(tempfile.mkdtemp(prefix="smorm-bench-profile-"))
    ref = str(common.tiny_backbone(work, 4, 256)) if args.backbone == "tiny" else args.backbone
    ratings = {"path": str(common.SHARED_DATA / "ratings/helpsteer/helpsteer-train-first500.jsonl"), "format": "auto",
               "limit": 200}
    config = RunConfig.model_validate({
        "method": "profile", "output_dir": str(work / "run"), "model": {"backbone": ref},
        "data": {"pairs": [{**s, "limit": 100} for s in common.MIX_SOURCES], "ratings": [ratings],
                 "max_length": args.max_length, "on_error": "skip"},
        "train": {"trunk": "full", "max_steps": args.steps + 1, "pair_batch_size": args.pair_batch,
                  "rating_batch_size": args.rating_batch, "lr": 1e-5, "warmup_ratio": 0.0,
                  "precision": "bf16" if args.bf16 else "fp32",
                  **({"shared_prompt": False} if args.padded else {})},
    })
    trainer = Trainer(config, show_progress=False)
    trainer.setup()
    # tokenisation, timed again on the records one step consumes (setup did it once for all)
    from smorm.data.formatting import Formatter

    formatter = Formatter(trainer.model.tokenizer, args.max_length)
    pairs, rated = trainer.loaded.pairs[: args.pair_batch], trainer.loaded.ratings[: args.rating_batch]
    start = time.perf_counter()
    for pair in pairs:
        formatter.encode(pair.prompt, pair.chosen)
        formatter.encode(pair.prompt, pair.rejected)
    for record in rated:
        formatter.encode(record.prompt, record.response)
    tokenise_seconds = time.perf_counter() - start

    model, data = trainer.model, trainer.data
    model.train()

    def one_step(micro: int, clock: dict[str, list[float]] | None) -> None:
        marks = [time.perf_counter()]
        indices = step_indices(trainer.plan, micro, config.train.seed, 0, data.chosen, data.rating_ids)
        seq = ([i for i in indices.pairs] + [data.num_pairs + i for i in indices.pairs]
               + [2 * data.num_pairs + j for j in indices.ratings])
        marks.append(time.perf_counter())
        inputs = trainer._packed_inputs(indices) if trainer.packing else trainer._inputs(seq)
        marks.append(time.perf_counter())
        with trainer._autocast():  # the trainer's own: the forward under bf16 autocast when precision says so
            output = model(**inputs)
        marks.append(time.perf_counter())
        loss, _ = compute_losses(config, trainer.model_unwrapped, output, data, indices, inputs, 1)
        marks.append(time.perf_counter())
        loss.backward()
        marks.append(time.perf_counter())
        torch.nn.utils.clip_grad_norm_([p for p in model.parameters() if p.requires_grad], 1.0)
        marks.append(time.perf_counter())
        trainer.optimizer.step()
        trainer.optimizer.zero_grad(set_to_none=True)
        marks.append(time.perf_counter())
        if clock is not None:
            for phase, a, b in zip(PHASES, marks, marks[1:]):
                clock[phase].append(b - a)

    one_step(0, None)  # warm-up
    clock: dict[str, list[float]] = {p: [] for p in PHASES}
    for micro in range(1, args.steps + 1):
        one_step(micro, clock)
    phases = {p: round(statistics.median(v), 4) for p, v in clock.items()}
    phases["tokenise (records of one step)"] = round(tokenise_seconds, 4)
    total = sum(phases.values())
    print(f"median seconds per phase over {args.steps} steps (pair batch {args.pair_batch}, rating batch "
          f"{args.rating_batch}, max length {args.max_length}):")
    for phase, seconds in phases.items():
        print(f"  {phase:32s} {seconds:8.4f} s  {seconds / total:6.1%}")

    from torch.profiler import ProfilerActivity, profile

    with profile(activities=[ProfilerActivity.CPU], record_shapes=False) as prof:
        one_step(args.steps + 1, None)
    table = prof.key_averages().table(sort_by="self_cpu_time_total", row_limit=20)
    print(table)
    top = [{"op": e.key, "self_cpu_ms": round(e.self_cpu_time_total / 1000, 2), "calls": e.count}
           for e in sorted(prof.key_averages(), key=lambda e: -e.self_cpu_time_total)[:25]]
    settings = {k: v for k, v in vars(args).items()}
    common.finish(info, {"settings": settings, "phase_seconds_median": phases,
                         "phase_fraction": {p: round(s / total, 4) for p, s in phases.items()},
                         "profiler_top_self_cpu": top, "profiler_table": table})


if __name__ == "__main__":
    main()
