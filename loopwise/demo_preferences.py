"""``loopwise demo --scenario preferences``: preference feedback end to end on the bundled
world with known truth (loopwise.preference_world).

The four services run as processes. The scorer's pair selector queues comparisons
(random at first: there is no reward model yet), simulated reviewers judge them over
HTTP two by two (overlap 2), the labels service stores the preferences, the scorer
trains a Bradley-Terry reward model on them; then the active selector queues the pairs
that model is least sure of, they are judged, and a second version is trained. Each
version is checked against the hidden quality on prompts it never saw, next to the
Bayes ceiling; the quality service's agreement and position-bias flags are checked
against the reviewers' known agreement and bias.
"""

from __future__ import annotations

import asyncio
import sys
import time
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any

import httpx
import numpy as np
import redis.asyncio as aioredis

from loopwise.preference_world import Prompt, World
from loopwise.processes import ServiceGroup
from shared import streams
from shared.auth import create_token
from shared.bus import group_drained
from shared.db import make_engine, upgrade
from shared.settings import Settings

SECTION = "## Preferences on the bundled world (loopwise demo --scenario preferences)"
ROUND = 150  # comparisons a round (each judged by two reviewers)


def _say(message: str) -> None:
    print(message, file=sys.stderr, flush=True)


@dataclass
class Round:
    strategy: str
    comparisons: int
    version: str
    held_out: float | None  # the scorer's own held-out pairwise accuracy
    vs_truth: float  # test prompts: pairs ordered as the hidden quality orders them
    vs_reviewer: float  # expected agreement with an unbiased reviewer on them


@dataclass
class PreferenceSummary:
    project: str
    bayes: float
    agreement_nominal: float
    rounds: list[Round] = field(default_factory=list)
    agreement: float | None = None
    flagged: list[str] = field(default_factory=list)
    biased: dict[str, float] = field(default_factory=dict)
    seconds: float = 0.0

    def render(self) -> str:
        lines = [f"loopwise demo --scenario preferences — project {self.project}",
                 "| round | selector | comparisons | reward model | its held-out accuracy | "
                 "vs hidden quality | vs an unbiased reviewer (Bayes "
                 f"{self.bayes:.3f}) |", "|---|---|---:|---|---:|---:|---:|"]
        for i, r in enumerate(self.rounds, 1):
            held = f"{r.held_out:.3f}" if r.held_out is not None else "—"
            lines.append(f"| {i} | {r.strategy} | {r.comparisons} | {r.version} | {held} | "
                         f"{r.vs_truth:.3f} | {r.vs_reviewer:.3f} |")
        agreement = f"{self.agreement:.3f}" if self.agreement is not None else "n/a"
        lines += ["", f"Agreement between the two reviewers of each pair (quality service): "
                      f"{agreement}; the simulation's unbiased reviewers agree "
                      f"{self.agreement_nominal:.2f} (biased ones lower it).",
                  "Position-biased reviewers (known): "
                  + ", ".join(f"{k} ({v:.0%} first-shown outright)" for k, v in
                              self.biased.items())
                  + f"; flagged by the quality service: {', '.join(self.flagged) or 'none'}.",
                  "The scorer's own held-out accuracy is measured against the reviewers' "
                  "noisy verdicts on its training pairs; after the active round those are "
                  "the pairs the model was least sure of, so it reads lower there while "
                  "the accuracy on fresh prompts rises.",
                  f"Run time {self.seconds:.0f} s."]
        return "\n".join(lines)


def _pool(prompts: list[Prompt]) -> list[dict[str, Any]]:
    return [{"prompt_id": p.prompt_id, "prompt": p.text,
             "candidates": [{"candidate_id": c.candidate_id, "text": c.text, "model": c.model}
                            for c in p.candidates]} for p in prompts]


async def _wait(predicate, timeout: float, what: str) -> None:
    deadline = time.monotonic() + timeout
    while not await predicate():
        if time.monotonic() > deadline:
            raise TimeoutError(f"timed out waiting for {what}")
        await asyncio.sleep(0.25)


async def _drained(redis: aioredis.Redis, *pairs: tuple[str, str]) -> None:
    async def done() -> bool:
        return all([await group_drained(redis, s, g) for s, g in pairs])

    await _wait(done, 120, f"{pairs} to drain")


async def _judge(settings: Settings, world: World, project: str, bearers: dict[str, str],
                 rng: np.random.Generator) -> int:
    """Every reviewer takes and judges comparisons, in turn, until none is left."""
    by_text = {c.text: c for p in world.train for c in p.candidates}
    reviewers = {r.name: r for r in world.reviewers}
    clients = {name: httpx.AsyncClient(base_url=settings.url_of("router"), timeout=60,
                                       headers={"Authorization": f"Bearer {b}"})
               for name, b in bearers.items()}
    judged = 0
    try:
        while True:
            took = 0
            for name, http in clients.items():
                got = await http.get(f"/v1/projects/{project}/comparisons/next")
                if got.status_code == 204:
                    continue
                if got.status_code == 423:  # paused by the quality service
                    continue
                got.raise_for_status()
                task = got.json()
                first, second = (by_text[c["text"]] for c in task["candidates"])
                pick = world.judge(reviewers[name], first, second, rng)
                done = await http.post(f"/v1/comparisons/{task['task_id']}/submit",
                                       json={"verdict": "better", "chosen": pick})
                done.raise_for_status()
                took += 1
            judged += took
            if not took:
                return judged
    finally:
        for http in clients.values():
            await http.aclose()


def _check(world: World, scores: dict[str, float]) -> tuple[float, float]:
    pairs = [(a, b) for p in world.test for a, b in p.pairs()]
    prefers = np.array([scores[a.text] > scores[b.text] for a, b in pairs])
    decided = np.array([a.quality != b.quality for a, b in pairs])
    truth = np.array([a.quality > b.quality for a, b in pairs])
    return float(np.mean(prefers[decided] == truth[decided])), world.expected_accuracy(prefers)


async def run_scenario(settings: Settings, seed: int = 0) -> PreferenceSummary:
    started = time.perf_counter()
    # Five reviewers, so that each judges enough comparisons (about 120) for the
    # position-bias test to have power: three unbiased, one at 0.3 and one at 0.6.
    world = World.make(seed, train_prompts=100, test_prompts=40,
                       biases=(0.0, 0.0, 0.0, 0.3, 0.6))
    project = f"prefs-{datetime.now(UTC):%Y%m%d%H%M%S}"
    summary = PreferenceSummary(project, world.bayes_accuracy(), 0.75,
                                biased={r.name: r.position_bias for r in world.reviewers
                                        if r.position_bias > 0})
    engine = make_engine(settings.database_url)
    redis = aioredis.from_url(settings.redis_url)
    try:
        admin = await create_token(engine, "demo-admin", "admin", project)
        bearers = {r.name: await create_token(engine, r.name, "labeler", project)
                   for r in world.reviewers}
        headers = {"Authorization": f"Bearer {admin}"}
        labels = httpx.AsyncClient(base_url=settings.url_of("labels"), headers=headers,
                                   timeout=60)
        scorer = httpx.AsyncClient(base_url=settings.url_of("scorer"), headers=headers,
                                   timeout=120)
        quality = httpx.AsyncClient(base_url=settings.url_of("quality"), headers=headers,
                                    timeout=60)
        p = f"/v1/projects/{project}"
        (await labels.patch(p, json={"routing": {"overlap": 2}})).raise_for_status()
        await _drained(redis, *((streams.PROJECTS, g) for g in (
            streams.GROUP_ROUTER, streams.GROUP_SCORER, streams.GROUP_QUALITY)))
        rng = np.random.default_rng(seed + 1)
        compared: list[str] = []
        for strategy in ("random", "active"):
            _say(f"[{strategy}] the scorer queues {ROUND} comparisons")
            r = await scorer.post(f"{p}/reward/select", json={
                "prompts": _pool(world.train), "budget": ROUND, "strategy": strategy,
                "seed": seed, "exclude": compared})
            r.raise_for_status()
            picked = r.json()
            compared += [s["comparison_id"] for s in picked["selected"]]
            await _drained(redis, (streams.COMPARISONS, streams.GROUP_ROUTER))
            _say(f"[{strategy}] {len(world.reviewers)} reviewers judge them over HTTP")
            await _judge(settings, world, project, bearers, rng)
            await _drained(redis, (streams.LABELS, streams.GROUP_LABELS),
                           (streams.LABELS, streams.GROUP_QUALITY))
            trained = (await scorer.post(f"{p}/reward/train")).raise_for_status().json()
            texts = sorted({c.text for q in world.test for c in q.candidates})
            scored = (await scorer.post(f"{p}/reward/score", json={"texts": texts})
                      ).raise_for_status().json()["scores"]
            vs_truth, vs_reviewer = _check(world, dict(zip(texts, scored, strict=True)))
            summary.rounds.append(Round(picked["strategy"], len(compared), trained["version"],
                                        trained["metrics"]["held_out_pairwise_accuracy"],
                                        vs_truth, vs_reviewer))
            _say(f"[{strategy}] {trained['version']}: {vs_truth:.3f} of held-out pairs "
                 "ordered as the hidden quality")
        body = (await quality.get(f"{p}/quality")).raise_for_status().json()
        summary.agreement = body.get("pairwise_agreement")
        summary.flagged = sorted(f["labeler_id"] for f in body.get("flags", []))
        for client in (labels, scorer, quality):
            await client.aclose()
    finally:
        await redis.aclose()
        await engine.dispose()
    summary.seconds = time.perf_counter() - started
    return summary


def run_preferences(settings: Settings, seed: int = 0) -> PreferenceSummary:
    env = {"LOOPWISE_DATABASE_URL": settings.database_url,
           "LOOPWISE_REDIS_URL": settings.redis_url}
    upgrade(settings.database_url)
    with ServiceGroup(settings, env=env):
        return asyncio.run(run_scenario(settings, seed))
