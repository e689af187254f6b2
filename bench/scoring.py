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

    python bench/scoring.py                                  # tiny random Llama
    python bench/scoring.py --backbone smollm2-135m-instruct --sequences 64
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


def sequences_of_mix(ref: str, max_length: int, count: int, seed: int) -> list[list[int]]:
    sys.path.insert(0, str(SCRIPT.parent))
    from train_throughput import tokenised_pairs

    pairs = tokenised_pairs(ref, common.MIX_SOURCES, max_length)
    every = pairs["chosen"] + pairs["rejected"]
    return [every[i] for i in random.Random(seed).sample(range(len(every)), count)]


def worker(args: argparse.Namespace) -> None:
    import torch

    torch.set_num_threads(args.threads)
    paths = json.loads(args.paths)
    sequences = json.loads(Path(args.sequences_file).read_text())
    if args.scorer == "bare":
        from transformers import AutoModel

        from smorm.data.collate import collate_sequences
        from smorm.models.backbone import resolve_backbone
        from smorm.models.reward_model import position_ids_from_mask

        model = AutoModel.from_pretrained(resolve_backbone(paths["backbone"]), dtype=torch.float32).eval()
        pad_id = 0

        def run(seqs: list[list[int]]) -> None:
            order = sorted(range(len(seqs)), key=lambda i: -len(seqs[i]))
            with torch.no_grad(), torch.autocast("cpu", dtype=torch.bfloat16, enabled=args.bf16):
                for start in range(0, len(order), args.batch):
                    batch = collate_sequences([seqs[i] for i in order[start : start + args.batch]], pad_id)
                    model(input_ids=batch.input_ids, attention_mask=batch.attention_mask,
                          position_ids=position_ids_from_mask(batch.attention_mask))
    else:
        from smorm.models.composite import load_scorer

        scorer = load_scorer(paths[args.scorer])

        def run(seqs: list[list[int]]) -> None:
            out = scorer.score_token_ids(seqs, batch_size=args.batch, autocast_bf16=args.bf16)
            assert out.single is not None and out.attributes is not None  # every head, F/L/M computable

    run(sequences[: args.batch])  # warm-up: first-call allocations and kernels
    start, cpu_start = time.perf_counter(), time.process_time()
    run(sequences)
    seconds, cpu_seconds = time.perf_counter() - start, time.process_time() - cpu_start
    tokens = sum(len(s) for s in sequences)
    common.emit({"seconds": seconds, "cpu_seconds": cpu_seconds,
                 "sequences_per_cpu_s": round(len(sequences) / cpu_seconds, 3), "sequences": len(sequences), "tokens": tokens,
                 "sequences_per_s": round(len(sequences) / seconds, 3), "tokens_per_s": round(tokens / seconds, 1)})


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--backbone", default="tiny")
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
    name = args.name or f"scoring-{args.backbone}" + ("-bf16" if args.bf16 else "")
    info = common.banner(name)
    work = Path(tempfile.mkdtemp(prefix="smorm-bench-scoring-"))
    ref = (str(common.tiny_backbone(work, args.tiny_layers, args.tiny_hidden)) if args.backbone == "tiny"
           else args.backbone)
    paths = write_models(ref, work, args.max_length)
    sequences = sequences_of_mix(ref, args.max_length, args.sequences, args.seed)
    sequences_file = work / "sequences.json"
    sequences_file.write_text(json.dumps(sequences))
    scorers = ["smorm", "baseline_sm", "bare"]
    runs: dict[str, list[dict[str, Any]]] = {s: [] for s in scorers}
    for rep in range(args.reps):
        for scorer in scorers:
            result = common.run_worker(SCRIPT, ["--scorer", scorer, "--paths", json.dumps(paths), "--sequences-file",
                                                str(sequences_file), "--batch", str(args.batch), "--threads",
                                                str(args.threads), *(["--bf16"] if args.bf16 else [])])
            result["rep"] = rep
            runs[scorer].append(result)
            print(f"rep {rep} {scorer:12s} {result['sequences_per_s']:.2f} seq/s {result['tokens_per_s']:.0f} tok/s "
                  f"peak RSS {result['peak_rss_mb']:.0f} MB load {result['load_average'][0]}")
    keys = ["sequences_per_s", "tokens_per_s", "seconds", "peak_rss_mb", "sequences_per_cpu_s"]
    summary = {s: common.summarise(r, keys) for s, r in runs.items()}
    med = {s: summary[s]["median_sequences_per_s"] for s in scorers}
    ratios = {
        "smorm_vs_baseline_sm": round(med["smorm"] / med["baseline_sm"], 3),
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
              f"peak RSS {summary[s]['median_peak_rss_mb']:.0f} MB")
    for key, value in ratios.items():
        print(f"{key}: {value}")
    settings = {k: v for k, v in vars(args).items() if k not in ("worker", "scorer", "paths", "sequences_file")}
    common.finish(info, {"settings": settings, "variants": summary, "ratios": ratios})


if __name__ == "__main__":
    main()
