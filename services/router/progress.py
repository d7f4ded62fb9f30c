"""What the reviewer page shows beside a task: guideline, display, labeled today, waiting.

"Today" is the labeler's day, not UTC's: the page sends the start of its local day and
the router counts the submits recorded since. Submits are counted in quarter-hour
buckets, one hash per UTC day, because every time zone's midnight falls on a quarter
hour (UTC+5:45 included) and a day's hash can simply expire.

The queue's depth is shown exactly only to projects that salt no gold. A gold task is
created for the labeler who takes it and never sits in the queue, so an exact depth
that fails to drop when a task is taken would tell a labeler "this one is gold"; with
gold on, the depth is rounded (below 10 it is only "fewer than 10").
"""

from __future__ import annotations

from collections.abc import Mapping
from datetime import UTC, date, datetime, timedelta
from typing import Literal

from pydantic import BaseModel, Field

QUARTER = timedelta(minutes=15)
QUARTERS_A_DAY = 96
# A day's counts are kept a little longer than the longest "today" anyone can ask for.
PROGRESS_TTL_MS = 3 * 24 * 3600 * 1000
LONGEST_DAY = timedelta(hours=26)  # a local day's start is at most this far back (UTC-12, DST)
ROUGH_BELOW = 10  # with gold on, a depth below this is shown as "fewer than 10"


class Progress(BaseModel):
    labeled_today: int = Field(description="submits this labeler made since `since`")
    since: datetime = Field(description="the start of the labeler's day, as counted")


class Waiting(BaseModel):
    count: int = Field(description="tasks in the queue; rounded unless `exact`")
    exact: bool
    fewer_than: int | None = Field(
        None, description="set when only an upper bound is shown (a few tasks, gold on)")


class Display(BaseModel):
    """How the page draws an item's ``features`` (the project's ``review.display``)."""

    kind: Literal["image"] = "image"
    width: int
    height: int


class ReviewContext(BaseModel):
    """What the reviewer page shows beside a task: the guideline, how items are drawn and
    the labeler's progress. Nothing of any model's output: it is read in blind mode too."""

    project: str
    guideline_version: str | None
    guideline: str | None
    display: Display | None
    progress: Progress
    waiting: Waiting


def bucket_of(at: datetime) -> tuple[date, int]:
    """The UTC day and the quarter hour of that day an instant is counted in."""
    at = at.astimezone(UTC)
    return at.date(), (at.hour * 60 + at.minute) // 15


def day_start(since: datetime | None, now: datetime) -> datetime:
    """The start of the day to count from: the page's local midnight, kept within the
    last ``LONGEST_DAY`` (a wrong clock or a crafted value cannot ask for a week), floored
    to a quarter hour; the UTC midnight when the page sent none."""
    now = now.astimezone(UTC)
    if since is None:
        start = now.replace(hour=0, minute=0, second=0, microsecond=0)
    else:
        if since.tzinfo is None:
            since = since.replace(tzinfo=UTC)
        start = min(max(since.astimezone(UTC), now - LONGEST_DAY), now)
    return start.replace(minute=start.minute - start.minute % 15, second=0, microsecond=0)


def days_between(start: datetime, now: datetime) -> list[date]:
    """The UTC days whose counts cover ``start`` .. ``now`` (one to three)."""
    first, last = start.astimezone(UTC).date(), now.astimezone(UTC).date()
    return [first + timedelta(days=i) for i in range((last - first).days + 1)]


def labeled_since(counts: Mapping[date, Mapping[int, int]], start: datetime) -> int:
    """Submits counted in the quarter hours from ``start`` on, from per-day bucket counts."""
    first_day, first_quarter = bucket_of(start)
    total = 0
    for day, buckets in counts.items():
        for quarter, n in buckets.items():
            if (day, quarter) >= (first_day, first_quarter) and 0 <= quarter < QUARTERS_A_DAY:
                total += n
    return total


def parse_buckets(raw: Mapping[bytes | str, bytes | str]) -> dict[int, int]:
    """A day's hash as Redis returns it (quarter -> count, as text)."""
    out: dict[int, int] = {}
    for k, v in raw.items():
        out[int(k)] = int(v)
    return out


def waiting(depth: int, gold_rate: float) -> Waiting:
    """The depth a labeler is shown: exact without gold; with gold, two significant
    figures (nearest ten below 100), and below 10 only "fewer than 10"."""
    if gold_rate <= 0:
        return Waiting(count=depth, exact=True)
    if depth <= 0:
        return Waiting(count=0, exact=False)
    if depth < ROUGH_BELOW:
        return Waiting(count=ROUGH_BELOW, exact=False, fewer_than=ROUGH_BELOW)
    scale = 10 ** max(len(str(depth)) - 2, 1)
    return Waiting(count=int((depth + scale // 2) // scale * scale), exact=False)
