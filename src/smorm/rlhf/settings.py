"""Typed settings of the reward-hacking lab: the one place each option is documented.

``smorm bon`` and ``smorm rl`` build their flags and ``--help`` from these models
(:mod:`smorm.cli_options`). This module imports nothing heavy, so the CLI starts fast.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any, Literal

from pydantic import Field, model_validator

from smorm.settings import DEVICE_HELP, Strict

REWARD_REF = ("PATH is a smorm run / model folder (MODE F, L, M, or G for a gated model from smorm gate; "
              "default: the model's own mode), an ensemble / Baseline SM folder, or a Hugging Face sequence "
              "classifier folder (mode F)")
THREADS = "torch CPU threads (1 is fastest on a busy shared machine; default: torch's)"


class SamplingConfig(Strict):
    """How responses are sampled (recorded in the pool's meta file)."""

    num_samples: int = Field(16, ge=1, description="responses per prompt (N of the pool)",
                             json_schema_extra={"flag": "--n"})
    max_new_tokens: int = Field(64, ge=1, description="longest response, in policy tokens")
    temperature: float = Field(1.0, gt=0, description="softmax temperature (> 0)")
    top_p: float = Field(1.0, gt=0, le=1, description="nucleus sampling mass in (0, 1]; 1 keeps every token")
    seed: int = Field(0, description="base seed; each response's stream is derived from it, the prompt and its index")
    max_prompt_tokens: int = Field(512, ge=1, description="longer rendered prompts keep their last tokens")


# The judges' check: the two dev benchmarks, and UltraFeedback's held-out eval pairs -- a source every
# shipped proxy and gold trains on (configs/rlhf/*.yaml) whose eval split none of them sees, so the
# in-distribution question "is the gold the better judge of this kind of data?" is asked too.
DEFAULT_BENCHES = (
    "reward-bench:../shared/data/eval/reward-bench/filtered-first500.jsonl",
    "rm-bench:../shared/data/eval/rm-bench/chat_filtered.json",
    "pairs:../shared/data/pairs/ultrafeedback/binarized-eval-200.jsonl",
)


class BoNSettings(Strict):
    """Everything ``smorm bon`` does is a function of these (recorded in ``summary.json``)."""

    policy: str = Field("smollm2-135m-instruct", description="causal LM reference (embedded short name, "
                        "folder, hub id, .gguf)")
    proxies: list[str] = Field(min_length=1, description=f"PATH[:MODE] of each proxy reward model (repeat the "
                               f"flag); {REWARD_REF}", json_schema_extra={"flag": "--proxy"})
    gold: str = Field(description=f"PATH[:MODE] of the gold reward model; {REWARD_REF}")
    prompts: str = Field("id", description="id (held out from the proxies' own D_S) or a prompt / data file")
    out_dir: Path = Field(Path("runs/bon"), description="where the pool, scores, CSVs, PNGs and summary go",
                          json_schema_extra={"flag": "--out"})
    num_prompts: int = Field(16, ge=1, description="prompts sampled from the set (seeded)")
    prompt_seed: int = Field(0, description="seed of that sample")
    sampling: SamplingConfig = Field(default_factory=SamplingConfig, description="how the policy samples")
    pool: Path | None = Field(None, description="the pool file (default out_dir/pool.jsonl; a name ending in "
                              ".gz is gzip-compressed); reused and resumed when it exists")
    import_pool: bool = Field(False, description="--pool FILE was written by another generator (vLLM, say): "
                              "score its prompts and responses as they are, generate nothing (layout: "
                              "docs/reward-hacking.md); the policy, prompt and sampling options are then unused")
    attribute_model: str | None = Field(None, description="PATH of the model whose multi head rates the picks "
                                        "(default: the gold if it has a multi head, else each proxy's own)")
    grid_points: int = Field(30, ge=2, description="at most this many values of n on the curves")
    batch_rows: int = Field(32, ge=1, description="sequences per generate call")
    score_batch_size: int = Field(16, ge=1, description="sequences per scoring forward pass",
                                  json_schema_extra={"flag": "--batch-size"})
    bf16: bool = Field(False, description="bf16 autocast when scoring")
    feature_cache: bool = Field(True, description="models whose lower layers are the backbone's (top_k runs) read "
                                "the pool's lower-layer states from the shared feature store: computed once for "
                                "every such model (about 0.2 MB per response for a 135M backbone, fp32)")
    policy_dtype: Literal["auto", "float32", "bfloat16", "float16"] = Field(
        "float32", description="policy weight dtype; auto: bfloat16 where the device multiplies bf16 natively, "
        "else float32 (emulated bf16 samples ~100x slower on an AVX2-only CPU)")
    benches: list[str] = Field(default_factory=lambda: list(DEFAULT_BENCHES),
                               description="KIND:PATH[:LIMIT] dev benchmarks for the judges' accuracy table "
                               "(repeat the flag; benches=[] skips the table)", json_schema_extra={"flag": "--bench"})
    bench_sample: int | None = Field(100, ge=1, description="seeded random items per benchmark")
    max_prompt_chars: int | None = Field(1500, ge=1, description="skip longer in-distribution prompts "
                                         "(keeps generation cheap)")
    threads: int | None = Field(None, ge=1, description=THREADS)
    device: str = Field("auto", description=DEVICE_HELP + " (the policy and the reward models)")

    @model_validator(mode="after")
    def _pool_to_import(self) -> BoNSettings:
        if self.import_pool and self.pool is None:
            raise ValueError("import_pool needs the file to import: --pool FILE")
        return self


class RLSettings(Strict):
    """Everything ``smorm rl`` does is a function of these (recorded in ``rl_summary.json``)."""

    policy: str = Field("smollm2-135m-instruct", description="causal LM folder or embedded short name "
                        "(resolved to a local folder for TRL)")
    reward: str = Field(description=f"PATH[:MODE] of the proxy reward model the policy is trained on; {REWARD_REF}")
    gold: str = Field(description=f"PATH[:MODE] of the gold reward model (tracked, never trained on); {REWARD_REF}")
    prompts: str = Field("id", description="id (held out from the proxy's own D_S) or a prompt / data file")
    heldout_from: Path | None = Field(None, description="with --prompts id: the run whose D_S the prompts are held "
                                      "out from (default: the proxy's; give one run to train every proxy of a "
                                      "comparison on the same prompts, and for an ensemble or Baseline SM proxy)")
    out_dir: Path = Field(Path("runs/rl"), description="output folder (rl.csv, rl.png, rl_summary.json, "
                          "TRL's files)", json_schema_extra={"flag": "--out"})
    num_prompts: int = Field(64, ge=1, description="prompts sampled from the set (seeded)")
    prompt_seed: int = Field(0, description="seed of that sample")
    steps: int = Field(20, ge=1, description="optimizer steps")
    num_generations: int = Field(4, ge=2, description="completions per prompt (RLOO's leave-one-out baseline "
                                 "needs >= 2)")
    prompts_per_step: int = Field(2, ge=1, description="prompts per step (the batch is prompts_per_step * "
                                  "num_generations)")
    max_completion_length: int = Field(48, ge=1, description="tokens per completion")
    learning_rate: float = Field(1e-5, gt=0, description="AdamW learning rate (000 Table 10: 1e-5 for PPO)",
                                 json_schema_extra={"flag": "--lr"})
    lr_scheduler: Literal["constant", "linear", "cosine"] = Field(
        "constant", description="learning-rate schedule over the steps (000 Table 10 gives none for PPO; a decay "
        "to 0 over a short CPU run spends its last steps at almost no learning rate)")
    num_iterations: int = Field(1, ge=1, description="optimisation passes over each generated batch (000 Table 10: "
                                "4 for PPO; RLOO's clipped ratio keeps later passes near the sampling policy)")
    beta: float = Field(0.0, ge=0, description="KL coefficient to the initial policy (Table 10: 0)")
    temperature: float = Field(1.0, gt=0, description="sampling temperature")
    gold_every: int = Field(1, ge=1, description="score the current batch with the gold every k steps")
    eval_prompts: int = Field(0, ge=0, description="held-out prompts (disjoint from the training prompts) on "
                              "which the current policy is sampled every eval_every steps with fixed random "
                              "streams and scored by proxy and gold (rl_eval.csv, rl_eval.png): taken from the "
                              "training set, or at most this many of eval_file and of ood_file (0: all of them; "
                              "0 and no file turns it off)")
    eval_file: str | None = Field(None, description="a prompt or data file of fixed in-distribution evaluation "
                                  "prompts (instead of carving them out of the training set); training prompts "
                                  "equal to one are dropped")
    ood_file: str | None = Field(None, description="a prompt or data file of fixed out-of-distribution evaluation "
                                 "prompts, tracked like the in-distribution set (rl_eval_ood.csv, rl_eval_ood.png)")
    eval_every: int | None = Field(None, ge=1, description="evaluate the fixed prompts every k steps (default: "
                                   "gold_every) and after the last step")
    precision: Literal["fp32", "bf16", "auto"] = Field(
        "auto", description="bf16 autocast for the policy's updates (TRL bf16; fp32 master weights) and for proxy "
        "and gold scoring; auto: bf16 where the device multiplies it natively, fp32 elsewhere")
    seed: int = Field(0, description="TRL seed")
    score_batch_size: int = Field(16, ge=1, description="sequences per reward-model forward pass",
                                  json_schema_extra={"flag": "--batch-size"})
    save_policy: bool = Field(False, description="also save the trained policy to out_dir/policy")
    max_prompt_chars: int | None = Field(1500, ge=1, description="skip longer in-distribution prompts")
    threads: int | None = Field(None, ge=1, description=THREADS)
    device: str = Field("auto", description=DEVICE_HELP + " (proxy and gold; TRL places the policy)")


class RelabelSettings(Strict):
    """Everything ``smorm relabel`` does is a function of these (recorded in ``OUT``'s provenance file).

    Gold labels for a proxy's training data, as GRM's RLHF data generation writes them
    (YangRui2015/Generalizable-Reward-Model, ``rlhf/data_generation/obtain_gold_score.py``), after
    Gao et al. 2023 and Coste et al. 2024 (label noise 0 or 25%).
    """

    gold: str = Field(description="PATH of the gold reward model: a smorm run / model folder (a gated one from "
                      "smorm gate too), an ensemble / Baseline SM folder, or a Hugging Face sequence classifier "
                      "folder or hub id")
    data: str = Field(description="the pairs to relabel: a file, a folder or hf:owner/name[:split] in any pairs "
                      "format smorm reads")
    format: str = Field("auto", description="data adapter of --data (see `smorm ls`), or auto")
    on_error: Literal["error", "skip"] = Field("error", description="a bad record: error stops before the gold "
                                               "scores anything, naming file:line and field; skip drops it "
                                               "(counted in the provenance file's input.skipped)")
    out: Path = Field(description="the relabelled pairs, a JSONL file in the generic pairs format (prompt, chosen, "
                      "rejected, margin, source); OUT's provenance (.provenance.json) and gold scores "
                      "(.scores.safetensors) are written beside it")
    noise: float = Field(0.0, ge=0, lt=1, description="fraction of the kept pairs whose label is flipped, in [0, "
                         "1): round(noise * kept) pairs chosen by a seeded permutation (Coste et al. 2024: 0 or "
                         "0.25)")
    seed: int = Field(0, description="seed of the noise permutation")
    tie_threshold: float = Field(0.0, ge=0, description="pairs whose gold reward difference |delta| is at most "
                                 "this are dropped as ties (0: only exact ties)")
    ratings: Path | None = Field(None, description="also write the gold's attribute predictions (its multi head) "
                                 "for every distinct response, a JSONL file in the generic ratings format (D_M)")
    mode: Literal["F", "L", "M", "G"] | None = Field(None, description="the gold's inference mode whose reward "
                                                     "labels the pairs (default: the gold's own; F for SMORM)")
    device: str = Field("auto", description=DEVICE_HELP)
    batch_size: int = Field(16, ge=1, description="sequences per forward pass of the gold")
    precision: Literal["fp32", "bf16", "auto"] = Field("fp32", description="bf16 autocast when the gold scores "
                                                       "(auto: where the device multiplies bf16 natively)")
    max_length: int | None = Field(None, ge=8, description="tokens per prompt + response (default: the gold's "
                                   "own max_length)")


# ------------------------------------------------------------------------------------ the synthetic-gold recipe

NAME_PATTERN = r"^[A-Za-z0-9][A-Za-z0-9_.-]*$"  # a file and folder name on every system
BON_OWN = ("proxies", "gold", "prompts", "num_prompts", "out_dir", "pool", "import_pool")  # set by the recipe


class SyntheticGold(Strict):
    """The gold of the synthetic setup: trained by the recipe from a run config, or any existing scorer."""

    config: str | None = Field(None, description="run config YAML trained as the gold into OUT/gold (relative to "
                               "the recipe file), e.g. ../recipes/cpu.yaml")
    overrides: list[str] = Field(default_factory=list, description="key=value overrides of that config")
    path: str | None = Field(None, description="an existing gold instead: any scorer smorm loads (run, model, "
                             "gated, ensemble / Baseline SM or Hugging Face classifier folder), relative to the "
                             "working directory like every command's PATH")
    mode: Literal["F", "L", "M", "G"] | None = Field(None, description="the gold's mode for the labels and the "
                                                     "Best-of-N gold score (default: the gold's own)")

    @model_validator(mode="after")
    def _one_gold(self) -> SyntheticGold:
        if (self.config is None) == (self.path is None):
            raise ValueError("give the gold as exactly one of config (trained here) or path (an existing scorer)")
        if self.path is not None and self.overrides:
            raise ValueError("gold.overrides apply to gold.config; an existing gold (path) is used as it is")
        return self


class SyntheticSource(Strict):
    """A pair source relabelled by the gold; the proxies train on its first ``train`` relabelled pairs."""

    name: str = Field(pattern=NAME_PATTERN, description="the label file's name (OUT/labels/noise-P/NAME.jsonl)")
    path: str = Field(description="the pairs (file or folder), relative to the recipe file")
    format: str = Field("auto", description="its data adapter (see `smorm ls`)")
    on_error: Literal["error", "skip"] = Field("error", description="a bad record: error stops the recipe before "
                                               "the gold trains, naming file:line and field; skip drops it")
    train: int = Field(ge=1, description="proxies train on the first this many relabelled pairs")
    heldout_from: int | None = Field(None, ge=1, description="the in-distribution Best-of-N prompts come from the "
                                     "records past this many (default 2 x train: relabelling drops ties, so the "
                                     "training pairs can reach past the first `train` records)")

    @model_validator(mode="after")
    def _heldout_after_training(self) -> SyntheticSource:
        if self.heldout_from is not None and self.heldout_from < self.train:
            raise ValueError(f"heldout_from ({self.heldout_from}) is below train ({self.train})")
        return self


class SyntheticEnsemble(Strict):
    """A seed ensemble of the method's config (000 App. G.1; Coste et al. 2024 Sec. 3 for uwo)."""

    seeds: list[int] = Field(min_length=2, description="one member per seed")
    combine: Literal["mean", "min", "uwo"] = Field("uwo", description="how the members' rewards combine")
    uwo_lambda: float | None = Field(None, ge=0, description="λ of uwo: mean − λ·variance over members")
    mode: Literal["F", "L", "M", "G"] | None = Field(None, description="members' mode before min / uwo")


class SyntheticMethod(Strict):
    """One proxy: a run-config overlay on ``proxy_base`` trained on the gold's labels (dicts merge key by key,
    lists are replaced), a seed ensemble of one, or a Baseline SM of two trained methods."""

    name: str = Field(pattern=NAME_PATTERN, description="the proxy's name: its folder and its curve's label")
    config: dict[str, Any] = Field(default_factory=dict, description="run-config overlay (method, model.heads, "
                                   "losses; data: {pairs: []} for a ratings-only MORM)")
    gold_ratings: bool = Field(False, description="D_M = the gold's attribute predictions for the responses of the "
                               "training pairs (smorm relabel --ratings), read raw")
    modes: list[Literal["F", "L", "M", "G"]] = Field(default_factory=list, description="modes its Best-of-N "
                                                     "curves read (default: its own)")
    ensemble: SyntheticEnsemble | None = Field(None, description="train the config once per seed and combine")
    curves: bool = Field(True, description="draw its Best-of-N curves (false: trained only as a part of a "
                         "Baseline SM)")
    baseline_sm: list[str] | None = Field(None, min_length=2, max_length=2, description="[SORM, MORM]: names of "
                                          "two trained methods averaged (000 Sec. 3); trains nothing")


class SyntheticPromptSet(Strict):
    """A Best-of-N prompt set: ``id`` (held out from the relabelled sources) or a prompt file."""

    name: str = Field(pattern=NAME_PATTERN, description="its pool (OUT/pools/NAME.jsonl.gz) and result folder")
    prompts: str = Field(description="id, or a prompt / data file relative to the recipe file (e.g. MT-Bench)")
    num_prompts: int = Field(ge=1, description="prompts sampled from the set (seeded by bon.prompt_seed)")


class SyntheticConfig(Strict):
    """The synthetic-gold recipe (issue 16 item 2; Gao et al. 2023, Coste et al. 2024): gold -> relabelled
    pairs at each noise -> proxies trained on them -> Best-of-N against the gold, ID and OOD."""

    output_dir: str = Field(description="everything goes here: gold/, labels/, runs/, prompts/, pools/, bon/")
    gold: SyntheticGold
    pairs: list[SyntheticSource] = Field(min_length=1)
    noise: list[float] = Field(default_factory=lambda: [0.0, 0.25], min_length=1,
                               description="label noise levels, each in [0, 1) (Coste et al. 2024: 0 and 0.25)")
    noise_seed: int = Field(0, description="seed of the flipped pairs (smorm relabel --seed)")
    tie_threshold: float = Field(0.0, ge=0, description="smorm relabel --tie-threshold")
    proxy_base: dict[str, Any] = Field(description="the run config every proxy starts from (model, train, "
                                       "data.max_length ...); data.pairs and data.ratings are the gold's labels")
    methods: list[SyntheticMethod] = Field(min_length=1)
    prompt_sets: list[SyntheticPromptSet] = Field(min_length=1)
    pools_dir: str | None = Field(None, description="where the pools are kept (NAME.jsonl.gz + meta), relative to "
                                  "the recipe file; default OUT/pools. A pool depends only on the policy, the "
                                  "sampling settings and the prompts, so it can live in the repo and be reused")
    bon: dict[str, Any] = Field(default_factory=dict, description="smorm bon settings for every Best-of-N run "
                                "(policy, sampling: {num_samples ...}, benches, batch sizes ...)")
    relabel_batch_size: int = Field(16, ge=1, description="sequences per forward pass of the gold when labelling")
    scoring_precision: Literal["fp32", "bf16", "auto"] = Field(
        "fp32", description="the gold's labelling and every Best-of-N scoring pass: bf16 autocast or fp32 (auto: bf16 "
        "where the device multiplies it natively, an AVX512-BF16/AMX CPU or a GPU); bon.bf16 is refused in its favour")
    device: str = Field("auto", description=DEVICE_HELP)

    @model_validator(mode="after")
    def _consistent(self) -> SyntheticConfig:
        for noise in self.noise:
            if not 0 <= noise < 1:
                raise ValueError(f"noise: {noise} is not in [0, 1)")
        if len(set(self.noise)) != len(self.noise):
            raise ValueError(f"noise: levels repeat {self.noise}")
        for field_name, names in (("pairs", [s.name for s in self.pairs]), ("methods", [m.name for m in self.methods]),
                                  ("prompt_sets", [p.name for p in self.prompt_sets])):
            if len(set(names)) != len(names):
                raise ValueError(f"{field_name}: names repeat {names}")
        trained = {m.name for m in self.methods if m.baseline_sm is None}
        for method in self.methods:
            if method.baseline_sm is not None:
                if method.ensemble is not None or method.config:
                    raise ValueError(f"methods.{method.name}: a Baseline SM combines two trained methods; it has "
                                     "no config or ensemble of its own")
                missing = [name for name in method.baseline_sm if name not in trained]
                if missing:
                    raise ValueError(f"methods.{method.name}: baseline_sm names {missing}, not trained methods of "
                                     f"this recipe {sorted(trained)}")
            ensemble = method.ensemble
            if ensemble is not None and (ensemble.combine == "uwo") != (ensemble.uwo_lambda is not None):
                raise ValueError(f"methods.{method.name}.ensemble: uwo_lambda is given exactly when combine is uwo")
        own = sorted(set(self.bon) & set(BON_OWN))
        if own:
            raise ValueError(f"bon: {own} are set by the recipe (proxies, gold and prompt sets come from it)")
        BoNSettings(**self.bon, proxies=["proxy"], gold="gold")  # every other key is a real bon setting
        return self
