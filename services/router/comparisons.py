"""Comparison tasks: the order candidates are shown in, and what a reviewer's answer means.

A reviewer sees the candidates as positions 1..k in an order drawn at random for them
(and recorded), never their ids or the models behind them: an id such as "gpt-answer"
would tell what the model name would. The answer names positions; this module turns
positions back into candidate ids against the recorded order. Pure: no Redis, no HTTP.
"""

from __future__ import annotations

import random
from collections.abc import Sequence
from dataclasses import dataclass

from shared.events import Candidate, Preference, Verdict


class AnswerError(ValueError):
    """An answer that does not fit the task (a 422 with this reason)."""


def presentation_order(candidate_ids: Sequence[str], rng: random.Random) -> list[str]:
    """A uniformly random order of the candidates: position bias then averages out over
    reviewers, and a reviewer who favours a position can be told apart from one who
    favours a model."""
    order = list(candidate_ids)
    rng.shuffle(order)
    return order


@dataclass(frozen=True, slots=True)
class Answer:
    """A reviewer's verdict in positions (1-based, as shown)."""

    verdict: Verdict
    chosen: int | None = None
    ranking: tuple[int, ...] = ()
    reason: str | None = None


def _candidate(position: int, shown_order: Sequence[str]) -> str:
    if not 1 <= position <= len(shown_order):
        raise AnswerError(f"position {position} is not one of 1..{len(shown_order)}")
    return shown_order[position - 1]


def ranking_of(answer: Answer, shown_order: Sequence[str]) -> list[str]:
    """The candidate ids the answer ranks, best first (see :class:`Preference`)."""
    if answer.verdict is Verdict.better:
        if answer.chosen is None or answer.ranking:
            raise AnswerError("a 'better' verdict names the better candidate in 'chosen' "
                              "(its position) and no ranking")
        return [_candidate(answer.chosen, shown_order)]
    if answer.verdict is Verdict.ranked:
        if answer.chosen is not None:
            raise AnswerError("a 'ranked' verdict gives 'ranking', not 'chosen'")
        if sorted(answer.ranking) != list(range(1, len(shown_order) + 1)):
            raise AnswerError(f"a ranking lists every position 1..{len(shown_order)} once, "
                              f"best first (got {list(answer.ranking)})")
        return [_candidate(p, shown_order) for p in answer.ranking]
    if answer.chosen is not None or answer.ranking:
        raise AnswerError(f"a '{answer.verdict.value}' verdict names no candidate")
    return []


def preference_of(answer: Answer, shown_order: Sequence[str],
                  candidates: Sequence[Candidate], prompt: str,
                  gold_choice: str | None) -> Preference:
    """The preference a label event records: the verdict in ids, what was shown and in
    which order, and the models (revealed now that the reviewer has answered)."""
    return Preference(
        verdict=answer.verdict, ranking=ranking_of(answer, shown_order),
        shown_order=list(shown_order), prompt=prompt,
        texts={c.candidate_id: c.text for c in candidates},
        models={c.candidate_id: c.model for c in candidates if c.model is not None},
        reason=answer.reason, gold_choice=gold_choice)


def shown(candidates: Sequence[Candidate], shown_order: Sequence[str]) -> list[dict[str, object]]:
    """What the reviewer sees: position and text, in the recorded order; no id, no model."""
    by_id = {c.candidate_id: c for c in candidates}
    return [{"position": i + 1, "text": by_id[cid].text} for i, cid in enumerate(shown_order)]


def revealed(candidates: Sequence[Candidate], shown_order: Sequence[str]
             ) -> list[dict[str, object]]:
    """What the reviewer learns after the submit: which candidate and model sat where."""
    by_id = {c.candidate_id: c for c in candidates}
    return [{"position": i + 1, "candidate_id": cid, "model": by_id[cid].model}
            for i, cid in enumerate(shown_order)]
