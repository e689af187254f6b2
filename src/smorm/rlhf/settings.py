"""Typed settings of the reward-hacking lab: the one place each option is documented.

``smorm bon`` and ``smorm rl`` take their ``--help`` text from the ``Attributes`` sections below
(:func:`smorm.rlhf.cli.field_help`). This module imports nothing heavy, so the CLI starts fast.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path


@dataclass
class SamplingConfig:
    """How responses are sampled (recorded in the pool's meta file).

    Attributes:
        num_samples: responses per prompt (N of the pool).
        max_new_tokens: longest response, in policy tokens.
        temperature: softmax temperature (> 0).
        top_p: nucleus sampling mass in (0, 1]; 1 keeps every token.
        seed: base seed; each response's stream is derived from it, the prompt and its index.
        max_prompt_tokens: longer rendered prompts keep their last tokens.
    """

    num_samples: int = 16
    max_new_tokens: int = 64
    temperature: float = 1.0
    top_p: float = 1.0
    seed: int = 0
    max_prompt_tokens: int = 512

    def __post_init__(self) -> None:
        if self.num_samples < 1 or self.max_new_tokens < 1 or self.max_prompt_tokens < 1:
            raise ValueError("num_samples, max_new_tokens and max_prompt_tokens must be >= 1")
        if self.temperature <= 0:
            raise ValueError(f"temperature must be > 0, got {self.temperature}")
        if not 0 < self.top_p <= 1:
            raise ValueError(f"top_p must be in (0, 1], got {self.top_p}")


# The judges' check: the two dev benchmarks, and UltraFeedback's held-out eval pairs -- a source every
# shipped proxy and gold trains on (configs/rlhf/*.yaml) whose eval split none of them sees, so the
# in-distribution question "is the gold the better judge of this kind of data?" is asked too.
DEFAULT_BENCHES = (
    "reward-bench:../shared/data/eval/reward-bench/filtered-first500.jsonl",
    "rm-bench:../shared/data/eval/rm-bench/chat_filtered.json",
    "pairs:../shared/data/pairs/ultrafeedback/binarized-eval-200.jsonl",
)


@dataclass
class BoNSettings:
    """Everything ``smorm bon`` does is a function of these (recorded in ``summary.json``).

    Attributes:
        policy: causal LM reference (embedded short name, folder, hub id, .gguf).
        proxies: ``PATH[:MODE]`` of each proxy reward model; PATH is a
            smorm run / model folder (MODE F, L, M, or G for a gated model from ``smorm gate``; default:
            the model's own mode), an ensemble / Baseline SM folder, or a Hugging Face sequence
            classifier folder (mode F).
        gold: ``PATH[:MODE]`` of the gold reward model; PATH is a
            smorm run / model folder (MODE F, L, M, or G for a gated model from ``smorm gate``; default:
            the model's own mode), an ensemble / Baseline SM folder, or a Hugging Face sequence
            classifier folder (mode F).
        prompts: ``id`` (held out from the proxies' own D_S) or a prompt / data file.
        out_dir: where the pool, scores, CSVs, PNGs and summary go.
        num_prompts: prompts sampled from the set (seeded).
        prompt_seed: seed of that sample.
        sampling: how the policy samples (N per prompt, tokens, temperature, top-p, seed).
        pool: the pool file (default ``out_dir/pool.jsonl``); reused and resumed when it exists.
        attribute_model: ``PATH`` of the model whose multi head rates the picks (default: the
            gold if it has a multi head, else each proxy's own).
        grid_points: at most this many values of n on the curves.
        batch_rows: sequences per generate call.
        score_batch_size: sequences per scoring forward pass.
        bf16: bf16 autocast when scoring.
        policy_dtype: policy weight dtype.
        benches: ``KIND:PATH[:LIMIT]`` dev benchmarks for the judges' accuracy table ([] to skip).
        bench_sample: seeded random items per benchmark.
        max_prompt_chars: skip longer in-distribution prompts (keeps generation cheap).
    """

    policy: str
    proxies: list[str]
    gold: str
    prompts: str
    out_dir: Path
    num_prompts: int = 16
    prompt_seed: int = 0
    sampling: SamplingConfig = field(default_factory=SamplingConfig)
    pool: Path | None = None
    attribute_model: str | None = None
    grid_points: int = 30
    batch_rows: int = 32
    score_batch_size: int = 16
    bf16: bool = False
    policy_dtype: str = "float32"
    benches: list[str] = field(default_factory=lambda: list(DEFAULT_BENCHES))
    bench_sample: int | None = 100
    max_prompt_chars: int | None = 1500


@dataclass
class RLSettings:
    """Everything ``smorm rl`` does is a function of these (recorded in ``rl_summary.json``).

    Attributes:
        policy: causal LM folder or embedded short name (resolved to a local folder for TRL).
        reward: ``PATH[:MODE]`` of the proxy reward model the policy is trained on; PATH is a
            smorm run / model folder (MODE F, L, M, or G for a gated model from ``smorm gate``; default:
            the model's own mode), an ensemble / Baseline SM folder, or a Hugging Face sequence
            classifier folder (mode F).
        gold: ``PATH[:MODE]`` of the gold reward model (tracked, never trained on); PATH is a
            smorm run / model folder (MODE F, L, M, or G for a gated model from ``smorm gate``; default:
            the model's own mode), an ensemble / Baseline SM folder, or a Hugging Face sequence
            classifier folder (mode F).
        prompts: ``id`` (held out from the proxy's own D_S) or a prompt / data file.
        out_dir: output folder (``rl.csv``, ``rl.png``, ``rl_summary.json``, TRL's files).
        num_prompts: prompts sampled from the set (seeded).
        prompt_seed: seed of that sample.
        steps: optimizer steps.
        num_generations: completions per prompt (RLOO's leave-one-out baseline needs >= 2).
        prompts_per_step: prompts per step (the batch is prompts_per_step * num_generations).
        max_completion_length: tokens per completion.
        learning_rate: AdamW learning rate (000 Table 10: 1e-5 for PPO).
        beta: KL coefficient to the initial policy (Table 10: 0).
        temperature: sampling temperature.
        gold_every: score the current batch with the gold every k steps.
        eval_prompts: held-out prompts (disjoint from the training prompts) on which the current
            policy is sampled every ``gold_every`` steps with fixed random streams and scored by proxy
            and gold (``rl_eval.csv``, ``rl_eval.png``); 0 turns it off.
        seed: TRL seed.
        score_batch_size: sequences per reward-model forward pass.
        save_policy: also save the trained policy to ``out_dir/policy``.
        max_prompt_chars: skip longer in-distribution prompts.
    """

    policy: str
    reward: str
    gold: str
    prompts: str
    out_dir: Path
    num_prompts: int = 64
    prompt_seed: int = 0
    steps: int = 20
    num_generations: int = 4
    prompts_per_step: int = 2
    max_completion_length: int = 48
    learning_rate: float = 1e-5
    beta: float = 0.0
    temperature: float = 1.0
    gold_every: int = 1
    eval_prompts: int = 0
    seed: int = 0
    score_batch_size: int = 16
    save_policy: bool = False
    max_prompt_chars: int | None = 1500
