"""Running pairwise agreement, updated in O(labelers on the item) per vote.

Pairwise agreement is the share of (item, labeler, labeler) pairs that gave
the same label; a labeler's newer vote on an item replaces the older one.
"""

from __future__ import annotations

from collections import Counter, defaultdict
from dataclasses import dataclass, field


@dataclass
class RunningAgreement:
    votes: dict[str, dict[str, str]] = field(default_factory=lambda: defaultdict(dict))
    agreeing_pairs: int = 0
    total_pairs: int = 0

    def add(self, item_id: str, labeler_id: str, label: str) -> None:
        on_item = self.votes[item_id]
        previous = on_item.get(labeler_id)
        if previous == label:
            return
        others = [lab for who, lab in on_item.items() if who != labeler_id]
        if previous is None:
            self.total_pairs += len(others)
        else:
            self.agreeing_pairs -= sum(1 for lab in others if lab == previous)
        self.agreeing_pairs += sum(1 for lab in others if lab == label)
        on_item[labeler_id] = label

    @property
    def agreement(self) -> float | None:
        return self.agreeing_pairs / self.total_pairs if self.total_pairs else None

    @property
    def items_with_overlap(self) -> int:
        return sum(1 for v in self.votes.values() if len(v) > 1)

    def labelers(self) -> Counter[str]:
        return Counter(who for v in self.votes.values() for who in v)
