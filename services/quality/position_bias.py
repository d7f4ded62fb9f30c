"""Position bias: does a reviewer pick the first-shown candidate more often than chance?

The router shows a comparison's candidates in an order drawn uniformly at random for
each reviewer (services.router.comparisons). So for a reviewer without position bias,
whatever the candidates are worth, the first-shown one is their pick with probability
exactly ``1/k`` (``k`` candidates): the null hypothesis needs no model of the answers.
A reviewer with bias ``b`` (who picks the first-shown outright on a share ``b`` of
comparisons and judges the others) picks it with ``p1 = 1/k + b (1 - 1/k)``.

The test is a Page CUSUM of the log-likelihood ratio of ``p1`` (``bias`` 0.3 by
default) against ``1/k``, one step per comparison that names a best candidate (a tie
or "both bad" carries no evidence), as the deference detector does
(services.quality.detection): it never stops watching, and Lorden's bound puts the mean
run to a false alarm at ``>= exp(threshold)`` steps, so ``threshold_for(horizon, rate)``
keeps an unbiased reviewer's chance of a false flag under ``rate`` over ``horizon``
comparisons (default: 1% over 1,000). Pure: no I/O.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from datetime import datetime

from services.quality.detection import Cusum, threshold_for

__all__ = ["PositionBiasMonitor", "PositionBiasTest"]


@dataclass(frozen=True)
class PositionBiasTest:
    bias: float = 0.3  # the alternative: picks the first shown outright this often
    horizon: int = 1000  # comparisons a reviewer judges ...
    false_positive_rate: float = 0.01  # ... with at most this chance of a false flag

    def __post_init__(self) -> None:
        if not 0 < self.bias < 1:
            raise ValueError("need 0 < bias < 1")

    @property
    def threshold(self) -> float:
        return threshold_for(self.horizon, self.false_positive_rate)

    def llr(self, first_chosen: bool, shown: int) -> float:
        """log P(observation | biased) / P(observation | unbiased), ``shown`` candidates."""
        if shown < 2:
            raise ValueError("a comparison shows at least two candidates")
        p0 = 1.0 / shown
        p1 = p0 + self.bias * (1 - p0)
        return math.log(p1 / p0) if first_chosen else math.log((1 - p1) / (1 - p0))


@dataclass
class PositionBiasMonitor:
    """One reviewer's CUSUM; ``observe`` one judged comparison at a time."""

    test: PositionBiasTest = field(default_factory=PositionBiasTest)
    cusum: Cusum = field(init=False)
    comparisons: int = 0
    first_chosen: int = 0
    flagged_at: datetime | None = None
    evidence_since: datetime | None = None

    def __post_init__(self) -> None:
        self.cusum = Cusum(self.test.threshold)

    def observe(self, first_chosen: bool, shown: int, at: datetime) -> bool:
        """Add one comparison; True exactly when it makes the reviewer flagged."""
        crossed = self.cusum.add(self.test.llr(first_chosen, shown), at)
        self.comparisons += 1
        self.first_chosen += first_chosen
        if crossed and self.flagged_at is None:
            self.flagged_at, self.evidence_since = at, self.cusum.run_started
            return True
        return False

    @property
    def flagged(self) -> bool:
        return self.flagged_at is not None

    @property
    def first_share(self) -> float | None:
        return self.first_chosen / self.comparisons if self.comparisons else None

    def clear(self) -> None:
        self.cusum.reset()
        self.flagged_at = self.evidence_since = None
