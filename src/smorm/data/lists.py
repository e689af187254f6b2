"""Ranked lists: responses of one prompt with a score, and the pairs or list links they give.

A source read with ``ranking`` (see :class:`~smorm.data.spec.RankingSpec`) becomes D_S in three
steps, each a pure function here: rated responses are grouped by prompt into lists scored by one
attribute or a weighted sum (:func:`group_ratings`; a ranked format already gives lists), and each
list becomes either every ordered pair with distinct scores (:func:`all_pairs`, ties dropped) or
``n - 1`` strict pairs that name all ``n`` responses with their ranks (:func:`list_links`), from
which the ``plackett_luce`` loss reads the whole list back.
"""

from __future__ import annotations

import difflib
import re
import unicodedata
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field

from smorm.data.errors import DataError
from smorm.types import ListLink, Message, PreferencePair, RankedResponses, RatedResponse

PROMPT_KEY_RULE = "messages as 'role: content' lines, Unicode NFKC, whitespace runs as one space, trimmed, case-folded"
SCORE_DECIMALS = 9  # weighted sums are rounded before comparing, so 0.1 + 0.2 ties with 0.3
_SPACE = re.compile(r"\s+")


def prompt_key(prompt: Sequence[Message]) -> str:
    """The key two prompts are compared by (grouping lists, the ``shared_prompts`` filter).

    Every message counts, its role included, so a multi-turn prompt matches only the same
    conversation; the normalisation is :data:`PROMPT_KEY_RULE` (formatting noise such as a trailing
    newline or a doubled space does not make two prompts different).
    """
    return normalise_text("\n".join(f"{turn['role']}: {turn['content']}" for turn in prompt))


def normalise_text(text: str) -> str:
    """:data:`PROMPT_KEY_RULE` applied to one text (NFKC, whitespace runs collapsed, trimmed, case-folded)."""
    return _SPACE.sub(" ", unicodedata.normalize("NFKC", text)).strip().casefold()


@dataclass
class ListCounts:
    """What turning lists into pairs left out, for the load report.

    Attributes:
        dropped: reason -> lists (or responses) left out, e.g. a prompt with a single response.
        tied_pairs: response pairs of equal score, which give no preference.
        capped_pairs: pairs over ``max_pairs_per_prompt``.
    """

    dropped: dict[str, int] = field(default_factory=dict)
    tied_pairs: int = 0
    capped_pairs: int = 0

    def drop(self, reason: str, count: int = 1) -> None:
        self.dropped[reason] = self.dropped.get(reason, 0) + count


def score_of(ratings: Mapping[str, float], score: str | Mapping[str, float]) -> float | None:
    """The ranking score of one response: one attribute, or ``sum(weight * rating)``; None if a rating is missing."""
    if isinstance(score, str):
        value = ratings.get(score)
        return None if value is None else round(float(value), SCORE_DECIMALS)
    if any(name not in ratings for name in score):
        return None
    return round(sum(float(weight) * float(ratings[name]) for name, weight in score.items()), SCORE_DECIMALS)


def check_score(score: str | Mapping[str, float], found: Sequence[str], where: str) -> None:
    """Every attribute the score names is one the source has; else a DataError with near names."""
    names = [score] if isinstance(score, str) else list(score)
    for name in names:
        if name not in found:
            near = difflib.get_close_matches(name, list(found), n=3, cutoff=0.5)
            hint = f"; did you mean {', '.join(repr(n) for n in near)}?" if near else ""
            raise DataError(f"{where}: ranking.score: attribute {name!r} is not in the data{hint} "
                            f"(attributes: {', '.join(found) or 'none'})", field="ranking.score")


def group_ratings(records: Sequence[RatedResponse], score: str | Mapping[str, float],
                  counts: ListCounts) -> list[RankedResponses]:
    """Rated responses grouped by :func:`prompt_key` into scored lists, in order of first appearance.

    A response without the score's ratings is left out (counted).
    """
    lists: dict[str, RankedResponses] = {}
    for record in records:
        value = score_of(record.ratings, score)
        if value is None:
            counts.drop("responses without the ranking score's ratings")
            continue
        key = prompt_key(record.prompt)
        ranked = lists.get(key)
        if ranked is None:
            ranked = lists[key] = RankedResponses(record.prompt, [], scores=[], source=record.source,
                                                  origin=record.origin, meta={"origins": []})
        assert ranked.scores is not None
        ranked.responses.append(record.response)
        ranked.scores.append(value)
        ranked.meta["origins"].append(record.origin)
    return list(lists.values())


def list_scores(ranked: RankedResponses) -> list[float] | None:
    """The scores of a list: its own, or 1 for ``best`` and 0 for the rest; None when it has neither."""
    if ranked.scores is not None:
        return [float(s) for s in ranked.scores]
    if ranked.best is not None:
        return [1.0 if i == ranked.best else 0.0 for i in range(len(ranked.responses))]
    return None


def distinct_responses(ranked: RankedResponses, scores: Sequence[float],
                       counts: ListCounts) -> tuple[RankedResponses, list[float]]:
    """The list without later copies of a response text (two scores for one text contradict each other; counted)."""
    keep = [i for i, text in enumerate(ranked.responses) if text not in ranked.responses[:i]]
    if len(keep) == len(ranked.responses):
        return ranked, list(scores)
    counts.drop("responses repeated in a list (later copies)", len(ranked.responses) - len(keep))
    trimmed = RankedResponses(ranked.prompt, [ranked.responses[i] for i in keep], [scores[i] for i in keep],
                              source=ranked.source, origin=ranked.origin, meta=ranked.meta)
    return trimmed, [scores[i] for i in keep]


def usable(ranked: RankedResponses, scores: Sequence[float], counts: ListCounts) -> bool:
    """A list gives pairs only with two responses or more and two distinct scores (else counted)."""
    if len(ranked.responses) < 2:
        counts.drop("lists of a single response")
        return False
    if len(set(scores)) < 2:
        counts.drop("lists whose responses all score the same")
        return False
    return True


def _pair(ranked: RankedResponses, scores: Sequence[float], better: int, worse: int,
          link: ListLink | None = None) -> PreferencePair:
    return PreferencePair(ranked.prompt, ranked.responses[better], ranked.responses[worse], source=ranked.source,
                          margin=scores[better] - scores[worse], origin=ranked.origin,
                          meta={**{k: v for k, v in ranked.meta.items() if k != "origins"}, "items": [better, worse]},
                          list_link=link)


def all_pairs(ranked: RankedResponses, scores: Sequence[float], counts: ListCounts,
              max_pairs: int | None = None) -> list[PreferencePair]:
    """Every ordered pair of responses with distinct scores, better one first; the margin is the score gap.

    Pairs come in the order ``(i, j)`` for ``i`` then ``j`` in list order. With ``max_pairs``, the
    pairs with the largest score gaps are kept (the clearest preferences; equal gaps keep list
    order), then put back in that order.
    """
    order = [(i, j) for i in range(len(scores)) for j in range(len(scores)) if scores[i] > scores[j]]
    counts.tied_pairs += sum(1 for i in range(len(scores)) for j in range(i + 1, len(scores))
                             if scores[i] == scores[j])
    if max_pairs is not None and len(order) > max_pairs:
        counts.capped_pairs += len(order) - max_pairs
        widest = sorted(range(len(order)), key=lambda k: (-(scores[order[k][0]] - scores[order[k][1]]), k))
        order = [order[k] for k in sorted(widest[:max_pairs])]
    return [_pair(ranked, scores, i, j) for i, j in order]


def ranks_of(scores: Sequence[float]) -> list[int]:
    """Dense ranks, 0 for the highest score; equal scores share a rank."""
    distinct = sorted(set(scores), reverse=True)
    return [distinct.index(s) for s in scores]


def list_links(ranked: RankedResponses, scores: Sequence[float], list_id: str) -> list[PreferencePair]:
    """The ``n - 1`` strict pairs that carry a whole list of ``n`` responses (every response in one).

    With ranks ``0 .. m-1`` (ties share a rank), each response of rank ``k < m - 1`` is paired with
    the first response of rank ``k + 1``, and each further response of the last rank with the first
    response of rank ``m - 2``. Every pair is a true preference, so any pair loss may read them; the
    ``plackett_luce`` loss joins them back into the list by ``list_id`` and the ranks.
    """
    ranks = ranks_of(scores)
    last = max(ranks)
    first = {rank: ranks.index(rank) for rank in range(last + 1)}
    links = [(i, first[ranks[i] + 1]) for i in range(len(scores)) if ranks[i] < last]
    links += [(first[last - 1], j) for j in range(len(scores)) if ranks[j] == last and j != first[last]]
    return [_pair(ranked, scores, better, worse,
                  ListLink(list_id, better, worse, ranks[better], ranks[worse])) for better, worse in links]
