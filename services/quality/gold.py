"""Gold and pre-label statistics per labeler, and the model's error rate on the queue.

Counters only, updated one label at a time, so the consumer stays O(1) per label:

* gold accuracy: share of gold tasks answered with the gold label;
* gold catch rate: share of planted (deliberately wrong) pre-labels the labeler did
  not keep;
* correction rate: share of ordinary pre-labels (the model's own label) changed,
  read next to the model's error rate on the same queue: a labeler who judges
  corrects about as often as the model is wrong, one who defers far less;
* revisions after reveal: labels changed once the model's answer was shown.

The model's error rate on the queue comes from gold tasks (``model_label`` against
``gold_label``; a planted task still records the model's real label), so it needs
no human to be right. Its Beta posterior gives a cautious (lower) estimate for the
detector: overstating the model's errors would make honest labelers look lazy.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from scipy.stats import beta

from services.quality.detection import Evidence

__all__ = ["LabelerGold", "ModelErrorRate", "PrelabelTask", "prelabel_task"]


@dataclass(frozen=True, slots=True)
class PrelabelTask:
    """What one pre-labelled task tells about its labeler."""

    planted: bool
    changed: bool
    evidence: Evidence = Evidence.ORDINARY


def prelabel_task(
    mode: str | None, shown_prelabel: str | None, label: str, planted_prelabel: bool,
    gold_label: str | None = None,
) -> PrelabelTask | None:
    """The evidence in one label, or None when no pre-label was shown. A gold task's
    pre-label is known right or wrong (planted, or the model's real guess)."""
    if mode != "prelabel" or shown_prelabel is None:
        return None
    if planted_prelabel or (gold_label is not None and shown_prelabel != gold_label):
        evidence = Evidence.KNOWN_WRONG
    elif gold_label is not None:
        evidence = Evidence.KNOWN_RIGHT
    else:
        evidence = Evidence.ORDINARY
    return PrelabelTask(planted=planted_prelabel, changed=label != shown_prelabel,
                        evidence=evidence)


@dataclass
class ModelErrorRate:
    """Beta posterior of the model's error rate on pre-labelled queues, from gold."""

    errors: int = 0
    checked: int = 0
    prior_errors: float = 1.0
    prior_correct: float = 4.0

    def add(self, model_label: str | None, gold_label: str | None) -> None:
        if model_label is None or gold_label is None:
            return
        self.checked += 1
        self.errors += model_label != gold_label

    @property
    def mean(self) -> float:
        a, b = self._posterior()
        return a / (a + b)

    def lower(self, quantile: float = 0.1) -> float:
        """A cautious estimate: the ``quantile`` of the posterior."""
        a, b = self._posterior()
        return float(beta.ppf(quantile, a, b))

    def _posterior(self) -> tuple[float, float]:
        return self.prior_errors + self.errors, self.prior_correct + self.checked - self.errors


@dataclass
class LabelerGold:
    """One labeler's gold and pre-label counters."""

    gold_seen: int = 0
    gold_correct: int = 0
    planted_seen: int = 0
    planted_caught: int = 0
    prelabel_seen: int = 0
    prelabel_changed: int = 0
    revisions_after_reveal: int = 0
    labels: int = 0

    def add(
        self,
        *,
        label: str,
        gold_label: str | None,
        task: PrelabelTask | None,
        revised_after_reveal: bool,
    ) -> None:
        self.labels += 1
        self.revisions_after_reveal += revised_after_reveal
        if gold_label is not None:
            self.gold_seen += 1
            self.gold_correct += label == gold_label
        if task is None:
            return
        if task.planted:
            self.planted_seen += 1
            self.planted_caught += task.changed
        else:
            self.prelabel_seen += 1
            self.prelabel_changed += task.changed

    @property
    def gold_accuracy(self) -> float | None:
        return self.gold_correct / self.gold_seen if self.gold_seen else None

    @property
    def gold_catch_rate(self) -> float | None:
        return self.planted_caught / self.planted_seen if self.planted_seen else None

    @property
    def correction_rate(self) -> float | None:
        return self.prelabel_changed / self.prelabel_seen if self.prelabel_seen else None

    def catch_rate_below(self, rate: float = 0.5) -> float:
        """Posterior probability (uniform prior) that the true catch rate is below ``rate``."""
        return float(
            beta.cdf(rate, 1 + self.planted_caught, 1 + self.planted_seen - self.planted_caught)
        )

    def summary(self, model_error_rate: float) -> dict[str, Any]:
        correction = self.correction_rate
        return {
            "labels": self.labels,
            "gold_seen": self.gold_seen,
            "gold_accuracy": self.gold_accuracy,
            "planted_seen": self.planted_seen,
            "gold_catch_rate": self.gold_catch_rate,
            "p_catch_rate_below_half": self.catch_rate_below(0.5),
            "prelabel_seen": self.prelabel_seen,
            "correction_rate": correction,
            "model_error_rate": model_error_rate,
            "correction_to_error_ratio": (
                correction / model_error_rate
                if correction is not None and model_error_rate > 0
                else None
            ),
            "revisions_after_reveal": self.revisions_after_reveal,
        }
