import math
from datetime import UTC, datetime, timedelta

import numpy as np
import pytest

from services.quality.detection import (
    DeferenceMonitor,
    DeferenceTest,
    Evidence,
    first_crossing,
    threshold_for,
)

T0 = datetime(2025, 1, 1, tzinfo=UTC)


def test_threshold_is_log_of_horizon_over_rate():
    assert threshold_for(2000, 0.01) == pytest.approx(math.log(200_000))
    with pytest.raises(ValueError):
        threshold_for(2000, 0.0)


W, N, R = Evidence.KNOWN_WRONG, Evidence.ORDINARY, Evidence.KNOWN_RIGHT


def test_llr_signs_follow_the_hypotheses():
    test = DeferenceTest(honest_deference=0.3, partial_deference=0.5, full_deference=0.8)
    full, partial = test.llr([W, W, N, N, R, R], [False, True, True, False, True, False], 0.15)
    # Keeping a known-wrong pre-label is evidence of deferring; catching it is not.
    assert full[0] == pytest.approx(math.log(0.8 / 0.3))
    assert full[1] == pytest.approx(math.log(0.2 / 0.7))
    assert partial[0] == pytest.approx(math.log(0.5 / 0.3))
    assert partial[1] == pytest.approx(math.log(0.5 / 0.7))
    # On ordinary pre-labels, changing one is evidence of judging (full test only).
    assert full[2] == pytest.approx(math.log(0.2 * 0.15 / (0.7 * 0.15)))
    assert full[3] == pytest.approx(math.log((1 - 0.2 * 0.15) / (1 - 0.7 * 0.15)))
    assert full[3] > 0
    # Ordinary changes cannot tell partial deference from caution; a known-right
    # pre-label tells neither test anything.
    assert partial[2] == partial[3] == partial[4] == partial[5] == 0.0
    assert full[4] == full[5] == 0.0


def test_error_rate_is_clipped_so_a_perfect_model_gives_no_infinite_evidence():
    test = DeferenceTest()
    full, partial = test.llr([N, N], [True, False], [0.0, 1.0])
    assert np.isfinite(full).all() and np.isfinite(partial).all()


def test_invalid_hypotheses_are_refused():
    with pytest.raises(ValueError):
        DeferenceTest(honest_deference=0.6, partial_deference=0.5)
    with pytest.raises(ValueError):
        DeferenceTest(partial_deference=0.95, full_deference=0.9)
    with pytest.raises(ValueError):
        DeferenceTest(partial_threshold=0.0)


def test_a_half_time_stamper_is_flagged_by_the_partial_test_on_known_wrong_gold():
    """Ordinary changes as often as a cautious honest reviewer; only the known-wrong
    pre-labels they keep (half of them) give them away."""
    rng = np.random.default_rng(3)
    monitor = DeferenceMonitor()
    for t in range(20_000):
        wrong = t % 35 == 0
        kept = rng.random() < 0.5
        changed = (not kept) if wrong else bool(rng.random() < 0.12)
        if monitor.observe(W if wrong else N, changed, 0.15, T0 + timedelta(minutes=t)):
            break
    assert monitor.flagged and monitor.flagged_by is monitor.partial
    assert monitor.partial.statistic >= monitor.test.partial_threshold
    assert monitor.full.statistic < monitor.test.threshold


def test_a_cautious_reviewer_at_the_honest_bound_drifts_down_on_both_tests():
    """Keeps the pre-label on 20% of tasks (knows 80% of the answers): the expected step
    of each statistic is negative, so false flags stay rare whatever the horizon."""
    test = DeferenceTest()
    e = 0.15
    p_wrong_changed = 1 - test.honest_deference
    p_ordinary_changed = (1 - test.honest_deference) * e
    full_w, partial_w = test.llr([W, W], [True, False], e)
    full_o, _ = test.llr([N, N], [True, False], e)
    assert p_wrong_changed * partial_w[0] + (1 - p_wrong_changed) * partial_w[1] < 0
    assert p_wrong_changed * full_w[0] + (1 - p_wrong_changed) * full_w[1] < 0
    assert p_ordinary_changed * full_o[0] + (1 - p_ordinary_changed) * full_o[1] < 0


def test_rubber_stamper_is_flagged_and_evidence_starts_where_the_run_began():
    monitor = DeferenceMonitor()
    flagged_at = None
    # 50 tasks of honest behaviour (changes 20% of pre-labels), then pure rubber-stamping.
    for t in range(2000):
        changed = (t % 5 == 0) if t < 50 else False
        if monitor.observe(N, changed, 0.15, T0 + timedelta(minutes=t)):
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
        assert not monitor.observe(W if planted else N, bool(changed), 0.15, T0)


def test_vectorised_cusum_matches_the_monitor():
    rng = np.random.default_rng(2)
    test = DeferenceTest(threshold=4.0)
    evidence = np.where(rng.random((20, 400)) < 0.05, W, N)
    changed = rng.random((20, 400)) < 0.06
    full, _ = test.llr(evidence, changed, 0.15)
    crossed, since = first_crossing(full, test.threshold)
    for row in range(20):
        monitor = DeferenceMonitor(test=DeferenceTest(threshold=4.0, partial_threshold=1e9))
        expected = expected_since = -1
        for t in range(400):
            if monitor.observe(Evidence(evidence[row, t]), bool(changed[row, t]), 0.15,
                               T0 + timedelta(seconds=t)):
                expected = t
                expected_since = int((monitor.evidence_since - T0).total_seconds())
                break
        assert crossed[row] == expected
        assert since[row] == expected_since


def test_clear_restarts_the_evidence():
    monitor = DeferenceMonitor(test=DeferenceTest(threshold=1.0))
    while not monitor.observe(W, False, 0.15, T0):
        pass
    monitor.clear()
    assert not monitor.flagged and monitor.statistic == 0.0
