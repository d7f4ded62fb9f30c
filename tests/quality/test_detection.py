import math
from datetime import UTC, datetime, timedelta

import numpy as np
import pytest

from services.quality.detection import (
    DeferenceMonitor,
    DeferenceTest,
    first_crossing,
    threshold_for,
)

T0 = datetime(2025, 1, 1, tzinfo=UTC)


def test_threshold_is_log_of_horizon_over_rate():
    assert threshold_for(2000, 0.01) == pytest.approx(math.log(200_000))
    with pytest.raises(ValueError):
        threshold_for(2000, 0.0)


def test_llr_signs_follow_the_hypotheses():
    test = DeferenceTest()
    # Keeping a planted wrong pre-label is evidence of deferring; catching it is not.
    test = DeferenceTest(catch_judging=0.7, catch_deferring=0.2, judging_share=0.7,
                         deferring_share=0.25)
    assert test.llr(True, False, 0.15) == pytest.approx(math.log(0.8 / 0.3))
    assert test.llr(True, True, 0.15) == pytest.approx(math.log(0.2 / 0.7))
    # On ordinary pre-labels, changing one is evidence of judging.
    assert test.llr(False, True, 0.15) == pytest.approx(math.log(0.25 / 0.7))
    keep = test.llr(False, False, 0.15)
    assert keep == pytest.approx(math.log((1 - 0.25 * 0.15) / (1 - 0.7 * 0.15)))
    assert keep > 0


def test_error_rate_is_clipped_so_a_perfect_model_gives_no_infinite_evidence():
    test = DeferenceTest()
    assert np.isfinite(test.llr([False, False], [True, False], [0.0, 1.0])).all()


def test_invalid_hypotheses_are_refused():
    with pytest.raises(ValueError):
        DeferenceTest(catch_judging=0.2, catch_deferring=0.7)
    with pytest.raises(ValueError):
        DeferenceTest(judging_share=0.2, deferring_share=0.5)


def test_rubber_stamper_is_flagged_and_evidence_starts_where_the_run_began():
    monitor = DeferenceMonitor()
    flagged_at = None
    # 50 tasks of honest behaviour (changes 20% of pre-labels), then pure rubber-stamping.
    for t in range(2000):
        changed = (t % 5 == 0) if t < 50 else False
        if monitor.observe(False, changed, 0.15, T0 + timedelta(minutes=t)):
            flagged_at = t
            break
    assert flagged_at is not None and flagged_at > 50
    assert monitor.flagged
    assert monitor.evidence_since >= T0 + timedelta(minutes=45)


def test_honest_labeler_who_corrects_as_often_as_the_model_errs_is_not_flagged():
    rng = np.random.default_rng(1)
    monitor = DeferenceMonitor()
    for _ in range(5000):
        planted = rng.random() < 0.025
        changed = rng.random() < (0.95 if planted else 0.2)
        assert not monitor.observe(bool(planted), bool(changed), 0.15, T0)


def test_vectorised_cusum_matches_the_monitor():
    rng = np.random.default_rng(2)
    test = DeferenceTest(threshold=4.0)
    planted = rng.random((20, 400)) < 0.05
    changed = rng.random((20, 400)) < 0.06
    crossed, since = first_crossing(test.llr(planted, changed, 0.15), test.threshold)
    for row in range(20):
        monitor = DeferenceMonitor(test=test)
        expected = expected_since = -1
        for t in range(400):
            if monitor.observe(bool(planted[row, t]), bool(changed[row, t]), 0.15,
                               T0 + timedelta(seconds=t)):
                expected = t
                expected_since = int((monitor.evidence_since - T0).total_seconds())
                break
        assert crossed[row] == expected
        assert since[row] == expected_since


def test_clear_restarts_the_evidence():
    monitor = DeferenceMonitor(test=DeferenceTest(threshold=1.0))
    while not monitor.observe(True, False, 0.15, T0):
        pass
    monitor.clear()
    assert not monitor.flagged and monitor.statistic == 0.0
