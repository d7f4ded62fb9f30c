"""The position-bias detector on the bundled world's reviewers, whose bias is known: an
unbiased reviewer is flagged within the stated false-positive rate, biased ones soon."""

from __future__ import annotations

from datetime import UTC, datetime

import numpy as np
import pytest

from loopwise.preference_world import Reviewer, World
from services.quality.position_bias import PositionBiasMonitor, PositionBiasTest

AT = datetime(2026, 1, 1, tzinfo=UTC)


def _watch(world: World, who: Reviewer, comparisons: int, rng) -> PositionBiasMonitor:
    """A reviewer judging random pairs of the world, shown in a random order."""
    pairs = [pair for p in world.train for pair in p.pairs()]
    monitor = PositionBiasMonitor()
    for _ in range(comparisons):
        a, b = pairs[int(rng.integers(len(pairs)))]
        first, second = (a, b) if rng.random() < 0.5 else (b, a)
        if monitor.observe(world.judge(who, first, second, rng) == 1, 2, AT):
            break
    return monitor


def test_the_evidence_is_exact_under_a_random_order() -> None:
    test = PositionBiasTest(bias=0.3)
    # Two candidates: p0 = 1/2, p1 = 0.65; three: p0 = 1/3, p1 = 1/3 + 0.3 * 2/3.
    assert test.llr(True, 2) == pytest.approx(np.log(0.65 / 0.5))
    assert test.llr(False, 2) == pytest.approx(np.log(0.35 / 0.5))
    assert test.llr(True, 3) == pytest.approx(np.log((1 / 3 + 0.2) / (1 / 3)))
    assert test.threshold == pytest.approx(np.log(1000 / 0.01))  # Lorden: 1% over 1,000


def test_unbiased_reviewers_are_flagged_less_often_than_the_stated_rate() -> None:
    world = World.make(seed=7)
    rng = np.random.default_rng(11)
    honest = Reviewer("honest", 0.0)
    reviewers = 300
    flagged = sum(_watch(world, honest, 1000, rng).flagged for _ in range(reviewers))
    # At most 1% each over 1,000 comparisons: 3 expected at the bound; 3 sd of slack.
    assert flagged <= 3 + 3 * np.sqrt(3)


def test_biased_reviewers_are_flagged_and_the_more_biased_sooner() -> None:
    world = World.make(seed=8)
    rng = np.random.default_rng(12)
    taken = {}
    for bias in (0.3, 0.6):
        runs = [_watch(world, Reviewer("b", bias), 1000, rng) for _ in range(40)]
        assert sum(m.flagged for m in runs) >= 36, bias  # nearly all within 1,000
        taken[bias] = float(np.median([m.comparisons for m in runs]))
        assert all(m.first_share > 0.5 for m in runs)
    assert taken[0.6] < taken[0.3] < 1000
