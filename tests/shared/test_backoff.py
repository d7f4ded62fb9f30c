"""The pause after infrastructure failures: doubling, capped, jittered by at most half."""

from __future__ import annotations

import pytest

from shared.backoff import backoff_seconds


def test_no_failure_no_pause():
    assert backoff_seconds(0, 0.2, 5.0, 0.0) == 0.0


def test_the_pause_doubles_up_to_the_cap():
    pauses = [backoff_seconds(n, 0.2, 5.0, 0.0) for n in range(1, 9)]
    assert pauses == pytest.approx([0.2, 0.4, 0.8, 1.6, 3.2, 5.0, 5.0, 5.0])


@pytest.mark.parametrize("failures", [1, 4, 30])
def test_jitter_takes_off_at_most_half(failures):
    ceiling = backoff_seconds(failures, 0.2, 5.0, 0.0)
    assert backoff_seconds(failures, 0.2, 5.0, 0.999) == pytest.approx(ceiling * 0.5005)
    assert ceiling / 2 <= backoff_seconds(failures, 0.2, 5.0, 0.5) <= ceiling


def test_a_very_long_outage_stays_at_the_cap():
    assert backoff_seconds(10_000, 0.2, 5.0, 0.0) == 5.0
