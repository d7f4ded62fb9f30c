"""Selection picks distinct, in-budget, non-excluded items; chunking changes nothing."""

import numpy as np
import pytest
from sklearn.linear_model import LogisticRegression

from services.scorer.diversity import coreset_batch, kmeanspp_batch, top_m_shortlist
from services.scorer.selection import score_pool_chunked, seed_batch, select_batch
from services.scorer.strategies import bagged_committee, get_strategy


@pytest.fixture
def pool():
    rng = np.random.default_rng(0)
    features = rng.normal(size=(500, 8)).astype(np.float32)
    scores = rng.random(500)
    return features, scores


def test_plain_selection_takes_the_highest_scores_in_order():
    scores = np.array([0.1, 0.9, 0.5, 0.7, 0.3])
    np.testing.assert_array_equal(select_batch(scores, 3), [1, 3, 2])


@pytest.mark.parametrize("diversity", [None, "kmeanspp", "coreset"])
def test_selection_is_unique_within_budget_and_skips_excluded(pool, diversity):
    features, scores = pool
    exclude = np.argsort(-scores)[:40]  # the most tempting items
    picked = select_batch(
        scores, 25, features=features, diversity=diversity, exclude=exclude, rng=1
    )
    assert len(picked) == 25
    assert len(np.unique(picked)) == len(picked)
    assert not set(picked) & set(exclude)


@pytest.mark.parametrize("diversity", [None, "kmeanspp", "coreset"])
def test_selection_never_exceeds_what_is_left(pool, diversity):
    features, scores = pool
    exclude = np.arange(490)
    picked = select_batch(scores, 50, features=features, diversity=diversity, exclude=exclude)
    assert sorted(picked) == list(range(490, 500))


def test_labeled_items_are_never_reselected_and_repel_the_batch():
    features = np.array([[0.0], [0.01], [5.0], [10.0]], dtype=np.float32)
    scores = np.array([0.9, 0.9, 0.8, 0.1])
    picked = coreset_batch(features, scores, 1, labeled_features=features[[0]], shortlist_factor=3)
    assert picked.tolist() == [2]  # 1 is as uncertain but sits next to a labelled point
    picked = select_batch(scores, 2, features=features, diversity="coreset", labeled=[0])
    assert 0 not in picked and len(set(picked)) == 2


@pytest.mark.parametrize("pick", [kmeanspp_batch, coreset_batch])
def test_diversity_batch_has_no_duplicates_even_on_duplicate_points(pick):
    features = np.zeros((30, 4), dtype=np.float32)  # every candidate identical
    picked = pick(features, np.linspace(0, 1, 30), 10)
    assert len(np.unique(picked)) == 10


def test_coreset_spreads_over_clusters_that_top_k_would_crowd():
    rng = np.random.default_rng(0)
    centers = np.array([[0, 0], [20, 0], [0, 20]], dtype=np.float32)
    features = np.concatenate([c + rng.normal(size=(50, 2)) for c in centers]).astype(np.float32)
    scores = np.r_[np.full(50, 0.9), np.full(50, 0.8), np.full(50, 0.7)]
    picked = select_batch(scores, 3, features=features, diversity="coreset", shortlist_factor=50)
    assert sorted(picked // 50) == [0, 1, 2]
    assert (select_batch(scores, 3) // 50).tolist() == [0, 0, 0]


def test_kmeanspp_is_reproducible_for_a_seed(pool):
    features, scores = pool
    a = select_batch(scores, 20, features=features, diversity="kmeanspp", rng=5)
    b = select_batch(scores, 20, features=features, diversity="kmeanspp", rng=5)
    np.testing.assert_array_equal(a, b)


def test_diversity_only_looks_at_the_shortlist(pool):
    features, scores = pool
    shortlist = set(top_m_shortlist(scores, 30))
    for method in ("kmeanspp", "coreset"):
        picked = select_batch(scores, 10, features=features, diversity=method, shortlist_factor=3)
        assert set(picked) <= shortlist


def test_unknown_diversity_and_missing_features_fail_clearly(pool):
    _, scores = pool
    with pytest.raises(ValueError, match="coreset"):
        select_batch(scores, 5, features=pool[0], diversity="dpp")
    with pytest.raises(ValueError, match="features"):
        select_batch(scores, 5, diversity="coreset")


def test_zero_budget_and_nan_scores():
    assert select_batch(np.array([0.2, 0.4]), 0).size == 0
    with pytest.raises(ValueError, match="NaN"):
        select_batch(np.array([0.2, np.nan]), 1)


def test_seed_batch_is_class_balanced_with_a_hint():
    labels = np.repeat(np.arange(10), [30, 30, 30, 30, 30, 30, 30, 30, 30, 3])
    picked = seed_batch(labels.size, 20, labels, rng=0)
    assert len(np.unique(picked)) == 20
    counts = np.bincount(labels[picked], minlength=10)
    assert counts.min() == 2 and counts.max() == 2


def test_seed_batch_tops_up_from_other_classes_when_one_runs_out():
    labels = np.array([0] * 50 + [1] * 2)
    picked = seed_batch(labels.size, 10, labels, rng=0)
    assert np.bincount(labels[picked]).tolist() == [8, 2]


def test_seed_batch_without_hint_is_random_unique_and_reproducible():
    a = seed_batch(100, 15, rng=3)
    assert len(np.unique(a)) == 15 and a.max() < 100
    np.testing.assert_array_equal(a, seed_batch(100, 15, rng=3))
    assert seed_batch(5, 15).size == 5


@pytest.fixture
def fitted():
    rng = np.random.default_rng(1)
    X = rng.normal(size=(1000, 5)).astype(np.float32)
    y = (X[:, 0] + X[:, 1] > 0).astype(int) + (X[:, 2] > 0.5).astype(int)
    return LogisticRegression(max_iter=500).fit(X[:200], y[:200]), X, y


@pytest.mark.parametrize("strategy", ["margin", "entropy", "least_confidence", "random"])
def test_chunked_scoring_equals_unchunked(fitted, strategy):
    model, X, _ = fitted
    whole = score_pool_chunked(model, X, strategy, chunk_rows=len(X), shortlist_size=50)
    chunked = score_pool_chunked(model, X, strategy, chunk_rows=97, shortlist_size=50)
    np.testing.assert_array_equal(chunked.scores, whole.scores)
    np.testing.assert_array_equal(chunked.shortlist, whole.shortlist)
    if strategy != "random":
        direct = get_strategy(strategy)(model.predict_proba(X)).astype(np.float32)
        np.testing.assert_array_equal(whole.scores, direct)
    np.testing.assert_array_equal(whole.shortlist, top_m_shortlist(whole.scores, 50))


def test_chunked_scoring_takes_a_committee_for_committee_strategies(fitted):
    model, X, y = fitted
    members = bagged_committee(model, X[:200], y[:200], n_members=3)
    whole = score_pool_chunked(members, X, "vote_entropy", chunk_rows=len(X))
    chunked = score_pool_chunked(members, X, "vote_entropy", chunk_rows=128)
    np.testing.assert_array_equal(chunked.scores, whole.scores)
    with pytest.raises(ValueError, match="committee"):
        score_pool_chunked(model, X, "consensus_kl")


def test_kmeanspp_never_draws_zero_score_candidates_while_others_remain():
    rng = np.random.default_rng(0)
    features = rng.normal(size=(400, 5)).astype(np.float32)
    scores = np.where(np.arange(400) % 2 == 0, 1.0, 0.0)
    for seed in range(5):
        picked = kmeanspp_batch(
            features, scores, 50, labeled_features=features[:3], shortlist_factor=8, rng=seed
        )
        assert (scores[picked] > 0).all()


@pytest.mark.parametrize("n", [1_000, 200_000])
def test_shortlist_breaks_ties_by_lower_index_even_at_the_cut(n):
    rng = np.random.default_rng(0)
    scores = np.round(rng.random(n), 2)
    scores[::3] = -np.inf  # excluded
    order = np.lexsort((np.arange(n), -scores))
    expected = order[scores[order] > -np.inf][:500]
    np.testing.assert_array_equal(top_m_shortlist(scores, 500), expected)


def _eager_k_center(features, scores, k, labeled, shortlist_factor):
    """Textbook greedy k-center, one full distance update per pick (float64)."""
    shortlist = top_m_shortlist(scores, shortlist_factor * k)
    X = features[shortlist].astype(np.float64)
    d2 = ((X[:, None, :] - labeled[None, :, :].astype(np.float64)) ** 2).sum(-1).min(1)
    picks = []
    for _ in range(k):
        pick = int(np.argmax(np.where(np.isin(np.arange(len(X)), picks), -1, d2)))
        picks.append(pick)
        d2 = np.minimum(d2, ((X - X[pick]) ** 2).sum(1))
    return shortlist[picks]


@pytest.mark.parametrize(("n", "k", "factor"), [(3_000, 300, 10), (500, 40, 5)])
def test_lazy_coreset_matches_the_textbook_greedy(n, k, factor):
    rng = np.random.default_rng(2)
    features = rng.normal(size=(n, 6)).astype(np.float32)
    scores = rng.random(n)
    labeled = rng.normal(size=(7, 6)).astype(np.float32)
    picked = coreset_batch(features, scores, k, labeled_features=labeled, shortlist_factor=factor)
    expected = _eager_k_center(features, scores, k, labeled, factor)
    np.testing.assert_array_equal(picked, expected)


def test_kmeanspp_draws_the_second_item_in_proportion_to_score_times_squared_distance():
    features = np.array([[0.0], [1.0], [3.0], [6.0]], dtype=np.float32)
    scores = np.array([0.9, 0.8, 0.7, 0.6])
    # First pick is item 0 (most uncertain); then P(j) ∝ score_j * (x_j - 0)^2.
    mass = scores[1:] * np.array([1.0, 9.0, 36.0])
    expected = mass / mass.sum()
    draws = np.array(
        [kmeanspp_batch(features, scores, 2, shortlist_factor=2, rng=s)[1] for s in range(3000)]
    )
    assert (draws > 0).all()
    observed = np.bincount(draws, minlength=4)[1:] / draws.size
    np.testing.assert_allclose(observed, expected, atol=4 * np.sqrt(0.25 / draws.size))


def test_kmeanspp_rejection_sampling_keeps_the_distribution_with_pending_picks():
    # Anchored start, so picks 1 and 2 are drawn while earlier picks are still buffered.
    features = np.array([[0.0], [2.0], [4.0], [10.0]], dtype=np.float32)
    scores = np.ones(4)
    anchors = np.array([[-1.0]], dtype=np.float32)
    counts = np.zeros((4, 4))
    for seed in range(3000):
        first, second = kmeanspp_batch(
            features, scores, 2, labeled_features=anchors, shortlist_factor=2, rng=seed
        )
        counts[first, second] += 1
    d0 = (features[:, 0] + 1.0) ** 2
    expected = np.zeros((4, 4))
    for a in range(4):
        d = np.minimum(d0, (features[:, 0] - features[a, 0]) ** 2)
        d[a] = 0
        expected[a] = d0[a] / d0.sum() * d / d.sum()
    np.testing.assert_allclose(counts / counts.sum(), expected, atol=0.03)
