"""Choosing which unlabeled pool items people should label next."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import numpy as np
from numpy.typing import NDArray

from .model import build_pipeline
from .selection import score_pool_chunked, seed_batch, select_batch
from .strategies import COMMITTEE_STRATEGIES, bagged_committee


@dataclass(frozen=True)
class Selection:
    indices: NDArray[np.intp]
    scores: NDArray[np.float32]  # priority of each selected item, same order
    cold_start: bool


def choose(
    pool: NDArray[np.float32],
    budget: int,
    *,
    model: Any | None,
    strategy: str,
    diversity: str | None,
    train: tuple[NDArray[np.float64], NDArray[Any]] | None = None,
    seed: int = 0,
) -> Selection:
    """Score the pool with the strategy and pick a (diverse) batch of at most ``budget``.

    Without a model this is a cold start: a random seed batch, all at top priority.
    Committee strategies fit a bagged committee on ``train`` (the current labels).
    """
    if model is None:
        picked = seed_batch(len(pool), budget, rng=seed)
        return Selection(picked, np.ones(len(picked), dtype=np.float32), True)
    scorer: Any = model
    if strategy in COMMITTEE_STRATEGIES:
        if train is None:
            raise ValueError(f"strategy {strategy!r} needs the training labels for a committee")
        scorer = bagged_committee(build_pipeline("features"), train[0], train[1], seed=seed)
    scored = score_pool_chunked(scorer, pool, strategy, shortlist_size=budget * 10)
    picked = select_batch(scored.scores, budget, features=pool if diversity else None,
                          diversity=diversity, rng=seed)
    return Selection(picked, scored.scores[picked], False)
