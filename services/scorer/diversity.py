"""Batch-mode diversity: spread a batch over the most uncertain candidates.

Taking the top-k scores alone fills a batch with near-duplicates from one
confusing region, so a batch of k teaches little more than one item. Both
methods here first cut the pool down to a shortlist of the ``m`` most
uncertain candidates (``m = shortlist_factor * k``) and only then reason
about geometry. That keeps them O(m * k * d) regardless of pool size: a
1,000,000 x 64 pool costs one pass over the scores plus work on a 10 * k row
float32 copy. Distances to the picks are updated lazily (see ``_NearestPick``)
so the loops run on matrix products rather than one mat-vec per pick; both
give exactly the textbook result.

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
from functools import cache
from types import MappingProxyType
from typing import Any

import numpy as np
from numpy.typing import ArrayLike, NDArray
from threadpoolctl import ThreadpoolController

Indices = NDArray[np.intp]
DiversityFn = Callable[..., Indices]

_BLOCK_ELEMENTS = 1 << 22  # at most ~16 MiB of float32 per distance block
_MAX_REF_BLOCK = 256  # references per block: bigger blocks stop paying off
_FOLD_EVERY = 128  # k-center: picks buffered before one product refreshes all distances
_MAX_PENDING = 1024  # k-means++: at most this many buffered picks
_MAX_REJECTIONS = 8  # k-means++: refresh distances after this many rejected proposals
_WINDOW = 16  # k-center: candidates checked exactly per step
_ORDER_SIZE = 1024  # k-center: candidates kept sorted between refreshes


def top_m_shortlist(scores: ArrayLike, m: int) -> Indices:
    """Indices of the ``m`` highest scores, best first, ties broken by lower index.

    ``-inf`` (how callers mark excluded items) and NaN are never shortlisted.
    """
    values = np.asarray(scores)
    selectable = values > -np.inf  # False for -inf and NaN
    n_selectable = int(np.count_nonzero(selectable))
    m = min(int(m), n_selectable)
    if m <= 0:
        return np.empty(0, dtype=np.intp)
    candidates = np.flatnonzero(selectable) if n_selectable < values.size else None
    if candidates is not None:
        values = values[candidates]
    if values.size > 16 * m and values.size > 1 << 16:
        # Cheap pre-filter: a threshold from every 16th score keeps ~2m candidates.
        # Exact whenever at least m scores clear it (checked), otherwise skipped.
        sample = values[::16]
        keep = min(sample.size, -(-2 * m // 16))
        threshold = np.partition(sample, sample.size - keep)[sample.size - keep]
        above = np.flatnonzero(values >= threshold)
        if above.size >= m:
            candidates = above if candidates is None else candidates[above]
            values = values[above]
    kth = np.partition(values, values.size - m)[values.size - m]  # the m-th largest
    higher = np.flatnonzero(values > kth)
    tied = np.flatnonzero(values == kth)[: m - higher.size]  # lowest indices win ties
    top = np.concatenate([higher, tied])
    top = top[np.lexsort((top, -values[top]))]
    return (top if candidates is None else candidates[top]).astype(np.intp, copy=False)


@cache
def _blas_threads() -> ThreadpoolController:
    """Found once: inspecting the loaded BLAS libraries costs ~0.2 ms per call."""
    return ThreadpoolController()


def _single_threaded_blas() -> Any:
    """The greedy loops issue many small products; BLAS threads only add sync cost.

    On a busy 2-core host, threaded OpenBLAS made a 1,000-pick loop 3-40x slower.
    """
    return _blas_threads().limit(limits=1, user_api="blas")


def _sq_norms(X: NDArray[np.float32]) -> NDArray[np.float32]:
    return np.einsum("ij,ij->i", X, X)


def _min_sq_dist(
    X: NDArray[np.float32], x_sq: NDArray[np.float32], refs: ArrayLike
) -> NDArray[np.float32]:
    """Squared distance from each row of X to its nearest reference row.

    ``min_j ||x - r_j||^2 = ||x||^2 + min_j (||r_j||^2 - 2 x.r_j)``: one BLAS
    product and one pass per block of references, no m x d temporaries.
    """
    refs = np.asarray(refs, dtype=np.float32)
    best = np.full(X.shape[0], np.inf, dtype=np.float32)
    block = max(1, min(_MAX_REF_BLOCK, _BLOCK_ELEMENTS // max(1, X.shape[0])))
    for start in range(0, refs.shape[0], block):
        R = refs[start : start + block]
        partial = (-2 * R) @ X.T  # refs x candidates: the min runs over contiguous rows
        partial += _sq_norms(R)[:, None]
        np.minimum(best, partial.min(axis=0), out=best)
    best += x_sq
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


class _NearestPick:
    """Squared distance from every candidate to its nearest anchor or pick, kept lazily.

    Both greedy loops need, per step, the distance from each candidate to
    everything chosen so far. Updating it eagerly costs one m x d mat-vec per
    pick, which is memory-bound and dominates a 1,000-pick loop. Instead new
    picks wait in a small buffer and are folded in with one
    m x b mat-mat product; meanwhile ``stale`` is an upper bound on the true
    distance, and ``exact`` computes the true distance for the few candidates
    a loop actually inspects.
    """

    def __init__(self, X: NDArray[np.float32], anchors: ArrayLike | None, capacity: int) -> None:
        self.X = X
        self.x_sq = _sq_norms(X)
        if anchors is not None and np.asarray(anchors).size > 0:
            self.stale = _min_sq_dist(X, self.x_sq, anchors)
        else:
            self.stale = np.full(X.shape[0], np.inf, dtype=np.float32)
        self.pending = np.empty((max(1, capacity), X.shape[1]), dtype=np.float32)
        self.pending_sq = np.empty(max(1, capacity), dtype=np.float32)
        self.n_pending = 0

    def add(self, i: int) -> None:
        self.pending[self.n_pending] = self.X[i]
        self.pending_sq[self.n_pending] = self.x_sq[i]
        self.n_pending += 1

    @property
    def full(self) -> bool:
        return self.n_pending == self.pending.shape[0]

    def fold(self) -> None:
        """Make ``stale`` exact by folding the buffered picks in."""
        if self.n_pending:
            P = self.pending[: self.n_pending]
            np.minimum(self.stale, _min_sq_dist(self.X, self.x_sq, P), out=self.stale)
            self.n_pending = 0

    def exact(self, idx: NDArray[np.intp]) -> NDArray[np.float32]:
        """True squared distances for candidates ``idx`` (buffered picks included)."""
        if not self.n_pending:
            return self.stale[idx]
        P = self.pending[: self.n_pending]
        d2 = (
            self.x_sq[idx, None] - 2 * (self.X[idx] @ P.T) + self.pending_sq[None, : self.n_pending]
        )
        return np.minimum(self.stale[idx], np.maximum(d2.min(axis=1), 0))


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
    Each later pick is drawn with probability ``score * D^2 / sum(score * D^2)``
    exactly: proposals come from the buffered (upper-bound) distances and are
    accepted with probability ``exact / stale`` (rejection sampling).
    """
    rng = np.random.default_rng(rng)
    shortlist, X, score = _shortlist(features, scores, k, shortlist_factor)
    k = min(k, shortlist.size)
    weight = np.clip(score, 0, None)
    picked = np.zeros(shortlist.size, dtype=bool)
    picks = np.empty(k, dtype=np.intp)
    with _single_threaded_blas():
        nearest = _NearestPick(X, labeled_features, capacity=min(k, _MAX_PENDING))
        has_reference = labeled_features is not None and np.asarray(labeled_features).size > 0
        mass = cumulative = np.empty(0)
        refresh, rejected = True, 0
        for step in range(k):
            pick = 0  # nothing to be far from yet: the most uncertain (shortlist is sorted)
            if has_reference:
                pick = -1
                while pick < 0:
                    if refresh:
                        nearest.fold()
                        mass = weight * nearest.stale
                        cumulative = np.cumsum(mass)
                        refresh, rejected = False, 0
                    total = cumulative[-1]
                    if not (total > 0 and np.isfinite(total)):
                        if nearest.n_pending:
                            refresh = True
                            continue
                        pick = int(np.argmin(picked))  # only duplicates of picks remain
                        break
                    i = int(np.searchsorted(cumulative, rng.random() * total, side="right"))
                    i = min(i, shortlist.size - 1)
                    exact = weight[i] * float(nearest.exact(np.array([i]))[0])
                    if not picked[i] and rng.random() * mass[i] < exact:
                        pick = i
                    else:
                        rejected += 1
                        refresh = rejected >= _MAX_REJECTIONS
            picks[step] = pick
            picked[pick] = True
            weight[pick] = 0.0
            nearest.add(pick)
            if nearest.full or not has_reference:
                nearest.fold()
                has_reference, refresh = True, True
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
    signature); ties go to the more uncertain candidate. Lazy but exact: a
    candidate is taken once its true distance beats every other candidate's
    upper bound, so most steps never touch the whole shortlist.
    """
    del rng
    shortlist, X, _ = _shortlist(features, scores, k, shortlist_factor)
    m = shortlist.size
    k = min(k, m)
    picked = np.zeros(m, dtype=bool)
    picks = np.empty(k, dtype=np.intp)
    with _single_threaded_blas():
        nearest = _NearestPick(X, labeled_features, capacity=_FOLD_EVERY)
        order = np.empty(0, dtype=np.intp)
        bound = np.empty(0, dtype=np.float32)
        outside = -np.inf
        pos, stale_order = 0, True
        for step in range(k):
            while True:
                if stale_order:
                    nearest.fold()
                    order, bound, outside = _farthest_first(nearest.stale, picked)
                    pos, stale_order = 0, False
                while pos < order.size and picked[order[pos]]:
                    pos += 1
                ahead = np.flatnonzero(~picked[order[pos : pos + _WINDOW + _FOLD_EVERY]])
                if ahead.size == 0:
                    stale_order = True
                    continue
                window = order[pos + ahead[:_WINDOW]]
                after = pos + int(ahead[:_WINDOW][-1]) + 1
                rest = bound[after] if after < order.size else outside
                exact = nearest.exact(window)
                best = exact.max()
                if best > rest or (not nearest.n_pending and best >= rest):
                    pick = int(window[exact == best].min())  # tie: more uncertain
                    break
                stale_order = True  # some unexamined candidate might be farther
            picks[step] = pick
            picked[pick] = True
            nearest.add(pick)
            if nearest.full:
                stale_order = True
    return shortlist[picks]


def _farthest_first(
    d2: NDArray[np.float32], picked: NDArray[np.bool_]
) -> tuple[Indices, NDArray[np.float32], float]:
    """Up to ``_ORDER_SIZE`` unpicked candidates by distance (desc, ties by index).

    Returns the order, their distances, and an upper bound for everyone else.
    """
    d2 = np.where(picked, -np.inf, d2)
    size = min(d2.size, _ORDER_SIZE)
    if size < d2.size:
        top = np.argpartition(-d2, size - 1)[:size]
    else:
        top = np.arange(d2.size)
    top = top[np.lexsort((top, -d2[top]))]
    outside = float(d2[top[-1]]) if size < d2.size else -np.inf
    return top, d2[top], outside


DIVERSITY: Mapping[str, DiversityFn] = MappingProxyType(
    {"kmeanspp": kmeanspp_batch, "coreset": coreset_batch}
)
"""Diversity method name -> batch picker (features, scores, k, ...) -> indices."""
