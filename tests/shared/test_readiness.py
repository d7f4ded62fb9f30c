"""A consumer is ready only while it consumes: not starting, backing off, stalled or stopped."""

from __future__ import annotations

from shared.readiness import ConsumerHealth, Phase, all_consuming


def _health(**kw) -> ConsumerHealth:
    return ConsumerHealth("loopwise:labels", "labels", since=100.0, **kw)


def test_a_consumer_that_read_recently_is_consuming():
    h = _health()
    h.progressed(105.0)
    assert h.status(110.0, stall_seconds=60) == "consuming"
    h.phase = Phase.HANDLING
    assert h.status(160.0, stall_seconds=60) == "consuming"


def test_one_that_has_not_read_or_finished_a_batch_for_too_long_is_stalled():
    h = _health()
    h.progressed(100.0, Phase.HANDLING)
    assert h.status(161.0, stall_seconds=60) == "stalled"


def test_backoff_and_stopped_are_not_consuming_and_backoff_keeps_its_start():
    h = _health()
    h.backing_off(120.0, 1, "OSError: refused")
    h.backing_off(130.0, 2, "OSError: refused")
    assert h.status(131.0, 60) == "backoff"
    assert h.report(131.0, 60)["seconds_since_progress"] == 11.0
    assert h.report(131.0, 60)["failures"] == 2
    h.progressed(140.0)
    assert h.status(141.0, 60) == "consuming" and h.failures == 0
    h.phase = Phase.STOPPED
    assert h.status(141.0, 60) == "stopped"


def test_a_process_is_ready_when_every_consumer_consumes():
    a, b = _health(), _health()
    a.progressed(100.0)
    b.progressed(100.0)
    assert all_consuming([a, b], 101.0, 60)
    b.backing_off(101.0, 1, "TimeoutError")
    assert not all_consuming([a, b], 101.0, 60)
    assert all_consuming([], 101.0, 60)
    assert _health().status(101.0, 60) == "starting"
