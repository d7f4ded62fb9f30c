"""Query strategies score hand-checked probability tables as the formulas say."""

import numpy as np
import pytest
from sklearn.linear_model import LogisticRegression

from services.scorer.strategies import (
    COMMITTEE_STRATEGIES,
    STRATEGIES,
    bagged_committee,
    committee_proba,
    consensus_kl,
    entropy,
    get_strategy,
    least_confidence,
    margin,
    random_scores,
    vote_entropy,
)

PROBA = np.array([[0.5, 0.3, 0.2], [0.9, 0.05, 0.05]])


def test_least_confidence_is_one_minus_top_probability():
    np.testing.assert_allclose(least_confidence(PROBA), [0.5, 0.1])


def test_margin_is_one_minus_gap_between_top_two():
    # 1 - (0.5 - 0.3) and 1 - (0.9 - 0.05)
    np.testing.assert_allclose(margin(PROBA), [0.8, 0.15])


def test_margin_ignores_column_order():
    np.testing.assert_allclose(margin(PROBA[:, ::-1]), [0.8, 0.15])


def test_entropy_is_in_nats():
    # -(0.5 ln 0.5 + 0.3 ln 0.3 + 0.2 ln 0.2), -(0.9 ln 0.9 + 2 * 0.05 ln 0.05)
    np.testing.assert_allclose(entropy(PROBA), [1.0296530, 0.3943977], rtol=1e-6)


def test_entropy_treats_zero_probability_as_contributing_nothing():
    np.testing.assert_allclose(entropy(np.array([[1.0, 0.0], [0.5, 0.5]])), [0.0, np.log(2)])


def test_uncertainty_strategies_rank_the_unsure_row_first():
    for name in ("least_confidence", "margin", "entropy"):
        scores = get_strategy(name)(PROBA)
        assert scores[0] > scores[1], name


def test_float32_probabilities_stay_float32():
    proba = PROBA.astype(np.float32)
    for fn in (least_confidence, margin, entropy):
        assert fn(proba).dtype == np.float32


def test_random_is_seeded_and_one_score_per_row():
    a = random_scores(PROBA, rng=7)
    assert a.shape == (2,)
    np.testing.assert_array_equal(a, random_scores(PROBA, rng=7))
    assert not np.array_equal(a, random_scores(PROBA, rng=8))


def test_vote_entropy_is_zero_when_members_agree():
    members = np.array([PROBA, PROBA * 0.9 + 0.1 / 3, PROBA])
    np.testing.assert_allclose(vote_entropy(members), [0.0, 0.0])


def test_vote_entropy_is_positive_when_members_split():
    split = np.array([[[0.6, 0.4]], [[0.4, 0.6]]])  # two members, one item, two classes
    np.testing.assert_allclose(vote_entropy(split), [np.log(2)])


def test_consensus_kl_is_zero_for_identical_members():
    identical = np.array([PROBA, PROBA, PROBA])
    np.testing.assert_allclose(consensus_kl(identical), [0.0, 0.0], atol=1e-12)


def test_consensus_kl_matches_hand_computation():
    members = np.array([[[0.8, 0.2]], [[0.4, 0.6]]])  # consensus [0.6, 0.4]
    expected = 0.5 * (
        0.8 * np.log(0.8 / 0.6)
        + 0.2 * np.log(0.2 / 0.4)
        + 0.4 * np.log(0.4 / 0.6)
        + 0.6 * np.log(0.6 / 0.4)
    )
    np.testing.assert_allclose(consensus_kl(members), [expected])


def test_consensus_kl_sees_disagreement_on_confidence_that_votes_miss():
    members = np.array([[[0.99, 0.01]], [[0.6, 0.4]]])
    assert vote_entropy(members)[0] == 0.0
    assert consensus_kl(members)[0] > 0.0


def test_registry_names_every_strategy_and_marks_committees():
    assert set(STRATEGIES) == {
        "random",
        "least_confidence",
        "margin",
        "entropy",
        "vote_entropy",
        "consensus_kl",
    }
    assert COMMITTEE_STRATEGIES <= set(STRATEGIES)
    assert get_strategy("margin") is margin


def test_unknown_strategy_error_lists_known_names():
    with pytest.raises(ValueError, match=r"unknown query strategy 'margn'.*margin"):
        get_strategy("margn")


def test_bagged_committee_is_reproducible_and_sees_every_class():
    rng = np.random.default_rng(0)
    X = rng.normal(size=(12, 3))
    y = np.repeat([0, 1, 2], 4)
    model = LogisticRegression(max_iter=200)
    first = committee_proba(bagged_committee(model, X, y, n_members=4, seed=3), X)
    again = committee_proba(bagged_committee(model, X, y, n_members=4, seed=3), X)
    assert first.shape == (4, 12, 3)
    np.testing.assert_array_equal(first, again)
    other = committee_proba(bagged_committee(model, X, y, n_members=4, seed=4), X)
    assert not np.array_equal(first, other)


def test_margin_of_a_tied_top_is_maximal():
    np.testing.assert_allclose(margin(np.array([[0.4, 0.4, 0.2]])), [1.0])


def test_margin_agrees_for_few_and_many_classes():
    rng = np.random.default_rng(0)
    for n_classes in (2, 10, 100):
        proba = rng.dirichlet(np.ones(n_classes), size=50)
        top = np.sort(proba, axis=1)
        np.testing.assert_allclose(margin(proba), 1 - (top[:, -1] - top[:, -2]))
