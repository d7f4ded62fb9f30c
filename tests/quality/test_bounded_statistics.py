"""The agreement statistics from bounded state (issue 16): the guideline alerts from per
(item, version) class counts, the bootstrap from a bounded random sample of each window's
items; on a project no larger than the sample, the same figures as from every vote."""

from __future__ import annotations

import math

import numpy as np

from services.quality.agreement import Triples, krippendorff_alpha, nominal_alpha_of_counts
from services.quality.votes import VoteTable
from services.quality.windows import (
    DEFAULT_WINDOWS,
    agreement_report,
    class_agreement,
    class_agreement_of_counts,
    sampled_report,
)
from tests.quality.test_windows import NOW, snapshot


def table_of(snap) -> VoteTable:
    table = VoteTable()
    for item, who, label, at, version in zip(snap.items, snap.labelers, snap.labels,
                                             snap.times, snap.guideline_versions, strict=True):
        table.put(item, who, label, float(at), version or None)
    return table


def test_nominal_alpha_of_counts_is_krippendorffs_alpha():
    rng = np.random.default_rng(3)
    rows = [(f"i{i}", f"w{w}", str(rng.integers(0, 3) if rng.random() < 0.4 else i % 3))
            for i in range(200) for w in rng.choice(6, size=rng.integers(1, 5), replace=False)]
    triples = Triples(*(np.asarray(c) for c in zip(*rows, strict=True)))
    items, item = np.unique(triples.items, return_inverse=True)
    classes, label = np.unique(triples.labels, return_inverse=True)
    counts = np.zeros((len(items), len(classes)), dtype=np.int64)
    np.add.at(counts, (item, label), 1)
    assert math.isclose(nominal_alpha_of_counts(counts), krippendorff_alpha(triples=triples),
                        abs_tol=1e-12)


def test_class_agreement_from_counts_equals_class_agreement_from_the_votes():
    snap = snapshot()
    table = table_of(snap)
    from_counts = class_agreement_of_counts(*table.counts_by_item_version(),
                                            table.guidelines.names, table.classes.names)
    from_votes = class_agreement(snap)
    assert [(c.label_class, c.guideline_version, c.items) for c in from_counts] == \
        [(c.label_class, c.guideline_version, c.items) for c in from_votes]
    for a, b in zip(from_counts, from_votes, strict=True):
        assert math.isclose(a.agreement, b.agreement, abs_tol=1e-12) or \
            (math.isnan(a.agreement) and math.isnan(b.agreement))


def test_a_project_within_the_sample_gets_the_figures_of_every_vote():
    snap = snapshot()
    table = table_of(snap)
    samples = {name: table.sample(1000, None if span is None else NOW - span)
               for name, span in DEFAULT_WINDOWS.items()}
    sampled = sampled_report(samples, n_boot=30)
    full = agreement_report(snap, now=NOW, n_boot=30)
    for name in DEFAULT_WINDOWS:
        assert sampled[name].pop("sampled_items") == full[name]["items_with_overlap"]
        assert sampled[name] == full[name], name


def test_a_large_project_is_bootstrapped_on_a_bounded_sample_with_a_wider_interval():
    rng = np.random.default_rng(8)
    table = VoteTable()
    n_items = 20_000
    truth = rng.integers(0, 4, n_items)
    for i in range(n_items):
        for w in rng.choice(10, size=3, replace=False):
            label = truth[i] if rng.random() < 0.8 else rng.integers(0, 4)
            table.put(f"i{i}", f"w{w}", str(label), NOW, "g1")
    sample = table.sample(2000)
    assert sample.sampled_items == 2000 and sample.items_with_overlap == n_items
    assert sample.labels == 3 * n_items
    assert len(set(sample.snapshot.items.tolist())) == 2000
    small = sampled_report({"all": sample}, n_boot=100)["all"]
    whole = sampled_report({"all": table.sample(n_items)}, n_boot=100)["all"]
    assert small["sampled_items"] == 2000 and whole["sampled_items"] == n_items
    a, b = small["krippendorff_alpha"]["nominal"], whole["krippendorff_alpha"]["nominal"]
    # The sample's interval holds the whole project's estimate, and is wider, by about
    # sqrt(20,000 / 2,000) = 3.2.
    assert a["low"] <= b["estimate"] <= a["high"]
    ratio = (a["high"] - a["low"]) / (b["high"] - b["low"])
    assert 2.0 < ratio < 5.0
