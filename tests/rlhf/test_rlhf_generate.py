"""Pool generation: seeded per-response sampling, batching independence, resume after a kill."""

from __future__ import annotations

import json
import math

import numpy as np
import pytest
import torch

from smorm.data.spec import PromptRecord
from smorm.rlhf.generate import (
    GumbelSampler,
    generate_pool,
    load_policy,
    nucleus_filter,
    read_pool,
    sample_responses,
)
from smorm.rlhf.settings import SamplingConfig


def test_nucleus_filter_keeps_the_smallest_set_reaching_top_p():
    probs = torch.tensor([[0.15, 0.5, 0.05, 0.3]])
    kept = nucleus_filter(probs.log(), top_p=0.75).exp()
    # Sorted: 0.5, 0.3 (mass 0.8 >= 0.75) -> keep those two only.
    assert torch.allclose(kept, torch.tensor([[0.0, 0.5, 0.0, 0.3]]))
    assert torch.allclose(nucleus_filter(probs.log(), top_p=1.0).exp(), probs)


def test_gumbel_sampler_draws_from_the_tempered_nucleus_distribution():
    logits = torch.tensor([2.0, 1.0, 0.0, -3.0])
    rows = 6000
    sampler = GumbelSampler(seeds=range(rows), temperature=0.5, top_p=0.99)
    picks = sampler(None, logits.repeat(rows, 1)).argmax(dim=-1).numpy()
    tempered = np.exp(2 * logits.numpy()) / np.exp(2 * logits.numpy()).sum()
    # softmax(z / 0.5) = [0.867, 0.117, 0.016, 0.00004]; top_p 0.99 drops the last token.
    kept = tempered[:3] / tempered[:3].sum()
    frequencies = np.bincount(picks, minlength=4) / rows
    assert frequencies[3] == 0.0
    for p, f in zip(kept, frequencies[:3]):
        assert abs(f - p) < 4 * math.sqrt(p * (1 - p) / rows)


def test_a_row_stream_depends_only_on_its_own_seed():
    scores = torch.randn(3, 50)
    alone = GumbelSampler([7])(None, scores[:1])
    together = GumbelSampler([7, 8, 9])(None, scores)
    assert torch.equal(alone[0], together[0])


PROMPTS = [PromptRecord([{"role": "user", "content": text}]) for text in ("Hi.", "Name a long river please.", "2+2?")]


@pytest.fixture(scope="module")
def policy(tiny_llama_dir):
    return load_policy(str(tiny_llama_dir))[:2]


def test_samples_do_not_depend_on_batching(tmp_path, tiny_llama_dir, policy):
    config = SamplingConfig(num_samples=3, max_new_tokens=6, seed=5)
    one_per_call = generate_pool(str(tiny_llama_dir), PROMPTS, tmp_path / "a.jsonl", config, batch_rows=3,
                                 loaded=policy)
    all_in_one = generate_pool(str(tiny_llama_dir), PROMPTS, tmp_path / "b.jsonl", config, batch_rows=9,
                               loaded=policy)
    split_samples = generate_pool(str(tiny_llama_dir), PROMPTS, tmp_path / "c.jsonl", config, batch_rows=2,
                                  loaded=policy)
    for a, b, c in zip(one_per_call, all_in_one, split_samples):
        assert a.responses == b.responses == c.responses
        assert len(a.responses) == 3 and all(0 <= n <= 6 for n in a.response_tokens)
    other_seed = generate_pool(str(tiny_llama_dir), PROMPTS, tmp_path / "d.jsonl",
                               SamplingConfig(num_samples=3, max_new_tokens=6, seed=6), loaded=policy)
    assert [e.responses for e in other_seed] != [e.responses for e in one_per_call]


def test_a_shared_prompt_prefill_gives_the_unshared_samples_from_one_row_per_prompt(policy):
    model, tokenizer = policy
    config = SamplingConfig(num_samples=4, max_new_tokens=5, seed=3)
    prompts = [p.prompt for p in PROMPTS]  # different lengths: left padding in the shared prefill too
    seen: list[tuple[int, int]] = []
    hook = model.get_input_embeddings().register_forward_hook(lambda _m, args, _o: seen.append(tuple(args[0].shape)))
    try:
        shared = sample_responses(model, tokenizer, prompts, config, share_prompt=True)
        first_shared = seen[0]
        seen.clear()
        unshared = sample_responses(model, tokenizer, prompts, config, share_prompt=False)
        first_unshared = seen[0]
    finally:
        hook.remove()
    assert shared == unshared
    assert first_shared[0] == 3 and first_unshared[0] == 12  # the prefill: one row per prompt, not per sample
    assert first_shared[1] == first_unshared[1] - 1  # everything but the last prompt token is cached
    assert any(len(set(texts)) > 1 for texts, _, _ in shared)  # really sampled


def test_pool_grows_line_by_line_and_resumes_after_a_kill(tmp_path, tiny_llama_dir, policy):
    config = SamplingConfig(num_samples=2, max_new_tokens=5, seed=1)
    full_path = tmp_path / "full.jsonl"
    seen: list[tuple[int, int]] = []
    generate_pool(str(tiny_llama_dir), PROMPTS, full_path, config, batch_rows=2, loaded=policy,
                  progress=lambda done, total: seen.append((done, total)))
    assert seen == [(1, 3), (2, 3), (3, 3)]  # one prompt per call here, appended as it completes
    lines = full_path.read_text().splitlines()
    assert [json.loads(line)["index"] for line in lines] == [0, 1, 2]

    # A run killed while writing its second line: one whole line and half of the next.
    killed = tmp_path / "killed.jsonl"
    killed.write_text(lines[0] + "\n" + lines[1][: len(lines[1]) // 2])
    (tmp_path / "killed.jsonl.meta.json").write_text((tmp_path / "full.jsonl.meta.json").read_text())
    assert [e.index for e in read_pool(killed)] == [0]
    generate_pool(str(tiny_llama_dir), PROMPTS, killed, config, batch_rows=6, loaded=policy)
    assert killed.read_text() == full_path.read_text()


def test_resume_refuses_other_settings_and_duplicates(tmp_path, tiny_llama_dir, policy):
    config = SamplingConfig(num_samples=2, max_new_tokens=4)
    generate_pool(str(tiny_llama_dir), PROMPTS[:1], tmp_path / "p.jsonl", config, loaded=policy)
    with pytest.raises(ValueError, match="different sampling"):
        generate_pool(str(tiny_llama_dir), PROMPTS[:1], tmp_path / "p.jsonl",
                      SamplingConfig(num_samples=2, max_new_tokens=4, temperature=0.7), loaded=policy)
    with pytest.raises(ValueError, match="duplicate"):
        generate_pool(str(tiny_llama_dir), PROMPTS[:1] * 2, tmp_path / "q.jsonl", config, loaded=policy)
    bad = tmp_path / "bad.jsonl"
    bad.write_text('{"index": 0}\n{"index": 1}\n')
    with pytest.raises(ValueError, match=r"bad.jsonl:1: not a pool entry"):
        read_pool(bad)
