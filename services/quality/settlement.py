"""From a fitted aggregator to what the quality service must say: consensus, adjudication.

A pure step between :mod:`services.quality.consensus` and the streams. Given the
current votes and what was already said, it decides which consensus labels are new
(only a changed label is published again, under a fresh revision number so that a
label that flips back is still a new event), which items need an adjudicator
(a low posterior or a split vote; once asked, not asked again until adjudicated),
and how often each labeler agrees with the consensus.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any

import numpy as np

from services.quality.agreement import Triples
from services.quality.consensus import DawidSkene, needs_adjudication
from shared.events import AdjudicationReason

__all__ = ["AdjudicationRequest", "ConsensusLabel", "Settlement", "settle"]

CONSENSUS_VERSION = "dawid-skene/1"


@dataclass(frozen=True, slots=True)
class ConsensusLabel:
    item_id: str
    label: str
    confidence: float
    revision: int


@dataclass(frozen=True, slots=True)
class AdjudicationRequest:
    item_id: str
    labels: dict[str, str]
    consensus: str
    confidence: float
    reason: AdjudicationReason


@dataclass
class Settlement:
    publish: list[ConsensusLabel] = field(default_factory=list)
    adjudicate: list[AdjudicationRequest] = field(default_factory=list)
    labeler_agreement: dict[str, dict[str, Any]] = field(default_factory=dict)
    confusion: dict[str, dict[str, dict[str, float]]] = field(default_factory=dict)
    classes: list[str] = field(default_factory=list)
    items_with_consensus: int = 0
    mean_confidence: float | None = None


def settle(
    votes: Mapping[str, Mapping[str, str]],
    *,
    published: Mapping[str, tuple[str, int]],
    requested: set[str],
    adjudicated: Mapping[str, str],
    min_votes: int = 2,
    min_confidence: float = 0.8,
) -> Settlement:
    """Consensus for every item with at least ``min_votes`` human votes.

    ``votes``: item -> {labeler: label}; ``published``: item -> (label, revision) last
    published; ``requested``: items already sent to adjudication; ``adjudicated``:
    item -> the adjudicator's label, which settles the item for good.
    """
    rows = [(item, who, label) for item, on_item in votes.items()
            for who, label in on_item.items()]
    out = Settlement()
    if not rows:
        return out
    triples = Triples(*(np.asarray(col, dtype=str) for col in zip(*rows, strict=True)))
    model = DawidSkene().fit(triples)
    items = model.items_.tolist()
    classes = model.classes_.tolist()
    confidence = model.probas_.max(axis=1)
    flagged = needs_adjudication(model.probas_, model.vote_counts_,
                                 min_confidence=min_confidence)
    split = _split(model.vote_counts_)
    out.classes = [str(c) for c in classes]
    chosen_confidences = []
    for row, item in enumerate(items):
        on_item = votes[item]
        if len(on_item) < min_votes:
            continue
        out.items_with_consensus += 1
        label = str(model.labels_[item])
        p = round(float(confidence[row]), 6)
        chosen_confidences.append(p)
        if item in adjudicated:
            continue
        last = published.get(item)
        if last is None or last[0] != label:
            out.publish.append(ConsensusLabel(item, label, p, 0 if last is None else last[1] + 1))
        if flagged[row] and item not in requested:
            out.adjudicate.append(AdjudicationRequest(
                item, dict(on_item), label, p,
                "split_vote" if split[row] else "low_posterior"))
    if chosen_confidences:
        out.mean_confidence = float(np.mean(chosen_confidences))
    out.labeler_agreement = _agreement_with_consensus(votes, model.labels_, adjudicated,
                                                      min_votes)
    for w, who in enumerate(model.labelers_.tolist()):
        out.confusion[str(who)] = {
            str(true): {str(given): round(float(model.errors_[w, k, j]), 4)
                        for j, given in enumerate(classes)}
            for k, true in enumerate(classes)
        }
    return out


def _split(vote_counts: np.ndarray) -> np.ndarray:
    if vote_counts.shape[1] < 2:
        return np.zeros(len(vote_counts), dtype=bool)
    top = np.partition(vote_counts, -2, axis=1)[:, -2:]
    return (top[:, 0] == top[:, 1]) & (top[:, 1] > 0)


def _agreement_with_consensus(
    votes: Mapping[str, Mapping[str, str]],
    consensus: Mapping[Any, Any],
    adjudicated: Mapping[str, str],
    min_votes: int,
) -> dict[str, dict[str, Any]]:
    """Share of each labeler's votes that match the final label (adjudicated, else consensus)."""
    agree: dict[str, int] = {}
    total: dict[str, int] = {}
    for item, on_item in votes.items():
        if len(on_item) < min_votes and item not in adjudicated:
            continue
        final = adjudicated.get(item, consensus.get(item))
        for who, label in on_item.items():
            total[who] = total.get(who, 0) + 1
            agree[who] = agree.get(who, 0) + (label == final)
    return {who: {"items": n, "agreement_with_consensus": agree[who] / n}
            for who, n in sorted(total.items())}
