"""In-memory state of one project, fed one stored vote at a time (no I/O here).

Everything a batch must update is O(1) or O(labelers on the item) per label:
the latest vote per (item, labeler), running pairwise agreement, per-labeler
gold counters and deference monitors, the model's error rate from gold. The
expensive parts (Dawid-Skene, bootstrap intervals) read a snapshot of ``votes``
on the debounced schedule of :mod:`services.quality.scheduling`.
"""

from __future__ import annotations

from collections import Counter, defaultdict
from dataclasses import dataclass, field
from datetime import datetime
from typing import Any

from services.quality.alerts import GuidelineWatch
from services.quality.detection import DeferenceMonitor, DeferenceTest
from services.quality.gold import LabelerGold, ModelErrorRate, prelabel_task
from services.quality.running import RunningAgreement
from services.quality.windows import VoteSnapshot

# Independent human judgements: what agreement and consensus are about.
VOTE_SOURCES = {"human", "import"}


@dataclass(frozen=True, slots=True)
class Vote:
    label: str
    created_at: datetime
    guideline_version: str | None


@dataclass
class NewFlag:
    labeler_id: str
    monitor: DeferenceMonitor


@dataclass
class ProjectState:
    test: DeferenceTest
    watch: GuidelineWatch
    votes: dict[str, dict[str, Vote]] = field(default_factory=lambda: defaultdict(dict))
    running: RunningAgreement = field(default_factory=RunningAgreement)
    counts: Counter[str] = field(default_factory=Counter)
    gold: dict[str, LabelerGold] = field(default_factory=lambda: defaultdict(LabelerGold))
    monitors: dict[str, DeferenceMonitor] = field(default_factory=dict)
    model_errors: ModelErrorRate = field(default_factory=ModelErrorRate)
    labeled: dict[str, list[tuple[datetime, str]]] = field(
        default_factory=lambda: defaultdict(list)
    )
    adjudicated: dict[str, str] = field(default_factory=dict)
    published: dict[str, tuple[str, int]] = field(default_factory=dict)
    requested: set[str] = field(default_factory=set)
    flags: dict[str, dict[str, Any]] = field(default_factory=dict)
    # Replaying stored votes: per labeler, the task counts at which a review cleared a flag.
    clears_due: dict[str, list[int]] = field(default_factory=dict)
    alerts: dict[tuple[str, str], dict[str, Any]] = field(default_factory=dict)
    report: dict[str, Any] = field(default_factory=dict)
    consensus: dict[str, Any] = field(default_factory=dict)
    model_checked: set[str] = field(default_factory=set)  # gold items the model is judged on
    _error_cache: tuple[tuple[int, int], float] = ((-1, -1), 0.0)

    def cautious_error_rate(self) -> float:
        """The model's error rate on pre-labelled queues, a low posterior quantile (cached)."""
        key = (self.model_errors.errors, self.model_errors.checked)
        if self._error_cache[0] != key:
            self._error_cache = (key, self.model_errors.lower(0.1))
        return self._error_cache[1]

    def apply(self, row: dict[str, Any]) -> NewFlag | None:
        """Take one stored label; return a flag if this label makes its labeler flagged."""
        source = row["source"]
        self.counts[source] += 1
        item, who, label = row["item_id"], row["labeler_id"], row["label"]
        if source == "adjudicated":
            self.adjudicated[item] = label
            return None
        if source not in VOTE_SOURCES:
            return None
        self.votes[item][who] = Vote(label, row["created_at"], row.get("guideline_version"))
        self.running.add(item, who, label)
        self.labeled[who].append((row["created_at"], item))
        gold = self.gold[who]
        if row.get("supersedes"):
            # A revision after the reveal replaces the vote; the evidence is the first answer.
            gold.revisions_after_reveal += 1
            return None
        task = prelabel_task(row.get("mode"), row.get("shown_prelabel"), label,
                             bool(row.get("planted_prelabel")), row.get("gold_label"))
        gold.add(label=label, gold_label=row.get("gold_label"), task=task,
                 revised_after_reveal=bool(row.get("revised_after_reveal")))
        error_rate = self.cautious_error_rate()
        if (row.get("gold_label") is not None and row.get("model_label") is not None
                and item not in self.model_checked):
            # The model's guess for an item is one observation, however many labelers
            # were shown it (counting it per labeler would narrow the posterior falsely).
            self.model_checked.add(item)
            self.model_errors.add(row.get("model_label"), row.get("gold_label"))
        if task is None:
            return None
        monitor = self.monitors.get(who)
        if monitor is None:
            monitor = self.monitors[who] = DeferenceMonitor(test=self.test)
        flagged = monitor.observe(task.evidence, task.changed, error_rate, row["created_at"])
        due = self.clears_due.get(who)
        if due and monitor.tasks >= due[0]:  # replay: a review cleared the flag here
            due.pop(0)
            monitor.clear()
            return None
        return NewFlag(who, monitor) if flagged else None

    def clear_flag(self, labeler_id: str) -> int:
        """A review cleared the labeler: drop the flag and watch afresh. Returns how many
        pre-labelled tasks the monitor had seen, which is where a replay clears it again."""
        self.flags.pop(labeler_id, None)
        monitor = self.monitors.get(labeler_id)
        if monitor is None:
            return 0
        monitor.clear()
        return monitor.tasks

    def finish_replay(self) -> None:
        """Clears recorded after the last stored vote of a labeler apply now."""
        for who, due in self.clears_due.items():
            if due and who in self.monitors:
                self.monitors[who].clear()
        self.clears_due.clear()

    def items_since(self, labeler_id: str, since: datetime | None) -> list[str]:
        """Items the labeler labelled at or after ``since``, for a re-review."""
        seen: dict[str, None] = {}
        for at, item in self.labeled.get(labeler_id, []):
            if since is None or at >= since:
                seen[item] = None
        return list(seen)

    def snapshot(self) -> VoteSnapshot:
        rows = [
            (item, who, vote.label, vote.created_at.timestamp(), vote.guideline_version)
            for item, on_item in self.votes.items()
            for who, vote in on_item.items()
        ]
        return VoteSnapshot.from_rows(rows)

    def plain_votes(self) -> dict[str, dict[str, str]]:
        return {item: {who: v.label for who, v in on_item.items()}
                for item, on_item in self.votes.items()}
