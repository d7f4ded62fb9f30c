"""Gold items: known answers salted into each labeler's stream of tasks.

A gold task must look exactly like any other task; what makes it gold lives
only in the task's hidden fields and in the label event for the quality
service. In prelabel mode a share of gold tasks shows a deliberately wrong
pre-label, to measure whether reviewers catch the model's mistakes.
"""

from __future__ import annotations

import random
from dataclasses import dataclass
from typing import Any

from pydantic import BaseModel, Field


class GoldItem(BaseModel):
    item_id: str = Field(min_length=1, max_length=256)
    label: str = Field(min_length=1, max_length=256)
    payload: dict[str, Any] | None = None
    wrong_prelabel: str | None = Field(None, description="the planted wrong pre-label to show")


@dataclass(frozen=True, slots=True)
class GoldShowing:
    prelabel: str | None
    planted: bool


def should_salt(rng: random.Random, gold_rate: float, available: int) -> bool:
    return available > 0 and rng.random() < gold_rate


def gold_prelabel(item: GoldItem, mode: str, planted_share: float, options: list[str],
                  rng: random.Random) -> GoldShowing:
    """What pre-label a gold task shows: none when blind; wrong for a planted share."""
    if mode != "prelabel":
        return GoldShowing(None, False)
    if rng.random() < planted_share:
        wrong = item.wrong_prelabel or _random_other(item.label, options, rng)
        if wrong is not None and wrong != item.label:
            return GoldShowing(wrong, True)
    return GoldShowing(item.label, False)


def _random_other(label: str, options: list[str], rng: random.Random) -> str | None:
    others = [o for o in options if o != label]
    return rng.choice(others) if others else None
