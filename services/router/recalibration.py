"""When the auto-accept threshold is re-decided, from which observations, and what is
monitored in between: the policy over time that keeps the guarantee of ``thresholds``.

- A decision uses only the observations pushed since the previous decision (its
  window). Each observation informs at most one decision, so a threshold never rests
  on data whose sampling its own predecessor chose from those same data: the threshold
  a decision adopts decides which later predictions are reviewed (weight 1) and which
  audited (weight 1/audit_rate), and those later ones are a fresh sample with
  inclusion probabilities recorded when they were routed.
- A decision is due once its window has been open ``recalibration_seconds`` (an admin
  can force one sooner). In between, the threshold in force does not move: re-testing
  a growing sample every second and adopting whatever passes would be repeated looks,
  which inflate the error.
- A window whose evidence allows no test decides nothing: it stays open and the
  threshold in force stays. A decision whose first test fails certifies nothing: the
  conservative default applies until the next one.
- Only blind reviews and audits are evidence; reviews that showed the model's label are
  kept only to mark where the evidence has a hole (see ``estimate_threshold``).
- Monitoring (the precision gauges) estimates the precision of what is auto-accepted
  now from the kept blind observations at or above the threshold in force: audits of
  auto-accepts, and reviews of items a previous, higher threshold sent to people. Only
  a policy that audits exports it; a fixed threshold audits nothing, and the accuracy
  of the items reviewed below it says nothing about those accepted above it.

The guarantee is per decision: each adopted threshold misses the target with
probability ≤ 1 - level given all that came before it. It assumes the people review
each queued item without regard to whether the model was right (skips and a
backlog reviewed most-uncertain-first are not modelled) and that the stream does not
drift within a window.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from .thresholds import LEVEL, clopper_pearson_lower

CONFIDENCE, CORRECT, WEIGHT, BLIND, AUDIT = range(5)  # the columns of Observations.rows


def decision_due(opened_at: float | None, now: float, every: float, force: bool) -> bool:
    """Whether the window opened at ``opened_at`` (epoch seconds) may be decided now.

    On the clock alone: a trigger that waited for enough audits at the threshold in
    force would keep high, narrow thresholds (few auto-accepts, so few audits) longer,
    and those are the ones likeliest to miss: the threshold in force at a given time
    would then miss more often than each decision does.
    """
    return force or (opened_at is not None and now - opened_at >= every)


@dataclass(frozen=True, slots=True)
class Monitored:
    precision: float
    lower_bound: float
    effective_n: float
    audits: int


def monitored_precision(rows: np.ndarray, threshold: float,
                        level: float = LEVEL) -> Monitored | None:
    """The Horvitz-Thompson precision of auto-accepts at ``threshold`` from the blind
    observations at or above it; None without any."""
    evidence = rows[(rows[:, BLIND] > 0) & (rows[:, CONFIDENCE] >= threshold)]
    if len(evidence) == 0:
        return None
    audits = int((evidence[:, AUDIT] > 0).sum())
    w, hit = evidence[:, WEIGHT], evidence[:, CORRECT]
    precision = float((w * hit).sum() / w.sum())
    n_eff = float(w.sum() ** 2 / (w * w).sum())
    lower = float(clopper_pearson_lower(precision * n_eff, n_eff, level))
    return Monitored(precision, lower, n_eff, audits)
