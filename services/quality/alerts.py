"""Guideline signal: agreement on a class (under one guideline version) has dropped.

Low agreement on one class, among many labelers, says the guideline is unclear
there ("sharpen the guideline"); a single labeler missing gold is a flag on that
labeler instead, handled by :mod:`services.quality.detection`. An alert is raised
once when a (class, guideline version) goes below the threshold with enough
items to trust the figure, and re-armed only after it recovers above
``threshold + hysteresis``, so a value hovering at the threshold does not spam.
"""

from __future__ import annotations

import math
from collections.abc import Iterable
from dataclasses import dataclass

__all__ = ["ClassAgreement", "GuidelineAlert", "GuidelineWatch"]


@dataclass(frozen=True, slots=True)
class ClassAgreement:
    """Agreement on one class under one guideline version."""

    label_class: str
    guideline_version: str
    agreement: float
    items: int


@dataclass(frozen=True, slots=True)
class GuidelineAlert:
    label_class: str
    guideline_version: str
    agreement: float
    threshold: float
    items: int


@dataclass
class GuidelineWatch:
    """Which (class, version) pairs are in alert; ``update`` returns the new alerts."""

    threshold: float = 0.6
    min_items: int = 20
    hysteresis: float = 0.05

    def __post_init__(self) -> None:
        self.active: set[tuple[str, str]] = set()

    def update(self, measured: Iterable[ClassAgreement]) -> list[GuidelineAlert]:
        raised = []
        for m in measured:
            key = (m.label_class, m.guideline_version)
            if m.items < self.min_items or math.isnan(m.agreement):
                continue
            if key in self.active:
                if m.agreement >= self.threshold + self.hysteresis:
                    self.active.discard(key)
            elif m.agreement < self.threshold:
                self.active.add(key)
                raised.append(
                    GuidelineAlert(
                        m.label_class, m.guideline_version, m.agreement, self.threshold, m.items
                    )
                )
        return raised
