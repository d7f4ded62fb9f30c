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
import numpy.typing as npt

from services.quality.agreement import Triples
from services.quality.consensus import DawidSkene, needs_adjudication
from services.quality.incremental import IncrementalDawidSkene
from services.quality.votes import VoteTable, grown
from shared.events import AdjudicationReason

__all__ = [
    "AdjudicationRequest",
    "ConsensusLabel",
    "Settlement",
    "confusion_of",
    "labeler_agreement",
    "settle",
    "settle_changes",
]

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
    """Consensus for every item with at least ``min_votes`` human votes, from scratch.

    The reference the service's incremental path (:func:`settle_changes`) is tested
    and benchmarked against: it refits Dawid-Skene on every vote.

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


def settle_changes(
    table: VoteTable,
    engine: IncrementalDawidSkene,
    items: npt.NDArray[np.intp],
    *,
    published: Mapping[str, tuple[str, int]],
    published_code: npt.NDArray[np.int32],
    requested_mask: npt.NDArray[np.bool_],
    min_votes: int = 2,
    min_confidence: float = 0.8,
) -> Settlement:
    """What :func:`settle` says, for the items whose consensus may have changed.

    ``items``: item codes the engine just recomputed; ``published_code``: per item the
    class code last published (-1 none); ``requested_mask``: per item, an adjudicator
    was asked. The same rules as :func:`settle`; the per-labeler agreement, the items
    with a consensus and their mean confidence come from the engine's running totals.
    Only the items that need an event are visited one by one.
    """
    out = Settlement()
    classes = table.classes.names
    out.classes = list(classes)
    out.items_with_consensus = engine.with_consensus
    out.mean_confidence = engine.mean_confidence
    out.labeler_agreement = labeler_agreement(table, engine)
    items = np.unique(items[items < table.n_items]) if len(items) else items
    if not len(items) or not engine.fitted:
        return out
    k = engine.n_classes
    probas = engine.posteriors[items]
    labels = probas.argmax(axis=1)
    confidence = probas.max(axis=1)
    if 4 * len(items) >= table.n_items:  # most of the project: count the votes in bulk
        every, _, label = table.columns()
        counts = np.bincount(every.astype(np.int64) * k + label,
                             minlength=table.n_items * k).reshape(table.n_items, k)[items]
    else:
        rows = table.rows_of_items(items)
        local = np.searchsorted(items, table.row_item[rows])
        counts = np.zeros((len(items), k), dtype=np.int64)
        np.add.at(counts, (local, table.row_label[rows].astype(np.intp)), 1)
    flagged = needs_adjudication(probas, counts, min_confidence=min_confidence)
    split = _split(counts)
    eligible = (table.item_size[items] >= min_votes) & (engine.adjudicated[items] == -1)
    said = grown(published_code, table.n_items, -1)[items]
    asked = grown(requested_mask, table.n_items, False)[items]
    changed = eligible & (said != labels)
    ask = eligible & flagged & ~asked
    names = table.items.names
    for j in np.flatnonzero(changed).tolist():
        item, label = names[items[j]], classes[labels[j]]
        last = published.get(item)
        if last is not None and last[0] == label:
            continue
        out.publish.append(ConsensusLabel(item, label, round(float(confidence[j]), 6),
                                          0 if last is None else last[1] + 1))
    for j in np.flatnonzero(ask).tolist():
        code = int(items[j])
        out.adjudicate.append(AdjudicationRequest(
            names[code], table.votes_on(code), classes[labels[j]],
            round(float(confidence[j]), 6), "split_vote" if split[j] else "low_posterior"))
    return out


def labeler_agreement(table: VoteTable, engine: IncrementalDawidSkene
                      ) -> dict[str, dict[str, Any]]:
    """Share of each labeler's votes that match the final label (adjudicated, else
    consensus), from the engine's running counts."""
    names = table.labelers.names
    judged, agreeing = engine.judged, engine.agreeing
    return {names[w]: {"items": int(judged[w]),
                       "agreement_with_consensus": int(agreeing[w]) / int(judged[w])}
            for w in sorted(range(min(len(names), len(judged))), key=lambda w: names[w])
            if judged[w]}


def confusion_of(table: VoteTable, engine: IncrementalDawidSkene, labeler_id: str
                 ) -> dict[str, dict[str, float]] | None:
    """One labeler's confusion matrix as the summary shows it: true -> given -> share."""
    w = table.labelers.get(labeler_id)
    if w is None or not engine.fitted or w >= engine.n_labelers:
        return None
    classes = table.classes.names[: engine.n_classes]
    return {str(true): {str(given): round(float(engine.errors[w, k, j]), 4)
                        for j, given in enumerate(classes)}
            for k, true in enumerate(classes)}
