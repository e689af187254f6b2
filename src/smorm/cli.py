"""Command line: ``smorm train | score | validate | eval | ls | demo``; ``--help`` everywhere."""

from __future__ import annotations

import json
import sys
from pathlib import Path
from typing import Annotated

import typer

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
    run: Annotated[Path, typer.Argument(help="run folder, its model/ folder, or an ensemble / Baseline SM folder")],
    input: Annotated[Path, typer.Argument(help="jsonl with prompt (text or messages) and response")],
    output: Annotated[Path | None, typer.Option("--output", "-o", help="write here instead of stdout")] = None,
    mode: Annotated[str | None, typer.Option(help="F, L, M or G (default: the model's)")] = None,
    batch_size: Annotated[int, typer.Option(help="sequences per forward pass")] = 16,
    bf16: Annotated[bool, typer.Option(help="bf16 autocast")] = False,
) -> None:
    """Score responses: jsonl in, jsonl out with the reward and every head (F, L, M, attributes)."""
    from smorm.models.composite import load_scorer

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
        model = load_scorer(run)
    except (FileNotFoundError, ValueError) as error:
        _fail(str(error))
    scores = model.score(prompts, responses, mode=mode, batch_size=batch_size, autocast_bf16=bf16)
    lines = [json.dumps({**record, **row}) for record, row in zip(records, scores.rows())]
    text = "\n".join(lines) + ("\n" if lines else "")
    if output:
        from smorm.train.checkpoint import atomic_write_text

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
    combine: Annotated[str, typer.Option(help="mean | min of the members' rewards")] = "mean",
    mode: Annotated[str | None, typer.Option(help="members' mode before a min (default: theirs)")] = None,
    out: Annotated[Path | None, typer.Option(help="ensemble folder (default: OUTPUT_DIR-ensemble)")] = None,
    quiet: Annotated[bool, typer.Option(help="no progress bars")] = False,
) -> None:
    """Train CONFIG once per seed into OUT/seed-<s> and write the ensemble folder OUT (mean or min)."""
    from smorm.train.ensemble import member_configs, train_ensemble

    seed_list, rest = _split_seeds(seeds, list(overrides or []))
    try:
        member_configs(config, seed_list, rest, out)  # every member's config is checked before any training
    except Exception as error:  # noqa: BLE001 - shown to the user as is
        _fail(str(error))
    folder = train_ensemble(config, seed_list, rest, combine=combine, mode=mode, out=out,
                            show_progress=not quiet)
    typer.echo(f"ensemble of {len(seed_list)} ({combine}) written to {folder}  (score it with: smorm score {folder} …)")


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


@app.command()
def eval(  # noqa: A001 - the command is called eval
    run: Annotated[str, typer.Argument(help="run folder, smorm model folder, or a Hugging Face sequence-"
                                             "classification reward model (folder or hub id)")],
    bench: Annotated[list[str] | None, typer.Option(
        "--bench", help="KIND:PATH[:LIMIT] with KIND reward-bench | rm-bench | pairs | ranked; repeatable")] = None,
    out: Annotated[Path | None, typer.Option(help="report folder (default: RUN, or runs/eval/ID for a hub id)")] = None,
    sample: Annotated[int | None, typer.Option(help="score a seeded random N items of each benchmark")] = None,
    seed: Annotated[int, typer.Option(help="seed of --sample")] = 0,
    batch_size: Annotated[int, typer.Option(min=1, help="sequences per forward pass")] = 16,
    bf16: Annotated[bool, typer.Option(help="bf16 autocast (faster; rewards then vary slightly with batch size)")] = False,
    mode: Annotated[list[str] | None, typer.Option(help="only these modes (default: every mode the model has)")] = None,
    hf: Annotated[bool | None, typer.Option(
        "--hf/--smorm", help="RUN is a Hugging Face AutoModelForSequenceClassification (mode F) / a smorm model "
                             "(default: detected)")] = None,
    max_length: Annotated[int | None, typer.Option(min=8, help="token budget per sequence (default: the model's)")] = None,
    theory: Annotated[bool, typer.Option(help="check Theorem 1 (000 App. C.2) on the run's own D_S and D_M "
                                              "(read from RUN/config.json)")] = False,
    theory_sample: Annotated[int, typer.Option(min=2, help="pairs and rated responses sampled for --theory")] = 200,
    theory_seed: Annotated[int, typer.Option(help="seed of the --theory sample")] = 0,
    theory_ridge: Annotated[float, typer.Option(min=0.0, help="ridge on the second moments, relative to "
                                                              "trace(Sigma_S)/d (0: none)")] = 1e-3,
    quiet: Annotated[bool, typer.Option(help="no progress bars")] = False,
) -> None:
    """Evaluate every head (F, L, M, G) on benchmarks; writes report.json, report.md and plots/ and prints a table."""
    from smorm.eval.runner import evaluate_run, parse_bench

    try:
        benches = [parse_bench(spec) for spec in bench or []]
    except ValueError as error:
        _fail(str(error))
    if not benches and not theory:
        _fail("nothing to evaluate: give --bench KIND:PATH (repeatable) and/or --theory")
    for spec in benches:
        spec.sample, spec.seed = sample, seed
    if out is None:
        out = Path(run) if Path(run).is_dir() else Path("runs") / "eval" / run.replace("/", "__")
    try:
        report = evaluate_run(run, benches, out_dir=out, batch_size=batch_size, bf16=bf16, show_progress=not quiet,
                              hf=hf, max_length=max_length, theory=theory, theory_sample=theory_sample,
                              theory_seed=theory_seed, theory_ridge=theory_ridge, modes=mode or None)
    except (FileNotFoundError, ValueError) as error:
        _fail(str(error))
    typer.echo(report.table)
    typer.echo(f"report: {report.markdown_path}")


@app.command()
def gate(
    run: Annotated[Path, typer.Argument(help="run folder or smorm model folder to put the gate on")],
    pairs: Annotated[list[str], typer.Option("--pairs", help="preference pairs PATH[:FORMAT] to train the gate on (repeatable)")],
    ratings: Annotated[list[str] | None, typer.Option("--ratings", help="rated responses PATH[:FORMAT]: refit the multi head by ridge first (stage 1)")] = None,
    reference: Annotated[list[str] | None, typer.Option("--reference", help="reference set for verbosity debiasing, pairs or ratings (default: the pairs)")] = None,
    out: Annotated[Path | None, typer.Option(help="write the gated model here (default: replace RUN's model atomically)")] = None,
    limit: Annotated[int | None, typer.Option(help="first N records of every source")] = None,
    verbosity: Annotated[str, typer.Option(help="name of the verbosity attribute (004 Eq. 2)")] = "verbosity",
    debias: Annotated[bool, typer.Option(help="verbosity debiasing (004 Eq. 2-3)")] = True,
    debias_into: Annotated[str, typer.Option(help="gate: keep the multi head, T in the gate; multi: fold into a linear multi head")] = "gate",
    gate_verbosity: Annotated[bool, typer.Option(help="let the gate weigh debiased verbosity (identically 0 by Eq. 3: an 'abstain' expert)")] = False,
    hidden_sizes: Annotated[str, typer.Option(help="gate MLP hidden widths, comma-separated")] = "1024,1024,1024",
    dropout: Annotated[float, typer.Option(help="gate dropout")] = 0.2,
    beta_init: Annotated[float, typer.Option(help="initial scale β")] = 100.0,
    steps: Annotated[int, typer.Option(help="gate training steps (004 App. A: 10,000)")] = 10_000,
    batch_size: Annotated[int, typer.Option(help="pairs per step (004 App. A: 1024)")] = 1024,
    lr: Annotated[float, typer.Option(help="AdamW learning rate, cosine decay (004 App. A: 1e-3)")] = 1e-3,
    weight_decay: Annotated[float, typer.Option(help="AdamW weight decay of the gate's weights")] = 0.0,
    val_fraction: Annotated[float, typer.Option(help="pairs held out to report accuracy (0: train on all)")] = 0.2,
    seed: Annotated[int, typer.Option(help="seed of splits, batches, dropout and initial weights")] = 0,
    feature_batch_size: Annotated[int, typer.Option(help="sequences per forward pass when caching features")] = 16,
    bf16: Annotated[bool, typer.Option(help="bf16 autocast for the feature pass")] = False,
    cache_dir: Annotated[Path | None, typer.Option(help="feature cache folder (default: RUN/cache/gating)")] = None,
    default_mode: Annotated[str, typer.Option(help="default inference mode of the saved model")] = "G",
    on_error: Annotated[str, typer.Option(help="bad records: error (stop with file:line) or skip (count them)")] = "error",
    quiet: Annotated[bool, typer.Option(help="no progress bars")] = False,
) -> None:
    """ArmoRM stage 2 on any trained model: features, optional ridge stage 1, verbosity debiasing, gate (mode G)."""
    from smorm.gating.pipeline import GatingOptions, run_gating
    from smorm.gating.train_gate import GateTrainOptions

    try:
        sizes = [int(x) for x in hidden_sizes.split(",") if x.strip()]
        options = GatingOptions(
            ratings=ratings or [], reference=reference or [], limit=limit, verbosity=verbosity, debias=debias,
            debias_into=debias_into, gate_verbosity=gate_verbosity, hidden_sizes=sizes, dropout=dropout, beta_init=beta_init,
            train=GateTrainOptions(steps=steps, batch_size=batch_size, lr=lr, weight_decay=weight_decay,
                                   val_fraction=val_fraction, seed=seed),
            batch_size=feature_batch_size, bf16=bf16, cache_dir=str(cache_dir) if cache_dir else None,
            default_mode=default_mode, on_error=on_error,
        )
        report = run_gating(run, pairs, options, out=out, show_progress=not quiet)
    except (FileNotFoundError, ValueError) as error:
        _fail(str(error))
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


@app.command()
def demo(
    config: Annotated[Path, typer.Option(help="demo config")] = Path("configs/demo.yaml"),
    overrides: Annotated[list[str] | None, typer.Argument(help="key=value overrides")] = None,
) -> None:
    """Train SMORM on the shared data with the embedded backbone, evaluate F/L/M, print a report."""
    from smorm.demo import run_demo

    run_demo(config, overrides or [])


@app.command()
def serve(
    run: Annotated[Path, typer.Argument(help="run folder or smorm model folder")],
    host: Annotated[str, typer.Option(help="interface to bind; loopback unless you mean to expose it")] = "127.0.0.1",
    port: Annotated[int, typer.Option(help="TCP port")] = 8000,
    mode: Annotated[str | None, typer.Option(help="default mode F, L, M or G (default: the model's)")] = None,
    max_batch_size: Annotated[int, typer.Option(help="most sequences per forward pass")] = 16,
    max_wait_ms: Annotated[float, typer.Option(help="how long to gather requests into a batch")] = 5.0,
    max_queue: Annotated[int, typer.Option(help="most sequences waiting; more -> 503")] = 1024,
    max_body_bytes: Annotated[int, typer.Option(help="largest request body; more -> 413")] = 1 << 20,
    max_items: Annotated[int, typer.Option(help="most items per request; more -> 422")] = 64,
    max_item_tokens: Annotated[int | None, typer.Option(help="most tokens per item; more -> 422 "
                                                        "(default: the model's max_length)")] = None,
    token: Annotated[str | None, typer.Option(envvar="SMORM_SERVE_TOKEN", show_default=False,
                                              help="bearer token required on every endpoint but /health "
                                                   "(better: the SMORM_SERVE_TOKEN variable)")] = None,
    log_level: Annotated[str, typer.Option(help="uvicorn log level")] = "info",
) -> None:
    """Serve a reward model over HTTP: POST /score, POST /get_reward (OpenRLHF), GET /health, GET /info."""
    from smorm.serve.app import ServeSettings, run_server

    model_dir = run / "model" if (run / "model").is_dir() else run
    settings = ServeSettings(host=host, port=port, mode=mode, max_batch_size=max_batch_size, max_wait_ms=max_wait_ms,
                             max_queue=max_queue, max_body_bytes=max_body_bytes, max_items=max_items,
                             max_item_tokens=max_item_tokens, token=token)
    try:
        settings.validate()
    except ValueError as error:
        _fail(str(error))
    try:
        run_server(str(model_dir), settings, log_level=log_level)
    except ImportError as error:
        _fail(f"{error}; install the server extra: pip install 'smorm[serve]'")
    except (FileNotFoundError, ValueError) as error:
        _fail(str(error))


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
from smorm.rlhf import cli as rlhf_cli  # noqa: E402

app.command(name="bon")(rlhf_cli.bon)
app.command(name="rl")(rlhf_cli.rl)


def main() -> None:
    app()


if __name__ == "__main__":
    main()
