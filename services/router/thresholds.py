"""Choosing the auto-accept threshold so that its precision is ≥ the target with 95%
confidence: a guarantee on the threshold chosen, not only on each candidate.

Every blind human review of a prediction is an observation (model confidence, was the
model right?, weight). Predictions below the threshold in force are all reviewed; above
it only a random audit share is, so those observations weigh 1/audit_rate
(Horvitz-Thompson: the weight is the inverse of the inclusion probability recorded when
the prediction was routed). Reviews that showed the model's label (prelabel mode) are
not evidence: automation bias inflates them.

The procedure is fixed-sequence testing, as in Learn-then-Test (Angelopoulos et al.,
2021; MAPIE's ``FWERFixedSequenceTesting`` in ``mapie/risk_control/fwer_control.py``):
the candidates are a grid fixed in advance (``THRESHOLD_GRID``), tested from the highest
down, each for H0 "precision(t) < target" at level 1 - ``level`` with an exact binomial
p-value (on the Kish effective sample size when weights differ). The first failure
stops the sequence; the chosen threshold is the lowest candidate before it. A false
choice needs the first true null in the sequence to be rejected, so the family-wise
error, and with it P(precision of the chosen threshold < target), is at most
1 - ``level`` with no multiplicity correction. Taking the lowest candidate whose own
bound passes (the former rule) has no such control: among many candidates just below
the target some pass by chance.

Where the sequence starts and ends depends on the confidences only, never on whether the
model was right: it starts at the first candidate with enough effective observations to
pass at all, and ends before a candidate that would take in a non-blind review or lie
below the lowest observation (no extrapolation). Stopping early only costs power; a
precision curve that dips below the target on its way down stops the sequence there.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np

# Candidate thresholds, highest first: 0.001 steps, finer towards 1 where confident models
# put their mass (0.9991..0.9999, 0.99991..0.99999). Fixed in advance, not read from data.
THRESHOLD_GRID = np.unique(np.r_[np.arange(0, 1000) / 1000,
                                 np.round(0.999 + np.arange(1, 10) / 10_000, 4),
                                 np.round(0.9999 + np.arange(1, 10) / 100_000, 5)])[::-1]

PROCEDURE = "fixed-sequence"
LEVEL = 0.95  # confidence of the guarantee: the chosen threshold misses in ≤ 5% of decisions


@dataclass(frozen=True, slots=True)
class ThresholdEstimate:
    threshold: float
    precision: float | None  # estimated precision of auto-accepts at the threshold
    lower_bound: float | None  # its one-sided lower confidence bound
    effective_n: float  # Kish effective number of observations at or above it
    calibrated: bool  # False: nothing certified, the default applies
    tested: int = 0  # candidates tested; 0: the evidence allowed no test (no decision)


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


def binomial_p_value(successes: np.ndarray, n: np.ndarray, target: float) -> np.ndarray:
    """P(Binomial(n, target) ≥ successes): the exact p-value of H0 "proportion < target"
    (continued to fractional counts through the Beta function). p ≤ 1 - level exactly
    when the Clopper-Pearson lower bound at ``level`` is ≥ target."""
    from scipy.special import betainc

    successes = np.asarray(successes, dtype=np.float64)
    n = np.asarray(n, dtype=np.float64)
    with np.errstate(invalid="ignore", divide="ignore"):
        p = betainc(successes, n - successes + 1.0, target)
    return np.where(successes <= 0, 1.0, np.nan_to_num(p, nan=1.0))


def passing_n(target: float, level: float = 0.95) -> int:
    """The fewest observations with which a perfect record passes (target^n ≤ 1 - level):
    a candidate with less evidence cannot pass, so testing it would only end the sequence."""
    return math.ceil(math.log(1.0 - level) / math.log(target) - 1e-9)


def estimate_threshold(
    confidence: np.ndarray,
    correct: np.ndarray,
    weight: np.ndarray | None = None,
    *,
    target: float,
    default_threshold: float,
    level: float = LEVEL,
    min_effective_n: float = 30.0,
    blind: np.ndarray | None = None,
    grid: np.ndarray = THRESHOLD_GRID,
) -> ThresholdEstimate:
    """The lowest grid threshold that fixed-sequence testing certifies ≥ ``target``.

    ``blind`` False marks reviews that showed the model's label: their verdicts are not
    used, and no candidate may take them in. Without a candidate with ``min_effective_n``
    (and at least ``passing_n``) effective observations there is no decision
    (``tested`` 0); when the first candidate tested fails, nothing is certified and the
    conservative ``default_threshold`` applies. Either way ``calibrated`` is False.
    """
    conf = np.asarray(confidence, dtype=np.float64)
    hit = np.asarray(correct, dtype=np.float64)
    w = np.ones_like(conf) if weight is None else np.asarray(weight, dtype=np.float64)
    shown = np.zeros(conf.shape, dtype=bool) if blind is None else ~np.asarray(blind, bool)
    floor = float(conf[shown].max()) if shown.any() else -math.inf
    conf, hit, w = conf[~shown], hit[~shown], w[~shown]
    if conf.size == 0:
        return ThresholdEstimate(default_threshold, None, None, 0.0, False)
    order = np.argsort(conf, kind="stable")
    conf, hit, w = conf[order], hit[order], w[order]
    # Suffix sums over "confidence ≥ g" for each grid point g (grid runs highest first).
    first = np.searchsorted(conf, grid, side="left")
    sw, sw2, swc = (_at_or_above(x, first) for x in (w, w * w, w * hit))
    with np.errstate(invalid="ignore", divide="ignore"):
        precision = np.where(sw > 0, swc / sw, 0.0)
        n_eff = np.where(sw2 > 0, sw * sw / sw2, 0.0)
    # The sequence may not take in a shown review, nor go below the grid point just under
    # the lowest observation (the data there would be the same, the population not).
    lowest = grid[grid <= conf[0]].max(initial=-math.inf)
    admissible = (grid > floor) & (grid >= lowest)
    if not admissible.any():
        return ThresholdEstimate(default_threshold, None, None, 0.0, False)
    enough = n_eff >= max(min_effective_n, passing_n(target, level))
    start = np.flatnonzero(admissible & enough)
    if start.size == 0:
        best = int(np.argmax(np.where(admissible, n_eff, -1.0)))  # the widest evidence
        lower = float(clopper_pearson_lower(precision[best] * n_eff[best], n_eff[best], level))
        return ThresholdEstimate(default_threshold, float(precision[best]), lower,
                                 float(n_eff[best]), False)
    i0 = int(start[0])
    gaps = np.flatnonzero(~(admissible & enough)[i0:])  # the sequence ends at the first
    run = slice(i0, i0 + (int(gaps[0]) if gaps.size else grid.size - i0))  # one it can't test
    p = binomial_p_value(precision[run] * n_eff[run], n_eff[run], target)
    failed = np.flatnonzero(p > 1.0 - level)
    passed = int(failed[0]) if failed.size else p.size  # candidates passed before a failure
    tested = min(passed + 1, p.size)
    if passed == 0:
        lower = float(clopper_pearson_lower(precision[i0] * n_eff[i0], n_eff[i0], level))
        return ThresholdEstimate(default_threshold, float(precision[i0]), lower,
                                 float(n_eff[i0]), False, tested)
    i = i0 + passed - 1
    lower = float(clopper_pearson_lower(precision[i] * n_eff[i], n_eff[i], level))
    return ThresholdEstimate(float(grid[i]), float(precision[i]), lower, float(n_eff[i]),
                             True, tested)


class Observations:
    """The newest ``limit`` observations, appended to incrementally, each with its place in
    the sequence of all ever pushed (so a window "pushed after the last decision" is exact).

    Columns: confidence, correct, weight, blind (the model's label was not shown), audit.
    Rows written before blind and audit were recorded count as blind, audits if weighted.
    Recalibration runs every second while reviews arrive; re-reading and re-parsing every
    stored observation each time stalled the event loop (tens of ms at 50k).
    """

    COLUMNS = 5

    def __init__(self, limit: int) -> None:
        self.limit = limit
        self.seen = 0  # observations ever pushed that this copy has taken in
        self.rows = np.empty((0, self.COLUMNS), dtype=np.float64)

    def take(self, total: int, newest_first: list[bytes]) -> None:
        """Add the rows pushed since the last call (``newest_first`` as LRANGE 0..k-1 gives
        them); ``total`` is the count of rows ever pushed."""
        if newest_first:
            fresh = np.array([_parse(r) for r in reversed(newest_first)],
                             dtype=np.float64).reshape(-1, self.COLUMNS)
            self.rows = np.concatenate([self.rows, fresh])[-self.limit:]
        self.seen = total

    def since(self, pushed_before: int) -> np.ndarray:
        """The rows pushed after the first ``pushed_before`` ever pushed (those kept)."""
        fresh = self.seen - max(pushed_before, 0)
        return self.rows[len(self.rows) - min(max(fresh, 0), len(self.rows)):]


def _at_or_above(x: np.ndarray, first: np.ndarray) -> np.ndarray:
    """Sums of ``x`` (ordered by confidence) from each index in ``first`` to the end."""
    return np.r_[np.cumsum(x[::-1])[::-1], 0.0][first]


def _parse(row: bytes) -> list[float]:
    parts = [float(x) for x in row.decode().split("|")]
    if len(parts) == 3:  # confidence|correct|weight, from before blind and audit were kept
        parts += [1.0, float(parts[2] != 1.0)]
    return parts
