"""Clearing a deference flag: the evidence before the clear cannot flag again, new deferring
can, and replaying the stored votes (a restart) ends in the same state as the live run."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from typing import Any

from services.quality.alerts import GuidelineWatch
from services.quality.detection import DeferenceTest
from services.quality.state import ProjectState

T0 = datetime(2026, 1, 1, tzinfo=UTC)


def _state() -> ProjectState:
    return ProjectState(test=DeferenceTest(), watch=GuidelineWatch())


def _stamps(start: int, n: int, who: str = "stamper") -> list[dict[str, Any]]:
    """A labeler who keeps every pre-label, planted wrong ones included."""
    rows = []
    for i in range(start, start + n):
        planted = i % 4 == 0
        truth = ("a", "b", "c")[i % 3]
        shown = ("a", "b", "c")[(i + 1) % 3] if planted else truth
        rows.append({"event_id": f"e{i}", "item_id": f"s{i}", "labeler_id": who,
                     "label": shown, "source": "human", "mode": "prelabel",
                     "shown_prelabel": shown, "model_label": truth,
                     "gold_label": truth if planted else None, "planted_prelabel": planted,
                     "created_at": T0 + timedelta(seconds=i)})
    return rows


def _feed(state: ProjectState, rows: list[dict[str, Any]]) -> list[int]:
    """The row indexes at which a flag was raised."""
    flagged = []
    for i, row in enumerate(rows):
        flag = state.apply(row)
        if flag is not None:
            flagged.append(i)
            state.flags[flag.labeler_id] = {"pause": True}
    return flagged


def test_a_cleared_labeler_is_watched_afresh_and_flagged_again_only_on_new_evidence():
    live = _state()
    first = _stamps(0, 200)
    assert _feed(live, first)  # flagged
    tasks_seen = live.clear_flag("stamper")
    assert tasks_seen == 200 and "stamper" not in live.flags
    assert not live.monitors["stamper"].flagged
    assert live.monitors["stamper"].statistic == 0.0
    again = _feed(live, _stamps(200, 200))
    assert again, "new deferring after the clear flags the labeler again"
    # Evidence counts from the clear on: it takes as long as the first time, not one task.
    assert again[0] >= 10


def test_replaying_the_votes_repeats_the_clear_at_the_same_point():
    rows = _stamps(0, 200)
    live = _state()
    live_flags = _feed(live, rows)
    tasks_seen = live.clear_flag("stamper")

    replay = _state()
    replay.clears_due = {"stamper": [tasks_seen]}
    replay_flags = _feed(replay, rows)
    replay.finish_replay()
    assert replay_flags == live_flags  # raised at the same vote as it was live...
    assert not replay.monitors["stamper"].flagged  # ...and cleared again: not re-published
    assert replay.monitors["stamper"].statistic == live.monitors["stamper"].statistic == 0.0

    # A clear recorded after the last vote applies when the replay ends.
    late = _state()
    late.clears_due = {"stamper": [10_000]}
    _feed(late, rows)
    late.finish_replay()
    assert not late.monitors["stamper"].flagged
