"""The routing rules: auto-accept what the model is sure of, send the rest to people,
audit a share of the auto-accepts, and choose how each task is shown."""

from __future__ import annotations

from dataclasses import dataclass

from shared.events import NONE_OF_THESE, PredictionEvent, stable_id
from shared.projects import RoutingPolicy


@dataclass(slots=True)  # not frozen: a frozen dataclass's __init__ costs µs per prediction
class RoutingDecision:
    auto_accept: bool
    label: str | None
    confidence: float
    priority: float  # higher = reviewed sooner
    audit: bool = False  # would have been auto-accepted; reviewed blind to measure precision


@dataclass(slots=True)
class Presentation:
    mode: str  # blind | prelabel | choice
    options: list[str]
    prelabel: str | None


def uncertainty(probs: dict[str, float]) -> float:
    """Least-confidence uncertainty, 1 - max p; 1.0 when there is no model yet."""
    return 1.0 - max(probs.values()) if probs else 1.0


def margin(probs: dict[str, float]) -> float:
    """Top-1 minus top-2 probability; 0 without a model."""
    top = sorted(probs.values(), reverse=True)
    if not top:
        return 0.0
    return top[0] - (top[1] if len(top) > 1 else 0.0)


def unit_draw(*parts: str) -> float:
    """A uniform number in [0, 1) fixed by its inputs: a redelivery decides the same way."""
    return stable_id("draw", *parts).int / 2**128


def route(
    prediction: PredictionEvent, threshold: float, audit_rate: float = 0.0
) -> RoutingDecision:
    """Auto-accept at or above ``threshold``, except a random ``audit_rate`` share.

    Without a model (empty probs), or when the scorer selected the item for
    review (active learning), nothing is auto-accepted. Review priority is
    the scorer's active-learning priority when it sent one, else uncertainty.
    """
    probs = prediction.probs
    label = max(probs, key=probs.__getitem__) if probs else None
    confidence = probs[label] if label is not None else 0.0
    confident = label is not None and confidence >= threshold and not prediction.review
    audit = (confident and audit_rate > 0
             and unit_draw("audit", str(prediction.event_id)) < audit_rate)
    priority = prediction.priority if prediction.priority is not None else 1.0 - confidence
    return RoutingDecision(confident and not audit, label, confidence, priority, audit)


def present(policy: RoutingPolicy, probs: dict[str, float], all_options: list[str],
            audit: bool) -> Presentation:
    """How a review task is shown. Audits are always blind: they measure the model."""
    if not audit and policy.choice_margin is not None and len(probs) > 2:
        if margin(probs) < policy.choice_margin:
            top = sorted(probs, key=probs.__getitem__, reverse=True)
            candidates = sorted(top[: policy.choice_top_k], key=label_order)
            return Presentation("choice", [*candidates, NONE_OF_THESE], None)
    if not audit and policy.mode == "prelabel" and probs:
        return Presentation("prelabel", all_options, max(probs, key=probs.__getitem__))
    return Presentation("blind", all_options, None)


def label_order(label: str) -> tuple[int, float | str]:
    """Numeric labels in numeric order (so digit keys map naturally), then text."""
    try:
        return (0, float(label))
    except ValueError:
        return (1, label)
