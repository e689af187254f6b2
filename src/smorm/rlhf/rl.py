"""``smorm rl``: RLOO through TRL with a smorm proxy as the reward, the gold score tracked (000 Fig. 3).

The policy is optimised against the proxy only. Every ``gold_every`` steps a callback scores the
completions the proxy has just rewarded -- samples of the current policy -- with the gold, and
writes one row (step, proxy mean, gold mean, their s.e.m., TRL's KL and completion length when
logged) to ``rl.csv``; ``rl.png`` plots proxy and gold against the step, both 0 at the start, so a
proxy that climbs while the gold falls is reward hacking.

The training batches change prompt every step, so the question "did the policy raise its proxy, and
what did the gold do" is read on FIXED evaluation prompts instead: an in-distribution set (carved out
of the training prompts or ``eval_file``) and an out-of-distribution one (``ood_file``), each sampled
with the same random streams at every evaluation and compared per prompt with step 0
(``rl_eval.csv``, ``rl_eval_ood.csv``; the summary's ``eval_final`` gives the last change in s.e.m.).

TRL's RLOOTrainer rebuilds its reference model from the policy's folder, so the policy must be a
saved folder (an embedded short name resolves to its converted local folder). The paper's PPO runs
use no KL penalty (000 Table 10: KL regularisation 0.0), which is the default here (``beta=0``), and
4 optimisation epochs per batch (``num_iterations``; default 1, TRL's). Table 10 names no schedule
for PPO; smorm's default is a constant learning rate.
"""

from __future__ import annotations

import json
import logging
import math
import time
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

import numpy as np

from smorm.integrations.trl import SmormRewardFunction, to_prompt_response
from smorm.io import atomic_write_json
from smorm.models.reward_model import model_folder
from smorm.models.scorers import load_scorer
from smorm.rlhf.scorers import parse_scorer
from smorm.rlhf.settings import RLSettings
from smorm.types import Message

logger = logging.getLogger(__name__)


def score_texts(scorer: Any, mode: str | None, prompts: Sequence[list[Message]], responses: Sequence[str],
                batch_size: int = 16, autocast_bf16: bool = False) -> np.ndarray:
    """``[B]`` rewards of ``responses`` to ``prompts`` in ``mode`` (default: the model's), for any scorer
    with the ``score_token_ids`` surface (smorm, gated, composite or Hugging Face sequence classifier)."""
    from smorm.models.composite import score_responses
    from smorm.models.reward_model import reward_for_mode

    output = score_responses(scorer, prompts, responses, batch_size=batch_size, autocast_bf16=autocast_bf16)
    return reward_for_mode(output, mode or getattr(scorer.config, "mode", "F")).double().numpy()


class ProxyReward(SmormRewardFunction):
    """The proxy as a TRL reward function that remembers the batch it scored last.

    :class:`smorm.integrations.trl.SmormRewardFunction` (both TRL dataset formats, a model or a
    ``smorm serve`` URL) plus ``last_batch = (prompts, responses, rewards [B])``, which the gold
    callback scores.
    """

    last_batch: tuple[list[list[Message]], list[str], np.ndarray] | None = None

    def __call__(self, prompts: Sequence[Any], completions: Sequence[Any], **kwargs: Any) -> list[float]:
        rewards = super().__call__(prompts, completions, **kwargs)
        pairs = [to_prompt_response(p, c, i) for i, (p, c) in enumerate(zip(prompts, completions))]
        self.last_batch = ([p for p, _ in pairs], [r for _, r in pairs], np.asarray(rewards, dtype=np.float64))
        return rewards


def _sem(values: np.ndarray) -> float:
    return float(values.std(ddof=1) / math.sqrt(len(values))) if len(values) > 1 else 0.0


def append_samples(path: Path, step: int, prompts: Sequence[Any], texts: Sequence[str],
                   proxy_rewards: np.ndarray, gold_rewards: np.ndarray) -> None:
    """Append one jsonl line per scored completion (what the policy wrote, to read hacks)."""
    with open(path, "a") as handle:
        for prompt, text, p, g in zip(prompts, texts, proxy_rewards, gold_rewards, strict=True):
            handle.write(json.dumps({"step": step, "prompt": prompt, "completion": text,
                                     "proxy": float(p), "gold": float(g)}) + "\n")


def gold_tracker(proxy: ProxyReward, gold: Any, gold_mode: str | None, every: int, out_dir: Path,
                 title: str = "", log: Callable[[str], None] = logger.info) -> Any:
    """A TRL ``TrainerCallback`` that scores the proxy's last batch with the gold every ``every`` steps.

    Each row's ``step`` is the number of updates the sampling policy had received (0 = initial), with
    TRL's KL, completion length and ``step_time`` (seconds of that step: generation, proxy scoring and
    the update) and the wall-clock ``elapsed_s`` since training began. ``rl.csv`` is rewritten
    (atomically) after every row, ``rl.png`` when training ends; every scored completion is appended
    to ``rl_samples.jsonl`` with both scores.
    """
    from transformers import TrainerCallback

    from smorm.rlhf.plots import plot_rl, write_csv

    class GoldTracker(TrainerCallback):
        def __init__(self) -> None:
            self.rows: list[dict[str, Any]] = []
            self.started = time.time()

        def on_train_begin(self, args: Any, state: Any, control: Any, **kwargs: Any) -> None:
            self.started = time.time()

        def on_log(self, args: Any, state: Any, control: Any, logs: dict[str, float] | None = None,
                   **kwargs: Any) -> None:
            # The Trainer logs a step after its on_step_end: attach TRL's KL and length to that row.
            if self.rows and self.rows[-1]["step"] == state.global_step - 1 and logs:
                for key, name in (("kl", "kl"), ("completions/mean_length", "completion_tokens"),
                                  ("step_time", "step_time")):
                    if key in logs:
                        self.rows[-1][name] = float(logs[key])
                self.write()

        def on_step_end(self, args: Any, state: Any, control: Any, **kwargs: Any) -> None:
            step = state.global_step - 1  # the batch was sampled before this step's update
            if proxy.last_batch is None or step % every:
                return
            prompts, texts, proxy_rewards = proxy.last_batch
            gold_rewards = score_texts(gold, gold_mode, prompts, texts, proxy.batch_size, proxy.autocast_bf16)
            row = {"step": step, "proxy": float(proxy_rewards.mean()), "proxy_sem": _sem(proxy_rewards),
                   "gold": float(gold_rewards.mean()), "gold_sem": _sem(gold_rewards), "samples": len(texts),
                   "kl": float("nan"), "completion_tokens": float("nan"), "step_time": float("nan"),
                   "elapsed_s": round(time.time() - self.started, 1)}
            self.rows.append(row)
            log(f"step {step}: proxy {row['proxy']:+.3f}  gold {row['gold']:+.3f}")
            append_samples(out_dir / "rl_samples.jsonl", step, prompts, texts, proxy_rewards, gold_rewards)
            self.write()

        def on_train_end(self, args: Any, state: Any, control: Any, **kwargs: Any) -> None:
            self.write(plot=True)

        def write(self, plot: bool = False) -> None:
            if not self.rows:
                return
            keys = list(self.rows[0])
            write_csv(out_dir / "rl.csv", keys, [[r[k] for k in keys] for r in self.rows])
            if plot:  # a figure costs seconds on a busy CPU: once, at the end
                plot_rl(self.rows, out_dir / "rl.png", title=title)

    return GoldTracker()


def eval_tracker(proxy: ProxyReward, gold: Any, gold_mode: str | None, tokenizer: Any,
                 prompts: Sequence[list[Message]], every: int, max_new_tokens: int, temperature: float,
                 seed: int, out_dir: Path, title: str = "", log: Callable[[str], None] = logger.info,
                 name: str = "") -> Any:
    """A TRL ``TrainerCallback`` that samples the current policy on FIXED held-out prompts and scores
    the completions with proxy and gold, before training (step 0), after every ``every`` updates and
    after the last one. ``name`` tells the sets apart: ``rl_eval{name}.csv`` (``""`` for the
    in-distribution set, ``"_ood"`` for the out-of-distribution one).

    The training batches hold different prompts at every step, so their scores mostly measure the
    prompts; here every evaluation uses the same prompts and the same per-prompt random streams
    (:func:`smorm.rlhf.generate.sample_responses`, common random numbers), so the change from step 0,
    taken per prompt, measures the policy. Rows: mean proxy and gold, their per-prompt change from step 0
    with its paired s.e.m., and the seconds the evaluation took (``rl_eval{name}.csv``,
    ``rl_eval{name}.png``; texts in ``rl_eval{name}_samples.jsonl``).
    """
    from transformers import TrainerCallback

    from smorm.rlhf.generate import sample_responses
    from smorm.rlhf.plots import plot_rl, write_csv
    from smorm.rlhf.settings import SamplingConfig

    sampling = SamplingConfig(num_samples=1, max_new_tokens=max_new_tokens, temperature=temperature, seed=seed)
    prompts = list(prompts)

    class EvalTracker(TrainerCallback):
        def __init__(self) -> None:
            self.rows: list[dict[str, Any]] = []
            self.start: tuple[np.ndarray, np.ndarray] | None = None

        def evaluate(self, model: Any, step: int) -> None:
            if self.rows and self.rows[-1]["step"] == step:
                return
            started = time.time()
            was_training = model.training
            model.eval()
            texts = [texts[0] for texts, _, _ in sample_responses(model, tokenizer, prompts, sampling)]
            model.train(was_training)
            scores = (score_texts(proxy.model, proxy.mode, prompts, texts, proxy.batch_size, proxy.autocast_bf16),
                      score_texts(gold, gold_mode, prompts, texts, proxy.batch_size, proxy.autocast_bf16))
            if self.start is None:
                self.start = scores
            row: dict[str, Any] = {"step": step}
            for key, values, first in zip(("proxy", "gold"), scores, self.start, strict=True):
                row[f"{key}_mean"] = float(values.mean())
                row[key], row[f"{key}_sem"] = float((values - first).mean()), _sem(values - first)
            row["samples"] = len(texts)
            row["seconds"] = round(time.time() - started, 1)
            self.rows.append(row)
            log(f"eval{name} step {step}: proxy {row['proxy']:+.3f} ± {row['proxy_sem']:.3f}  "
                f"gold {row['gold']:+.3f} ± {row['gold_sem']:.3f} (change from step 0, fixed prompts)")
            append_samples(out_dir / f"rl_eval{name}_samples.jsonl", step, prompts, texts, *scores)
            keys = list(self.rows[0])
            write_csv(out_dir / f"rl_eval{name}.csv", keys, [[r[k] for k in keys] for r in self.rows])

        def on_train_begin(self, args: Any, state: Any, control: Any, model: Any = None, **kwargs: Any) -> None:
            self.evaluate(model, 0)

        def on_step_end(self, args: Any, state: Any, control: Any, model: Any = None, **kwargs: Any) -> None:
            if state.global_step % every == 0 or state.global_step == state.max_steps:
                self.evaluate(model, state.global_step)

        def on_train_end(self, args: Any, state: Any, control: Any, **kwargs: Any) -> None:
            if self.rows:
                plot_rl(self.rows, out_dir / f"rl_eval{name}.png", title=title, zero_window=False,
                        ylabel="change from step 0 (same prompts and random streams)")

    return EvalTracker()


def early_late_change(rows: Sequence[dict[str, Any]]) -> dict[str, dict[str, float]]:
    """Proxy and gold mean over the first and the last fifth of the tracked steps, and the change.

    Each step's batch holds different prompts, so a single step says little; the s.e.m. is over the
    window's per-step means (independent batches), and the change's s.e.m. combines the two.
    """
    window = max(1, len(rows) // 5)
    out: dict[str, dict[str, float]] = {}
    if len(rows) < 2 * window:
        return out
    for key in ("proxy", "gold"):
        first = np.asarray([r[key] for r in rows[:window]], dtype=np.float64)
        last = np.asarray([r[key] for r in rows[-window:]], dtype=np.float64)
        sem = [float(x.std(ddof=1) / math.sqrt(len(x))) if len(x) > 1 else 0.0 for x in (first, last)]
        out[key] = {"window": window, "first": float(first.mean()), "first_sem": sem[0], "last": float(last.mean()),
                    "last_sem": sem[1], "change": float(last.mean() - first.mean()),
                    "change_sem": math.hypot(*sem)}
    return out


EVAL_SETS = ("id", "ood")  # the fixed evaluation sets, in file-name order


def eval_suffix(set_name: str) -> str:
    """How a fixed evaluation set names its files and summary rows: ``rl_eval{suffix}.csv``,
    ``rl_eval{suffix}_samples.jsonl``, ``eval{suffix}_rows`` (``""`` for ``id``, ``"_ood"`` for ``ood``)."""
    return "" if set_name == "id" else f"_{set_name}"


def final_change(rows: Sequence[dict[str, Any]]) -> dict[str, float]:
    """The last evaluation's change from step 0 on the fixed prompts, in s.e.m. (``z``) for proxy and gold."""
    if len(rows) < 2:
        return {}
    last = rows[-1]
    out: dict[str, float] = {"step": last["step"]}
    for key in ("proxy", "gold"):
        out[key], out[f"{key}_sem"] = last[key], last[f"{key}_sem"]
        out[f"{key}_z"] = last[key] / last[f"{key}_sem"] if last[f"{key}_sem"] > 0 else float("nan")
    return out


def rloo_config(settings: RLSettings, bf16: bool = False) -> Any:
    """TRL ``RLOOConfig``: no checkpoints, no reporting, no gradient checkpointing; the policy on the
    device ``settings.device`` names (the host CPU unless it names or finds an accelerator), updates
    under bf16 autocast when ``bf16`` (fp32 master weights)."""
    from trl import RLOOConfig

    from smorm.models.devices import host_device, resolve_device

    return RLOOConfig(
        output_dir=str(Path(settings.out_dir) / "trainer"),
        max_steps=settings.steps,
        per_device_train_batch_size=settings.prompts_per_step * settings.num_generations,
        num_generations=settings.num_generations,
        num_iterations=settings.num_iterations,
        max_completion_length=settings.max_completion_length,
        learning_rate=settings.learning_rate,
        lr_scheduler_type=settings.lr_scheduler,
        beta=settings.beta,
        temperature=settings.temperature,
        seed=settings.seed,
        logging_steps=1,
        save_strategy="no",
        report_to=[],
        use_cpu=resolve_device(settings.device).type == host_device().type,
        bf16=bf16,
        gradient_checkpointing=False,
        disable_dropout=True,
        dataloader_num_workers=0,
    )


def rl_prompt_sets(settings: RLSettings, proxy_path: Path) -> tuple[list[Any], dict[str, list[Any]], dict[str, Any]]:
    """(training prompts, fixed evaluation sets ``{"id": ..., "ood": ...}``, report), disjoint by prompt.

    The in-distribution evaluation set is ``eval_file`` (at most ``eval_prompts`` of it) or, without
    one, the last ``eval_prompts`` of the training sample; ``ood_file`` gives the out-of-distribution
    set. Training prompts equal to an evaluation prompt are dropped before ``num_prompts`` are kept.
    """
    from smorm.rlhf.generate import prompt_key
    from smorm.rlhf.prompts import file_prompts, heldout_prompts

    sets: dict[str, list[Any]] = {}
    reports: dict[str, Any] = {}
    for name, path in (("id", settings.eval_file), ("ood", settings.ood_file)):
        if path is not None:
            sets[name], reports[name] = file_prompts(path, settings.eval_prompts or None, settings.prompt_seed)
    carve = settings.eval_prompts if settings.eval_file is None else 0
    wanted = settings.num_prompts + carve + sum(len(v) for v in sets.values())
    if settings.prompts == "id":
        prompts, report = heldout_prompts([settings.heldout_from or proxy_path], wanted, settings.prompt_seed,
                                          settings.max_prompt_chars)
    else:
        prompts, report = file_prompts(settings.prompts, wanted, settings.prompt_seed)
    if carve:
        if len(prompts) <= carve:
            raise ValueError(f"{len(prompts)} prompts available: too few for {carve} evaluation prompts and a "
                             "training set")
        sets = {"id": prompts[len(prompts) - carve:], **sets}
        prompts = prompts[: len(prompts) - carve]  # disjoint: the policy never trains on these
    held = {prompt_key(p.prompt) for v in sets.values() for p in v}
    kept = [p for p in prompts if prompt_key(p.prompt) not in held]
    report["dropped_as_eval_prompts"] = len(prompts) - len(kept)
    prompts = kept[: settings.num_prompts]
    if not prompts:
        raise ValueError("no training prompts left once the evaluation prompts are held out")
    report["training_prompts"] = len(prompts)
    report["eval_prompts"] = len(sets.get("id", []))
    report["eval_sets"] = {name: {"prompts": len(v), **reports.get(name, {"kind": "carved out of the training "
                                                                            "sample"})} for name, v in sets.items()}
    return prompts, sets, report


def run_rl(settings: RLSettings, log: Callable[[str], None] = logger.info) -> dict[str, Any]:
    """Train the policy with RLOO on the proxy, tracking the gold; returns (and writes) the summary."""
    from datasets import Dataset
    from transformers import AutoTokenizer
    from trl import RLOOTrainer

    from smorm.models.backbone import ensure_chat_template, ensure_pad_token, resolve_backbone
    from smorm.models.devices import resolve_device, resolve_precision

    if settings.num_generations < 2:
        raise ValueError("RLOO needs num_generations >= 2 (the leave-one-out baseline)")
    started = time.time()
    out = Path(settings.out_dir)
    reward_ref, gold_ref = parse_scorer(settings.reward), parse_scorer(settings.gold)
    for ref in (reward_ref, gold_ref):
        if not model_folder(ref.path).is_dir():
            raise FileNotFoundError(f"reward model folder not found: {ref.path}")
    policy_folder = resolve_backbone(settings.policy)  # TRL rebuilds the reference model from this path
    prompts, eval_sets, prompt_report = rl_prompt_sets(settings, reward_ref.path)
    bf16 = resolve_precision(settings.precision, resolve_device(settings.device)) == "bf16"
    out.mkdir(parents=True, exist_ok=True)
    for stale in ("rl_samples.jsonl", *(f"rl_eval{eval_suffix(n)}_samples.jsonl" for n in EVAL_SETS)):
        (out / stale).unlink(missing_ok=True)  # a new run, not a resume: start the logs afresh
    log(f"prompts: {len(prompts)} ({prompt_report['kind']}), fixed evaluation sets "
        f"{ {k: len(v) for k, v in eval_sets.items()} }; policy {policy_folder}; {'bf16' if bf16 else 'fp32'}")
    tokenizer = AutoTokenizer.from_pretrained(policy_folder, padding_side="left")
    ensure_pad_token(tokenizer)
    ensure_chat_template(tokenizer)
    proxy = ProxyReward(load_scorer(reward_ref.path, device=settings.device), mode=reward_ref.mode,
                        batch_size=settings.score_batch_size, name="proxy", autocast_bf16=bf16)
    title = f"RLOO on proxy {reward_ref.label}, gold {gold_ref.label} ({prompt_report['kind']})"
    gold_scorer = load_scorer(gold_ref.path, device=settings.device)
    tracker = gold_tracker(proxy, gold_scorer, gold_ref.mode, settings.gold_every, out, title, log)
    evals = {name: eval_tracker(
        proxy, gold_scorer, gold_ref.mode, tokenizer, [p.prompt for p in eval_set],
        settings.eval_every or settings.gold_every, settings.max_completion_length, settings.temperature,
        settings.seed, out, f"{title}: {len(eval_set)} fixed {name.upper()} prompts", log,
        name=eval_suffix(name)) for name, eval_set in eval_sets.items()}
    trainer = RLOOTrainer(
        model=policy_folder,
        reward_funcs=[proxy],
        args=rloo_config(settings, bf16=bf16),
        train_dataset=Dataset.from_list([{"prompt": p.prompt} for p in prompts]),
        processing_class=tokenizer,
        callbacks=[tracker, *evals.values()],
    )
    trainer.train()
    if settings.save_policy:
        trainer.save_model(str(out / "policy"))
    change = early_late_change(tracker.rows)
    for key, c in change.items():
        log(f"{key}: first {c['window']} steps {c['first']:+.3f} ± {c['first_sem']:.3f}, last {c['window']} "
            f"{c['last']:+.3f} ± {c['last_sem']:.3f}, change {c['change']:+.3f} ± {c['change_sem']:.3f}")
    finals = {name: final_change(e.rows) for name, e in evals.items()}
    for name, f in finals.items():
        if f:
            log(f"{name.upper()} fixed prompts, step {f['step']}: proxy {f['proxy']:+.3f} ± {f['proxy_sem']:.3f} "
                f"({f['proxy_z']:+.1f} s.e.m.), gold {f['gold']:+.3f} ± {f['gold_sem']:.3f} ({f['gold_z']:+.1f})")
    step_times = [float(r["step_time"]) for r in trainer.state.log_history if "step_time" in r]
    summary = {
        "settings": {**settings.model_dump(mode="json"), "policy_folder": policy_folder, "bf16": bf16},
        "prompts": prompt_report,
        "change": change,
        "eval_final": finals,
        "rows": tracker.rows,
        **{f"eval{eval_suffix(n)}_rows": evals[n].rows if n in evals else [] for n in EVAL_SETS},
        "cost": {"seconds_per_step": round(float(np.mean(step_times)), 2) if step_times else None,
                 "eval_seconds": round(sum(r["seconds"] for e in evals.values() for r in e.rows), 1)},
        "trl_log": trainer.state.log_history,
        "seconds": round(time.time() - started, 1),
    }
    atomic_write_json(out / "rl_summary.json", summary, default=str)
    return summary
