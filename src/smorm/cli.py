"""Command line: ``smorm train | score | validate | eval | relabel | ls | demo`` …; ``--help`` everywhere."""

from __future__ import annotations

import inspect
import json
import os
import sys
from pathlib import Path
from typing import Annotated

import typer
from rich.markup import escape

from smorm.cli_options import settings_command
from smorm.eval.settings import EvalSettings
from smorm.gating.settings import GateSettings
from smorm.io import atomic_write_text
from smorm.rlhf import cli as rlhf_cli
from smorm.rlhf.settings import BoNSettings, RelabelSettings, RLSettings
from smorm.run_config import find_run_config, read_run_config
from smorm.serve.settings import ServeCommand
from smorm.settings import DEVICE_HELP, describe_fields

app = typer.Typer(add_completion=False, no_args_is_help=True,
                  help="Train, evaluate and serve reward models (SMORM and the methods it is compared with).")


@app.callback()
def configure(
    log_level: Annotated[str, typer.Option(
        envvar="SMORM_LOG_LEVEL",
        help="smorm's messages on stderr: debug, info, warning or error (serve's --log-level is uvicorn's)")] = "info",
) -> None:
    """Runs before every command: the CLI, not the library, decides where log messages go."""
    from smorm.logs import setup_logging

    try:
        setup_logging(log_level)
    except ValueError as error:
        raise typer.BadParameter(str(error), param_hint="--log-level") from None


def _fail(message: str) -> None:
    typer.secho(f"error: {message}", fg=typer.colors.RED, err=True)
    raise typer.Exit(2)


def _config_keys() -> str:
    """Every run-config key with its default and help: the epilog of ``train`` and ``validate``."""
    from smorm.train.config import RunConfig

    rows = [f"{key} = {default}: {text}" if text else f"{key} = {default}"
            for key, default, text in describe_fields(RunConfig)]
    return escape("Config keys (YAML file, or KEY=VALUE overrides with YAML values):\n\n" + "\n\n".join(rows))


@app.command(epilog=_config_keys())
def train(
    config: Annotated[Path, typer.Argument(help="YAML run config (see configs/)")],
    overrides: Annotated[list[str] | None, typer.Argument(help="key=value overrides, e.g. train.lr=1e-5")] = None,
    quiet: Annotated[bool, typer.Option(help="no progress bars")] = False,
) -> None:
    """Train a reward model as CONFIG says; resumes from the run folder's latest checkpoint."""
    from smorm.train.config import load_config
    from smorm.train.trainer import train as run_training

    try:
        run_config = load_config(config, overrides or [])
    except Exception as error:  # noqa: BLE001 - shown to the user as is
        _fail(str(error))
    from smorm.data.errors import DataError  # the data package loads torch: not at CLI start

    try:
        result = run_training(run_config, show_progress=not quiet)
    except DataError as error:  # found before any model loads; shown as the validate command shows it
        _fail(str(error))
    if result.summary:
        typer.echo(f"model saved to {result.model_dir}  (steps {result.steps}, "
                   f"final loss {result.final_metrics.get('loss', float('nan')):.4f})")


@app.command(epilog=_config_keys())
def validate(
    config: Annotated[Path, typer.Argument(help="YAML run config")],
    overrides: Annotated[list[str] | None, typer.Argument(help="key=value overrides")] = None,
    data: Annotated[bool, typer.Option(help="also read and validate every data file")] = True,
) -> None:
    """Check a config (and its data) without loading a model."""
    from smorm.train.config import load_config
    from smorm.train.prepare import load_training_data

    try:
        run_config = load_config(config, overrides or [])
        typer.echo(f"{config}: config OK (method {run_config.method}, losses "
                   f"{', '.join(loss.name for loss in run_config.losses)})")
        if data:
            loaded = load_training_data(run_config)
            for report in loaded.reports:
                if report.get("kind") == "note":
                    for note in report.get("notes") or []:
                        typer.echo(f"  note: {note}")
                    continue
                skipped = report.get("skipped") or {}
                why = f" ({'; '.join(f'{reason}: {n}' for reason, n in skipped.items())})" if skipped else ""
                typer.echo(f"  {report.get('kind')}: {report.get('source', '')} {report.get('path', '')}: "
                           f"{report.get('kept', '?')} records, {sum(skipped.values())} skipped{why}")
            typer.echo(f"  {len(loaded.pairs)} pairs, {len(loaded.ratings)} rated responses, "
                       f"attributes: {', '.join(loaded.attributes) or '-'}")
            for bench in run_config.eval.benches:
                if not Path(bench.path).exists():
                    raise FileNotFoundError(f"eval.benches: {bench.kind} file not found: {bench.path}")
    except Exception as error:  # noqa: BLE001
        _fail(str(error))


@app.command()
def score(
    run: Annotated[Path, typer.Argument(help="run folder, its model/ folder, or an ensemble / Baseline SM folder")],
    input: Annotated[Path, typer.Argument(help="jsonl with prompt (text or messages) and response")],
    output: Annotated[Path | None, typer.Option("--output", "-o", help="write here instead of stdout")] = None,
    mode: Annotated[str | None, typer.Option(help="F, L, M or G (default: the model's)")] = None,
    batch_size: Annotated[int, typer.Option(help="sequences per forward pass")] = 16,
    bf16: Annotated[bool, typer.Option(help="bf16 autocast")] = False,
    device: Annotated[str, typer.Option(help=DEVICE_HELP)] = "auto",
) -> None:
    """Score responses: jsonl in, jsonl out with the reward and every head (F, L, M, attributes)."""
    from smorm.models.scorers import load_scorer

    prompts, responses, records = [], [], []
    with open(input) as handle:
        for number, line in enumerate(handle, 1):
            if not line.strip():
                continue
            try:
                record = json.loads(line)
            except json.JSONDecodeError as error:
                _fail(f"{input}:{number}: not JSON ({error.msg})")
            for field in ("prompt", "response"):
                if field not in record:
                    _fail(f"{input}:{number}: field {field!r} missing")
            if not isinstance(record["response"], str):
                _fail(f"{input}:{number}: field 'response' must be a string")
            prompts.append(record["prompt"])
            responses.append(record["response"])
            records.append(record)
    try:
        model = load_scorer(run, device=device, hf=False)
    except (FileNotFoundError, ValueError) as error:
        _fail(str(error))
    scores = model.score(prompts, responses, mode=mode, batch_size=batch_size, autocast_bf16=bf16)
    lines = [json.dumps({**record, **row}) for record, row in zip(records, scores.rows())]
    text = "\n".join(lines) + ("\n" if lines else "")
    if output:
        atomic_write_text(output, text)
    else:
        sys.stdout.write(text)


def _split_seeds(seeds: list[str], rest: list[str]) -> tuple[list[int], list[str]]:
    """``--seeds 0 1 2``: click gives the option its first value; bare integers after it are seeds too."""
    values = [part for text in seeds for part in text.split(",") if part]
    while rest and rest[0].lstrip("-").isdigit():
        values.append(rest.pop(0))
    try:
        return [int(v) for v in values], rest
    except ValueError:
        _fail(f"--seeds takes integers, got {values}")
        raise


@app.command()
def ensemble(
    config: Annotated[Path, typer.Argument(help="YAML run config of the member method (see configs/)")],
    overrides: Annotated[list[str] | None, typer.Argument(help="key=value overrides for every member")] = None,
    seeds: Annotated[list[str], typer.Option("--seeds", help="member seeds, e.g. --seeds 0 1 2")] = ["0", "1", "2"],  # noqa: B006
    combine: Annotated[str, typer.Option(
        help="mean | min | uwo of the members' rewards (uwo: mean - λ·variance, Coste et al. 2024 Sec. 3)")] = "mean",
    uwo_lambda: Annotated[float | None, typer.Option(
        "--uwo-lambda", help="λ >= 0 of --combine uwo, the weight of the members' variance (required by uwo)")] = None,
    mode: Annotated[str | None, typer.Option(help="members' mode before a min or uwo (default: theirs)")] = None,
    out: Annotated[Path | None, typer.Option(help="ensemble folder (default: OUTPUT_DIR-ensemble)")] = None,
    quiet: Annotated[bool, typer.Option(help="no progress bars")] = False,
) -> None:
    """Train CONFIG once per seed into OUT/seed-<s> and write the ensemble folder OUT (mean, min or uwo)."""
    from smorm.models.composite import check_combine
    from smorm.train.ensemble import member_configs, train_ensemble

    seed_list, rest = _split_seeds(seeds, list(overrides or []))
    try:
        check_combine(combine, uwo_lambda, "--combine/--uwo-lambda")
        member_configs(config, seed_list, rest, out)  # every member's config is checked before any training
    except Exception as error:  # noqa: BLE001 - shown to the user as is
        _fail(str(error))
    folder = train_ensemble(config, seed_list, rest, combine=combine, mode=mode, out=out,
                            show_progress=not quiet, uwo_lambda=uwo_lambda)
    typer.echo(f"ensemble of {len(seed_list)} ({combine}) written to {folder}  (score it with: smorm score {folder} …)")


@app.command()
def study(
    config: Annotated[Path, typer.Argument(help="YAML study config (see configs/study/)")],
    quiet: Annotated[bool, typer.Option(help="no progress bars")] = False,
) -> None:
    """Train every (method, seed) of CONFIG, score each on its benchmarks, write study.md and study.json.

    Resumable: a finished run is not trained again, an interrupted one resumes from its checkpoints,
    and a run's benchmark scores are kept (RUN/study-scores.safetensors).
    """
    from smorm.study.runner import load_study, plan_runs, run_study

    try:
        study_config, base_dir = load_study(config)
        plan_runs(study_config, base_dir, where=str(config))  # every run's config checked before training
    except Exception as error:  # noqa: BLE001 - shown to the user as is
        _fail(str(error))
    from smorm.data.errors import DataError

    try:
        out = run_study(config, show_progress=not quiet, command=f"smorm study {config}")
    except DataError as error:
        _fail(str(error))
    typer.echo(f"study written to {out / 'study.md'}")


@app.command()
def synthetic(
    config: Annotated[Path, typer.Argument(help="YAML recipe (see configs/synthetic/)")],
    quiet: Annotated[bool, typer.Option(help="no progress bars")] = False,
    pools_only: Annotated[bool, typer.Option(help="only write the prompt sets and sample (or resume) their pools: "
                                             "they need neither the gold nor the proxies")] = False,
) -> None:
    """The synthetic-gold lab (Gao et al. 2023, Coste et al. 2024): train the gold, relabel the pairs at each
    noise level, train every proxy on the labels, run Best-of-N against the gold ID and OOD.

    Resumable: finished runs are not trained again, the gold's scores and the pools are kept.
    """
    from smorm.rlhf.synthetic import load_synthetic, plan, run_synthetic

    try:
        recipe, base_dir = load_synthetic(config)
        plan(recipe, base_dir, where=str(config))  # every run config checked before anything trains
    except Exception as error:  # noqa: BLE001 - shown to the user as is
        _fail(str(error))
    result = run_synthetic(config, show_progress=not quiet, log=typer.echo, pools_only=pools_only)
    if pools_only:
        typer.echo("pools done: " + ", ".join(result["pools"].values()))
        return
    typer.echo(f"recipe done: {Path(recipe.output_dir) / 'synthetic.json'}")


@app.command()
def combine(
    out: Annotated[Path, typer.Argument(help="folder to write the Baseline SM composite to")],
    sorm: Annotated[Path, typer.Option(help="SORM run or model folder (its single head: F)")],
    morm: Annotated[Path, typer.Option(help="MORM run or model folder (its attribute head: L)")],
) -> None:
    """Write a Baseline SM folder: a SORM and a MORM scored separately and averaged (mode M)."""
    from smorm.models.composite import write_baseline_sm

    try:
        path = write_baseline_sm(out, sorm, morm)
    except (FileNotFoundError, ValueError) as error:
        _fail(str(error))
    typer.echo(f"Baseline SM written to {path.parent}  (modes: F = SORM, L = MORM, M = their mean)")


@app.command(name="ls")
def list_registered() -> None:
    """List registered losses, heads, benchmarks, data formats and methods."""
    from smorm.catalog import catalog

    for section, rows in catalog().items():
        typer.secho(section, bold=True)
        width = max((len(name) for name, _ in rows), default=0)
        for name, description in rows:
            typer.echo(f"  {name.ljust(width)}  {description}")


def eval_command(settings: EvalSettings, quiet: bool = False) -> None:
    """Evaluate every head (F, L, M, G) on benchmarks; writes report.json, report.md and plots/ and prints a table.

    Without --bench, the benchmarks are the run's own eval.benches (from RUN/config.json)."""
    from smorm.eval.runner import BenchSpec, evaluate_run, parse_bench

    specs = [parse_bench(text) for text in settings.benches]
    config_path = find_run_config(settings.run)
    if not specs and config_path is not None:
        specs = [BenchSpec(**bench.model_dump()) for bench in read_run_config(settings.run).eval.benches]
    if not specs and not settings.theory:
        where = (f"RUN has no eval.benches in {config_path}" if config_path is not None
                 else f"{settings.run} is not a training run with a config.json of its own")
        raise ValueError(f"nothing to evaluate: give --bench KIND:PATH (repeatable) and/or --theory ({where})")
    if settings.sample is not None:
        for spec in specs:
            spec.sample, spec.seed = settings.sample, settings.seed
    run = settings.run
    out = settings.out or (Path(run) if Path(run).is_dir() else Path("runs") / "eval" / run.replace("/", "__"))
    report = evaluate_run(run, specs, out_dir=out, batch_size=settings.batch_size, bf16=settings.bf16,
                          show_progress=not quiet, hf=settings.hf, max_length=settings.max_length,
                          theory=settings.theory, theory_sample=settings.theory_sample,
                          theory_seed=settings.theory_seed, theory_ridge=settings.theory_ridge,
                          modes=list(settings.modes) or None, on_error=settings.on_error,
                          device=settings.device)
    typer.echo(report.table)
    typer.echo(f"report: {report.markdown_path}")


def gate_command(settings: GateSettings, quiet: bool = False) -> None:
    """ArmoRM stage 2 on any trained model: features, optional ridge stage 1, verbosity debiasing, gate (mode G)."""
    from smorm.gating.pipeline import run_gating

    report = run_gating(settings.run, settings.pairs, settings, out=settings.out, show_progress=not quiet)
    for row in report.get("debias", {}).get("attributes", []):
        typer.echo(f"  debias {row['attribute']}: λ = {row['lambda']:.4f}, Spearman with verbosity "
                   f"{row['spearman_before']:+.3f} -> {row['spearman_after']:+.3f}")
    gate_report = report["gate"]
    typer.echo(f"  β {gate_report['beta_initial']:.2f} -> {gate_report['beta_final']:.2f}; "
               f"{gate_report['train_pairs']} training pairs, {gate_report['epochs']} epochs")
    for name, value in gate_report["validation_accuracy"].items():
        if name != "G_loss":
            typer.echo(f"  held-out accuracy {name}: {100 * value:.1f}%")
    typer.echo(f"gated model saved to {report['saved_to']} (report: gating.json in that folder)")


QUIET = inspect.Parameter("quiet", inspect.Parameter.KEYWORD_ONLY, default=False,
                          annotation=Annotated[bool, typer.Option(help="no progress bars")])
settings_command(app, "eval", EvalSettings, eval_command, arguments=("run",), extra=(QUIET,))
settings_command(app, "gate", GateSettings, gate_command, arguments=("run",), extra=(QUIET,))


@app.command()
def demo(
    config: Annotated[Path, typer.Option(help="demo config")] = Path("configs/demo.yaml"),
    overrides: Annotated[list[str] | None, typer.Argument(help="key=value overrides")] = None,
) -> None:
    """Train SMORM on the shared data with the embedded backbone, evaluate F/L/M, print a report."""
    from smorm.demo import run_demo

    run_demo(config, overrides or [])


def serve_command(settings: ServeCommand) -> None:
    """Serve a reward model (run, model, composite or Hugging Face classifier folder) over HTTP: POST /score,
    POST /get_reward (OpenRLHF), GET /health, GET /info.

    The bearer token is best given as the SMORM_SERVE_TOKEN variable (a flag shows in the process list)."""
    from smorm.serve.app import run_server
    from smorm.serve.settings import ServeSettings

    values = settings.model_dump(exclude={"run", "log_level", "hf"})
    if values["token"] is None and os.environ.get("SMORM_SERVE_TOKEN"):
        values["token"] = os.environ["SMORM_SERVE_TOKEN"]
    served = ServeSettings(**values)  # validated here, the token from the environment too
    try:
        run_server(str(settings.run), served, log_level=settings.log_level, hf=settings.hf)
    except ImportError as error:
        raise ValueError(f"{error}; install the server extra: pip install 'smorm[serve]'") from None


settings_command(app, "serve", ServeCommand, serve_command, arguments=("run",))


@app.command()
def export(
    run: Annotated[Path, typer.Argument(help="run folder or smorm model folder")],
    out: Annotated[Path, typer.Argument(help="folder to write the AutoModelForSequenceClassification to")],
    mode: Annotated[str, typer.Option(help="F, L or M: which reward the exported score layer gives")] = "F",
    tolerance: Annotated[float, typer.Option(help="largest allowed |exported - smorm| score on the probes")] = 1e-4,
) -> None:
    """Export one mode as a plain Hugging Face sequence-classification model (vLLM, TRL, RewardBench)."""
    from smorm.models.export import ExportError, export_run

    try:
        meta = export_run(run, out, mode=mode, tolerance=tolerance)
    except (ExportError, FileNotFoundError, FileExistsError) as error:
        _fail(str(error))
    pad = meta["pad"]
    typer.echo(f"exported mode {mode} to {out} (max |exported - smorm| on probes {meta['probe_max_abs_deviation']:.1e}; "
               f"pad token {pad['token']!r}{' (changed: ' + pad['reason'] + ')' if pad['changed'] else ''})")


# The reward-hacking lab (Best-of-N and RL against a gold); its module imports only typed settings.
settings_command(app, "bon", BoNSettings, rlhf_cli.bon)
settings_command(app, "rl", RLSettings, rlhf_cli.rl)
settings_command(app, "relabel", RelabelSettings, rlhf_cli.relabel, arguments=("gold",), extra=(QUIET,))


def main() -> None:
    app()


if __name__ == "__main__":
    main()
