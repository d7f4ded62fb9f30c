"""Automation bias: does a labeler judge the pre-label, or defer to the model?

The model of a labeler: on a share ``d`` of pre-labelled tasks they keep the pre-label
without judging it (deference); on the others they judge, and may err. A labeler who
keeps the pre-label only when unsure of the answer (a *cautious* honest reviewer) has
``d`` up to one minus their accuracy; the test calls ``d <= honest_deference`` (0.2)
honest, so a cautious reviewer who knows 80% of the answers is honest by definition.

Three kinds of pre-labelled task carry evidence:

* **known wrong**: a gold task whose shown pre-label is not the gold answer (every
  planted one, and real predictions the model got wrong). A judging labeler rejects it
  unless their own error lands on it, so catches it with probability >= ``1 - d``;
* **ordinary**: the model's own label on a queue where the model errs with rate ``e``
  (measured on gold, read cautiously low). Such a labeler changes at least
  ``(1 - d) * e`` of them: every wrong pre-label they see through, plus their own
  mistakes on the right ones;
* **known right** (gold whose pre-label is the gold answer): neutral here.

Two Page CUSUMs watch each labeler, ``S_t = max(0, S_{t-1} + llr_t)``, repeated
sequential probability ratio tests that never stop watching (a labeler can start
rubber-stamping after a good first week); the current run of one, the tasks since it
last left 0, is the evidence and the labels to re-review:

* **full deference** (``d = full_deference``, 0.95) against ``d = honest_deference``,
  on known-wrong and ordinary tasks: catches a rubber-stamper within tens of tasks;
* **partial deference** (``d = partial_deference``, 0.55) against the same honest
  bound, on known-wrong tasks only: ordinary changes cannot tell a labeler who stamps
  half the time from a cautious one (their own errors add changes), a known wrong
  pre-label can.

Lorden's bound puts the mean run to a false alarm of a labeler at the honest bound at
``>= exp(threshold)`` observations of a statistic, so ``log(horizon / rate)`` keeps
its false flags under ``rate`` over ``horizon`` observations; a labeler who judges
better than the bound drifts down and is flagged far less often. The defaults split a
1% budget: the full test over 2,000 pre-labelled tasks, the partial test over 100
known-wrong gold tasks (about 3,500 tasks at 5% gold, half planted).
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from datetime import datetime
from enum import IntEnum

import numpy as np
import numpy.typing as npt

__all__ = [
    "Cusum",
    "DeferenceMonitor",
    "DeferenceTest",
    "Evidence",
    "first_crossing",
    "threshold_for",
]


class Evidence(IntEnum):
    """What the shown pre-label is known to be."""

    ORDINARY = 0  # the model's label, right or wrong unknown
    KNOWN_WRONG = 1  # gold, and the pre-label is not the gold answer
    KNOWN_RIGHT = 2  # gold, and the pre-label is the gold answer


def threshold_for(horizon: int, false_positive_rate: float) -> float:
    """CUSUM threshold whose false-alarm run is at least ``horizon / rate`` observations."""
    if horizon < 1 or not 0 < false_positive_rate < 1:
        raise ValueError("need horizon >= 1 and 0 < false_positive_rate < 1")
    return math.log(horizon / false_positive_rate)


@dataclass(frozen=True)
class DeferenceTest:
    """The hypotheses about a labeler's deference and the two flagging thresholds."""

    honest_deference: float = 0.2
    full_deference: float = 0.95
    partial_deference: float = 0.55
    threshold: float = threshold_for(2000, 0.005)
    partial_threshold: float = threshold_for(100, 0.005)
    min_error_rate: float = 0.02
    max_error_rate: float = 0.5

    def __post_init__(self) -> None:
        if not 0 <= self.honest_deference < self.partial_deference < self.full_deference < 1:
            raise ValueError(
                "need 0 <= honest_deference < partial_deference < full_deference < 1")
        if self.threshold <= 0 or self.partial_threshold <= 0:
            raise ValueError("thresholds must be positive")
        if not 0 < self.min_error_rate <= self.max_error_rate < 1:
            raise ValueError("need 0 < min_error_rate <= max_error_rate < 1")

    def llr(
        self,
        evidence: npt.ArrayLike,
        changed: npt.ArrayLike,
        model_error_rate: npt.ArrayLike,
    ) -> tuple[npt.NDArray[np.float64], npt.NDArray[np.float64]]:
        """Log-likelihood ratios (full, partial), deferring over honest, of each
        pre-labelled task. ``evidence``: :class:`Evidence` codes; ``changed``: the labeler
        did not keep the pre-label; ``model_error_rate``: on the queue (used for ordinary
        tasks only). Broadcasts over arrays."""
        kind = np.asarray(evidence, dtype=np.intp)
        changed = np.asarray(changed, dtype=bool)
        error = np.clip(np.asarray(model_error_rate, dtype=float),
                        self.min_error_rate, self.max_error_rate)
        keep0 = 1 - self.honest_deference
        wrong_full = _bernoulli_llr(changed, 1 - self.full_deference, keep0)
        wrong_partial = _bernoulli_llr(changed, 1 - self.partial_deference, keep0)
        ordinary = _bernoulli_llr(changed, (1 - self.full_deference) * error, keep0 * error)
        known_wrong = kind == Evidence.KNOWN_WRONG
        full = np.where(known_wrong, wrong_full,
                        np.where(kind == Evidence.ORDINARY, ordinary, 0.0))
        partial = np.where(known_wrong, wrong_partial, 0.0)
        return full, partial


def _bernoulli_llr(changed: npt.NDArray[np.bool_], p1: npt.ArrayLike,
                   p0: npt.ArrayLike) -> npt.NDArray[np.float64]:
    """log P(changed | p1) / P(changed | p0) for change probabilities p1 (deferring), p0."""
    p1, p0 = np.asarray(p1, dtype=float), np.asarray(p0, dtype=float)
    return np.where(changed, np.log(p1 / p0), np.log((1 - p1) / (1 - p0)))


def first_crossing(
    llr: npt.ArrayLike, threshold: float
) -> tuple[npt.NDArray[np.intp], npt.NDArray[np.intp]]:
    """CUSUM over the last axis of ``llr``, for many labelers at once.

    Returns, per row, the index of the task at which the statistic first reaches
    ``threshold`` (-1 if never) and the index where that run of evidence began.
    Same arithmetic as :class:`Cusum`, step by step.
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
class Cusum:
    """One running CUSUM statistic and where its current run of evidence began."""

    threshold: float
    statistic: float = 0.0
    run_started: datetime | None = None
    run_tasks: int = 0

    def add(self, llr: float, at: datetime) -> bool:
        """Add one task's evidence; True when the statistic is at or above the threshold."""
        if self.statistic <= 0:
            self.run_started, self.run_tasks = at, 0
        self.statistic = max(0.0, self.statistic + llr)
        self.run_tasks += 1
        return self.statistic >= self.threshold

    def reset(self) -> None:
        self.statistic, self.run_started, self.run_tasks = 0.0, None, 0


@dataclass
class DeferenceMonitor:
    """One labeler's two CUSUMs; ``observe`` one pre-labelled task at a time."""

    test: DeferenceTest = field(default_factory=DeferenceTest)
    full: Cusum = field(init=False)
    partial: Cusum = field(init=False)
    tasks: int = 0
    flagged_at: datetime | None = None
    evidence_since: datetime | None = None
    flagged_by: Cusum | None = None

    def __post_init__(self) -> None:
        self.full = Cusum(self.test.threshold)
        self.partial = Cusum(self.test.partial_threshold)

    def observe(
        self, evidence: Evidence, changed: bool, model_error_rate: float, at: datetime
    ) -> bool:
        """Add one task; True exactly when this task makes the labeler flagged."""
        full, partial = self.test.llr(int(evidence), changed, model_error_rate)
        full_crossed = self.full.add(float(full), at)
        partial_crossed = self.partial.add(float(partial), at)  # 0 unless known wrong
        self.tasks += 1
        if self.flagged_at is None and (full_crossed or partial_crossed):
            # The full test's run, when both cross, is the shorter and the surer.
            self.flagged_by = self.full if full_crossed else self.partial
            self.flagged_at, self.evidence_since = at, self.flagged_by.run_started
            return True
        return False

    @property
    def statistic(self) -> float:
        """The evidence so far, as a share of the way to a flag (1.0 = flagged)."""
        return max(self.full.statistic / self.full.threshold,
                   self.partial.statistic / self.partial.threshold)

    @property
    def run_tasks(self) -> int:
        """Tasks in the evidence of the flag (or of the statistic nearest to one)."""
        if self.flagged_by is not None:
            return self.flagged_by.run_tasks
        return self.full.run_tasks

    @property
    def flagged(self) -> bool:
        return self.flagged_at is not None

    def clear(self) -> None:
        """After a review cleared the labeler: start collecting evidence afresh."""
        self.full.reset()
        self.partial.reset()
        self.flagged_at = self.evidence_since = self.flagged_by = None
