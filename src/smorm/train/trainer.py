"""The one trainer: setup -> train -> save. Methods differ by config (losses, heads, data).

D_S (pairs) and D_M (ratings) are batched independently: an epoch is a pass over D_S while D_M
is cycled (000 Sec. 3: the two need not share prompts). Chosen, rejected and rated sequences of a
step go through ONE forward pass. Runs under ``accelerate`` (one CPU, N GPUs, DeepSpeed/FSDP).
"""

from __future__ import annotations

import json
import logging
import math
import os
import signal
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch

from smorm.io import atomic_write_json, atomic_write_text
from smorm.models.cached_scoring import PackedStates, feature_store, lower_states, pad_hidden
from smorm.models.devices import (
    accelerator_device,
    autocast,
    host_device,
    module_device,
    move_to,
    resolve_precision,
)
from smorm.models.feature_cache import CachedFeatures, feature_store_root, fingerprint, sequence_key
from smorm.models.flops import caching_weights, training_weights
from smorm.models.packing import Unit, pack_states, pack_units, packed_hidden_states, slot_tensor
from smorm.models.reward_model import RewardModel, RewardModelConfig, pool_last_token
from smorm.models.scoring import can_pack
from smorm.models.trunk import apply_trunk_mode, enable_gradient_checkpointing, merge_lora
from smorm.train import checkpoint as ckpt
from smorm.train import sharding, tracking
from smorm.train.batches import StepPlan, list_groups, pair_widths, step_indices
from smorm.train.config import RunConfig
from smorm.train.losses_glue import compute_losses
from smorm.train.mfu import CachingWork, WorkCounter, compute_summary, lm_tokens, log_mfu, measured_peak
from smorm.train.prepare import TokenizedData, load_training_data, tokenize
from smorm.types import RewardOutput

logger = logging.getLogger(__name__)

KILL_AFTER_STEP_ENV = "SMORM_KILL_AFTER_STEP"  # fault injection for the resume test: SIGKILL self


@dataclass
class TrainResult:
    output_dir: Path
    model_dir: Path
    steps: int
    final_metrics: dict[str, float]
    summary: dict[str, Any]


HEAD_SCALE_SAMPLE = 512  # training sequences scored at save time for head_scales


def build_model(config: RunConfig, attributes: list[str]) -> RewardModel:
    """Load the backbone and attach the configured heads (seeded, so heads init identically)."""
    from smorm.models.backbone import load_backbone

    backbone = load_backbone(
        config.model.backbone, dtype=config.model.dtype, with_lm_head=config.model.with_lm_head,
        trust_remote_code=config.model.trust_remote_code,
    )
    heads = {}
    for name, head in config.model.heads.items():
        spec = {"kind": head.kind, **head.options}
        if name == "multi":
            spec["out"] = len(attributes)
        heads[name] = spec
    model_config = RewardModelConfig(
        backbone=config.model.backbone, attributes=list(attributes), heads=heads, mode=config.model.mode,
        max_length=config.data.max_length, is_decoder=backbone.is_decoder, with_lm_head=config.model.with_lm_head,
        mode_scale=config.model.mode_scale,
    )
    torch.manual_seed(config.train.seed)
    return RewardModel(backbone.model, backbone.tokenizer, model_config)


class Trainer:
    """Trains a :class:`RewardModel` as a :class:`RunConfig` says."""

    def __init__(self, config: RunConfig, show_progress: bool = True) -> None:
        from accelerate import Accelerator

        self.config = config
        self.show_progress = show_progress
        # load_config checks this too; a RunConfig built in code meets it here, still before the model loads
        tracking.check_tracker_packages(config.train.report_to)
        from accelerate.state import AcceleratorState

        # accelerate keeps process-wide state: a Trainer created earlier in this process (TRL, HF)
        # may have left another mixed precision on. Precision is train.precision, handed to
        # accelerate (which picks the device too), so start from a clean state; the distributed setup is kept.
        AcceleratorState._reset_state()
        self.output_dir = Path(config.output_dir)
        # accelerate places the run on the accelerator when there is one: resolve "auto" for that device.
        # cpu=True where there is none: accelerate joins a torchrun gloo group only then.
        accelerator = accelerator_device()
        self.precision = resolve_precision(config.train.precision, accelerator or host_device())
        self.accelerator = Accelerator(cpu=accelerator is None,
                                       mixed_precision="bf16" if self.precision == "bf16" else "no",
                                       **tracking.accelerator_kwargs(config.train.report_to, self.output_dir))
        self.is_main = self.accelerator.is_main_process

    # ------------------------------------------------------------------ setup

    def setup(self) -> None:
        config = self.config
        started = time.time()
        self.loaded = load_training_data(config)  # validates everything before the model loads
        with sharding.loading(self.accelerator):  # whole, or partitioned as it loads under ZeRO-3
            self.model = build_model(config, self.loaded.attributes)
        self.model.config.rating_scales = self.loaded.rating_scales
        self.data: TokenizedData = tokenize(self.loaded, self.model.tokenizer, config.data.max_length,
                                            self.show_progress and self.is_main)
        self._all_sequences = self.data.all_sequences()  # chosen, rejected, rated: the features' order
        self.lower = apply_trunk_mode(self.model, config.train.trunk, config.train.top_k, config.train.lora.model_dump())
        from smorm.losses import get_loss

        self._loss_needs = [get_loss(loss.name).needs for loss in config.losses]
        self.packing = self._resolve_packing()
        if config.train.gradient_checkpointing:
            enable_gradient_checkpointing(self.model, config.train.trunk)
        self.model.to(self.accelerator.device)  # the caching pass below runs where training will
        self.features: CachedFeatures | None = None
        self.caching: CachingWork | None = None  # what the caching pass computed (for the MFU)
        self.work = WorkCounter()  # what the training steps compute
        if config.train.trunk in ("top_k", "frozen"):
            self.features = self._cache_features()
        data = self.data  # batches grouped by the width a pair's rows really take
        self.plan = StepPlan.build(config.train, data.num_pairs, data.num_ratings,
                                   self.accelerator.num_processes, pair_source_ids=data.pair_source_ids,
                                   pair_groups=list_groups(data.pair_links),
                                   pair_lengths=pair_widths(data.chosen, data.rejected, data.chosen_prompt_lengths,
                                                            data.rejected_prompt_lengths, self.packing))
        self.optimizer = self._optimizer()
        self.scheduler = self._scheduler()
        # The scheduler is not prepared: accelerate would step it once per process per step, which
        # is right for its sharded dataloaders but not for our global-batch schedule.
        sharding.configure_deepspeed(self.accelerator, config.train)  # sizes the engine accelerate builds
        self.model, self.optimizer = self.accelerator.prepare(self.model, self.optimizer)
        self.setup_seconds = time.time() - started

    def _resolve_packing(self) -> bool:
        """Is ``train.shared_prompt`` on for this run? On by default (``auto``) for a causal backbone whose
        attention takes a 4D mask; an encoder, or a GRM loss (whose LM regulariser reads every sequence's
        own hidden states), falls back to padded batches with a message saying so."""
        wanted = self.config.train.shared_prompt
        if wanted is False:
            return False
        reason = None
        if not can_pack(self.model):
            reason = "the backbone is not a causal model whose attention takes a 4D mask (sdpa or eager)"
        elif any("lm" in needs for needs in self._loss_needs):
            reason = "GRM's LM regulariser needs each sequence's own hidden states"
        if reason is None:
            return True
        if self.is_main:
            (logger.warning if wanted is True else logger.info)(
                "train.shared_prompt %s: padded batches, because %s", "off" if wanted is True else "auto -> off", reason)
        return False

    def _sequence_starts(self) -> list[int]:
        """Each training sequence's response start (``all_sequences`` order: chosen, rejected, rated)."""
        data = self.data
        return [*data.chosen_prompt_lengths, *data.rejected_prompt_lengths, *data.rating_prompt_lengths]

    def _cache_features(self) -> CachedFeatures:
        """The lower part's features of every training sequence, from the shared per-sequence store.

        Only sequences the store lacks are computed (on the model's device, kept on the host), so a
        second method or seed on the same data, backbone, depth and precision computes nothing.
        """
        config = self.config
        model = self.model
        sequences = self._all_sequences
        pad_id = model.tokenizer.pad_token_id
        from smorm.data.collate import collate_sequences

        device = module_device(model)
        bf16 = self.precision == "bf16"
        if config.train.trunk == "top_k":
            assert self.lower is not None
            lower = self.lower

            def compute(chunk: list[list[int]]) -> list[torch.Tensor]:
                return lower_states(lower, chunk, pad_id, device, bf16)
        else:

            def compute(chunk: list[list[int]]) -> list[torch.Tensor]:
                batch = move_to(collate_sequences(chunk, pad_id, padding_side="right"), device)
                with torch.no_grad(), self._autocast():
                    hidden = model.encode(batch.input_ids, batch.attention_mask)
                return list(pool_last_token(hidden, batch.attention_mask).float().cpu())

        caching = self.caching = CachingWork(caching_weights(model, config.train.trunk, config.train.top_k))
        plan = packed = None
        if self.packing and sequences:
            # each prompt through the lower layers once for its chosen and rejected, several per row (issue 15)
            starts = {sequence_key(ids): start for ids, start in zip(sequences, self._sequence_starts(), strict=True)}
            run = (self.lower.packed if self.lower is not None
                   else lambda rows: packed_hidden_states(model.base_model, rows))
            packed = PackedStates(run, starts, pad_id, device, bf16,
                                  config.train.cache_batch_size * max(map(len, sequences)),
                                  pooled=config.train.trunk == "frozen", padding_free=config.train.padding_free)
            compute, plan = packed, packed.plan
        storage = getattr(torch, config.train.cache_dtype)
        model.eval()
        # every process gathers (a collective) before the main one computes and the others wait for its cache
        with sharding.gathered(self.accelerator, model.backbone):
            store = feature_store(model, config.train.trunk, config.train.top_k, self.precision, storage,
                                  feature_store_root(config.train.cache_dir))
            with self.accelerator.main_process_first():
                started = time.perf_counter()
                features = store.build(sequences, caching.counting(compute, packed), config.train.cache_batch_size,
                                       dtype=storage, description=f"caching {store.describe['part']} features",
                                       show_progress=self.show_progress and self.is_main, plan=plan,
                                       # a causal trunk's prompt states depend on the prompt alone: stored once
                                       starts=self._sequence_starts() if model.config.is_decoder else None)
                caching.seconds = time.perf_counter() - started
        self.cache_dir = store.root
        return features

    def _optimizer(self) -> torch.optim.Optimizer:
        config = self.config.train
        head_params = [p for p in self.model.heads.parameters() if p.requires_grad]
        head_ids = {id(p) for p in head_params}
        trunk_params = [p for p in self.model.parameters() if p.requires_grad and id(p) not in head_ids]
        groups = [{"params": head_params, "lr": config.head_lr or config.lr}]
        if trunk_params:
            groups.append({"params": trunk_params, "lr": config.lr})
        return torch.optim.AdamW(groups, lr=config.lr, weight_decay=config.weight_decay)

    def _scheduler(self) -> torch.optim.lr_scheduler.LRScheduler:
        from transformers import get_scheduler

        name = {"cosine": "cosine", "linear": "linear", "constant": "constant_with_warmup"}[self.config.train.scheduler]
        warmup = math.ceil(self.config.train.warmup_ratio * self.plan.total_steps)
        return get_scheduler(name, self.optimizer, num_warmup_steps=warmup, num_training_steps=self.plan.total_steps)

    # ------------------------------------------------------------------ train

    def _inputs(self, seq_indices: list[int]) -> dict[str, torch.Tensor]:
        """The step's model inputs, built on the host and moved to the model's device."""
        trunk = self.config.train.trunk
        device = module_device(self.model)
        if trunk == "frozen":
            assert self.features is not None
            return move_to({"pooled": torch.stack([self.features[i] for i in seq_indices])}, device)
        if trunk == "top_k":
            assert self.features is not None
            hidden, mask = pad_hidden([self.features[i] for i in seq_indices])
            return move_to({"hidden_states": hidden, "attention_mask": mask}, device)
        from smorm.data.collate import collate_sequences

        batch = collate_sequences([self._all_sequences[i] for i in seq_indices],
                                  self.model_unwrapped.tokenizer.pad_token_id)
        return move_to({"input_ids": batch.input_ids, "attention_mask": batch.attention_mask}, device)

    def _step_units(self, indices: Any) -> tuple[list[tuple[list[int], int]], list[tuple[int, int]]]:
        """A step's packed units and where each output sits in them.

        A pair whose two sequences start with the same prompt is one unit (the prompt once, then chosen and
        rejected); a pair whose sequences were truncated to different prompts (the prompt is cut from the
        left to fit each response) is two, and each rated response is one, so every score is exactly that
        of its own ``prompt ⊕ response`` sequence.

        Returns:
            ``(units, outputs)``: each unit as (its responses' indices into ``all_sequences``, the prompt
            length they share), and each output (chosen…, rejected…, rated…) as (unit, response).
        """
        data = self.data
        pairs = data.num_pairs
        units: list[tuple[list[int], int]] = []
        chosen_at: list[tuple[int, int]] = []
        rejected_at: list[tuple[int, int]] = []
        rated_at: list[tuple[int, int]] = []
        for i in indices.pairs:
            c, r = data.chosen[i], data.rejected[i]
            cp, rp = data.chosen_prompt_lengths[i], data.rejected_prompt_lengths[i]
            if 0 < cp == rp and cp < len(c) and rp < len(r) and c[:cp] == r[:rp]:
                units.append(([i, pairs + i], cp))
                chosen_at.append((len(units) - 1, 0))
                rejected_at.append((len(units) - 1, 1))
                continue
            for index, sequence, start, target in ((i, c, cp, chosen_at), (pairs + i, r, rp, rejected_at)):
                units.append(([index], min(max(start, 1), len(sequence) - 1)))
                target.append((len(units) - 1, 0))
        for j in indices.ratings:
            sequence = data.rating_ids[j]
            units.append(([2 * pairs + j], min(max(data.rating_prompt_lengths[j], 1), len(sequence) - 1)))
            rated_at.append((len(units) - 1, 0))
        return units, chosen_at + rejected_at + rated_at

    def _packed_inputs(self, indices: Any) -> dict[str, Any]:
        """The step's units packed into padding-free rows (``train.padding_free``: several per row);
        under ``top_k`` the cached lower-layer states laid out the same way, for the top layers only.
        Output rows come back as [chosen, rejected, rated]."""
        units, outputs = self._step_units(indices)
        sequences = self._all_sequences
        packed, slots, rows = pack_units(
            [Unit(sequences[members[0]][:start], [sequences[m][start:] for m in members]) for members, start in units],
            self.model_unwrapped.tokenizer.pad_token_id, self.config.train.padding_free)
        inputs: dict[str, Any] = {"packed": packed, "packed_slots": slot_tensor([slots[u][k] for u, k in outputs])}
        if self.config.train.trunk == "top_k":
            features = self.features
            assert features is not None
            inputs["hidden_states"] = pack_states(
                [(features[members[0]][:start], [features[m][start:] for m in members]) for members, start in units],
                rows)
        return move_to(inputs, module_device(self.model))

    def _autocast(self) -> Any:
        """bf16 autocast on the run's device when the resolved train.precision says so (the same setting
        accelerate got); built here rather than by ``accelerator.autocast()``, which re-creates
        accelerate's shared state on every call."""
        return autocast(self.accelerator.device, self.precision == "bf16")

    @property
    def model_unwrapped(self) -> RewardModel:
        return self.accelerator.unwrap_model(self.model)

    def micro_step(self, micro: int) -> tuple[torch.Tensor, dict[str, float]]:
        """Forward + losses for micro-batch ``micro`` of this process."""
        indices = step_indices(self.plan, micro, self.config.train.seed, self.accelerator.process_index,
                               self.data.chosen, self.data.rating_ids)
        seq = ([i for i in indices.pairs] + [self.data.num_pairs + i for i in indices.pairs]
               + [2 * self.data.num_pairs + j for j in indices.ratings])
        packs = self.packing and self.config.train.trunk != "frozen"  # frozen: the heads read pooled features
        inputs = self._packed_inputs(indices) if packs else self._inputs(seq)
        needs_lm = any("lm" in s for s in self._loss_needs)
        data = self.data
        self.work.add(inputs, lm_tokens(data.chosen, data.rejected, data.chosen_prompt_lengths,
                                        data.rejected_prompt_lengths, indices.pairs) if needs_lm else 0)
        with self._autocast():  # train.precision, resolved once
            output: RewardOutput = self.model(**inputs, return_hidden=needs_lm)
        loss_inputs = inputs
        if needs_lm and "hidden_states" in inputs:
            # top_k: the model ran from cached states; GRM's LM regulariser still needs the token ids it
            # predicts, right-padded like the states (one row per sequence, its own length)
            from smorm.data.collate import collate_sequences

            ids = collate_sequences([self._all_sequences[i] for i in seq], self.model_unwrapped.tokenizer.pad_token_id,
                                    padding_side="right").input_ids
            loss_inputs = {**inputs, "input_ids": ids.to(inputs["hidden_states"].device)}
        return compute_losses(self.config, self.model_unwrapped, output, self.data, indices, loss_inputs,
                              self.accelerator.num_processes)

    def train(self) -> TrainResult:
        config = self.config
        accelerator = self.accelerator
        self._all_sequences = self.data.all_sequences()  # again: a bench or test may have swapped the data
        # the matmul weights a step runs, counted before LoRA is merged away at save time
        self._step_weights = training_weights(self.model_unwrapped, config.train.trunk, config.train.top_k,
                                              lm_head=any("lm" in needs for needs in self._loss_needs))
        self.work = WorkCounter()
        sharding.check_run(accelerator, config)  # before the first step, not after the last
        start_step = self._maybe_resume()
        log_path = self.output_dir / "metrics.jsonl"
        if self.is_main:
            self.output_dir.mkdir(parents=True, exist_ok=True)
            _truncate_log(log_path, start_step)
        tracking.start_trackers(accelerator, config.train.report_to, config.model_dump(mode="json"),
                                self.output_dir, start_step)
        kill_after = int(os.environ.get(KILL_AFTER_STEP_ENV, "0") or 0)
        from tqdm.auto import tqdm

        self.model.train()
        metrics: dict[str, float] = {}
        started = time.perf_counter()
        bar = tqdm(total=self.plan.total_steps, initial=start_step, desc=f"training {config.method}",
                   unit="step", disable=not (self.show_progress and self.is_main))
        for step in range(start_step, self.plan.total_steps):
            totals: dict[str, float] = {}
            for accum in range(config.train.grad_accum):
                micro = step * config.train.grad_accum + accum
                sync = accum == config.train.grad_accum - 1
                with _maybe_no_sync(accelerator, self.model, sync):
                    loss, parts = self.micro_step(micro)
                    sharding.backward(accelerator, loss, config.train.grad_accum, sync)
                for key, value in parts.items():
                    totals[key] = totals.get(key, 0.0) + value / config.train.grad_accum
            totals = _mean_over_processes(accelerator, totals)  # the logged losses are the global batch's
            if config.train.max_grad_norm is not None:
                # under DeepSpeed the engine has clipped already, and this only reads its norm
                grad_norm = accelerator.clip_grad_norm_(
                    [p for p in self.model.parameters() if p.requires_grad], config.train.max_grad_norm)
                totals["grad_norm"] = float(grad_norm)
            self.optimizer.step()  # a no-op under DeepSpeed, whose engine stepped at the last backward
            self.scheduler.step()
            self.optimizer.zero_grad(set_to_none=True)
            metrics = {"step": step + 1, "epoch": round((step + 1) / self.plan.steps_per_epoch, 4),
                       "lr": self.scheduler.get_last_lr()[-1], **totals}
            if self.is_main and ((step + 1) % config.train.log_every == 0 or step + 1 == self.plan.total_steps):
                with open(log_path, "a") as handle:
                    handle.write(json.dumps(metrics) + "\n")
                tracking.log_metrics(accelerator, metrics, step + 1)
            bar.update(1)
            bar.set_postfix(loss=f"{totals.get('loss', float('nan')):.4f}")
            if config.train.checkpoint_every and (step + 1) % config.train.checkpoint_every == 0:
                self._checkpoint(step + 1)
            if kill_after and step + 1 == kill_after:
                os.kill(os.getpid(), signal.SIGKILL)
        bar.close()
        train_seconds = time.perf_counter() - started
        result = self._finish(metrics, train_seconds)
        tracking.finish_trackers(accelerator)
        return result

    # ------------------------------------------------------------------ checkpoints

    def _trainable_state(self) -> dict[str, torch.Tensor]:
        return {n: p.detach().clone() for n, p in self.model_unwrapped.named_parameters() if p.requires_grad}

    def _config_hash(self) -> str:
        return fingerprint(self.config.model_dump(exclude={"train": {"max_steps", "checkpoint_every"}}))

    def _checkpoint(self, step: int) -> None:
        if sharding.optimizer_is_sharded(self.accelerator):
            return  # one process's optimizer shard would resume wrongly; check_run said so
        self.accelerator.wait_for_everyone()
        if self.is_main:
            parts = {"trainable": self._trainable_state(), "optimizer": self.optimizer.state_dict(),
                     "scheduler": self.scheduler.state_dict(), "rng": {"torch": torch.get_rng_state()}}
            ckpt.write_checkpoint(self.output_dir / "checkpoints", step, parts,
                                  {"config_hash": self._config_hash(), "total_steps": self.plan.total_steps},
                                  keep=self.config.train.keep_checkpoints)
        self.accelerator.wait_for_everyone()

    def _maybe_resume(self) -> int:
        latest = ckpt.latest_checkpoint(self.output_dir / "checkpoints")
        if latest is None:
            return 0
        parts, meta = ckpt.read_checkpoint(latest, ["trainable", "optimizer", "scheduler", "rng"])
        if meta.get("config_hash") != self._config_hash():
            raise RuntimeError(
                f"{latest} was written by a run with a different config; use another output_dir "
                "or delete the checkpoints folder to start over"
            )
        missing = self.model_unwrapped.load_state_dict(parts["trainable"], strict=False)
        if missing.unexpected_keys:
            raise RuntimeError(f"{latest}: unexpected tensors {missing.unexpected_keys[:5]}")
        self.optimizer.load_state_dict(parts["optimizer"])
        self.scheduler.load_state_dict(parts["scheduler"])
        torch.set_rng_state(parts["rng"]["torch"])
        if self.is_main:
            logger.info("resuming from %s (step %s of %s)", latest, meta["step"], self.plan.total_steps)
        return int(meta["step"])

    # ------------------------------------------------------------------ finish

    @torch.no_grad()
    def _head_scales(self) -> dict[str, list[float]]:
        """Mean and spread of each head's reward (F: the single head, L: the attribute mean) on the
        training sequences, the scale mode M puts them on (:func:`~smorm.models.reward_model.combine_heads`).

        Measured on a seeded sample of at most ``HEAD_SCALE_SAMPLE`` of the training sequences (pairs'
        chosen and rejected, rated responses), through the same inputs and forward as training (the
        cached lower-layer features under ``top_k``/``frozen``), with the model in eval mode; every
        process computes the same sample, so it works under DDP and the sharded engines alike.
        """
        import random

        model = self.model_unwrapped
        heads = {"F": "single", "L": "multi"}
        if not any(name in model.heads for name in heads.values()):
            return {}
        total = len(self._all_sequences)
        picked = sorted(random.Random(self.config.train.seed).sample(range(total), min(total, HEAD_SCALE_SAMPLE)))
        was_training = self.model.training
        self.model.eval()
        values: dict[str, list[torch.Tensor]] = {"F": [], "L": []}
        step = max(1, self.config.train.cache_batch_size)
        for start in range(0, len(picked), step):
            with self._autocast():
                output: RewardOutput = self.model(**self._inputs(picked[start:start + step]))
            if output.single is not None:
                values["F"].append(output.single.float().cpu())
            if output.attributes is not None:
                values["L"].append(output.attributes.float().mean(dim=-1).cpu())
        self.model.train(was_training)
        scales = {}
        for mode, parts in values.items():
            if parts:
                rewards = torch.cat(parts).double()
                scales[mode] = [float(rewards.mean()), max(float(rewards.std(unbiased=False)), 1e-6)]
        return scales

    def _finish(self, metrics: dict[str, float], train_seconds: float) -> TrainResult:
        self.accelerator.wait_for_everyone()
        model = self.model_unwrapped
        model.config.head_scales = self._head_scales()  # saved with the model: mode M's common scale
        model_dir = self.output_dir / "model"
        summary: dict[str, Any] = {}
        # Under ZeRO-3/FSDP the module holds shards: every process joins the gather, and the main
        # process writes the full tensors it gets back (None when the weights are whole).
        full_state = sharding.gathered_state_dict(self.accelerator, self.model)
        totals = self.work.totals(self.accelerator)  # real tokens of every process's steps
        if self.is_main:
            peak = measured_peak(model, self.precision, self.accelerator.device)
            compute = compute_summary(self._step_weights, totals, train_seconds, self.caching, peak,
                                      self.accelerator.num_processes)
            log_mfu(compute)
            backbone_weights = None
            if self.config.train.trunk == "lora":
                # merged LoRA weights end with requires_grad=False; save them whole, or they would be
                # mistaken for the untouched base and dropped
                merge_lora(model)
                backbone_weights = "full"
            model.save_pretrained(model_dir, backbone_weights=backbone_weights, state_dict=full_state)
            summary = {
                "method": self.config.method,
                "steps": self.plan.total_steps,
                "steps_per_epoch": self.plan.steps_per_epoch,
                "processes": self.accelerator.num_processes,
                "pairs": self.data.num_pairs,
                "rated_responses": self.data.num_ratings,
                "attributes": self.data.attributes,
                "sources": self.data.sources,
                "truncated_sequences": self.data.truncated,
                "trunk": self.config.train.trunk,
                "device": str(self.accelerator.device),
                "precision": self.precision,
                "setup_seconds": round(self.setup_seconds, 1),
                "train_seconds": round(train_seconds, 1),
                "mfu": compute["train"]["mfu"],
                "compute": compute,
                "data_reports": self.loaded.reports,
                "final_metrics": metrics,
                "config": self.config.model_dump(),
            }
            if self.config.train.trunk == "frozen" and "single" in model.heads and "multi" in model.heads:
                summary["note"] = ("trunk=frozen: the two heads share no trainable weights, so SMORM's "
                                   "joint training reduces to two separate linear probes")
            atomic_write_json(self.output_dir / "train_summary.json", summary, default=str, newline=False)
            atomic_write_text(self.output_dir / "config.json", self.config.model_dump_json(indent=2))
        self.accelerator.wait_for_everyone()
        return TrainResult(self.output_dir, model_dir, self.plan.total_steps, metrics, summary)


def train(config: RunConfig, show_progress: bool = True) -> TrainResult:
    trainer = Trainer(config, show_progress=show_progress)
    trainer.setup()
    return trainer.train()


def _mean_over_processes(accelerator: Any, totals: dict[str, float]) -> dict[str, float]:
    """Each logged value averaged over the processes that have it.

    Each process's value is the mean over its share of the batch; a process whose share holds no
    rated response (say) has no regression term, so the processes' keys can differ and the dicts
    are gathered whole rather than as one tensor.
    """
    if accelerator.num_processes == 1:
        return totals
    from accelerate.utils import gather_object

    gathered: list[dict[str, float]] = gather_object([totals])
    keys = sorted({key for part in gathered for key in part})
    return {key: sum(part[key] for part in gathered if key in part) / sum(key in part for part in gathered)
            for key in keys}


def _maybe_no_sync(accelerator: Any, model: Any, sync: bool) -> Any:
    import contextlib

    return contextlib.nullcontext() if sync else accelerator.no_sync(model)


def _truncate_log(path: Path, step: int) -> None:
    """Drop log lines past the resumed step so a resumed run's log reads as one run."""
    if not path.exists():
        return
    if step == 0:
        path.unlink()
        return
    kept = [line for line in path.read_text().splitlines() if line and json.loads(line).get("step", 0) <= step]
    atomic_write_text(path, "".join(line + "\n" for line in kept))
