"""Running pairwise agreement, updated in O(labelers on the item) per vote.

Pairwise agreement is the share of (item, labeler, labeler) pairs that gave
the same label; a labeler's newer vote on an item replaces the older one. The quality
service keeps only the two counters (:meth:`RunningAgreement.record`, told the other
labels on the item by its vote table); ``add`` keeps its own copy of the votes, for
use on its own.
"""

from __future__ import annotations

from collections import Counter, defaultdict
from collections.abc import Hashable, Sequence
from dataclasses import dataclass, field


@dataclass
class RunningAgreement:
    votes: dict[str, dict[str, str]] = field(default_factory=lambda: defaultdict(dict))
    agreeing_pairs: int = 0
    total_pairs: int = 0

    def add(self, item_id: str, labeler_id: str, label: str) -> None:
        on_item = self.votes[item_id]
        previous = on_item.get(labeler_id)
        self.record(previous, label, [lab for who, lab in on_item.items() if who != labeler_id])
        on_item[labeler_id] = label

    def record(self, previous: Hashable | None, label: Hashable,
               others: Sequence[Hashable]) -> None:
        """A labeler's vote ``label`` replaced ``previous`` (None: their first on the item)
        on an item where the other labelers said ``others``."""
        if previous == label:
            return
        if previous is None:
            self.total_pairs += len(others)
        else:
            self.agreeing_pairs -= sum(1 for lab in others if lab == previous)
        self.agreeing_pairs += sum(1 for lab in others if lab == label)

    @property
    def agreement(self) -> float | None:
        return self.agreeing_pairs / self.total_pairs if self.total_pairs else None

    @property
    def items_with_overlap(self) -> int:
        return sum(1 for v in self.votes.values() if len(v) > 1)

    def labelers(self) -> Counter[str]:
        return Counter(who for v in self.votes.values() for who in v)
