"""When to recompute consensus and agreement: debounced, never on every batch.

Bootstrap intervals read all of a project's votes (and a consensus update, though
incremental, still costs milliseconds), so running them on each batch of up to 500
labels would make the consumer's cost grow with the project. Instead a batch only
marks its project dirty; a project is recomputed once it has been quiet for
``quiet_seconds`` (a burst of labels gives one run, not many) or, under a steady
stream, at the latest ``max_delay_seconds`` after it first became dirty, and never
twice within ``min_interval_seconds``.

A restart marks every known project dirty to rebuild its reports: that backlog
(hundreds of projects, minutes of work) goes after projects with new votes, so a
project being labelled now is never queued behind it.
"""

from __future__ import annotations

from dataclasses import dataclass, field

__all__ = ["RecomputeSchedule"]


@dataclass
class RecomputeSchedule:
    quiet_seconds: float = 2.0
    max_delay_seconds: float = 30.0
    min_interval_seconds: float = 1.0
    dirty_since: dict[str, float] = field(default_factory=dict)
    last_change: dict[str, float] = field(default_factory=dict)
    last_run: dict[str, float] = field(default_factory=dict)
    backlog: set[str] = field(default_factory=set)

    def touch(self, project: str, now: float, backlog: bool = False) -> None:
        """New votes arrived for ``project`` (``backlog``: it only needs catching up)."""
        if backlog:
            if project not in self.dirty_since:
                self.backlog.add(project)
        else:
            self.backlog.discard(project)
        self.dirty_since.setdefault(project, now)
        self.last_change[project] = now

    def due(self, now: float) -> list[str]:
        """Projects to recompute now: those with new votes first, oldest change first."""
        ready = []
        for project, since in self.dirty_since.items():
            if now - self.last_run.get(project, float("-inf")) < self.min_interval_seconds:
                continue
            quiet = now - self.last_change[project] >= self.quiet_seconds
            overdue = now - since >= self.max_delay_seconds
            if quiet or overdue:
                ready.append(project)
        return sorted(ready, key=lambda p: (p in self.backlog, self.dirty_since[p]))

    def ran(self, project: str, started: float) -> None:
        """A run that started at ``started`` covered every change up to then."""
        self.last_run[project] = started
        if self.last_change.get(project, float("-inf")) <= started:
            self.dirty_since.pop(project, None)
            self.last_change.pop(project, None)
            self.backlog.discard(project)
        else:
            self.dirty_since[project] = started
