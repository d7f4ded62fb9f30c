"""The routing rule: auto-accept what the model is sure of, send the rest to people."""

from __future__ import annotations

from dataclasses import dataclass

from shared.events import PredictionEvent


@dataclass(frozen=True, slots=True)
class RoutingDecision:
    auto_accept: bool
    label: str | None
    confidence: float
    priority: float  # higher = reviewed sooner


def uncertainty(probs: dict[str, float]) -> float:
    """Least-confidence uncertainty, 1 - max p; 1.0 when there is no model yet."""
    return 1.0 - max(probs.values()) if probs else 1.0


def route(prediction: PredictionEvent, auto_accept_threshold: float) -> RoutingDecision:
    """Auto-accept when the top probability reaches the project's threshold.

    Without a model (empty probs) nothing is auto-accepted. Review priority is
    the scorer's active-learning priority when it sent one, else uncertainty.
    """
    label, confidence = prediction.top()
    auto = label is not None and confidence >= auto_accept_threshold
    priority = (
        prediction.priority if prediction.priority is not None else uncertainty(prediction.probs)
    )
    return RoutingDecision(auto, label, confidence, priority)
