"""The threshold estimator against exact binomial bounds."""

import numpy as np
import pytest
from scipy.stats import binomtest

from services.router.thresholds import clopper_pearson_lower, estimate_threshold


@pytest.mark.parametrize("k, n", [(0, 10), (1, 10), (45, 50), (97, 100), (100, 100), (980, 1000)])
def test_unit_weight_bound_is_the_exact_clopper_pearson_bound(k, n):
    # A one-sided 95% lower bound is the lower end of the two-sided 90% exact interval.
    exact = binomtest(k, n).proportion_ci(confidence_level=0.90, method="exact").low
    assert clopper_pearson_lower(k, n, 0.95) == pytest.approx(exact, abs=1e-12)


def test_threshold_is_the_lowest_confidence_whose_bound_meets_the_target():
    # 200 observations at confidence 0.99, all correct; 200 at 0.95 with 190 correct;
    # 200 at 0.80 with 150 correct.
    conf = np.r_[np.full(200, 0.99), np.full(200, 0.95), np.full(200, 0.80)]
    correct = np.r_[np.ones(200), np.r_[np.ones(190), np.zeros(10)],
                    np.r_[np.ones(150), np.zeros(50)]]
    at_95 = binomtest(390, 400).proportion_ci(0.90, "exact").low
    at_80 = binomtest(540, 600).proportion_ci(0.90, "exact").low
    assert at_95 >= 0.95 > at_80
    estimate = estimate_threshold(conf, correct, target=0.95, default_threshold=0.999)
    assert estimate.calibrated and estimate.threshold == 0.95
    assert estimate.precision == pytest.approx(390 / 400)
    assert estimate.lower_bound == pytest.approx(at_95, abs=1e-12)
    assert estimate.effective_n == pytest.approx(400)


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
    assert estimate.threshold == 0.98
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
    assert 0.9 <= estimate.threshold <= 0.93
    assert estimate.lower_bound >= 0.95


def test_observations_are_taken_in_incrementally_and_keep_the_newest():
    from services.router.thresholds import Observations

    obs = Observations(limit=5)
    obs.take(3, [b"0.3|1|1", b"0.2|0|1", b"0.1|1|1"])  # newest first, as LRANGE gives them
    assert obs.rows[:, 0].tolist() == [0.1, 0.2, 0.3] and obs.seen == 3
    obs.take(3, [])
    obs.take(7, [b"0.7|1|2", b"0.6|1|1", b"0.5|0|1", b"0.4|1|1"])
    assert obs.rows[:, 0].tolist() == [0.3, 0.4, 0.5, 0.6, 0.7] and obs.seen == 7
    assert obs.rows[-1].tolist() == [0.7, 1.0, 2.0]


def test_many_distinct_confidences_still_give_a_threshold_that_meets_the_target_exactly():
    import numpy as np

    from services.router.thresholds import clopper_pearson_lower, estimate_threshold

    rng = np.random.default_rng(3)
    conf = rng.uniform(0.5, 1.0, 40_000)
    correct = rng.random(conf.size) < conf  # calibrated model
    full = estimate_threshold(conf, correct, target=0.95, default_threshold=0.99,
                              max_candidates=10**9)
    fast = estimate_threshold(conf, correct, target=0.95, default_threshold=0.99)
    assert full.calibrated and fast.calibrated
    assert full.threshold <= fast.threshold <= full.threshold + 0.5 / 2000 * 10
    above = conf >= fast.threshold
    exact = clopper_pearson_lower(correct[above].sum(), above.sum())
    assert exact >= 0.95 and np.isclose(exact, fast.lower_bound)
