"""Selection: turn per-item scores into the batch that goes to annotators.

Scoring (``strategies``) says how informative each item is; this module
decides which items to send: never more than the budget, never an item that
is already labelled or excluded, optionally spread out by a diversity method,
and -- before any model exists -- a class-balanced cold-start batch.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np
from numpy.typing import ArrayLike, NDArray

from services.scorer.diversity import DIVERSITY, Indices, top_m_shortlist
from services.scorer.strategies import (
    COMMITTEE_STRATEGIES,
    ScoreFn,
    committee_proba,
    get_strategy,
    random_scores,
)


def select_batch(
    scores: ArrayLike,
    budget: int,
    *,
    features: ArrayLike | None = None,
    diversity: str | None = None,
    exclude: ArrayLike | None = None,
    labeled: ArrayLike | None = None,
    rng: np.random.Generator | int = 0,
    shortlist_factor: int = 10,
) -> Indices:
    """Pick at most ``budget`` distinct indices, highest scores first.

    ``exclude`` and ``labeled`` items are never picked; ``labeled`` items also
    anchor the diversity methods, so a batch is spread away from what the
    model already knows. ``diversity`` ("kmeanspp" or "coreset") needs
    ``features`` and only looks at the ``shortlist_factor * budget`` most
    uncertain candidates. Returns fewer than ``budget`` indices only when
    fewer candidates are left.
    """
    values = np.asarray(scores)
    if values.ndim != 1:
        raise ValueError(f"scores must be 1-d, got shape {values.shape}")
    if budget < 0:
        raise ValueError(f"budget must be non-negative, got {budget}")
    if np.isnan(values).any():
        raise ValueError("scores contain NaN; fix the model or strategy upstream")
    dtype = values.dtype if np.issubdtype(values.dtype, np.floating) else np.float64
    masked = np.array(values, dtype=dtype, copy=True)
    for blocked in (exclude, labeled):
        if blocked is not None:
            masked[np.asarray(blocked, dtype=np.intp)] = -np.inf

    if diversity is None:
        return top_m_shortlist(masked, budget)
    if diversity not in DIVERSITY:
        known = ", ".join(sorted(DIVERSITY))
        raise ValueError(f"unknown diversity method {diversity!r}; known methods: {known}")
    if features is None:
        raise ValueError(f"diversity={diversity!r} needs the candidates' features")
    if len(features) != values.size:  # type: ignore[arg-type]
        raise ValueError("features and scores must describe the same candidates")
    labeled_features = None
    if labeled is not None and len(np.atleast_1d(labeled)) > 0:
        labeled_features = features[np.asarray(labeled, dtype=np.intp)]  # type: ignore[index]
    return DIVERSITY[diversity](
        features,
        masked,
        budget,
        labeled_features=labeled_features,
        shortlist_factor=shortlist_factor,
        rng=rng,
    )


def seed_batch(
    n: int,
    budget: int,
    labels_hint: ArrayLike | None = None,
    *,
    rng: np.random.Generator | int = 0,
) -> Indices:
    """Cold-start batch for when no model exists yet.

    With ``labels_hint`` (weak labels, metadata or cluster ids, one per item)
    the batch is stratified: classes take turns in a random order, so counts
    differ by at most one unless a class runs out. Without it the batch is a
    uniform sample. Either way the result is distinct and reproducible.
    """
    if budget < 0:
        raise ValueError(f"budget must be non-negative, got {budget}")
    rng = np.random.default_rng(rng)
    budget = min(budget, n)
    if labels_hint is None:
        return rng.choice(n, size=budget, replace=False).astype(np.intp)
    hint = np.asarray(labels_hint)
    if hint.shape != (n,):
        raise ValueError(f"labels_hint must have one entry per item ({n}), got {hint.shape}")
    _, class_of = np.unique(hint, return_inverse=True)
    order = rng.permutation(n)  # shuffles items inside each class
    class_sorted = order[np.argsort(class_of[order], kind="stable")]
    class_start = np.searchsorted(class_of[class_sorted], class_of[class_sorted], side="left")
    rank = np.empty(n, dtype=np.intp)
    rank[class_sorted] = np.arange(n) - class_start
    class_turn = rng.permutation(class_of.max() + 1)[class_of]
    return np.lexsort((class_turn, rank))[:budget].astype(np.intp)


@dataclass(frozen=True)
class PoolScores:
    """What survives a pass over the pool: one score per item and the best few."""

    scores: NDArray[np.float32]
    shortlist: Indices


def score_pool_chunked(
    model: Any,
    X: ArrayLike,
    strategy: str | ScoreFn,
    chunk_rows: int = 65536,
    *,
    shortlist_size: int = 0,
) -> PoolScores:
    """Score a large pool ``chunk_rows`` at a time so probabilities never pile up.

    Only the float32 scores (4 bytes per item) and a running top-
    ``shortlist_size`` are kept; each chunk's ``n x classes`` probabilities are
    dropped as soon as they are scored. For committee strategies pass the
    members (a list of fitted classifiers) as ``model``. ``X`` may be a memmap.
    """
    if chunk_rows <= 0:
        raise ValueError(f"chunk_rows must be positive, got {chunk_rows}")
    score_fn = get_strategy(strategy) if isinstance(strategy, str) else strategy
    is_committee = isinstance(model, Sequence)
    if isinstance(strategy, str) and (strategy in COMMITTEE_STRATEGIES) != is_committee:
        raise ValueError(
            f"strategy {strategy!r} needs "
            + ("a list of committee members" if strategy in COMMITTEE_STRATEGIES else "one model")
        )
    n = len(X)  # type: ignore[arg-type]
    if score_fn is random_scores:
        # Random ignores the model; draw once so chunks can't repeat one stream.
        scores = random_scores(np.broadcast_to(np.float32(0), (n, 1))).astype(np.float32)
        return PoolScores(scores, top_m_shortlist(scores, shortlist_size))

    predict: Callable[[Any], NDArray[np.floating]] = (
        (lambda rows: committee_proba(model, rows)) if is_committee else model.predict_proba
    )
    scores = np.empty(n, dtype=np.float32)
    best = np.empty(0, dtype=np.intp)
    for start in range(0, n, chunk_rows):
        stop = min(start + chunk_rows, n)
        scores[start:stop] = score_fn(predict(X[start:stop]))  # type: ignore[index]
        if shortlist_size > 0:
            local = top_m_shortlist(scores[start:stop], shortlist_size) + start
            merged = np.concatenate([best, local])
            best = merged[top_m_shortlist(scores[merged], shortlist_size)]
    return PoolScores(scores, best)
