"""Shared plumbing of the bench/ scripts: machine and version banner, one subprocess per
measurement (so peak RSS is that measurement's alone), medians, atomic JSON results.

The bench scripts are never run by pytest; each one prints what it measured, the machine, the
versions and the exact command, and writes ``bench/results/<name>.json``.
"""

from __future__ import annotations

import json
import os
import platform
import resource
import shlex
import statistics
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

REPO = Path(__file__).resolve().parents[1]
RESULTS = REPO / "bench" / "results"
SHARED_DATA = (REPO / ".." / "shared" / "data").resolve()
RESULT_PREFIX = "BENCH_RESULT "  # a worker prints one line starting with this, then its JSON

MIX_SOURCES = [  # the shared 1k mix: 334 + 333 + 333 pairs
    {"path": str(SHARED_DATA / "pairs/ultrafeedback/binarized-train-1k.jsonl"), "format": "auto", "limit": 334},
    {"path": str(SHARED_DATA / "pairs/hh-rlhf/helpful-base-train-sample.jsonl"), "format": "auto", "limit": 333},
    {"path": str(SHARED_DATA / "pairs/hh-rlhf/harmless-base-train-sample.jsonl"), "format": "auto", "limit": 333},
]
HH_SOURCES = [  # HH-style multi-turn conversations: the prompt is most of the tokens
    {"path": str(SHARED_DATA / "pairs/hh-rlhf/helpful-base-train-sample.jsonl"), "format": "auto"},
    {"path": str(SHARED_DATA / "pairs/hh-rlhf/harmless-base-train-sample.jsonl"), "format": "auto"},
]

ALL_SOURCES = [  # every pair file of ../shared/data/pairs but UltraFeedback's eval split: about 5k pairs
    {"path": str(SHARED_DATA / f"pairs/{name}"), "format": "auto"} for name in (
        "ultrafeedback/binarized-train-1k.jsonl", "ultrafeedback/argilla-1k.jsonl",
        "hh-rlhf/helpful-base-train-sample.jsonl", "hh-rlhf/harmless-base-train-sample.jsonl",
        "hh-rlhf/full-hh-rlhf-sample.jsonl", "chatbot-arena/arena-human-preference-55k-sample.jsonl",
        "pku-saferlhf/pku-saferlhf-sample.jsonl", "stack-exchange/stack-exchange-preferences-sample.jsonl")
]
SOURCE_SETS = {"mix": MIX_SOURCES, "hh": HH_SOURCES, "all": ALL_SOURCES}

def load_average() -> list[float]:
    return [round(x, 2) for x in os.getloadavg()]


def machine() -> dict[str, Any]:
    from smorm.models.flops import cpu_model_name

    cpu = cpu_model_name()
    memory_gb = None
    try:
        for line in Path("/proc/meminfo").read_text().splitlines():
            if line.startswith("MemTotal"):
                memory_gb = round(int(line.split()[1]) / 2**20, 1)
    except OSError:
        pass
    return {"cpu": cpu, "cores": os.cpu_count(), "memory_gb": memory_gb, "platform": platform.platform(),
            "python": platform.python_version()}


def versions() -> dict[str, str]:
    import importlib.metadata as md

    found: dict[str, str] = {}
    for name in ("torch", "transformers", "accelerate", "trl", "smorm"):
        try:
            found[name] = md.version(name)
        except md.PackageNotFoundError:
            found[name] = "not installed"
    try:
        commit = subprocess.run(["git", "-C", str(REPO), "rev-parse", "--short", "HEAD"], capture_output=True,
                                text=True, check=True).stdout.strip()
        dirty = subprocess.run(["git", "-C", str(REPO), "status", "--porcelain", "--untracked-files=no"],
                               capture_output=True, text=True, check=True).stdout.strip()
        found["smorm_commit"] = commit + ("+dirty" if dirty else "")
    except (OSError, subprocess.CalledProcessError):
        found["smorm_commit"] = "unknown"
    return found


def banner(name: str) -> dict[str, Any]:
    """Print and return the machine, the versions, the exact command and the load average."""
    info = {"bench": name, "command": " ".join(shlex.quote(a) for a in [sys.executable, *sys.argv]),
            "started": time.strftime("%Y-%m-%d %H:%M:%S %Z"), "machine": machine(), "versions": versions(),
            "load_average_start": load_average()}
    print(f"== {name}")
    print(f"command : {info['command']}")
    print(f"machine : {info['machine']}")
    print(f"versions: {info['versions']}")
    print(f"load avg at start (1/5/15 min): {info['load_average_start']}")
    return info


def without_machine_paths(value: Any) -> Any:
    """``value`` with this machine's paths made portable in every string: the repository root becomes
    ``.``, a temporary folder ``<tmp>``, the home folder ``~`` (results files are committed)."""
    import re
    import tempfile

    if isinstance(value, dict):
        return {key: without_machine_paths(item) for key, item in value.items()}
    if isinstance(value, list):
        return [without_machine_paths(item) for item in value]
    if not isinstance(value, str):
        return value
    root = str(Path(__file__).resolve().parent.parent)
    value = value.replace(root + "/", "./").replace(root, ".")
    value = re.sub(re.escape(tempfile.gettempdir()) + r"/[^/\s\"']+", "<tmp>", value)
    return value.replace(str(Path.home()), "~")


def finish(info: dict[str, Any], results: dict[str, Any]) -> Path:
    """Add the end load average and write ``bench/results/<bench>.json`` atomically, without machine paths."""
    info["load_average_end"] = load_average()
    print(f"load avg at end (1/5/15 min): {info['load_average_end']}")
    RESULTS.mkdir(parents=True, exist_ok=True)
    path = RESULTS / f"{info['bench']}.json"
    temporary = path.with_suffix(".json.tmp")
    record = json.loads(json.dumps({**info, "results": results}, default=str))
    temporary.write_text(json.dumps(without_machine_paths(record), indent=2))
    os.replace(temporary, path)
    print(f"wrote {path}")
    return path


def peak_rss_mb() -> float:
    """Peak resident set size of this process in MB (Linux reports ru_maxrss in KiB)."""
    return round(resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024, 1)


def emit(result: dict[str, Any]) -> None:
    """Worker side: print the result line the parent reads (peak RSS and load average added)."""
    result = {**result, "peak_rss_mb": peak_rss_mb(), "load_average": load_average()}
    print(RESULT_PREFIX + json.dumps(result, default=str), flush=True)


def run_worker(script: Path, args: list[str], timeout: float = 3600) -> dict[str, Any]:
    """Run ``script --worker args`` in a fresh interpreter and return the JSON it emits."""
    command = [sys.executable, str(script), "--worker", *args]
    env = {**os.environ, "TOKENIZERS_PARALLELISM": "false", "PYTHONWARNINGS": "ignore"}
    started = time.time()
    done = subprocess.run(command, capture_output=True, text=True, timeout=timeout, env=env, cwd=str(REPO))
    lines = [line for line in done.stdout.splitlines() if line.startswith(RESULT_PREFIX)]
    if done.returncode != 0 or not lines:
        sys.stderr.write(done.stdout[-3000:] + "\n" + done.stderr[-5000:] + "\n")
        raise RuntimeError(f"worker failed (exit {done.returncode}): {' '.join(command)}")
    result = json.loads(lines[-1][len(RESULT_PREFIX):])
    result["process_seconds"] = round(time.time() - started, 1)
    return result


def median_of(runs: list[dict[str, Any]], key: str) -> float:
    return float(statistics.median(r[key] for r in runs))


def spread(runs: list[dict[str, Any]], key: str) -> list[float]:
    """[min, max] of a figure over repetitions (how noisy the machine was)."""
    values = [r[key] for r in runs]
    return [min(values), max(values)]


def summarise(runs: list[dict[str, Any]], keys: list[str]) -> dict[str, Any]:
    # a figure added mid-series, or one a variant does not have (None: no caching pass), is left out
    keys = [k for k in keys if all(r.get(k) is not None for r in runs)]
    return {"runs": runs, **{f"median_{k}": median_of(runs, k) for k in keys},
            **{f"range_{k}": spread(runs, k) for k in keys}}


def tiny_backbone(folder: Path, layers: int, hidden: int, tokenizer_ref: str = "smollm2-135m-instruct") -> Path:
    """A random Llama bigger than the test one (so compute, not Python, dominates), saved once.

    It uses a real backbone's tokenizer (default SmolLM2's), so its token ids, lengths and padding
    are exactly those of the real backbone on the same data.
    """
    import torch
    from transformers import AutoTokenizer, LlamaConfig, LlamaForCausalLM

    from smorm.models.backbone import ensure_pad_token, resolve_backbone

    target = folder / f"tiny-llama-{layers}x{hidden}"
    if (target / "config.json").is_file():
        return target
    tokenizer = AutoTokenizer.from_pretrained(resolve_backbone(tokenizer_ref))
    ensure_pad_token(tokenizer)
    config = LlamaConfig(vocab_size=len(tokenizer), hidden_size=hidden, intermediate_size=2 * hidden,
                         num_hidden_layers=layers, num_attention_heads=4, num_key_value_heads=2,
                         max_position_embeddings=2048, pad_token_id=tokenizer.pad_token_id,
                         bos_token_id=tokenizer.bos_token_id, eos_token_id=tokenizer.eos_token_id,
                         tie_word_embeddings=True)
    torch.manual_seed(0)
    LlamaForCausalLM(config).save_pretrained(target)
    tokenizer.save_pretrained(target)
    return target


def padding_fraction(batches: list[list[int]]) -> tuple[int, int]:
    """``(real tokens, padded slots)`` of right-padded batches given as lists of sequence lengths."""
    real = sum(sum(b) for b in batches)
    slots = sum(max(b) * len(b) for b in batches)
    return real, slots


# ---------------------------------------------------------------- MFU (smorm.models.flops)


def matmul_peak(bf16: bool, threads: int, device: Any = None) -> dict[str, Any]:
    """This machine's matmul peak in the bench's dtype, with ``threads`` torch threads (the workers' count).

    Measured once per machine, dtype and thread count and cached (``$SMORM_CACHE/matmul_peak.json``;
    ``$SMORM_PEAK_FLOPS`` overrides it), by the function ``smorm train`` uses for its summary. ``device``:
    default the one the smorm trainer runs on (the accelerator if there is one).
    """
    import torch

    from smorm.models.devices import accelerator_device, host_device
    from smorm.models.flops import matmul_peak as measured

    torch.set_num_threads(threads)
    where = torch.device(device) if device is not None else (accelerator_device() or host_device())
    peak = measured(torch.bfloat16 if bf16 else torch.float32, where)
    print(f"matmul peak: {peak.flops_per_s / 1e9:.1f} GFLOP/s ({peak.dtype}, {peak.device}, {threads} thread(s), "
          f"{peak.source})")
    return peak.as_dict()


def refuse_slow_bf16(bf16: bool, device: Any = None) -> None:
    """Stop a ``--bf16`` bench where bf16 is emulated (``fast_bf16`` false): on an AVX2-only CPU one
    bf16 rep ran 18 minutes without finishing (a matmul at 0.9 GFLOP/s against 172 in fp32), and its
    figure would measure the emulation, not smorm. ``SMORM_BENCH_SLOW_BF16=1`` runs it anyway."""
    import torch

    from smorm.models.devices import accelerator_device, fast_bf16, host_device

    where = torch.device(device) if device is not None else (accelerator_device() or host_device())
    if bf16 and not fast_bf16(where) and os.environ.get("SMORM_BENCH_SLOW_BF16") != "1":
        raise SystemExit(f"--bf16: {where} has no native bf16 (no AVX512-BF16/AMX on a CPU), so bf16 is emulated "
                         "and runs about 100x slower than fp32; run in fp32, or set SMORM_BENCH_SLOW_BF16=1")


def add_mfu(result: dict[str, Any], peak: dict[str, Any], flops_key: str = "model_flops",
            seconds_key: str = "seconds", mfu_key: str = "mfu") -> dict[str, Any]:
    """``result[mfu_key] = result[flops_key] / result[seconds_key] / peak`` (model FLOPs of the real tokens)."""
    from smorm.models.flops import mfu

    result[mfu_key] = mfu(result[flops_key], result[seconds_key], peak["flops_per_s"])
    return result


def percent(value: float | None) -> str:
    return "n/a" if value is None else f"{value:.2%}"
