"""Reviewer-quality detection end to end: simulated reviewers through the real services.

The four services run as processes (``loopwise serve``); every reviewer leases and
submits over HTTP, the quality service watches the label stream and publishes flags,
the router pauses whom they flag (423). Nothing is shortcut: the figures are what a
project running loopwise would see.

The project: every task pre-labelled by a model right on 85% of items (gold included:
each gold item carries the model's real prediction), 5% gold, half of it with a planted
wrong pre-label. Populations (``--per-population`` reviewers each, ``--tasks`` each):

* honest: answer on their own, right with accuracy U(0.80, 0.97), whatever is shown;
* cautious: know the answer with probability U(0.80, 0.97), else keep the pre-label;
* stampers: always keep the pre-label;
* half-stampers: keep the pre-label on a random half of the tasks, else honest (0.9).

Reported per population: the share flagged (paused) within the run, with its exact
95% interval, and for stampers the tasks it took (median, p90, bootstrap interval).
Evidence the detector uses (services/quality/detection.py): planted gold caught or
kept, and changes of ordinary pre-labels against the model's error rate measured on
gold with real predictions.
"""

from __future__ import annotations

import asyncio
import json
import random
import tempfile
import time
from dataclasses import dataclass, field
from datetime import datetime
from pathlib import Path
from typing import Any

import httpx
import numpy as np

from loopwise.processes import ServiceGroup
from shared import streams
from shared.auth import create_token
from shared.db import make_engine, upgrade
from shared.redisconn import connect, connect_sync
from shared.settings import Settings

SECTION = "## Review detection end to end (loopwise bench review)"
LABELS = ["a", "b", "c", "d", "e"]
POPULATIONS = ("honest", "cautious", "stamper", "half-stamper")


@dataclass
class Reviewer:
    name: str
    population: str
    skill: float
    paused_at: int | None = None  # the task that was refused (423)
    done: int = 0
    flag_task: int | None = None  # the task whose label made the detector flag them
    submitted: list[float] = field(default_factory=list)  # when each submit was answered


def say(message: str) -> None:
    print(f"[bench review {time.strftime('%H:%M:%S')}] {message}", flush=True)


def _model_probs(rng: random.Random, truth: str) -> dict[str, float]:
    guess = truth if rng.random() < 0.85 else rng.choice([x for x in LABELS if x != truth])
    rest = (1 - 0.6) / (len(LABELS) - 1)
    return {x: 0.6 if x == guess else rest for x in LABELS}


def _answer(r: Reviewer, rng: random.Random, truth: str, prelabel: str | None) -> str:
    """What this reviewer submits for a task whose true label is ``truth``."""
    if r.population == "stamper" or (r.population == "half-stamper" and rng.random() < 0.5):
        return prelabel or truth
    if r.population == "cautious":
        return truth if rng.random() < r.skill else (prelabel or truth)
    skill = 0.9 if r.population == "half-stamper" else r.skill
    return truth if rng.random() < skill else rng.choice([x for x in LABELS if x != truth])


async def _work(settings: Settings, project: str, r: Reviewer, bearer: str,
                answers: dict[str, str], tasks: int, seed: int) -> None:
    rng = random.Random(seed)
    async with httpx.AsyncClient(base_url=settings.url_of("router"), timeout=60,
                                 headers={"Authorization": f"Bearer {bearer}"}) as http:
        for n in range(tasks):
            got = await http.get(f"/v1/projects/{project}/tasks/next")
            if got.status_code == 423:
                r.paused_at = n
                return
            if got.status_code == 204:
                raise RuntimeError("the queue ran dry: post more predictions")
            got.raise_for_status()
            task = got.json()
            label = _answer(r, rng, answers[task["item_id"]], task["prelabel"])
            done = await http.post(f"/v1/tasks/{task['task_id']}/submit", json={"label": label})
            done.raise_for_status()
            r.submitted.append(time.time())
            r.done = n + 1


def clopper_pearson(k: int, n: int, level: float = 0.95) -> tuple[float, float]:
    from scipy.stats import beta

    a = (1 - level) / 2
    low = 0.0 if k == 0 else float(beta.ppf(a, k, n - k + 1))
    high = 1.0 if k == n else float(beta.ppf(1 - a, k + 1, n - k))
    return low, high


def _quantile_ci(values: list[int], q: float, seed: int = 0) -> tuple[float, float, float]:
    x = np.asarray(values, dtype=float)
    rng = np.random.default_rng(seed)
    boots = np.quantile(rng.choice(x, size=(2000, x.size)), q, axis=1)
    return float(np.quantile(x, q)), float(np.quantile(boots, 0.025)), float(
        np.quantile(boots, 0.975))


async def _run(settings: Settings, per_population: int, tasks: int, seed: int,
               concurrency: int) -> tuple[list[Reviewer], dict[str, Any]]:
    rng = random.Random(seed)
    project = f"review-{seed}"
    engine = make_engine(settings.database_url)
    redis = connect(settings.redis_url)
    try:
        admin = await create_token(engine, "bench-admin", "admin", project)
        async with httpx.AsyncClient(base_url=settings.url_of("labels"), timeout=60,
                                     headers={"Authorization": f"Bearer {admin}"}) as http:
            r = await http.patch(f"/v1/projects/{project}", json={
                "label_options": LABELS,
                "routing": {"mode": "prelabel", "gold_rate": 0.05, "gold_planted_share": 0.5,
                            "queue_cap": 1_000_000}})
            r.raise_for_status()
        reviewers = [Reviewer(f"{pop}-{i}", pop, rng.uniform(0.80, 0.97))
                     for pop in POPULATIONS for i in range(per_population)]
        n_items = int(len(reviewers) * tasks * 0.97) + 1000
        truth = {f"n{i}": rng.choice(LABELS) for i in range(n_items)}
        gold = {f"g{i}": rng.choice(LABELS) for i in range(max(400, tasks // 5))}
        await asyncio.sleep(3)  # the settings reach the router (it keeps the newest)
        async with httpx.AsyncClient(base_url=settings.url_of("router"), timeout=120,
                                     headers={"Authorization": f"Bearer {admin}"}) as http:
            r = await http.post(f"/v1/projects/{project}/gold", json={"items": [
                {"item_id": item, "label": answer, "payload": {"text": item},
                 "prediction": {"model_version": "m-85", "probs": _model_probs(rng, answer)}}
                for item, answer in gold.items()]})
            r.raise_for_status()
        say(f"posting {n_items:,} predictions")
        pipe = redis.pipeline(transaction=False)
        for i, (item, answer) in enumerate(truth.items(), 1):
            body = {"project": project, "item_id": item, "model_version": "m-85",
                    "probs": _model_probs(rng, answer), "payload": {"text": item}}
            pipe.xadd(streams.PREDICTIONS, {"data": json.dumps(body)})
            if i % 5000 == 0:
                await pipe.execute()
        await pipe.execute()
        from shared.bus import group_drained

        for _ in range(2400):  # at most 20 minutes
            if await group_drained(redis, streams.PREDICTIONS, streams.GROUP_ROUTER):
                break
            await asyncio.sleep(0.5)
        tokens = {r.name: await create_token(engine, r.name, "labeler", project)
                  for r in reviewers}
        answers = {**truth, **gold}
        say(f"{len(reviewers)} reviewers x {tasks} tasks, {concurrency} at a time")
        started = time.monotonic()
        gate = asyncio.Semaphore(concurrency)

        async def one(i: int, r: Reviewer) -> None:
            async with gate:
                await _work(settings, project, r, tokens[r.name], answers, tasks, seed * 1000 + i)

        async def progress() -> None:
            while True:
                await asyncio.sleep(30)
                done = sum(r.done for r in reviewers)
                say(f"{done:,} tasks labelled, {sum(r.paused_at is not None for r in reviewers)}"
                    f" paused, {time.monotonic() - started:.0f} s")

        ticker = asyncio.create_task(progress())
        try:
            await asyncio.gather(*(one(i, r) for i, r in enumerate(reviewers)))
        finally:
            ticker.cancel()
        elapsed = time.monotonic() - started
        # A flag published after a reviewer's last task still counts (they would be paused
        # on their next request): ask the quality service who is flagged.
        await asyncio.sleep(5)
        async with httpx.AsyncClient(base_url=settings.url_of("quality"), timeout=60,
                                     headers={"Authorization": f"Bearer {admin}"}) as http:
            summary = (await http.get(f"/v1/projects/{project}/quality")).json()
        by_name = {r.name: r for r in reviewers}
        for flag in summary.get("flags", []):
            r = by_name.get(flag["labeler_id"])
            if r is not None and flag.get("flagged_at"):
                # The flagging label was made before its submit was answered, and after
                # every earlier submit of this (sequential) reviewer was answered.
                at = datetime.fromisoformat(flag["flagged_at"]).timestamp()
                r.flag_task = sum(t < at for t in r.submitted) + 1
        return reviewers, {"summary": summary, "elapsed": elapsed,
                           "tasks": sum(r.done for r in reviewers)}
    finally:
        await redis.aclose()
        await engine.dispose()


def simulate(per_population: int, tasks: int, seed: int) -> list[Reviewer]:
    """The same project and populations fed straight into the quality service's state
    (``services.quality.state.ProjectState``, what the service runs on each stored label),
    without HTTP: enough reviewers for a false-flag rate with a useful interval.

    Each row is what the labels service stores for a submit: the shown pre-label, whether
    it was planted, the gold answer and the model's real label on gold. Reviewers take
    turns task by task (the model's error rate is learnt from all of them, as live); a
    flagged reviewer stops, as the router pauses them.
    """
    from datetime import UTC, datetime, timedelta

    from services.quality.alerts import GuidelineWatch
    from services.quality.config import QualityConfig
    from services.quality.detection import DeferenceTest
    from services.quality.state import ProjectState

    rng = random.Random(seed)
    config = QualityConfig()
    state = ProjectState(test=DeferenceTest(threshold=config.cusum_threshold,
                                            partial_threshold=config.partial_cusum_threshold),
                         watch=GuidelineWatch())
    reviewers = [Reviewer(f"{pop}-{i}", pop, rng.uniform(0.80, 0.97))
                 for pop in POPULATIONS for i in range(per_population)]
    gold = {}
    for i in range(max(400, tasks // 5)):
        answer = rng.choice(LABELS)
        probs = _model_probs(rng, answer)
        gold[f"g{i}"] = (answer, max(probs, key=probs.__getitem__))
    gold_items = list(gold)
    streams_of = [random.Random(seed * 1000 + i) for i in range(len(reviewers))]
    t0 = datetime(2026, 1, 1, tzinfo=UTC)
    active = list(range(len(reviewers)))
    for n in range(tasks):
        at = t0 + timedelta(seconds=n)
        still = []
        for i in active:
            r, r_rng = reviewers[i], streams_of[i]
            if r_rng.random() < 0.05:  # a gold task, half of them with a planted pre-label
                item = r_rng.choice(gold_items)
                truth, model_label = gold[item]
                planted = r_rng.random() < 0.5
                shown = (r_rng.choice([x for x in LABELS if x != truth]) if planted
                         else model_label)
                gold_label: str | None = truth
            else:
                item, truth = f"{r.name}-{n}", r_rng.choice(LABELS)
                probs = _model_probs(r_rng, truth)
                shown = model_label = max(probs, key=probs.__getitem__)
                planted, gold_label = False, None
            label = _answer(r, r_rng, truth, shown)
            flag = state.apply({
                "source": "human", "item_id": item, "labeler_id": r.name, "label": label,
                "mode": "prelabel", "shown_prelabel": shown, "planted_prelabel": planted,
                "gold_label": gold_label, "model_label": model_label, "created_at": at})
            r.done = n + 1
            if flag is not None:
                r.paused_at = r.flag_task = n + 1
            else:
                still.append(i)
        active = still
        if n % 500 == 499:
            say(f"simulated {n + 1:,} of {tasks:,} tasks per reviewer, "
                f"{len(reviewers) - len(active)} flagged")
    return reviewers


def _table(reviewers: list[Reviewer], flagged_of: Any) -> list[str]:
    rows = ["| population | reviewers | flagged within the run | 95% interval | "
            "median tasks to flag (95% CI) | p90 tasks to flag (95% CI) |",
            "|---|---:|---:|---:|---:|---:|"]
    for pop in POPULATIONS:
        group = [r for r in reviewers if r.population == pop]
        flagged = [r for r in group if flagged_of(r)]
        low, high = clopper_pearson(len(flagged), len(group))
        at = [r.flag_task for r in flagged if r.flag_task is not None]
        med = p90 = "—"
        if at and pop in ("stamper", "half-stamper"):
            m, ml, mh = _quantile_ci(at, 0.5)
            q, ql, qh = _quantile_ci(at, 0.9)
            med, p90 = f"{m:.0f} ({ml:.0f}-{mh:.0f})", f"{q:.0f} ({ql:.0f}-{qh:.0f})"
        rows.append(f"| {pop} | {len(group)} | {len(flagged) / len(group):.1%} | "
                    f"{low:.1%}-{high:.1%} | {med} | {p90} |")
    return rows


EVIDENCE = (
    "Evidence the detector uses (services/quality/detection.py): two CUSUMs per reviewer. "
    "The full-deference test reads known-wrong gold pre-labels (planted, or the model's "
    "real guess that the gold answer shows wrong) caught or kept, and the changes of "
    "ordinary pre-labels against the model's error rate measured on gold items' real "
    "predictions (10% posterior quantile); the partial-deference test reads the "
    "known-wrong gold alone. Honest means keeping at most 20% of pre-labels unjudged "
    "(a cautious reviewer who knows 80% of the answers). Goals (issue 12): honest and "
    "cautious false flags <= 1%; stampers median <= 100 tasks, p90 <= 200; half-stampers "
    ">= 80% within 2,000 tasks.")


def render(reviewers: list[Reviewer], info: dict[str, Any], simulated: list[Reviewer],
           tasks: int) -> str:
    from services.quality.config import QualityConfig

    config = QualityConfig()
    lines = [
        f"Project: model right on 85% of items, every task pre-labelled, 5% gold, half of it "
        f"with a planted wrong pre-label, 5 classes. CUSUM thresholds: full deference "
        f"{config.cusum_threshold:.2f} (log(2000/0.005)), partial deference "
        f"{config.partial_cusum_threshold:.2f} (log(100/0.005)). Intervals: exact "
        "(Clopper-Pearson) for shares, bootstrap for task counts.", ""]
    if simulated:
        lines += [
            f"**The quality service's own state, {len(simulated):,} reviewers x {tasks:,} "
            "tasks** (`services.quality.state.ProjectState` fed the rows the label store "
            "keeps, no HTTP: enough reviewers to bound the false-flag rate):", "",
            *_table(simulated, lambda r: r.paused_at is not None), ""]
    if reviewers:
        labelers = info["summary"].get("labelers", {})
        lag = [r.paused_at - r.flag_task for r in reviewers
               if r.paused_at is not None and r.flag_task is not None]
        lines += [
            f"**Through the four services, {len(reviewers)} reviewers x {tasks:,} tasks** "
            "(HTTP lease and submit; the quality service flags; the router pauses): "
            f"{info['tasks']:,} tasks in {info['elapsed']:.0f} s. Tasks to flag count up "
            "to the label that made the quality service flag the reviewer.", "",
            *_table(reviewers, lambda r: r.paused_at is not None
                    or labelers.get(r.name, {}).get("flagged")), ""]
        if lag:
            lines += [
                f"From that label to the first refused lease (423) the simulated reviewers, "
                f"who answer instantly (about {info['tasks'] / info['elapsed']:.0f} tasks/s "
                f"in all), did a median of {float(np.median(lag)):.0f} more tasks (max "
                f"{max(lag)}): the flag's way through the label stream, the quality "
                "service and the router, a few seconds under this load; a person taking "
                "seconds a task does none or one.", ""]
    lines.append(EVIDENCE)
    return "\n".join(lines)


def run(per_population: int = 10, tasks: int = 2000, seed: int = 1, concurrency: int = 8,
        redis_url: str = "redis://127.0.0.1:6379/8", database_url: str | None = None,
        port_base: int = 18500, simulated: int = 500) -> str:
    """Simulate ``simulated`` reviewers of each kind against the quality state, then run
    ``per_population`` of each through freshly started services; the section's body."""

    sim = simulate(simulated, tasks, seed) if simulated else []
    reviewers: list[Reviewer] = []
    info: dict[str, Any] = {}
    if per_population:
        say(f"flushing {redis_url} (this benchmark's own Redis database)")
        connect_sync(redis_url).flushdb(asynchronous=True)  # big leftovers: no timeout
        tmp = Path(tempfile.mkdtemp(prefix="loopwise-bench-review-"))
        database_url = database_url or f"sqlite+aiosqlite:///{tmp}/review.db"
        settings = Settings(redis_url=redis_url, database_url=database_url,
                            scorer_port=port_base + 1, router_port=port_base + 2,
                            labels_port=port_base + 3, quality_port=port_base + 4)
        upgrade(database_url)
        env = {"LOOPWISE_REDIS_URL": redis_url, "LOOPWISE_DATABASE_URL": database_url,
               "LOOPWISE_SCORER_PORT": str(port_base + 1),
               "LOOPWISE_ROUTER_PORT": str(port_base + 2),
               "LOOPWISE_LABELS_PORT": str(port_base + 3),
               "LOOPWISE_QUALITY_PORT": str(port_base + 4), "LOOPWISE_LOG_LEVEL": "WARNING"}
        with ServiceGroup(settings, env=env, log_dir=tmp / "logs"):
            reviewers, info = asyncio.run(
                _run(settings, per_population, tasks, seed, concurrency))
    return render(reviewers, info, sim, tasks)
