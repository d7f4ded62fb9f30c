"""Inter-annotator agreement: how much labelers agree beyond what chance would give.

Everything here is a pure NumPy function over labels given as (item, labeler, label)
triples, so the quality service can compute it from any snapshot of the label store and
the tests can pin each statistic to a reference implementation (scikit-learn,
statsmodels, the ``krippendorff`` package) and to published worked examples.

Triples come in three shapes, told apart by type rather than by guessing:

* a ``tuple`` (e.g. :class:`Triples`) of three equal-length columns
  ``(item_ids, labeler_ids, labels)``;
* a ``list`` (or any other iterable) of ``(item_id, labeler_id, label)`` rows;
* a mapping or data frame with ``item``, ``labeler`` and ``label`` columns;

or an already encoded :class:`Annotations`. Labels are mapped to integer codes, sorted
unless ``categories`` fixes the order.
"""

from __future__ import annotations

from collections.abc import Callable, Hashable, Iterable, Mapping, Sequence
from dataclasses import dataclass
from functools import cached_property
from typing import Any, Literal, NamedTuple

import numpy as np
import numpy.typing as npt

__all__ = [
    "Annotations",
    "BootstrapCI",
    "Level",
    "PairAgreement",
    "Triples",
    "TriplesLike",
    "as_annotations",
    "bootstrap_ci",
    "cohen_kappa",
    "fleiss_kappa",
    "krippendorff_alpha",
    "nominal_alpha_of_counts",
    "pairwise_cohen",
    "percent_agreement",
]

Level = Literal["nominal", "ordinal", "interval"]


class Triples(NamedTuple):
    """Labels in column form: ``labelers[j]`` gave ``items[j]`` the label ``labels[j]``."""

    items: Sequence[Hashable] | npt.NDArray[Any]
    labelers: Sequence[Hashable] | npt.NDArray[Any]
    labels: Sequence[Hashable] | npt.NDArray[Any]


@dataclass(frozen=True, eq=False)
class Annotations:
    """Integer-coded labels, grouped by item.

    ``item``, ``labeler`` and ``label`` are codes into ``items``, ``labelers`` and
    ``classes``. Rows are sorted by item so that every per-item sum is a single
    ``np.add.reduceat`` and nothing ever needs a dense items x labelers matrix.
    """

    item: npt.NDArray[np.intp]
    labeler: npt.NDArray[np.intp]
    label: npt.NDArray[np.intp]
    items: npt.NDArray[Any]
    labelers: npt.NDArray[Any]
    classes: npt.NDArray[Any]

    @classmethod
    def from_triples(
        cls, triples: TriplesLike, categories: Sequence[Hashable] | None = None
    ) -> Annotations:
        """Encode triples; ``categories`` fixes the class order (and admits unused classes)."""
        if isinstance(triples, Annotations):
            if categories is None or _same_classes(triples.classes, categories):
                return triples
            triples = triples.triples()
        item_col, labeler_col, label_col = _columns(triples)
        items, item_code = np.unique(item_col, return_inverse=True)
        labelers, labeler_code = np.unique(labeler_col, return_inverse=True)
        classes, label_code = _encode_labels(label_col, categories)
        order = np.argsort(item_code, kind="stable")
        return cls(
            item=item_code[order].astype(np.intp),
            labeler=labeler_code[order].astype(np.intp),
            label=label_code[order].astype(np.intp),
            items=items,
            labelers=labelers,
            classes=classes,
        )

    @property
    def n_items(self) -> int:
        return len(self.items)

    @property
    def n_labelers(self) -> int:
        return len(self.labelers)

    @property
    def n_classes(self) -> int:
        return len(self.classes)

    @cached_property
    def item_starts(self) -> npt.NDArray[np.intp]:
        """Offset of each item's first row (every item has at least one row)."""
        return np.searchsorted(self.item, np.arange(self.n_items))

    @cached_property
    def item_sizes(self) -> npt.NDArray[np.intp]:
        """Number of labels each item received."""
        return np.bincount(self.item, minlength=self.n_items)

    def vote_counts(self) -> npt.NDArray[np.int64]:
        """items x classes matrix: how many labels of each class every item got."""
        n_classes = self.n_classes
        flat = np.bincount(self.item * n_classes + self.label, minlength=self.n_items * n_classes)
        return flat.reshape(self.n_items, n_classes)

    def triples(self) -> Triples:
        """Decode back to original ids and labels."""
        return Triples(self.items[self.item], self.labelers[self.labeler], self.classes[self.label])

    def require_one_label_per_labeler(self) -> None:
        """Agreement statistics count labeler pairs; a repeated label would pair with itself."""
        key = self.item.astype(np.int64) * max(self.n_labelers, 1) + self.labeler
        if len(np.unique(key)) != len(key):
            raise ValueError("a labeler labelled the same item more than once")


TriplesLike = (
    Annotations
    | Triples
    | tuple[Sequence[Hashable], Sequence[Hashable], Sequence[Hashable]]
    | Iterable[tuple[Hashable, Hashable, Hashable]]
    | Mapping[str, Sequence[Hashable]]
)


def as_annotations(
    triples: TriplesLike, categories: Sequence[Hashable] | None = None
) -> Annotations:
    """Encode triples once so several statistics (or a bootstrap) can share the work."""
    return Annotations.from_triples(triples, categories)


# ---------------------------------------------------------------------------
# Two raters: Cohen's kappa


def cohen_kappa(
    a: Sequence[Hashable] | npt.ArrayLike, b: Sequence[Hashable] | npt.ArrayLike
) -> float:
    """Cohen's kappa of two raters' nominal labels on the same items.

    ``(p_o - p_e) / (1 - p_e)`` with ``p_e`` from each rater's own marginals; equals
    ``sklearn.metrics.cohen_kappa_score``. NaN when chance agreement is already perfect
    (both raters used a single, identical class), where kappa is undefined.
    """
    first, second = np.asarray(a), np.asarray(b)
    if first.ndim != 1 or first.shape != second.shape:
        raise ValueError("cohen_kappa needs two 1-d label sequences of equal length")
    n = len(first)
    if n == 0:
        return float("nan")
    classes, codes = np.unique(np.concatenate([first, second]), return_inverse=True)
    k = len(classes)
    agree = np.count_nonzero(codes[:n] == codes[n:])
    chance = np.bincount(codes[:n], minlength=k) @ np.bincount(codes[n:], minlength=k)
    return float(_kappa(np.array([n]), np.array([agree]), np.array([chance]))[0])


def _kappa(
    n: npt.NDArray[np.int64], agree: npt.NDArray[np.int64], chance: npt.NDArray[np.int64]
) -> npt.NDArray[np.float64]:
    """Kappa from integer counts: ``(n*agree - chance) / (n^2 - chance)``.

    ``chance`` is the dot product of the two raters' marginal counts. Staying in integers
    until the final division makes "undefined" an exact zero test.
    """
    n = n.astype(np.int64)
    numerator = n * agree.astype(np.int64) - chance.astype(np.int64)
    denominator = n * n - chance.astype(np.int64)
    with np.errstate(divide="ignore", invalid="ignore"):
        return np.where(
            denominator == 0, np.nan, numerator / np.where(denominator == 0, 1, denominator)
        )


@dataclass(frozen=True)
class PairAgreement:
    """Agreement of one labeler pair on the items both of them labelled."""

    labeler_a: Any
    labeler_b: Any
    n_shared: int
    observed: float
    kappa: float


def pairwise_cohen(triples: TriplesLike) -> list[PairAgreement]:
    """Cohen's kappa for every labeler pair that shares at least one item.

    Pairs are ordered ``labeler_a < labeler_b``; ``observed`` is their raw agreement rate.
    Works from the within-item label pairs, never from a labelers x items matrix.
    """
    ann = as_annotations(triples)
    ann.require_one_label_per_labeler()
    left, right = _within_item_pairs(ann)
    if len(left) == 0:
        return []
    labeler_a, labeler_b = ann.labeler[left], ann.labeler[right]
    label_a, label_b = ann.label[left], ann.label[right]
    swap = labeler_a > labeler_b
    labeler_a, labeler_b = np.minimum(labeler_a, labeler_b), np.maximum(labeler_a, labeler_b)
    label_a, label_b = np.where(swap, label_b, label_a), np.where(swap, label_a, label_b)

    n_labelers, k = ann.n_labelers, ann.n_classes
    pair_keys, pair = np.unique(labeler_a * n_labelers + labeler_b, return_inverse=True)
    n_pairs = len(pair_keys)
    n = np.bincount(pair, minlength=n_pairs)
    agree = np.bincount(pair[label_a == label_b], minlength=n_pairs)
    margin_a = np.bincount(pair * k + label_a, minlength=n_pairs * k).reshape(n_pairs, k)
    margin_b = np.bincount(pair * k + label_b, minlength=n_pairs * k).reshape(n_pairs, k)
    chance = (margin_a * margin_b).sum(axis=1)
    kappa = _kappa(n, agree, chance)
    observed = agree / n
    names = ann.labelers.tolist()
    return [
        PairAgreement(
            labeler_a=names[key // n_labelers],
            labeler_b=names[key % n_labelers],
            n_shared=int(n[p]),
            observed=float(observed[p]),
            kappa=float(kappa[p]),
        )
        for p, key in enumerate(pair_keys.tolist())
    ]


def _within_item_pairs(ann: Annotations) -> tuple[npt.NDArray[np.intp], npt.NDArray[np.intp]]:
    """Row indices ``(i, j)``, ``i < j``, of every two labels given to the same item."""
    rows = np.arange(len(ann.item))
    group_end = np.repeat(ann.item_starts + ann.item_sizes, ann.item_sizes)
    partners = group_end - rows - 1
    left = np.repeat(rows, partners)
    first_of_run = np.cumsum(partners) - partners
    right = left + 1 + (np.arange(len(left)) - np.repeat(first_of_run, partners))
    return left, right


# ---------------------------------------------------------------------------
# Many raters: percent agreement and Fleiss' kappa


def percent_agreement(triples: TriplesLike, *, pooled: bool = False) -> float:
    """Observed pairwise agreement: the share of labeler pairs on an item that agree.

    By default each item with two or more labels counts once, with agreement
    ``sum_k c_k (c_k - 1) / (m (m - 1))`` for ``c_k`` labels of class ``k`` among ``m``;
    this is Fleiss' ``P-bar``, and keeps heavily labelled items from dominating.
    ``pooled=True`` counts every labeler pair once instead, the figure
    ``services/quality/running.py`` keeps incrementally. Neither corrects for chance, so
    read it next to a kappa or alpha, never instead of one.
    """
    ann = as_annotations(triples)
    ann.require_one_label_per_labeler()
    counts = ann.vote_counts()
    m = counts.sum(axis=1)
    pairable = m >= 2
    if not pairable.any():
        return float("nan")
    agreeing_pairs = (counts * (counts - 1)).sum(axis=1)[pairable]
    all_pairs = (m * (m - 1))[pairable]
    if pooled:
        return float(agreeing_pairs.sum() / all_pairs.sum())
    return float(np.mean(agreeing_pairs / all_pairs))


def fleiss_kappa(counts: npt.ArrayLike) -> float:
    """Fleiss' kappa from an items x categories count matrix.

    Every item must have the same number of ratings (Fleiss 1971); for unequal numbers
    of ratings or missing labels use :func:`krippendorff_alpha`. Equals
    ``statsmodels.stats.inter_rater.fleiss_kappa``.
    """
    table = np.asarray(counts, dtype=float)
    if table.ndim != 2 or table.shape[0] == 0:
        raise ValueError("fleiss_kappa needs a non-empty items x categories matrix")
    ratings = table.sum(axis=1)
    m = ratings[0]
    if not np.all(ratings == m):
        raise ValueError("fleiss_kappa needs the same number of ratings for every item")
    if m < 2:
        raise ValueError("fleiss_kappa needs at least two ratings per item")
    p_category = table.sum(axis=0) / table.sum()
    p_item = ((table * table).sum(axis=1) - m) / (m * (m - 1.0))
    p_observed = p_item.mean()
    p_chance = (p_category * p_category).sum()
    if p_chance == 1.0:
        return float("nan")
    return float((p_observed - p_chance) / (1.0 - p_chance))


# ---------------------------------------------------------------------------
# Krippendorff's alpha


def krippendorff_alpha(
    reliability_data: npt.ArrayLike | None = None,
    *,
    triples: TriplesLike | None = None,
    level: Level = "nominal",
    categories: Sequence[Hashable] | None = None,
) -> float:
    """Krippendorff's alpha, ``1 - D_o / D_e``, for any number of coders and missing labels.

    Give either ``reliability_data`` (coders x units, ``nan``/``None`` where a coder did
    not code a unit) or ``triples``. Units with fewer than two values carry no pairs and
    drop out, as in Krippendorff (2011). ``level`` picks the difference function:

    * ``nominal``: 0 if equal, else 1;
    * ``ordinal``: rank distance from the pooled value frequencies ``n_g``,
      ``(sum_{g=c..k} n_g - (n_c + n_k) / 2) ** 2``;
    * ``interval``: ``(c - k) ** 2``.

    Ordinal and interval need an order: labels that cast to numbers, or ``categories``
    listing them in order (interval then treats them as equally spaced unless they are
    numeric). NaN when alpha is undefined (no unit with two values, or no variation).
    Equals ``krippendorff.alpha``.
    """
    if (reliability_data is None) == (triples is None):
        raise ValueError("give exactly one of reliability_data or triples")
    if triples is None:
        assert reliability_data is not None  # exactly one of the two, checked above
        triples = _reliability_to_triples(reliability_data)
    ann = as_annotations(triples, categories)
    ann.require_one_label_per_labeler()
    codes, values = _ordered_values(ann, level, categories is not None)
    n_values = len(values)

    counts = np.bincount(ann.item * n_values + codes, minlength=ann.n_items * n_values)
    return _alpha_of_counts(counts.reshape(ann.n_items, n_values), level, values)


def nominal_alpha_of_counts(counts: npt.ArrayLike) -> float:
    """Nominal Krippendorff's alpha from an items x classes matrix of label counts.

    The counts per item are all nominal alpha depends on, so this is
    :func:`krippendorff_alpha` for a table kept as counts (the quality service's
    guideline alerts, from its vote table without decoding a vote)."""
    table = np.asarray(counts)
    return _alpha_of_counts(table, "nominal", np.arange(table.shape[1], dtype=float))


def _alpha_of_counts(counts: npt.ArrayLike, level: Level,
                     values: npt.NDArray[np.float64]) -> float:
    counts = np.asarray(counts, dtype=float)
    m = counts.sum(axis=1)
    pairable = m >= 2
    if not pairable.any():
        return float("nan")
    paired = counts[pairable]
    weighted = paired / (m[pairable] - 1.0)[:, None]
    coincidences = weighted.T @ paired - np.diag(weighted.sum(axis=0))
    n_v = coincidences.sum(axis=0)
    expected = (np.outer(n_v, n_v) - np.diag(n_v)) / (n_v.sum() - 1.0)
    distance = _distance_matrix(level, values, n_v)
    expected_disagreement = (expected * distance).sum()
    if expected_disagreement == 0:
        return float("nan")
    return float(1.0 - (coincidences * distance).sum() / expected_disagreement)


def _distance_matrix(
    level: Level, values: npt.NDArray[np.float64], n_v: npt.NDArray[np.float64]
) -> npt.NDArray[np.float64]:
    """Squared difference between every two values, for the given level of measurement."""
    if level == "nominal":
        return 1.0 - np.eye(len(values))
    if level == "interval":
        return (values[:, None] - values[None, :]) ** 2
    if level == "ordinal":
        index = np.arange(len(values))
        low, high = np.minimum.outer(index, index), np.maximum.outer(index, index)
        cumulative = np.concatenate([[0.0], np.cumsum(n_v)])
        between = cumulative[high + 1] - cumulative[low]
        return (between - (n_v[low] + n_v[high]) / 2.0) ** 2
    raise ValueError(f"unknown level {level!r}; use 'nominal', 'ordinal' or 'interval'")


def _ordered_values(
    ann: Annotations, level: Level, ordered_by_caller: bool
) -> tuple[npt.NDArray[np.intp], npt.NDArray[np.float64]]:
    """Value codes and the numbers they stand for, in the order the level needs."""
    if level == "nominal" or ordered_by_caller:
        # Nominal and ordinal distances only use positions; interval needs magnitudes.
        numeric = _as_float(ann.classes) if level == "interval" else None
        if numeric is None:
            numeric = np.arange(ann.n_classes, dtype=float)
        return ann.label, numeric
    numeric = _as_float(ann.classes)
    if numeric is None:
        raise ValueError(f"{level} alpha needs numeric labels or an ordered list of categories")
    values, remap = np.unique(numeric, return_inverse=True)
    return remap[ann.label], values


def _as_float(values: npt.NDArray[Any]) -> npt.NDArray[np.float64] | None:
    try:
        return np.asarray(values, dtype=float)
    except (TypeError, ValueError):
        return None


def _reliability_to_triples(reliability_data: npt.ArrayLike) -> Triples:
    """Coders x units matrix to triples, dropping missing cells (nan, None, "nan", "")."""
    data = np.asarray(reliability_data)
    if data.ndim != 2:
        raise ValueError("reliability_data must be a coders x units matrix")
    kind = data.dtype.kind
    if kind in "fc":
        present = ~np.isnan(data)
    elif kind in "US":
        present = (data != "nan") & (data != "")
    elif kind == "O":
        present = np.frompyfunc(_is_present, 1, 1)(data).astype(bool)
    else:
        present = np.ones(data.shape, dtype=bool)
    coder, unit = np.nonzero(present)
    values = data[coder, unit]
    if kind == "O":
        values = np.asarray(values.tolist())
    return Triples(unit, coder, values)


def _is_present(value: object) -> bool:
    return value is not None and value == value and value != "nan"


# ---------------------------------------------------------------------------
# Uncertainty: bootstrap over units


class BootstrapCI(NamedTuple):
    """Point estimate and percentile interval."""

    estimate: float
    low: float
    high: float


def bootstrap_ci(
    metric_fn: Callable[[Any], float],
    data: TriplesLike | npt.NDArray[Any],
    *,
    n_boot: int = 1000,
    alpha: float = 0.05,
    seed: int | np.random.Generator | None = None,
    unit_axis: int = 0,
) -> BootstrapCI:
    """Percentile bootstrap interval of any agreement statistic, resampling units.

    Labels on one item are not independent, so the item (unit) is what gets resampled
    with replacement; an item drawn twice counts as two units. ``data`` is either

    * triples (or :class:`Annotations`): ``metric_fn`` then receives an
      :class:`Annotations` whose items are the draws, e.g. ``krippendorff_alpha``
      via ``lambda t: krippendorff_alpha(triples=t, level="ordinal")``, or
    * an ndarray with units along ``unit_axis``: e.g. a Fleiss count matrix (axis 0),
      a reliability matrix (axis 1), or ``np.stack([a, b])`` for Cohen (axis 1).

    Draws where the statistic is undefined (NaN) are left out of the percentiles.
    The same ``seed`` gives the same interval.
    """
    if not 0 < alpha < 1:
        raise ValueError("alpha must be in (0, 1)")
    rng = np.random.default_rng(seed)
    if isinstance(data, np.ndarray):
        n_units = data.shape[unit_axis]
        estimate = float(metric_fn(data))

        def draw() -> Any:
            return np.take(data, rng.integers(0, n_units, n_units), axis=unit_axis)

    else:
        ann = as_annotations(data)
        estimate = float(metric_fn(ann))

        def draw() -> Any:
            return _resample_items(ann, rng.integers(0, ann.n_items, ann.n_items))

    stats = np.array([metric_fn(draw()) for _ in range(n_boot)], dtype=float)
    stats = stats[~np.isnan(stats)]
    if len(stats) == 0:
        return BootstrapCI(estimate, float("nan"), float("nan"))
    low, high = np.quantile(stats, [alpha / 2, 1 - alpha / 2])
    return BootstrapCI(estimate, float(low), float(high))


def _resample_items(ann: Annotations, drawn: npt.NDArray[np.intp]) -> Annotations:
    """Annotations of the drawn items, each draw a new unit numbered by its position."""
    sizes = ann.item_sizes[drawn]
    run_start = np.cumsum(sizes) - sizes
    rows = np.repeat(ann.item_starts[drawn] - run_start, sizes) + np.arange(sizes.sum())
    return Annotations(
        item=np.repeat(np.arange(len(drawn)), sizes),
        labeler=ann.labeler[rows],
        label=ann.label[rows],
        items=np.arange(len(drawn)),
        labelers=ann.labelers,
        classes=ann.classes,
    )


# ---------------------------------------------------------------------------
# Input handling


def _columns(triples: Any) -> tuple[npt.NDArray[Any], npt.NDArray[Any], npt.NDArray[Any]]:
    """Three equal-length columns from a tuple of columns, rows, or a column mapping."""
    if isinstance(triples, tuple):
        if len(triples) != 3:
            raise ValueError("a tuple of triples must be (item_ids, labeler_ids, labels)")
        cols = [np.asarray(col) for col in triples]
    elif hasattr(triples, "keys") and {"item", "labeler", "label"} <= set(triples.keys()):
        cols = [np.asarray(triples[name]) for name in ("item", "labeler", "label")]
    else:
        rows = list(triples)
        if any(len(row) != 3 for row in rows):
            raise ValueError(
                "rows must be (item_id, labeler_id, label); pass a tuple for column form"
            )
        cols = [np.asarray([row[i] for row in rows]) for i in range(3)]
    if any(col.ndim != 1 for col in cols) or len({len(col) for col in cols}) != 1:
        raise ValueError("item, labeler and label columns must be 1-d and of equal length")
    return cols[0], cols[1], cols[2]


def _encode_labels(
    labels: npt.NDArray[Any], categories: Sequence[Hashable] | None
) -> tuple[npt.NDArray[Any], npt.NDArray[np.intp]]:
    if categories is None:
        classes, codes = np.unique(labels, return_inverse=True)
        return classes, codes
    classes = np.asarray(categories)
    if classes.ndim != 1:
        raise ValueError("categories must be a flat list")
    position: dict[Any, int] = {}
    for index, category in enumerate(classes.tolist()):
        if category in position:
            raise ValueError(f"category {category!r} listed twice")
        position[category] = index
    by_text = {str(category): index for category, index in position.items()}
    seen, codes = np.unique(labels, return_inverse=True)
    lookup = np.empty(len(seen), dtype=np.intp)
    for index, value in enumerate(seen.tolist()):
        code = position.get(value, by_text.get(str(value)))
        if code is None:
            raise ValueError(f"label {value!r} is not one of the categories")
        lookup[index] = code
    return classes, lookup[codes]


def _same_classes(classes: npt.NDArray[Any], categories: Sequence[Hashable]) -> bool:
    wanted = list(categories)
    return len(wanted) == len(classes) and all(
        a == b for a, b in zip(classes.tolist(), wanted, strict=True)
    )
