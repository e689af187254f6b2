"""Which records each optimizer step sees: D_S and D_M batched independently.

An epoch is a pass over D_S in length-grouped, shuffled batches; D_M is cycled alongside (a new
shuffle each cycle). With ``train.balance_sources`` (MORE, 003 Sec. 4 and App. C) every pair batch
instead takes an equal share from each pair source, each source cycled on its own. The schedule
is a pure function of (seed, micro-step index), so a resumed run sees exactly the batches an
uninterrupted run would. The links of a ranked list read whole (``ranking: {into: list}``) are
batched as one unit (:func:`list_groups`, :func:`group_batches`), never split between batches or
processes, so the ``plackett_luce`` loss sees every list entire.
"""

from __future__ import annotations

import bisect
import math
import random
from collections.abc import Sequence
from dataclasses import dataclass, field
from functools import lru_cache

import torch

from smorm.train.config import TrainConfig
from smorm.types import ListLink


@dataclass
class StepIndices:
    """This process's records for one micro-step, and the global batch sizes they are shards of."""

    pairs: list[int]
    ratings: list[int]
    global_pairs: int = 0
    global_ratings: int = 0


@dataclass
class StepPlan:
    num_pairs: int
    num_ratings: int
    pair_batch_size: int
    rating_batch_size: int
    micro_per_epoch: int
    total_micro: int
    total_steps: int
    grad_accum: int
    world_size: int
    pair_lengths: list[int] = field(default_factory=list, repr=False)
    rating_lengths: list[int] = field(default_factory=list, repr=False)
    source_members: list[list[int]] = field(default_factory=list, repr=False)
    """With balance_sources: the pair indices of each source (empty list: batches are not balanced)."""
    pair_groups: list[list[int]] = field(default_factory=list, repr=False)
    """Pairs that share a batch, each a ranked list's links or one pair (empty list: pairs are batched one by one)."""
    token_budget: int | None = None
    """Pair batches cut by tokens (``pair_lengths``), ``micro_per_epoch`` of them per epoch, not by count."""

    @property
    def steps_per_epoch(self) -> float:
        return self.micro_per_epoch / self.grad_accum

    @classmethod
    def build(cls, train: TrainConfig, num_pairs: int, num_ratings: int, world_size: int,
              pair_source_ids: Sequence[int] | None = None,
              pair_groups: Sequence[Sequence[int]] | None = None,
              pair_lengths: Sequence[int] | None = None) -> StepPlan:
        """The step schedule of a run.

        Args:
            train: the run's train config.
            num_pairs: |D_S|.
            num_ratings: |D_M|.
            world_size: number of processes.
            pair_source_ids: ``[num_pairs]`` source index of each pair; needed for ``train.balance_sources``.
            pair_groups: every pair index in exactly one group, a group being the links of one ranked
                list (:func:`list_groups`); with a group of two or more, batches take whole groups.
            pair_lengths: ``[num_pairs]`` each pair's width (:func:`pair_widths`), by which batches are
                length-grouped; needed for ``train.token_budget`` (batches of about that many tokens).
        """
        if num_pairs == 0 and num_ratings == 0:
            raise ValueError("no training data: both data.pairs and data.ratings are empty")
        source_members = (
            source_groups(pair_source_ids, num_pairs, train.pair_batch_size)
            if train.balance_sources and num_pairs else []
        )
        groups = [list(g) for g in pair_groups or []] if any(len(g) > 1 for g in pair_groups or []) else []
        if groups and train.balance_sources:
            raise ValueError("train.balance_sources draws pairs one at a time and would split ranked lists "
                             "(ranking.into: list)")
        if groups and sorted(i for g in groups for i in g) != list(range(num_pairs)):
            raise ValueError(f"pair_groups must hold each of the {num_pairs} pair indices exactly once")
        if num_pairs:
            # whole lists per batch: the same number of batches as pairs alone would give, unless
            # there are fewer lists than that
            micro_per_epoch = math.ceil(num_pairs / train.pair_batch_size)
            if groups:
                micro_per_epoch = min(micro_per_epoch, len(groups))
            if train.token_budget is not None:
                if pair_lengths is None or len(pair_lengths) != num_pairs:
                    raise ValueError("train.token_budget needs the width of every pair (StepPlan.build(pair_lengths=...))")
                micro_per_epoch = min(num_pairs, math.ceil(sum(pair_lengths) / train.token_budget))
        else:
            micro_per_epoch = math.ceil(num_ratings / train.rating_batch_size)
        total_micro = max(1, math.ceil(train.epochs * micro_per_epoch))
        total_steps = math.ceil(total_micro / train.grad_accum)
        if train.max_steps is not None:  # overrides epochs; D_S is cycled as needed
            total_steps = train.max_steps
            total_micro = total_steps * train.grad_accum
        return cls(num_pairs, num_ratings, train.pair_batch_size, train.rating_batch_size, micro_per_epoch,
                   total_micro, total_steps, train.grad_accum, world_size, source_members=source_members,
                   pair_groups=groups, pair_lengths=list(pair_lengths or []), token_budget=train.token_budget)


def list_groups(links: Sequence[ListLink | None]) -> list[list[int]]:
    """Pair indices grouped by ranked list (a list's links in data order), each other pair on its own;
    empty when no pair belongs to a list."""
    if not any(link is not None for link in links):
        return []
    groups: list[list[int]] = []
    by_list: dict[str, list[int]] = {}
    for index, link in enumerate(links):
        if link is None:
            groups.append([index])
        elif link.list_id in by_list:
            by_list[link.list_id].append(index)
        else:
            by_list[link.list_id] = [index]
            groups.append(by_list[link.list_id])
    return groups


def group_batches(sizes: Sequence[int], widths: Sequence[int], num_batches: int, seed: int,
                  mega_batch: int = 50) -> list[list[int]]:
    """Exactly ``num_batches`` shuffled batches of whole groups (group indices), of similar pair counts.

    Groups are shuffled (seeded), sorted widest first within mega-batches of ``mega_batch`` batches'
    worth of groups (less padding, as :func:`~smorm.data.collate.length_grouped_batches`), then cut
    into ``num_batches`` runs, each run ending at the first group boundary past its share
    ``k * total / num_batches`` of the pairs; so a batch exceeds the even share by less than one
    list, and every epoch has the same number of batches (a resumed run finds its place).

    Args:
        sizes: ``[G]`` pairs in each group.
        widths: ``[G]`` the widest row of each group.
        num_batches: at most ``G``.
        seed: the epoch's seed.
    """
    if not 1 <= num_batches <= len(sizes):
        raise ValueError(f"cannot cut {len(sizes)} groups into {num_batches} batches")
    rng = random.Random(seed)
    order = list(range(len(sizes)))
    rng.shuffle(order)
    span = max(1, mega_batch * len(order) // num_batches)
    order = [g for start in range(0, len(order), span)
             for g in sorted(order[start : start + span], key=lambda g: -widths[g])]
    cumulative = [0]
    for group in order:
        cumulative.append(cumulative[-1] + sizes[group])
    cuts, previous = [], 0
    for k in range(1, num_batches):
        end = bisect.bisect_left(cumulative, k * cumulative[-1] / num_batches)
        previous = min(max(end, previous + 1), len(order) - (num_batches - k))
        cuts.append(previous)
    batches = [order[a:b] for a, b in zip([0, *cuts], [*cuts, len(order)], strict=True)]
    rng.shuffle(batches)
    return batches


@lru_cache(maxsize=8)
def _epoch_group_batches(groups: tuple[tuple[int, ...], ...], widths: tuple[int, ...], num_batches: int,
                         seed: int) -> list[list[int]]:
    group_widths = [max(widths[i] for i in group) for group in groups]
    return group_batches([len(g) for g in groups], group_widths, num_batches, seed)


@lru_cache(maxsize=8)
def _epoch_token_batches(widths: tuple[int, ...], num_batches: int, seed: int) -> list[list[int]]:
    """One epoch's pair batches under ``train.token_budget``: :func:`group_batches` of one-pair groups
    weighted by their widths, so each batch holds about ``sum(widths) / num_batches`` tokens."""
    return group_batches(list(widths), list(widths), num_batches, seed)


def source_groups(pair_source_ids: Sequence[int] | None, num_pairs: int, batch_size: int) -> list[list[int]]:
    """Pair indices grouped by source (in source-id order), checked for balanced batching."""
    if pair_source_ids is None:
        raise ValueError("train.balance_sources needs the source of every pair (StepPlan.build(pair_source_ids=...))")
    if len(pair_source_ids) != num_pairs:
        raise ValueError(f"pair_source_ids has {len(pair_source_ids)} entries for {num_pairs} pairs")
    groups: dict[int, list[int]] = {}
    for index, source in enumerate(pair_source_ids):
        groups.setdefault(int(source), []).append(index)
    members = [groups[source] for source in sorted(groups)]
    if batch_size < len(members):
        raise ValueError(
            f"train.balance_sources: train.pair_batch_size ({batch_size}) is smaller than the number of pair "
            f"sources ({len(members)}); every source needs at least one pair per batch"
        )
    return members


def source_shares(num_sources: int, batch_size: int, micro: int) -> tuple[list[int], list[int]]:
    """How many pairs each source gives to micro-batch ``micro``, and how many it gave before it.

    Each source gets ``batch_size // num_sources`` pairs; the ``batch_size % num_sources`` left-over
    slots go round-robin over the sources, so over many steps every source gets the same share and
    the batch size never changes. Both lists are closed-form in ``micro`` (resumable).

    Returns:
        ``(shares [S], consumed [S])``: pairs of each source in this batch, and in all earlier ones.
    """
    base, extra = divmod(batch_size, num_sources)
    start = micro * extra  # the round-robin slot counter before this step
    # Source s got the slots k < start with k % S == s: ceil((start - s) / S) of them (never negative).
    consumed = [micro * base + (start - s + num_sources - 1) // num_sources for s in range(num_sources)]
    shares = [base] * num_sources
    for slot in range(start, start + extra):
        shares[slot % num_sources] += 1
    return shares, consumed


@lru_cache(maxsize=64)
def _source_order(size: int, seed: int, source: int, cycle: int) -> tuple[int, ...]:
    # A string seed goes through SHA-512 in `random`, so orders do not depend on PYTHONHASHSEED.
    order = list(range(size))
    random.Random(f"balance:{seed}:{source}:{cycle}").shuffle(order)
    return tuple(order)


def balanced_pair_batch(members: list[list[int]], batch_size: int, micro: int, seed: int) -> list[int]:
    """The global pair batch of micro-step ``micro`` with an equal share from each source (MORE, 003 App. C).

    Each source is an endless stream of its pairs, reshuffled (seeded) at every pass; a batch takes the
    next ``share`` pairs of every stream, sources in id order.
    """
    shares, consumed = source_shares(len(members), batch_size, micro)
    batch: list[int] = []
    for source, (pairs, share, start) in enumerate(zip(members, shares, consumed, strict=True)):
        for position in range(start, start + share):
            cycle, offset = divmod(position, len(pairs))
            batch.append(pairs[_source_order(len(pairs), seed, source, cycle)[offset]])
    return batch


def grouped_batches(lengths: tuple[int, ...], batch_size: int, seed: int) -> list[list[int]]:
    """Shuffled batches of indices; similar lengths share a batch to cut padding."""
    try:
        from smorm.data.collate import length_grouped_batches
    except ImportError:  # pragma: no cover - the data layer provides it
        length_grouped_batches = None
    if length_grouped_batches is not None:
        return length_grouped_batches(list(lengths), batch_size, shuffle=True, seed=seed)
    generator = torch.Generator().manual_seed(seed)
    order = torch.randperm(len(lengths), generator=generator).tolist()
    return [order[i : i + batch_size] for i in range(0, len(order), batch_size)]


@lru_cache(maxsize=8)
def _epoch_batches(lengths: tuple[int, ...], batch_size: int, seed: int) -> list[list[int]]:
    return grouped_batches(lengths, batch_size, seed)


def pair_widths(chosen: Sequence[list[int]], rejected: Sequence[list[int]], chosen_prompt: Sequence[int],
                rejected_prompt: Sequence[int], shared_prompt: bool) -> list[int]:
    """The width each pair's rows will take, by which pairs are length-grouped into batches.

    Unpacked, a pair is two rows of a ``[2B, T]`` batch, so it needs ``max(len(chosen), len(rejected))``
    (grouping by the chosen length alone left 13-25% padding on the shared 1k mix, issue 8). With the
    shared prompt packed once it is one row ``prompt ⊕ chosen ⊕ rejected``: both lengths minus the
    prompt they share (a pair whose prompts differ still counts as one row, a slight overestimate).
    """
    if shared_prompt:
        return [len(c) + len(r) - min(cp, rp) for c, r, cp, rp in zip(chosen, rejected, chosen_prompt,
                                                                      rejected_prompt, strict=True)]
    return [max(len(c), len(r)) for c, r in zip(chosen, rejected, strict=True)]


def step_indices(plan: StepPlan, micro: int, seed: int, rank: int,
                 chosen: list[list[int]], ratings: list[list[int]]) -> StepIndices:
    """Record indices for micro-batch ``micro`` on process ``rank`` (a strided shard of the global batch)."""
    pair_idx: list[int] = []
    rating_idx: list[int] = []
    global_pairs = global_ratings = 0
    if plan.num_pairs and plan.source_members:
        batch = balanced_pair_batch(plan.source_members, plan.pair_batch_size, micro, seed)
        pair_idx = batch[rank :: plan.world_size]
        global_pairs = len(batch)
    elif plan.num_pairs and plan.pair_groups:
        if not plan.pair_lengths:
            plan.pair_lengths = [len(x) for x in chosen]
        epoch, position = divmod(micro, plan.micro_per_epoch)
        groups = tuple(tuple(g) for g in plan.pair_groups)
        batch_groups = _epoch_group_batches(groups, tuple(plan.pair_lengths), plan.micro_per_epoch,
                                            seed * 1000 + epoch)[position]
        # processes take whole lists, strided; their shares may differ in pairs (compute_losses rescales)
        pair_idx = [i for g in batch_groups[rank :: plan.world_size] for i in groups[g]]
        global_pairs = sum(len(groups[g]) for g in batch_groups)
    elif plan.num_pairs and plan.token_budget is not None:
        # every pair a group of one, sized by its width: exactly micro_per_epoch batches of about
        # token_budget tokens each (group_batches cuts at the token shares), the same on a resume
        epoch, position = divmod(micro, plan.micro_per_epoch)
        widths = tuple(plan.pair_lengths)
        batch = _epoch_token_batches(widths, plan.micro_per_epoch, seed * 1000 + epoch)[position]
        pair_idx = batch[rank :: plan.world_size]
        global_pairs = len(batch)
    elif plan.num_pairs:
        if not plan.pair_lengths:
            plan.pair_lengths = [len(x) for x in chosen]
        epoch, position = divmod(micro, plan.micro_per_epoch)
        batches = _epoch_batches(tuple(plan.pair_lengths), plan.pair_batch_size, seed * 1000 + epoch)
        pair_idx = batches[position][rank :: plan.world_size]
        global_pairs = len(batches[position])
    if plan.num_ratings:
        if not plan.rating_lengths:
            plan.rating_lengths = [len(x) for x in ratings]
        per_cycle = math.ceil(plan.num_ratings / plan.rating_batch_size)
        cycle, position = divmod(micro, per_cycle)
        batches = _epoch_batches(tuple(plan.rating_lengths), plan.rating_batch_size, seed * 1000 + 500 + cycle)
        rating_idx = batches[position][rank :: plan.world_size]
        global_ratings = len(batches[position])
    return StepIndices(pair_idx, rating_idx, global_pairs, global_ratings)
