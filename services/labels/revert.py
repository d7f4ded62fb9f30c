"""Rollback: which events a revert selects, what an unrevert undoes, what labels become.

A revert never deletes: it makes a new version in which the selected events
no longer count. An unrevert (revert of a revert) makes a new version in which
the events a revert excluded count again, unless something since changed them.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from datetime import datetime
from typing import Any

from pydantic import BaseModel, Field, model_validator

from shared.limits import BatchId, EventRef, UserId, Version

from .versions import EXCLUDE, INCLUDE, Row, current_by_item, utc


class RevertSelector(BaseModel):
    """Which counting events to revert; every given criterion must hold (AND)."""

    batch_id: BatchId | None = None
    labeler_id: UserId | None = None
    guideline_version: Version | None = None
    created_from: datetime | None = Field(None, description="labels created at or after")
    created_to: datetime | None = Field(None, description="labels created before")
    event_ids: list[EventRef] | None = Field(None, max_length=100_000)

    @model_validator(mode="after")
    def _something_selected(self) -> RevertSelector:
        if not self.model_dump(exclude_none=True):
            raise ValueError(
                "say what to revert: batch_id, labeler_id, guideline_version, "
                "created_from/created_to or event_ids"
            )
        if self.created_from and self.created_to and self.created_from >= self.created_to:
            raise ValueError("created_from must be before created_to")
        return self

    def matches(self, event: Row) -> bool:
        """The same rule the store turns into SQL, for tests and small sets."""
        created = utc(event["created_at"])
        return (
            (self.batch_id is None or event["batch_id"] == self.batch_id)
            and (self.labeler_id is None or event["labeler_id"] == self.labeler_id)
            and (
                self.guideline_version is None
                or event["guideline_version"] == self.guideline_version
            )
            and (self.created_from is None or created >= utc(self.created_from))
            and (self.created_to is None or created < utc(self.created_to))
            and (self.event_ids is None or str(event["event_id"]) in set(self.event_ids))
        )


def revert_changes(selected_event_ids: Iterable[str]) -> dict[str, int]:
    """A revert: every selected (counting) event stops counting."""
    return {event_id: EXCLUDE for event_id in selected_event_ids}


def unrevert_changes(reverted: Mapping[str, int], excluded_now: set[str]) -> dict[str, int]:
    """Undo a version's changes where they still stand.

    An event the version excluded counts again if it is still excluded; one it
    included stops counting again if it still counts. A later version that
    already undid a change is respected, so the sum per event stays 0 or 1.
    """
    changes: dict[str, int] = {}
    for event_id, delta in reverted.items():
        if delta == EXCLUDE and event_id in excluded_now:
            changes[event_id] = INCLUDE
        elif delta == INCLUDE and event_id not in excluded_now:
            changes[event_id] = EXCLUDE
    return changes


@dataclass(frozen=True)
class ItemEffect:
    """What one item's current label is before and after a set of changes."""

    item_id: str
    before: str | None
    after: str | None
    before_event: str | None
    after_event: str | None

    def as_dict(self) -> dict[str, Any]:
        return self.__dict__.copy()


def effect_of(
    item_events: Iterable[Row], excluded_now: set[str], changes: Mapping[str, int]
) -> list[ItemEffect]:
    """Per affected item, its label now and after ``changes``.

    ``item_events`` are all stored events (up to now) of the affected items;
    ``excluded_now`` the ones that do not count at the head version.
    """
    events = list(item_events)
    excluded_after = (excluded_now | {e for e, d in changes.items() if d == EXCLUDE}) - {
        e for e, d in changes.items() if d == INCLUDE
    }
    before = current_by_item(e for e in events if str(e["event_id"]) not in excluded_now)
    after = current_by_item(e for e in events if str(e["event_id"]) not in excluded_after)
    touched = sorted({e["item_id"] for e in events if str(e["event_id"]) in changes})
    effects = []
    for item in touched:
        b, a = before.get(item), after.get(item)
        effects.append(
            ItemEffect(
                item,
                b["label"] if b else None,
                a["label"] if a else None,
                str(b["event_id"]) if b else None,
                str(a["event_id"]) if a else None,
            )
        )
    return effects
