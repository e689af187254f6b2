"""Errors raised while reading and validating data.

Adapters raise :class:`FieldError` (a problem in one field of one record) or :class:`DropRecord`
(an intentional drop, e.g. an Arena tie). The loader turns a ``FieldError`` into a
:class:`DataError` that names ``path:line`` and the field, or counts it when skipping.
"""

from __future__ import annotations


class DataError(ValueError):
    """A data file cannot be used as it is.

    The message reads ``path:line: field 'x': problem`` when a single record is at fault.

    Attributes:
        origin: ``path:line`` of the record, or ``""`` for a problem with the whole file.
        field: the field at fault, or ``""``.
        kind: a short reason (``"empty text"``, ``"not finite"`` …) used to count skips.
    """

    def __init__(self, message: str, origin: str = "", field: str = "", kind: str = "") -> None:
        super().__init__(message)
        self.origin = origin
        self.field = field
        self.kind = kind


class FieldError(Exception):
    """A problem in one field of one record; the loader adds the ``path:line``.

    Args:
        field: the field name as it appears in the file (``"chosen"``, ``"metadata.score_chosen"``).
        problem: what is wrong, for a person (``"expected text, got a bare boolean True"``).
        kind: a short reason shared by records with the same problem, used to count skips.
    """

    def __init__(self, field: str, problem: str, kind: str) -> None:
        super().__init__(f"field '{field}': {problem}")
        self.field = field
        self.problem = problem
        self.kind = kind


class DropRecord(Exception):
    """An intentional drop (a tie, a question with one answer); counted in the report, never an error."""

    def __init__(self, reason: str) -> None:
        super().__init__(reason)
        self.reason = reason


class RecordSyntaxError(Exception):
    """A record that cannot be parsed at all (a malformed JSON line); raised by the readers."""

    def __init__(self, origin: str, problem: str) -> None:
        super().__init__(f"{origin}: {problem}")
        self.origin = origin
        self.problem = problem
