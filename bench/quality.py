"""Quality benchmarks: Dawid-Skene against crowd-kit, and the rubber-stamp detector.

1. A simulated crowd: 200,000 items x 3 labels, 5 classes, 40 labelers of mixed
   quality (good, noisy, spammers, class-biased). Our vectorised Dawid-Skene and
   crowd-kit's ``DawidSkene`` run on the same labels in the same process; the
   table gives wall time and accuracy against the hidden truth (majority vote for
   reference).
2. A rubber-stamp simulation: every task shows a pre-label (model accuracy 85%),
   5% of tasks are gold and half the gold pre-labels are planted wrong; honest
   reviewers judge, rubber-stampers accept 97% of pre-labels. Over many runs it
   reports how many tasks it takes to flag a rubber-stamper and how many honest
   reviewers are flagged within 2,000 tasks, for the detector of
   :mod:`services.quality.detection` exactly as the service runs it (the model's
   error rate estimated from the gold seen so far, cautiously).

Run with ``loopwise bench quality`` (crowd-kit: ``pip install -e '.[bench]'``).
"""

from __future__ import annotations

import math
import time
from dataclasses import dataclass
from typing import Any

import numpy as np
from scipy.stats import beta

from bench import report
from services.quality.agreement import Triples
from services.quality.consensus import DawidSkene, MajorityVote
from services.quality.detection import DeferenceTest, Evidence, first_crossing

SECTION = "## Quality (loopwise bench quality)"

N_CLASSES = 5
KINDS = {"good": 16, "noisy": 12, "spammer": 6, "class-biased": 6}
# More crowds for the speed comparison (issue 16 item 3): (mix, labels per item). The
# reference-shaped one is where crowd-kit converges in a few iterations (6 at 200k).
CROWDS: dict[str, tuple[dict[str, int] | None, int]] = {
    "benchmark (16 good, 12 noisy, 6 spammers, 6 class-biased), 3 labels": (None, 3),
    "reference-shaped (30 good, 4 noisy, 3 spammers, 3 class-biased), 5 labels": (
        {"good": 30, "noisy": 4, "spammer": 3, "class-biased": 3}, 5),
    "even (10 of each kind), 3 labels": (
        {"good": 10, "noisy": 10, "spammer": 10, "class-biased": 10}, 3),
}


# --------------------------------------------------------------------------- crowd


@dataclass
class Crowd:
    item: np.ndarray
    labeler: np.ndarray
    label: np.ndarray
    truth: np.ndarray
    kinds: list[str]
    errors: np.ndarray  # labelers x true x given, as simulated


def confusion_matrices(
    rng: np.random.Generator, mix: dict[str, int] | None = None
) -> tuple[np.ndarray, list[str]]:
    """labelers x true x given probabilities for the four kinds of labeler."""
    k = N_CLASSES
    matrices, kinds = [], []
    for kind, count in (mix or KINDS).items():
        for _ in range(count):
            if kind == "good":
                acc = rng.uniform(0.85, 0.95)
                m = np.full((k, k), (1 - acc) / (k - 1))
                np.fill_diagonal(m, acc)
            elif kind == "noisy":
                acc = rng.uniform(0.45, 0.65)
                m = np.full((k, k), (1 - acc) / (k - 1))
                np.fill_diagonal(m, acc)
            elif kind == "spammer":
                if rng.random() < 0.5:
                    m = np.full((k, k), 1.0 / k)  # answers at random
                else:
                    m = np.zeros((k, k))
                    m[:, rng.integers(k)] = 1.0  # always the same answer
            else:  # class-biased: good, but sees one class as another most of the time
                acc = rng.uniform(0.8, 0.9)
                m = np.full((k, k), (1 - acc) / (k - 1))
                np.fill_diagonal(m, acc)
                source = rng.integers(k)
                target = (source + 1 + rng.integers(k - 1)) % k
                m[source] = 0.05 / (k - 2)
                m[source, target] = 0.75
                m[source, source] = 0.20
                m[source] /= m[source].sum()
            matrices.append(m)
            kinds.append(kind)
    return np.stack(matrices), kinds


def simulate_crowd(n_items: int, per_item: int = 3, seed: int = 0,
                   mix: dict[str, int] | None = None) -> Crowd:
    rng = np.random.default_rng(seed)
    errors, kinds = confusion_matrices(rng, mix)
    n_labelers = len(kinds)
    truth = rng.choice(N_CLASSES, size=n_items, p=[0.3, 0.25, 0.2, 0.15, 0.1])
    # per_item distinct labelers per item, in chunks to bound memory.
    chosen = np.empty((n_items, per_item), dtype=np.intp)
    for start in range(0, n_items, 50_000):
        stop = min(start + 50_000, n_items)
        chosen[start:stop] = np.argsort(rng.random((stop - start, n_labelers)), axis=1)[
            :, :per_item
        ]
    item = np.repeat(np.arange(n_items), per_item)
    labeler = chosen.ravel()
    cumulative = errors.cumsum(axis=2)[labeler, truth[item]]
    label = (rng.random(len(item))[:, None] > cumulative).sum(axis=1).clip(0, N_CLASSES - 1)
    return Crowd(item, labeler, label, truth, kinds, errors)


def run_aggregators(crowd: Crowd, repeats: int = 3) -> dict[str, Any]:
    triples = Triples(crowd.item, crowd.labeler, crowd.label)
    results: dict[str, Any] = {}

    def timed(fit):
        best, out = math.inf, None
        for _ in range(repeats):
            started = time.perf_counter()
            out = fit()
            best = min(best, time.perf_counter() - started)
        return best, out

    seconds, mv = timed(lambda: MajorityVote().fit(triples))
    results["majority vote (loopwise)"] = {
        "seconds": seconds,
        "accuracy": float(np.mean(mv.probas_.argmax(axis=1) == crowd.truth)),
    }
    seconds, ds = timed(lambda: DawidSkene().fit(triples))
    results["Dawid-Skene (loopwise)"] = {
        "seconds": seconds,
        "accuracy": float(np.mean(ds.probas_.argmax(axis=1) == crowd.truth)),
        "iterations": ds.n_iter_,
    }
    try:
        import pandas as pd
        from crowdkit.aggregation import DawidSkene as CrowdKitDawidSkene
    except ImportError:
        results["Dawid-Skene (crowd-kit)"] = {
            "missing": "crowd-kit is not installed: pip install -e '.[bench]'"
        }
        return results
    frame = pd.DataFrame({"task": crowd.item, "worker": crowd.labeler, "label": crowd.label})
    ck_repeats = max(1, repeats - 2)
    best, ck = math.inf, None
    for _ in range(ck_repeats):
        started = time.perf_counter()
        model = CrowdKitDawidSkene(n_iter=100)
        ck = model.fit_predict(frame)
        best = min(best, time.perf_counter() - started)
    predicted = ck.sort_index().to_numpy()
    results["Dawid-Skene (crowd-kit)"] = {
        "seconds": best,
        "accuracy": float(np.mean(predicted == crowd.truth)),
        "iterations": len(getattr(model, "loss_history_", [])) or None,
    }
    return results


# --------------------------------------------------------------------------- rubber-stamp


@dataclass(frozen=True)
class StampSetup:
    runs: int = 200
    tasks: int = 2000
    honest: int = 20
    stampers: int = 5
    model_accuracy: float = 0.85
    gold_share: float = 0.05
    planted_share_of_gold: float = 0.5
    stamper_accept: float = 0.97
    honest_accuracy: tuple[float, float] = (0.85, 0.97)
    seed: int = 1


def simulate_reviews(
    setup: StampSetup, rng: np.random.Generator
) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
    """One run: planted/changed per (reviewer, task), the error-rate estimate, who is honest."""
    n, t, k = setup.honest + setup.stampers, setup.tasks, N_CLASSES
    honest = np.arange(n) < setup.honest
    gold = rng.random((n, t)) < setup.gold_share
    planted = gold & (rng.random((n, t)) < setup.planted_share_of_gold)
    truth = rng.integers(k, size=(n, t))
    model_right = rng.random((n, t)) < setup.model_accuracy
    model_label = np.where(model_right, truth, (truth + rng.integers(1, k, (n, t))) % k)
    planted_label = (truth + rng.integers(1, k, (n, t))) % k
    shown = np.where(planted, planted_label, model_label)
    accuracy = rng.uniform(*setup.honest_accuracy, size=(n, 1))
    judged = np.where(
        rng.random((n, t)) < accuracy, truth, (truth + rng.integers(1, k, (n, t))) % k
    )
    stamped = np.where(
        rng.random((n, t)) < setup.stamper_accept, shown, (shown + rng.integers(1, k, (n, t))) % k
    )
    given = np.where(honest[:, None], judged, stamped)
    changed = given != shown
    # The service's estimate: gold tasks seen so far, model label against gold label.
    checked = np.cumsum(gold.sum(axis=0))
    errors = np.cumsum((gold & ~model_right).sum(axis=0))
    # Evidence at task j uses the gold seen before it.
    checked = np.concatenate([[0], checked[:-1]])
    errors = np.concatenate([[0], errors[:-1]])
    error_rate = beta.ppf(0.1, 1 + errors, 4 + checked - errors)
    return planted, changed, np.broadcast_to(error_rate, (n, t)), honest


def rubber_stamp(setup: StampSetup, thresholds: list[float]) -> dict[str, Any]:
    rng = np.random.default_rng(setup.seed)
    base = DeferenceTest()
    outcomes: dict[str, dict[float, list[np.ndarray]]] = {"combined": {}, "gold only": {}}
    for _ in range(setup.runs):
        planted, changed, error_rate, honest = simulate_reviews(setup, rng)
        llr, _ = base.llr(np.where(planted, Evidence.KNOWN_WRONG, Evidence.ORDINARY),
                          changed, error_rate)
        for variant, steps in (("combined", llr), ("gold only", np.where(planted, llr, 0.0))):
            for h in thresholds:
                crossed, _ = first_crossing(steps, h)
                outcomes[variant].setdefault(h, []).append(
                    np.stack([crossed, honest.astype(np.intp)])
                )
    table = []
    for variant, by_h in outcomes.items():
        for h, parts in by_h.items():
            crossed, honest = np.concatenate(parts, axis=1)
            honest = honest.astype(bool)
            stamper_tasks = crossed[~honest]
            caught = stamper_tasks >= 0
            table.append(
                {
                    "evidence": variant,
                    "threshold": h,
                    "false_positive_rate": float(np.mean(crossed[honest] >= 0)),
                    "stampers_flagged": float(np.mean(caught)),
                    "median_tasks_to_flag": (
                        float(np.median(np.where(caught, stamper_tasks + 1, np.inf)))
                    ),
                    "p90_tasks_to_flag": float(
                        np.quantile(np.where(caught, stamper_tasks + 1, np.inf), 0.9)
                    ),
                }
            )
    return {"table": table, "floor": evidence_floor(setup)}


def evidence_floor(setup: StampSetup) -> dict[str, float]:
    """Fewest tasks any detector needs, from the information in one task.

    Lorden: a change detector whose false alarms come no more often than once in
    ``ARL`` tasks needs on average at least ``log(ARL) / KL`` tasks to detect, KL the
    per-task divergence between a rubber-stamper and the honest reviewer closest to
    one (the most accurate, who changes the fewest pre-labels). ARL = tasks /
    false-positive rate = 2000 / 0.01.
    """
    k, e = N_CLASSES, 1 - setup.model_accuracy
    a = setup.honest_accuracy[1]
    stamp_change = 1 - setup.stamper_accept
    honest_planted = 1 - (1 - a) / (k - 1)
    honest_ordinary = e * (1 - (1 - a) / (k - 1)) + (1 - e) * (1 - a)

    def kl(p: float, q: float) -> float:
        return p * math.log(p / q) + (1 - p) * math.log((1 - p) / (1 - q))

    planted = setup.gold_share * setup.planted_share_of_gold
    per_task = planted * kl(stamp_change, honest_planted) + (1 - planted) * kl(
        stamp_change, honest_ordinary
    )
    per_task_gold_only = planted * kl(stamp_change, honest_planted)
    arl = math.log(setup.tasks / 0.01)
    return {
        "kl_per_task": per_task,
        "min_tasks": arl / per_task,
        "kl_per_task_gold_only": per_task_gold_only,
        "min_tasks_gold_only": arl / per_task_gold_only,
    }


# --------------------------------------------------------------------------- report


def accuracy_across_crowds(n_items: int, seeds: tuple[int, ...] = (1, 2, 3)) -> list[dict]:
    """Ours vs crowd-kit on more simulated crowds: one crowd cannot tell a few items of
    difference from noise."""
    rows = []
    for seed in seeds:
        crowd = simulate_crowd(n_items, seed=seed)
        result = run_aggregators(crowd, repeats=1)
        ours = result["Dawid-Skene (loopwise)"]
        theirs = result.get("Dawid-Skene (crowd-kit)", {})
        if "accuracy" not in theirs:
            return []
        rows.append({"seed": seed, "ours": ours["accuracy"], "theirs": theirs["accuracy"],
                     "items": round((ours["accuracy"] - theirs["accuracy"]) * n_items)})
    return rows


def speed_across_crowds(n_items: int) -> list[dict[str, Any]]:
    """Ours vs crowd-kit, time and accuracy, on each crowd shape of ``CROWDS``."""
    rows = []
    for name, (mix, per_item) in CROWDS.items():
        crowd = simulate_crowd(n_items, per_item=per_item, seed=0, mix=mix)
        result = run_aggregators(crowd, repeats=3)
        ours, theirs = result["Dawid-Skene (loopwise)"], result.get("Dawid-Skene (crowd-kit)", {})
        if "accuracy" not in theirs:
            return []
        rows.append({"crowd": name, "ours": ours, "theirs": theirs,
                     "items": round((ours["accuracy"] - theirs["accuracy"]) * n_items)})
    return rows


def run(n_items: int = 200_000, runs: int = 200, write: bool = True, scale: bool = True,
        huge: bool = False) -> str:
    from bench import quality_scale

    crowd = simulate_crowd(n_items)
    aggregators = run_aggregators(crowd)
    aggregators["_more_crowds"] = accuracy_across_crowds(n_items)
    aggregators["_shapes"] = speed_across_crowds(n_items)
    setup = StampSetup(runs=runs)
    default_h = DeferenceTest().threshold
    thresholds = sorted({4.0, 6.0, 8.0, round(default_h, 2)})
    stamps = rubber_stamp(setup, thresholds)
    extra: list[str] = []
    if scale:
        extra += ["", *quality_scale.render_latency(quality_scale.settle_latency()),
                  "", *quality_scale.render_memory(quality_scale.memory())]
    if huge:
        extra += ["", *quality_scale.render_huge(quality_scale.huge())]
    text = render(n_items, crowd, aggregators, setup, stamps, default_h, extra,
                  command=f"loopwise bench quality --items {n_items} --runs {runs}"
                  + ("" if scale else " --no-scale") + (" --huge" if huge else ""))
    if write:
        write_section(text)
    return text


def render(
    n_items: int,
    crowd: Crowd,
    aggregators: dict[str, Any],
    setup: StampSetup,
    stamps: dict[str, Any],
    default_h: float,
    extra: list[str] | None = None,
    command: str | None = None,
) -> str:
    lines = [
        SECTION,
        "",
        *report.header(command or f"loopwise bench quality --items {n_items} --runs "
                       f"{setup.runs}", f"NumPy {np.__version__}; best of repeated runs."),
        "",
        f"### Dawid-Skene on a simulated crowd ({n_items:,} items x 3 labels, "
        f"{N_CLASSES} classes, {len(crowd.kinds)} labelers: "
        + ", ".join(f"{n} {kind}" for kind, n in KINDS.items())
        + ")",
        "",
        "| aggregator | wall time (s) | accuracy vs truth | EM iterations |",
        "|---|---:|---:|---:|",
    ]
    more = aggregators.pop("_more_crowds", [])
    shapes = aggregators.pop("_shapes", [])
    for name, r in aggregators.items():
        if "missing" in r:
            lines.append(f"| {name} | — | — | {r['missing']} |")
            continue
        lines.append(
            f"| {name} | {r['seconds']:.2f} | {r['accuracy']:.5f} | {r.get('iterations') or '—'} |"
        )
    ours = aggregators["Dawid-Skene (loopwise)"]
    theirs = aggregators.get("Dawid-Skene (crowd-kit)", {})
    if "seconds" in theirs:
        lines += [
            "",
            f"loopwise's Dawid-Skene is **{theirs['seconds'] / ours['seconds']:.1f}x faster** "
            f"than crowd-kit's, accuracy {ours['accuracy']:.5f} vs {theirs['accuracy']:.5f} "
            f"({round((ours['accuracy'] - theirs['accuracy']) * n_items):+d} items of "
            f"{n_items:,}).",
        ]
    if more:
        first = round((ours["accuracy"] - theirs["accuracy"]) * n_items)
        lines += [
            "",
            "The same comparison on three more simulated crowds (other seeds), to tell a few "
            "items from noise:",
            "",
            "| crowd seed | loopwise | crowd-kit | difference (items) |",
            "|---:|---:|---:|---:|",
            *(f"| {r['seed']} | {r['ours']:.5f} | {r['theirs']:.5f} | {r['items']:+d} |"
              for r in more),
            "",
            f"Over all four crowds loopwise differs from crowd-kit by "
            f"{sum(r['items'] for r in more) + first:+d} "
            f"items in {(len(more) + 1) * n_items:,}.",
        ]
    if shapes:
        lines += [
            "",
            f"Speed on three crowd shapes ({n_items:,} items each, seed 0; loopwise best of "
            "3 fits, crowd-kit 1; both stop on their own rule: crowd-kit's ELBO gain per "
            "label < 1e-5, loopwise's log-likelihood change per label <= 1e-9, see "
            "`DawidSkene`'s docstring):",
            "",
            "| crowd | loopwise (s) | crowd-kit (s) | speed-up | EM iterations (loopwise / "
            "crowd-kit) | accuracy loopwise | accuracy crowd-kit | difference (items) |",
            "|---|---:|---:|---:|---:|---:|---:|---:|",
            *(f"| {r['crowd']} | {r['ours']['seconds']:.2f} | {r['theirs']['seconds']:.2f} | "
              f"**{r['theirs']['seconds'] / r['ours']['seconds']:.1f}x** | "
              f"{r['ours']['iterations']} / {r['theirs']['iterations']} | "
              f"{r['ours']['accuracy']:.5f} | {r['theirs']['accuracy']:.5f} | "
              f"{r['items']:+d} |" for r in shapes),
            "",
            f"Slowest speed-up "
            f"{min(r['theirs']['seconds'] / r['ours']['seconds'] for r in shapes):.1f}x "
            f"(goal >= 5x); largest accuracy gap {max(abs(r['items']) for r in shapes)} items "
            f"in {n_items:,} (goal <= 5).",
        ]
    floor = stamps["floor"]
    test = DeferenceTest()
    lines += [
        "",
        f"### Rubber-stamp detection ({setup.runs} runs x ({setup.honest} honest + "
        f"{setup.stampers} rubber-stampers) x {setup.tasks:,} tasks)",
        "",
        f"Every task pre-labelled; model accuracy {setup.model_accuracy:.0%}; "
        f"{setup.gold_share:.0%} gold, half of it with a planted wrong pre-label; honest "
        f"reviewers judge with accuracy U{setup.honest_accuracy}; rubber-stampers accept "
        f"{setup.stamper_accept:.0%} of pre-labels. The model's error rate is estimated "
        "from the gold seen so far (10% posterior quantile), as the service does. "
        "Evidence `combined` = planted gold + correction rate on ordinary pre-labels; "
        "`gold only` = planted gold alone.",
        "",
        "| evidence | CUSUM threshold | honest flagged within 2,000 tasks | stampers flagged "
        "| median tasks to flag | p90 tasks to flag |",
        "|---|---:|---:|---:|---:|---:|",
    ]
    for row in stamps["table"]:
        mark = " (default)" if abs(row["threshold"] - default_h) < 0.01 else ""
        lines.append(
            f"| {row['evidence']} | {row['threshold']:.2f}{mark} | "
            f"{row['false_positive_rate']:.2%} | {row['stampers_flagged']:.1%} | "
            f"{row['median_tasks_to_flag']:.0f} | {row['p90_tasks_to_flag']:.0f} |"
        )
    lines += [
        "",
        f"What the evidence allows: one task carries at most {floor['kl_per_task']:.3f} nats "
        "(KL divergence between a rubber-stamper and the most accurate honest reviewer, "
        "who changes the fewest pre-labels and so looks most like one); Lorden's bound then "
        "puts any detector with at most one "
        f"false alarm in {setup.tasks:,}/0.01 tasks at >= "
        f"**{floor['min_tasks']:.0f} tasks** on average "
        f"({floor['min_tasks_gold_only']:.0f} with planted gold alone). That floor assumes "
        "the detector knows each honest reviewer's accuracy; the default test assumes "
        f"only that an honest reviewer keeps at most {test.honest_deference:.0%} of "
        "pre-labels without judging them (so corrects at least "
        f"{1 - test.honest_deference:.0%} as many as the model gets wrong, and catches at "
        f"least {1 - test.honest_deference:.0%} of planted ones), and its threshold "
        f"log(2000/0.005) = {default_h:.2f} guarantees the false-positive rate for *any* "
        "such reviewer, not just the simulated ones. (This table is the full-deference "
        "test alone; `loopwise bench review` measures both tests together.)",
        "",
        f"Reproduce: `loopwise bench quality` (items={n_items}, runs={setup.runs}).",
        *(extra or []),
        "",
    ]
    return "\n".join(lines)


def write_section(text: str) -> None:
    report.write_section(SECTION, text)


if __name__ == "__main__":
    print(run())
