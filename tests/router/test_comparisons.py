"""Comparison tasks without Redis: the order shown, answers in positions, the preference
an answer records, and the event models' rules."""

from __future__ import annotations

import random
from collections import Counter

import pytest
from pydantic import ValidationError

from services.router.comparisons import (
    Answer,
    AnswerError,
    preference_of,
    presentation_order,
    ranking_of,
    revealed,
    shown,
)
from shared.events import (
    BOTH_BAD,
    TIE,
    Candidate,
    ComparisonEvent,
    LabelEvent,
    LabelSource,
    Preference,
    ReviewMode,
    Verdict,
)

CANDIDATES = [Candidate(candidate_id="a", text="short answer", model="m-small"),
              Candidate(candidate_id="b", text="long careful answer", model="m-large"),
              Candidate(candidate_id="c", text="off-topic", model="m-old")]


def test_every_order_is_drawn_about_equally_often():
    rng = random.Random(3)
    counts = Counter(tuple(presentation_order(["a", "b", "c"], rng)) for _ in range(6000))
    assert len(counts) == 6
    assert all(900 <= n <= 1100 for n in counts.values()), counts  # 1000 expected each


def test_positions_map_back_to_the_candidates_shown_there():
    order = ["c", "a", "b"]
    assert ranking_of(Answer(Verdict.better, chosen=3), order) == ["b"]
    assert ranking_of(Answer(Verdict.ranked, ranking=(2, 3, 1)), order) == ["a", "b", "c"]
    assert ranking_of(Answer(Verdict.tie), order) == []


@pytest.mark.parametrize("answer, says", [
    (Answer(Verdict.better), "names the better candidate"),
    (Answer(Verdict.better, chosen=4), "position 4 is not one of 1..3"),
    (Answer(Verdict.ranked, ranking=(1, 2)), "every position 1..3 once"),
    (Answer(Verdict.ranked, ranking=(1, 1, 2)), "every position 1..3 once"),
    (Answer(Verdict.tie, chosen=1), "names no candidate"),
    (Answer(Verdict.both_bad, ranking=(1, 2, 3)), "names no candidate"),
])
def test_an_answer_that_does_not_fit_the_task_says_why(answer, says):
    with pytest.raises(AnswerError, match=says):
        ranking_of(answer, ["c", "a", "b"])


def test_the_reviewer_sees_texts_by_position_and_learns_ids_and_models_only_after():
    order = ["b", "c", "a"]
    before = shown(CANDIDATES, order)
    assert before == [{"position": 1, "text": "long careful answer"},
                      {"position": 2, "text": "off-topic"},
                      {"position": 3, "text": "short answer"}]
    assert "m-large" not in str(before) and "'b'" not in str(before)
    assert revealed(CANDIDATES, order)[0] == {"position": 1, "candidate_id": "b",
                                              "model": "m-large"}


def test_a_preference_records_the_verdict_the_order_and_the_models():
    p = preference_of(Answer(Verdict.better, chosen=2, reason="on topic"), ["c", "a", "b"],
                      CANDIDATES, "What is 2+2?", gold_choice="a")
    assert (p.label(), p.shown_order, p.models["a"], p.reason) == \
        ("a", ["c", "a", "b"], "m-small", "on topic")
    assert p.pairs() == [("a", "c"), ("a", "b")]
    assert p.first_shown_chosen() is False
    ranked = preference_of(Answer(Verdict.ranked, ranking=(1, 3, 2)), ["c", "a", "b"],
                           CANDIDATES, "q", None)
    assert ranked.label() == "c>b>a"
    assert ranked.pairs() == [("c", "b"), ("c", "a"), ("b", "a")]
    assert ranked.first_shown_chosen() is True
    for verdict, label in ((Verdict.tie, TIE), (Verdict.both_bad, BOTH_BAD)):
        p = preference_of(Answer(verdict), ["a", "b", "c"], CANDIDATES, "q", None)
        assert (p.label(), p.pairs(), p.first_shown_chosen()) == (label, [], None)


def test_a_preference_event_must_carry_its_verdict_as_its_label():
    p = preference_of(Answer(Verdict.better, chosen=1), ["a", "b", "c"], CANDIDATES, "q", None)
    common = dict(project="p", item_id="cmp-1", labeler_id="alice", source=LabelSource.human,
                  mode=ReviewMode.comparison, preference=p)
    assert LabelEvent(label="a", **common).preference == p
    with pytest.raises(ValidationError, match="label must be 'a'"):
        LabelEvent(label="b", **common)


def test_an_inconsistent_preference_is_refused():
    texts = {"a": "x", "b": "y"}
    with pytest.raises(ValidationError, match="every candidate once"):
        Preference(verdict=Verdict.tie, shown_order=["a", "a"], prompt="q", texts=texts)
    with pytest.raises(ValidationError, match="ranks 1 candidate"):
        Preference(verdict=Verdict.better, ranking=["a", "b"], shown_order=["a", "b"],
                   prompt="q", texts=texts)


@pytest.mark.parametrize("change, says", [
    ({"candidates": [{"candidate_id": "a", "text": "x"}]}, "at least 2"),
    ({"candidates": [{"candidate_id": "a", "text": "x"}, {"candidate_id": "a", "text": "y"}]},
     "distinct"),
    ({"gold_choice": "z"}, "not one of the candidates"),
    ({"candidates": [{"candidate_id": "a>b", "text": "x"}, {"candidate_id": "b", "text": "y"}]},
     "pattern"),
    ({"candidates": [{"candidate_id": "__tie__", "text": "x"},
                     {"candidate_id": "b", "text": "y"}]}, "pattern"),
])
def test_a_comparison_that_cannot_be_judged_is_refused_at_the_door(change, says):
    body = {"project": "p", "comparison_id": "c1", "prompt": "q",
            "candidates": [{"candidate_id": "a", "text": "x"}, {"candidate_id": "b", "text": "y"}],
            **change}
    with pytest.raises(ValidationError, match=says):
        ComparisonEvent.model_validate(body)
