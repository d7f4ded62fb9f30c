"""Agreement of a project per class, per guideline version and over sliding time windows.

A pure function of a snapshot of the votes (one row per labeler and item, the
latest label wins), so the service can run it on a schedule in a worker thread and
the tests can check it on small tables. Every statistic comes with a percentile
bootstrap interval over items (:func:`services.quality.agreement.bootstrap_ci`).

Per class, agreement is Krippendorff's alpha of the one-vs-rest labels ("is it
``c``?"): it handles any number of labels per item and corrects for how common the
class is, so a rare class that labelers confuse stands out.
"""

from __future__ import annotations

import math
from collections.abc import Hashable, Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np
import numpy.typing as npt

from services.quality.agreement import (
    Level,
    Triples,
    bootstrap_ci,
    cohen_kappa,
    fleiss_kappa,
    krippendorff_alpha,
    nominal_alpha_of_counts,
    pairwise_cohen,
    percent_agreement,
)
from services.quality.alerts import ClassAgreement

__all__ = ["DEFAULT_WINDOWS", "VoteSnapshot", "WindowSample", "agreement_report",
           "class_agreement", "class_agreement_of_counts", "sampled_report"]

DEFAULT_WINDOWS: dict[str, float | None] = {"all": None, "7d": 7 * 86400.0, "24h": 86400.0,
                                            "1h": 3600.0}


@dataclass(frozen=True)
class VoteSnapshot:
    """Column form of the current votes: one row per (item, labeler)."""

    items: npt.NDArray[Any]
    labelers: npt.NDArray[Any]
    labels: npt.NDArray[Any]
    times: npt.NDArray[np.float64]  # POSIX seconds
    guideline_versions: npt.NDArray[Any]

    @classmethod
    def from_rows(cls, rows: Sequence[tuple[str, str, str, float, str | None]]) -> VoteSnapshot:
        """Rows of (item, labeler, label, posix time, guideline version)."""
        cols = list(zip(*rows, strict=True)) if rows else [(), (), (), (), ()]
        return cls(
            items=np.asarray(cols[0], dtype=object),
            labelers=np.asarray(cols[1], dtype=object),
            labels=np.asarray(cols[2], dtype=object),
            times=np.asarray(cols[3], dtype=float),
            guideline_versions=np.asarray(
                ["" if v is None else v for v in cols[4]], dtype=object
            ),
        )

    def where(self, mask: npt.NDArray[np.bool_]) -> VoteSnapshot:
        return VoteSnapshot(self.items[mask], self.labelers[mask], self.labels[mask],
                            self.times[mask], self.guideline_versions[mask])

    def triples(self) -> Triples:
        return Triples(self.items.astype(str), self.labelers.astype(str), self.labels.astype(str))

    def __len__(self) -> int:
        return len(self.items)


@dataclass(frozen=True)
class WindowSample:
    """A window's votes on a bounded sample of its items, with the window's exact size.

    The bootstrap of a sample of ``sampled_items`` items estimates the spread of the
    statistic over samples of that many items: when the window has more items with
    overlap than that, the interval is wider than the whole window's would be, by about
    ``sqrt(items_with_overlap / sampled_items)`` (it errs on the cautious side), and the
    estimate is the sample's, within about half that interval of the whole window's."""

    snapshot: VoteSnapshot
    labels: int  # votes in the window
    items_with_overlap: int  # items with two or more of them
    sampled_items: int


def _pairable(snapshot: VoteSnapshot) -> VoteSnapshot:
    """Only items with two or more labels carry agreement information."""
    if len(snapshot) == 0:
        return snapshot
    _, inverse, counts = np.unique(snapshot.items.astype(str), return_inverse=True,
                                   return_counts=True)
    return snapshot.where(counts[inverse] >= 2)


def _ci(result: Any) -> dict[str, float | None]:
    def clean(x: float) -> float | None:
        return None if math.isnan(x) else round(float(x), 6)

    return {"estimate": clean(result.estimate), "low": clean(result.low),
            "high": clean(result.high)}


def _one_vs_rest(triples: Triples, label_class: str) -> Triples:
    return Triples(triples.items, triples.labelers,
                   np.where(np.asarray(triples.labels) == label_class, "1", "0"))


def class_agreement(
    snapshot: VoteSnapshot, *, min_items: int = 1
) -> list[ClassAgreement]:
    """One-vs-rest alpha per (class, guideline version), on the items that involve the class."""
    out = []
    pairable = _pairable(snapshot)
    for version in sorted(set(pairable.guideline_versions.tolist())):
        under = _pairable(pairable.where(pairable.guideline_versions == version))
        if len(under) == 0:
            continue
        triples = under.triples()
        for label_class in sorted(set(under.labels.astype(str).tolist())):
            involved = len(set(np.asarray(triples.items)[np.asarray(triples.labels)
                                                         == label_class].tolist()))
            if involved < min_items:
                continue
            alpha = krippendorff_alpha(triples=_one_vs_rest(triples, label_class))
            out.append(ClassAgreement(label_class, version, alpha, involved))
    return out


def class_agreement_of_counts(
    version_of_key: npt.NDArray[np.intp],
    counts: npt.NDArray[np.int64],
    versions: Sequence[str],
    classes: Sequence[str],
    *,
    min_items: int = 1,
) -> list[ClassAgreement]:
    """:func:`class_agreement` from per (item, version) class counts: the same figures
    (one-vs-rest alpha per class and version, items involving the class), from the
    sufficient statistic rather than the votes."""
    out = []
    pairable = counts.sum(axis=1) >= 2
    for code in sorted(set(version_of_key[pairable].tolist()), key=lambda c: versions[c]):
        under = counts[pairable & (version_of_key == code)]
        total = under.sum(axis=1)
        for k in sorted((k for k in range(under.shape[1]) if under[:, k].any()),
                        key=lambda k: str(classes[k])):
            involved = int(np.count_nonzero(under[:, k]))
            if involved < min_items:
                continue
            alpha = nominal_alpha_of_counts(np.stack([total - under[:, k], under[:, k]], 1))
            out.append(ClassAgreement(str(classes[k]), versions[code], alpha, involved))
    return out


def sampled_report(
    samples: dict[str, WindowSample],
    *,
    level: Level = "nominal",
    categories: Sequence[Hashable] | None = None,
    n_boot: int = 200,
    seed: int = 0,
    max_pairs: int = 30,
    min_pair_items: int = 10,
) -> dict[str, Any]:
    """:func:`agreement_report` per window from a bounded sample of its items
    (:class:`WindowSample`); each window says how many of its items were sampled."""
    report = {}
    for name, sample in samples.items():
        result = _window_report(sample.snapshot, level, categories, n_boot, seed, max_pairs,
                                min_pair_items)
        result.update(labels=sample.labels, items_with_overlap=sample.items_with_overlap,
                      sampled_items=sample.sampled_items)
        report[name] = result
    return report


def agreement_report(
    snapshot: VoteSnapshot,
    *,
    now: float,
    windows: dict[str, float | None] = DEFAULT_WINDOWS,
    level: Level = "nominal",
    categories: Sequence[Hashable] | None = None,
    n_boot: int = 200,
    seed: int = 0,
    max_pairs: int = 30,
    min_pair_items: int = 10,
) -> dict[str, Any]:
    """Every agreement statistic with its bootstrap interval, for each time window."""
    report = {}
    for name, span in windows.items():
        chosen = snapshot if span is None else snapshot.where(snapshot.times >= now - span)
        report[name] = _window_report(chosen, level, categories, n_boot, seed, max_pairs,
                                      min_pair_items)
    return report


def _window_report(
    snapshot: VoteSnapshot,
    level: Level,
    categories: Sequence[Hashable] | None,
    n_boot: int,
    seed: int,
    max_pairs: int,
    min_pair_items: int,
) -> dict[str, Any]:
    pairable = _pairable(snapshot)
    n_items = len(set(pairable.items.tolist()))
    result: dict[str, Any] = {"labels": len(snapshot), "items_with_overlap": n_items}
    if n_items < 2:
        return result
    triples = pairable.triples()
    result["percent_agreement"] = _ci(bootstrap_ci(percent_agreement, triples, n_boot=n_boot,
                                                   seed=seed))
    alpha = {"nominal": _ci(bootstrap_ci(
        lambda t: krippendorff_alpha(triples=t), triples, n_boot=n_boot, seed=seed))}
    if level != "nominal":
        alpha[level] = _ci(bootstrap_ci(
            lambda t: krippendorff_alpha(triples=t, level=level, categories=categories),
            triples, n_boot=n_boot, seed=seed))
    result["krippendorff_alpha"] = alpha
    result["fleiss_kappa"] = _fleiss(triples, n_boot, seed)
    result["cohen_kappa"] = _cohen_pairs(triples, n_boot, seed, max_pairs, min_pair_items)
    per_class: dict[str, Any] = {}
    for label_class in sorted(set(np.asarray(triples.labels).tolist())):
        ci = bootstrap_ci(lambda t: krippendorff_alpha(triples=t),
                          _one_vs_rest(triples, label_class), n_boot=n_boot, seed=seed)
        per_class[label_class] = _ci(ci)
    result["per_class_alpha"] = per_class
    per_version: dict[str, Any] = {}
    for version in sorted(set(pairable.guideline_versions.tolist())):
        under = _pairable(pairable.where(pairable.guideline_versions == version))
        if len(set(under.items.tolist())) >= 2:
            per_version[version or "unversioned"] = _ci(bootstrap_ci(
                lambda t: krippendorff_alpha(triples=t), under.triples(), n_boot=n_boot,
                seed=seed))
    result["per_guideline_alpha"] = per_version
    return result


def _fleiss(triples: Triples, n_boot: int, seed: int) -> dict[str, Any] | None:
    """Fleiss' kappa on the items with the most common number of labels (it needs equal m)."""
    items = np.asarray(triples.items)
    _, inverse, sizes = np.unique(items, return_inverse=True, return_counts=True)
    m = int(np.bincount(sizes).argmax())
    keep = sizes[inverse] == m
    if m < 2 or (sizes == m).sum() < 2:
        return None
    labels = np.asarray(triples.labels)[keep]
    classes, codes = np.unique(labels, return_inverse=True)
    item_codes = np.unique(items[keep], return_inverse=True)[1]
    counts = np.zeros((item_codes.max() + 1, len(classes)), dtype=np.int64)
    np.add.at(counts, (item_codes, codes), 1)
    ci = _ci(bootstrap_ci(fleiss_kappa, counts, n_boot=n_boot, seed=seed))
    return {**ci, "ratings_per_item": m, "items": int(counts.shape[0])}


def _cohen_pairs(
    triples: Triples, n_boot: int, seed: int, max_pairs: int, min_pair_items: int
) -> list[dict[str, Any]]:
    """Cohen's kappa of the labeler pairs sharing most items, with intervals."""
    pairs = sorted(pairwise_cohen(triples), key=lambda p: -p.n_shared)[:max_pairs]
    by_key = {(str(i), str(w)): str(lab) for i, w, lab in zip(*triples, strict=True)}
    items = sorted(set(np.asarray(triples.items).tolist()))
    out = []
    for pair in pairs:
        entry: dict[str, Any] = {"labelers": [pair.labeler_a, pair.labeler_b],
                                 "shared_items": pair.n_shared,
                                 "observed": round(pair.observed, 6)}
        if pair.n_shared >= min_pair_items:
            both = [(by_key[(i, pair.labeler_a)], by_key[(i, pair.labeler_b)]) for i in items
                    if (i, pair.labeler_a) in by_key and (i, pair.labeler_b) in by_key]
            stacked = np.asarray(both, dtype=object).T
            entry["kappa"] = _ci(bootstrap_ci(lambda s: _cohen(s), stacked, n_boot=n_boot,
                                              seed=seed, unit_axis=1))
        else:
            entry["kappa"] = {"estimate": None if math.isnan(pair.kappa) else pair.kappa,
                              "low": None, "high": None}
        out.append(entry)
    return out


def _cohen(stacked: npt.NDArray[Any]) -> float:
    return cohen_kappa(stacked[0].astype(str), stacked[1].astype(str))
