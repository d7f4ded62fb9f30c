"""Batch-mode diversity: spread a batch over the most uncertain candidates.

Taking the top-k scores alone fills a batch with near-duplicates from one
confusing region, so a batch of k teaches little more than one item. Both
methods here first cut the pool down to a shortlist of the ``m`` most
uncertain candidates (``m = shortlist_factor * k``) and only then reason
about geometry. That keeps them O(m * k * d) regardless of pool size: a
1,000,000 x 64 pool costs one ``argpartition`` over the scores plus work on a
10 * k row float32 copy.

* ``kmeanspp_batch`` -- uncertainty-weighted k-means++ seeding (close to
  Cluster-Margin / BADGE-style seeding): items are drawn with probability
  proportional to ``score * D(x)^2``, so both uncertainty and distance to
  what is already chosen count.
* ``coreset_batch`` -- greedy k-center (Sener & Savarese's core-set): always
  take the shortlisted candidate farthest from everything already labelled or
  chosen, which minimises the worst-case coverage radius.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from types import MappingProxyType

import numpy as np
from numpy.typing import ArrayLike, NDArray

Indices = NDArray[np.intp]
DiversityFn = Callable[..., Indices]

_BLOCK_ELEMENTS = 1 << 22  # ~16 MiB of float32 per distance block


def top_m_shortlist(scores: ArrayLike, m: int) -> Indices:
    """Indices of the ``m`` highest finite scores, best first.

    ``-inf`` (how callers mark excluded items) and NaN are never shortlisted.
    Ties are broken by index so the result is deterministic.
    """
    values = np.asarray(scores)
    selectable = values > -np.inf  # False for -inf and NaN
    n_selectable = int(np.count_nonzero(selectable))
    m = min(int(m), n_selectable)
    if m <= 0:
        return np.empty(0, dtype=np.intp)
    if n_selectable < values.size:
        candidates = np.flatnonzero(selectable)
        values = values[candidates]
    else:
        candidates = np.arange(values.size)
    top = np.argpartition(values, values.size - m)[values.size - m :]
    top = top[np.lexsort((candidates[top], -values[top]))]
    return candidates[top].astype(np.intp, copy=False)


def _sq_norms(X: NDArray[np.float32]) -> NDArray[np.float32]:
    return np.einsum("ij,ij->i", X, X)


def _sq_dist_to_point(
    X: NDArray[np.float32], x_sq: NDArray[np.float32], point: NDArray[np.float32]
) -> NDArray[np.float32]:
    """||X_i - point||^2 via the dot-product expansion (one mat-vec, no m x d temp)."""
    d2 = x_sq - 2 * (X @ point) + point @ point
    return np.maximum(d2, 0, out=d2)


def _min_sq_dist(
    X: NDArray[np.float32], x_sq: NDArray[np.float32], refs: ArrayLike
) -> NDArray[np.float32]:
    """Squared distance from each row of X to its nearest reference row, in blocks."""
    refs = np.asarray(refs, dtype=np.float32)
    best = np.full(X.shape[0], np.inf, dtype=np.float32)
    block = max(1, _BLOCK_ELEMENTS // max(1, X.shape[0]))
    for start in range(0, refs.shape[0], block):
        R = refs[start : start + block]
        d2 = x_sq[:, None] - 2 * (X @ R.T) + _sq_norms(R)[None, :]
        np.minimum(best, d2.min(axis=1), out=best)
    return np.maximum(best, 0, out=best)


def _shortlist(
    features: ArrayLike, scores: ArrayLike, k: int, shortlist_factor: int
) -> tuple[Indices, NDArray[np.float32], NDArray[np.float64]]:
    """Shortlist plus its float32 features and scores (only m rows are copied)."""
    if k < 0:
        raise ValueError(f"batch size must be non-negative, got {k}")
    scores = np.asarray(scores)
    shortlist = top_m_shortlist(scores, max(k, shortlist_factor * k))
    X = np.asarray(features[shortlist], dtype=np.float32)  # type: ignore[index]
    return shortlist, X, scores[shortlist].astype(np.float64)


def kmeanspp_batch(
    features: ArrayLike,
    scores: ArrayLike,
    k: int,
    *,
    labeled_features: ArrayLike | None = None,
    shortlist_factor: int = 10,
    rng: np.random.Generator | int = 0,
) -> Indices:
    """Pick ``k`` distinct indices by uncertainty-weighted k-means++ seeding.

    Without labelled features the first pick is the most uncertain candidate;
    with them, distances start from the labelled set so the batch avoids
    regions the model has already been taught. Scores below zero count as zero.
    """
    rng = np.random.default_rng(rng)
    shortlist, X, score = _shortlist(features, scores, k, shortlist_factor)
    k = min(k, shortlist.size)
    weight = np.clip(score, 0, None)
    x_sq = _sq_norms(X)
    if labeled_features is not None and len(labeled_features) > 0:
        d2 = _min_sq_dist(X, x_sq, labeled_features).astype(np.float64)
    else:
        d2 = None
    available = np.ones(shortlist.size, dtype=bool)
    picks = np.empty(k, dtype=np.intp)
    for step in range(k):
        if d2 is None:
            pick = 0  # the shortlist is sorted, so this is the most uncertain item
        else:
            mass = np.where(available, weight * d2, 0.0)
            cumulative = np.cumsum(mass)
            total = cumulative[-1]
            if total > 0 and np.isfinite(total):
                pick = int(np.searchsorted(cumulative, rng.random() * total, side="right"))
                pick = min(pick, shortlist.size - 1)
                if not available[pick]:  # only reachable through float round-off
                    pick = int(np.flatnonzero(available)[0])
            else:  # every remaining candidate duplicates a pick: fall back to uncertainty
                pick = int(np.flatnonzero(available)[0])
        picks[step] = pick
        available[pick] = False
        to_pick = _sq_dist_to_point(X, x_sq, X[pick]).astype(np.float64)
        d2 = to_pick if d2 is None else np.minimum(d2, to_pick)
    return shortlist[picks]


def coreset_batch(
    features: ArrayLike,
    scores: ArrayLike,
    k: int,
    *,
    labeled_features: ArrayLike | None = None,
    shortlist_factor: int = 10,
    rng: np.random.Generator | int = 0,
) -> Indices:
    """Pick ``k`` distinct indices by greedy k-center over the uncertain shortlist.

    Deterministic (``rng`` is accepted only so all diversity methods share one
    signature); ties go to the more uncertain candidate.
    """
    del rng
    shortlist, X, _ = _shortlist(features, scores, k, shortlist_factor)
    k = min(k, shortlist.size)
    x_sq = _sq_norms(X)
    if labeled_features is not None and len(labeled_features) > 0:
        d2 = _min_sq_dist(X, x_sq, labeled_features)
    else:
        d2 = np.full(shortlist.size, np.inf, dtype=np.float32)
    available = np.ones(shortlist.size, dtype=bool)
    picks = np.empty(k, dtype=np.intp)
    for step in range(k):
        pick = int(np.argmax(np.where(available, d2, -1)))
        picks[step] = pick
        available[pick] = False
        np.minimum(d2, _sq_dist_to_point(X, x_sq, X[pick]), out=d2)
    return shortlist[picks]


DIVERSITY: Mapping[str, DiversityFn] = MappingProxyType(
    {"kmeanspp": kmeanspp_batch, "coreset": coreset_batch}
)
"""Diversity method name -> batch picker (features, scores, k, ...) -> indices."""
