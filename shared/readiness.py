"""Is a consumer consuming? The state each stream consumer reports, and the verdict.

A process can answer HTTP while its consumers do nothing: stopped for good, waiting
out a database outage, or hung on a call that never returns. Readiness (``/readyz``)
and ``loopwise_consumer_up`` say so from this state, which the consumer updates and
this module judges; no I/O here.
"""

from __future__ import annotations

from dataclasses import dataclass
from enum import StrEnum
from typing import Any


class Phase(StrEnum):
    STARTING = "starting"  # no read has returned yet
    READING = "reading"  # in XREADGROUP / XAUTOCLAIM, or between them
    HANDLING = "handling"  # a batch is in its handler
    BACKOFF = "backoff"  # waiting after a failure that was not the entries'
    STOPPED = "stopped"


@dataclass
class ConsumerHealth:
    """One consumer's (stream, group) state; times are ``time.monotonic()`` seconds."""

    stream: str
    group: str
    since: float  # when the consumer last made progress (a read returned, a batch done)
    phase: Phase = Phase.STARTING
    failures: int = 0  # in a row, while in backoff
    last_error: str | None = None
    recreated: int = 0  # times this consumer found its group gone and recreated it

    def progressed(self, now: float, phase: Phase = Phase.READING) -> None:
        self.phase, self.since, self.failures = phase, now, 0

    def backing_off(self, now: float, failures: int, error: str) -> None:
        if self.phase is not Phase.BACKOFF:
            self.since = now
        self.phase, self.failures, self.last_error = Phase.BACKOFF, failures, error

    def status(self, now: float, stall_seconds: float) -> str:
        """``consuming``, or why not: ``starting``, ``backoff``, ``stalled``, ``stopped``.

        Reads block for at most the poll interval, so a consumer that has neither read
        nor finished a batch for ``stall_seconds`` is stuck (a call that never returns).
        """
        if self.phase in (Phase.STOPPED, Phase.BACKOFF):
            return self.phase.value
        if now - self.since > stall_seconds:
            return "stalled"
        if self.phase is Phase.STARTING:
            return "starting"
        return "consuming"

    def report(self, now: float, stall_seconds: float) -> dict[str, Any]:
        return {"stream": self.stream, "group": self.group,
                "status": self.status(now, stall_seconds), "phase": self.phase.value,
                "seconds_since_progress": round(now - self.since, 3),
                "failures": self.failures, "last_error": self.last_error,
                "group_recreated": self.recreated}


def all_consuming(consumers: list[ConsumerHealth], now: float, stall_seconds: float) -> bool:
    return all(c.status(now, stall_seconds) == "consuming" for c in consumers)
