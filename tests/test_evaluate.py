"""``loopwise evaluate review``: the simulated reviewers, the arms, and the report."""

from __future__ import annotations

import subprocess
import sys

import numpy as np
import pytest

from loopwise.evaluate import Reviewer, arms, draw, evaluate, render, run_arm


def test_simulated_reviewers_judge_or_defer_as_told():
    rng = np.random.default_rng(0)
    truth = rng.integers(0, 10, 5000)
    shown = (truth + 3) % 10
    assert (Reviewer(1.0).label(truth, None, 10, rng) == truth).all()
    assert (Reviewer(1.0, defer=1.0).label(truth, shown, 10, rng) == shown).all()
    wrong = Reviewer(0.0).label(truth, None, 10, rng)
    assert not (wrong == truth).any() and set(np.unique(wrong)) == set(range(10))
    mixed = Reviewer(0.9, defer=0.5).label(truth, shown, 10, rng)
    # Half kept unjudged, plus the few judged wrong into the same class (0.5 * 0.1 / 9).
    assert 0.48 < np.mean(mixed == shown) < 0.53
    assert 0.42 < np.mean(mixed == truth) < 0.48  # the other half: 90% right


@pytest.fixture(scope="module")
def small():
    return evaluate(seeds=2, rounds=4, budget=30, seed_labels=30)


def test_the_same_seed_gives_the_same_run():
    from sklearn.datasets import load_digits

    x, y = load_digits(return_X_y=True)
    arm = arms(0.9)[0]
    once, twice = (run_arm(arm, Reviewer(), x[:1000], y[:1000], x[1000:], y[1000:], seed=3,
                           seed_labels=30, rounds=2, budget=20) for _ in range(2))
    assert once == twice


def test_review_catches_errors_and_deferring_to_shown_guesses_does_not(small):
    _, fixed, shown, _, none = (a.name for a in arms(small.threshold))
    assert small.catch_rate(fixed) > 0.8
    assert small.catch_rate(shown) < small.catch_rate(fixed) - 0.2
    assert small.catch_rate(none) is None  # nothing reviewed


def test_the_calibrated_loop_auto_accepts_precisely_and_labels_better(small):
    calibrated, fixed, _, rand, none = (a.name for a in arms(small.threshold))

    def precision(arm: str) -> float:
        rows = small.final(arm)
        return sum(r.auto_correct for r in rows) / sum(r.auto_labels for r in rows)

    assert precision(calibrated) > precision(fixed)
    assert precision(calibrated) > 0.9  # (98% targeted, against reviewers who err 8%)
    for arm in (calibrated, rand):  # the same human budget
        assert [r.human_labels for r in small.final(arm)] == [30 + 4 * 30] * 2
    label_accuracy = {a: np.mean([r.label_accuracy for r in small.final(a)])
                      for a in (calibrated, none)}
    assert label_accuracy[calibrated] > label_accuracy[none] + 0.2
    assert all(r.threshold == 0.99 for r in small.results if r.arm == calibrated and r.round == 0)


def test_the_report_and_the_plot(small, tmp_path):
    text = render(small, "loopwise evaluate review", None)
    for arm in arms(small.threshold):
        assert f"| {arm.name} |" in text
    assert "paired by seed" in text and "seeds)" in text
    draw(small, tmp_path / "plot.png")
    assert (tmp_path / "plot.png").read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"


def test_the_command_prints_the_report_without_writing():
    done = subprocess.run([sys.executable, "-m", "loopwise", "evaluate", "review", "--no-write",
                           "--seeds", "1", "--rounds", "2"], capture_output=True, text=True,
                          timeout=120)
    assert done.returncode == 0, done.stderr
    assert "| random sampling, people only |" in done.stdout
    assert "[evaluate review] seed 1/1" in done.stderr  # progress
