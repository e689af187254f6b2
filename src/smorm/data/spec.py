"""What a config names (:class:`DataSpec`) and what loading reports back (:class:`LoadReport`)."""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from smorm.data.readers import COMPRESSIONS, FILE_KINDS, HF_PREFIX, parse_hub_name
from smorm.types import Message

ON_ERROR_POLICIES = ("error", "skip")
RANKING_INTO = ("pairs", "list")


@dataclass
class RankingSpec:
    """Read a ranked or rated source as D_S: responses of one prompt ranked by a score.

    Attributes:
        into: ``pairs``: every ordered pair of responses with distinct scores (ties dropped), for any
            pair loss; ``list``: each list kept whole, as ``n - 1`` linked pairs that the trainer keeps
            in one batch, for the ``plackett_luce`` loss (:func:`smorm.data.lists.list_links`).
        score: for a ratings source, the attribute that ranks the responses, or ``{attribute: weight}``
            for a weighted sum of the ratings rescaled to [0, 1]; None: the source's default (HelpSteer:
            ``helpfulness``, as HelpSteer2 Sec. 4.3 binarizes it; otherwise its only attribute). A ranked
            source (Stack Exchange, generic ``ranked``) carries its own scores and takes no ``score``.
        max_pairs_per_prompt: with ``into: pairs``, keep at most this many pairs of a list (those with
            the largest score gaps).
    """

    into: str = "pairs"
    score: str | dict[str, float] | None = None
    max_pairs_per_prompt: int | None = None

    def __post_init__(self) -> None:
        if self.into not in RANKING_INTO:
            raise ValueError(f"ranking.into must be one of {RANKING_INTO}, got {self.into!r}")
        if isinstance(self.score, dict):
            if not self.score or not all(isinstance(k, str) and isinstance(v, (int, float))
                                         and not isinstance(v, bool) for k, v in self.score.items()):
                raise ValueError(f"ranking.score weights must be a non-empty {{attribute: number}}, got {self.score!r}")
        elif self.score is not None and not (isinstance(self.score, str) and self.score):
            raise ValueError(f"ranking.score must be an attribute name or {{attribute: weight}}, got {self.score!r}")
        if self.max_pairs_per_prompt is not None:
            if self.max_pairs_per_prompt < 1:
                raise ValueError(f"ranking.max_pairs_per_prompt must be >= 1, got {self.max_pairs_per_prompt}")
            if self.into != "pairs":
                raise ValueError("ranking.max_pairs_per_prompt caps the pairs of into: pairs; a list is kept whole")


@dataclass
class DataSpec:
    """One data source as a config names it.

    Attributes:
        path: a file, a folder (every data file below it is read), or ``hf:owner/name[:split]``.
        format: an adapter name from ``smorm.registry.DATA_ADAPTERS`` (``hh``, ``ultrafeedback``,
            ``helpsteer``, ``pairs`` …) or ``auto`` to detect it from the path and first record.
        name: source name used in batches and reports; defaults to the file or folder name.
        limit: keep the first N records that pass validation.
        sample: keep a seeded random N of the records that pass validation, chosen by a hash of
            ``seed`` and each record's content (:func:`smorm.data.sampling.seeded_sample`), so the
            choice does not depend on file order; fewer valid records than N keeps them all (with a
            note in the report). With ``limit`` too, the sample is drawn from the first ``limit``.
        seed: seed of ``sample``.
        options: adapter options (e.g. ``{"view": "safer"}`` for PKU), plus, for every format,
            ``scales`` (``{attribute: [lo, hi]}``), ``rename`` (``{old: new}`` for attributes),
            ``attributes`` (the rating fields to keep / to treat as ratings) and ``hf``
            (keyword arguments for ``datasets.load_dataset``).
        on_error: ``"error"`` or ``"skip"`` for this source; None uses the loader's argument.
        allow_blank_responses: keep a response that is empty or blank (e.g. only a zero-width
            space) and count it in ``LoadReport.blank_responses``. Benchmarks set it, because a
            blank answer is a published answer to be scored; training data keeps it off, where a
            blank response is an ``empty text`` error.
        ranking: read the source's responses ranked per prompt and give pairs
            (:class:`RankingSpec`); ``limit`` and ``sample`` then count lists (prompts), not responses.
    """

    path: str
    format: str = "auto"
    name: str | None = None
    limit: int | None = None
    options: dict[str, Any] = field(default_factory=dict)
    on_error: str | None = None
    sample: int | None = None
    seed: int = 0
    allow_blank_responses: bool = False
    ranking: RankingSpec | None = None

    def __post_init__(self) -> None:
        self.path = str(self.path)
        if isinstance(self.ranking, dict):
            self.ranking = RankingSpec(**self.ranking)
        if self.limit is not None and self.limit < 0:
            raise ValueError(f"DataSpec.limit must be >= 0, got {self.limit}")
        if self.sample is not None and self.sample < 0:
            raise ValueError(f"DataSpec.sample must be >= 0, got {self.sample}")
        if self.on_error is not None and self.on_error not in ON_ERROR_POLICIES:
            raise ValueError(f"DataSpec.on_error must be one of {ON_ERROR_POLICIES}, got {self.on_error!r}")

    @property
    def source(self) -> str:
        """The source name: ``name`` or, by default, the file name without its extensions."""
        if self.name:
            return self.name
        if self.path.startswith(HF_PREFIX):
            return parse_hub_name(self.path)[0].rsplit("/", 1)[-1]
        path = Path(self.path.rstrip("/\\"))
        name = path.name
        for suffix in reversed(path.suffixes):
            if suffix.lower() in COMPRESSIONS or suffix.lower() in FILE_KINDS:
                name = name[: -len(suffix)]
            else:
                break
        return name or str(path)


@dataclass
class LoadReport:
    """What happened while loading one source.

    Attributes:
        source: source name.
        path: what was read.
        read: source records read (lines / rows), including skipped ones.
        kept: records returned (a source record can give several, e.g. PKU gives two rated responses).
        skipped: reason -> count, for records skipped under ``on_error="skip"`` and for intentional
            drops (ties …), which are counted under either policy.
        blank_responses: responses of the kept records that are empty or blank (only with
            ``DataSpec.allow_blank_responses``; otherwise such a record is an error).
        notes: facts worth knowing (detected format, observed scales, merged turns …).
        scales: attribute -> (lo, hi) raw scale that was mapped to [0, 1] (empty for ``rating_scale='raw'``).
    """

    source: str
    path: str
    read: int = 0
    kept: int = 0
    skipped: dict[str, int] = field(default_factory=dict)
    notes: list[str] = field(default_factory=list)
    scales: dict[str, tuple[float, float]] = field(default_factory=dict)
    format: str = ""
    blank_responses: int = 0

    def count_skip(self, reason: str) -> None:
        self.skipped[reason] = self.skipped.get(reason, 0) + 1

    def summary(self) -> str:
        """One line for logs: ``source: kept K of R records (skipped: …)``."""
        skipped = ", ".join(f"{reason}: {n}" for reason, n in sorted(self.skipped.items()))
        return (
            f"{self.source} [{self.format}] {self.path}: kept {self.kept} from {self.read} records"
            + (f" (skipped {skipped})" if skipped else "")
            + (f", {self.blank_responses} blank responses" if self.blank_responses else "")
        )


@dataclass
class PromptRecord:
    """A prompt for generation (Best-of-N, RL), with an optional category (MT-Bench keeps one)."""

    prompt: list[Message]
    category: str | None = None
    source: str = ""
    origin: str = ""
    meta: dict[str, Any] = field(default_factory=dict)


def as_spec(spec: DataSpec | str | dict[str, Any]) -> DataSpec:
    """A DataSpec from a DataSpec, a config dict, a path, or ``format:path`` (e.g. ``rm-bench:../data``).

    ``format:path`` is recognised only when ``format`` is a registered adapter name, so Windows
    drive letters and ``hf:`` paths are left alone.
    """
    if isinstance(spec, DataSpec):
        return spec
    if isinstance(spec, dict):
        return DataSpec(**spec)
    text = str(spec)
    head, sep, rest = text.partition(":")
    if sep and head != "hf" and rest:
        from smorm.registry import DATA_ADAPTERS

        if head in DATA_ADAPTERS or head == "auto":
            return DataSpec(path=rest, format=head)
    return DataSpec(path=text)
