"""What a label-set version means: which events count, which one decides an item, diffs.

A version is an immutable snapshot stored as a cutoff (events stored at or
before it are candidates) plus changes: each change says an event stops
counting (+1) or counts again (-1). Versions of a project form one line, so
the events excluded in version *n* are those whose changes in versions up to
*n* sum to more than zero; a revert excludes only counting events and an
unrevert includes only excluded ones, so the sum is always 0 or 1.

Precedence of the current label of an item: adjudicated over consensus over
human (and imported) over auto; the newest within a kind (created_at, then
stored_at, then event id, so the choice is total and repeatable).
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any

from shared.events import LabelSource

SOURCE_PRECEDENCE: dict[str, int] = {
    LabelSource.adjudicated.value: 4,
    LabelSource.consensus.value: 3,
    LabelSource.human.value: 2,
    LabelSource.imported.value: 2,
    LabelSource.auto.value: 1,
}
EXCLUDE, INCLUDE = 1, -1

Row = Mapping[str, Any]


def utc(moment: datetime) -> datetime:
    """SQLite returns naive datetimes; every stored time is UTC."""
    return moment.replace(tzinfo=UTC) if moment.tzinfo is None else moment.astimezone(UTC)


def precedence_key(event: Row) -> tuple[int, datetime, datetime, str]:
    """Sort key: the greatest key decides the item's label."""
    return (
        SOURCE_PRECEDENCE.get(str(event["source"]), 0),
        utc(event["created_at"]),
        utc(event["stored_at"]),
        str(event["event_id"]),
    )


def deciding_event(events: Iterable[Row]) -> Row | None:
    """The event that decides one item's label among the events that count, or None."""
    return max(events, key=precedence_key, default=None)


def current_by_item(events: Iterable[Row]) -> dict[str, Row]:
    """The deciding event of every item among ``events`` (all counting)."""
    best: dict[str, Row] = {}
    for event in events:
        item = event["item_id"]
        if item not in best or precedence_key(event) > precedence_key(best[item]):
            best[item] = event
    return best


def excluded_ids(changes: Iterable[tuple[str, int]]) -> set[str]:
    """Events that do not count after applying ``(event_id, delta)`` changes in order."""
    total: dict[str, int] = {}
    for event_id, delta in changes:
        total[event_id] = total.get(event_id, 0) + delta
    return {event_id for event_id, n in total.items() if n > 0}


@dataclass(frozen=True)
class ItemChange:
    item_id: str
    before: str | None
    after: str | None
    before_event: str | None
    after_event: str | None


@dataclass
class LabelDiff:
    """Per item, between two views: labels added, removed, changed (label differs)."""

    added: list[ItemChange] = field(default_factory=list)
    removed: list[ItemChange] = field(default_factory=list)
    changed: list[ItemChange] = field(default_factory=list)

    def as_dict(self) -> dict[str, Any]:
        return {
            "counts": {
                "added": len(self.added),
                "removed": len(self.removed),
                "changed": len(self.changed),
            },
            "added": [c.__dict__ for c in self.added],
            "removed": [c.__dict__ for c in self.removed],
            "changed": [c.__dict__ for c in self.changed],
        }


def diff_labels(before: Mapping[str, Row], after: Mapping[str, Row]) -> LabelDiff:
    """Compare two ``item_id -> deciding event`` maps.

    An item whose deciding event changed but whose label stayed the same is not
    a change of the label set; the trace shows the new provenance.
    """
    result = LabelDiff()
    for item in sorted(set(before) | set(after)):
        b, a = before.get(item), after.get(item)
        change = ItemChange(
            item,
            b["label"] if b else None,
            a["label"] if a else None,
            str(b["event_id"]) if b else None,
            str(a["event_id"]) if a else None,
        )
        if b is None:
            result.added.append(change)
        elif a is None:
            result.removed.append(change)
        elif b["label"] != a["label"]:
            result.changed.append(change)
    return result
