"""Pool-based active-learning benchmark for the scorer's query strategies.

Fixed protocol, identical for every strategy so differences come from the
query rule alone:

* per seed, a stratified 70/30 pool/test split; a StandardScaler fitted on
  the pool;
* the same 20 class-balanced initial labels (``seed_batch``) for every
  strategy;
* batches of 10 up to 400 labels (or the whole pool if it is smaller);
* the learner is refitted from scratch each round: ``LogisticRegression``
  (lbfgs, C=1, max_iter=1000), no warm start;
* committees are 5 stratified-bootstrap clones of the same learner.

Run with ``python -c "from bench.al import main; print(main())"``.
"""

from __future__ import annotations

import multiprocessing as mp
import os
import sys
import time
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np
from numpy.typing import NDArray
from sklearn.datasets import load_breast_cancer, load_digits
from sklearn.linear_model import LogisticRegression
from sklearn.model_selection import train_test_split
from sklearn.preprocessing import StandardScaler

from services.scorer.selection import seed_batch, select_batch
from services.scorer.strategies import (
    COMMITTEE_STRATEGIES,
    bagged_committee,
    committee_proba,
    get_strategy,
    random_scores,
)

INITIAL_LABELS = 20
BATCH_SIZE = 10
MAX_LABELS = 400
COMMITTEE_SIZE = 5
CHECKPOINTS = (50, 100, 200, 400)
BOOTSTRAP_RESAMPLES = 2000
MAX_WORKERS = 2

# Diversity plans look at the SHORTLIST_FACTOR * batch most uncertain pool items.
# 2 was chosen on development seeds 100-119 (disjoint from the reported seeds)
# out of {2, 3, 5, 10}; the library default of 10 is kept as a sensitivity row.
SHORTLIST_FACTOR = 2

# benchmark name -> (scoring strategy, diversity method, shortlist factor)
PLANS: dict[str, tuple[str, str | None, int | None]] = {
    "random": ("random", None, None),
    "least_confidence": ("least_confidence", None, None),
    "margin": ("margin", None, None),
    "entropy": ("entropy", None, None),
    "vote_entropy": ("vote_entropy", None, None),
    "consensus_kl": ("consensus_kl", None, None),
    "margin+kmeanspp": ("margin", "kmeanspp", SHORTLIST_FACTOR),
    "margin+coreset": ("margin", "coreset", SHORTLIST_FACTOR),
    "entropy+kmeanspp": ("entropy", "kmeanspp", SHORTLIST_FACTOR),
    "entropy+coreset": ("entropy", "coreset", SHORTLIST_FACTOR),
    "margin+kmeanspp@10k": ("margin", "kmeanspp", 10),
    "margin+coreset@10k": ("margin", "coreset", 10),
}

# dataset -> (loader, labels at which random's accuracy becomes the target)
DATASETS = {
    "digits": (load_digits, 400),
    "breast_cancer": (load_breast_cancer, 200),
}


def _learner() -> LogisticRegression:
    return LogisticRegression(C=1.0, solver="lbfgs", max_iter=1000)


@dataclass(frozen=True)
class SeedRun:
    dataset: str
    seed: int
    label_counts: NDArray[np.int_]
    accuracy: dict[str, NDArray[np.float64]]  # plan name -> accuracy per label count


def _run_plan(
    plan: str,
    X_pool: NDArray[np.float64],
    y_pool: NDArray[np.int_],
    X_test: NDArray[np.float64],
    y_test: NDArray[np.int_],
    initial: NDArray[np.intp],
    seed: int,
    max_labels: int,
) -> tuple[list[int], list[float]]:
    strategy, diversity, shortlist_factor = PLANS[plan]
    score = get_strategy(strategy)
    labeled = list(initial)
    counts: list[int] = []
    accuracy: list[float] = []
    for round_ in range(max_labels):
        model = _learner().fit(X_pool[labeled], y_pool[labeled])
        counts.append(len(labeled))
        accuracy.append(float(model.score(X_test, y_test)))
        if len(labeled) >= max_labels:
            break
        round_seed = [seed, round_]
        if strategy in COMMITTEE_STRATEGIES:
            members = bagged_committee(
                _learner(),
                X_pool[labeled],
                y_pool[labeled],
                n_members=COMMITTEE_SIZE,
                seed=seed * 1_000 + round_,
            )
            scores = score(committee_proba(members, X_pool))
        elif score is random_scores:
            scores = random_scores(X_pool, rng=np.random.default_rng(round_seed))
        else:
            scores = score(model.predict_proba(X_pool))
        batch = select_batch(
            scores,
            min(BATCH_SIZE, max_labels - len(labeled)),
            features=X_pool,
            diversity=diversity,
            labeled=labeled,
            rng=np.random.default_rng([*round_seed, 1]),
            shortlist_factor=shortlist_factor or 10,
        )
        labeled.extend(batch.tolist())
    return counts, accuracy


def run_seed(dataset: str, seed: int) -> SeedRun:
    """All plans on one split; each plan starts from the same initial labels."""
    from threadpoolctl import threadpool_limits

    loader, _ = DATASETS[dataset]
    X, y = loader(return_X_y=True)
    X_pool, X_test, y_pool, y_test = train_test_split(
        X, y, test_size=0.3, stratify=y, random_state=seed
    )
    scaler = StandardScaler().fit(X_pool)
    X_pool, X_test = scaler.transform(X_pool), scaler.transform(X_test)
    initial = seed_batch(len(y_pool), INITIAL_LABELS, y_pool, rng=seed)
    max_labels = min(MAX_LABELS, len(y_pool))
    accuracy: dict[str, NDArray[np.float64]] = {}
    counts: list[int] = []
    with threadpool_limits(1):  # the parallelism is across seeds, not inside BLAS
        for plan in PLANS:
            started = time.perf_counter()
            counts, curve = _run_plan(
                plan, X_pool, y_pool, X_test, y_test, initial, seed, max_labels
            )
            accuracy[plan] = np.asarray(curve)
            print(
                f"[al] {dataset:13s} {plan:19s} seed={seed:2d} "
                f"acc@{counts[-1]}={curve[-1]:.4f} ({time.perf_counter() - started:.1f}s)",
                file=sys.stderr,
                flush=True,
            )
    return SeedRun(dataset, seed, np.asarray(counts), accuracy)


def _run_seed_task(task: tuple[str, int]) -> SeedRun:
    return run_seed(*task)


def _first_reach(label_counts: NDArray[np.int_], mean_curve: NDArray, target: float) -> float:
    """Labels at which the mean curve first reaches ``target``; inf if it never does."""
    reached = np.flatnonzero(mean_curve >= target - 1e-12)
    return float(label_counts[reached[0]]) if reached.size else float("inf")


def _crossings(
    label_counts: NDArray[np.int_],
    curves: dict[str, NDArray[np.float64]],  # plan -> seeds x label counts
    target_labels: int,
    rng: np.random.Generator,
) -> dict[str, tuple[float, float, float]]:
    """Point estimate and 2.5-97.5% seed-bootstrap range of the crossing per plan.

    Each resample redraws seeds with replacement, recomputes random's target
    from the same resampled seeds (paired), then each plan's mean curve and
    crossing.
    """
    target_col = int(np.searchsorted(label_counts, target_labels))
    n_seeds = curves["random"].shape[0]
    resamples = rng.integers(0, n_seeds, size=(BOOTSTRAP_RESAMPLES, n_seeds))
    result = {}
    random_target = curves["random"][:, target_col].mean()
    boot_targets = curves["random"][resamples, target_col].mean(axis=1)
    for plan, curve in curves.items():
        point = _first_reach(label_counts, curve.mean(axis=0), random_target)
        boot_means = curve[resamples].mean(axis=1)  # resamples x label counts
        boot = np.array(
            [
                _first_reach(label_counts, m, t)
                for m, t in zip(boot_means, boot_targets, strict=True)
            ]
        )
        low, high = np.quantile(boot, [0.025, 0.975], method="inverted_cdf")
        result[plan] = (point, float(low), float(high))
    return result


def _goal_lines(
    dataset: str, crossings: dict[str, tuple[float, float, float]], cap: int
) -> list[str]:
    """The digits goals: margin within 170 labels, something within 150."""
    if dataset != "digits":
        return []
    margin_point = crossings["margin"][0]
    best_plan = min(crossings, key=lambda plan: (crossings[plan][0], plan != "margin"))
    best_point = crossings[best_plan][0]
    tied = sorted(plan for plan, c in crossings.items() if c[0] == best_point)
    return [
        f"Goal check (digits): margin reaches random's 400-label accuracy at "
        f"{_fmt_labels(margin_point, cap)} labels (goal ≤ 170: "
        f"{'met' if margin_point <= 170 else 'NOT met'}); the best point estimate is "
        f"{_fmt_labels(best_point, cap)} labels ({', '.join(tied)}; aim ≤ 150: "
        f"{'met' if best_point <= 150 else 'not met'}). Bootstrap ranges overlap widely, so "
        "differences of 10-20 labels between the uncertainty strategies are within seed noise.",
        "",
    ]


def _fmt_labels(value: float, cap: int) -> str:
    return f">{cap}" if not np.isfinite(value) else f"{value:.0f}"


def _plot(
    per_dataset: dict[str, tuple[NDArray[np.int_], dict[str, NDArray[np.float64]], float]],
    path: Path,
) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, axes = plt.subplots(1, len(per_dataset), figsize=(7 * len(per_dataset), 5), squeeze=False)
    tab20 = plt.get_cmap("tab20").colors
    colors = tab20[::2] + tab20[1::2]  # ten strong hues first, then their light twins
    for ax, (dataset, (counts, curves, target)) in zip(axes[0], per_dataset.items(), strict=True):
        for color, (plan, curve) in zip(colors, curves.items(), strict=False):
            mean, sd = curve.mean(axis=0), curve.std(axis=0)
            style = "--" if "+" in plan else ("-" if plan != "random" else ":")
            width = 2.2 if plan == "random" else 1.4
            ax.plot(counts, mean, style, color=color, lw=width, label=plan)
            ax.fill_between(counts, mean - sd, mean + sd, color=color, alpha=0.08)
        ax.axhline(target, color="grey", lw=0.8, ls="-.")
        ax.set_title(f"{dataset} (band = ±1 s.d. over {curve.shape[0]} seeds)")
        ax.set_xlabel("labels")
        ax.set_ylabel("test accuracy")
        low = min(c.mean(axis=0)[counts >= 50].min() for c in curves.values())
        ax.set_ylim(low - 0.02, min(1.0, ax.get_ylim()[1]))
        ax.grid(alpha=0.3)
    axes[0][0].legend(fontsize=8, loc="lower right")
    fig.tight_layout()
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path, dpi=110)
    plt.close(fig)


def main(
    datasets: Sequence[str] = ("digits", "breast_cancer"),
    seeds: int = 10,
    out_dir: str | Path = Path(__file__).resolve().parent,
) -> str:
    """Run every plan on every dataset and seed; write the plot and table; return markdown."""
    started = time.perf_counter()
    out_dir = Path(out_dir)
    tasks = [(dataset, seed) for dataset in datasets for seed in range(seeds)]
    workers = max(1, min(MAX_WORKERS, os.cpu_count() or 1, len(tasks)))
    if workers > 1:
        with mp.get_context("fork").Pool(workers) as pool:
            runs = list(pool.imap_unordered(_run_seed_task, tasks))
    else:
        runs = [_run_seed_task(task) for task in tasks]
    runs.sort(key=lambda run: (run.dataset, run.seed))

    lines = [
        "# Active-learning benchmark",
        "",
        f"Protocol: {seeds} seeds per dataset; per seed a stratified 70/30 pool/test split, "
        "StandardScaler fitted on the pool, the same 20 class-balanced initial labels for "
        f"every strategy, batches of {BATCH_SIZE} up to {MAX_LABELS} labels (or the whole "
        "pool), LogisticRegression(lbfgs, C=1, max_iter=1000) refitted from scratch each "
        f"round. Committees: {COMMITTEE_SIZE} stratified-bootstrap clones of the same learner "
        "(used only to pick queries; accuracy is always the single learner's). Diversity "
        f"variants shortlist the {SHORTLIST_FACTOR}*batch most uncertain pool items (factor "
        "chosen on development seeds 100-119, disjoint from the reported seeds 0.."
        f"{seeds - 1}, among 2/3/5/10; `@10k` rows use the library default of 10*batch) and "
        "treat the labelled set as fixed anchors.",
        "",
        "*reach* = labels at which the seed-averaged curve first reaches the accuracy random "
        "sampling reaches at the target label count (lower is better); the range is the "
        f"2.5-97.5% percentile over {BOOTSTRAP_RESAMPLES} seed-bootstrap resamples (seeds "
        "resampled with replacement; random's target and each mean curve recomputed per "
        "resample). Accuracies are mean ± s.d. over seeds.",
        "",
    ]
    per_dataset = {}
    rng = np.random.default_rng(2024)
    for dataset in datasets:
        ds_runs = [run for run in runs if run.dataset == dataset]
        counts = ds_runs[0].label_counts
        curves = {plan: np.stack([run.accuracy[plan] for run in ds_runs]) for plan in PLANS}
        _, target_labels = DATASETS[dataset]
        target = float(curves["random"][:, np.searchsorted(counts, target_labels)].mean())
        crossings = _crossings(counts, curves, target_labels, rng)
        per_dataset[dataset] = (counts, curves, target)
        cap = int(counts[-1])
        columns = [c for c in CHECKPOINTS if c < cap] + [cap]
        lines += [
            f"## {dataset}",
            "",
            f"Labels {int(counts[0])} to {cap}; target = random's mean accuracy at "
            f"{target_labels} labels = **{target:.4f}**.",
            "",
            "| strategy | "
            + " | ".join(f"acc@{c}" for c in columns)
            + f" | reach {target:.4f} at | bootstrap 95% range |",
            "|---" * (len(columns) + 3) + "|",
        ]
        for plan, curve in curves.items():
            cells = []
            for c in columns:
                col = curve[:, np.searchsorted(counts, c)]
                cells.append(f"{col.mean():.4f} ± {col.std():.3f}")
            point, low, high = crossings[plan]
            lines.append(
                f"| {plan} | "
                + " | ".join(cells)
                + f" | {_fmt_labels(point, cap)} | "
                + f"{_fmt_labels(low, cap)}-{_fmt_labels(high, cap)} |"
            )
        lines.append("")
        lines += _goal_lines(dataset, crossings, cap)

    _plot(per_dataset, out_dir / "plots" / "al_curves.png")
    elapsed = time.perf_counter() - started
    lines += [
        f"Curves: `bench/plots/al_curves.png`. Runtime: {elapsed:.0f} s wall on "
        f"{workers} worker process(es) ({os.cpu_count()} CPUs, BLAS limited to 1 thread "
        "per worker).",
        "",
    ]
    report = "\n".join(lines)
    (out_dir / "results").mkdir(parents=True, exist_ok=True)
    (out_dir / "results" / "al.md").write_text(report)
    return report


if __name__ == "__main__":
    print(main())
