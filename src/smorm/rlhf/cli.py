"""``smorm bon`` and ``smorm rl``: the reward-hacking lab on the command line.

The flags, their help and defaults are generated from :class:`~smorm.rlhf.settings.BoNSettings` and
:class:`~smorm.rlhf.settings.RLSettings` (:mod:`smorm.cli_options`); registered in :mod:`smorm.cli`.
"""

from __future__ import annotations

import typer

from smorm.rlhf.settings import BoNSettings, RLSettings


def _threads(threads: int | None) -> None:
    if threads is not None:
        import torch

        torch.set_num_threads(threads)


def bon(settings: BoNSettings) -> None:
    """Best-of-N reward hacking: sample a pool with the policy, pick by each proxy, score the picks with
    the gold (expected value over all n-subsets), plot proxy and gold vs KL_BoN (000 Figs. 2–5, 7)."""
    from smorm.rlhf.lab import run_bon

    _threads(settings.threads)
    run_bon(settings, log=typer.echo)


def rl(settings: RLSettings) -> None:
    """RL reward hacking: RLOO (TRL) on a proxy reward, gold score tracked every k steps (000 Fig. 3).
    Needs TRL: pip install 'smorm\\[rl]'."""
    from smorm.rlhf.rl import run_rl

    _threads(settings.threads)
    summary = run_rl(settings, log=typer.echo)
    out = settings.out_dir
    typer.echo(f"wrote {out / 'rl.csv'}, {out / 'rl.png'} ({len(summary['rows'])} gold evaluations, "
               f"{summary['seconds']:.0f}s)")
