"""Scoring throughput: SMORM (all heads, one pass) vs Baseline SM (a SORM and a MORM: two passes),
and smorm's scoring vs a bare ``AutoModel`` forward over the same batches (the limit).

The three scorers read the same token sequences (chosen and rejected responses of the shared 1k
mix, rendered once by smorm's formatter), in the same length-sorted batches of the same size.
Heads are random (speed does not depend on their values): the SMORM model has ``single`` and a
5-attribute ``multi`` head; Baseline SM is a composite of a SORM (``single``) and a MORM
(``multi``) on the same backbone, written with ``write_baseline_sm``. The bare forward is
``AutoModel.from_pretrained(folder)`` called on the batches ``RewardModel.score_token_ids`` builds,
with nothing else. Each measurement runs in its own process (peak RSS is its own) after one
untimed warm-up batch; repetitions interleave the scorers.

``smorm_packed`` is SMORM with shared-prompt packing (``score_token_ids(pack=True)``): sequences
with identical prompt tokens are scored as ``prompt ⊕ response_1 ⊕ …`` rows, the prompt encoded
once. ``tokens_processed`` counts the real tokens each scorer runs through the backbone. ``--data``
picks the sequences: ``mix`` (a random sample of chosen and rejected sequences of the 1k mix:
few share a prompt), ``hh`` (whole HH pairs, cut at one prompt start: chosen and rejected share
their prompt) or ``rm-bench`` (whole RM-Bench items: one prompt with six responses, encoded as
``smorm eval`` encodes them).

MFU: forward model FLOPs, ``2 N`` per token processed (``N`` the backbone layers' matmul weights; the
heads, one small matmul per sequence, and attention scores left out; :mod:`smorm.models.flops`),
over the timed seconds, against the matmul peak this machine measured once in the scoring dtype
(``$SMORM_PEAK_FLOPS`` overrides it). Baseline SM processes every token twice, so its FLOPs double.

    python bench/scoring.py                                  # tiny random Llama
    python bench/scoring.py --backbone smollm2-135m-instruct --sequences 64
    python bench/scoring.py --data rm-bench                  # one prompt, six responses
    python bench/scoring.py --data hh
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
ATTRIBUTES = ["helpfulness", "correctness", "coherence", "complexity", "verbosity"]


def write_models(ref: str, folder: Path, max_length: int) -> dict[str, str]:
    """SMORM, SORM and MORM folders on one backbone (random heads), and the Baseline SM composite."""
    import torch

    from smorm.models.backbone import load_backbone
    from smorm.models.composite import write_baseline_sm
    from smorm.models.reward_model import RewardModel, RewardModelConfig

    backbone = load_backbone(ref)
    paths = {}
    for name, heads in {"smorm": {"single": {"kind": "linear"}, "multi": {"kind": "linear", "out": len(ATTRIBUTES)}},
                        "sorm": {"single": {"kind": "linear"}},
                        "morm": {"multi": {"kind": "linear", "out": len(ATTRIBUTES)}}}.items():
        torch.manual_seed(0)
        config = RewardModelConfig(backbone=ref, attributes=ATTRIBUTES if "multi" in heads else [], heads=heads,
                                   mode="M" if name == "smorm" else ("F" if name == "sorm" else "L"),
                                   max_length=max_length, is_decoder=backbone.is_decoder)
        model = RewardModel(backbone.model, backbone.tokenizer, config)
        paths[name] = str(model.save_pretrained(folder / name, backbone_weights="reference"))
    write_baseline_sm(folder / "baseline-sm", paths["sorm"], paths["morm"])
    paths["baseline_sm"] = str(folder / "baseline-sm")
    paths["backbone"] = backbone.local_path if hasattr(backbone, "local_path") else ref
    return paths


def trunk_weights(ref: str) -> int:
    """Matmul weights per token of the backbone's layers (the forward's ``N``)."""
    from smorm.models.backbone import load_backbone
    from smorm.models.flops import layer_weights

    model = load_backbone(ref).model
    return layer_weights(getattr(model, "base_model", model))


RM_BENCH = common.SHARED_DATA / "eval/rm-bench"


def sequences_of_mix(ref: str, max_length: int, count: int, seed: int) -> tuple[list[list[int]], list[int]]:
    """A random sample of ``count`` chosen and rejected sequences of the 1k mix, with their response starts."""
    sys.path.insert(0, str(SCRIPT.parent))
    from train_throughput import tokenised_pairs

    pairs = tokenised_pairs(ref, common.MIX_SOURCES, max_length)
    every = pairs["chosen"] + pairs["rejected"]
    starts = pairs["chosen_prompt"] + pairs["rejected_prompt"]
    picked = random.Random(seed).sample(range(len(every)), count)
    return [every[i] for i in picked], [starts[i] for i in picked]


def sequences_of_hh(ref: str, max_length: int, count: int, seed: int) -> tuple[list[list[int]], list[int]]:
    """Chosen and rejected sequences of ``count // 2`` random HH pairs (each pair cut at one prompt start)."""
    sys.path.insert(0, str(SCRIPT.parent))
    from train_throughput import tokenised_pairs

    pairs = tokenised_pairs(ref, common.HH_SOURCES, max_length)
    picked = random.Random(seed).sample(range(len(pairs["chosen"])), count // 2)
    # chosen and rejected side by side, so the warm-up batch holds pairs too
    sequences = [pairs[side][i] for i in picked for side in ("chosen", "rejected")]
    starts = [pairs[side][i] for i in picked for side in ("chosen_prompt", "rejected_prompt")]
    return sequences, starts


def sequences_of_rm_bench(ref: str, max_length: int, count: int, seed: int) -> tuple[list[list[int]], list[int]]:
    """The six responses of random RM-Bench items (``count // 6`` items), encoded one by one as ``smorm eval`` does."""
    from smorm.data import DataSpec, Formatter, load_rmbench
    from smorm.models.backbone import load_backbone

    items, _ = load_rmbench(DataSpec(path=str(RM_BENCH), format="rm-bench"))
    formatter = Formatter(load_backbone(ref).tokenizer, max_length)
    sequences, starts = [], []
    for index in random.Random(seed).sample(range(len(items)), min(len(items), max(count // 6, 1))):
        for response in [*items[index].chosen, *items[index].rejected]:
            encoded = formatter.encode(items[index].prompt, response)
            sequences.append(encoded.input_ids)
            starts.append(encoded.response_start)
    return sequences, starts


SEQUENCES = {"mix": sequences_of_mix, "hh": sequences_of_hh, "rm-bench": sequences_of_rm_bench}


def count_packed_tokens() -> dict[str, int]:
    """Wrap ``pack_rows`` so the worker can tell how many tokens the packed rows held.

    Returns a dict updated at every packed batch: ``covered`` (tokens of the separate sequences the
    rows stand for) and ``real`` (tokens the rows hold: each prompt once per row).
    """
    from smorm.models import packing

    counts = {"covered": 0, "real": 0}
    real = packing.pack_rows

    def counting(prompts: list[list[int]], responses: list[list[list[int]]], pad_id: int) -> Any:
        packed = real(prompts, responses, pad_id)
        counts["covered"] += sum(len(p) + len(r) for p, rs in zip(prompts, responses) for r in rs)
        counts["real"] += packed.num_tokens
        return packed

    packing.pack_rows = counting
    return counts


def worker(args: argparse.Namespace) -> None:
    import torch

    torch.set_num_threads(args.threads)
    paths = json.loads(args.paths)
    data = json.loads(Path(args.sequences_file).read_text())
    sequences, starts = data["sequences"], data["response_starts"]
    counts = {"covered": 0, "real": 0}
    if args.scorer == "bare":
        from transformers import AutoModel

        from smorm.data.collate import collate_sequences
        from smorm.models.backbone import resolve_backbone
        from smorm.models.reward_model import position_ids_from_mask

        model = AutoModel.from_pretrained(resolve_backbone(paths["backbone"]), dtype=torch.float32).eval()
        pad_id = 0

        def run(seqs: list[list[int]], _: list[int]) -> None:
            order = sorted(range(len(seqs)), key=lambda i: -len(seqs[i]))
            with torch.no_grad(), torch.autocast("cpu", dtype=torch.bfloat16, enabled=args.bf16):
                for start in range(0, len(order), args.batch):
                    batch = collate_sequences([seqs[i] for i in order[start : start + args.batch]], pad_id)
                    model(input_ids=batch.input_ids, attention_mask=batch.attention_mask,
                          position_ids=position_ids_from_mask(batch.attention_mask))
    elif args.scorer == "smorm_packed":
        from smorm.models.reward_model import RewardModel

        model = RewardModel.from_pretrained(paths["smorm"])

        def run(seqs: list[list[int]], seq_starts: list[int]) -> None:
            out = model.score_token_ids(seqs, batch_size=args.batch, autocast_bf16=args.bf16,
                                        response_starts=seq_starts, pack=True)
            assert out.single is not None and out.attributes is not None

    else:
        from smorm.models.composite import load_scorer

        scorer = load_scorer(paths[args.scorer])

        def run(seqs: list[list[int]], _: list[int]) -> None:
            out = scorer.score_token_ids(seqs, batch_size=args.batch, autocast_bf16=args.bf16)
            assert out.single is not None and out.attributes is not None  # every head, F/L/M computable

    run(sequences[: args.batch], starts[: args.batch])  # warm-up: first-call allocations and kernels
    if args.scorer == "smorm_packed":
        counts = count_packed_tokens()  # counts the timed run only (the warm-up ran before the wrapper)
    start, cpu_start = time.perf_counter(), time.process_time()
    run(sequences, starts)
    seconds, cpu_seconds = time.perf_counter() - start, time.process_time() - cpu_start
    tokens = sum(len(s) for s in sequences)
    processed = tokens - counts["covered"] + counts["real"]
    if args.scorer == "baseline_sm":  # a SORM and a MORM: every token goes through two backbones
        processed *= 2
    common.emit({"seconds": seconds, "cpu_seconds": cpu_seconds, "tokens_processed": processed,
                 "sequences_per_cpu_s": round(len(sequences) / cpu_seconds, 3), "sequences": len(sequences), "tokens": tokens,
                 "sequences_per_s": round(len(sequences) / seconds, 3), "tokens_per_s": round(tokens / seconds, 1)})


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--backbone", default="tiny")
    parser.add_argument("--data", choices=sorted(SEQUENCES), default="mix",
                        help="mix: random sequences of the 1k mix; hh: whole HH pairs; rm-bench: whole RM-Bench items")
    parser.add_argument("--tiny-layers", type=int, default=4)
    parser.add_argument("--tiny-hidden", type=int, default=256)
    parser.add_argument("--max-length", type=int, default=256)
    parser.add_argument("--sequences", type=int, default=256)
    parser.add_argument("--batch", type=int, default=16)
    parser.add_argument("--reps", type=int, default=3)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--threads", type=int, default=1)
    parser.add_argument("--bf16", action="store_true")
    parser.add_argument("--name", default=None)
    parser.add_argument("--worker", action="store_true", help=argparse.SUPPRESS)
    parser.add_argument("--scorer", default="smorm", help=argparse.SUPPRESS)
    parser.add_argument("--paths", default=None, help=argparse.SUPPRESS)
    parser.add_argument("--sequences-file", default=None, help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.worker:
        worker(args)
        return
    common.refuse_slow_bf16(args.bf16, "cpu")
    name = args.name or (f"scoring-{args.backbone}" + ("" if args.data == "mix" else f"-{args.data}")
                         + ("-bf16" if args.bf16 else ""))
    info = common.banner(name)
    work = Path(tempfile.mkdtemp(prefix="smorm-bench-scoring-"))
    ref = (str(common.tiny_backbone(work, args.tiny_layers, args.tiny_hidden)) if args.backbone == "tiny"
           else args.backbone)
    paths = write_models(ref, work, args.max_length)
    sequences, starts = SEQUENCES[args.data](ref, args.max_length, args.sequences, args.seed)
    sequences_file = work / "sequences.json"
    sequences_file.write_text(json.dumps({"sequences": sequences, "response_starts": starts}))
    scorers = ["smorm", "smorm_packed", "baseline_sm", "bare"]
    from smorm.models.flops import FORWARD, model_flops

    weights = trunk_weights(ref)
    peak = common.matmul_peak(args.bf16, args.threads, "cpu")  # every scorer runs on the host
    runs: dict[str, list[dict[str, Any]]] = {s: [] for s in scorers}
    for rep in range(args.reps):
        for scorer in scorers:
            result = common.run_worker(SCRIPT, ["--scorer", scorer, "--paths", json.dumps(paths), "--sequences-file",
                                                str(sequences_file), "--batch", str(args.batch), "--threads",
                                                str(args.threads), *(["--bf16"] if args.bf16 else [])])
            result["rep"] = rep
            result["model_flops"] = model_flops(result["tokens_processed"], weights, FORWARD)
            common.add_mfu(result, peak)
            runs[scorer].append(result)
            print(f"rep {rep} {scorer:12s} {result['sequences_per_s']:.2f} seq/s {result['tokens_per_s']:.0f} tok/s "
                  f"MFU {common.percent(result['mfu'])} "
                  f"tokens processed {result['tokens_processed']} peak RSS {result['peak_rss_mb']:.0f} MB load {result['load_average'][0]}")
    keys = ["sequences_per_s", "tokens_per_s", "seconds", "peak_rss_mb", "sequences_per_cpu_s", "tokens_processed",
            "mfu"]
    summary = {s: common.summarise(r, keys) for s, r in runs.items()}
    med = {s: summary[s]["median_sequences_per_s"] for s in scorers}
    ratios = {
        "smorm_vs_baseline_sm": round(med["smorm"] / med["baseline_sm"], 3),
        "smorm_packed_vs_smorm": round(med["smorm_packed"] / med["smorm"], 3),
        "smorm_packed_vs_baseline_sm": round(med["smorm_packed"] / med["baseline_sm"], 3),
        "smorm_packed_tokens_vs_unpacked": round(summary["smorm_packed"]["median_tokens_processed"]
                                                 / summary["smorm"]["median_tokens_processed"], 4),
        "smorm_vs_baseline_sm_per_rep": [round(a["seconds"] and b["seconds"] / a["seconds"], 3)
                                         for a, b in zip(runs["smorm"], runs["baseline_sm"])],
        "smorm_overhead_over_bare": round(med["bare"] / med["smorm"] - 1, 4),
        "cpu_time_smorm_vs_baseline_sm": round(summary["smorm"]["median_sequences_per_cpu_s"]
                                               / summary["baseline_sm"]["median_sequences_per_cpu_s"], 3),
        "cpu_time_smorm_overhead_over_bare": round(summary["bare"]["median_sequences_per_cpu_s"]
                                                   / summary["smorm"]["median_sequences_per_cpu_s"] - 1, 4),
        "smorm_overhead_over_bare_per_rep": [round(a["seconds"] / b["seconds"] - 1, 4)
                                             for a, b in zip(runs["smorm"], runs["bare"])],
    }
    for s in scorers:
        print(f"median {s:12s} {med[s]:.2f} seq/s (range {summary[s]['range_sequences_per_s']}), "
              f"MFU {common.percent(summary[s].get('median_mfu'))}, "
              f"tokens processed {summary[s]['median_tokens_processed']:.0f}, peak RSS {summary[s]['median_peak_rss_mb']:.0f} MB")
    for key, value in ratios.items():
        print(f"{key}: {value}")
    settings = {k: v for k, v in vars(args).items() if k not in ("worker", "scorer", "paths", "sequences_file")}
    common.finish(info, {"settings": settings, "variants": summary, "ratios": ratios, "matmul_peak": peak,
                         "trunk_weights": weights})


if __name__ == "__main__":
    main()
