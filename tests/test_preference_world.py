"""The bundled preference example: its reviewers agree as stated and are biased as stated."""

from __future__ import annotations

import numpy as np

from loopwise.preference_world import Reviewer, World, agreement_at


def test_two_unbiased_reviewers_agree_as_often_as_the_world_says() -> None:
    world = World.make(seed=0, agreement=0.75)
    pairs = [pair for p in world.train for pair in p.pairs()]
    differences = np.array([a.quality - b.quality for a, b in pairs])
    assert abs(agreement_at(world.scale, differences) - 0.75) < 0.02  # the bisection's aim
    rng = np.random.default_rng(1)
    honest = Reviewer("h", 0.0)
    same = [world.judge(honest, a, b, rng) == world.judge(honest, a, b, rng)
            for a, b in pairs for _ in range(3)]
    # ~7,200 sampled pairs of judgments: 0.75 within 4 standard errors (0.02)
    assert abs(np.mean(same) - 0.75) < 4 * np.sqrt(0.75 * 0.25 / len(same)) + 0.02


def test_a_biased_reviewer_picks_the_first_shown_at_the_stated_extra_rate() -> None:
    world = World.make(seed=2)
    pairs = [pair for p in world.train for pair in p.pairs()]
    rng = np.random.default_rng(5)
    for bias in (0.0, 0.4):
        who = Reviewer("r", bias)
        firsts = []
        for a, b in pairs:
            first, second = (a, b) if rng.random() < 0.5 else (b, a)  # random order shown
            firsts.append(world.judge(who, first, second, rng) == 1)
        expected = bias + (1 - bias) * 0.5
        assert abs(np.mean(firsts) - expected) < 4 * np.sqrt(0.25 / len(firsts))


def test_the_bayes_ceiling_bounds_every_predictor() -> None:
    world = World.make(seed=1)
    truth = np.array([a.quality > b.quality for p in world.test for a, b in p.pairs()])
    # Predicting the better answer by its hidden quality is the Bayes rule (a tie is a
    # coin either way).
    assert abs(world.expected_accuracy(truth) - world.bayes_accuracy()) < 1e-12
    assert world.expected_accuracy(~truth) < 0.5 < world.bayes_accuracy() < 1.0
