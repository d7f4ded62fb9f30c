"""In-memory state of one project, fed one stored vote at a time (no I/O here).

Everything a batch must update is O(1) or O(labelers on the item) per label:
the latest vote per (item, labeler) (a compact :class:`~services.quality.votes.VoteTable`),
running pairwise agreement, per-labeler gold counters and deference monitors, the
model's error rate from gold, and the set of items touched since the last consensus.
Consensus is kept up to date from the touched items by
:class:`~services.quality.incremental.IncrementalDawidSkene`; the bootstrap intervals
read a bounded sample of the table's items (:meth:`VoteTable.sample`) on the debounced
schedule of :mod:`services.quality.scheduling`.
"""

from __future__ import annotations

from bisect import bisect_left, insort
from collections import Counter, defaultdict
from dataclasses import dataclass, field
from datetime import datetime
from typing import Any

import numpy as np
import numpy.typing as npt

from services.quality.alerts import GuidelineWatch
from services.quality.detection import DeferenceMonitor, DeferenceTest
from services.quality.gold import LabelerGold, ModelErrorRate, prelabel_task
from services.quality.incremental import IncrementalDawidSkene, Refit
from services.quality.position_bias import PositionBiasMonitor, PositionBiasTest
from services.quality.running import RunningAgreement
from services.quality.votes import VoteTable, grown
from services.quality.windows import VoteSnapshot

# Independent human judgements: what agreement and consensus are about.
VOTE_SOURCES = {"human", "import"}


@dataclass
class NewFlag:
    labeler_id: str
    monitor: DeferenceMonitor


@dataclass
class ProjectState:
    test: DeferenceTest
    watch: GuidelineWatch
    table: VoteTable = field(default_factory=VoteTable)
    engine: IncrementalDawidSkene = field(default_factory=IncrementalDawidSkene)
    touched: set[int] = field(default_factory=set)  # items with news since the last settle
    # Per running full refit, the items touched since it copied the votes.
    in_flight: list[set[int]] = field(default_factory=list)
    # A finished background refit not yet adopted, with the items touched meanwhile.
    pending_refit: tuple[Refit, set[int]] | None = None
    # Per item code: the label code last published (-1: none, -2: a label not voted),
    # and whether an adjudicator was asked: what a settle compares with, in bulk.
    published_code: npt.NDArray[np.int32] = field(
        default_factory=lambda: np.zeros(0, dtype=np.int32))
    requested_mask: npt.NDArray[np.bool_] = field(
        default_factory=lambda: np.zeros(0, dtype=np.bool_))
    running: RunningAgreement = field(default_factory=RunningAgreement)
    counts: Counter[str] = field(default_factory=Counter)
    gold: dict[str, LabelerGold] = field(default_factory=lambda: defaultdict(LabelerGold))
    monitors: dict[str, DeferenceMonitor] = field(default_factory=dict)
    model_errors: ModelErrorRate = field(default_factory=ModelErrorRate)
    adjudicated: dict[str, str] = field(default_factory=dict)
    published: dict[str, tuple[str, int]] = field(default_factory=dict)
    requested: set[str] = field(default_factory=set)
    # Requested and not yet adjudicated, kept sorted (the summary lists them).
    open_requests: list[str] = field(default_factory=list)
    flags: dict[str, dict[str, Any]] = field(default_factory=dict)
    # Replaying stored votes: per labeler, the task counts at which a review cleared a flag.
    clears_due: dict[str, list[int]] = field(default_factory=dict)
    alerts: dict[tuple[str, str], dict[str, Any]] = field(default_factory=dict)
    report: dict[str, Any] = field(default_factory=dict)
    consensus: dict[str, Any] = field(default_factory=dict)
    model_checked: set[str] = field(default_factory=set)  # gold items the model is judged on
    # Position bias in comparisons: a monitor per reviewer, the reviewers it newly flagged
    # (for the service to publish), and on replay the comparison counts of recorded clears.
    position_test: PositionBiasTest = field(default_factory=PositionBiasTest)
    positions: dict[str, PositionBiasMonitor] = field(default_factory=dict)
    position_flagged: list[str] = field(default_factory=list)
    position_clears_due: dict[str, list[int]] = field(default_factory=dict)
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
            if item not in self.adjudicated and item in self.requested:
                at = bisect_left(self.open_requests, item)
                if at < len(self.open_requests) and self.open_requests[at] == item:
                    del self.open_requests[at]
            self.adjudicated[item] = label
            code = self.table.items.code(item)
            self.engine.set_adjudicated(code, self._class_code(label))
            self._touch(code)
            return None
        if source not in VOTE_SOURCES:
            return None
        put = self.table.put(item, who, label, row["created_at"].timestamp(),
                             row.get("guideline_version"))
        self.running.record(None if put.previous < 0 else put.previous,
                            self.table.classes.index[label], put.others)
        self._touch(put.item)
        gold = self.gold[who]
        if row.get("supersedes"):
            # A revision after the reveal replaces the vote; the evidence is the first answer.
            gold.revisions_after_reveal += 1
            return None
        if row.get("first_shown_chosen") is not None:
            self._observe_position(who, bool(row["first_shown_chosen"]),
                                   int(row["candidates_shown"]), row["created_at"])
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

    def _observe_position(self, who: str, first_chosen: bool, shown: int,
                          at: datetime) -> None:
        monitor = self.positions.get(who)
        if monitor is None:
            monitor = self.positions[who] = PositionBiasMonitor(test=self.position_test)
        flagged = monitor.observe(first_chosen, shown, at)
        due = self.position_clears_due.get(who)
        if due and monitor.comparisons >= due[0]:  # replay: a review cleared the flag here
            due.pop(0)
            monitor.clear()
            return
        if flagged:
            self.position_flagged.append(who)

    def take_position_flags(self) -> list[str]:
        """Reviewers the position-bias test newly flagged (each once), still flagged."""
        out = [w for w in dict.fromkeys(self.position_flagged) if self.positions[w].flagged]
        self.position_flagged = []
        return out

    def clear_flag(self, labeler_id: str) -> int:
        """A review cleared the labeler: drop the flag and watch afresh. Returns how many
        pre-labelled tasks the monitor had seen, which is where a replay clears it again."""
        self.flags.pop(labeler_id, None)
        if labeler_id in self.positions:
            self.positions[labeler_id].clear()
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
        for who, due in self.position_clears_due.items():
            if due and who in self.positions:
                self.positions[who].clear()
        self.position_clears_due.clear()

    def _touch(self, item: int) -> None:
        self.touched.add(item)
        for since in self.in_flight:
            since.add(item)

    def follow(self) -> set[int]:
        """Collect the items touched from now on (a refit copied the votes just now)."""
        since: set[int] = set()
        self.in_flight.append(since)
        return since

    def unfollow(self, since: set[int]) -> None:
        self.in_flight = [s for s in self.in_flight if s is not since]

    def _class_code(self, label: str) -> int:
        """The label's class code; -2 for a label no vote has used."""
        code = self.table.classes.get(label)
        return -2 if code is None else code

    def take_touched(self) -> npt.NDArray[np.intp]:
        """The items touched since the last call, for a consensus update."""
        touched = np.fromiter(self.touched, dtype=np.intp, count=len(self.touched))
        self.touched = set()
        return touched

    def refresh_adjudicated(self) -> None:
        """Adjudicated labels as class codes again (after a new class appeared)."""
        for item, label in self.adjudicated.items():
            self.engine.set_adjudicated(self.table.items.code(item), self._class_code(label))

    def mark_published(self, item_id: str, label: str, revision: int) -> None:
        self.published[item_id] = (label, revision)
        code = self.table.items.code(item_id)
        self.published_code = grown(self.published_code, code + 1, -1)
        self.published_code[code] = self._class_code(label)

    def mark_requested(self, item_id: str) -> None:
        if item_id not in self.requested and item_id not in self.adjudicated:
            insort(self.open_requests, item_id)
        self.requested.add(item_id)
        code = self.table.items.code(item_id)
        self.requested_mask = grown(self.requested_mask, code + 1, False)
        self.requested_mask[code] = True

    def items_since(self, labeler_id: str, since: datetime | None) -> list[str]:
        """Items the labeler labelled at or after ``since``, for a re-review."""
        return self.table.items_since(labeler_id, None if since is None else since.timestamp())

    def snapshot(self) -> VoteSnapshot:
        return self.table.snapshot()

    def plain_votes(self) -> dict[str, dict[str, str]]:
        return self.table.plain_votes()

    @property
    def items_with_votes(self) -> int:
        return int(np.count_nonzero(self.table.item_size[: self.table.n_items]))

    @property
    def items_with_overlap(self) -> int:
        return int(np.count_nonzero(self.table.item_size[: self.table.n_items] > 1))

    def votes_by_labeler(self) -> dict[str, int]:
        counts = np.bincount(self.table.row_labeler[: self.table.n_rows],
                             minlength=len(self.table.labelers))
        return {who: int(n) for who, n in zip(self.table.labelers.names, counts.tolist(),
                                             strict=True) if n}
