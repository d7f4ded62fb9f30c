"""Automation bias: does a labeler judge the pre-label, or defer to the model?

Two kinds of pre-labelled task carry evidence:

* a **planted** gold task shows a pre-label known to be wrong. A labeler who judges
  rejects it most of the time (catch rate ``catch_judging``); one who defers accepts
  it (catch rate ``catch_deferring``);
* an **ordinary** pre-labelled task shows the model's own label, wrong with the
  model's error rate ``e`` on that queue. A labeler who judges changes at least about
  ``e`` of them (every wrong pre-label they see through, plus their own mistakes);
  a deferring one changes far fewer. The hypotheses are ``judging_share * e`` and
  ``deferring_share * e``. Why "at least ``e``": a labeler whose own answer (right
  with probability ``a``) does not depend on the pre-label changes
  ``e * (1 - (1 - a) / (k - 1)) + (1 - e) * (1 - a)`` of them, which is ``>= e``
  whenever ``e <= 0.8``; ``judging_share = 0.9`` leaves room for some anchoring, and
  the service feeds a cautious (low) estimate of ``e``.

Each task adds its log-likelihood ratio "deferring : judging" to Page's CUSUM,
``S_t = max(0, S_{t-1} + llr_t)``: a repeated sequential probability ratio test that
never stops watching (a labeler can start rubber-stamping after a good first week)
and whose current run, the tasks since ``S`` last left 0, is the evidence; those are
the labels to re-review. The labeler is flagged when ``S`` reaches ``threshold``.
Lorden's bound puts the mean run length of a judging labeler to a false alarm at
``>= exp(threshold)`` tasks, so ``threshold = log(horizon / false_positive_rate)``
keeps false flags under that rate over ``horizon`` tasks; a labeler who judges
better than the judging hypothesis drifts down, and is flagged far less often.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from datetime import datetime

import numpy as np
import numpy.typing as npt

__all__ = [
    "DeferenceMonitor",
    "DeferenceTest",
    "first_crossing",
    "threshold_for",
]


def threshold_for(horizon_tasks: int, false_positive_rate: float) -> float:
    """CUSUM threshold whose false-alarm run length is at least ``horizon / rate`` tasks."""
    if horizon_tasks < 1 or not 0 < false_positive_rate < 1:
        raise ValueError("need horizon_tasks >= 1 and 0 < false_positive_rate < 1")
    return math.log(horizon_tasks / false_positive_rate)


@dataclass(frozen=True)
class DeferenceTest:
    """The two hypotheses about a labeler and the flagging threshold."""

    catch_judging: float = 0.8
    catch_deferring: float = 0.1
    judging_share: float = 0.9
    deferring_share: float = 0.2
    threshold: float = threshold_for(2000, 0.01)
    min_error_rate: float = 0.02
    max_error_rate: float = 0.5

    def __post_init__(self) -> None:
        if not 0 < self.catch_deferring < self.catch_judging < 1:
            raise ValueError("need 0 < catch_deferring < catch_judging < 1")
        if not 0 < self.deferring_share < self.judging_share:
            raise ValueError("need 0 < deferring_share < judging_share")
        if self.judging_share * self.max_error_rate >= 1:
            raise ValueError("judging_share * max_error_rate must stay below 1")
        if self.threshold <= 0:
            raise ValueError("threshold must be positive")

    def llr(
        self,
        planted: npt.ArrayLike,
        changed: npt.ArrayLike,
        model_error_rate: npt.ArrayLike,
    ) -> npt.NDArray[np.float64]:
        """Log-likelihood ratio, deferring over judging, of each pre-labelled task.

        ``planted``: the pre-label was planted wrong; ``changed``: the labeler did not
        keep the pre-label; ``model_error_rate``: the model's error rate on the queue
        (ignored for planted tasks). Broadcasts over arrays.
        """
        planted = np.asarray(planted, dtype=bool)
        changed = np.asarray(changed, dtype=bool)
        error = np.clip(
            np.asarray(model_error_rate, dtype=float), self.min_error_rate, self.max_error_rate
        )
        p_change_judging = np.where(planted, self.catch_judging, self.judging_share * error)
        p_change_deferring = np.where(planted, self.catch_deferring, self.deferring_share * error)
        return np.where(
            changed,
            np.log(p_change_deferring / p_change_judging),
            np.log((1 - p_change_deferring) / (1 - p_change_judging)),
        )


def first_crossing(
    llr: npt.ArrayLike, threshold: float
) -> tuple[npt.NDArray[np.intp], npt.NDArray[np.intp]]:
    """CUSUM over the last axis of ``llr``, for many labelers at once.

    Returns, per row, the index of the task at which the statistic first reaches
    ``threshold`` (-1 if never) and the index where that run of evidence began.
    Same arithmetic as :class:`DeferenceMonitor`, step by step.
    """
    steps = np.atleast_2d(np.asarray(llr, dtype=float))
    rows, n = steps.shape
    statistic = np.zeros(rows)
    run_start = np.zeros(rows, dtype=np.intp)
    crossed = np.full(rows, -1, dtype=np.intp)
    since = np.full(rows, -1, dtype=np.intp)
    for t in range(n):
        was_zero = statistic <= 0
        run_start = np.where(was_zero, t, run_start)
        statistic = np.maximum(0.0, statistic + steps[:, t])
        new = (crossed < 0) & (statistic >= threshold)
        crossed = np.where(new, t, crossed)
        since = np.where(new, run_start, since)
    return crossed, since


@dataclass
class DeferenceMonitor:
    """One labeler's running CUSUM; ``observe`` one pre-labelled task at a time."""

    test: DeferenceTest = field(default_factory=DeferenceTest)
    statistic: float = 0.0
    run_started: datetime | None = None
    run_tasks: int = 0
    tasks: int = 0
    flagged_at: datetime | None = None
    evidence_since: datetime | None = None

    def observe(
        self, planted: bool, changed: bool, model_error_rate: float, at: datetime
    ) -> bool:
        """Add one task; True exactly when this task makes the labeler flagged."""
        if self.statistic <= 0:
            self.run_started, self.run_tasks = at, 0
        self.statistic = max(
            0.0, self.statistic + float(self.test.llr(planted, changed, model_error_rate))
        )
        self.tasks += 1
        self.run_tasks += 1
        if self.flagged_at is None and self.statistic >= self.test.threshold:
            self.flagged_at, self.evidence_since = at, self.run_started
            return True
        return False

    @property
    def flagged(self) -> bool:
        return self.flagged_at is not None

    def clear(self) -> None:
        """After a review cleared the labeler: start collecting evidence afresh."""
        self.statistic, self.run_started, self.run_tasks = 0.0, None, 0
        self.flagged_at = self.evidence_since = None
