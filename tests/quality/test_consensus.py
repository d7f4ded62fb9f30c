"""Consensus aggregators and the adjudication picker."""


import numpy as np
import pytest

from services.quality.agreement import Triples, as_annotations
from services.quality.consensus import (
    DawidSkene,
    MajorityVote,
    needs_adjudication,
)

CLASSES = ["bird", "cat", "dog"]


def simulated_crowd(
    seed: int, n_items: int, accuracies: list[float], labels_per_item: int, n_classes: int = 5
) -> tuple[Triples, np.ndarray, list[int]]:
    """Labelers right with their accuracy, otherwise a uniformly wrong class.

    A labeler with accuracy ``None`` is a spammer who always answers class 0.
    Returns the triples, the true class of each item and the labelers of each label.
    """
    rng = np.random.default_rng(seed)
    n_labelers = len(accuracies)
    truth = rng.integers(0, n_classes, n_items)
    labelers = np.argsort(rng.random((n_items, n_labelers)), axis=1)[:, :labels_per_item].ravel()
    items = np.repeat(np.arange(n_items), labels_per_item)
    accuracy = np.array([1.0 if a is None else a for a in accuracies])
    spammer = np.array([a is None for a in accuracies])
    correct = rng.random(len(items)) < accuracy[labelers]
    wrong = (truth[items] + rng.integers(1, n_classes, len(items))) % n_classes
    labels = np.where(correct, truth[items], wrong)
    labels = np.where(spammer[labelers], 0, labels)
    return Triples(items, labelers, labels), truth, labelers


def accuracy(model, truth: np.ndarray) -> float:
    predicted = np.array([model.labels_[item] for item in model.items_.tolist()])
    return float(np.mean(predicted == truth[model.items_]))


# -- Majority vote --------------------------------------------------------------------


def test_majority_vote_takes_the_most_frequent_label_and_reports_vote_shares():
    triples = [
        ("i1", "a", "cat"),
        ("i1", "b", "cat"),
        ("i1", "c", "dog"),
        ("i2", "a", "bird"),
    ]

    model = MajorityVote().fit(triples)

    assert model.labels_ == {"i1": "cat", "i2": "bird"}
    assert model.classes_.tolist() == CLASSES
    np.testing.assert_allclose(model.probas_, [[0, 2 / 3, 1 / 3], [1, 0, 0]])
    np.testing.assert_allclose(model.priors_, [1 / 4, 2 / 4, 1 / 4])


def test_majority_vote_breaks_ties_by_overall_frequency_then_class_order():
    triples = [
        # Overall "dog" is given three times, "bird" and "cat" twice each.
        ("tie_dog_cat", "a", "cat"),
        ("tie_dog_cat", "b", "dog"),
        ("tie_bird_cat", "a", "cat"),
        ("tie_bird_cat", "b", "bird"),
        ("clear", "a", "dog"),
        ("clear", "b", "dog"),
        ("single", "a", "bird"),
    ]

    labels = MajorityVote().fit_predict(triples)

    assert labels == {
        "tie_dog_cat": "dog",
        "tie_bird_cat": "bird",
        "clear": "dog",
        "single": "bird",
    }
    assert MajorityVote().fit_predict(list(reversed(triples))) == labels


def test_majority_vote_errors_compare_each_labeler_with_the_majority():
    triples = [
        ("i1", "a", "cat"),
        ("i1", "b", "cat"),
        ("i1", "c", "dog"),
        ("i2", "a", "dog"),
        ("i2", "b", "dog"),
        ("i2", "c", "dog"),
    ]

    model = MajorityVote(categories=["cat", "dog"]).fit(triples)

    assert model.errors_.shape == (3, 2, 2)
    np.testing.assert_allclose(model.errors_[2], [[0, 1], [0, 1]])  # c said dog for a cat
    np.testing.assert_allclose(model.errors_[0], np.eye(2))


# -- Dawid-Skene ----------------------------------------------------------------------


def outvoted_good_labeler(spammer_answer) -> tuple[list[tuple[str, str, str]], dict[str, str]]:
    """A good labeler outvoted on the last items by two spammers who are always wrong.

    On 60 calibration items two good labelers agree with the truth and one spammer
    tags along; on 10 contested items only ``good1`` and both spammers label.
    """
    triples, truth = [], {}
    for n in range(60):
        item, label = f"calibration{n}", CLASSES[n % 3]
        truth[item] = label
        spammer = "spammer1" if n % 2 else "spammer2"
        triples += [(item, "good1", label), (item, "good2", label)]
        triples.append((item, spammer, spammer_answer(label)))
    for n in range(10):
        item, label = f"contested{n}", ["dog", "bird"][n % 2]
        truth[item] = label
        triples.append((item, "good1", label))
        triples += [(item, spammer, spammer_answer(label)) for spammer in ("spammer1", "spammer2")]
    return triples, truth


@pytest.mark.parametrize(
    "spammer_answer",
    [
        pytest.param(lambda label: "cat", id="always-cat"),
        pytest.param(lambda label: CLASSES[(CLASSES.index(label) + 1) % 3], id="always-shifted"),
    ],
)
def test_dawid_skene_trusts_a_good_labeler_outvoted_by_consistent_spammers(spammer_answer):
    triples, truth = outvoted_good_labeler(spammer_answer)
    contested = [item for item in truth if item.startswith("contested")]

    majority = MajorityVote().fit_predict(triples)
    model = DawidSkene().fit(triples)

    assert all(majority[item] != truth[item] for item in contested)
    assert model.labels_ == truth
    assert model.converged_


def test_dawid_skene_learns_identity_confusion_for_a_perfect_labeler():
    accuracies = [1.0, 0.8, 0.7, 0.6, 0.6, 0.5, None]
    triples, _, _ = simulated_crowd(0, 3000, accuracies, labels_per_item=3)

    model = DawidSkene().fit(triples)

    perfect = model.labelers_.tolist().index(0)
    np.testing.assert_allclose(model.errors_[perfect], np.eye(5), atol=0.02)
    spammer = model.labelers_.tolist().index(6)
    # The spammer's answer does not depend on the truth: column 0 dominates every row
    # (shrinkage toward their one-coin matrix keeps it below 1 at ~250 labels per row).
    assert (model.errors_[spammer][:, 0] > 0.8).all()
    assert (model.errors_[spammer].argmax(axis=1) == 0).all()


def test_dawid_skene_beats_majority_vote_on_a_simulated_crowd():
    accuracies = [0.9] * 5 + [0.65] * 10 + [0.45] * 10 + [None] * 5
    triples, truth, _ = simulated_crowd(1, 5000, accuracies, labels_per_item=3)

    majority = MajorityVote().fit(triples)
    model = DawidSkene().fit(triples)

    assert accuracy(model, truth) > accuracy(majority, truth) + 0.05


def test_dawid_skene_outputs_are_distributions_indexed_by_the_id_attributes():
    triples, _, _ = simulated_crowd(2, 500, [0.9, 0.7, 0.6, 0.5], labels_per_item=2)

    model = DawidSkene().fit(triples)

    n_items, n_labelers = len(model.items_), len(model.labelers_)
    assert model.probas_.shape == (n_items, 5)
    assert model.errors_.shape == (n_labelers, 5, 5)
    np.testing.assert_allclose(model.probas_.sum(axis=1), 1.0)
    np.testing.assert_allclose(model.errors_.sum(axis=2), 1.0)
    np.testing.assert_allclose(model.priors_.sum(), 1.0)
    assert (model.errors_ > 0).all()  # smoothing: no log(0) for an unseen label
    assert 1 <= model.n_iter_ <= 100
    assert np.all(np.diff(model.log_likelihoods_) > -1e-6 * len(triples.items))


def test_dawid_skene_gives_the_same_result_for_any_input_form():
    triples = [("i1", "a", "x"), ("i1", "b", "y"), ("i2", "a", "x"), ("i2", "b", "x")]
    columns = tuple(zip(*triples, strict=True))

    models = [DawidSkene().fit(form) for form in (triples, columns, as_annotations(triples))]

    assert models[0].labels_ == models[1].labels_ == models[2].labels_
    np.testing.assert_array_equal(models[0].probas_, models[2].probas_)


def test_dawid_skene_keeps_unused_categories_as_columns():
    model = DawidSkene(categories=["x", "y", "z"]).fit([("i1", "a", "x"), ("i1", "b", "y")])

    assert model.classes_.tolist() == ["x", "y", "z"]
    assert model.probas_.shape == (1, 3)
    assert model.probas_[0, 2] < 0.01


def test_dawid_skene_handles_a_200k_item_crowd():
    """Scale, not speed: timing lives in `loopwise bench quality`, never in the suite."""
    triples, truth, _ = simulated_crowd(
        3, 200_000, [0.9] * 10 + [0.7] * 20 + [0.5] * 10, labels_per_item=3
    )

    model = DawidSkene().fit(triples)

    assert model.converged_
    assert accuracy(model, truth) > 0.85


# -- Adjudication ---------------------------------------------------------------------


def test_needs_adjudication_flags_low_confidence_and_split_votes():
    probas = [[0.95, 0.05], [0.6, 0.4], [0.5, 0.5], [0.97, 0.03]]
    votes = [[3, 0], [2, 1], [1, 1], [2, 2]]

    assert needs_adjudication(probas, min_confidence=0.8).tolist() == [False, True, True, False]
    assert needs_adjudication(probas, votes, min_confidence=0.8).tolist() == [
        False,
        True,
        True,
        True,
    ]


def test_a_single_label_is_no_split_vote():
    assert not needs_adjudication([[1.0, 0.0, 0.0]], [[1, 0, 0]], min_confidence=0.5).any()


def test_sparse_labels_settle_disagreements_by_labeler_reliability():
    """Two votes per item, ten classes, few labels per confusion row: without shrinkage
    toward each labeler's overall accuracy, a full confusion matrix learns its own noise
    and settles two-way disagreements no better than a coin."""
    rng = np.random.default_rng(4)
    accuracy_of = {"good": 0.96, "fair": 0.92, "poor": 0.84}
    pairs = [("good", "fair"), ("good", "poor"), ("fair", "poor")]
    rows, truth = [], {}
    for i in range(900):
        item, true = f"i{i}", int(rng.integers(10))
        truth[item] = str(true)
        for who in pairs[i % 3]:
            wrong = [c for c in range(10) if c != true]
            label = true if rng.random() < accuracy_of[who] else int(rng.choice(wrong))
            rows.append((item, who, str(label)))
    votes: dict[str, dict[str, str]] = {}
    for item, who, label in rows:
        votes.setdefault(item, {})[who] = label
    split = [item for item, v in votes.items() if len(set(v.values())) == 2]

    def settled_right(model) -> float:
        return float(np.mean([model.labels_[item] == truth[item] for item in split]))

    unshrunk = DawidSkene(prior_strength=0).fit(rows)
    shrunk = DawidSkene().fit(rows)
    assert settled_right(shrunk) > settled_right(unshrunk) + 0.05
    assert settled_right(shrunk) > 0.6  # better than a coin: the reliable labeler wins


def test_a_class_biased_labelers_confusion_row_is_recovered_at_200k_items():
    """Shrinkage toward the one-coin matrix fades with evidence: at 200,000 items (1,500+
    labels per row) the row a class-biased labeler confuses is learnt within 0.03 of the
    simulated one, on the benchmark's crowd with the most spammers and noisy labelers."""
    from bench.quality import simulate_crowd

    mix = {"good": 10, "noisy": 10, "spammer": 10, "class-biased": 10}
    crowd = simulate_crowd(200_000, seed=0, mix=mix)

    model = DawidSkene().fit(Triples(crowd.item, crowd.labeler, crowd.label))

    for w, kind in enumerate(crowd.kinds):
        if kind == "class-biased":
            row = int(np.argmin(np.diag(crowd.errors[w])))  # the class they mistake
            assert np.abs(model.errors_[w, row] - crowd.errors[w, row]).max() < 0.03
