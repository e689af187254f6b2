"""The typed run configuration (what a YAML config and a run's ``config.json`` say): the one place every
option of ``smorm train`` is documented.

It lives below both ``smorm.train`` (which trains a run from it) and ``smorm.eval`` (which reads a
finished run's data and benchmarks from it). Reading a YAML file with ``key=value`` overrides is
:func:`smorm.train.config.load_config`; reading a finished run's ``config.json`` (for ``smorm eval``,
the Theorem 1 check, the reward-hacking lab's held-out prompts) is :func:`read_run_config`. Pydantic only, so ``smorm train --help`` starts without
torch; the loss registry is imported inside the validators that need it.
Defaults follow the SMORM paper's Table 10 (000 App. G) for full fine-tuning.
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import TYPE_CHECKING, Any, Literal

from pydantic import Field, ValidationError, field_validator, model_validator

from smorm.settings import Strict

if TYPE_CHECKING:
    from smorm.data.run_data import LoadedData


class RankingConfig(Strict):
    """Read a ranked or rated source as D_S: the responses of each prompt ranked by a score."""

    into: Literal["pairs", "list"] = Field(
        "pairs", description="pairs: every ordered pair of a prompt's responses with distinct scores (ties dropped), "
        "for any pair loss; list: each list kept whole (n responses as n - 1 linked pairs kept in one batch) for "
        "the plackett_luce loss",
    )
    score: str | dict[str, float] | None = Field(
        None, description="ratings sources: the attribute that ranks the responses, or {attribute: weight} for a "
        "weighted sum of the ratings rescaled to [0, 1]; default: helpfulness for HelpSteer (HelpSteer2 Sec. 4.3), "
        "else the source's only attribute. Ranked sources (stack-exchange, ranked) use their own scores",
    )
    max_pairs_per_prompt: int | None = Field(
        None, ge=1, description="into: pairs: keep at most this many pairs of a prompt (the largest score gaps)")

    @model_validator(mode="after")
    def _cap_needs_pairs(self) -> RankingConfig:
        if self.max_pairs_per_prompt is not None and self.into != "pairs":
            raise ValueError("max_pairs_per_prompt caps the pairs of into: pairs; into: list keeps each list whole")
        if isinstance(self.score, dict) and not self.score:
            raise ValueError("score: give an attribute name or a non-empty {attribute: weight}")
        return self


class DataSource(Strict):
    """One data file or dataset."""

    path: str = Field(description="file, folder or hf:owner/name[:split]; relative paths are from the config file")
    format: str = Field("auto", description="data adapter name (see `smorm ls`), or auto")
    name: str | None = Field(None, description="source name (default: from the path)")
    limit: int | None = Field(None, ge=1, description="use the first N valid records")
    sample: int | None = Field(
        None, ge=1, description="use a seeded random N valid records, chosen by content (not file order); "
        "fewer valid records keep them all; not with limit",
    )
    seed: int = Field(0, description="seed of sample")
    options: dict[str, Any] = Field(default_factory=dict, description="adapter options (scales, renames, views)")
    on_error: Literal["error", "skip"] | None = Field(None, description="per-source override of data.on_error")
    ranking: RankingConfig | None = Field(
        None, description="data.pairs only: rank each prompt's responses (a ranked or ratings format: stack-exchange, "
        "helpsteer, arena-bench, ultrafeedback ...) and read them as pairs or lists; limit and sample then count lists",
    )

    @model_validator(mode="after")
    def _limit_or_sample(self) -> DataSource:
        if self.limit is not None and self.sample is not None:
            raise ValueError(f"{self.path}: give limit (the first N) or sample (a seeded random N), not both")
        return self

    def to_spec(self) -> Any:
        """The :class:`smorm.data.DataSpec` the data loaders read."""
        from smorm.data import DataSpec  # the data package imports torch; this module stays torch-free
        from smorm.data.spec import RankingSpec

        ranking = RankingSpec(**self.ranking.model_dump()) if self.ranking is not None else None
        return DataSpec(path=self.path, format=self.format, name=self.name, limit=self.limit, sample=self.sample,
                        seed=self.seed, options=dict(self.options), on_error=self.on_error, ranking=ranking)


class HeadConfig(Strict):
    kind: str = Field("linear", description="head kind: linear | mlp")
    options: dict[str, Any] = Field(default_factory=dict)


class ModelConfig(Strict):
    backbone: str = Field("smollm2-135m-instruct", description="short name, HF id or folder, or .gguf file")
    dtype: Literal["float32", "bfloat16", "float16"] = Field("float32", description="backbone weight dtype")
    trust_remote_code: bool = Field(False, description="let transformers run code from the model folder")
    heads: dict[str, HeadConfig] = Field(
        default_factory=lambda: {"single": HeadConfig(), "multi": HeadConfig()},
        description="heads by name: single (BT), multi (attributes), length (ODIN)",
    )
    mode: Literal["F", "L", "M"] = Field("F", description="default inference mode")
    mode_scale: Literal["standardized", "raw"] = Field(
        "standardized", description="mode M: F and L each standardised by their mean and spread on the training "
        "data (measured at save time), or the raw mean")
    with_lm_head: bool = Field(False, description="keep the LM head (GRM losses)")


class DataConfig(Strict):
    """D_S and D_M. ``rating_scale`` is the scale of the regression targets ``r`` of 000 Eq. 5.

    000 Sec. 3 / Eq. 5 writes ``r`` without a scale, and for gating follows ArmoRM (Sec. 5.2, [36]).
    ArmoRM rescales "all ratings to make them between 0 and 1" (004 App. A); its released code
    (RLHFlow/RLHF-Reward-Modeling ``armo-rm/stage-1_prepare.py``) regresses on the labels of its
    prepared data set as given, that is, the already rescaled ones. Hence the default ``unit``;
    ``raw`` keeps each source's own numbers (HelpSteer 0-4, UltraFeedback 1-10, ...).
    """

    pairs: list[DataSource] = Field(default_factory=list, description="pairwise preference data D_S")
    ratings: list[DataSource] = Field(default_factory=list, description="attribute-rated data D_M")
    attributes: list[str] | None = Field(None, description="attribute names (default: all found in ratings)")
    max_length: int = Field(512, ge=8, description="tokens per prompt+response; prompt is cut from the left")
    on_error: Literal["error", "skip"] = Field("error", description="bad records: stop, or skip and count")
    rating_scale: Literal["unit", "raw"] = Field(
        "unit", description="the regression targets r of 000 Eq. 5: unit = each attribute mapped linearly from its "
        "raw scale onto [0, 1], as ArmoRM does (004 App. A), or raw = the ratings as the data gives them")
    ratings_filter: Literal["none", "shared_prompts"] = Field(
        "none", description="shared_prompts: keep only the rated responses whose prompt is a prompt of data.pairs "
        "(000 Sec. 3), compared after normalising (roles and text of every message, NFKC, whitespace collapsed, "
        "case-folded); the load report counts kept and dropped",
    )
    dedup: bool = Field(
        False, description="drop exact repeats across all sources, first seen kept: a pair with the same prompt and "
        "responses as an earlier one, or its reverse (a contradiction), and a rated response seen before; compared "
        "after normalising like ratings_filter; ranked-list links are kept; the load report counts each drop")
    exclude_prompts_of: list[DataSource] = Field(
        default_factory=list, description="files (e.g. the dev benchmarks, any readable format) whose prompts are "
        "removed from D_S and D_M before training, compared like ratings_filter; the load report counts the drops")
    length_balance: bool = Field(
        False, description="per D_S source, keep as many pairs whose chosen response is longer (in characters) as "
        "pairs whose chosen is shorter, a seeded sample of the majority side (Singhal et al. 2023, Sec. 4); equal "
        "lengths and ranked-list links are kept; the load report counts the drop")

    def load(self) -> LoadedData:
        """Read D_S and D_M with every option of this section (:func:`smorm.data.run_data.load_run_data`)."""
        from smorm.data.run_data import load_run_data  # torch (through smorm.types): read where data is read

        return load_run_data([s.to_spec() for s in self.pairs], [s.to_spec() for s in self.ratings],
                             on_error=self.on_error, attributes=self.attributes, rating_scale=self.rating_scale,
                             ratings_filter=self.ratings_filter, dedup=self.dedup,
                             exclude_prompts_of=[s.to_spec() for s in self.exclude_prompts_of],
                             length_balance=self.length_balance)

    @model_validator(mode="after")
    def _ranking_in_pairs(self) -> DataConfig:
        for index, source in enumerate(self.ratings):
            if source.ranking is not None:
                raise ValueError(f"ratings.{index} ({source.path}): ranking makes a source D_S pairs; put it under "
                                 "data.pairs (D_M reads each rated response on its own)")
        return self


class LossConfig(Strict):
    name: str = Field(description="registered loss name (see `smorm ls`)")
    weight: float = Field(1.0, description="weight in the summed objective")
    head: str | None = Field(None, description="head the loss reads (default: single for pair losses, multi for regression)")
    options: dict[str, Any] = Field(default_factory=dict)


class LoraOptions(Strict):
    """peft LoRA on the backbone (trunk: lora); the heads always train in full."""

    r: int = Field(8, ge=1, description="LoRA rank")
    alpha: int = Field(16, ge=1, description="LoRA scaling alpha (the update is scaled by alpha / r)")
    dropout: float = Field(0.0, ge=0, lt=1, description="dropout on the LoRA path")
    target_modules: list[str] | str = Field("all-linear", description="modules that get adapters (peft's "
                                            "target_modules: a list of names, or all-linear)")


class TrainConfig(Strict):
    trunk: Literal["full", "top_k", "frozen", "lora"] = Field("full", description="which backbone weights train")
    top_k: int = Field(2, ge=1, description="top layers trained in top_k mode")
    lora: LoraOptions = Field(default_factory=LoraOptions)
    epochs: float = Field(1.0, gt=0, description="passes over D_S (or D_M when there is no D_S)")
    max_steps: int | None = Field(None, ge=1, description="stop after this many optimizer steps")
    pair_batch_size: int = Field(16, ge=1, description="pairs per step (Table 10: 16)")
    rating_batch_size: int = Field(16, ge=1, description="rated responses per step")
    balance_sources: bool = Field(
        False,
        description="give every pair source an equal share of each pair batch (MORE, 003 App. C: "
        "5 sources x 16); each source is cycled on its own, an epoch is still |D_S| / pair_batch_size steps",
    )
    grad_accum: int = Field(1, ge=1, description="gradient accumulation steps")
    lr: float = Field(5e-6, gt=0, description="AdamW learning rate (Table 10: 5e-6)")
    head_lr: float | None = Field(None, gt=0, description="learning rate for heads (default: lr)")
    weight_decay: float = Field(0.0, ge=0, description="AdamW weight decay (Table 10: 0)")
    warmup_ratio: float = Field(0.03, ge=0, le=1, description="Table 10: 0.03")
    scheduler: Literal["cosine", "linear", "constant"] = Field("cosine", description="learning-rate schedule after "
                                                               "warmup (Table 10: cosine)")
    max_grad_norm: float | None = Field(1.0, description="gradient clipping (None: off)")
    precision: Literal["fp32", "bf16", "auto"] = Field(
        "fp32", description="bf16 autocast (Table 10 trains in bf16); auto: bf16 where the device multiplies "
        "bf16 natively (CUDA, CPUs with AVX512-BF16 or AMX), else fp32")
    seed: int = Field(42, description="seed of head initialisation, batch order and dropout")
    checkpoint_every: int = Field(0, ge=0, description="write a resumable checkpoint every N steps (0: off)")
    keep_checkpoints: int = Field(2, ge=1, description="newest checkpoints kept; older ones are deleted")
    log_every: int = Field(1, ge=1, description="write metrics (metrics.jsonl, trackers) every N steps")
    report_to: list[Literal["tensorboard", "wandb", "mlflow"]] = Field(
        default_factory=list,
        description="also send the metrics of metrics.jsonl to these trackers (through accelerate), a name or a "
        "list: tensorboard (events in <output_dir>/tensorboard/smorm), wandb, mlflow (both set up by their own "
        "environment variables); none or [] for none; each needs its package installed",
    )
    cache_dir: str | None = Field(None, description="feature store for top_k/frozen, one entry per sequence, "
                                  "shared by every run that finds it (default: $SMORM_FEATURE_CACHE, else "
                                  "$SMORM_CACHE/features, else ~/.cache/smorm/features)")
    cache_dtype: Literal["float32", "bfloat16"] = Field(
        "float32", description="dtype the cached features are stored in: bfloat16 halves disk and memory for "
        "large data, rounding the upper layers' input to bf16")
    cache_batch_size: int = Field(16, ge=1, description="sequences per forward pass when caching the lower "
                                  "layers (top_k) or features (frozen)")
    gradient_checkpointing: bool = Field(False, description="recompute activations in backward instead of "
                                         "storing them: less memory, ~30% more compute (large backbones)")
    shared_prompt: bool | Literal["auto"] = Field(
        "auto", description="encode each pair's prompt once, in training and in the top_k/frozen caching pass "
        "(a 4D mask; issue 15). auto: on for causal backbones, off with a message for encoders and GRM losses; "
        "false: padded batches")
    padding_free: bool = Field(True, description="with the shared prompt on: several pairs and rated responses per "
                               "packed row (block-diagonal mask, positions restarting per sequence), rows no longer "
                               "than the step's longest pair, so almost no slot is padding")
    token_budget: int | None = Field(
        None, ge=1, description="pair batches of about this many tokens (a pair's packed width: prompt once, both "
        "responses) instead of pair_batch_size pairs; the number of pairs per step then varies. Ratings keep "
        "rating_batch_size. Not with balance_sources or ranked lists")

    @field_validator("report_to", mode="before")
    @classmethod
    def _report_to_list(cls, value: Any) -> Any:
        """``report_to: wandb`` reads as ``[wandb]``, ``none`` or empty as ``[]``; a repeated name counts once."""
        names = [] if value is None else [value] if isinstance(value, str) else value
        if not isinstance(names, list) or not all(isinstance(name, str) for name in names):
            return value  # pydantic reports the type
        return list(dict.fromkeys(name for name in names if name != "none"))


class BenchConfig(Strict):
    kind: str = Field(description="benchmark name: reward-bench | rm-bench | pairs | ranked")
    path: str
    limit: int | None = Field(None, ge=1, description="use the first N items")
    sample: int | None = Field(
        None, ge=1, description="use a seeded random N items, chosen by content (with limit: of the first N)"
    )
    seed: int = 0
    name: str | None = None
    on_error: Literal["error", "skip"] = Field(
        "error", description="a structurally broken item: stop with file:line, or skip it and count it in the "
        "report (a blank response is not broken: it is scored and counted)",
    )


class EvalConfig(Strict):
    benches: list[BenchConfig] = Field(default_factory=list, description="benchmarks the run is evaluated on "
                                       "(by the demo, and by smorm eval RUN without --bench)")
    batch_size: int = Field(16, ge=1, description="sequences per forward pass")
    precision: Literal["fp32", "bf16", "auto"] = Field("fp32", description="bf16 autocast when scoring (auto: "
                                                       "where the device multiplies bf16 natively)")
    modes: list[Literal["F", "L", "M"]] = Field(default_factory=lambda: ["F", "L", "M"],
                                               description="inference modes reported")


class RunConfig(Strict):
    method: str = Field("smorm", description="a name for reports")
    output_dir: str = Field("runs/smorm", description="run folder: model, checkpoints, logs, report")
    model: ModelConfig = Field(default_factory=ModelConfig)
    data: DataConfig = Field(default_factory=DataConfig)
    losses: list[LossConfig] = Field(
        default_factory=lambda: [LossConfig(name="bt"), LossConfig(name="regression")],
        description="the objective: a weighted sum of registered losses, each {name, weight, head, options} "
        "(default: bt + regression, 000 Eq. 5)",
    )
    train: TrainConfig = Field(default_factory=TrainConfig)
    eval: EvalConfig = Field(default_factory=EvalConfig)

    @field_validator("losses")
    @classmethod
    def _losses_known(cls, losses: list[LossConfig]) -> list[LossConfig]:
        from smorm.losses import get_loss, validate_options

        if not losses:
            raise ValueError("at least one loss is needed")
        for loss in losses:
            try:
                get_loss(loss.name)
            except KeyError as error:  # pydantic reports ValueErrors, not KeyErrors
                raise ValueError(error.args[0]) from None
            validate_options(loss.name, loss.options)
        return losses

    @model_validator(mode="after")
    def _data_matches_losses(self) -> RunConfig:
        from smorm.losses import get_loss

        needs = set().union(*(get_loss(loss.name).needs for loss in self.losses))
        if "pairs" in needs and not self.data.pairs:
            raise ValueError("the losses need pairwise data but data.pairs is empty")
        if "ratings" in needs and not self.data.ratings:
            raise ValueError("the losses need rated data but data.ratings is empty")
        if "ratings" in needs and "multi" not in self.model.heads:
            raise ValueError("a rating loss needs a 'multi' head in model.heads")
        if "pairs" in needs and not any(h in self.model.heads for h in ("single", "multi")):
            raise ValueError("a pair loss needs a 'single' head in model.heads")
        if "length_head" in needs and "length" not in self.model.heads:
            raise ValueError("the odin loss needs a 'length' head in model.heads (the 'single' head is quality)")
        if "lm" in needs:
            if not self.model.with_lm_head:
                raise ValueError("GRM losses need the LM head: set model.with_lm_head: true")
            if self.train.trunk == "frozen":
                raise ValueError("GRM losses need token ids and the last hidden states: trunk full, lora or top_k, "
                                 "not frozen (which keeps only pooled features)")
        lists = [f"data.pairs.{i} ({s.path})" for i, s in enumerate(self.data.pairs)
                 if s.ranking is not None and s.ranking.into == "list"]
        if lists and self.train.balance_sources:
            raise ValueError(f"train.balance_sources draws pairs one at a time and would split the ranked lists of "
                             f"{', '.join(lists)} (ranking.into: list): use ranking.into: pairs, or balance_sources: false")
        if self.train.token_budget is not None and (self.train.balance_sources or lists):
            raise ValueError("train.token_budget cuts pair batches by tokens: not with train.balance_sources or "
                             "ranked lists (ranking.into: list), which fix the pairs of each batch")
        return self


# ---------------------------------------------------------------- a finished run's config.json

RUN_CONFIG_NAME = "config.json"  # what `smorm train` writes into the run folder, beside model/


def find_run_config(reference: str | os.PathLike[str]) -> Path | None:
    """The ``config.json`` of the training run ``reference`` names (``RUN`` or ``RUN/model``), or None.

    A run folder holds ``config.json`` beside ``model/``, as ``smorm train`` leaves it; asking for
    ``model/`` keeps a Hugging Face model folder's own ``config.json`` from being read as a run's.
    """
    path = Path(reference)
    for run in (path, path.parent) if path.name == "model" else (path,):
        if (run / RUN_CONFIG_NAME).is_file() and (run / "model").is_dir():
            return run / RUN_CONFIG_NAME
    return None


def read_run_config(reference: str | os.PathLike[str], needed_for: str = "") -> RunConfig:
    """The :class:`RunConfig` a training run was made with, read from its ``config.json``.

    Args:
        reference: the run folder or its ``model/`` folder.
        needed_for: why the caller reads it, said when there is none ("held-out prompts need ...").

    Raises:
        FileNotFoundError: ``reference`` is not a training run (the message names the file looked for).
        ValueError: the file is not JSON or not a valid run config (the message names the file).
    """
    path = find_run_config(reference)
    if path is None:
        reason = f"; {needed_for}" if needed_for else ""
        raise FileNotFoundError(f"{reference}: not a smorm training run (no {RUN_CONFIG_NAME} beside a model/ "
                                f"folder, as `smorm train` writes it){reason}")
    try:
        return RunConfig.model_validate_json(path.read_bytes())
    except ValidationError as error:
        raise ValueError(f"{path}: not a valid run config: {error}") from None
