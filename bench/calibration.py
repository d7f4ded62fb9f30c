"""Does the auto-accept threshold keep its promise? A simulation of calibration with
recalibration, for the router's procedure and the rule it replaced.

A model's confidence is uniform on [0.5, 1]; it is right with probability
``accuracy(confidence)``, a precision curve (calibrated, flat just around the target,
non-monotone, over-confident at the top). Each round routes ``items`` predictions under
the threshold in force: below it every one is reviewed (weight 1), above it a random
``audit_rate`` share is audited (weight 1/audit_rate), the rest auto-accepted; then the
threshold is decided again, so round k's choice decides what round k+1 observes.
Before the first certified threshold nothing is auto-accepted (everything is reviewed).

Procedures:
- ``fixed-sequence`` (the router's): ``estimate_threshold`` on the last round's
  observations only (the window since the previous decision).
- ``lowest-passing`` (the former rule): the lowest of up to 2,000 observed confidences
  whose own 95% lower bound passes, on every observation so far (it recalibrated on
  everything it had; here once a round, where the router did it every second).

A run violates when its final threshold's true precision, P(right | confidence ≥ t),
is below the target; the rate should be ≤ 5%. Run: ``python -m bench.calibration``.
"""

from __future__ import annotations

import argparse
from collections.abc import Callable
from dataclasses import dataclass
from functools import cached_property
from typing import Literal

import numpy as np

from services.router.thresholds import clopper_pearson_lower, estimate_threshold

Procedure = Literal["fixed-sequence", "lowest-passing"]
TARGET = 0.95
LOW, HIGH = 0.5, 1.0  # the confidence range


@dataclass(frozen=True)
class Curve:
    name: str
    accuracy: Callable[[np.ndarray], np.ndarray]  # P(model right | confidence)

    @cached_property
    def _tail(self) -> tuple[np.ndarray, np.ndarray]:
        c = np.linspace(LOW, HIGH, 200_001)
        return c, np.r_[np.cumsum(self.accuracy(c)[::-1])[::-1], 0.0]

    def precision(self, threshold: float) -> float:
        """True P(right | confidence ≥ t) for uniform confidences (numerical integral)."""
        c, tail = self._tail
        first = int(np.searchsorted(c, min(max(threshold, LOW), HIGH), side="left"))
        return float(tail[first] / max(c.size - first, 1))


def _steps(*pieces: tuple[float, float]) -> Callable[[np.ndarray], np.ndarray]:
    """A step curve: ``(from confidence, accuracy)`` pieces, ascending."""
    edges = np.array([p[0] for p in pieces])
    values = np.array([p[1] for p in pieces])
    return lambda c: values[np.searchsorted(edges, c, side="right") - 1]


CURVES = (
    Curve("calibrated (accuracy = confidence)", lambda c: c),
    # Precision 0.9485..0.951 at every threshold: it crosses 0.95 at 0.8, so most
    # candidates miss the target by a few thousandths.
    Curve("flat around the target", lambda c: 0.946 + 0.01 * (c - LOW)),
    # Good at the top, a band below the target, good again, then poor: precision is
    # not monotone in the threshold.
    Curve("non-monotone (a dip below 0.95)",
          _steps((LOW, 0.80), (0.75, 0.975), (0.9, 0.90), (0.95, 0.995))),
    # Worst where it is surest: no threshold meets the target above 0.98.
    Curve("over-confident at the top", _steps((LOW, 0.85), (0.8, 0.975), (0.98, 0.93))),
)


def lowest_passing(conf: np.ndarray, hit: np.ndarray, w: np.ndarray, target: float,
                   min_effective_n: float = 30.0, max_candidates: int = 2000) -> float | None:
    """The former rule: the lowest candidate whose own lower bound meets the target."""
    order = np.argsort(-conf, kind="stable")
    conf, hit, w = conf[order], hit[order], w[order]
    sw, sw2, swc = np.cumsum(w), np.cumsum(w * w), np.cumsum(w * hit)
    last = np.r_[conf[1:] != conf[:-1], True]
    sw, sw2, swc, cand = sw[last], sw2[last], swc[last], conf[last]
    if cand.size > max_candidates:
        keep = np.unique(np.linspace(0, cand.size - 1, max_candidates).round().astype(int))
        sw, sw2, swc, cand = sw[keep], sw2[keep], swc[keep], cand[keep]
    n_eff = sw * sw / sw2
    ok = (clopper_pearson_lower(swc / sw * n_eff, n_eff) >= target) & (n_eff >= min_effective_n)
    return float(cand[np.nonzero(ok)[0].max()]) if ok.any() else None


@dataclass
class Outcome:
    curve: str
    procedure: str
    runs: int
    violations: int  # runs whose final threshold misses the target
    decisions: int  # decisions made, over all rounds and runs
    decision_violations: int  # ...that adopted a threshold missing the target
    certified: int  # runs that end with a certified threshold
    mean_auto_share: float  # share of predictions auto-accepted at the final threshold

    @property
    def rate(self) -> float:
        return self.violations / self.runs

    def interval(self, level: float = 0.95) -> tuple[float, float]:
        """Two-sided exact (Clopper-Pearson) interval of the violation rate."""
        from scipy.stats import binomtest

        ci = binomtest(self.violations, self.runs).proportion_ci(level, "exact")
        return float(ci.low), float(ci.high)


def simulate(curve: Curve, procedure: Procedure, *, runs: int = 1000, rounds: int = 6,
             items: int = 3000, audit_rate: float = 0.1, target: float = TARGET,
             seed: int = 0) -> Outcome:
    rng = np.random.default_rng(seed)
    violations = decisions = decision_violations = certified = 0
    auto_share = 0.0
    for _ in range(runs):
        threshold: float | None = None  # None: nothing certified, everything reviewed
        kept: list[np.ndarray] = []
        for _ in range(rounds):
            conf = rng.uniform(LOW, HIGH, items)
            right = rng.random(items) < curve.accuracy(conf)
            above = conf >= threshold if threshold is not None else np.zeros(items, bool)
            audited = above & (rng.random(items) < audit_rate)
            seen = ~above | audited
            weight = np.where(audited, 1.0 / audit_rate, 1.0)[seen]
            rows = np.c_[conf[seen], right[seen], weight]
            kept.append(rows)
            data = np.concatenate(kept)
            if procedure == "fixed-sequence":
                est = estimate_threshold(data[:, 0], data[:, 1], data[:, 2], target=target,
                                         default_threshold=np.inf)
                if not est.tested:  # no decision: the window stays open
                    continue
                threshold = est.threshold if est.calibrated else None
                kept = []  # the next decision sees only what is observed after this one
            else:
                threshold = lowest_passing(data[:, 0], data[:, 1], data[:, 2], target)
            decisions += 1
            decision_violations += threshold is not None and curve.precision(threshold) < target
        if threshold is not None:
            certified += 1
            violations += bool(curve.precision(threshold) < target)
            auto_share += (HIGH - max(threshold, LOW)) / (HIGH - LOW) * (1 - audit_rate)
    return Outcome(curve.name, procedure, runs, violations, decisions, decision_violations,
                   certified, auto_share / runs)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--runs", type=int, default=2000)
    parser.add_argument("--rounds", type=int, default=6)
    parser.add_argument("--items", type=int, default=3000)
    args = parser.parse_args()
    print(f"target {TARGET}, {args.runs} runs x {args.rounds} rounds x {args.items} items, "
          "audit 10%")
    for curve in CURVES:
        for procedure in ("lowest-passing", "fixed-sequence"):
            out = simulate(curve, procedure, runs=args.runs, rounds=args.rounds,
                           items=args.items)
            low, high = out.interval()
            per = out.decision_violations / max(out.decisions, 1)
            print(f"{curve.name:38s} {procedure:15s} final miss {out.rate:6.2%} "
                  f"[{low:.2%}, {high:.2%}]  per decision {per:6.2%} of {out.decisions}  "
                  f"certified {out.certified / out.runs:6.1%}  auto {out.mean_auto_share:.1%}")


if __name__ == "__main__":
    main()
