"""``smorm synthetic CONFIG``: the reward-hacking lab where the gold is the truth (issue 16 item 2).

The setup of Gao et al. 2023 and Coste et al. 2024 (and GRM's RLHF experiments, which 000 Sec. 5.3
follows): the proxies learn the gold's own labels, so any fall of the gold score under optimisation
is over-optimisation by definition. Reads top to bottom, every step resumable:

1. **Plan**: every run config (gold, each proxy at each noise level) is built and validated first.
2. **Gold**: ``gold.config`` is trained into ``OUT/gold`` (skipped when finished with the same
   config; an interrupted run resumes from its checkpoints), or ``gold.path`` is used as it is.
3. **Labels**: ``smorm relabel`` of each pair source at each noise level, into
   ``OUT/labels/noise-P/NAME.jsonl`` (with the gold's ratings when a method reads them). The gold's
   scores are kept beside the first level's file and copied beside the others', so the gold scores
   every pair once; a rerun scores nothing.
4. **Proxies**: each method trained on the labels of each noise level (``OUT/runs/noise-P/NAME``:
   data.pairs = the first ``train`` relabelled pairs of each source; ``gold_ratings`` methods also get
   the gold's ratings of those pairs' responses, ``OUT/labels/train-ratings.jsonl``, read raw); a
   seed ensemble is written as a composite (``combine: uwo`` for Coste et al.'s UWO) and a Baseline
   SM from its two trained methods.
5. **Prompts**: ``id`` = a seeded sample of the sources' prompts past the first ``heldout_from`` records (default 2 x ``train``)
   (so no proxy trained on them whatever ties the relabelling drops; checked once the proxies are
   built); any other set is a prompt file (MT-Bench first turns for OOD); written to
   ``OUT/prompts/NAME.jsonl``. They do not depend on the gold, so ``--pools-only`` samples the pools
   first.
6. **Best-of-N**: ``smorm bon`` per prompt set and noise level (pool by pool) against the gold, all proxies on one
   pool per prompt set (``pools_dir/NAME.jsonl.gz``, default ``OUT/pools``; shared by the noise
   levels), into
   ``OUT/bon/noise-P/NAME/``; ``OUT/synthetic.json`` gathers what was done.
"""

from __future__ import annotations

import json
import logging
import re
import shutil
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from smorm.data.loading import load_pairs
from smorm.data.spec import DataSpec
from smorm.io import atomic_write, atomic_write_json, atomic_write_text
from smorm.models.composite import (
    COMPOSITE_NAME,
    member_paths,
    read_composite,
    write_baseline_sm,
    write_ensemble,
)
from smorm.models.devices import resolve_device, resolve_precision
from smorm.rlhf.lab import load_pool, run_bon
from smorm.rlhf.pools import prompt_key
from smorm.rlhf.prompts import config_sources, file_prompts, heldout_from_sources, trained_prompt_keys
from smorm.rlhf.relabel import relabel, sidecar
from smorm.rlhf.settings import BoNSettings, RelabelSettings, SyntheticConfig, SyntheticMethod
from smorm.run_config import DataSource, find_run_config, read_run_config
from smorm.settings import load_mapping, validate_settings
from smorm.study.settings import merge
from smorm.train import trainer
from smorm.train.config import RunConfig, load_config, resolve_path, resolve_paths
from smorm.train.ensemble import finished

logger = logging.getLogger(__name__)
SUMMARY_NAME = "synthetic.json"


def noise_tag(noise: float) -> str:
    return f"noise-{noise:g}"


def slug(text: str) -> str:
    return re.sub(r"[^A-Za-z0-9.=-]+", "-", text).strip("-").lower()


@dataclass
class Proxy:
    """One proxy at one noise level: trained runs (one, or one per ensemble seed) or a composite."""

    method: SyntheticMethod
    folder: Path
    runs: list[RunConfig] = field(default_factory=list)  # the members of an ensemble, or the one run


@dataclass
class Plan:
    """Every path and run config of a recipe, built before anything runs."""

    config: SyntheticConfig
    base_dir: Path  # the recipe file's folder: relative data and prompt paths are read from it
    out: Path
    gold_run: RunConfig | None
    gold_path: Path
    labels: dict[float, dict[str, Path]]  # noise -> source name -> relabelled pairs file
    ratings: Path | None  # the gold's ratings of the training pairs' responses
    proxies: dict[float, list[Proxy]]

    def gold_ref(self) -> str:
        mode = self.config.gold.mode
        return f"{self.gold_path}:{mode}" if mode else str(self.gold_path)

    def scoring_bf16(self) -> bool:
        """``scoring_precision`` resolved on the recipe's device: the gold's labels and the pools' scores."""
        return resolve_precision(self.config.scoring_precision, resolve_device(self.config.device)) == "bf16"


def load_synthetic(path: str | Path) -> tuple[SyntheticConfig, Path]:
    """The validated recipe and the folder its relative data paths are read from."""
    return validate_settings(SyntheticConfig, load_mapping(path), where=str(path)), Path(
        path
    ).resolve().parent


def plan(config: SyntheticConfig, base_dir: Path, where: str = "synthetic") -> Plan:
    """Every run config, validated (a typo fails here, before the gold trains for an hour)."""
    if "bf16" in config.bon:
        raise ValueError(f"{where}: bon.bf16: set scoring_precision instead (fp32, bf16 or auto); it decides the "
                         "gold's labelling and every Best-of-N scoring pass alike")
    out = Path(config.output_dir)
    gold_run = None
    gold_path = Path(config.gold.path) if config.gold.path else out / "gold"
    if config.gold.config is not None:
        gold_run = load_config(
            base_dir / config.gold.config, [*config.gold.overrides, f"output_dir={gold_path}"]
        )
    labels = {
        noise: {s.name: out / "labels" / noise_tag(noise) / f"{s.name}.jsonl" for s in config.pairs}
        for noise in config.noise
    }
    ratings = out / "labels" / "train-ratings.jsonl" if any(m.gold_ratings for m in config.methods) else None
    proxies: dict[float, list[Proxy]] = {}
    for noise in config.noise:
        root = out / "runs" / noise_tag(noise)
        pairs = [
            {
                "name": s.name,
                "path": str(labels[noise][s.name].resolve()),
                "format": "pairs",
                "limit": s.train,
            }
            for s in config.pairs
        ]
        proxies[noise] = []
        for method in config.methods:
            folder = root / slug(method.name)
            if method.baseline_sm is not None:
                proxies[noise].append(Proxy(method, folder))
                continue
            data: dict[str, Any] = {"pairs": pairs, "ratings": []}
            if method.gold_ratings:
                assert ratings is not None
                data.update(
                    ratings=[{"path": str(ratings.resolve()), "format": "ratings"}], rating_scale="raw"
                )
            tree = merge(merge(config.proxy_base, {"data": data}), method.config)
            tree.pop("eval", None)  # the recipe scores its proxies on the pools, not on benchmarks
            seeds = method.ensemble.seeds if method.ensemble is not None else [None]
            runs = []
            for seed in seeds:
                member = merge(tree, {"output_dir": str(folder if seed is None else folder / f"seed-{seed}")})
                if seed is not None:
                    member = merge(member, {"train": {"seed": seed}})
                resolve_paths(member, base_dir)
                runs.append(validate_settings(RunConfig, member, where=f"{where}: methods.{method.name}"))
            proxies[noise].append(Proxy(method, folder, runs))
    check_seeds(gold_run, gold_path, proxies, where)
    return Plan(config, base_dir, out, gold_run, gold_path, labels, ratings, proxies)


def check_seeds(
    gold_run: RunConfig | None, gold_path: Path, proxies: dict[float, list[Proxy]], where: str
) -> None:
    """Refuse a proxy with the gold's backbone and the gold's ``train.seed``.

    Its heads then start where the gold's started, and with a few dozen steps they barely move: in
    session 13 the trained BT proxy's head had cosine 0.97 with the gold's (SMORM's two heads 0.97 and
    0.99) at the gold's seed, and 0.01-0.10 at other seeds, and the same-seed proxies' Best-of-N gold
    gains were twice the others' (docs/reward-hacking.md, "The fair rerun"). Such a proxy is a near-copy
    of the gold, not a proxy of it. The gold's seed is read from its run config (``gold.config``, or the
    ``config.json`` of a ``gold.path`` run once it exists)."""
    if gold_run is None:
        if find_run_config(gold_path) is None:
            return
        gold_run = read_run_config(gold_path)
    for noise_proxies in proxies.values():
        for proxy in noise_proxies:
            for run in proxy.runs:
                if run.train.seed == gold_run.train.seed and run.model.backbone == gold_run.model.backbone:
                    raise ValueError(
                        f"{where}: methods.{proxy.method.name}: train.seed {run.train.seed} is the gold's "
                        "seed, with the gold's backbone: the proxy's heads would start where the gold's "
                        "started and stay close to them, making it a near-copy of the gold rather than a "
                        "proxy; give proxy_base.train (or the method) another seed"
                    )


# ---------------------------------------------------------------- steps


def train_if_needed(config: RunConfig, show_progress: bool, log: Callable[[str], None]) -> None:
    if finished(config):
        log(f"already trained: {config.output_dir}")
        return
    log(f"training {config.output_dir}")
    trainer.train(config, show_progress=show_progress)


def check_sources(plan: Plan) -> None:
    """Read every pair source as relabelling will (its ``on_error``), so a bad record stops the recipe
    here, naming file:line and field, rather than after the gold has trained; and each must hold more
    pairs than the proxies train on."""
    for source in plan.config.pairs:
        spec = DataSpec(path=resolve_path(source.path, plan.base_dir), format=source.format)
        pairs, report = load_pairs(spec, source.on_error)
        if len(pairs) <= source.train:
            raise ValueError(f"pairs.{source.name}: {spec.path}: {len(pairs)} valid pairs, not more than train "
                             f"({source.train}) ({report.summary()})")


def make_labels(plan: Plan, log: Callable[[str], None]) -> dict[str, Any]:
    """``smorm relabel`` of every source at every noise level; the gold scores each pair once."""
    config, report = plan.config, {}
    first = config.noise[0]
    for noise in config.noise:
        for source in config.pairs:
            out = plan.labels[noise][source.name]
            scores = sidecar(out, ".scores.safetensors")
            earlier = sidecar(plan.labels[first][source.name], ".scores.safetensors")
            if noise != first and earlier.is_file() and not scores.is_file():
                # keyed by the gold's weights and the token sequences: a stale copy is rescored, never used
                atomic_write(scores, lambda temporary, earlier=earlier: shutil.copyfile(earlier, temporary))
            ratings = sidecar(out, ".ratings.jsonl") if plan.ratings is not None else None
            result = relabel(
                RelabelSettings(
                    gold=str(plan.gold_path),
                    data=resolve_path(source.path, plan.base_dir),
                    format=source.format,
                    on_error=source.on_error,
                    out=out,
                    noise=noise,
                    seed=config.noise_seed,
                    tie_threshold=config.tie_threshold,
                    ratings=ratings,
                    mode=config.gold.mode,
                    device=config.device,
                    batch_size=config.relabel_batch_size,
                    precision=config.scoring_precision,  # relabel resolves it on config.device, as scoring_bf16 does
                )
            )
            log(
                f"labels {out}: {result.counts['kept']} pairs, {result.counts['flipped']} flipped, "
                f"{result.scored} sequences scored now"
            )
            if result.counts["kept"] <= source.train:
                raise ValueError(
                    f"pairs.{source.name}: {result.counts['kept']} pairs kept, not more than train "
                    f"({source.train}): no prompt is left for the in-distribution set"
                )
            report.setdefault(noise_tag(noise), {})[source.name] = {
                "file": str(out),
                "provenance": str(result.provenance),
                "scored_now": result.scored,
                **{k: result.counts[k] for k in ("pairs", "kept", "ties_dropped", "flipped")},
            }
    if plan.ratings is not None:
        write_train_ratings(plan)
    return report


def write_train_ratings(plan: Plan) -> None:
    """The gold's ratings of the responses of the pairs the proxies train on (never a held-out prompt's)."""
    noise = plan.config.noise[0]  # ratings do not depend on the noise: flips swap labels, not responses
    lines: list[str] = []
    for source in plan.config.pairs:
        pairs_file = plan.labels[noise][source.name]
        trained = set()
        for line in pairs_file.read_text().splitlines()[: source.train]:
            row = json.loads(line)
            prompt = json.dumps(row["prompt"], sort_keys=True)
            trained.update({(prompt, row["chosen"]), (prompt, row["rejected"])})
        for line in sidecar(pairs_file, ".ratings.jsonl").read_text().splitlines():
            row = json.loads(line)
            if (json.dumps(row["prompt"], sort_keys=True), row["response"]) in trained:
                lines.append(line)
    assert plan.ratings is not None
    atomic_write_text(plan.ratings, "".join(line + "\n" for line in lines))


def build_proxies(plan: Plan, show_progress: bool, log: Callable[[str], None]) -> None:
    """Train every proxy run, then write the ensembles and Baseline SMs (a composite that already says the
    same is not rewritten: the lab's score caches are keyed by its folder's files)."""
    for noise, proxies in plan.proxies.items():
        for proxy in proxies:
            for run in proxy.runs:
                train_if_needed(run, show_progress, log)
        by_name = {p.method.name: p for p in proxies}
        for proxy in proxies:
            ensemble = proxy.method.ensemble
            if ensemble is not None:
                members = [Path(run.output_dir) / "model" for run in proxy.runs]
                if not _same_composite(
                    proxy.folder, "ensemble", members, ensemble.combine, ensemble.mode, ensemble.uwo_lambda
                ):
                    write_ensemble(
                        proxy.folder,
                        members,
                        combine=ensemble.combine,
                        mode=ensemble.mode,
                        roles=[f"seed-{s}" for s in ensemble.seeds],
                        uwo_lambda=ensemble.uwo_lambda,
                    )
            elif proxy.method.baseline_sm is not None:
                sorm, morm = (Path(by_name[name].runs[0].output_dir) for name in proxy.method.baseline_sm)
                if not _same_composite(proxy.folder, "baseline_sm", [sorm, morm], "mean", None, None):
                    write_baseline_sm(proxy.folder, sorm, morm)
        log(f"{noise_tag(noise)}: {len(proxies)} proxies ready")


def _same_composite(
    folder: Path, kind: str, members: list[Path], combine: str, mode: str | None, uwo_lambda: float | None
) -> bool:
    if not (folder / COMPOSITE_NAME).is_file():
        return False
    spec = read_composite(folder)
    return (spec.kind, spec.combine, spec.mode, spec.uwo_lambda) == (
        kind,
        combine,
        mode,
        uwo_lambda,
    ) and member_paths(folder, spec) == [m.resolve() for m in members]


def proxy_refs(proxies: list[Proxy]) -> list[str]:
    """``FOLDER[:MODE]`` of every proxy curve (one per listed mode)."""
    refs = []
    for proxy in (p for p in proxies if p.method.curves):
        modes = proxy.method.modes or [None]
        refs += [str(proxy.folder) if mode is None else f"{proxy.folder}:{mode}" for mode in modes]
    return refs


def original_sources(plan: Plan) -> list[tuple[DataSource, int | None, str]]:
    """The recipe's pair sources as read before relabelling, each with the records reserved for training.

    The proxies train on the first ``train`` *relabelled* pairs, and relabelling drops ties, so those
    can reach a little past the first ``train`` original records; reserving ``heldout_from`` (default
    twice as many) keeps the in-distribution prompts independent of the gold (the pools can be sampled
    before it exists), and :func:`check_heldout` confirms it once the proxies' training data is known."""
    return [
        (DataSource(path=str(resolve_path(s.path, plan.base_dir)), format=s.format, name=s.name),
         s.heldout_from or 2 * s.train, "skip")
        for s in plan.config.pairs
    ]


def pool_paths(plan: Plan) -> dict[str, Path]:
    """Each prompt set's pool: ``pools_dir/NAME.jsonl.gz`` (relative to the recipe file) or ``OUT/pools``."""
    root = plan.out / "pools" if plan.config.pools_dir is None else resolve_path(plan.config.pools_dir, plan.base_dir)
    return {p.name: Path(root) / f"{p.name}.jsonl.gz" for p in plan.config.prompt_sets}


def write_prompt_sets(plan: Plan) -> dict[str, Path]:
    """Each prompt set as a prompt file, the same for every noise level (so one pool serves them all)."""
    bon = BoNSettings(**plan.config.bon, proxies=["proxy"], gold="gold")
    files = {}
    for prompt_set in plan.config.prompt_sets:
        if prompt_set.prompts == "id":
            records, _ = heldout_from_sources(original_sources(plan), prompt_set.num_prompts, bon.prompt_seed,
                                              bon.max_prompt_chars, where=f"{plan.out}: pairs")
        else:
            records, _ = file_prompts(
                resolve_path(prompt_set.prompts, plan.base_dir), prompt_set.num_prompts, bon.prompt_seed
            )
        path = plan.out / "prompts" / f"{prompt_set.name}.jsonl"
        text = "".join(json.dumps({"prompt": r.prompt, "category": r.category}) + "\n" for r in records)
        if not path.is_file() or path.read_text() != text:
            atomic_write_text(path, text)
        files[prompt_set.name] = path
    return files


def check_heldout(plan: Plan, prompt_files: dict[str, Path]) -> None:
    """Refuse an in-distribution prompt that some proxy trained on (see :func:`original_sources`)."""
    runs = [run for proxies in plan.proxies.values() for p in proxies for run in p.runs if run.data.pairs]
    trained = trained_prompt_keys(config_sources(runs))
    for prompt_set in plan.config.prompt_sets:
        if prompt_set.prompts != "id":
            continue
        path = prompt_files[prompt_set.name]
        for line, text in enumerate(path.read_text().splitlines(), 1):
            if prompt_key(json.loads(text)["prompt"]) in trained:
                raise ValueError(f"{path}:{line}: prompt: a proxy trained on this in-distribution prompt (relabelling "
                                 "dropped more ties than the records reserved: raise pairs[].heldout_from)")


def sample_pools(plan: Plan, prompt_files: dict[str, Path], log: Callable[[str], None]) -> dict[str, Path]:
    """Sample (or resume) every prompt set's pool; nothing here needs the gold or the proxies."""
    pools = pool_paths(plan)
    for name, prompts in prompt_files.items():
        settings = BoNSettings(**plan.config.bon, proxies=["proxy"], gold="gold", prompts=str(prompts),
                               num_prompts=len(prompts.read_text().splitlines()), pool=pools[name])
        log(f"pool {name}: {pools[name]}")
        load_pool(settings, pools[name], log)
    return pools


def run_synthetic(
    path: str | Path, show_progress: bool = True, log: Callable[[str], None] = logger.info,
    pools_only: bool = False,
) -> dict[str, Any]:
    """Run the whole recipe (see the module docstring); returns (and writes) ``OUT/synthetic.json``.

    ``pools_only``: write the prompt sets and sample their pools, nothing else (hours on a CPU, and
    independent of the gold and the proxies); returns the pools' paths."""
    config, base_dir = load_synthetic(path)
    recipe = plan(config, base_dir, where=str(path))
    if pools_only:
        return {"pools": {k: str(v) for k, v in sample_pools(recipe, write_prompt_sets(recipe), log).items()}}
    check_sources(recipe)  # before the gold trains: a bad record must not cost an hour
    if recipe.gold_run is not None:
        train_if_needed(recipe.gold_run, show_progress, log)
    elif not recipe.gold_path.exists():
        raise FileNotFoundError(f"{path}: gold.path {recipe.gold_path} not found")
    labels = make_labels(recipe, log)
    build_proxies(recipe, show_progress, log)
    prompt_files = write_prompt_sets(recipe)
    check_heldout(recipe, prompt_files)
    pools = pool_paths(recipe)
    bon: dict[str, dict[str, Any]] = {}
    # pool by pool, every noise level in turn: the pool's lower-layer states (the long part, ~20 min per
    # 8k responses on a 2-core CPU) are computed once and read while fresh, and an interrupted recipe
    # leaves whole pools done rather than one noise level's half
    for name, prompts in prompt_files.items():
        for noise, proxies in recipe.proxies.items():
            out = recipe.out / "bon" / noise_tag(noise) / name
            settings = BoNSettings(
                **config.bon,
                bf16=recipe.scoring_bf16(),
                proxies=proxy_refs(proxies),
                gold=recipe.gold_ref(),
                prompts=str(prompts),
                num_prompts=len(prompts.read_text().splitlines()),
                out_dir=out,
                pool=pools[name],
            )
            log(f"Best-of-N {noise_tag(noise)} {name}: {len(settings.proxies)} proxy curves")
            summary = run_bon(settings, log=log)
            bon.setdefault(noise_tag(noise), {})[name] = {
                "out": str(out),
                "pool": summary["settings"]["pool"],
                "drop_from_peak": summary["comparison"]["drop_from_peak"],
            }
    result = {
        "recipe": str(path),
        "gold": recipe.gold_ref(),
        "labels": labels,
        "proxies": {
            noise_tag(n): {p.method.name: str(p.folder) for p in ps} for n, ps in recipe.proxies.items()
        },
        "prompts": {name: str(p) for name, p in prompt_files.items()},
        "bon": bon,
        "references": ["Gao, Schulman, Hilton 2023", "Coste, Anwar, Kirk, Krueger 2024", "000 Sec. 5.3"],
    }
    atomic_write_json(recipe.out / SUMMARY_NAME, result, default=str)
    return result
