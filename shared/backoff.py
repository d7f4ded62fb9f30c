"""How long a consumer waits before it tries again after an infrastructure failure.

Doubling pauses stop a consumer from hammering a database or Redis that is down, the
cap bounds how long it takes to notice the store is back (the recovery time after an
outage is at most about one cap), and the jitter keeps consumers that failed together
(every worker of every service, the moment PostgreSQL went away) from all retrying in
the same instant when it returns.
"""

from __future__ import annotations

MAX_DOUBLINGS = 60  # 2**60 times any sane first pause is past any cap; no float overflow


def backoff_seconds(failures: int, first: float, cap: float, spread: float) -> float:
    """The pause after ``failures`` failures in a row: ``first``, doubling, at most ``cap``,
    of which ``spread`` (a random number in [0, 1)) takes off up to half ("equal jitter":
    never less than half the ceiling, so a thousand consumers still back off)."""
    if failures <= 0:
        return 0.0
    ceiling = min(cap, first * 2.0 ** min(failures - 1, MAX_DOUBLINGS))
    return ceiling * (1.0 - min(max(spread, 0.0), 1.0) / 2.0)
