"""The loop's model against its baselines on constructed projects whose truth is known:
review that fixes systematic errors must show as a better model than single unreviewed
labels; review that changes nothing must not; review that breaks labels must show worse."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

import numpy as np
import pytest

from services.scorer.comparison import (
    BETTER,
    NO_DIFFERENCE,
    WORSE,
    arms_of,
    budgets_of,
    compare,
)
from shared.events import NONE_OF_THESE

T0 = datetime(2026, 3, 1, tzinfo=UTC)
CENTRES = {"a": (0.0, 0.0), "b": (3.0, 0.0), "c": (0.0, 3.0)}


def _project(first_answer_wrong: float, review_fixes: bool, seed: int = 3):
    """180 items to train on and 150 gold items in three well-separated clusters. Each
    training item gets a first human answer (a share of the a's answered b: a systematic
    error) and, later, an adjudication that gives the truth when ``review_fixes``, else
    repeats the first answer."""
    rng = np.random.default_rng(seed)
    inputs, truth = {}, {}
    for prefix, n in (("t", 60), ("g", 50)):
        for label, centre in CENTRES.items():
            for k in range(n):
                item = f"{prefix}-{label}-{k}"
                inputs[item] = (rng.normal(centre, 0.8)).tolist()
                truth[item] = label
    gold = {i: truth[i] for i in truth if i.startswith("g-")}
    events, current = [], {}
    for n, item in enumerate(sorted(i for i in truth if i.startswith("t-"))):
        answer = truth[item]
        if answer == "a" and rng.random() < first_answer_wrong:
            answer = "b"
        final = truth[item] if review_fixes else answer
        events.append({"item_id": item, "label": answer, "source": "human", "supersedes": None,
                       "event_id": f"e{n}", "created_at": T0 + timedelta(minutes=n)})
        events.append({"item_id": item, "label": final, "source": "adjudicated",
                       "supersedes": None, "event_id": f"f{n}",
                       "created_at": T0 + timedelta(days=1, minutes=n)})
        current[item] = final
    for n, item in enumerate(gold):  # answers on gold tasks: never trained on
        events.append({"item_id": item, "label": gold[item], "source": "human",
                       "supersedes": None, "event_id": f"g{n}",
                       "created_at": T0 + timedelta(hours=1, minutes=n)})
        current[item] = gold[item]
    return events, current, gold, inputs


def test_review_that_fixes_systematic_errors_makes_a_measurably_better_model():
    events, current, gold, inputs = _project(first_answer_wrong=0.8, review_fixes=True)
    arms = arms_of(events, current, gold, inputs)
    result = compare(arms, inputs, gold, "features", points=4, seeds=3)
    assert result["available"] and result["budget"] == 180 and result["gold_items"] == 150
    headline = result["arms"]
    single = headline["single_unreviewed"]
    assert single["versus_loop"]["verdict"] == BETTER
    assert single["versus_loop"]["p_value"] < 0.001
    # most of the a's are taught as b: the single-label model misses most gold a's (50)
    assert headline["loop"]["accuracy"]["rate"] > 0.9
    assert headline["loop"]["accuracy"]["rate"] - single["accuracy"]["rate"] > 0.15
    low, high = headline["loop"]["accuracy"]["interval"]
    assert low < headline["loop"]["accuracy"]["rate"] < high
    assert len(result["curves"]["loop"]) == len(result["curves"]["budgets"]) == 4


def test_review_that_changes_no_label_makes_no_measurable_difference():
    events, current, gold, inputs = _project(first_answer_wrong=0.3, review_fixes=False)
    result = compare(arms_of(events, current, gold, inputs), inputs, gold, "features",
                     points=3, seeds=3)
    versus = result["arms"]["single_unreviewed"]["versus_loop"]
    assert versus["verdict"] == NO_DIFFERENCE
    assert (versus["loop_right_only"], versus["baseline_right_only"]) == (0, 0)
    assert result["curves"]["loop"] == result["curves"]["single_unreviewed"]


def test_review_that_breaks_labels_makes_a_measurably_worse_model():
    events, current, gold, inputs = _project(first_answer_wrong=0.0, review_fixes=True)
    broken = {i: ("b" if label == "a" else label) for i, label in current.items()}
    result = compare(arms_of(events, broken, gold, inputs), inputs, gold, "features",
                     points=3, seeds=3)
    assert result["arms"]["single_unreviewed"]["versus_loop"]["verdict"] == WORSE


def test_the_arms_replay_the_history_with_gold_held_out():
    at = [T0 + timedelta(minutes=k) for k in range(10)]
    events = [
        {"item_id": "x", "label": "a", "source": "human", "created_at": at[2], "event_id": "1"},
        {"item_id": "x", "label": "b", "source": "human", "created_at": at[3], "event_id": "2",
         "supersedes": "1"},  # a revision after the reveal: not the first answer
        {"item_id": "x", "label": "b", "source": "consensus", "created_at": at[4],
         "event_id": "3"},
        {"item_id": "y", "label": "a", "source": "import", "created_at": at[0], "event_id": "4"},
        {"item_id": "z", "label": "c", "source": "auto", "created_at": at[1], "event_id": "5"},
        {"item_id": "w", "label": NONE_OF_THESE, "source": "human", "created_at": at[5],
         "event_id": "6"},
        {"item_id": "g", "label": "a", "source": "human", "created_at": at[6], "event_id": "7"},
        {"item_id": "u", "label": "c", "source": "human", "created_at": at[7].isoformat(),
         "event_id": "8"},  # as it comes over HTTP
    ]
    current = {"x": "b", "y": "a", "w": NONE_OF_THESE, "g": "a", "u": "c", "unknown": "a"}
    arms = arms_of(events, current, {"g": "a"}, ["x", "y", "z", "w", "g", "u"])
    assert arms.loop == [("y", "a"), ("x", "b"), ("u", "c")]  # in the order labeled
    assert arms.single_unreviewed == [("y", "a"), ("x", "a"), ("u", "c")]
    assert arms.auto_only == [("z", "c")]


def test_the_random_order_gives_an_interval_over_seeds_and_the_budgets_grow():
    assert budgets_of(180, 4) == [45, 90, 135, 180]
    assert budgets_of(3, 6) == [1, 2, 3]
    assert budgets_of(0, 6) == []
    events, current, gold, inputs = _project(first_answer_wrong=0.5, review_fixes=True)
    result = compare(arms_of(events, current, gold, inputs), inputs, gold, "features",
                     points=3, seeds=4)
    points = result["curves"]["random_sampling"]
    assert all(p["seeds"] == 4 and p["interval"][0] <= p["mean"] <= p["interval"][1]
               for p in points)
    # the items came class by class: the loop's first budget holds one class (no model),
    # so the areas are over the points every order has
    loop = result["curves"]["loop"]
    assert loop[0] is None and None not in loop[1:]
    order = result["arms"]["random_sampling"]
    assert order["area_under_curve"]["loop"] == pytest.approx(np.mean(loop[1:]))


def test_without_gold_or_two_classes_it_says_why():
    events, current, gold, inputs = _project(first_answer_wrong=0.0, review_fixes=True)
    arms = arms_of(events, current, gold, inputs)
    assert "no gold item" in compare(arms, inputs, {}, "features")["reason"]
    one_class = arms_of(events, {i: "a" for i in current}, gold, inputs)
    assert "fewer than two classes" in compare(one_class, inputs, gold, "features")["reason"]
