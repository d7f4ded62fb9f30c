"""A review task as the router keeps it: one typed record instead of a dict of strings.

The queue stores a task as a Redis hash of text (its scripts read a few fields) with the
rest in one JSON body; :meth:`ReviewTask.from_fields` is the one reading of that text
and :meth:`ReviewTask.fields` the one writing (gold and adjudication tasks). Routing
writes review tasks' bodies in bulk with the same keys, checked against ``FIELDS`` by a
test, because building this record per prediction would cost the hot path.
"""

from __future__ import annotations

import json
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any, Literal

from shared.events import Candidate, ReviewMode

TaskKind = Literal["review", "gold", "adjudication", "comparison"]

# The body keys of a routed review task (routing builds them without this class).
FIELDS = frozenset({
    "payload", "probs", "model_version", "model_label", "confidence", "prediction_event_id",
    "created_at", "mode", "options", "prelabel", "audit", "audit_rate",
})


def _or_none(value: str | None) -> str | None:
    return value or None


@dataclass(frozen=True, slots=True)
class ReviewTask:
    """What a labeler was handed and what the label made from it must record."""

    task_id: str
    project: str
    item_id: str
    kind: TaskKind
    mode: ReviewMode
    options: list[str]
    payload_json: str = "null"
    prelabel: str | None = None
    model_version: str | None = None
    model_label: str | None = None
    confidence: float | None = None
    audit: bool = False
    audit_rate: float = 1.0
    gold_label: str | None = None
    planted: bool = False
    created_at: str | None = None
    labels_given: dict[str, str] = field(default_factory=dict)  # adjudication only
    consensus: str | None = None
    reason: str | None = None
    prompt: str | None = None  # comparison only: the prompt and the candidates (JSON)
    candidates_json: str = "[]"

    @classmethod
    def from_fields(cls, f: Mapping[str, str]) -> ReviewTask:
        kind = f.get("kind") or "review"
        if kind not in ("review", "gold", "adjudication", "comparison"):
            raise ValueError(f"task {f.get('task_id')!r} has an unknown kind {kind!r}")
        return cls(
            task_id=f["task_id"], project=f["project"], item_id=f["item_id"],
            kind=kind,  # type: ignore[arg-type]  # checked above
            mode=ReviewMode(f["mode"]), options=json.loads(f.get("options") or "[]"),
            payload_json=f.get("payload") or "null", prelabel=_or_none(f.get("prelabel")),
            model_version=_or_none(f.get("model_version")),
            model_label=_or_none(f.get("model_label")),
            confidence=float(f["confidence"]) if f.get("confidence") else None,
            audit=f.get("audit") == "1", audit_rate=float(f.get("audit_rate") or 1.0),
            gold_label=_or_none(f.get("gold_label")), planted=f.get("planted") == "1",
            created_at=_or_none(f.get("created_at")),
            labels_given=json.loads(f.get("labels_given") or "{}"),
            consensus=_or_none(f.get("consensus")), reason=_or_none(f.get("reason")),
            prompt=f.get("prompt"), candidates_json=f.get("candidates") or "[]")

    def fields(self) -> dict[str, str]:
        """The task as the queue stores it (``kind`` a hash field, the rest its body)."""
        out = {
            "kind": self.kind, "payload": self.payload_json, "mode": self.mode.value,
            "options": json.dumps(self.options), "prelabel": self.prelabel or "",
            "model_version": self.model_version or "", "model_label": self.model_label or "",
            "confidence": "" if self.confidence is None else repr(self.confidence),
            "probs": json.dumps({self.model_label: self.confidence}
                                if self.model_label and self.confidence is not None else {}),
            "audit": "1" if self.audit else "0", "audit_rate": repr(self.audit_rate),
            "created_at": self.created_at or "",
        }
        if self.kind == "gold":
            out.update(gold_label=self.gold_label or "", planted="1" if self.planted else "0")
        if self.kind == "comparison":
            out.update(prompt=self.prompt or "", candidates=self.candidates_json,
                       gold_label=self.gold_label or "")
        if self.kind == "adjudication":
            out.update(labels_given=json.dumps(self.labels_given),
                       consensus=self.consensus or "", reason=self.reason or "")
        return out

    def candidates(self) -> list[Candidate]:
        """A comparison task's candidates, as posted (ids, texts, models)."""
        return [Candidate.model_validate(c) for c in json.loads(self.candidates_json)]

    @property
    def capability(self) -> str:
        """What the caller's token must allow to work on it."""
        return "reviewer" if self.kind == "adjudication" else "labeler"

    def reveal(self) -> dict[str, Any]:
        """What the labeler learns after the submit: the model's guess (none for
        adjudication, which never had one)."""
        if self.kind in ("adjudication", "comparison"):  # a comparison reveals per reviewer
            return {}
        return {"model_label": self.model_label, "confidence": self.confidence,
                "model_version": self.model_version}
