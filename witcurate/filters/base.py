"""What every filter returns, and how a chain of filters is applied to one record.

A filter looks at one thing (a caption, a URL, an image's size, a whole record) and returns
`True` to keep it, or a `Drop` that says why not: `reason` is a stable code counted in every
manifest (`caption_too_short`, `private_address`, `balanced_out`, ...), `detail` the specifics of
this record (the clipped text, the refused address, the probability it lost to). It is
datatrove's filter contract (`filter()` returns True or (False, reason)) with the detail added,
because a reject row carries both. A Drop is falsy, so `if decision:` reads "kept".

Filters on plain values (`caption_rules(text, ...)`) leave `detail` empty where the value itself
is the detail; the record filters that wrap them fill it in (`Drop.explained`). The Beam side,
one transform that routes each record's first Drop to the rejects, is
`witcurate.pipeline.beam_io.FilterRecords`.
"""

from __future__ import annotations

import dataclasses
from typing import Any, Callable, Iterable, Literal, Sequence, Union


@dataclasses.dataclass(frozen=True)
class Drop:
    reason: str
    detail: str = ""

    def __bool__(self) -> bool:
        return False

    def explained(self, detail: str) -> "Drop":
        """This drop with `detail`, unless it already says something more specific."""
        return self if self.detail else dataclasses.replace(self, detail=detail)


Decision = Union[Literal[True], Drop]
Record = dict[str, Any]
RecordFilter = Callable[[Record], Decision]


def first_drop(decisions: Iterable[Decision]) -> Decision:
    """The first Drop among `decisions` (pass a generator: later checks are not evaluated), or
    True when none drops."""
    for decision in decisions:
        if decision is not True:
            return decision
    return True


def apply_filters(record: Record, filters: Sequence[RecordFilter]) -> Decision:
    """Run `filters` in order on one record: True when every one keeps it, else the first Drop.

    Anything but True or a Drop is a programming error (a bare False would lose the reason)."""
    for check in filters:
        decision = check(record)
        if decision is True:
            continue
        if isinstance(decision, Drop):
            return decision
        raise TypeError(f"filter {getattr(check, '__name__', check)!r} returned {decision!r}; "
                        "a filter returns True or a Drop(reason, detail)")
    return True


@dataclasses.dataclass(frozen=True)
class Required:
    """Drops a record without a value in `column` (None; also "" unless `allow_empty`)."""
    column: str
    reason: str
    detail: str = ""
    allow_empty: bool = True

    def __call__(self, record: Record) -> Decision:
        value = record.get(self.column)
        if value is None or (value == "" and not self.allow_empty):
            return Drop(self.reason, self.detail)
        return True
