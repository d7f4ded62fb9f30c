import math

import numpy as np

from services.quality.agreement import Triples, krippendorff_alpha
from services.quality.windows import VoteSnapshot, agreement_report, class_agreement

NOW = 1_000_000.0


def snapshot():
    rows = []
    rng = np.random.default_rng(0)
    for i in range(60):
        truth = ["cat", "dog", "bird"][i % 3]
        for who in ("a", "b", "c"):
            label = truth
            if truth == "bird" and rng.random() < 0.5:
                label = "dog"  # everyone confuses birds: a guideline problem
            age = 10.0 if i < 30 else 2 * 86400.0
            rows.append((f"i{i}", who, label, NOW - age, "g1" if i < 30 else "g0"))
    rows.append(("lonely", "a", "cat", NOW, "g1"))
    return VoteSnapshot.from_rows(rows)


def test_report_has_every_statistic_with_an_interval_per_window():
    report = agreement_report(snapshot(), now=NOW, n_boot=50,
                              windows={"all": None, "24h": 86400.0})
    overall, recent = report["all"], report["24h"]
    assert overall["items_with_overlap"] == 60 and recent["items_with_overlap"] == 30
    alpha = overall["krippendorff_alpha"]["nominal"]
    assert alpha["low"] <= alpha["estimate"] <= alpha["high"]
    s = snapshot()
    keep = s.items != "lonely"
    expected = krippendorff_alpha(triples=Triples(s.items[keep], s.labelers[keep],
                                                  s.labels[keep]))
    assert math.isclose(alpha["estimate"], expected, abs_tol=1e-6)
    assert overall["fleiss_kappa"]["ratings_per_item"] == 3
    assert len(overall["cohen_kappa"]) == 3
    assert overall["cohen_kappa"][0]["kappa"]["low"] is not None
    per_class = overall["per_class_alpha"]
    assert per_class["cat"]["estimate"] == 1.0
    assert per_class["bird"]["estimate"] < per_class["cat"]["estimate"]
    assert set(overall["per_guideline_alpha"]) == {"g0", "g1"}


def test_ordinal_alpha_when_the_schema_says_so():
    rows = [(f"i{i}", who, str((i + (who == "b")) % 5), NOW, None)
            for i in range(20) for who in ("a", "b")]
    report = agreement_report(VoteSnapshot.from_rows(rows), now=NOW, n_boot=20,
                              level="ordinal", categories=["0", "1", "2", "3", "4"],
                              windows={"all": None})
    alphas = report["all"]["krippendorff_alpha"]
    assert alphas["ordinal"]["estimate"] > alphas["nominal"]["estimate"]


def test_too_little_overlap_gives_counts_only():
    report = agreement_report(VoteSnapshot.from_rows([("i", "a", "x", NOW, None)]), now=NOW,
                              windows={"all": None})
    assert report["all"] == {"labels": 1, "items_with_overlap": 0}


def test_class_agreement_per_guideline_version_finds_the_confused_class():
    measured = {(m.label_class, m.guideline_version): m for m in class_agreement(snapshot())}
    assert measured[("cat", "g1")].agreement == 1.0
    assert measured[("bird", "g1")].agreement < 0.6
    assert measured[("cat", "g1")].items == 10
