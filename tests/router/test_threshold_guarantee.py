"""The auto-accept guarantee by simulation: with recalibration (each round's threshold
decides what the next round audits and reviews), the threshold fixed-sequence testing
chooses misses the target precision in at most 5% of runs, on every precision curve,
flat and non-monotone ones included. Seeds are fixed, so the figures are too."""

from __future__ import annotations

import pytest

from bench.calibration import CURVES, simulate


@pytest.mark.parametrize("curve", CURVES, ids=lambda c: c.name.split(" (")[0])
def test_the_chosen_threshold_misses_the_target_in_at_most_5_percent_of_runs(curve):
    out = simulate(curve, "fixed-sequence", runs=1000, rounds=4, items=2000, seed=7)
    low, high = out.interval()
    per_decision = out.decision_violations / out.decisions
    print(f"{curve.name}: {out.violations}/{out.runs} runs miss ({out.rate:.1%}, 95% CI "
          f"[{low:.1%}, {high:.1%}]); {per_decision:.1%} of {out.decisions} decisions")
    # The point estimates are asserted; with 1000 runs the rate's interval is about ±1.4
    # points at 5%, so a true rate just above 5% could pass once in a while: the bench
    # (python -m bench.calibration) runs more for the measured figures.
    assert out.rate <= 0.05
    assert per_decision <= 0.05
