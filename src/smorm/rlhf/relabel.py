"""Gold labels for a data set: ``smorm relabel`` (issue 16, item 1).

Every pair of a data set is scored with a gold reward model and written back as a pairs file whose
chosen response is the gold's winner. This is the synthetic-preference setup of the reward-hacking
literature: Gao et al. 2023 ("Scaling Laws for Reward Model Overoptimization") label a data set
with a gold model and train proxies on those labels; Coste et al. 2024 ("Reward Model Ensembles
Help Mitigate Overoptimization") do the same with 0% or 25% of the labels flipped; GRM's RLHF data
generation (YangRui2015/Generalizable-Reward-Model, ``rlhf/data_generation/obtain_gold_score.py``)
scores both responses with the gold and keeps the score difference, as this module does.

- Ties: pairs whose gold reward difference ``|Δ|`` is at most ``tie_threshold`` are dropped.
- Noise: ``round(noise · kept)`` of the kept pairs (Python's ``round``), chosen by a permutation
  seeded with ``seed``, have chosen and rejected swapped.
- Margin: every written pair carries ``margin = |Δ|`` (never negative). The ``margin`` loss reads
  it as how far chosen must lead (``-log σ(r_c - r_r - m)``, :func:`smorm.losses.pairwise.margin_loss`),
  so a flipped pair looks exactly like a clean one, as a mislabelled human comparison would; which
  pairs were flipped is recorded in the provenance file only.
- Ratings (optional): the gold's multi-head predictions for every distinct response, as D_M, so
  SMORM's attribute head learns gold-consistent labels.
- Provenance: ``OUT.provenance.json`` (gold, mode, noise, seed, threshold, input, counts, version).
- Resumable: the gold's outputs for every distinct sequence are kept in ``OUT.scores.safetensors``
  under a key of the gold's weights and the token sequences; while scoring, each finished chunk is a
  file of ``OUT.scores.parts/``, so an interrupted run scores only what is missing, and a rerun with
  another noise, seed, threshold or mode scores nothing.
"""

from __future__ import annotations

import json
import logging
import shutil
import time
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import torch

import smorm
from smorm.data.formatting import EncodedSequence, Formatter
from smorm.data.loading import load_pairs
from smorm.data.readers import HF_PREFIX
from smorm.data.spec import DataSpec
from smorm.eval.scoring import score_sequences
from smorm.io import atomic_save_tensors, atomic_write_json, atomic_write_text
from smorm.models.composite import CompositeScorer
from smorm.models.devices import resolve_device, resolve_precision
from smorm.models.feature_cache import fingerprint, sequences_fingerprint, weights_digest
from smorm.models.gate_spec import GATE_HEAD
from smorm.models.hf_scorer import HFRewardModel
from smorm.models.reward_model import RewardModel, reward_for_mode
from smorm.models.scorers import (
    available_modes,
    load_scorer,
    looks_like_hub_id,
    output_from_stored,
    stored_outputs,
)
from smorm.rlhf.settings import RelabelSettings
from smorm.types import Message, PreferencePair, RewardOutput

logger = logging.getLogger(__name__)

CHUNK_SEQUENCES = 2048  # sequences per score part: what an interrupted run can lose at most
REFERENCES = (
    "Gao, Schulman, Hilton 2023, Scaling Laws for Reward Model Overoptimization",
    "Coste, Anwar, Kirk, Krueger 2024, Reward Model Ensembles Help Mitigate Overoptimization (label noise 0 or 25%)",
    "GRM (YangRui2015/Generalizable-Reward-Model), rlhf/data_generation/obtain_gold_score.py",
)
ROW_FIELDS = ("prompt", "response", "source")  # a ratings row's own fields: no attribute may take these names
MARGIN_NOTE = ("|gold reward(chosen) - gold reward(rejected)| in the gold's mode; flipped rows keep it, so a flipped "
               "pair reads like a clean one")
COUNTS_HELP = {
    "read": "records read", "pairs": "pairs loaded", "responses": "distinct (prompt, response) texts",
    "sequences": "distinct token sequences scored (texts cut to the same tokens score once)",
    "kept": "pairs written", "ties_dropped": "pairs with |delta| <= tie_threshold",
    "flipped": "written pairs whose chosen is the gold's loser (their rows, 1-based, in flipped_rows)",
    "gold_agrees": "written pairs whose gold winner is the input's chosen", "truncated": "sequences cut to max_length",
}


def sidecar(out: Path, suffix: str) -> Path:
    """``runs/gold-pairs.jsonl`` -> ``runs/gold-pairs<suffix>`` (the file's last extension replaced)."""
    return out.with_suffix(suffix) if out.suffix else out.with_name(out.name + suffix)


@dataclass
class RelabelResult:
    """What a relabel wrote.

    Attributes:
        out: the pairs file; provenance: its provenance file; ratings: the ratings file (or None).
        counts: read, pairs, sequences, kept, ties_dropped, flipped, gold_agrees (see the provenance file).
        scored: sequences scored by this call (0 when every score came from the score file).
    """

    out: Path
    provenance: Path
    ratings: Path | None
    counts: dict[str, int]
    scored: int


@dataclass
class ResponseTable:
    """The distinct (prompt, response) of a list of pairs, each scored once.

    Attributes:
        prompts, responses, sources: ``[U]`` per distinct response (source: of the first pair naming it).
        chosen, rejected: ``[P]`` index into the table of each pair's chosen and rejected response.
    """

    prompts: list[list[Message]] = field(default_factory=list)
    responses: list[str] = field(default_factory=list)
    sources: list[str] = field(default_factory=list)
    chosen: list[int] = field(default_factory=list)
    rejected: list[int] = field(default_factory=list)


def response_table(pairs: Sequence[PreferencePair]) -> ResponseTable:
    """Index every distinct (prompt, response) of ``pairs``, in order of first appearance."""
    table = ResponseTable()
    index: dict[tuple[str, str], int] = {}

    def lookup(pair: PreferencePair, response: str) -> int:
        key = (json.dumps(pair.prompt, sort_keys=True), response)
        if key not in index:
            index[key] = len(table.responses)
            table.prompts.append(pair.prompt)
            table.responses.append(response)
            table.sources.append(pair.source)
        return index[key]

    for pair in pairs:
        table.chosen.append(lookup(pair, pair.chosen))
        table.rejected.append(lookup(pair, pair.rejected))
    return table


def check_paths(settings: RelabelSettings) -> None:
    """Refuse what would fail or destroy data, naming the option, before anything is loaded."""
    gold = settings.gold
    if not Path(gold).exists() and not looks_like_hub_id(gold):
        raise FileNotFoundError(f"gold: {gold}: no such run, model, composite or classifier folder")
    if settings.data.startswith(HF_PREFIX):
        data = None
    else:
        data = Path(settings.data).resolve()
        if not data.exists():
            raise FileNotFoundError(f"data: {settings.data}: no such file or folder")
    outputs = {"out": settings.out.resolve()}
    if settings.ratings is not None:
        outputs["ratings"] = settings.ratings.resolve()
        if outputs["ratings"] == outputs["out"]:
            raise ValueError(f"ratings: {settings.ratings} is also --out; give the ratings a file of their own")
    for name, path in outputs.items():
        if data is not None and (path == data or data in path.parents):
            raise ValueError(f"{name}: {path} would overwrite or join the input data {settings.data}; "
                             "write it elsewhere")
        if path.is_dir():
            raise ValueError(f"{name}: {path} is a folder; give a file name (e.g. gold-pairs.jsonl)")


def check_gold(gold: Any, settings: RelabelSettings) -> tuple[str, list[str]]:
    """``(mode, attribute names)`` of the loaded gold; refuses a mode it lacks, or ``--ratings`` without a
    multi head, before anything is scored."""
    mode = settings.mode or getattr(gold.config, "mode", "F")
    offered = available_modes(gold)
    if mode not in offered:
        raise ValueError(f"mode: the gold {settings.gold} offers mode(s) {', '.join(offered)}, not {mode}")
    names = list(getattr(gold.config, "attributes", []) or []) if "multi" in set(gold.heads) else []
    if settings.ratings is not None:
        if not names:
            raise ValueError(f"ratings: the gold {settings.gold} has no attribute (multi) head to rate responses with")
        taken = sorted(set(names) & set(ROW_FIELDS))
        if taken:
            raise ValueError(f"ratings: the gold's attribute(s) {taken} would clash with a ratings row's own fields")
    return mode, names


def gold_kind(scorer: Any) -> str:
    """``smorm`` (``smorm-gated`` with a gate), ``composite`` or ``hf-classifier``."""
    if isinstance(scorer, CompositeScorer):
        return "composite"
    if isinstance(scorer, HFRewardModel):
        return "hf-classifier"
    if isinstance(scorer, RewardModel):
        return "smorm-gated" if GATE_HEAD in scorer.heads else "smorm"
    return type(scorer).__name__


def gold_digest(scorer: Any) -> str:
    """A hash of what decides the gold's outputs: its weights (values sampled, dtypes) and its config.

    By the weights rather than the folder's file times, so a gold retrained into the same folder is
    scored again and an untouched one is not, whatever happened to its files' dates.
    """
    modules = getattr(scorer, "members", None) or [getattr(scorer, "model", scorer)]
    digests = [weights_digest(module.named_parameters()) for module in modules]
    return fingerprint(digests, repr(getattr(scorer, "config", None)))


def read_tensors(path: Path, key: str) -> dict[str, torch.Tensor] | None:
    """The tensors of a score file written under ``key``; None when it is missing, unreadable or stale."""
    from safetensors import SafetensorError, safe_open

    if not path.is_file():
        return None
    try:
        with safe_open(str(path), framework="pt") as handle:
            if (handle.metadata() or {}).get("key") != key:
                return None
            return {name: handle.get_tensor(name) for name in handle.keys()}  # noqa: SIM118
    except (SafetensorError, OSError) as error:
        logger.warning("%s: unreadable score file, scoring again (%s)", path, error)
        return None


def gold_outputs(scorer: Any, sequences: list[list[int]], response_starts: list[int], scores: Path, key: str,
                 batch_size: int, chunk_size: int = CHUNK_SEQUENCES, show_progress: bool = False,
                 bf16: bool = False) -> tuple[RewardOutput, int]:
    """The gold's outputs for ``sequences`` (``[U]`` rows), read from ``scores`` when it holds ``key``.

    Otherwise the sequences are scored ``chunk_size`` at a time; each finished chunk is written to
    ``<scores stem>.parts/`` at once, so an interrupted pass resumes at the first missing chunk, and the
    whole pass ends in ``scores`` (the parts are then removed).

    Returns:
        The outputs in input order and how many sequences this call scored.
    """
    stored = read_tensors(scores, key)
    if stored is not None:
        return output_from_stored(stored), 0
    parts_dir = scores.with_suffix(".parts")  # OUT.scores.safetensors -> OUT.scores.parts/
    parts: list[dict[str, torch.Tensor]] = []
    scored = 0
    for start in range(0, len(sequences), chunk_size):
        stop = min(start + chunk_size, len(sequences))
        part_path = parts_dir / f"{key}-{start:09d}-{stop:09d}.safetensors"
        part = read_tensors(part_path, key)
        if part is None:
            output = score_sequences(scorer, sequences[start:stop], batch_size, bf16, show_progress,
                                     f"gold: sequences {start}-{stop} of {len(sequences)}",
                                     response_starts[start:stop])
            part = stored_outputs(output)
            atomic_save_tensors(part_path, part, metadata={"key": key, "start": str(start), "stop": str(stop)})
            scored += stop - start
        parts.append(part)
    merged = {name: torch.cat([part[name] for part in parts]) for name in parts[0]}
    atomic_save_tensors(scores, merged, metadata={"key": key, "sequences": str(len(sequences))})
    shutil.rmtree(parts_dir, ignore_errors=True)
    return output_from_stored(merged), scored


def distinct_sequences(encoded: Sequence[EncodedSequence]) -> tuple[list[list[int]], list[int], list[int]]:
    """``(sequences [S], response_starts [S], slot [U])``: the distinct token sequences of ``encoded`` and,
    per encoded response, the index of its sequence. Responses the gold sees as the same tokens (texts
    cut to the same tail by ``max_length``) are scored once, so their pair is an exact tie."""
    slots: dict[tuple[int, ...], int] = {}
    sequences: list[list[int]] = []
    starts: list[int] = []
    slot: list[int] = []
    for sequence in encoded:
        ids = tuple(sequence.input_ids)
        if ids not in slots:
            slots[ids] = len(sequences)
            sequences.append(sequence.input_ids)
            starts.append(sequence.response_start)
        slot.append(slots[ids])
    return sequences, starts, slot


def labelled_rows(pairs: Sequence[PreferencePair], delta: np.ndarray, kept: np.ndarray, flipped: np.ndarray
                  ) -> tuple[list[str], list[int]]:
    """The JSON lines of the kept pairs, chosen = the gold's winner except in the ``flipped`` rows.

    Args:
        delta: ``[P]`` gold reward of each pair's input chosen minus its input rejected.
        kept: indices of the pairs written, in input order; flipped: indices into ``kept``.

    Returns:
        The lines and the 1-based rows (lines) whose label is flipped.
    """
    flips = set(flipped.tolist())
    rows, flipped_rows = [], []
    for row, index in enumerate(kept.tolist()):
        pair = pairs[index]
        winner, loser = (pair.chosen, pair.rejected) if delta[index] > 0 else (pair.rejected, pair.chosen)
        if row in flips:
            winner, loser = loser, winner
            flipped_rows.append(row + 1)
        rows.append(json.dumps({"prompt": pair.prompt, "chosen": winner, "rejected": loser,
                                "margin": float(abs(delta[index])), "source": pair.source}, ensure_ascii=False))
    return rows, flipped_rows


def flipped_pairs(kept: int, noise: float, seed: int) -> np.ndarray:
    """Sorted indices (into the kept pairs) of the ``round(noise · kept)`` pairs whose label is flipped:
    the first ones of a permutation seeded with ``seed``."""
    count = round(noise * kept)
    return np.sort(np.random.default_rng(seed).permutation(kept)[:count])


def write_ratings(path: Path, table: ResponseTable, names: list[str], attributes: np.ndarray) -> None:
    """One generic ``ratings`` row per distinct response: prompt, response, one field per attribute, source.

    Args:
        attributes: ``[U, K]`` the gold's multi-head predictions, columns in the order of ``names``.
    """
    lines = [json.dumps({"prompt": prompt, "response": response,
                         **{name: float(value) for name, value in zip(names, values, strict=True)},
                         "source": source}, ensure_ascii=False)
             for prompt, response, source, values in zip(table.prompts, table.responses, table.sources,
                                                         attributes.tolist(), strict=True)]
    atomic_write_text(path, "".join(line + "\n" for line in lines))


def ratings_block(path: Path, names: list[str], attributes: np.ndarray, gold: Any) -> dict[str, Any]:
    """The provenance entry of the ratings file, with a ``data.ratings`` entry a run config can use as is.

    The declared scale of each attribute is ``[min(0, lowest), max(1, highest)]`` of the predictions:
    a gold trained on unit ratings predicts on [0, 1], and when every prediction lies there smorm's
    default ``rating_scale: unit`` reads them unchanged; ``data.rating_scale: raw`` always does.
    """
    observed = {name: [float(attributes[:, k].min()), float(attributes[:, k].max())] for k, name in enumerate(names)}
    scales = {name: [min(0.0, low), max(1.0, high)] for name, (low, high) in observed.items()}
    return {
        "path": str(path), "rows": int(attributes.shape[0]), "attributes": names, "observed": observed,
        "scales": scales, "gold_rating_scales": getattr(gold.config, "rating_scales", None) or {},
        "data_source": {"path": str(path), "format": "ratings", "options": {"attributes": names, "scales": scales}},
    }


def relabel(settings: RelabelSettings, *, show_progress: bool = False, chunk_size: int = CHUNK_SEQUENCES
            ) -> RelabelResult:
    """Score every pair of ``settings.data`` with the gold and write its labels (see the module docstring)."""
    check_paths(settings)
    spec = DataSpec(path=settings.data, format=settings.format)
    pairs, report = load_pairs(spec, settings.on_error)  # a bad record fails here, naming path:line and field
    if not pairs:
        raise ValueError(f"data: {settings.data}: no pairs to relabel ({report.summary()})")
    gold = load_scorer(settings.gold, device=settings.device, max_length=settings.max_length)
    mode, names = check_gold(gold, settings)
    table = response_table(pairs)
    formatter = Formatter(gold.tokenizer, gold.config.max_length)
    encoded = [formatter.encode(p, r) for p, r in zip(table.prompts, table.responses, strict=True)]
    sequences, starts, slot = distinct_sequences(encoded)
    digest = gold_digest(gold)
    precision = resolve_precision(settings.precision, resolve_device(settings.device))
    key = fingerprint(digest, sequences_fingerprint(sequences), *(["bf16"] if precision == "bf16" else []))
    scores_path = sidecar(settings.out, ".scores.safetensors")
    output, scored = gold_outputs(gold, sequences, starts, scores_path, key, settings.batch_size, chunk_size,
                                  show_progress, bf16=precision == "bf16")

    rewards = reward_for_mode(output, mode).double().numpy()[slot]  # [U]
    delta = rewards[table.chosen] - rewards[table.rejected]  # [P] gold reward of the input's chosen minus rejected
    kept = np.flatnonzero(np.abs(delta) > settings.tie_threshold)
    rows, flipped_rows = labelled_rows(pairs, delta, kept, flipped_pairs(len(kept), settings.noise, settings.seed))
    atomic_write_text(settings.out, "".join(line + "\n" for line in rows))

    ratings_entry = None
    if settings.ratings is not None:
        assert output.attributes is not None
        attributes = output.attributes.double().numpy()[slot]  # [U, K]
        write_ratings(settings.ratings, table, names, attributes)
        ratings_entry = ratings_block(settings.ratings, names, attributes, gold)

    counts = {"read": report.read, "pairs": len(pairs), "responses": len(table.responses),
              "sequences": len(sequences), "kept": len(kept),
              "ties_dropped": len(pairs) - len(kept), "flipped": len(flipped_rows),
              "gold_agrees": int((delta[kept] > 0).sum()), "truncated": formatter.num_truncated}
    provenance = {
        "command": "smorm relabel", "gold": settings.gold, "gold_kind": gold_kind(gold), "gold_digest": digest,
        "scores_key": key, "precision": precision, "mode": mode, "noise": settings.noise, "seed": settings.seed,
        "tie_threshold": settings.tie_threshold, "max_length": int(gold.config.max_length),
        "input": {"path": settings.data, "format": settings.format, "detected_format": report.format,
                  "source": report.source, "skipped": report.skipped, "notes": report.notes},
        "counts": counts, "counts_help": COUNTS_HELP, "flipped_rows": flipped_rows, "margin": MARGIN_NOTE,
        "scores": str(scores_path), "ratings": ratings_entry, "out": str(settings.out),
        "settings": settings.model_dump(mode="json"), "smorm_version": smorm.__version__,
        "created": time.strftime("%Y-%m-%dT%H:%M:%S%z"), "references": list(REFERENCES),
    }
    provenance_path = atomic_write_json(sidecar(settings.out, ".provenance.json"), provenance)
    logger.info("relabelled %s: %d of %d pairs kept, %d flipped, %d sequences scored now", settings.data,
                len(kept), len(pairs), len(flipped_rows), scored)
    return RelabelResult(settings.out, provenance_path, settings.ratings, counts, scored)
