"""Training throughput: smorm's BT trainer against TRL's RewardTrainer, side by side.

Both toolkits train the same backbone on the same token ids (rendered once with smorm's chat
template and truncation, then handed to TRL pre-tokenised as ``chosen_ids``/``rejected_ids``), with
the same max length, batch size, number of steps, optimizer (torch AdamW), lr schedule and
precision. Each repetition trains on the same seeded random subset of ``steps x batch`` pairs for
exactly one epoch, so both see exactly the same pairs and the same real tokens; they differ only
in how batches are formed (TRL: random order, padded to the longest of 2B rows; ``smorm``, the
shipped defaults: each pair's prompt encoded once and several pairs per padding-free row;
``smorm-padded`` (``--padded``): ``train.shared_prompt: false``, length-grouped padded rows) and in
per-step overhead.

Timing is the wall time from the start of the training loop to the end of the last optimizer
step (model loading, tokenisation and saving excluded). MFU is the model FLOPs of the real tokens
each toolkit computed (6 N per token, :mod:`smorm.models.flops`; smorm's count is its trainer's, the
shared prompt counted once) over that time, against the matmul peak this machine measured once in
the run's dtype (``$SMORM_PEAK_FLOPS`` overrides it). Every measurement runs in its own
process, so its peak RSS is its own. Repetitions interleave the toolkits so machine noise hits
both alike.

    python bench/train_throughput.py                       # tiny random Llama, 1k mix
    python bench/train_throughput.py --backbone smollm2-135m-instruct --batch 4 --steps 4
    python bench/train_throughput.py --data hh --padded --bf16   # smorm defaults vs padded vs TRL
"""

from __future__ import annotations

import argparse
import json
import random
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parent))

import _common as common  # noqa: E402

SCRIPT = Path(__file__).resolve()


def run_config(backbone: str, sources: list[dict[str, Any]], max_length: int, batch: int, steps: int,
               output_dir: str, bf16: bool, padded: bool, seed: int) -> dict[str, Any]:
    """smorm's plain BT setup: ``losses: [bt]``, heads {single}, trunk full, everything else the shipped
    defaults (the shared prompt and padding-free rows on); ``padded``: ``train.shared_prompt: false``."""
    train: dict[str, Any] = {"shared_prompt": False} if padded else {}
    return {
        "method": "bt-bench", "output_dir": output_dir,
        "model": {"backbone": backbone, "heads": {"single": {"kind": "linear"}}},
        "data": {"pairs": sources, "max_length": max_length, "on_error": "skip"},
        "losses": [{"name": "bt"}],
        "train": {"trunk": "full", "max_steps": steps, "pair_batch_size": batch, "lr": 1e-5,
                  "warmup_ratio": 0.0, "scheduler": "cosine", "log_every": 10**6, "seed": seed,
                  "precision": "bf16" if bf16 else "fp32", **train},
    }


def tokenised_pairs(backbone: str, sources: list[dict[str, Any]], max_length: int) -> dict[str, Any]:
    """Token ids of every pair as smorm renders them (the chat template, prompt cut from the left)."""
    from smorm.models.backbone import load_backbone
    from smorm.train.config import RunConfig
    from smorm.train.prepare import load_training_data, tokenize

    config = RunConfig.model_validate(run_config(backbone, sources, max_length, 1, 1, "unused", False, False, 0))
    loaded = load_training_data(config)
    data = tokenize(loaded, load_backbone(backbone).tokenizer, max_length, show_progress=False)
    return {"chosen": data.chosen, "rejected": data.rejected,
            "chosen_prompt": data.chosen_prompt_lengths, "rejected_prompt": data.rejected_prompt_lengths}


# ---------------------------------------------------------------- padding over a whole epoch (no model)


def epoch_padding(pairs: dict[str, Any], batch: int, seed: int) -> dict[str, Any]:
    """Real tokens / padded slots of one epoch of the whole data set, batched as each toolkit batches.

    TRL: a random permutation (its RandomSampler) cut into batches; each batch is ``[2B, T]`` with T
    the longest chosen or rejected row. smorm: the trainer's own ``step_indices`` schedule.
    smorm shared prompt: rows are ``prompt ⊕ chosen ⊕ rejected``; the real tokens are those the
    packed rows hold (the prompt once).
    """
    from smorm.train.batches import StepPlan, pair_widths, step_indices
    from smorm.train.config import TrainConfig

    chosen, rejected = pairs["chosen"], pairs["rejected"]
    n = len(chosen)
    lengths = [len(c) for c in chosen] + [len(r) for r in rejected]
    order = list(range(n))
    random.Random(seed).shuffle(order)
    trl_batches = [order[i : i + batch] for i in range(0, n, batch)]
    plan = StepPlan.build(TrainConfig(pair_batch_size=batch, seed=seed), n, 0, 1)
    plan.pair_lengths = pair_widths(chosen, rejected, pairs["chosen_prompt"], pairs["rejected_prompt"], False)
    smorm_batches = [step_indices(plan, m, seed, 0, chosen, []).pairs for m in range(plan.micro_per_epoch)]
    packed_plan = StepPlan.build(TrainConfig(pair_batch_size=batch, seed=seed), n, 0, 1)
    packed_plan.pair_lengths = pair_widths(chosen, rejected, pairs["chosen_prompt"], pairs["rejected_prompt"], True)
    packed_batches = [step_indices(packed_plan, m, seed, 0, chosen, []).pairs
                      for m in range(packed_plan.micro_per_epoch)]

    def unpacked(batches: list[list[int]]) -> dict[str, Any]:
        real, slots = common.padding_fraction([[lengths[i] for i in b] + [lengths[n + i] for i in b]
                                               for b in batches])
        return {"real_tokens": real, "slots": slots, "padding_fraction": round(1 - real / slots, 4)}

    from smorm.models.packing import fill_rows

    one_per_row, padding_free = [], []
    for b in packed_batches:
        units = []
        for i in b:
            cp, rp = pairs["chosen_prompt"][i], pairs["rejected_prompt"][i]
            c, r = chosen[i], rejected[i]
            if cp > 0 and cp == rp and c[:cp] == r[:rp] and cp < len(c) and rp < len(r):
                units.append(len(c) + len(r) - cp)
            else:
                units.extend([len(c), len(r)])
        one_per_row.append(units)
        padding_free.append([sum(units[u] for u in row) for row in fill_rows(units)])

    def packed(rows_by_batch: list[list[int]]) -> dict[str, Any]:
        real, slots = common.padding_fraction(rows_by_batch)
        return {"real_tokens": real, "slots": slots, "padding_fraction": round(1 - real / slots, 4),
                "tokens_vs_unpacked": round(real / sum(lengths), 4)}

    packable = sum(1 for i in range(n) if pairs["chosen_prompt"][i] > 0
                   and pairs["chosen_prompt"][i] == pairs["rejected_prompt"][i]
                   and chosen[i][: pairs["chosen_prompt"][i]] == rejected[i][: pairs["rejected_prompt"][i]])
    return {"pairs": n, "packable_pairs": packable, "batch": batch, "sequence_tokens": sum(lengths),
            "trl": unpacked(trl_batches), "smorm_padded": unpacked(smorm_batches),
            "smorm_shared_prompt_pair_per_row": packed(one_per_row), "smorm": packed(padding_free)}


# ---------------------------------------------------------------- workers (one measurement each)


def worker_smorm(args: argparse.Namespace, pairs: dict[str, Any], subset: list[int]) -> dict[str, Any]:
    import torch

    from smorm.train.batches import StepPlan, pair_widths, step_indices
    from smorm.train.config import RunConfig
    from smorm.train.prepare import TokenizedData
    from smorm.train.trainer import Trainer

    with tempfile.TemporaryDirectory() as folder:
        config = RunConfig.model_validate(run_config(args.backbone_ref, common_sources(args.data), args.max_length,
                                                     args.batch, args.steps, folder, args.bf16,
                                                     args.toolkit == "smorm-padded", args.seed))
        trainer = Trainer(config, show_progress=False)
        trainer.setup()
        full = trainer.data
        if full.chosen != pairs["chosen"] or full.rejected != pairs["rejected"]:
            raise RuntimeError("the smorm trainer tokenised the data differently from the shared token ids")
        pick = lambda xs: [xs[i] for i in subset]  # noqa: E731
        trainer.data = TokenizedData(
            chosen=pick(full.chosen), rejected=pick(full.rejected),
            chosen_prompt_lengths=pick(full.chosen_prompt_lengths),
            rejected_prompt_lengths=pick(full.rejected_prompt_lengths), margins=pick(full.margins),
            pair_source_ids=pick(full.pair_source_ids), sources=full.sources, rating_ids=[],
            rating_prompt_lengths=[], ratings=[], attributes=full.attributes)
        trainer._all_sequences = trainer.data.all_sequences()  # the subset's, as setup built them for the whole set
        data = trainer.data  # grouped as the trainer groups them (its setup did this for the whole set)
        trainer.plan = StepPlan.build(config.train, len(subset), 0, 1, pair_lengths=pair_widths(
            data.chosen, data.rejected, data.chosen_prompt_lengths, data.rejected_prompt_lengths, trainer.packing))
        trainer.scheduler = trainer._scheduler()
        # what each step's batch holds, from the trainer's own schedule and input builder
        real = slots = 0
        for micro in range(trainer.plan.total_micro):
            indices = step_indices(trainer.plan, micro, config.train.seed, 0, trainer.data.chosen, [])
            if trainer.packing:
                packed = trainer._packed_inputs(indices)["packed"]
                real += packed.num_tokens
                slots += packed.input_ids.numel()
            else:
                rows = [len(trainer.data.chosen[i]) for i in indices.pairs] + \
                       [len(trainer.data.rejected[i]) for i in indices.pairs]
                real += sum(rows)
                slots += max(rows) * len(rows)
        ends: list[float] = []
        cpu_end: list[float] = []
        step = trainer.optimizer.step

        def timed_step(*a: Any, **k: Any) -> Any:
            out = step(*a, **k)
            ends.append(time.perf_counter())
            cpu_end.append(time.process_time())
            return out

        trainer.optimizer.step = timed_step
        torch.manual_seed(args.seed)
        start, cpu_start = time.perf_counter(), time.process_time()
        done = trainer.train()
    return {"seconds": ends[-1] - start, "cpu_seconds": cpu_end[-1] - cpu_start, "step_seconds": [round(b - a, 3) for a, b in zip([start, *ends], ends)],
            "steps": len(ends), "computed_tokens": real, "computed_slots": slots, "packed": trainer.packing,
            "model_flops": done.summary["compute"]["train"]["model_flops"]}


def worker_trl(args: argparse.Namespace, pairs: dict[str, Any], subset: list[int]) -> dict[str, Any]:
    import torch
    from datasets import Dataset
    from transformers import AutoModelForSequenceClassification, AutoTokenizer, TrainerCallback
    from trl import RewardConfig, RewardTrainer
    from trl.trainer.reward_trainer import DataCollatorForPreference

    from smorm.models.backbone import ensure_pad_token, resolve_backbone
    from smorm.models.flops import TRAINING, layer_weights, matmul_parameters, model_flops

    folder = resolve_backbone(args.backbone_ref)
    tokenizer = AutoTokenizer.from_pretrained(folder)
    ensure_pad_token(tokenizer)  # the same pad token smorm uses (only padding positions see it)
    model = AutoModelForSequenceClassification.from_pretrained(folder, num_labels=1, dtype=torch.float32)
    model.config.pad_token_id = tokenizer.pad_token_id
    dataset = Dataset.from_dict({"chosen_ids": [pairs["chosen"][i] for i in subset],
                                 "rejected_ids": [pairs["rejected"][i] for i in subset]})
    counts = {"real": 0, "slots": 0, "rows": 0}

    class CountingCollator(DataCollatorForPreference):
        def torch_call(self, examples: list[dict[str, Any]]) -> dict[str, Any]:
            out = super().torch_call(examples)
            counts["real"] += int(out["attention_mask"].sum())
            counts["slots"] += out["attention_mask"].numel()
            counts["rows"] += out["attention_mask"].shape[0]
            return out

    times: dict[str, Any] = {"ends": [], "cpu_ends": []}

    class Clock(TrainerCallback):
        def on_train_begin(self, *_: Any, **__: Any) -> None:
            times["start"], times["cpu_start"] = time.perf_counter(), time.process_time()

        def on_step_end(self, *_: Any, **__: Any) -> None:
            times["ends"].append(time.perf_counter())
            times["cpu_ends"].append(time.process_time())

    with tempfile.TemporaryDirectory() as out:
        config = RewardConfig(
            output_dir=out, per_device_train_batch_size=args.batch, num_train_epochs=1, learning_rate=1e-5,
            lr_scheduler_type="cosine", warmup_steps=0, max_grad_norm=1.0, weight_decay=0.0, optim="adamw_torch",
            logging_steps=10**6, save_strategy="no", eval_strategy="no", report_to="none", use_cpu=True,
            dataloader_num_workers=0, seed=args.seed, bf16=args.bf16, max_length=args.max_length,
            disable_dropout=True, gradient_checkpointing=False,
        )
        trainer = RewardTrainer(model=model, args=config, train_dataset=dataset, processing_class=tokenizer,
                                data_collator=CountingCollator(pad_token_id=tokenizer.pad_token_id),
                                callbacks=[Clock()])
        trainer.train()
    ends = times["ends"]
    # the same convention as smorm's summary: 6 N per real token through the layers, 6 N per row for the score head
    flops = (model_flops(counts["real"], layer_weights(model.base_model), TRAINING)
             + model_flops(counts["rows"], matmul_parameters(model.score), TRAINING))
    return {"seconds": ends[-1] - times["start"], "cpu_seconds": times["cpu_ends"][-1] - times["cpu_start"],
            "step_seconds": [round(b - a, 3) for a, b in zip([times["start"], *ends], ends)],
            "steps": len(ends), "computed_tokens": counts["real"], "computed_slots": counts["slots"],
            "model_flops": flops}


def common_sources(name: str) -> list[dict[str, Any]]:
    return {"mix": common.MIX_SOURCES, "hh": common.HH_SOURCES}[name]


def worker(args: argparse.Namespace) -> None:
    import torch

    torch.set_num_threads(args.threads)
    pairs = json.loads(Path(args.pairs_file).read_text())
    subset = json.loads(args.subset)
    run = worker_trl if args.toolkit == "trl" else worker_smorm
    result = run(args, pairs, subset)
    sequence_tokens = sum(len(pairs["chosen"][i]) + len(pairs["rejected"][i]) for i in subset)
    result.update(pairs=len(subset), sequence_tokens=sequence_tokens,
                  pairs_per_s=round(len(subset) / result["seconds"], 4),
                  tokens_per_s=round(sequence_tokens / result["seconds"], 2),
                  pairs_per_cpu_s=round(len(subset) / result["cpu_seconds"], 4),
                  padding_fraction=round(1 - result["computed_tokens"] / result["computed_slots"], 4))
    common.emit(result)


# ---------------------------------------------------------------- driver


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--backbone", default="tiny", help="tiny (random Llama, --tiny-layers x --tiny-hidden) "
                        "or an smorm backbone ref, e.g. smollm2-135m-instruct")
    parser.add_argument("--tiny-layers", type=int, default=4)
    parser.add_argument("--tiny-hidden", type=int, default=256)
    parser.add_argument("--data", choices=["mix", "hh"], default="mix")
    parser.add_argument("--max-length", type=int, default=256)
    parser.add_argument("--batch", type=int, default=8, help="pairs per step")
    parser.add_argument("--steps", type=int, default=8, help="optimizer steps (one epoch of steps x batch pairs)")
    parser.add_argument("--reps", type=int, default=3)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--threads", type=int, default=1, help="torch threads per worker (1: on a loaded 2-core machine 2 threads oversubscribe and run ~7x slower)")
    parser.add_argument("--bf16", action="store_true", help="bf16 autocast in both toolkits")
    parser.add_argument("--padded", action="store_true", help="also run smorm with train.shared_prompt: false "
                        "(padded, length-grouped batches)")
    parser.add_argument("--no-trl", action="store_true")
    parser.add_argument("--name", default=None, help="results file name (default from the options)")
    parser.add_argument("--worker", action="store_true", help=argparse.SUPPRESS)
    parser.add_argument("--toolkit", default="smorm", help=argparse.SUPPRESS)
    parser.add_argument("--backbone-ref", default=None, help=argparse.SUPPRESS)
    parser.add_argument("--pairs-file", default=None, help=argparse.SUPPRESS)
    parser.add_argument("--subset", default=None, help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.worker:
        worker(args)
        return
    common.refuse_slow_bf16(args.bf16)
    name = args.name or f"train_throughput-{args.backbone}-{args.data}" + ("-bf16" if args.bf16 else "")
    info = common.banner(name)
    work = Path(tempfile.mkdtemp(prefix="smorm-bench-"))
    ref = (str(common.tiny_backbone(work, args.tiny_layers, args.tiny_hidden)) if args.backbone == "tiny"
           else args.backbone)
    pairs = tokenised_pairs(ref, common_sources(args.data), args.max_length)
    pairs_file = work / "pairs.json"
    pairs_file.write_text(json.dumps(pairs))
    padding = epoch_padding(pairs, args.batch, args.seed)
    padding_by_batch = {b: epoch_padding(pairs, b, args.seed) for b in sorted({4, 8, 16, 32, args.batch})}
    for b, pad in padding_by_batch.items():
        print(f"  batch {b:2d}: padding TRL {pad['trl']['padding_fraction']:.1%}, smorm padded "
              f"{pad['smorm_padded']['padding_fraction']:.1%} (grouped by max(chosen, rejected)), shared prompt "
              f"one pair per row {pad['smorm_shared_prompt_pair_per_row']['padding_fraction']:.1%}, smorm "
              f"(padding-free rows) {pad['smorm']['padding_fraction']:.1%}; TRL slots / smorm slots "
              f"{pad['trl']['slots'] / pad['smorm']['slots']:.2f}")
    print(f"{len(pairs['chosen'])} pairs; padding over one whole epoch at batch {args.batch}: "
          f"TRL {padding['trl']['padding_fraction']:.1%}, smorm padded {padding['smorm_padded']['padding_fraction']:.1%}, "
          f"smorm {padding['smorm']['padding_fraction']:.1%} "
          f"(packed rows hold {padding['smorm']['tokens_vs_unpacked']:.1%} of the unpacked tokens; "
          f"{padding['packable_pairs']} pairs share an identical prompt after truncation)")
    peaks = {"smorm": common.matmul_peak(args.bf16, args.threads),  # where smorm's trainer runs
             "trl": common.matmul_peak(args.bf16, args.threads, "cpu")}  # use_cpu=True
    variants = ["smorm"] + (["smorm-padded"] if args.padded else []) + ([] if args.no_trl else ["trl"])
    runs: dict[str, list[dict[str, Any]]] = {v: [] for v in variants}
    for rep in range(args.reps):
        subset = sorted(random.Random(args.seed + rep).sample(range(len(pairs["chosen"])), args.batch * args.steps))
        for variant in variants:
            extra = ["--bf16"] if args.bf16 else []
            result = common.run_worker(SCRIPT, [
                "--toolkit", variant, "--backbone-ref", ref, "--data", args.data,
                "--max-length", str(args.max_length), "--batch", str(args.batch), "--steps", str(args.steps),
                "--seed", str(args.seed), "--threads", str(args.threads), "--pairs-file", str(pairs_file),
                "--subset", json.dumps(subset), *extra])
            result["rep"] = rep
            common.add_mfu(result, peaks["trl" if variant == "trl" else "smorm"])
            runs[variant].append(result)
            print(f"rep {rep} {variant:20s} {result['pairs_per_s']:.3f} pairs/s  {result['tokens_per_s']:.0f} tok/s  "
                  f"MFU {common.percent(result['mfu'])}  "
                  f"padding {result['padding_fraction']:.1%}  CPU-time {result.get('pairs_per_cpu_s', float('nan')):.3f} pairs/s  peak RSS {result['peak_rss_mb']:.0f} MB  "
                  f"load {result['load_average'][0]}")
    keys = ["pairs_per_s", "tokens_per_s", "padding_fraction", "peak_rss_mb", "seconds", "pairs_per_cpu_s", "mfu"]
    summary = {v: common.summarise(r, keys) for v, r in runs.items()}
    ratios: dict[str, Any] = {}
    if "trl" in summary:
        for variant in summary:
            if variant != "trl":
                ratios[f"{variant}_vs_trl_pairs_per_s"] = round(
                    summary[variant]["median_pairs_per_s"] / summary["trl"]["median_pairs_per_s"], 3)
                per_rep = [a["pairs_per_s"] / b["pairs_per_s"] for a, b in zip(runs[variant], runs["trl"])]
                ratios[f"{variant}_vs_trl_per_rep"] = [round(x, 3) for x in per_rep]
                if "median_pairs_per_cpu_s" in summary[variant] and "median_pairs_per_cpu_s" in summary["trl"]:
                    ratios[f"{variant}_vs_trl_pairs_per_cpu_s"] = round(
                        summary[variant]["median_pairs_per_cpu_s"] / summary["trl"]["median_pairs_per_cpu_s"], 3)
    for variant, s in summary.items():
        print(f"median {variant:20s} {s['median_pairs_per_s']:.3f} pairs/s (range {s['range_pairs_per_s']}), "
              f"{s['median_tokens_per_s']:.0f} tok/s, MFU {common.percent(s.get('median_mfu'))}, "
              f"padding {s['median_padding_fraction']:.1%}, "
              f"peak RSS {s['median_peak_rss_mb']:.0f} MB")
    for key, value in ratios.items():
        print(f"{key}: {value}")
    settings = {k: v for k, v in vars(args).items() if k not in ("worker", "toolkit", "backbone_ref", "pairs_file",
                                                                  "subset")}
    common.finish(info, {"settings": settings, "backbone_path": ref, "epoch_padding": padding, "epoch_padding_by_batch": padding_by_batch,
                         "variants": summary, "ratios": ratios, "matmul_peak": peaks})


if __name__ == "__main__":
    main()
