"""Calibrating the auto-accept threshold to a target precision from human audits.

Every human review of a prediction is an observation: (model confidence, was
the model right?). Predictions below the threshold are all reviewed; above it
only a random audit share is, so those observations carry weight
1/audit_rate (Horvitz-Thompson). The threshold is the lowest confidence t
whose auto-accept precision P(correct | confidence ≥ t) has a one-sided
lower confidence bound (Clopper-Pearson on the Kish effective sample size) at
or above the target. With unit weights this is the exact binomial bound.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np


@dataclass(frozen=True, slots=True)
class ThresholdEstimate:
    threshold: float
    precision: float | None  # estimated precision of auto-accepts at the threshold
    lower_bound: float | None  # its one-sided lower confidence bound
    effective_n: float  # Kish effective number of observations at or above it
    calibrated: bool  # False: not enough evidence yet, the default applies


def clopper_pearson_lower(successes: np.ndarray | float, n: np.ndarray | float,
                          confidence: float = 0.95) -> np.ndarray:
    """One-sided exact lower bound of a binomial proportion (works for fractional counts)."""
    from scipy.special import betaincinv  # imported on first use: it slows service start-up

    successes = np.asarray(successes, dtype=np.float64)
    n = np.asarray(n, dtype=np.float64)
    failures = n - successes
    with np.errstate(invalid="ignore", divide="ignore"):
        bound = betaincinv(successes, failures + 1.0, 1.0 - confidence)  # = beta.ppf
    return np.where(successes <= 0, 0.0, np.nan_to_num(bound, nan=0.0))


def estimate_threshold(
    confidence: np.ndarray,
    correct: np.ndarray,
    weight: np.ndarray | None = None,
    *,
    target: float,
    default_threshold: float,
    level: float = 0.95,
    min_effective_n: float = 30.0,
    max_candidates: int = 2000,
) -> ThresholdEstimate:
    """The lowest threshold whose auto-accept precision is provably ≥ ``target``.

    Candidate thresholds are the observed confidences. Only thresholds with at
    least ``min_effective_n`` effective observations at or above them count;
    without such a threshold the conservative ``default_threshold`` stays.
    """
    conf = np.asarray(confidence, dtype=np.float64)
    hit = np.asarray(correct, dtype=np.float64)
    w = np.ones_like(conf) if weight is None else np.asarray(weight, dtype=np.float64)
    if conf.size == 0:
        return ThresholdEstimate(default_threshold, None, None, 0.0, False)
    order = np.argsort(-conf, kind="stable")
    conf, hit, w = conf[order], hit[order], w[order]
    # Cumulative sums from the most confident down: stats of "confidence ≥ conf[i]".
    sw, sw2, swc = np.cumsum(w), np.cumsum(w * w), np.cumsum(w * hit)
    # Ties: a threshold admits every observation with the same confidence.
    last_of_tie = np.r_[conf[1:] != conf[:-1], True]
    sw, sw2, swc, cand = sw[last_of_tie], sw2[last_of_tie], swc[last_of_tie], conf[last_of_tie]
    if cand.size > max_candidates:
        # The exact bound costs a Beta quantile a candidate; at tens of thousands of distinct
        # confidences, evaluate an evenly spread subset (the lowest one always included).
        # Whatever is chosen still meets the target exactly; it may sit a little above the
        # lowest threshold that would (at most 1/max_candidates of the candidates away).
        keep = np.unique(np.linspace(0, cand.size - 1, max_candidates).round().astype(np.int64))
        sw, sw2, swc, cand = sw[keep], sw2[keep], swc[keep], cand[keep]
    precision = swc / sw
    n_eff = sw * sw / sw2
    lower = clopper_pearson_lower(precision * n_eff, n_eff, level)
    ok = (lower >= target) & (n_eff >= min_effective_n)
    if not ok.any():
        best = int(np.argmax(n_eff))  # report the widest evidence we have
        return ThresholdEstimate(default_threshold, float(precision[best]), float(lower[best]),
                                 float(n_eff[best]), False)
    # Candidates run from the highest confidence down: the last qualifying one is
    # the lowest threshold that meets the target.
    i = int(np.nonzero(ok)[0].max())
    return ThresholdEstimate(float(cand[i]), float(precision[i]), float(lower[i]),
                             float(n_eff[i]), True)


class Observations:
    """The newest ``limit`` (confidence, correct, weight) rows, appended to incrementally.

    Recalibration runs every second while reviews arrive; re-reading and re-parsing
    every stored observation each time stalled the event loop (tens of ms at 50k).
    """

    def __init__(self, limit: int) -> None:
        self.limit = limit
        self.seen = 0  # observations ever pushed that this copy has taken in
        self.rows = np.empty((0, 3), dtype=np.float64)

    def take(self, total: int, newest_first: list[bytes]) -> None:
        """Add the rows pushed since the last call (``newest_first`` as LRANGE 0..k-1 gives
        them); ``total`` is the count of rows ever pushed."""
        if not newest_first:
            self.seen = total
            return
        fresh = np.array([r.decode().split("|") for r in reversed(newest_first)],
                         dtype=np.float64).reshape(-1, 3)
        self.rows = np.concatenate([self.rows, fresh])[-self.limit:]
        self.seen = total
