"""``smorm gate``: ArmoRM stage 1 (optional), verbosity debiasing and the gate, on any trained model.

Reads setup → data → features → stages → save, top to bottom:

1. every data file is read and validated before the model is loaded;
2. one feature pass (cached, resumable) gives the response and prompt features of every unique
   sequence of the pairs, ratings and reference set;
3. with ratings: stage 1 refits (or creates) the ``multi`` head by masked ridge regression;
4. λ per attribute on the reference set (004 Eq. 2-3);
5. the gate is trained with BT on the pairs, backbone and regression head frozen;
6. the model is saved with its new ``gate`` head (atomic folder swap) and ``gating.json`` beside it.
"""

from __future__ import annotations

import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch

from smorm.gating.debias import VerbosityDebias, debias_linear_weights, debias_matrix, verbosity_penalties
from smorm.gating.features import CachedFeatures, SequenceIndex, compute_features
from smorm.gating.ridge import fit_attribute_ridge, install_multi_head, ratings_matrix
from smorm.gating.settings import GatingOptions
from smorm.gating.train_gate import GatePairs, result_dict, train_gate
from smorm.io import atomic_write_json
from smorm.models.devices import module_device
from smorm.models.gate_spec import GATE_HEAD, gate_spec
from smorm.models.heads import GatingHead
from smorm.models.reward_model import model_folder

REPORT_NAME = "gating.json"


@dataclass
class GatingData:
    """The records of one run, laid out as rows of one :class:`SequenceIndex`."""

    sequences: SequenceIndex
    chosen_rows: list[int]
    rejected_rows: list[int]
    rating_rows: list[int]
    ratings: list[dict[str, float]]
    reference_rows: list[int]
    rating_scales: dict[str, dict[str, list[float]]]
    reports: list[str]
    truncated: int = 0
    prompt_cut_away: int = 0


def parse_source(text: str, limit: int | None = None) -> Any:
    """``PATH[:FORMAT]`` (or ``FORMAT:PATH``) -> :class:`~smorm.data.spec.DataSpec`."""
    from smorm.data import DataSpec, as_spec
    from smorm.registry import DATA_ADAPTERS

    head, sep, tail = text.rpartition(":")
    spec = DataSpec(path=head, format=tail) if sep and head and (tail in DATA_ADAPTERS or tail == "auto") else as_spec(text)
    spec.limit = limit
    return spec


def load_records(pairs: list[str], options: GatingOptions) -> tuple[list[Any], list[Any], list[Any], list[str]]:
    """Read and validate every source: (pairs, rated responses, reference responses, report lines)."""
    from smorm.data import load_pairs, load_ratings
    from smorm.data.loading import resolve_adapter

    if not pairs:
        raise ValueError("give at least one --pairs source: the gate is trained on preference pairs")
    loaded_pairs: list[Any] = []
    ratings: list[Any] = []
    reference: list[Any] = []
    lines: list[str] = []
    for text in pairs:
        records, report = load_pairs(parse_source(text, options.limit), on_error=options.on_error)
        loaded_pairs += records
        lines.append(f"pairs: {report.summary()}")
    for text in options.ratings:
        records, report = load_ratings(parse_source(text, options.limit), on_error=options.on_error)
        ratings += [(r, report) for r in records]
        lines.append(f"ratings: {report.summary()}")
    for text in options.reference:
        spec = parse_source(text, options.limit)
        if "pairs" in resolve_adapter(spec).kinds():
            records, report = load_pairs(spec, on_error=options.on_error)
            reference += [(p.prompt, p.chosen) for p in records] + [(p.prompt, p.rejected) for p in records]
        else:
            records, report = load_ratings(spec, on_error=options.on_error)
            reference += [(r.prompt, r.response) for r in records]
        lines.append(f"reference: {report.summary()}")
    if not loaded_pairs:
        raise ValueError("the --pairs sources hold no usable pair")
    return loaded_pairs, ratings, reference, lines


def layout(formatter: Any, pairs: list[Any], ratings: list[Any], reference: list[Any], lines: list[str]) -> GatingData:
    """Tokenise every record once and index the unique sequences."""
    index = SequenceIndex()
    cut_away: set[int] = set()

    def add(prompt: Any, response: str) -> int:
        encoded = formatter.encode(prompt, response)
        row = index.add(encoded.input_ids, encoded.response_start)
        if encoded.response_start <= len(formatter.prefix_ids):  # the gate then reads a special token
            cut_away.add(row)
        return row

    chosen = [add(p.prompt, p.chosen) for p in pairs]
    rejected = [add(p.prompt, p.rejected) for p in pairs]
    rating_rows = [add(r.prompt, r.response) for r, _ in ratings]
    scales: dict[str, dict[str, list[float]]] = {}
    for _, report in ratings:
        scales[report.source] = {k: [float(v[0]), float(v[1])] for k, v in report.scales.items()}
    reference_rows = [add(prompt, response) for prompt, response in reference] or chosen + rejected
    return GatingData(index, chosen, rejected, rating_rows, [r.ratings for r, _ in ratings], reference_rows,
                      scales, lines, truncated=formatter.num_truncated, prompt_cut_away=len(cut_away))


def keep_backbone_storage(model: Any, source: Path) -> str:
    """Mark exactly the backbone tensors the source folder stored as trainable, so ``save_pretrained``
    writes the backbone the way it was stored (``full`` / ``delta`` / ``reference``) and no bigger."""
    from safetensors import safe_open

    from smorm.models.reward_model import DELTA_NAME

    stored = model.config.backbone_weights
    names: set[str] = set()
    if stored == "delta":
        with safe_open(str(source / DELTA_NAME), framework="pt") as handle:
            names = set(handle.keys())
    for name, parameter in model.backbone.named_parameters():
        parameter.requires_grad_(name in names)
    return stored


def stage1(model: Any, features: CachedFeatures, data: GatingData, options: GatingOptions) -> dict[str, Any]:
    """Refit (or create) the multi head from the ratings by masked ridge regression."""
    found: list[str] = []
    for rated in data.ratings:
        found += [name for name in rated if name not in found]
    attributes = list(model.config.attributes) if set(found) == set(model.config.attributes) else found
    targets, mask = ratings_matrix(data.ratings, attributes)
    fit = fit_attribute_ridge(features.features[data.rating_rows], targets, mask,
                              val_fraction=options.ridge_val_fraction, seed=options.ridge_seed)
    install_multi_head(model, fit.weights, attributes)
    model.config.rating_scales = data.rating_scales
    return {"attributes": fit.summary(attributes), "notes": fit.notes, "rated_responses": len(data.ratings)}


def run_gating(run: Path, pairs: list[str], options: GatingOptions | None = None, out: Path | None = None,
               show_progress: bool = True) -> dict[str, Any]:
    """Train a gate on the model of ``run`` and save the gated model to ``out`` (default: in place)."""
    from smorm.data.formatting import Formatter
    from smorm.models.reward_model import RewardModel

    options = options or GatingOptions()
    started = time.time()
    source = model_folder(Path(run))
    records = load_records(pairs, options)  # every file validated before the model loads
    model = RewardModel.from_pretrained(source, device=options.device)
    if not options.ratings and "multi" not in model.heads:
        raise ValueError(f"{source} has no multi head: give --ratings to fit one (stage 1)")
    data = layout(Formatter(model.tokenizer, model.config.max_length), *records)
    cache_dir = Path(options.cache_dir) if options.cache_dir else (
        Path(run) / "cache" / "gating" if source != Path(run) else source.parent / f"{source.name}-cache" / "gating")
    features = compute_features(model, data.sequences, cache_dir, batch_size=options.batch_size, bf16=options.bf16,
                                show_progress=show_progress)
    seconds = {"features": time.time() - started}
    report: dict[str, Any] = {"model": str(source), "data": data.reports, "sequences": len(data.sequences),
                              "pairs": len(data.chosen_rows), "truncated_encodings": data.truncated,
                              "prompt_cut_away": data.prompt_cut_away, "feature_cache": str(features.root)}
    if options.ratings:
        report["stage1"] = stage1(model, features, data, options)
    attributes = list(model.config.attributes)
    device = module_device(model)  # the stages read host-side cached features; heads run where the model is
    with torch.no_grad():
        rewards = model.heads["multi"](features.features.to(device, model._head_dtype())).float().cpu()
    gate = _new_gate(model, options)
    if options.debias:
        debias = verbosity_penalties(rewards[data.reference_rows], attributes, options.verbosity)
        report["debias"] = {"target": options.debias_into, "reference_responses": debias.reference_size,
                            "attributes": debias.rows(), "notes": debias.notes}
        rewards = _apply_debias(model, gate, rewards, debias, options.debias_into)
        if not options.gate_verbosity:
            gate.set_active([k != debias.verbosity_index for k in range(len(attributes))])
    report["gated_attributes"] = [a for a, on in zip(attributes, gate.active.tolist()) if on]
    pairs_data = GatePairs(features.prompt_features[data.chosen_rows], features.prompt_features[data.rejected_rows],
                           rewards[data.chosen_rows], rewards[data.rejected_rows])
    result = train_gate(gate, pairs_data, attributes, options.train, show_progress=show_progress)
    report["gate"] = {**gate_spec(options.hidden_sizes, options.dropout, options.beta_init), **result_dict(result)}
    seconds["stages"] = time.time() - started - seconds["features"]
    model.heads[GATE_HEAD] = gate.to(device)
    model.config.heads[GATE_HEAD] = gate_spec(options.hidden_sizes, options.dropout, options.beta_init)
    model.config.mode = options.default_mode
    report["consistency_max_abs_diff"] = consistency_check(model, data, features, gate, rewards, options.bf16)
    # --out mirrors RUN's layout: a run folder (model in model/) or a bare model folder
    target = source if out is None else (Path(out) / "model" if source != Path(run) else Path(out))
    stored = keep_backbone_storage(model, source)
    model.save_pretrained(target, backbone_weights=stored)
    report["saved_to"] = str(target)
    report["seconds"] = {k: round(v, 1) for k, v in {**seconds, "total": time.time() - started}.items()}
    atomic_write_json(target / REPORT_NAME, report)
    return report


def _new_gate(model: Any, options: GatingOptions) -> GatingHead:
    torch.manual_seed(options.train.seed)  # the gate's initial weights follow the seed too
    return GatingHead(model.hidden_size, len(model.config.attributes), options.hidden_sizes, options.dropout,
                      options.beta_init)


def _apply_debias(model: Any, gate: GatingHead, rewards: torch.Tensor, debias: VerbosityDebias, target: str
                  ) -> torch.Tensor:
    """Put T where the options say; returns the rewards the gate will be given (raw for ``gate``)."""
    if target == "gate":
        gate.debias.copy_(debias_matrix(debias.lambdas, debias.verbosity_index))
        return rewards
    if model.config.heads.get("multi", {}).get("kind", "linear") != "linear":
        raise ValueError("--debias-into multi needs a linear multi head; use --debias-into gate")
    head = model.heads["multi"]
    with torch.no_grad():
        head.weight.copy_(debias_linear_weights(head.weight, debias.lambdas, debias.verbosity_index))
    return rewards @ debias_matrix(debias.lambdas, debias.verbosity_index)


def consistency_check(model: Any, data: GatingData, features: CachedFeatures, gate: GatingHead,
                      rewards: torch.Tensor, bf16: bool = False, count: int = 8) -> float:
    """Max |G| difference between the saved model's own forward and the cached-feature path, on a few
    pairs: the gate must see at inference what it saw in training."""
    rows = data.chosen_rows[:count]
    output = model.score_token_ids([data.sequences.input_ids[i] for i in rows], autocast_bf16=bf16,
                                   response_starts=[data.sequences.response_starts[i] for i in rows])
    device = module_device(gate)
    with torch.no_grad():
        cached, _ = gate(features.prompt_features[rows].to(device), rewards[rows].to(device))
    return float((output.extra[GATE_HEAD] - cached.cpu()).abs().max())
