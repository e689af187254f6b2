"""``smorm bon``, ``smorm rl`` and ``smorm relabel``: the reward-hacking lab on the command line.

The flags, their help and defaults are generated from :class:`~smorm.rlhf.settings.BoNSettings`,
:class:`~smorm.rlhf.settings.RLSettings` and :class:`~smorm.rlhf.settings.RelabelSettings`
(:mod:`smorm.cli_options`); registered in :mod:`smorm.cli`.
"""

from __future__ import annotations

import typer

from smorm.rlhf.settings import BoNSettings, RelabelSettings, RLSettings


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


def relabel(settings: RelabelSettings, quiet: bool = False) -> None:
    """Gold labels for a data set: score every pair with GOLD, write a pairs file whose chosen is the gold's
    winner (margin: the gold's |reward difference|), ties dropped, a seeded fraction of labels flipped
    (--noise), optionally the gold's attribute predictions as ratings (--ratings); provenance in
    OUT.provenance.json. Resumable: the gold's scores are kept in OUT.scores.safetensors (Gao et al. 2023,
    Coste et al. 2024, GRM's obtain_gold_score.py)."""
    from smorm.rlhf.relabel import relabel as run_relabel

    result = run_relabel(settings, show_progress=not quiet)
    counts = result.counts
    typer.echo(f"wrote {result.out}: {counts['kept']} of {counts['pairs']} pairs ({counts['ties_dropped']} ties "
               f"dropped, {counts['flipped']} flipped; {result.scored} sequences scored now, "
               f"{counts['sequences'] - result.scored} read from the score file)")
    if result.ratings is not None:
        typer.echo(f"wrote {result.ratings}: {counts['responses']} rated responses")
    typer.echo(f"provenance: {result.provenance}")
