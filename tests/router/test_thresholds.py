"""The threshold estimator against exact binomial bounds."""

import numpy as np
import pytest
from scipy.stats import binomtest

from services.router.thresholds import (
    Observations,
    binomial_p_value,
    clopper_pearson_lower,
    estimate_threshold,
    passing_n,
)


@pytest.mark.parametrize("k, n", [(0, 10), (1, 10), (45, 50), (97, 100), (100, 100), (980, 1000)])
def test_unit_weight_bound_is_the_exact_clopper_pearson_bound(k, n):
    # A one-sided 95% lower bound is the lower end of the two-sided 90% exact interval.
    exact = binomtest(k, n).proportion_ci(confidence_level=0.90, method="exact").low
    assert clopper_pearson_lower(k, n, 0.95) == pytest.approx(exact, abs=1e-12)


def test_the_sequence_runs_from_the_highest_threshold_down_and_stops_at_the_first_failure():
    # 200 observations at confidence 0.99, all correct; 200 at 0.95 with 190 correct;
    # 200 at 0.80 with 150 correct. Grid points between observations see the same data.
    conf = np.r_[np.full(200, 0.99), np.full(200, 0.95), np.full(200, 0.80)]
    correct = np.r_[np.ones(200), np.r_[np.ones(190), np.zeros(10)],
                    np.r_[np.ones(150), np.zeros(50)]]
    at_95 = binomtest(390, 400).proportion_ci(0.90, "exact").low
    at_80 = binomtest(540, 600).proportion_ci(0.90, "exact").low
    assert at_95 >= 0.95 > at_80
    estimate = estimate_threshold(conf, correct, target=0.95, default_threshold=0.999)
    assert estimate.calibrated and estimate.threshold == 0.801  # the last grid point above 0.80
    assert estimate.precision == pytest.approx(390 / 400)
    assert estimate.lower_bound == pytest.approx(at_95, abs=1e-12)
    assert estimate.effective_n == pytest.approx(400)


def test_a_dip_below_the_target_stops_the_sequence_even_if_lower_thresholds_pass():
    # 0.99: 300 right; 0.95: 100 with 80 right (a dip); 0.90: 3000 right. The lowest
    # threshold whose own bound passes would be 0.90 (3380/3400); fixed-sequence stops at
    # the dip and keeps the threshold above it.
    conf = np.r_[np.full(300, 0.99), np.full(100, 0.95), np.full(3000, 0.90)]
    correct = np.r_[np.ones(300), np.ones(80), np.zeros(20), np.ones(3000)]
    assert clopper_pearson_lower(3380, 3400) >= 0.95
    estimate = estimate_threshold(conf, correct, target=0.95, default_threshold=0.999)
    assert estimate.calibrated and estimate.threshold == 0.951


def test_when_the_first_test_fails_nothing_is_certified():
    conf = np.full(200, 0.97)
    correct = np.r_[np.ones(180), np.zeros(20)]
    estimate = estimate_threshold(conf, correct, target=0.95, default_threshold=0.99)
    assert not estimate.calibrated and estimate.threshold == 0.99 and estimate.tested == 1


def test_reviews_that_showed_the_model_label_are_no_evidence_and_bound_the_sequence():
    conf = np.r_[np.full(100, 0.98), np.full(1000, 0.90)]
    correct = np.ones(1100)
    blind = np.r_[np.ones(100, bool), np.zeros(1000, bool)]
    estimate = estimate_threshold(conf, correct, target=0.95, default_threshold=0.99,
                                  blind=blind)
    assert estimate.calibrated and estimate.threshold == 0.98  # not below the shown ones
    assert estimate.effective_n == pytest.approx(100)


def test_a_candidate_needs_enough_evidence_to_pass_at_all():
    assert passing_n(0.95) == 59 and passing_n(0.98) == 149 and passing_n(0.8) == 14
    estimate = estimate_threshold(np.full(50, 0.99), np.ones(50), target=0.95,
                                  default_threshold=0.999, min_effective_n=30)
    assert estimate.tested == 0 and not estimate.calibrated  # 50 < 59: no decision


def test_p_value_and_bound_agree_on_rejection():
    for k, n in [(57, 60), (390, 400), (49, 50), (98.5, 103.2)]:
        lower = clopper_pearson_lower(k, n)
        p = binomial_p_value(np.array(k), np.array(n), 0.9)
        assert (p <= 0.05) == (lower >= 0.9)


def test_without_enough_evidence_the_conservative_default_stays():
    estimate = estimate_threshold(np.full(10, 0.97), np.ones(10), target=0.95,
                                  default_threshold=0.99, min_effective_n=30)
    assert not estimate.calibrated and estimate.threshold == 0.99
    empty = estimate_threshold(np.array([]), np.array([]), target=0.95, default_threshold=0.99)
    assert not empty.calibrated and empty.threshold == 0.99


def test_audit_weights_enter_through_the_effective_sample_size():
    # 50 audits above the threshold at weight 50 (a 2% audit), 100 reviews below at weight 1.
    conf = np.r_[np.full(50, 0.98), np.full(100, 0.7)]
    correct = np.r_[np.ones(49), 0, np.r_[np.ones(70), np.zeros(30)]]
    weight = np.r_[np.full(50, 50.0), np.ones(100)]
    estimate = estimate_threshold(conf, correct, weight, target=0.9, default_threshold=0.99,
                                  min_effective_n=30)
    assert estimate.threshold == 0.701  # down to the reviews at 0.7, which fail it
    assert estimate.effective_n == pytest.approx(50)  # equal weights: n_eff is the count
    assert estimate.precision == pytest.approx(49 / 50)
    assert estimate.lower_bound == pytest.approx(
        binomtest(49, 50).proportion_ci(0.90, "exact").low, abs=1e-9)


def test_calibration_tracks_a_simulated_model():
    rng = np.random.default_rng(0)
    conf = rng.uniform(0.5, 1.0, 20_000)
    correct = rng.random(20_000) < conf  # a perfectly calibrated model
    estimate = estimate_threshold(conf, correct, target=0.95, default_threshold=0.999)
    # Precision above t is (1 + t) / 2; it reaches 0.95 at t = 0.9, plus a margin for the bound.
    assert estimate.calibrated and 0.9 <= estimate.threshold <= 0.93
    assert estimate.lower_bound >= 0.95


def test_observations_are_taken_in_incrementally_and_keep_the_newest():
    obs = Observations(limit=5)
    obs.take(3, [b"0.3|1|1|1|0", b"0.2|0|1|1|0", b"0.1|1|1|1|0"])  # newest first (LRANGE)
    assert obs.rows[:, 0].tolist() == [0.1, 0.2, 0.3] and obs.seen == 3
    obs.take(3, [])
    obs.take(7, [b"0.7|1|2|1|1", b"0.6|1|1|0|0", b"0.5|0|1|1|0", b"0.4|1|1|1|0"])
    assert obs.rows[:, 0].tolist() == [0.3, 0.4, 0.5, 0.6, 0.7] and obs.seen == 7
    assert obs.rows[-1].tolist() == [0.7, 1.0, 2.0, 1.0, 1.0]
    # The window after a decision taken when 5 had been pushed: the 6th and 7th.
    assert obs.since(5)[:, 0].tolist() == [0.6, 0.7]
    assert obs.since(7).size == 0 and len(obs.since(0)) == 5  # all that are kept


def test_rows_from_before_blind_and_audit_were_recorded_count_as_blind():
    obs = Observations(limit=5)
    obs.take(2, [b"0.9|1|50.000000", b"0.5|0|1.000000"])
    assert obs.rows.tolist() == [[0.5, 0, 1, 1, 0], [0.9, 1, 50, 1, 1]]
