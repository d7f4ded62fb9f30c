"""Agreement statistics reproduce published examples and the reference implementations."""

import krippendorff
import numpy as np
import pytest
from sklearn.metrics import cohen_kappa_score
from statsmodels.stats.inter_rater import fleiss_kappa as statsmodels_fleiss_kappa

from services.quality.agreement import (
    Triples,
    as_annotations,
    bootstrap_ci,
    cohen_kappa,
    fleiss_kappa,
    krippendorff_alpha,
    pairwise_cohen,
    percent_agreement,
)

nan = np.nan

# Krippendorff (2011), "Computing Krippendorff's alpha-reliability", section C:
# four coders, twelve units, missing data.
KRIPPENDORFF_2011 = np.array(
    [
        [1, 2, 3, 3, 2, 1, 4, 1, 2, nan, nan, nan],
        [1, 2, 3, 3, 2, 2, 4, 1, 2, 5, nan, 3],
        [nan, 3, 3, 3, 2, 3, 4, 2, 2, 5, 1, nan],
        [1, 2, 3, 3, 2, 4, 4, 1, 2, 5, 1, nan],
    ]
)

# Wikipedia "Fleiss' kappa" worked example: 10 subjects, 14 raters, 5 categories.
WIKIPEDIA_FLEISS = np.array(
    [
        [0, 0, 0, 0, 14],
        [0, 2, 6, 4, 2],
        [0, 0, 3, 5, 6],
        [0, 3, 9, 2, 0],
        [2, 2, 8, 1, 1],
        [7, 7, 0, 0, 0],
        [3, 2, 6, 3, 0],
        [2, 5, 3, 2, 2],
        [6, 5, 2, 1, 0],
        [0, 2, 2, 3, 7],
    ]
)

# Fleiss (1971): 30 patients, 6 psychiatrists, 5 diagnoses (copied from statsmodels'
# test_inter_rater.py; each row lists the six diagnoses a patient received).
FLEISS_1971_DIAGNOSES = np.array(
    [
        [4, 4, 4, 4, 4, 4],
        [2, 2, 2, 5, 5, 5],
        [2, 3, 3, 3, 3, 5],
        [5, 5, 5, 5, 5, 5],
        [2, 2, 2, 4, 4, 4],
        [1, 1, 3, 3, 3, 3],
        [3, 3, 3, 3, 5, 5],
        [1, 1, 3, 3, 3, 4],
        [1, 1, 4, 4, 4, 4],
        [5, 5, 5, 5, 5, 5],
        [1, 4, 4, 4, 4, 4],
        [1, 2, 4, 4, 4, 4],
        [2, 2, 2, 3, 3, 3],
        [1, 4, 4, 4, 4, 4],
        [2, 2, 4, 4, 4, 5],
        [3, 3, 3, 3, 3, 5],
        [1, 1, 1, 4, 5, 5],
        [1, 1, 1, 1, 1, 2],
        [2, 2, 4, 4, 4, 4],
        [1, 3, 3, 5, 5, 5],
        [5, 5, 5, 5, 5, 5],
        [2, 4, 4, 4, 4, 4],
        [2, 2, 4, 5, 5, 5],
        [1, 1, 4, 4, 4, 4],
        [1, 4, 4, 4, 4, 5],
        [2, 2, 2, 2, 2, 4],
        [1, 1, 1, 1, 5, 5],
        [2, 2, 4, 4, 4, 4],
        [1, 3, 3, 3, 3, 3],
        [5, 5, 5, 5, 5, 5],
    ]
)

LEVELS = ["nominal", "ordinal", "interval"]


def matrix_to_triples(matrix: np.ndarray) -> Triples:
    """Coders x units matrix to (unit, coder, label) rows, dropping missing cells."""
    coder, unit = np.nonzero(~np.isnan(matrix))
    return Triples(
        [f"unit{u}" for u in unit],
        [f"coder{c}" for c in coder],
        [str(int(v)) for v in matrix[coder, unit]],
    )


def random_reliability(
    rng: np.random.Generator, coders: int, units: int, values: int, missing: float
) -> np.ndarray:
    """Correlated coders (a shared latent value plus noise) with cells missing at random."""
    latent = rng.integers(1, values + 1, units)
    noisy = np.clip(latent + rng.integers(-1, 2, (coders, units)), 1, values).astype(float)
    scrambled = rng.random((coders, units)) < 0.2
    noisy[scrambled] = rng.integers(1, values + 1, scrambled.sum())
    noisy[rng.random((coders, units)) < missing] = nan
    return noisy


# -- Krippendorff's alpha -------------------------------------------------------------


@pytest.mark.parametrize(
    ("level", "published"), [("nominal", 0.743), ("ordinal", 0.815), ("interval", 0.849)]
)
def test_alpha_reproduces_krippendorff_2011_example(level, published):
    ours = krippendorff_alpha(KRIPPENDORFF_2011, level=level)
    reference = krippendorff.alpha(KRIPPENDORFF_2011, level_of_measurement=level)

    assert round(ours, 3) == published
    assert round(reference, 3) == published
    assert ours == pytest.approx(reference, abs=1e-12)


@pytest.mark.parametrize("level", LEVELS)
def test_alpha_from_triples_with_string_labels_matches_matrix_form(level):
    from_matrix = krippendorff_alpha(KRIPPENDORFF_2011, level=level)
    from_triples = krippendorff_alpha(triples=matrix_to_triples(KRIPPENDORFF_2011), level=level)

    assert from_triples == pytest.approx(from_matrix, abs=1e-12)


def test_ordinal_alpha_takes_ordered_categories_for_non_numeric_labels():
    names = {1: "very low", 2: "low", 3: "mid", 4: "high", 5: "very high"}
    items, coders, labels = matrix_to_triples(KRIPPENDORFF_2011)
    worded = Triples(items, coders, [names[int(v)] for v in labels])

    alpha = krippendorff_alpha(triples=worded, level="ordinal", categories=list(names.values()))

    assert round(alpha, 3) == 0.815
    with pytest.raises(ValueError, match="numeric labels or an ordered list"):
        krippendorff_alpha(triples=worded, level="ordinal")


def test_numeric_string_labels_are_ordered_by_value_not_as_text():
    # "10" sorts before "9" as text; interval alpha must use the numbers.
    triples = Triples(
        items=[0, 0, 1, 1, 2, 2, 3, 3],
        labelers=["a", "b"] * 4,
        labels=["9", "10", "1", "2", "10", "10", "2", "1"],
    )
    as_numbers = np.array([[9, 1, 10, 2], [10, 2, 10, 1]], dtype=float)

    assert krippendorff_alpha(triples=triples, level="interval") == pytest.approx(
        krippendorff.alpha(as_numbers, level_of_measurement="interval"), abs=1e-12
    )


@pytest.mark.parametrize("level", LEVELS)
@pytest.mark.parametrize("seed", range(5))
def test_alpha_matches_krippendorff_package_on_random_data_with_missing_values(level, seed):
    rng = np.random.default_rng(seed)
    data = random_reliability(rng, coders=int(rng.integers(2, 7)), units=80, values=6, missing=0.35)

    ours = krippendorff_alpha(data, level=level)
    reference = krippendorff.alpha(data, level_of_measurement=level)

    assert ours == pytest.approx(reference, abs=1e-9)


def test_ordinal_alpha_with_unused_categories_matches_package_value_domain():
    data = random_reliability(np.random.default_rng(7), coders=3, units=50, values=4, missing=0.2)
    domain = [0, 1, 2, 3, 4, 5, 6]
    items, coders, labels = matrix_to_triples(data)

    ours = krippendorff_alpha(triples=(items, coders, labels), level="ordinal", categories=domain)
    reference = krippendorff.alpha(data, level_of_measurement="ordinal", value_domain=domain)

    assert ours == pytest.approx(reference, abs=1e-9)


def test_alpha_is_nan_when_no_unit_has_two_values():
    triples = Triples(["x", "y"], ["a", "b"], ["1", "2"])

    assert np.isnan(krippendorff_alpha(triples=triples))


def test_alpha_needs_exactly_one_input():
    with pytest.raises(ValueError, match="exactly one"):
        krippendorff_alpha()
    with pytest.raises(ValueError, match="exactly one"):
        krippendorff_alpha(KRIPPENDORFF_2011, triples=matrix_to_triples(KRIPPENDORFF_2011))


# -- Fleiss' kappa and percent agreement ----------------------------------------------


def test_fleiss_kappa_reproduces_wikipedia_example():
    assert round(fleiss_kappa(WIKIPEDIA_FLEISS), 3) == 0.210


def test_percent_agreement_is_fleiss_p_bar_of_wikipedia_example():
    items, categories = np.nonzero(WIKIPEDIA_FLEISS)
    repeats = WIKIPEDIA_FLEISS[items, categories]
    item_col = np.repeat(items, repeats)
    label_col = np.repeat(categories, repeats)
    rater_col = np.concatenate([np.arange(14)] * 10)  # 14 ratings per subject, in order

    assert round(percent_agreement((item_col, rater_col, label_col)), 3) == 0.378


def test_pooled_percent_agreement_counts_every_labeler_pair_once():
    triples = [
        ("three", "a", "x"),
        ("three", "b", "x"),
        ("three", "c", "y"),  # 1 of 3 pairs agree
        ("two", "a", "x"),
        ("two", "b", "x"),  # 1 of 1 pair agrees
    ]

    assert percent_agreement(triples) == pytest.approx((1 / 3 + 1) / 2)
    assert percent_agreement(triples, pooled=True) == pytest.approx(2 / 4)


def test_fleiss_kappa_reproduces_fleiss_1971_diagnoses():
    patients, raters = np.indices(FLEISS_1971_DIAGNOSES.shape)
    triples = (patients.ravel(), raters.ravel(), FLEISS_1971_DIAGNOSES.ravel())

    counts = as_annotations(triples).vote_counts()

    assert counts.shape == (30, 5)
    assert counts.sum(axis=0).tolist() == [26, 26, 30, 55, 43]
    assert round(fleiss_kappa(counts), 3) == 0.430
    assert fleiss_kappa(counts) == pytest.approx(0.4302445, abs=1e-7)  # R irr::kappam.fleiss


@pytest.mark.parametrize("seed", range(5))
def test_fleiss_kappa_matches_statsmodels_on_random_tables(seed):
    rng = np.random.default_rng(seed)
    categories = int(rng.integers(2, 7))
    raters = int(rng.integers(2, 12))
    shares = rng.dirichlet(np.ones(categories) * 0.7, size=60)
    table = np.stack([rng.multinomial(raters, p) for p in shares])

    assert fleiss_kappa(table) == pytest.approx(statsmodels_fleiss_kappa(table), abs=1e-9)


def test_fleiss_kappa_refuses_unequal_numbers_of_ratings():
    with pytest.raises(ValueError, match="same number of ratings"):
        fleiss_kappa([[2, 1], [1, 1]])


def test_vote_counts_keep_the_given_category_order_and_unused_categories():
    ann = as_annotations(
        [("i1", "a", "cat"), ("i1", "b", "dog"), ("i2", "a", "dog"), ("i2", "b", "dog")],
        categories=["dog", "cat", "bird"],
    )

    assert ann.classes.tolist() == ["dog", "cat", "bird"]
    assert ann.items.tolist() == ["i1", "i2"]
    assert ann.vote_counts().tolist() == [[1, 1, 0], [2, 0, 0]]


# -- Cohen's kappa --------------------------------------------------------------------


@pytest.mark.parametrize("seed", range(10))
def test_cohen_kappa_matches_sklearn_on_random_labels(seed):
    rng = np.random.default_rng(seed)
    classes = np.array(["cat", "dog", "bird", "fish", "frog"])[: int(rng.integers(2, 6))]
    a = rng.choice(classes, 200)
    b = np.where(rng.random(200) < 0.6, a, rng.choice(classes, 200))

    assert cohen_kappa(a, b) == pytest.approx(cohen_kappa_score(a, b), abs=1e-9)


def test_cohen_kappa_is_one_for_identical_raters_and_nan_when_undefined():
    assert cohen_kappa(["a", "b", "a"], ["a", "b", "a"]) == 1.0
    assert np.isnan(cohen_kappa(["a", "a"], ["a", "a"]))


def test_pairwise_cohen_matches_sklearn_on_each_pairs_shared_items():
    rng = np.random.default_rng(3)
    data = random_reliability(rng, coders=4, units=120, values=4, missing=0.3)
    triples = matrix_to_triples(data)

    pairs = pairwise_cohen(triples)

    assert len(pairs) == 6
    for pair in pairs:
        a, b = int(pair.labeler_a[-1]), int(pair.labeler_b[-1])
        shared = ~np.isnan(data[a]) & ~np.isnan(data[b])
        assert a < b
        assert pair.n_shared == shared.sum()
        assert pair.observed == pytest.approx(np.mean(data[a][shared] == data[b][shared]))
        assert pair.kappa == pytest.approx(
            cohen_kappa_score(data[a][shared], data[b][shared]), abs=1e-9
        )


def test_pairwise_cohen_leaves_out_labelers_who_never_share_an_item():
    pairs = pairwise_cohen([(1, "a", "x"), (1, "b", "x"), (2, "c", "y")])

    assert [(p.labeler_a, p.labeler_b, p.n_shared) for p in pairs] == [("a", "b", 1)]


# -- Input forms ----------------------------------------------------------------------


def test_rows_columns_and_mappings_are_the_same_triples():
    rows = [("i1", "a", "x"), ("i1", "b", "y"), ("i2", "a", "x"), ("i2", "b", "x")]
    columns = tuple(list(column) for column in zip(*rows, strict=True))
    mapping = {"item": columns[0], "labeler": columns[1], "label": columns[2]}

    values = {percent_agreement(form) for form in (rows, columns, mapping, as_annotations(rows))}

    assert values == {0.5}


def test_a_labeler_labelling_an_item_twice_is_refused():
    with pytest.raises(ValueError, match="more than once"):
        percent_agreement([("i1", "a", "x"), ("i1", "a", "y"), ("i1", "b", "x")])


# -- Bootstrap ------------------------------------------------------------------------


def ordinal_alpha(triples) -> float:
    return krippendorff_alpha(triples=triples, level="ordinal")


def test_bootstrap_interval_contains_the_estimate_and_repeats_for_a_seed():
    data = random_reliability(np.random.default_rng(11), coders=3, units=150, values=5, missing=0.2)
    triples = matrix_to_triples(data)

    first = bootstrap_ci(ordinal_alpha, triples, n_boot=300, seed=42)
    again = bootstrap_ci(ordinal_alpha, triples, n_boot=300, seed=42)
    other = bootstrap_ci(ordinal_alpha, triples, n_boot=300, seed=43)

    assert first.estimate == pytest.approx(krippendorff_alpha(data, level="ordinal"), abs=1e-12)
    assert first.low < first.estimate < first.high
    assert first == again
    assert first != other


def test_bootstrap_interval_narrows_with_more_units():
    rng = np.random.default_rng(5)
    small = matrix_to_triples(random_reliability(rng, coders=3, units=60, values=5, missing=0.2))
    large = matrix_to_triples(random_reliability(rng, coders=3, units=960, values=5, missing=0.2))

    narrow = bootstrap_ci(ordinal_alpha, large, n_boot=200, seed=0)
    wide = bootstrap_ci(ordinal_alpha, small, n_boot=200, seed=0)

    assert (narrow.high - narrow.low) < 0.5 * (wide.high - wide.low)


def test_bootstrap_resamples_array_units_along_the_given_axis():
    rng = np.random.default_rng(8)
    a = rng.integers(0, 3, 300)
    b = np.where(rng.random(300) < 0.7, a, rng.integers(0, 3, 300))

    result = bootstrap_ci(lambda pair: cohen_kappa(*pair), np.stack([a, b]), unit_axis=1, seed=1)
    fleiss = bootstrap_ci(fleiss_kappa, WIKIPEDIA_FLEISS, n_boot=200, seed=1)

    assert result.estimate == pytest.approx(cohen_kappa_score(a, b), abs=1e-12)
    assert result.low < result.estimate < result.high
    assert fleiss.low < fleiss.estimate < fleiss.high


def test_bootstrap_counts_an_item_drawn_twice_as_two_units():
    triples = [("i1", "a", "x"), ("i1", "b", "x"), ("i2", "a", "x"), ("i2", "b", "y")]
    seen_units = []

    def count_units(annotations) -> float:
        seen_units.append(annotations.n_items)
        return percent_agreement(annotations)

    bootstrap_ci(count_units, triples, n_boot=20, seed=0)

    assert set(seen_units) == {2}
