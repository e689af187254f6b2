"""Best-of-N differences between proxies trained with several seeds, read against the seeds' spread.

``python -m smorm.rlhf.seed_report OUT/summary.json --group bt=bt,bt-s1,bt-s2 --group
smorm-F=smorm:F,smorm-s1:F,smorm-s2:F --reference bt`` reads one ``smorm bon`` summary (every curve on
the same pool) and writes ``seed_report.md`` and ``seed_report.json`` beside it.

A group is one method trained with S seeds; its members are curve labels, matched on the last part of
the curve's ``FOLDER[:MODE]`` (``bt-s1``, ``smorm-s1:F``). Groups are paired with the reference group
member by member (seed k against seed k), so every group lists as many members as the reference.

At each chosen n, per group:

- the gold score of the pick (0 at n = 1) averaged over seeds and prompts;
- per seed k, the paired difference against the reference's seed k, mean over prompts;
- their mean over seeds, its s.e.m. over seeds and a 95% Student-t interval with S - 1 degrees of
  freedom: the spread a new training seed brings, which the prompt s.e.m. of one seed's curve cannot
  show (a difference of two single-seed curves can be several prompt s.e.m. from 0 and still change
  sign with the seed);
- the s.e.m. over prompts of the seed-averaged per-prompt difference: the spread a new prompt set
  brings.

"Established" here (our rule; the papers give none) means both: the seed interval excludes 0 and the
mean is more than 2 prompt s.e.m. from 0. With 3 seeds the t quantile is 4.30, so only a difference
large against the seed spread passes; a "not established" is a statement about this many seeds.
"""

from __future__ import annotations

import argparse
import json
import logging
import math
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np

from smorm.io import atomic_write_json, atomic_write_text

logger = logging.getLogger(__name__)


def curve_name(label: str) -> str:
    """``runs/x/noise-0.25/smorm-s1:F`` -> ``smorm-s1:F``: the part a group names."""
    folder, mode = label, ""
    head, sep, tail = label.rpartition(":")
    if sep and "/" not in tail:
        folder, mode = head, tail
    name = Path(folder.rstrip("/")).name
    if name == "model":  # a run's model folder: the run is the name
        name = Path(folder.rstrip("/")).parent.name
    return f"{name}:{mode}" if mode else name


def parse_group(text: str) -> tuple[str, list[str]]:
    """``NAME=MEMBER,MEMBER,...``."""
    name, sep, members = text.partition("=")
    parts = [m.strip() for m in members.split(",") if m.strip()]
    if not sep or not name.strip() or not parts:
        raise ValueError(f"--group {text!r}: expected NAME=MEMBER,MEMBER,... (curve names such as bt-s1 or smorm:F)")
    return name.strip(), parts


def _t975(dof: int) -> float:
    from scipy.stats import t

    return float(t.ppf(0.975, dof))


def seed_rows(
    curves: Sequence[dict[str, Any]], groups: dict[str, list[str]], reference: str, ns: Sequence[int],
    where: str = "the summary",
) -> list[dict[str, Any]]:
    """One row per (group, n); see the module docstring. ``curves`` are the summary's ``curves``."""
    by_name: dict[str, dict[str, Any]] = {}
    for curve in curves:
        by_name.setdefault(curve_name(curve["proxy"]), curve)
    if reference not in groups:
        raise ValueError(f"--reference {reference!r} is not one of the groups {sorted(groups)}")
    for group, members in groups.items():
        missing = [m for m in members if m not in by_name]
        if missing:
            raise ValueError(f"{where}: group {group!r} names curves {missing} it does not hold "
                             f"(its curves: {sorted(by_name)})")
        if len(members) != len(groups[reference]):
            raise ValueError(f"group {group!r} has {len(members)} members, the reference {reference!r} "
                             f"{len(groups[reference])}: seeds are paired member by member")
    grid = by_name[groups[reference][0]]["n"]
    if any(by_name[m]["n"] != grid for ms in groups.values() for m in ms):
        raise ValueError(f"{where}: the curves were not computed on one grid of n")
    seeds = len(groups[reference])
    rows = []
    for n in ns:
        g = int(np.argmin([abs(x - n) for x in grid]))
        ref = np.stack([np.asarray(by_name[m]["gold_by_prompt"], dtype=float)[:, g] for m in groups[reference]])
        for group, members in groups.items():
            gold = np.stack([np.asarray(by_name[m]["gold_by_prompt"], dtype=float)[:, g] for m in members])  # [S, P]
            row: dict[str, Any] = {"group": group, "n": grid[g], "kl": by_name[members[0]]["kl"][g],
                                   "seeds": seeds, "prompts": gold.shape[1], "gold": float(gold.mean())}
            if group != reference:
                diff = gold - ref  # [S, P], seed k against the reference's seed k, prompt by prompt
                per_seed = diff.mean(axis=1)
                mean = float(per_seed.mean())
                sem_seeds = float(per_seed.std(ddof=1) / math.sqrt(seeds)) if seeds > 1 else float("nan")
                half = _t975(seeds - 1) * sem_seeds if seeds > 1 else float("nan")
                by_prompt = diff.mean(axis=0)
                sem_prompts = float(by_prompt.std(ddof=1) / math.sqrt(len(by_prompt)))
                row.update({
                    "per_seed": [float(x) for x in per_seed], "diff": mean, "sem_seeds": sem_seeds,
                    "interval": [mean - half, mean + half], "sem_prompts": sem_prompts,
                    "established": bool(seeds > 1 and abs(mean) > half and abs(mean) > 2 * sem_prompts),
                })
            rows.append(row)
    return rows


def markdown(rows: Sequence[dict[str, Any]], reference: str) -> str:
    head = (f"| group | n (KL) | gold of the pick | vs {reference}, per seed | mean | s.e.m. over seeds | "
            "95% t interval | s.e.m. over prompts | established |\n|---|---|---|---|---|---|---|---|---|")
    lines = [head]
    for r in rows:
        cells = [r["group"], f"{r['n']} ({r['kl']:.2f})", f"{r['gold']:+.3f}"]
        if "diff" in r:
            cells += [", ".join(f"{x:+.3f}" for x in r["per_seed"]), f"{r['diff']:+.3f}", f"{r['sem_seeds']:.3f}",
                      f"[{r['interval'][0]:+.3f}, {r['interval'][1]:+.3f}]", f"{r['sem_prompts']:.3f}",
                      "yes" if r["established"] else "no"]
        else:
            cells += ["(reference)", "", "", "", "", ""]
        lines.append("| " + " | ".join(cells) + " |")
    return "\n".join(lines) + "\n"


def write_report(summary_path: Path, groups: dict[str, list[str]], reference: str, ns: Sequence[int]) -> list[dict[str, Any]]:
    summary = json.loads(Path(summary_path).read_text())
    rows = seed_rows(summary["curves"], groups, reference, ns, where=str(summary_path))
    out = Path(summary_path).parent
    atomic_write_json(out / "seed_report.json", {"summary": str(summary_path), "reference": reference,
                                                 "groups": groups, "rows": rows})
    atomic_write_text(out / "seed_report.md", markdown(rows, reference))
    logger.info("wrote %s", out / "seed_report.md")
    return rows


def main(argv: Sequence[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("summary", type=Path, help="a `smorm bon` summary.json")
    parser.add_argument("--group", action="append", required=True, help="NAME=MEMBER,MEMBER,... (one per seed)")
    parser.add_argument("--reference", default="bt", help="the group every other is paired against")
    parser.add_argument("--n", type=int, nargs="+", default=[15, 62, 256], help="n of the rows (nearest grid point)")
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(message)s")
    try:
        groups = dict(parse_group(g) for g in args.group)
        rows = write_report(args.summary, groups, args.reference, args.n)
    except ValueError as error:
        parser.error(str(error))
    logger.info("%s", markdown(rows, args.reference))


if __name__ == "__main__":
    main()
