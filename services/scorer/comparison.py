"""Did the loop's labels make a better model? The loop's model refitted against baselines
from the same stored data and the same labeling budget, scored on held-out gold (no I/O).

Each arm is a training sequence of (item, label), refitted with the scorer's own
pipeline (:func:`services.scorer.model.build_pipeline`), and judged on the project's gold
items, which are never in any arm's training set:

* ``loop``: the item's current label as the labels service decides it (consensus,
  adjudication, review, import; auto labels left out, as the scorer trains), items in
  the order the loop labeled them (the time of each item's first non-auto label);
* ``random_sampling``: the same items and labels in random order, several seeds: at a
  budget below the full one, a random sample of the human-labeled items of that size;
* ``single_unreviewed``: the same items in the same order, each with its first human
  answer (or its import), before overlap, consensus, adjudication or a revision: what one
  unreviewed label an item would have given;
* ``auto_only``: the model's own auto-accepted labels, in the order they came.

The budget is the number of labeled items the loop's model trains on. The learning
curve refits every arm at growing budgets; the headline compares the arms at the full
budget, paired on the same gold items with McNemar's exact test, and the loop's order
against random order by the area under the learning curve (mean over the curve's
points) with a t interval over the seeds.
"""

from __future__ import annotations

import random
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass
from datetime import datetime
from typing import Any

import numpy as np
from scipy.stats import t as student_t

from shared.events import NONE_OF_THESE
from shared.stats import clopper_pearson, mcnemar_exact

from .model import build_pipeline

__all__ = ["BETTER", "NO_DIFFERENCE", "WORSE", "Arms", "arms_of", "compare"]

HUMAN = {"human", "import"}
BETTER, WORSE, NO_DIFFERENCE = ("the loop's labels made a better model",
                                "the loop's labels made a worse model",
                                "no measurable difference")
ALPHA = 0.05


@dataclass
class Arms:
    """The training sequences, each a list of (item id, label) in training order."""

    loop: list[tuple[str, str]]
    single_unreviewed: list[tuple[str, str]]
    auto_only: list[tuple[str, str]]


def _at(value: datetime | str) -> datetime:
    return value if isinstance(value, datetime) else datetime.fromisoformat(value)


def arms_of(events: Iterable[Mapping[str, Any]], current: Mapping[str, str],
            gold: Mapping[str, str], known: Iterable[str]) -> Arms:
    """The arms from the label history (``events``: every counting label event, with
    item_id, label, source, supersedes, created_at, event_id), the current non-auto labels
    (``current``: item -> label), the gold answers and the items whose inputs are stored."""
    usable = set(known) - set(gold)
    ordered = sorted(events, key=lambda e: (_at(e["created_at"]), str(e.get("event_id"))))
    first_labeled: dict[str, int] = {}  # item -> position of its first non-auto label
    first_answer: dict[str, str] = {}
    auto: dict[str, str] = {}
    auto_order: dict[str, int] = {}
    for position, e in enumerate(ordered):
        item = e["item_id"]
        if item not in usable or e["label"] == NONE_OF_THESE:
            continue
        if e["source"] == "auto":
            auto[item] = e["label"]  # its newest auto label
            auto_order.setdefault(item, position)
            continue
        first_labeled.setdefault(item, position)
        if e["source"] in HUMAN and not e.get("supersedes"):
            first_answer.setdefault(item, e["label"])
    loop_items = sorted((i for i in current if i in usable and current[i] != NONE_OF_THESE),
                        key=lambda i: (first_labeled.get(i, len(ordered)), i))
    return Arms(
        loop=[(i, current[i]) for i in loop_items],
        single_unreviewed=[(i, first_answer[i]) for i in loop_items if i in first_answer],
        auto_only=[(i, auto[i]) for i in sorted(auto, key=auto_order.__getitem__)],
    )


def budgets_of(n: int, points: int) -> list[int]:
    """``points`` budgets evenly spaced up to ``n`` (fewer when ``n`` is small)."""
    return sorted({max(1, round(n * (k + 1) / points)) for k in range(points)}) if n else []


class _Judge:
    """Fits the scorer's pipeline on a training sequence and scores it on gold."""

    def __init__(self, inputs: Mapping[str, Any], gold: Mapping[str, str], kind: str) -> None:
        self.inputs, self.kind = inputs, kind
        self._fitted: dict[tuple[tuple[str, str], ...], np.ndarray | None] = {}
        self.gold_ids = sorted(i for i in gold if i in inputs)
        self.truth = np.asarray([gold[i] for i in self.gold_ids], dtype=object)
        self.x_gold = self._x(self.gold_ids)

    def _x(self, ids: Sequence[str]) -> Any:
        rows = [self.inputs[i] for i in ids]
        return rows if self.kind == "text" else np.asarray(rows, dtype=np.float64)

    def right(self, train: Sequence[tuple[str, str]]) -> np.ndarray | None:
        """Which gold items the model fitted on ``train`` gets right; None when the
        sequence has fewer than two classes (nothing to fit)."""
        key = tuple(train)
        if key not in self._fitted:  # the curve's last point is the headline's fit
            self._fitted[key] = self._fit(train)
        return self._fitted[key]

    def _fit(self, train: Sequence[tuple[str, str]]) -> np.ndarray | None:
        labels = [label for _, label in train]
        if len(set(labels)) < 2 or not self.gold_ids:
            return None
        pipeline = build_pipeline(self.kind)
        pipeline.fit(self._x([i for i, _ in train]), np.asarray(labels, dtype=object))
        return np.asarray(pipeline.predict(self.x_gold) == self.truth, dtype=bool)


def _accuracy(right: np.ndarray | None) -> dict[str, Any] | None:
    if right is None:
        return None
    k, n = int(right.sum()), len(right)
    return {"right": k, "n": n, "rate": k / n, "interval": clopper_pearson(k, n)}


def _versus(loop: np.ndarray | None, arm: np.ndarray | None) -> dict[str, Any] | None:
    """The loop's model against an arm's on the same gold items (McNemar, exact)."""
    if loop is None or arm is None:
        return None
    loop_only = int((loop & ~arm).sum())
    arm_only = int((arm & ~loop).sum())
    p = mcnemar_exact(loop_only, arm_only)
    if p < ALPHA and loop_only > arm_only:
        outcome = BETTER
    elif p < ALPHA and arm_only > loop_only:
        outcome = WORSE
    else:
        outcome = NO_DIFFERENCE
    return {"loop_right_only": loop_only, "baseline_right_only": arm_only, "p_value": p,
            "test": "McNemar exact (two-sided)", "alpha": ALPHA, "verdict": outcome}


def _mean_interval(values: Sequence[float], level: float = 0.95
                   ) -> tuple[float, tuple[float, float] | None]:
    """Mean and t interval of the mean (None with fewer than two values)."""
    arr = np.asarray(values, dtype=np.float64)
    mean = float(arr.mean())
    if len(arr) < 2:
        return mean, None
    half = float(student_t.ppf(0.5 + level / 2, len(arr) - 1) * arr.std(ddof=1)
                 / np.sqrt(len(arr)))
    return mean, (mean - half, mean + half)


def _rate(right: np.ndarray | None) -> float | None:
    return None if right is None else float(right.mean())


def compare(arms: Arms, inputs: Mapping[str, Any], gold: Mapping[str, str], kind: str, *,
            points: int = 6, seeds: int = 3) -> dict[str, Any]:
    """The arms refitted and judged on held-out gold: learning curves and the headline at
    the full budget. ``inputs``: item -> features (or text) the scorer stores."""
    judge = _Judge(inputs, gold, kind)
    n = len(arms.loop)
    if not judge.gold_ids:
        return {"available": False, "reason": "no gold item with stored inputs to judge on"}
    if len({label for _, label in arms.loop}) < 2:
        return {"available": False,
                "reason": f"the loop's labels cover {n} items in fewer than two classes"}
    budgets = budgets_of(n, points)
    curve: dict[str, list[float | None]] = {"loop": [], "single_unreviewed": [],
                                            "auto_only": []}
    by_seed: list[list[float | None]] = [[] for _ in range(seeds)]
    orders = []
    for s in range(seeds):
        order = list(arms.loop)
        random.Random(s).shuffle(order)
        orders.append(order)
    for b in budgets:
        curve["loop"].append(_rate(judge.right(arms.loop[:b])))
        curve["single_unreviewed"].append(_rate(judge.right(arms.single_unreviewed[:b])))
        curve["auto_only"].append(_rate(judge.right(arms.auto_only[:b]))
                                  if len(arms.auto_only) >= b else None)
        for s, order in enumerate(orders):
            by_seed[s].append(_rate(judge.right(order[:b])))
    random_points: list[dict[str, Any] | None] = []
    for k in range(len(budgets)):
        values = [v for seed in by_seed if (v := seed[k]) is not None]
        if values:
            mean, iv = _mean_interval(values)
            random_points.append({"mean": mean, "interval": iv, "seeds": len(values)})
        else:
            random_points.append(None)

    loop_right = judge.right(arms.loop)
    single_right = judge.right(arms.single_unreviewed)
    auto_budget = min(n, len(arms.auto_only))
    auto_right = judge.right(arms.auto_only[:auto_budget])
    headline: dict[str, Any] = {
        "loop": {"labels": n, "accuracy": _accuracy(loop_right)},
        "single_unreviewed": {"labels": len(arms.single_unreviewed),
                              "accuracy": _accuracy(single_right),
                              "versus_loop": _versus(loop_right, single_right)},
        "auto_only": {"labels": auto_budget, "available_auto_labels": len(arms.auto_only),
                      "accuracy": _accuracy(auto_right),
                      "versus_loop": _versus(loop_right, auto_right)},
        "random_sampling": _order_versus_random(curve["loop"], by_seed),
    }
    return {
        "available": True,
        "kind": kind,
        "budget": n,
        "gold_items": len(judge.gold_ids),
        "held_out": "gold items are in no arm's training set",
        "arms": headline,
        "curves": {"budgets": budgets, **curve, "random_sampling": random_points},
    }


def _order_versus_random(loop: Sequence[float | None], by_seed: Sequence[Sequence[float | None]]
                         ) -> dict[str, Any]:
    """Area under the learning curve (mean accuracy over its points): the loop's order
    against random orders of the same labels, with a t interval over the seeds."""
    keep = [k for k, v in enumerate(loop) if v is not None
            and all(seed[k] is not None for seed in by_seed)]
    if not keep or not by_seed:
        return {"seeds": len(by_seed), "area_under_curve": None, "verdict": NO_DIFFERENCE}

    def area(curve: Sequence[float | None]) -> float:
        return float(np.mean([v for k, v in enumerate(curve) if k in keep and v is not None]))

    loop_area = area(loop)
    areas = [area(seed) for seed in by_seed]
    mean, iv = _mean_interval(areas)
    diff_mean, diff_iv = _mean_interval([loop_area - a for a in areas])
    if diff_iv is not None and diff_iv[0] > 0:
        outcome = "the loop's order learned faster than random order"
    elif diff_iv is not None and diff_iv[1] < 0:
        outcome = "the loop's order learned slower than random order"
    else:
        outcome = NO_DIFFERENCE
    return {"seeds": len(by_seed), "labels": "the loop's, in random order",
            "area_under_curve": {"loop": loop_area, "random_mean": mean, "interval": iv},
            "difference": {"mean": diff_mean, "interval": diff_iv},
            "test": "t interval over seeds of the area difference", "verdict": outcome}
