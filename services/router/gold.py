"""Gold items: known answers salted into each labeler's stream of tasks.

A gold task must look exactly like any other task, before the submit and after it:
what makes it gold lives only in the task's hidden fields and in the label event for
the quality service. It is shown the way routing shows any task (:func:`present`) from
the model's real prediction for the item, which the router keeps when one arrives on
the predictions stream (or the upload gives); the reveal then shows that prediction,
as for any task. A gold item the model never predicted has no model guess to show or
record (never a made-up one). In prelabel mode a share of gold tasks shows a
deliberately wrong pre-label, to measure whether reviewers catch the model's mistakes.
"""

from __future__ import annotations

import random
from dataclasses import dataclass

from pydantic import BaseModel, Field, field_validator

from shared.events import check_distribution
from shared.limits import FINITE, ItemId, JsonObject, Label, Version
from shared.projects import RoutingPolicy

from .routing import present


class GoldPrediction(BaseModel):
    """The model's real prediction for a gold item (what it would show on any task)."""

    model_config = FINITE
    model_version: Version | None = None
    probs: dict[str, float] = Field(default_factory=dict)

    @field_validator("probs")
    @classmethod
    def _is_distribution(cls, probs: dict[str, float]) -> dict[str, float]:
        return check_distribution(probs)

    def top(self) -> tuple[str, float] | None:
        if not self.probs:
            return None
        label = max(self.probs, key=self.probs.__getitem__)
        return label, self.probs[label]


class GoldItem(BaseModel):
    item_id: ItemId
    label: Label
    payload: JsonObject | None = None
    wrong_prelabel: Label | None = Field(None, description="the planted wrong pre-label to show")
    prediction: GoldPrediction | None = Field(
        None, description="the model's prediction for the item, if known (a prediction for "
                          "the item on the predictions stream replaces it)")


@dataclass(frozen=True, slots=True)
class GoldShowing:
    """How a gold task is shown, and what its label event records of the model."""

    mode: str
    options: list[str]
    prelabel: str | None
    planted: bool
    model_label: str | None
    confidence: float | None
    model_version: str | None


def should_salt(rng: random.Random, gold_rate: float, available: int) -> bool:
    return available > 0 and rng.random() < gold_rate


def pick_gold(rng: random.Random, fresh: list[GoldItem]) -> GoldItem:
    """Gold items with a known prediction first: only those look like any task after the
    submit too (the reveal shows the model's guess); the rest when none is left."""
    predicted = [g for g in fresh if g.prediction is not None and g.prediction.probs]
    return rng.choice(predicted or fresh)


def gold_showing(item: GoldItem, policy: RoutingPolicy, options: list[str],
                 rng: random.Random) -> GoldShowing:
    """Shown as routing shows a task from the same prediction; in prelabel mode, a
    ``gold_planted_share`` of them with a wrong pre-label instead of the model's."""
    prediction = item.prediction or GoldPrediction()
    top = prediction.top()
    if top is not None:
        shown = present(policy, prediction.probs, options, audit=False)
        mode, shown_options, prelabel = shown.mode, shown.options, shown.prelabel
    else:  # no model guess known: the answer itself stands in for the pre-label
        mode, shown_options = ("prelabel" if policy.mode == "prelabel" else "blind"), options
        prelabel = item.label if mode == "prelabel" else None
    planted = False
    if mode == "prelabel" and rng.random() < policy.gold_planted_share:
        wrong = item.wrong_prelabel or _random_other(item.label, options, rng)
        if wrong is not None and wrong != item.label:
            prelabel, planted = wrong, True
    return GoldShowing(mode=mode, options=shown_options, prelabel=prelabel, planted=planted,
                       model_label=top[0] if top else None,
                       confidence=top[1] if top else None,
                       model_version=prediction.model_version if top else None)


def _random_other(label: str, options: list[str], rng: random.Random) -> str | None:
    others = [o for o in options if o != label]
    return rng.choice(others) if others else None
