"""``smorm bon`` and ``smorm rl``: the reward-hacking lab on the command line.

Option help comes from the ``Attributes`` sections of :class:`~smorm.rlhf.lab.BoNSettings`,
:class:`~smorm.rlhf.rl.RLSettings` and :class:`~smorm.rlhf.generate.SamplingConfig`, so each
option is documented once. Registered in :mod:`smorm.cli`.
"""

from __future__ import annotations

import inspect
import re
from pathlib import Path
from typing import Annotated

import typer

from smorm.rlhf.settings import DEFAULT_BENCHES, BoNSettings, RLSettings, SamplingConfig


def field_help(cls: type) -> dict[str, str]:
    """``{field: help}`` from the ``Attributes:`` section of a dataclass docstring."""
    doc = inspect.getdoc(cls) or ""
    section = doc.split("Attributes:", 1)[1] if "Attributes:" in doc else ""
    helps: dict[str, str] = {}
    names: list[str] = []
    for line in section.splitlines():
        match = re.match(r"^\s{4}([\w, ]+): (.*)$", line)
        if match:
            names = [n.strip() for n in match.group(1).split(",")]
            for name in names:
                helps[name] = match.group(2).strip()
        elif line.startswith(" " * 8) and names:
            for name in names:
                helps[name] += " " + line.strip()
    # Typer renders help with rich markup: "[x]" would be read as a style tag, and ``x`` is reST.
    return {name: text.replace("``", "").replace("[", "\\[") for name, text in helps.items()}


BON = {**field_help(SamplingConfig), **field_help(BoNSettings)}
RL = field_help(RLSettings)


def _threads(threads: int | None) -> None:
    if threads is not None:
        import torch

        torch.set_num_threads(threads)


def _fail(message: str) -> None:
    typer.secho(f"error: {message}", fg=typer.colors.RED, err=True)
    raise typer.Exit(2)


THREADS_HELP = "torch CPU threads (1 is fastest on a busy shared machine)"


def bon(
    proxy: Annotated[list[str], typer.Option("--proxy", help=BON["proxies"] + " (repeat the option)")],
    gold: Annotated[str, typer.Option(help=BON["gold"])],
    policy: Annotated[str, typer.Option(help=BON["policy"])] = "smollm2-135m-instruct",
    prompts: Annotated[str, typer.Option(help=BON["prompts"])] = "id",
    out: Annotated[Path, typer.Option(help=BON["out_dir"])] = Path("runs/bon"),
    n: Annotated[int, typer.Option("--n", help=BON["num_samples"])] = 16,
    num_prompts: Annotated[int, typer.Option(help=BON["num_prompts"])] = 16,
    prompt_seed: Annotated[int, typer.Option(help=BON["prompt_seed"])] = 0,
    max_new_tokens: Annotated[int, typer.Option(help=BON["max_new_tokens"])] = 64,
    temperature: Annotated[float, typer.Option(help=BON["temperature"])] = 1.0,
    top_p: Annotated[float, typer.Option(help=BON["top_p"])] = 1.0,
    seed: Annotated[int, typer.Option(help=BON["seed"])] = 0,
    pool: Annotated[Path | None, typer.Option(help=BON["pool"])] = None,
    attribute_model: Annotated[str | None, typer.Option(help=BON["attribute_model"])] = None,
    grid_points: Annotated[int, typer.Option(help=BON["grid_points"])] = 30,
    batch_rows: Annotated[int, typer.Option(help=BON["batch_rows"])] = 32,
    batch_size: Annotated[int, typer.Option(help=BON["score_batch_size"])] = 16,
    bf16: Annotated[bool, typer.Option(help=BON["bf16"])] = False,
    policy_dtype: Annotated[str, typer.Option(help=BON["policy_dtype"])] = "float32",
    bench: Annotated[list[str] | None, typer.Option("--bench", help=BON["benches"] + f" (default: {', '.join(DEFAULT_BENCHES)})")] = None,
    no_bench: Annotated[bool, typer.Option("--no-bench", help="skip the judges' benchmark table")] = False,
    bench_sample: Annotated[int, typer.Option(help=BON["bench_sample"])] = 100,
    max_prompt_chars: Annotated[int, typer.Option(help=BON["max_prompt_chars"])] = 1500,
    threads: Annotated[int | None, typer.Option(help=THREADS_HELP)] = None,
) -> None:
    """Best-of-N reward hacking: sample a pool with the policy, pick by each proxy, score the picks with
    the gold (expected value over all n-subsets), plot proxy and gold vs KL_BoN (000 Figs. 2–5, 7)."""
    from smorm.rlhf.lab import run_bon

    _threads(threads)
    try:
        settings = BoNSettings(
            policy=policy, proxies=list(proxy), gold=gold, prompts=prompts, out_dir=out, num_prompts=num_prompts,
            prompt_seed=prompt_seed,
            sampling=SamplingConfig(num_samples=n, max_new_tokens=max_new_tokens, temperature=temperature,
                                    top_p=top_p, seed=seed),
            pool=pool, attribute_model=attribute_model, grid_points=grid_points, batch_rows=batch_rows,
            score_batch_size=batch_size, bf16=bf16, policy_dtype=policy_dtype,
            benches=[] if no_bench else list(bench or DEFAULT_BENCHES), bench_sample=bench_sample,
            max_prompt_chars=max_prompt_chars,
        )
        run_bon(settings, log=typer.echo)
    except (ValueError, FileNotFoundError) as error:
        _fail(str(error))


def rl(
    reward: Annotated[str, typer.Option(help=RL["reward"])],
    gold: Annotated[str, typer.Option(help=RL["gold"])],
    policy: Annotated[str, typer.Option(help=RL["policy"])] = "smollm2-135m-instruct",
    prompts: Annotated[str, typer.Option(help=RL["prompts"])] = "id",
    out: Annotated[Path, typer.Option(help=RL["out_dir"])] = Path("runs/rl"),
    num_prompts: Annotated[int, typer.Option(help=RL["num_prompts"])] = 64,
    prompt_seed: Annotated[int, typer.Option(help=RL["prompt_seed"])] = 0,
    steps: Annotated[int, typer.Option(help=RL["steps"])] = 20,
    num_generations: Annotated[int, typer.Option(help=RL["num_generations"])] = 4,
    prompts_per_step: Annotated[int, typer.Option(help=RL["prompts_per_step"])] = 2,
    max_completion_length: Annotated[int, typer.Option(help=RL["max_completion_length"])] = 48,
    lr: Annotated[float, typer.Option(help=RL["learning_rate"])] = 1e-5,
    beta: Annotated[float, typer.Option(help=RL["beta"])] = 0.0,
    temperature: Annotated[float, typer.Option(help=RL["temperature"])] = 1.0,
    gold_every: Annotated[int, typer.Option(help=RL["gold_every"])] = 1,
    eval_prompts: Annotated[int, typer.Option(help=RL["eval_prompts"])] = 0,
    seed: Annotated[int, typer.Option(help=RL["seed"])] = 0,
    batch_size: Annotated[int, typer.Option(help=RL["score_batch_size"])] = 16,
    save_policy: Annotated[bool, typer.Option(help=RL["save_policy"])] = False,
    max_prompt_chars: Annotated[int, typer.Option(help=RL["max_prompt_chars"])] = 1500,
    threads: Annotated[int | None, typer.Option(help=THREADS_HELP)] = None,
) -> None:
    """RL reward hacking: RLOO (TRL) on a proxy reward, gold score tracked every k steps (000 Fig. 3).
    Needs TRL: pip install 'smorm\\[rl]'."""
    from smorm.rlhf.rl import run_rl

    _threads(threads)
    try:
        settings = RLSettings(
            policy=policy, reward=reward, gold=gold, prompts=prompts, out_dir=out, num_prompts=num_prompts,
            prompt_seed=prompt_seed, steps=steps, num_generations=num_generations,
            prompts_per_step=prompts_per_step, max_completion_length=max_completion_length, learning_rate=lr,
            beta=beta, temperature=temperature, gold_every=gold_every, eval_prompts=eval_prompts, seed=seed, score_batch_size=batch_size,
            save_policy=save_policy, max_prompt_chars=max_prompt_chars,
        )
        summary = run_rl(settings, log=typer.echo)
    except (ValueError, FileNotFoundError) as error:
        _fail(str(error))
    typer.echo(f"wrote {out / 'rl.csv'}, {out / 'rl.png'} ({len(summary['rows'])} gold evaluations, "
               f"{summary['seconds']:.0f}s)")
