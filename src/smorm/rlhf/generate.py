"""Sample N responses per prompt from a policy into a pool file that grows as it goes and resumes.

The policy is any Hugging Face causal LM (folder, hub id, ``.gguf``) or an embedded short name such
as ``smollm2-135m-instruct``, loaded with :func:`smorm.models.backbone.load_backbone`. Prompts are
rendered with the policy's chat template and batched with LEFT padding, several prompts per
``model.generate`` call, with the KV cache.

Seeding. Each response has its own random stream, seeded from ``(seed, prompt, sample index)``:
sampling is done inside ``model.generate`` by the Gumbel-max trick (a logits processor adds
Gumbel noise drawn from the row's own generator to the temperature-scaled, top-p-filtered
log-probabilities, and greedy selection takes the argmax, which is an exact sample from
``softmax(logits / T)`` restricted to the nucleus). A response therefore does not depend on which
other prompts share its batch, and a resumed run gives the same samples as an uninterrupted one.

The pool is jsonl, one line per prompt (``index``, ``key``, ``prompt``, ``responses``,
``response_tokens``, ``finished``), appended and fsynced as each batch completes; a name ending in
``.gz`` is written gzip-compressed, one gzip member per batch (:mod:`smorm.rlhf.pools`). A sidecar
``<pool>.meta.json`` (written atomically) records the policy and sampling settings, and a resumed
run refuses different ones. A line cut short by a kill is dropped and regenerated.
"""

from __future__ import annotations

import hashlib
import json
import os
from collections.abc import Callable, Sequence
from dataclasses import asdict
from pathlib import Path
from typing import Any

import torch

from smorm.data.spec import PromptRecord
from smorm.io import atomic_write_json, read_json
from smorm.models.devices import module_device, resolve_device
from smorm.rlhf.pools import PoolEntry, append_pool_lines, prompt_key, read_pool, rewrite_complete
from smorm.rlhf.settings import SamplingConfig
from smorm.types import Message

META_SUFFIX = ".meta.json"


def sample_seed(seed: int, key: str, sample_index: int) -> int:
    """The 63-bit seed of one response's random stream."""
    digest = hashlib.sha256(f"{seed}:{key}:{sample_index}".encode()).digest()
    return int.from_bytes(digest[:8], "little") & ((1 << 63) - 1)


class GumbelSampler:
    """Logits processor that turns greedy decoding into seeded per-row sampling (Gumbel-max).

    ``argmax(log_softmax(z / T) + G)`` with ``G ~ Gumbel(0, 1)`` i.i.d. is a sample from
    ``softmax(z / T)``; top-p first sets the scores outside the nucleus to ``-inf``. Each row draws
    its noise from its own ``torch.Generator`` at every step, finished or not, so its stream
    never depends on other rows.

    Args:
        seeds: one seed per batch row.
        temperature: softmax temperature.
        top_p: nucleus mass; 1 disables the filter.
    """

    def __init__(self, seeds: Sequence[int], temperature: float = 1.0, top_p: float = 1.0) -> None:
        self.generators = [torch.Generator().manual_seed(int(s)) for s in seeds]
        self.temperature = temperature
        self.top_p = top_p

    def __call__(self, input_ids: torch.Tensor, scores: torch.Tensor) -> torch.Tensor:
        """``[B, V]`` scores -> ``[B, V]`` noisy log-probabilities whose argmax is the sample."""
        log_probs = torch.log_softmax(scores.float() / self.temperature, dim=-1)
        if self.top_p < 1.0:
            log_probs = nucleus_filter(log_probs, self.top_p)
        uniform = torch.stack(
            [torch.rand(scores.shape[-1], generator=g, dtype=torch.float64) for g in self.generators]
        )
        gumbel = -torch.log(-torch.log(uniform.clamp(min=1e-300)))  # float64: no 0 or 1 from rand
        # The noise is drawn on the host, so a seed gives the same samples on every device.
        return (log_probs.double() + gumbel.to(log_probs.device)).to(scores.device)


def nucleus_filter(log_probs: torch.Tensor, top_p: float) -> torch.Tensor:
    """Keep the smallest set of most likely tokens whose mass reaches ``top_p``; others get ``-inf``."""
    sorted_log_probs, order = torch.sort(log_probs, dim=-1, descending=True)
    mass_before = sorted_log_probs.exp().cumsum(dim=-1) - sorted_log_probs.exp()
    drop_sorted = mass_before >= top_p  # a token is kept if the mass above it is still short of top_p
    drop = torch.zeros_like(drop_sorted).scatter(-1, order, drop_sorted)
    return log_probs.masked_fill(drop, float("-inf"))


def load_policy(ref: str, dtype: str = "float32", trust_remote_code: bool = False,
                device: str | None = None) -> tuple[Any, Any, str]:
    """``(model, tokenizer, local_path)`` of a causal LM on ``device`` (``auto``: the accelerator if
    present; default: the host), the tokenizer set up for left padding."""
    from smorm.models.backbone import load_backbone

    backbone = load_backbone(ref, dtype=dtype, with_lm_head=True, trust_remote_code=trust_remote_code)
    tokenizer = backbone.tokenizer
    tokenizer.padding_side = "left"  # generation appends on the right: real tokens must end every row
    model = backbone.model.eval()
    if device is not None:
        model.to(resolve_device(device))
    return model, tokenizer, backbone.local_path


def eos_token_ids(model: Any, tokenizer: Any) -> list[int]:
    """Every id that ends a response: the model's generation eos ids and the tokenizer's eos."""
    configured = getattr(model.generation_config, "eos_token_id", None)
    ids = [configured] if isinstance(configured, int) else list(configured or [])
    if tokenizer.eos_token_id is not None and tokenizer.eos_token_id not in ids:
        ids.append(int(tokenizer.eos_token_id))
    if not ids:
        raise ValueError("the policy has no eos token id: responses could never end")
    return ids


def prefill_cache(model: Any, input_ids: torch.Tensor, attention_mask: torch.Tensor) -> Any:
    """The KV cache of every token but the last of left-padded prompts, as ``generate`` would build it
    (positions counted from each row's first real token); ``generate`` then runs the last token and
    samples. None when the prompts are a single token (nothing to cache)."""
    from transformers import DynamicCache

    if input_ids.shape[1] < 2:
        return None
    head_ids, head_mask = input_ids[:, :-1], attention_mask[:, :-1]
    positions = (head_mask.long().cumsum(-1) - 1).masked_fill(head_mask == 0, 1)
    cache = DynamicCache(config=model.config)
    model(input_ids=head_ids, attention_mask=head_mask, position_ids=positions, cache=cache,
          use_cache=True, logits_to_keep=1)
    return cache


def encode_prompt(tokenizer: Any, prompt: list[Message], max_prompt_tokens: int) -> list[int]:
    """Chat-template token ids of a prompt with the generation prompt; a long prompt keeps its end."""
    text = tokenizer.apply_chat_template(prompt, tokenize=False, add_generation_prompt=True)
    ids = tokenizer(text, add_special_tokens=False)["input_ids"]
    return list(ids[-max_prompt_tokens:])


@torch.no_grad()
def sample_responses(
    model: Any,
    tokenizer: Any,
    prompts: Sequence[list[Message]],
    config: SamplingConfig,
    sample_indices: Sequence[Sequence[int]] | None = None,
    share_prompt: bool = True,
) -> list[tuple[list[str], list[int], list[bool]]]:
    """Sample responses to several prompts in ONE left-padded ``generate`` call.

    Args:
        prompts: the prompts of the batch.
        sample_indices: for each prompt, which sample indices to draw (default ``0..N-1``); the
            index picks the response's random stream.
        share_prompt: encode each prompt once and copy its KV cache to its responses' rows (when
            every prompt draws as many responses), instead of a prefill of every row: the same
            samples (up to float rounding) for ``1/N`` of the prefill.
    Returns:
        Per prompt: ``(texts, token counts, finished)`` where ``finished`` is False for a response
        cut at ``max_new_tokens``.
    """
    from transformers import GenerationConfig, LogitsProcessorList

    if sample_indices is None:
        sample_indices = [range(config.num_samples)] * len(prompts)
    rows: list[list[int]] = []
    distinct: list[list[int]] = []
    seeds: list[int] = []
    owners: list[int] = []
    for p, (prompt, indices) in enumerate(zip(prompts, sample_indices)):
        ids = encode_prompt(tokenizer, prompt, config.max_prompt_tokens)
        distinct.append(ids)
        key = prompt_key(prompt)
        for j in indices:
            rows.append(ids)
            seeds.append(sample_seed(config.seed, key, int(j)))
            owners.append(p)
    eos = eos_token_ids(model, tokenizer)
    generation = GenerationConfig(
        max_new_tokens=config.max_new_tokens, do_sample=False, eos_token_id=eos,
        pad_token_id=tokenizer.pad_token_id, use_cache=True,
    )
    device = module_device(model)
    sizes = {len(indices) for indices in sample_indices}
    repeats = sizes.pop() if len(sizes) == 1 else 1
    if share_prompt and repeats > 1:
        # each prompt through the model once; its KV cache is copied to its responses' rows (issue 16)
        batch = tokenizer.pad({"input_ids": distinct}, padding=True, padding_side="left", return_tensors="pt")
        batch = {k: v.to(device) for k, v in batch.items()}
        cache = prefill_cache(model, batch["input_ids"], batch["attention_mask"])
        if cache is not None:
            cache.batch_repeat_interleave(repeats)
        batch = {k: v.repeat_interleave(repeats, dim=0) for k, v in batch.items()}
    else:
        batch = tokenizer.pad({"input_ids": rows}, padding=True, padding_side="left", return_tensors="pt")
        batch = {k: v.to(device) for k, v in batch.items()}
        cache = None
    output = model.generate(
        input_ids=batch["input_ids"], attention_mask=batch["attention_mask"], cache=cache,
        generation_config=generation,
        logits_processor=LogitsProcessorList([GumbelSampler(seeds, config.temperature, config.top_p)]),
    )
    new_tokens = output[:, batch["input_ids"].shape[1]:].cpu()
    results: list[tuple[list[str], list[int], list[bool]]] = [([], [], []) for _ in prompts]
    for row, owner in enumerate(owners):
        tokens = new_tokens[row].tolist()
        end = next((i for i, t in enumerate(tokens) if t in eos), None)
        kept = tokens if end is None else tokens[:end]
        texts, counts, finished = results[owner]
        texts.append(tokenizer.decode(kept, skip_special_tokens=True).strip())
        counts.append(len(kept))
        finished.append(end is not None)
    return results


# ------------------------------------------------------------------------------------ pool files


def pool_meta(policy: str, config: SamplingConfig, keys: list[str], dtype: str) -> dict[str, Any]:
    """What a pool's samples are a function of (checked on resume)."""
    return {"policy": policy, "dtype": dtype, "sampling": config.model_dump(), "prompt_keys": keys, "format_version": 1}


def _check_meta(meta_path: Path, meta: dict[str, Any]) -> None:
    if meta_path.is_file():
        existing = read_json(meta_path)
        for key in ("policy", "dtype", "sampling", "prompt_keys"):
            if existing.get(key) != meta.get(key):
                raise ValueError(
                    f"{meta_path}: the pool was started with a different {key} "
                    f"({json.dumps(existing.get(key))[:200]}); use another pool path or the same settings"
                )
        return
    atomic_write_json(meta_path, meta)


def generate_pool(
    policy: str,
    prompts: Sequence[PromptRecord],
    pool_path: str | os.PathLike[str],
    config: SamplingConfig,
    batch_rows: int = 32,
    dtype: str = "float32",
    loaded: tuple[Any, Any] | None = None,
    progress: Callable[[int, int], None] | None = None,
    device: str | None = None,
) -> list[PoolEntry]:
    """Fill ``pool_path`` with ``config.num_samples`` responses per prompt, resuming if it exists.

    Args:
        policy: the policy reference (recorded in the meta file; loaded unless ``loaded`` is given).
        prompts: the prompt set, in order.
        pool_path: the jsonl pool file, gzip-compressed if its name ends in ``.gz``
            (``<pool_path>.meta.json`` is written beside it).
        batch_rows: sequences per ``generate`` call: ``max(1, batch_rows // N)`` prompts at a time
            (a prompt whose N exceeds it is split into several calls).
        dtype: policy weight dtype.
        loaded: an already loaded ``(model, tokenizer)`` (tokenizer padding on the left).
        progress: called with ``(prompts done, prompts total)`` after each batch.
        device: where the policy samples (``auto``: the accelerator if present; default: the host).
    Returns:
        The complete pool, in prompt order.
    """
    path = Path(pool_path)
    keys = [prompt_key(p.prompt) for p in prompts]
    if len(set(keys)) != len(keys):
        raise ValueError("the prompt set has duplicate prompts; deduplicate it first")
    path.parent.mkdir(parents=True, exist_ok=True)
    _check_meta(path.with_name(path.name + META_SUFFIX), pool_meta(policy, config, keys, dtype))
    done = {e.key: e for e in read_pool(path)}
    unknown = set(done) - set(keys)
    if unknown:
        raise ValueError(f"{path}: holds {len(unknown)} prompt(s) not in this prompt set")
    rewrite_complete(path, list(done.values()))
    todo = [i for i, key in enumerate(keys) if key not in done]
    if todo:
        model, tokenizer = loaded if loaded is not None else load_policy(policy, dtype, device=device)[:2]
        per_call = max(1, batch_rows // config.num_samples)
        for start in range(0, len(todo), per_call):
            chunk = todo[start : start + per_call]
            entries = _sample_chunk(model, tokenizer, [prompts[i] for i in chunk], chunk, keys, config, batch_rows)
            append_pool_lines(path, [json.dumps(asdict(entry)) for entry in entries])  # fsynced
            done.update((entry.key, entry) for entry in entries)
            if progress is not None:
                progress(len(done), len(keys))
    return [done[key] for key in keys]


def _sample_chunk(
    model: Any, tokenizer: Any, records: list[PromptRecord], indices: list[int], keys: list[str],
    config: SamplingConfig, batch_rows: int,
) -> list[PoolEntry]:
    """Sample every response of a few prompts (one call, or several when N exceeds ``batch_rows``)."""
    if len(records) == 1 and config.num_samples > batch_rows:
        texts: list[str] = []
        counts: list[int] = []
        finished: list[bool] = []
        for first in range(0, config.num_samples, batch_rows):
            part = range(first, min(first + batch_rows, config.num_samples))
            (t, c, f), = sample_responses(model, tokenizer, [records[0].prompt], config, [part])
            texts += t
            counts += c
            finished += f
        results = [(texts, counts, finished)]
    else:
        results = sample_responses(model, tokenizer, [r.prompt for r in records], config)
    return [
        PoolEntry(index=i, key=keys[i], prompt=r.prompt, responses=t, response_tokens=c, finished=f,
                  category=r.category, origin=r.origin)
        for i, r, (t, c, f) in zip(indices, records, results)
    ]
