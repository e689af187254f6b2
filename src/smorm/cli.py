"""Command line: ``smorm train | score | validate | eval | ls | demo``; ``--help`` everywhere."""

from __future__ import annotations

import json
import sys
from pathlib import Path
from typing import Annotated

import typer

app = typer.Typer(add_completion=False, no_args_is_help=True,
                  help="Train, evaluate and serve reward models (SMORM and the methods it is compared with).")


def _fail(message: str) -> None:
    typer.secho(f"error: {message}", fg=typer.colors.RED, err=True)
    raise typer.Exit(2)


@app.command()
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
    result = run_training(run_config, show_progress=not quiet)
    if result.summary:
        typer.echo(f"model saved to {result.model_dir}  (steps {result.steps}, "
                   f"final loss {result.final_metrics.get('loss', float('nan')):.4f})")


@app.command()
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
                skipped = sum((report.get("skipped") or {}).values())
                typer.echo(f"  {report.get('kind')}: {report.get('source', '')} {report.get('path', '')}: "
                           f"{report.get('kept', '?')} records, {skipped} skipped")
            typer.echo(f"  {len(loaded.pairs)} pairs, {len(loaded.ratings)} rated responses, "
                       f"attributes: {', '.join(loaded.attributes) or '-'}")
            for bench in run_config.eval.benches:
                if not Path(bench.path).exists():
                    raise FileNotFoundError(f"eval.benches: {bench.kind} file not found: {bench.path}")
    except Exception as error:  # noqa: BLE001
        _fail(str(error))


@app.command()
def score(
    run: Annotated[Path, typer.Argument(help="run folder (or its model/ folder)")],
    input: Annotated[Path, typer.Argument(help="jsonl with prompt (text or messages) and response")],
    output: Annotated[Path | None, typer.Option("--output", "-o", help="write here instead of stdout")] = None,
    mode: Annotated[str | None, typer.Option(help="F, L or M (default: the model's)")] = None,
    batch_size: Annotated[int, typer.Option(help="sequences per forward pass")] = 16,
    bf16: Annotated[bool, typer.Option(help="bf16 autocast")] = False,
) -> None:
    """Score responses: jsonl in, jsonl out with the reward and every head (F, L, M, attributes)."""
    from smorm.models.reward_model import RewardModel

    model_dir = run / "model" if (run / "model").is_dir() else run
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
    model = RewardModel.from_pretrained(model_dir)
    scores = model.score(prompts, responses, mode=mode, batch_size=batch_size, autocast_bf16=bf16)
    lines = [json.dumps({**record, **row}) for record, row in zip(records, scores.rows())]
    text = "\n".join(lines) + ("\n" if lines else "")
    if output:
        from smorm.train.checkpoint import atomic_write_text

        atomic_write_text(output, text)
    else:
        sys.stdout.write(text)


@app.command(name="ls")
def list_registered() -> None:
    """List registered losses, heads, benchmarks, data formats and methods."""
    from smorm.catalog import catalog

    for section, rows in catalog().items():
        typer.secho(section, bold=True)
        width = max((len(name) for name, _ in rows), default=0)
        for name, description in rows:
            typer.echo(f"  {name.ljust(width)}  {description}")


@app.command()
def eval(  # noqa: A001 - the command is called eval
    run: Annotated[Path, typer.Argument(help="run folder, smorm model folder")],
    bench: Annotated[list[str], typer.Option("--bench", help="KIND:PATH[:LIMIT], e.g. rm-bench:data/rm-bench")],
    out: Annotated[Path | None, typer.Option(help="report folder (default: RUN)")] = None,
    sample: Annotated[int | None, typer.Option(help="score a seeded random N items of each benchmark")] = None,
    batch_size: Annotated[int, typer.Option()] = 16,
    bf16: Annotated[bool, typer.Option(help="bf16 autocast")] = False,
) -> None:
    """Evaluate every head on benchmarks; writes report.json, report.md and plots."""
    from smorm.eval.runner import evaluate_run, parse_bench

    try:
        benches = [parse_bench(spec) for spec in bench]
    except ValueError as error:
        _fail(str(error))
    for spec in benches:
        spec.sample = sample
    report = evaluate_run(run, benches, out_dir=out or run, batch_size=batch_size, bf16=bf16)
    typer.echo(report.table)
    typer.echo(f"report: {report.markdown_path}")


@app.command()
def demo(
    config: Annotated[Path, typer.Option(help="demo config")] = Path("configs/demo.yaml"),
    overrides: Annotated[list[str] | None, typer.Argument(help="key=value overrides")] = None,
) -> None:
    """Train SMORM on the shared data with the embedded backbone, evaluate F/L/M, print a report."""
    from smorm.demo import run_demo

    run_demo(config, overrides or [])


def main() -> None:
    app()


if __name__ == "__main__":
    main()
