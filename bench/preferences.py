"""Preference benchmark: a Bradley-Terry reward model's held-out pairwise accuracy against
the number of comparisons, active pair selection against random (issue 15, item 6).

Protocol, the same for both selectors so differences come from the selection rule alone:

* per seed, the bundled world (loopwise.preference_world): 400 training prompts x 4
  candidates (a pool of 2,400 pairs), 100 held-out prompts (600 pairs); simulated
  reviewers at 75% pairwise agreement, two of ten with position bias 0.3 and 0.6; each
  pair is judged once, by a reviewer drawn at random, its candidates in a random order;
* the same 50 random first comparisons for both selectors, then batches of 25 up to
  ``budget`` (800); the reward model (services.scorer.reward) is refitted from scratch
  on all judgments before each batch;
* active: services.scorer.pair_selection.select_pairs on the model's uncertainty
  (at most one pair per prompt a batch, no two pairs whose feature differences have
  cosine > 0.9); random: services.scorer.pair_selection.random_pairs;
* accuracy: the expected share of held-out pairs on which the model agrees with an
  unbiased reviewer (exact under the simulation, no sampled test judgments), next to the
  Bayes accuracy ``E[max(p, 1 - p)]``, the most any model can reach.

Goal: active reaches random's accuracy at the full budget with at most half the
comparisons.
"""

from __future__ import annotations

import time
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from loopwise.preference_world import Prompt, World
from services.scorer.pair_selection import pair_uncertainty, random_pairs, select_pairs
from services.scorer.reward import fit_reward, vectorizer

INITIAL = 50
BATCH = 25
BUDGET = 800
SELECTORS = ("random", "active")
PLOT = Path(__file__).resolve().parent / "plots" / "preferences.png"


@dataclass
class Curve:
    seed: int
    selector: str
    n: list[int] = field(default_factory=list)
    accuracy: list[float] = field(default_factory=list)
    truth_accuracy: list[float] = field(default_factory=list)


def _pairs(prompts: list[Prompt]):
    return [(p.prompt_id, a, b) for p in prompts for a, b in p.pairs()]


def run_seed(seed: int, selector: str, budget: int = BUDGET) -> tuple[Curve, float]:
    """One learning curve; with the Bayes accuracy of the seed's held-out pairs."""
    world = World.make(seed)
    pool = _pairs(world.train)
    test = _pairs(world.test)
    test_a = [a.text for _, a, _ in test]
    test_b = [b.text for _, _, b in test]
    truth = np.array([a.quality - b.quality for _, a, b in test])
    judge_rng = np.random.default_rng(seed * 1000 + 7)
    pick_rng = np.random.default_rng(seed)
    picked = random_pairs(len(pool), INITIAL, pick_rng)
    chosen: list[str] = []
    rejected: list[str] = []
    vec = vectorizer()
    pool_diff = (vec.transform([a.text for _, a, _ in pool])
                 - vec.transform([b.text for _, _, b in pool])).tocsr()
    remaining = np.ones(len(pool), dtype=bool)
    curve = Curve(seed, selector)

    def judge(indices: list[int]) -> None:
        for i in indices:
            remaining[i] = False
            _, a, b = pool[i]
            first, second = (a, b) if judge_rng.random() < 0.5 else (b, a)
            reviewer = world.reviewers[int(judge_rng.integers(len(world.reviewers)))]
            better = world.judge(reviewer, first, second, judge_rng)
            win, lose = (first, second) if better == 1 else (second, first)
            chosen.append(win.text)
            rejected.append(lose.text)

    judge(picked)
    while True:
        model = fit_reward(f"bench-{seed}", chosen, rejected)
        prefers = model.prefer(test_a, test_b) > 0.5
        curve.n.append(len(chosen))
        curve.accuracy.append(world.expected_accuracy(prefers))
        decided = truth != 0
        curve.truth_accuracy.append(float(np.mean(prefers[decided] == (truth[decided] > 0))))
        if len(chosen) >= budget:
            return curve, world.bayes_accuracy()
        k = min(BATCH, budget - len(chosen))
        left = np.flatnonzero(remaining)
        if selector == "random":
            batch = [int(left[i]) for i in random_pairs(left.size, k, pick_rng)]
        else:
            p = model.prefer([pool[i][1].text for i in left], [pool[i][2].text for i in left])
            order = select_pairs(pair_uncertainty(p), k, [pool[i][0] for i in left],
                                 pool_diff[left])
            batch = [int(left[i]) for i in order]
        judge(batch)


def _needed(n: list[int], curve: np.ndarray, target: float) -> int | None:
    """The fewest comparisons at which ``curve`` reaches ``target``."""
    for x, y in zip(n, curve, strict=True):
        if y >= target:
            return x
    return None


def _plot(n: list[int], curves: dict[str, np.ndarray], bayes: float) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(7, 4.2))
    for selector, values in curves.items():
        mean = values.mean(axis=0)
        sd = values.std(axis=0)
        ax.plot(n, mean, label=f"{selector} (mean of {len(values)} seeds)")
        ax.fill_between(n, mean - sd, mean + sd, alpha=0.2)
    ax.axhline(bayes, color="k", linestyle="--", label=f"Bayes ceiling {bayes:.3f}")
    ax.set_xlabel("comparisons judged")
    ax.set_ylabel("held-out pairwise accuracy (vs an unbiased reviewer)")
    ax.set_title("Bradley-Terry reward model: active vs random pair selection")
    ax.legend(loc="lower right")
    ax.grid(alpha=0.3)
    PLOT.parent.mkdir(parents=True, exist_ok=True)
    fig.tight_layout()
    fig.savefig(PLOT, dpi=110)
    plt.close(fig)


def main(seeds: int = 5, budget: int = BUDGET, plot: bool = True) -> str:
    started = time.perf_counter()
    runs = {s: [run_seed(seed, s, budget) for seed in range(seeds)] for s in SELECTORS}
    n = runs["random"][0][0].n
    acc = {s: np.array([c.accuracy for c, _ in runs[s]]) for s in SELECTORS}
    truth = {s: np.array([c.truth_accuracy for c, _ in runs[s]]) for s in SELECTORS}
    bayes = np.array([b for _, b in runs["random"]])
    if plot:
        _plot(n, acc, float(bayes.mean()))
    target = float(acc["random"][:, -1].mean())
    needed = _needed(n, acc["active"].mean(axis=0), target)
    per_seed = [_needed(n, acc["active"][i], float(acc["random"][i, -1])) for i in range(seeds)]
    rows = ["| comparisons | random | active | active - random | vs truth: random | active |",
            "|---:|---:|---:|---:|---:|---:|"]
    for x in (50, 100, 200, 300, 400, 600, 800):
        if x in n and x <= budget:
            i = n.index(x)
            r, a = acc["random"][:, i], acc["active"][:, i]
            tr, ta = truth["random"][:, i].mean(), truth["active"][:, i].mean()
            rows.append(f"| {x} | {r.mean():.3f} ± {r.std():.3f} | {a.mean():.3f} ± "
                        f"{a.std():.3f} | {a.mean() - r.mean():+.3f} | {tr:.3f} | {ta:.3f} |")
    goal = budget // 2
    verdict = ("met" if needed is not None and needed <= goal else "missed")
    lines = [
        f"Seeds 0..{seeds - 1}; pool 2,400 pairs (400 prompts x 4 candidates), held-out "
        f"600 pairs (100 prompts); 50 random first comparisons, batches of 25 up to {budget}; "
        "reviewers at 75% agreement, 2 of 10 position-biased (0.3, 0.6). Accuracy: expected "
        "agreement with an unbiased reviewer on the held-out pairs (mean ± sd over seeds); "
        "'vs truth': the share of held-out pairs ordered as the hidden quality orders them.",
        "",
        f"Bayes ceiling (E[max(p, 1-p)] on the held-out pairs): {bayes.mean():.3f} "
        f"(seeds {bayes.min():.3f}-{bayes.max():.3f}).",
        "",
        *rows,
        "",
        f"Random at {budget}: {target:.3f}. Active reaches it (mean curve) at "
        f"{needed if needed is not None else 'never within the budget'} comparisons; goal "
        f"<= {goal}: **{verdict}**. Per seed (active reaching that seed's random@{budget}): "
        f"{', '.join(str(x) if x is not None else '-' for x in per_seed)}.",
        "",
        f"Run time {time.perf_counter() - started:.1f} s.",
    ]
    return "\n".join(lines)
