"""Trace: for one item in one view, which event decided its label and why.

The answer names the event, the labeler, the batch, the guideline and the
model pre-label behind the label, and lists the item's whole history with
whether each event counts in the view and, if not, which version excluded it.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from typing import Any

from .versions import SOURCE_PRECEDENCE, Row, deciding_event, precedence_key

PROVENANCE = (
    "event_id", "label", "labeler_id", "source", "mode", "shown_prelabel",
    "agreed_with_prelabel", "revised_after_reveal", "model_version", "guideline_version",
    "task_id", "batch_id", "confidence", "created_at", "stored_at", "duration_ms",
    "preference",  # a comparison's verdict, the order shown, the models, the reason
)  # fmt: skip


def _provenance(event: Row) -> dict[str, Any]:
    return {key: event.get(key) for key in PROVENANCE}


def trace_item(
    item_id: str,
    events: Iterable[Row],
    counted: set[str],
    excluded_by: Mapping[str, int],
) -> dict[str, Any]:
    """Explain an item's label.

    ``events`` are the item's events visible in the view (stored by its
    cutoff); ``counted`` those that count; ``excluded_by`` maps an excluded
    event to the version that last excluded it.
    """
    history = sorted(events, key=precedence_key, reverse=True)
    decided = deciding_event(e for e in history if str(e["event_id"]) in counted)
    explanation: dict[str, Any] = {"item_id": item_id, "label": None, "decided_by": None}
    if decided is not None:
        rivals = [
            e
            for e in history
            if str(e["event_id"]) in counted and e["event_id"] != decided["event_id"]
        ]
        explanation.update(
            label=decided["label"],
            decided_by=_provenance(decided),
            labeler_id=decided["labeler_id"],
            batch_id=decided["batch_id"],
            guideline_version=decided["guideline_version"],
            model_prelabel={
                "shown_prelabel": decided["shown_prelabel"],
                "model_version": decided["model_version"],
                "agreed_with_prelabel": decided["agreed_with_prelabel"],
            },
            reason=_why(decided, rivals),
        )
    explanation["history"] = [
        {
            **_provenance(e),
            "counts": str(e["event_id"]) in counted,
            "excluded_by_version": excluded_by.get(str(e["event_id"])),
        }
        for e in history
    ]
    return explanation


def _why(decided: Row, rivals: list[Row]) -> str:
    if not rivals:
        return "the only counting label event of the item"
    rank = SOURCE_PRECEDENCE.get(str(decided["source"]), 0)
    outranked = sorted(
        {str(r["source"]) for r in rivals if SOURCE_PRECEDENCE.get(str(r["source"]), 0) < rank}
    )
    same_kind = [r for r in rivals if SOURCE_PRECEDENCE.get(str(r["source"]), 0) == rank]
    parts = []
    if outranked:
        parts.append(f"source '{decided['source']}' outranks {', '.join(outranked)}")
    if same_kind:
        parts.append(f"newest of {len(same_kind) + 1} counting '{decided['source']}'-rank events")
    return "; ".join(parts)
