"""``loopwise evaluate review``: does the loop's human review pay for itself?

An offline experiment on scikit-learn's bundled digits, with the platform's own
parts: the scorer's model (:func:`services.scorer.model.fit`), the router's
confidence routing (auto-accept at or above a threshold) and uncertainty ordering
(:func:`services.router.routing.margin`). Reviewers are simulated: right with a
given accuracy when they judge, and, when a pre-label is shown, keeping it
without judging with a given probability (automation bias). Each arm spends the
same human budget a round:

* **loop, blind**: confident predictions are auto-accepted, the most uncertain
  of the rest go to review, the reviewer does not see the model's guess;
* **loop, pre-labels shown**: the same, but the reviewer sees the guess and
  sometimes defers to it;
* **random sampling**: the classic baseline, random items labelled by people,
  nothing auto-accepted;
* **no review**: every prediction accepted as a label (self-training).

It measures what the mission asks: that review catches the model's errors
(the share of wrong model guesses among reviewed items that end up correctly
labelled), the accuracy of the resulting training labels, and the held-out
accuracy of the model trained on them, per round, over several seeds.
"""

from __future__ import annotations

import statistics
import sys
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Literal

import numpy as np

ROOT = Path(__file__).resolve().parents[1]
REPORT = ROOT / "EVALUATION.md"
PLOT = ROOT / "bench" / "plots" / "evaluate_review.png"


@dataclass(frozen=True)
class Reviewer:
    """A simulated reviewer: ``accuracy`` when judging; ``defer``: the chance of keeping
    a shown pre-label without judging it (automation bias)."""

    accuracy: float = 0.92
    defer: float = 0.0

    def label(self, truth: np.ndarray, shown: np.ndarray | None, n_classes: int,
              rng: np.random.Generator) -> np.ndarray:
        """The labels given for items whose true classes are ``truth``."""
        n = len(truth)
        wrong = (truth + rng.integers(1, n_classes, n)) % n_classes  # a uniform wrong class
        judged = np.where(rng.random(n) < self.accuracy, truth, wrong)
        if shown is None:
            return judged
        return np.where(rng.random(n) < self.defer, shown, judged)


@dataclass(frozen=True)
class Arm:
    name: str
    pick: Literal["uncertain", "random", "none"]
    auto_accept: float | None  # auto-accept at or above this confidence; None: never
    prelabel: bool = False  # the reviewer sees the model's guess
    # Calibrate the threshold to this auto-accept precision from the reviews and audits so
    # far, as the router's target-precision policy does (``auto_accept`` until then).
    target_precision: float | None = None
    audit_share: float = 0.1  # of the budget, spent auditing would-be auto-accepts


def arms(threshold: float, target: float = 0.98) -> tuple[Arm, ...]:
    return (
        Arm(f"loop, blind review, threshold calibrated to {target:.0%} precision", "uncertain",
            0.99, target_precision=target),
        Arm(f"loop, blind review, fixed threshold {threshold:.2f}", "uncertain", threshold),
        Arm(f"loop, pre-labels shown, fixed threshold {threshold:.2f}", "uncertain", threshold,
            prelabel=True),
        Arm("random sampling, people only", "random", None),
        Arm("no review, every prediction accepted", "none", 0.0),
    )


@dataclass
class RoundResult:
    arm: str
    seed: int
    round: int
    human_labels: int
    auto_labels: int
    label_accuracy: float  # share of the training labels that are right
    test_accuracy: float  # held-out accuracy of the model trained on them
    reviewed_model_errors: int = 0  # reviewed items whose model guess was wrong...
    caught: int = 0  # ...and that ended up correctly labelled
    auto_correct: int = 0  # auto-accepted labels that were right
    threshold: float | None = None  # the auto-accept threshold the round used


def _probabilities(model, x: np.ndarray, n_classes: int) -> np.ndarray:
    """Class probabilities in class-index order, zero for classes the model has not seen."""
    out = np.zeros((len(x), n_classes))
    out[:, [int(c) for c in model.classes]] = model.predict_proba(x)
    return out


def run_arm(arm: Arm, reviewer: Reviewer, x_pool: np.ndarray, y_pool: np.ndarray,
            x_test: np.ndarray, y_test: np.ndarray, *, seed: int, seed_labels: int,
            rounds: int, budget: int) -> list[RoundResult]:
    """One arm on one seed: label a seed set, then ``rounds`` of predict, route, review,
    retrain. Pure apart from the model fits; the same seed gives the same results."""
    from services.scorer.model import fit

    n_classes = int(max(y_pool.max(), y_test.max())) + 1
    rng = np.random.default_rng(seed)
    labels = np.full(len(y_pool), -1)
    human = np.zeros(len(y_pool), dtype=bool)
    first = rng.choice(len(y_pool), seed_labels, replace=False)
    labels[first] = reviewer.label(y_pool[first], None, n_classes, rng)
    human[first] = True
    results: list[RoundResult] = []
    caught = reviewed_errors = auto_correct = 0
    # What the platform learns from reviews: (model confidence, did the reviewer agree,
    # weight); audits of would-be auto-accepts weigh 1 / the share audited.
    seen: list[tuple[float, bool, float]] = []
    threshold = arm.auto_accept
    for round_ in range(rounds + 1):
        known = np.flatnonzero(labels >= 0)
        model = fit(f"{arm.name}-{round_}", x_pool[known], labels[known].astype(str), "features")
        predicted = _probabilities(model, x_test, n_classes).argmax(axis=1)
        results.append(RoundResult(
            arm.name, seed, round_, int(human.sum()), int(len(known) - human.sum()),
            float(np.mean(labels[known] == y_pool[known])),
            float(np.mean(predicted == y_test)), reviewed_errors, caught, auto_correct,
            threshold))
        unlabeled = np.flatnonzero(labels < 0)
        if round_ == rounds or not len(unlabeled):
            continue
        probs = _probabilities(model, x_pool[unlabeled], n_classes)
        guess, confidence = probs.argmax(axis=1), probs.max(axis=1)
        if arm.target_precision is not None and seen:
            threshold = _calibrated(seen, arm)
        confident = (confidence >= threshold if threshold is not None
                     else np.zeros(len(unlabeled), dtype=bool))
        chosen = np.empty(0, dtype=np.int64)
        weights = np.empty(0)
        if arm.target_precision is not None and confident.any():  # audit some, blind
            n_audit = min(int(confident.sum()), max(1, round(budget * arm.audit_share)))
            audited = rng.choice(np.flatnonzero(confident), n_audit, replace=False)
            chosen = audited
            weights = np.full(n_audit, confident.sum() / n_audit)
            confident[audited] = False
        accepted = confident & (labels[unlabeled] < 0)
        labels[unlabeled[accepted]] = guess[accepted]
        auto_correct += int(np.sum(guess[accepted] == y_pool[unlabeled[accepted]]))
        rest = np.flatnonzero(~accepted & ~np.isin(np.arange(len(unlabeled)), chosen))
        room = budget - len(chosen)
        if arm.pick != "none" and len(rest) and room > 0:
            if arm.pick == "uncertain":  # smallest margin first, as the review queue orders
                top2 = np.sort(probs[rest], axis=1)[:, -2:]
                picked = rest[np.argsort(top2[:, 1] - top2[:, 0], kind="stable")[:room]]
            else:
                picked = rng.choice(rest, min(room, len(rest)), replace=False)
            chosen = np.concatenate([chosen, picked])
            weights = np.concatenate([weights, np.ones(len(picked))])
        if not len(chosen):
            continue
        items = unlabeled[chosen]
        shown = guess[chosen] if arm.prelabel else None
        given = reviewer.label(y_pool[items], shown, n_classes, rng)
        model_wrong = guess[chosen] != y_pool[items]
        reviewed_errors += int(model_wrong.sum())
        caught += int(np.sum(model_wrong & (given == y_pool[items])))
        seen += zip(confidence[chosen].tolist(), (given == guess[chosen]).tolist(),
                    weights.tolist(), strict=True)
        labels[items] = given
        human[items] = True
    return results


def _calibrated(seen: list[tuple[float, bool, float]], arm: Arm) -> float:
    """The router's estimate: the lowest threshold whose auto-accept precision has a 95%
    lower bound at or above the target (the conservative default until it can say)."""
    from services.router.thresholds import estimate_threshold

    conf, agreed, weight = (np.array(v, dtype=float) for v in zip(*seen, strict=True))
    assert arm.target_precision is not None and arm.auto_accept is not None
    return estimate_threshold(conf, agreed, weight, target=arm.target_precision,
                              default_threshold=arm.auto_accept).threshold


@dataclass
class Evaluation:
    threshold: float
    reviewer: Reviewer
    deferring: Reviewer
    seeds: int
    seed_labels: int
    rounds: int
    budget: int
    results: list[RoundResult] = field(default_factory=list)

    def final(self, arm: str) -> list[RoundResult]:
        return [r for r in self.results if r.arm == arm and r.round == self.rounds]

    def catch_rate(self, arm: str) -> float | None:
        rows = self.final(arm)
        errors = sum(r.reviewed_model_errors for r in rows)
        return sum(r.caught for r in rows) / errors if errors else None


def evaluate(*, seeds: int = 5, seed_labels: int = 30, rounds: int = 8, budget: int = 40,
             threshold: float = 0.9, accuracy: float = 0.92, defer: float = 0.5,
             progress: Callable[[str], None] | None = None) -> Evaluation:
    """Every arm on ``seeds`` splits of digits (60% pool, 40% held out)."""
    from sklearn.datasets import load_digits
    from sklearn.model_selection import train_test_split

    x, y = load_digits(return_X_y=True)
    reviewer = Reviewer(accuracy)
    deferring = Reviewer(accuracy, defer)
    out = Evaluation(threshold, reviewer, deferring, seeds, seed_labels, rounds, budget)
    for seed in range(seeds):
        x_pool, x_test, y_pool, y_test = train_test_split(
            x, y, test_size=0.4, random_state=seed, stratify=y)
        for arm in arms(threshold):
            if progress:
                progress(f"seed {seed + 1}/{seeds}: {arm.name}")
            out.results += run_arm(arm, deferring if arm.prelabel else reviewer, x_pool,
                                   y_pool, x_test, y_test, seed=seed, seed_labels=seed_labels,
                                   rounds=rounds, budget=budget)
    return out


# --------------------------------------------------------------------------- report


def _mean_sd(values: list[float]) -> str:
    if len(values) < 2:
        return f"{values[0]:.3f}" if values else "—"
    return f"{statistics.mean(values):.3f} ± {statistics.stdev(values):.3f}"


def _paired(ev: Evaluation, a: str, b: str) -> str:
    """The seed-paired difference in held-out accuracy, a minus b, and what it shows."""
    by_seed = {r.seed: r.test_accuracy for r in ev.final(b)}
    diffs = [r.test_accuracy - by_seed[r.seed] for r in ev.final(a)]
    mean = statistics.mean(diffs)
    se = statistics.stdev(diffs) / len(diffs) ** 0.5 if len(diffs) > 1 else float("inf")
    verdict = ("higher" if mean - 2 * se > 0 else "lower" if mean + 2 * se < 0
               else "no clear difference")
    wins = sum(d > 0 for d in diffs)
    return (f"{mean:+.3f} ± {2 * se:.3f} ({verdict}; higher in {wins} of {len(diffs)} "
            "seeds)")


def render(ev: Evaluation, command: str, plot: Path | None) -> str:
    from bench import report

    lines = [
        "## Review: does it pay for itself? (loopwise evaluate review)",
        "",
        *report.header(command, "scikit-learn's bundled digits, simulated reviewers."),
        "",
        f"{ev.seeds} seeds, each its own 60/40 split of digits (1,797 images, 10 classes); "
        f"{ev.seed_labels} seed labels by people, then {ev.rounds} rounds of: train the "
        "scorer's model (standardised logistic regression) on the labels so far, predict the "
        f"unlabelled pool, auto-accept predictions at or above {ev.threshold:.2f} confidence "
        f"(loop arms), and spend {ev.budget} human labels. Reviewers are right "
        f"{ev.reviewer.accuracy:.0%} of the time when they judge; shown a pre-label, the "
        f"deferring reviewer keeps it unjudged {ev.deferring.defer:.0%} of the time.",
        "",
        "| arm | human labels | auto labels | training labels right | held-out accuracy | "
        "model errors caught in review | auto-accepts right |",
        "|---|---:|---:|---:|---:|---:|---:|",
    ]
    for arm in arms(ev.threshold):
        rows = ev.final(arm.name)
        catch = ev.catch_rate(arm.name)
        auto = sum(r.auto_labels for r in rows)
        auto_right = sum(r.auto_correct for r in rows)
        lines.append(
            f"| {arm.name} | {statistics.mean(r.human_labels for r in rows):,.0f} | "
            f"{statistics.mean(r.auto_labels for r in rows):,.0f} | "
            f"{_mean_sd([r.label_accuracy for r in rows])} | "
            f"{_mean_sd([r.test_accuracy for r in rows])} | "
            f"{'—' if catch is None else f'{catch:.1%}'} | "
            f"{f'{auto_right / auto:.1%}' if auto else '—'} |")
    calibrated, fixed, shown, rand, none = (a.name for a in arms(ev.threshold))

    def humans(arm: str) -> float:
        return statistics.mean(r.human_labels for r in ev.final(arm))

    def precision(arm: str) -> str:
        rows = ev.final(arm)
        auto = sum(r.auto_labels for r in rows)
        return f"{sum(r.auto_correct for r in rows) / auto:.1%}" if auto else "—"

    lines += [
        "",
        "Means ± standard deviations over the seeds, after the last round; differences are "
        "paired by seed (same split), with ± two standard errors.",
        "",
        "- **Review catches the model's errors**: blind review corrected "
        + ", ".join(f"{ev.catch_rate(a):.0%} ({a})" for a in (calibrated, fixed)
                    if ev.catch_rate(a) is not None)
        + f" of the wrong model guesses sent to it; with the guess shown to a deferring "
        f"reviewer, {ev.catch_rate(shown):.0%}.",
        f"- **Auto-accept precision**: {precision(calibrated)} with the calibrated threshold, "
        f"{precision(fixed)} with the fixed one, {precision(none)} accepting everything.",
        f"- **Held-out accuracy, calibrated loop against random sampling**: "
        f"{_paired(ev, calibrated, rand)}, with {humans(calibrated):,.0f} and "
        f"{humans(rand):,.0f} human labels.",
        f"- **Calibrated loop against no review**: {_paired(ev, calibrated, none)}, with "
        f"{humans(calibrated):,.0f} and {humans(none):,.0f} human labels.",
        "",
    ]
    if plot is not None:
        lines += [f"![held-out accuracy by human labels]({plot.relative_to(ROOT)})", ""]
    return "\n".join(lines)


def draw(ev: Evaluation, path: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, (left, right) = plt.subplots(1, 2, figsize=(13, 5))
    for arm in arms(ev.threshold):
        rows = [r for r in ev.results if r.arm == arm.name]
        by_round = [[r for r in rows if r.round == k] for k in range(ev.rounds + 1)]
        humans = [statistics.mean(r.human_labels for r in rs) for rs in by_round]
        for ax, metric in ((left, "test_accuracy"), (right, "label_accuracy")):
            values = np.array([[getattr(r, metric) for r in rs] for rs in by_round])
            mean, sd = values.mean(axis=1), values.std(axis=1)
            x = humans if ax is left else list(range(ev.rounds + 1))
            ax.plot(x, mean, marker="o", label=arm.name)
            ax.fill_between(x, mean - sd, mean + sd, alpha=0.15)
    left.set(xlabel="human labels", ylabel="held-out accuracy",
             title="Model trained on the labels")
    right.set(xlabel="round", ylabel="share of training labels that are right",
              title="Training labels")
    left.legend(loc="lower right", fontsize=8)
    for ax in (left, right):
        ax.grid(alpha=0.3)
    fig.suptitle(f"digits, {ev.seeds} seeds (mean ± sd); reviewers {ev.reviewer.accuracy:.0%} "
                 f"accurate, deferring one keeps shown guesses {ev.deferring.defer:.0%}")
    fig.tight_layout()
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path, dpi=110)
    plt.close(fig)


def main(command: str, write: bool = True, **options: float) -> str:
    def say(message: str) -> None:
        print(f"[evaluate review] {message}", file=sys.stderr, flush=True)

    ev = evaluate(progress=say, **options)  # type: ignore[arg-type]
    plot = PLOT if write else None
    if plot is not None:
        draw(ev, plot)
    text = render(ev, command, plot)
    if write:
        from bench import report

        if not REPORT.exists():
            REPORT.write_text("# Evaluation\n\nWhat the loop achieves, measured by "
                              "`loopwise evaluate …`; speed and memory are in "
                              "BENCHMARKS.md.\n", encoding="utf-8")
        report.write_section("## Review: does it pay for itself?", text, REPORT)
    return text
