"""Does a project's review pay? Label error before and after each review stage, from the
stored label events alone (no I/O here).

Truth comes from two places the loop already keeps:

* **gold**: a gold task's label event carries the gold answer and the model's real
  guess for the item (``model_label``), so on gold items the error of the model, of
  each reviewer's first answer, of the consensus and of the adjudicated label is known;
* **audits**: an audited item (``audit_sample``) would have been auto-accepted; its
  blind human label is the reference for the auto label.

Stages, each compared with its own input on the same gold items (paired):

* ``model`` (before review): the model's guess;
* ``review``: each reviewer's first answer (a revision after the reveal does not count),
  against the model's guess, per mode (blind, prelabel, choice). Gold tasks with a
  planted pre-label are probes of the reviewer, not the queue: they count towards the
  catch rate, never towards a stage's error;
* ``consensus``: the consensus label against the first answer given on the item;
* ``adjudication``: the adjudicated label against the consensus (or the first answer).

The verdict per stage and mode is McNemar's exact test on the discordant pairs (errors
caught against errors introduced), two-sided at ``alpha``: "reduced label error",
"made labels worse" or "no measurable difference". A stage with no measurable effect is
reported as cost, with its human hours from ``duration_ms``.
"""

from __future__ import annotations

from collections import Counter, defaultdict
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from datetime import datetime
from typing import Any

from shared.stats import clopper_pearson, mcnemar_exact

__all__ = ["Paired", "evaluate_review", "interval", "verdict"]

HUMAN = {"human", "import"}
MODES = ("blind", "prelabel", "choice")
REDUCED, WORSE, NO_EFFECT = ("reduced label error", "made labels worse",
                             "no measurable difference")


def interval(k: int, n: int, level: float = 0.95) -> tuple[float, float] | None:
    """Exact (Clopper-Pearson) interval of a share ``k / n``; None without data."""
    return clopper_pearson(k, n, level)


@dataclass
class Paired:
    """One stage against its input on the same items: how many each got wrong."""

    n: int = 0
    errors_before: int = 0
    errors_after: int = 0
    caught: int = 0  # wrong before, right after
    introduced: int = 0  # right before, wrong after

    def add(self, before_right: bool, after_right: bool) -> None:
        self.n += 1
        self.errors_before += not before_right
        self.errors_after += not after_right
        self.caught += (not before_right) and after_right
        self.introduced += before_right and not after_right


def verdict(pairs: Paired, alpha: float = 0.05) -> dict[str, Any]:
    """McNemar's exact test: do errors caught outnumber errors introduced?"""
    p = mcnemar_exact(pairs.caught, pairs.introduced)
    if p < alpha and pairs.caught > pairs.introduced:
        outcome = REDUCED
    elif p < alpha and pairs.introduced > pairs.caught:
        outcome = WORSE
    else:
        outcome = NO_EFFECT
    return {"verdict": outcome, "test": "McNemar exact (two-sided)", "p_value": p,
            "alpha": alpha}


def _rate(k: int, n: int) -> dict[str, Any]:
    return {"errors": k, "n": n, "rate": k / n if n else None, "interval": interval(k, n)}


def _stage(pairs: Paired, hours: float, alpha: float) -> dict[str, Any]:
    result = {
        "items": pairs.n,
        "before": _rate(pairs.errors_before, pairs.n),
        "after": _rate(pairs.errors_after, pairs.n),
        "errors_caught": pairs.caught,
        "errors_introduced": pairs.introduced,
        "human_hours": round(hours, 6),
        **verdict(pairs, alpha),
    }
    if result["verdict"] == NO_EFFECT:
        result["cost"] = (f"{hours:.2f} human hours with no measurable effect on label "
                          f"error (p = {result['p_value']:.3g})")
    return result


def _hours(rows: Iterable[Mapping[str, Any]]) -> float:
    return sum(r.get("duration_ms") or 0 for r in rows) / 3_600_000


def _day(at: datetime) -> str:
    return at.date().isoformat()


def evaluate_review(rows: Iterable[Mapping[str, Any]], alpha: float = 0.05) -> dict[str, Any]:
    """The evaluation of one project's review from its stored label events.

    ``rows``: label events as the quality service stores them (item_id, labeler_id,
    label, source, mode, shown_prelabel, model_label, gold_label, planted_prelabel,
    audit_sample, duration_ms, guideline_version, supersedes, created_at).
    """
    rows = sorted(rows, key=lambda r: r["created_at"])
    by_item: dict[str, list[Mapping[str, Any]]] = defaultdict(list)
    for r in rows:
        by_item[r["item_id"]].append(r)

    gold: dict[str, str] = {}
    model: dict[str, str] = {}
    for r in rows:
        if r.get("gold_label") is not None:
            gold.setdefault(r["item_id"], r["gold_label"])
            if r.get("model_label") is not None:
                model.setdefault(r["item_id"], r["model_label"])

    first: list[Mapping[str, Any]] = []  # each reviewer's first answer on each item
    seen: set[tuple[str, str]] = set()
    for r in rows:
        if r["source"] in HUMAN and not r.get("supersedes"):
            key = (r["item_id"], r["labeler_id"])
            if key not in seen:
                seen.add(key)
                first.append(r)

    # --- before review: the model on gold, auto labels on audited items
    model_pairs = [(item, label == gold[item]) for item, label in model.items()]
    audits = Paired()
    for _item, events in by_item.items():
        auto = [r for r in events if r["source"] == "auto"]
        audit = [r for r in events if r["source"] in HUMAN and r.get("audit_sample")]
        if auto and audit:
            audits.add(auto[-1]["label"] == audit[0]["label"], True)
    before = {
        "model_on_gold": _rate(sum(not ok for _, ok in model_pairs), len(model_pairs)),
        "auto_labels_on_audits": _rate(audits.errors_before, audits.n),
    }

    # --- single review, per mode, against the model's guess
    stages: dict[str, dict[str, Any]] = {}
    review_pairs: dict[str, Paired] = defaultdict(Paired)
    review_rows: dict[str, list[Mapping[str, Any]]] = defaultdict(list)
    for r in first:
        if r["source"] != "human" or not r.get("mode"):
            continue  # imported labels: no review stage of this project made them
        mode = r["mode"]
        review_rows[mode].append(r)
        item = r["item_id"]
        if item in gold and item in model and not r.get("planted_prelabel"):
            review_pairs[mode].add(model[item] == gold[item], r["label"] == gold[item])
    for mode in sorted(set(review_pairs) | set(review_rows)):
        stages[f"review/{mode}"] = _stage(review_pairs[mode], _hours(review_rows[mode]), alpha)

    # --- consensus against the first answer; adjudication against consensus
    first_on_item: dict[str, Mapping[str, Any]] = {}
    extra_rows: dict[str, list[Mapping[str, Any]]] = defaultdict(list)
    for r in first:
        if r["item_id"] in first_on_item:
            extra_rows[first_on_item[r["item_id"]].get("mode") or "unknown"].append(r)
        else:
            first_on_item[r["item_id"]] = r
    consensus_pairs: dict[str, Paired] = defaultdict(Paired)
    adjudication_pairs: dict[str, Paired] = defaultdict(Paired)
    adjudication_rows: dict[str, list[Mapping[str, Any]]] = defaultdict(list)
    for item, events in by_item.items():
        head = first_on_item.get(item)
        if head is None:
            continue
        mode = head.get("mode") or "unknown"
        consensus = [r for r in events if r["source"] == "consensus"]
        adjudicated = [r for r in events if r["source"] == "adjudicated"]
        adjudication_rows[mode].extend(adjudicated)
        if item not in gold:
            continue
        truth = gold[item]
        if consensus:
            consensus_pairs[mode].add(head["label"] == truth, consensus[-1]["label"] == truth)
        if adjudicated:
            input_label = consensus[-1]["label"] if consensus else head["label"]
            adjudication_pairs[mode].add(input_label == truth, adjudicated[-1]["label"] == truth)
    for mode in sorted(set(consensus_pairs) | set(extra_rows)):
        stages[f"consensus/{mode}"] = _stage(consensus_pairs[mode], _hours(extra_rows[mode]),
                                             alpha)
    for mode in sorted(set(adjudication_pairs) | set(adjudication_rows)):
        if adjudication_rows[mode] or adjudication_pairs[mode].n:
            stages[f"adjudication/{mode}"] = _stage(
                adjudication_pairs[mode], _hours(adjudication_rows[mode]), alpha)

    return {
        "gold_items": len(gold),
        "audited_items": audits.n,
        "before_review": before,
        "stages": stages,
        "correction": _correction(first, model, gold),
        "over_time": _over_time(first),
        "labelers": _labelers(first, gold),
    }


def _correction(first: list[Mapping[str, Any]], model: Mapping[str, str],
                gold: Mapping[str, str]) -> dict[str, Any]:
    """Prelabel mode: how often reviewers changed the model's pre-label, next to how
    often the model is really wrong (on gold it was not planted on)."""
    shown = [r for r in first if r.get("mode") == "prelabel" and r.get("shown_prelabel")
             and not r.get("planted_prelabel")]
    changed = sum(r["label"] != r["shown_prelabel"] for r in shown)
    wrong = sum(model[i] != gold[i] for i in model)
    return {"correction_rate": _rate(changed, len(shown)),
            "model_error_rate": _rate(wrong, len(model))}


def _agreement(rows: list[Mapping[str, Any]]) -> dict[str, Any]:
    """Pairwise agreement between first answers on items with more than one."""
    on_item: dict[str, list[str]] = defaultdict(list)
    for r in rows:
        on_item[r["item_id"]].append(r["label"])
    agree = pairs = 0
    for labels in on_item.values():
        counts = Counter(labels)
        n = len(labels)
        pairs += n * (n - 1) // 2
        agree += sum(c * (c - 1) // 2 for c in counts.values())
    return {"agreeing_pairs": agree, "pairs": pairs,
            "agreement": agree / pairs if pairs else None}


def _catch(rows: list[Mapping[str, Any]]) -> dict[str, Any]:
    planted = [r for r in rows if r.get("planted_prelabel") and r.get("shown_prelabel")]
    caught = sum(r["label"] != r["shown_prelabel"] for r in planted)
    return {"caught": caught, "planted": len(planted),
            "catch_rate": caught / len(planted) if planted else None,
            "interval": interval(caught, len(planted))}


def _over_time(first: list[Mapping[str, Any]]) -> dict[str, Any]:
    by_day: dict[str, list[Mapping[str, Any]]] = defaultdict(list)
    by_version: dict[str, list[Mapping[str, Any]]] = defaultdict(list)
    for r in first:
        by_day[_day(r["created_at"])].append(r)
        by_version[r.get("guideline_version") or "unversioned"].append(r)
    return {
        "by_day": [{"day": d, **_agreement(rs), "gold_catch": _catch(rs)}
                   for d, rs in sorted(by_day.items())],
        "by_guideline_version": [{"guideline_version": v, **_agreement(rs),
                                  "gold_catch": _catch(rs)}
                                 for v, rs in sorted(by_version.items())],
    }


def _labelers(first: list[Mapping[str, Any]], gold: Mapping[str, str]) -> dict[str, Any]:
    by_labeler: dict[str, list[Mapping[str, Any]]] = defaultdict(list)
    for r in first:
        by_labeler[r["labeler_id"]].append(r)
    result = {}
    for who, rs in sorted(by_labeler.items()):
        on_gold = [r for r in rs if r["item_id"] in gold]
        right = sum(r["label"] == gold[r["item_id"]] for r in on_gold)
        shown = [r for r in rs if r.get("mode") == "prelabel" and r.get("shown_prelabel")
                 and not r.get("planted_prelabel")]
        changed = sum(r["label"] != r["shown_prelabel"] for r in shown)
        result[who] = {
            "labels": len(rs),
            "gold_accuracy": {"right": right, "n": len(on_gold),
                              "rate": right / len(on_gold) if on_gold else None,
                              "interval": interval(right, len(on_gold))},
            "gold_catch": _catch(rs),
            "correction_rate": changed / len(shown) if shown else None,
            "human_hours": round(_hours(rs), 6),
        }
    return result
