"""The reward model's use cases in the scorer: train it on the stored preferences, and
choose which pairs reviewers compare next.

The preferences are the labels service's facts: they are read through its TRL export
(every counted preference of the head, a reverted reviewer's left out), never its
tables. A trained model is a new version in ``reward_models`` with its held-out pairwise
accuracy; pair selection publishes ``loopwise:comparisons`` events whose ``priority``
is the model's uncertainty, so the router serves the least sure pairs first.
"""

from __future__ import annotations

import asyncio
import itertools
from dataclasses import dataclass
from typing import Any, Literal

import numpy as np

from shared import streams
from shared.events import Candidate, ComparisonEvent, stable_id
from shared.logs import get_logger
from shared.service import Runtime

from . import store
from .pair_selection import pair_uncertainty, random_pairs, select_pairs
from .reward import fit_reward, held_out_accuracy, vectorizer

log = get_logger(__name__)
Strategy = Literal["active", "random"]


class NotEnoughPreferences(ValueError):
    """No counted preference gives a (chosen, rejected) pair yet."""


@dataclass(frozen=True)
class PromptCandidates:
    """A prompt and its candidate outputs, from which pairs are drawn."""

    prompt_id: str
    prompt: str
    candidates: list[Candidate]


async def train_reward(runtime: Runtime, lock: asyncio.Lock, project: str) -> dict[str, Any]:
    """Fit a Bradley-Terry reward model on every counted preference; a new version."""
    async with lock:
        pairs = await runtime.peers.get_jsonl("labels", f"/v1/projects/{project}/export",
                                              format="trl")
        if not pairs:
            raise NotEnoughPreferences(
                f"project {project!r} has no preference with a better candidate yet "
                "(ties and 'both bad' give no pair)")
        chosen = [p["chosen"] for p in pairs]
        rejected = [p["rejected"] for p in pairs]
        prompts = [p["prompt"] for p in pairs]
        async with runtime.engine.begin() as conn:
            version = await store.next_reward_version(conn, project)
        model = await asyncio.to_thread(fit_reward, version, chosen, rejected)
        accuracy = await asyncio.to_thread(held_out_accuracy, chosen, rejected, prompts)
        model_metrics = {"kind": "bradley-terry", "pairs": len(pairs),
                         "prompts": len(set(prompts)),
                         "held_out_pairwise_accuracy": accuracy,
                         "training_pairwise_accuracy": float(np.mean(
                             model.score(chosen) > model.score(rejected)))}
        async with runtime.engine.begin() as conn:
            await store.save_reward_model(conn, project, model, len(pairs), model_metrics)
        log.info("reward model trained", project=project, version=version, pairs=len(pairs),
                 held_out=accuracy)
        return {"version": version, "pair_count": len(pairs), "metrics": model_metrics}


def comparison_id(prompt_id: str, a: Candidate, b: Candidate) -> str:
    """The id of the comparison of two candidates of a prompt (the router's task key)."""
    return f"{prompt_id}:{a.candidate_id}:{b.candidate_id}"


async def select_comparisons(runtime: Runtime, project: str, pool: list[PromptCandidates],
                             budget: int, strategy: Strategy, seed: int | None = None,
                             exclude: frozenset[str] = frozenset()) -> dict[str, Any]:
    """Choose ``budget`` candidate pairs of the pool for review and queue them: the ones
    the newest reward model is least sure of (one pair a prompt, diverse), or random
    ones (also when there is no reward model yet: nothing to be unsure with). Pairs
    whose comparison id is in ``exclude`` (already compared) are not chosen."""
    pairs = [(p, a, b) for p in pool for a, b in itertools.combinations(p.candidates, 2)
             if comparison_id(p.prompt_id, a, b) not in exclude]
    if not pairs:
        raise ValueError("the pool holds no pair: give prompts with two or more candidates")
    async with runtime.engine.connect() as conn:
        model = await store.latest_reward_model(conn, project)
    used = "random" if model is None or strategy == "random" else "active"
    if used == "random":
        order = random_pairs(len(pairs), budget, np.random.default_rng(seed))
        priorities = [0.0] * len(order)
    else:
        assert model is not None
        a_texts = [a.text for _, a, _ in pairs]
        b_texts = [b.text for _, _, b in pairs]
        uncertainty = pair_uncertainty(model.prefer(a_texts, b_texts))
        v = vectorizer()
        differences = (v.transform(a_texts) - v.transform(b_texts)).tocsr()
        order = select_pairs(uncertainty, budget, [p.prompt_id for p, _, _ in pairs],
                             differences)
        priorities = [float(uncertainty[i]) for i in order]
    events = []
    for i, priority in zip(order, priorities, strict=True):
        prompt, a, b = pairs[i]
        cid = comparison_id(prompt.prompt_id, a, b)
        events.append(ComparisonEvent(
            event_id=stable_id("comparison", project, cid), project=project,
            comparison_id=cid, prompt=prompt.prompt, candidates=[a, b], priority=priority))
    await runtime.bus.publish(streams.COMPARISONS, events)
    return {"project": project, "strategy": used,
            "reward_model": model.version if model else None,
            "selected": [{"comparison_id": e.comparison_id, "priority": e.priority}
                         for e in events], "pool_pairs": len(pairs)}
