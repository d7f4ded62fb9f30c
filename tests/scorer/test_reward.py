"""The Bradley-Terry reward model and the pair selector, on the bundled world's known truth."""

from __future__ import annotations

import numpy as np
import pytest
from scipy import sparse

from loopwise.preference_world import World
from services.scorer.pair_selection import pair_uncertainty, random_pairs, select_pairs
from services.scorer.reward import (
    dumps,
    fit_reward,
    held_out_accuracy,
    loads,
    pairwise_accuracy,
)


def _truth_pairs(prompts):
    chosen, rejected, ids = [], [], []
    for p in prompts:
        for a, b in p.pairs():
            if a.quality != b.quality:
                win, lose = (a, b) if a.quality > b.quality else (b, a)
                chosen.append(win.text)
                rejected.append(lose.text)
                ids.append(p.prompt_id)
    return chosen, rejected, ids


def test_the_fit_is_symmetric_and_learns_which_words_win() -> None:
    chosen = [f"good answer {i} with an example" for i in range(20)]
    rejected = [f"rude answer {i} obviously trivial" for i in range(20)]
    model = fit_reward("t", chosen, rejected)
    p = model.prefer(["an example here"], ["obviously trivial"])
    assert p[0] > 0.5
    assert model.prefer(["obviously trivial"], ["an example here"])[0] == pytest.approx(1 - p[0])
    assert pairwise_accuracy(model, chosen, rejected) == 1.0


def test_the_reward_model_orders_held_out_answers_as_their_hidden_quality() -> None:
    world = World.make(seed=3, train_prompts=150, test_prompts=50)
    chosen, rejected, _ = _truth_pairs(world.train)
    model = fit_reward("t", chosen, rejected)
    test_chosen, test_rejected, _ = _truth_pairs(world.test)
    # Noise-free preferences: the quality is a linear function of the traits' sentences.
    assert pairwise_accuracy(model, test_chosen, test_rejected) > 0.9


def test_held_out_accuracy_keeps_a_prompts_pairs_on_one_side() -> None:
    world = World.make(seed=4, train_prompts=60, test_prompts=10)
    chosen, rejected, ids = _truth_pairs(world.train)
    accuracy = held_out_accuracy(chosen, rejected, ids)
    assert accuracy is not None and 0.7 < accuracy <= 1.0
    assert held_out_accuracy(chosen[:5], rejected[:5], ids[:5]) is None  # under 10 prompts


def test_a_model_survives_its_round_trip() -> None:
    model = fit_reward("t-r1", ["a good one"] * 3, ["a bad one"] * 3)
    again = loads("t-r1", dumps(model))
    assert np.allclose(again.score(["good", "bad"]), model.score(["good", "bad"]))


def test_uncertainty_is_highest_where_the_model_cannot_tell() -> None:
    assert pair_uncertainty([0.5, 0.75, 0.25, 1.0, 0.0]).tolist() == [1.0, 0.5, 0.5, 0.0, 0.0]


def test_selection_takes_the_least_sure_pairs_one_a_prompt_and_not_alike() -> None:
    scores = [0.9, 0.95, 0.5, 0.8, 0.1]
    prompts = ["p1", "p1", "p2", "p3", "p4"]
    assert select_pairs(scores, 3, prompts) == [1, 3, 2]  # pair 0 shares p1 with pair 1
    same = sparse.csr_matrix(np.array([[1, 0], [0, 1], [0, 1], [1, 1], [1, 0]], float))
    # pair 3's difference is unlike pair 1's; pair 2's is the same direction: skipped.
    assert select_pairs(scores, 3, prompts, same, max_similarity=0.9) == [1, 3, 4]
    # Diversity never leaves a batch short: the best skipped fill it.
    assert sorted(select_pairs(scores, 5, prompts, same)) == [0, 1, 2, 3, 4]


def test_random_pairs_are_distinct_and_reproducible() -> None:
    a = random_pairs(100, 30, np.random.default_rng(1))
    assert len(set(a)) == 30 and a == random_pairs(100, 30, np.random.default_rng(1))
