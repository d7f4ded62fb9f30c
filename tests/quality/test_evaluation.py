"""The evaluation of review from stored label events: verdicts on constructed cases
where review helps, does nothing and hurts, and the figures against a known truth."""

from __future__ import annotations

import random
from datetime import UTC, datetime, timedelta

import pytest

from services.quality.evaluation import NO_EFFECT, REDUCED, WORSE, Paired, evaluate_review, verdict

T0 = datetime(2026, 3, 1, tzinfo=UTC)
LABELS = ("a", "b", "c")


def _pairs(caught: int, introduced: int, both_right: int = 50, both_wrong: int = 5) -> Paired:
    p = Paired()
    for before, after, n in ((False, True, caught), (True, False, introduced),
                             (True, True, both_right), (False, False, both_wrong)):
        for _ in range(n):
            p.add(before, after)
    return p


def test_review_that_catches_more_errors_than_it_makes_reduces_label_error():
    result = verdict(_pairs(caught=30, introduced=5))
    assert result["verdict"] == REDUCED and result["p_value"] < 0.001


def test_review_that_changes_nothing_is_no_measurable_difference():
    assert verdict(_pairs(caught=0, introduced=0))["verdict"] == NO_EFFECT
    balanced = verdict(_pairs(caught=12, introduced=10))
    assert balanced["verdict"] == NO_EFFECT and balanced["p_value"] > 0.5


def test_review_that_introduces_errors_made_labels_worse():
    result = verdict(_pairs(caught=3, introduced=25))
    assert result["verdict"] == WORSE and result["p_value"] < 0.001


def _gold_task(i: int, who: str, truth: str, model: str, label: str, mode: str, *,
               planted: bool = False, shown: str | None = None, minutes: int = 0,
               duration_ms: int = 20_000) -> dict:
    return {"item_id": f"g{i}", "labeler_id": who, "label": label, "source": "human",
            "mode": mode, "shown_prelabel": shown, "model_label": model, "gold_label": truth,
            "planted_prelabel": planted, "audit_sample": False, "duration_ms": duration_ms,
            "guideline_version": "v1", "supersedes": None,
            "created_at": T0 + timedelta(minutes=minutes)}


def _scenario(seed: int = 4):
    """300 gold items, model right on 70%. Blind reviewers right 90% whatever the model;
    prelabel reviewers who keep every pre-label (stampers). The truth of every figure is
    known from how the rows were made."""
    rng = random.Random(seed)
    rows, truth_counts = [], {"model_wrong": 0, "blind_wrong": 0, "caught": 0, "introduced": 0}
    for i in range(300):
        truth = rng.choice(LABELS)
        model = truth if rng.random() < 0.7 else rng.choice([x for x in LABELS if x != truth])
        truth_counts["model_wrong"] += model != truth
        blind = truth if rng.random() < 0.9 else rng.choice([x for x in LABELS if x != truth])
        truth_counts["blind_wrong"] += blind != truth
        truth_counts["caught"] += model != truth and blind == truth
        truth_counts["introduced"] += model == truth and blind != truth
        rows.append(_gold_task(i, "bea", truth, model, blind, "blind", minutes=i))
        rows.append(_gold_task(i, "sam", truth, model, model, "prelabel", shown=model,
                               minutes=i + 2000))
    return rows, truth_counts


def test_the_figures_match_the_truth_of_a_known_scenario():
    rows, truth = _scenario()
    result = evaluate_review(rows)
    assert result["gold_items"] == 300
    model = result["before_review"]["model_on_gold"]
    assert model["errors"] == truth["model_wrong"] and model["n"] == 300
    low, high = model["interval"]
    assert low < truth["model_wrong"] / 300 < high

    blind = result["stages"]["review/blind"]
    assert blind["errors_caught"] == truth["caught"]
    assert blind["errors_introduced"] == truth["introduced"]
    assert blind["after"]["errors"] == truth["blind_wrong"]
    assert blind["verdict"] == REDUCED
    assert blind["human_hours"] == pytest.approx(300 * 20 / 3600, abs=1e-3)

    stamped = result["stages"]["review/prelabel"]
    assert stamped["errors_caught"] == stamped["errors_introduced"] == 0
    assert stamped["verdict"] == NO_EFFECT
    assert "human hours with no measurable effect" in stamped["cost"]
    correction = result["correction"]
    assert correction["correction_rate"]["rate"] == 0.0  # far below...
    assert correction["model_error_rate"]["errors"] == truth["model_wrong"]  # ...this
    assert result["labelers"]["sam"]["correction_rate"] == 0.0
    assert result["labelers"]["bea"]["gold_accuracy"]["right"] == 300 - truth["blind_wrong"]


def test_planted_gold_counts_as_catch_rate_never_as_a_stage_error():
    rows = [_gold_task(i, "ann", "a", "a", "b" if i < 8 else "a", "prelabel", planted=True,
                       shown="b") for i in range(10)]
    result = evaluate_review(rows)
    assert result["stages"]["review/prelabel"]["items"] == 0
    assert result["labelers"]["ann"]["gold_catch"] == {
        "caught": 2, "planted": 10, "catch_rate": 0.2,
        "interval": result["labelers"]["ann"]["gold_catch"]["interval"]}


def test_consensus_and_adjudication_are_judged_against_their_own_inputs():
    rows = []
    for i in range(40):
        # First answer wrong on the first 20 items; consensus fixes 15 of those.
        first = "b" if i < 20 else "a"
        rows.append(_gold_task(i, "ann", "a", "a", first, "blind", minutes=i))
        rows.append(_gold_task(i, "ben", "a", "a", "a", "blind", minutes=i + 1))
        consensus = "a" if i >= 5 else "b"
        rows.append({**_gold_task(i, "quality:dawid-skene", "a", "a", consensus, "blind",
                                  minutes=i + 2, duration_ms=0),
                     "source": "consensus", "gold_label": None, "model_label": None})
        if i < 5:  # adjudicated right
            rows.append({**_gold_task(i, "rita", "a", "a", "a", "adjudication", minutes=i + 3),
                         "source": "adjudicated", "gold_label": None, "model_label": None})
    result = evaluate_review(rows)
    consensus = result["stages"]["consensus/blind"]
    assert (consensus["errors_caught"], consensus["errors_introduced"]) == (15, 0)
    assert consensus["verdict"] == REDUCED
    assert consensus["human_hours"] == pytest.approx(40 * 20 / 3600, abs=1e-3)  # ben's
    adjudication = result["stages"]["adjudication/blind"]
    assert (adjudication["errors_caught"], adjudication["items"]) == (5, 5)
    assert result["over_time"]["by_guideline_version"][0]["pairs"] == 40


def test_auto_labels_are_judged_on_audited_items():
    rows = []
    for i in range(20):
        at = T0 + timedelta(seconds=i)
        rows.append({"item_id": f"n{i}", "labeler_id": "router:auto", "label": "a",
                     "source": "auto", "mode": None, "created_at": at})
        rows.append({"item_id": f"n{i}", "labeler_id": "ann", "label": "a" if i < 18 else "b",
                     "source": "human", "mode": "blind", "audit_sample": True,
                     "created_at": at + timedelta(seconds=1)})
    audits = evaluate_review(rows)["before_review"]["auto_labels_on_audits"]
    assert (audits["errors"], audits["n"]) == (2, 20)
