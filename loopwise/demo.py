"""The whole loop on scikit-learn's bundled digits, with simulated reviewers.

Items go in on the stream, the scorer predicts, the router auto-accepts the
confident ones and queues the rest; simulated reviewers of different accuracy
pull and submit over HTTP; the labels and quality services store and measure;
the model is retrained on the reviewed labels and compared on a held-out split.
"""

from __future__ import annotations

import asyncio
import random
import sys
import time
from collections import Counter
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any

import numpy as np
import redis.asyncio as aioredis
from sklearn.datasets import load_digits
from sklearn.model_selection import train_test_split

from loopwise.client import AsyncClient, Paused
from loopwise.localredis import PrivateRedis, reachable
from loopwise.processes import ServiceGroup
from shared import streams
from shared.auth import create_token
from shared.bus import group_drained
from shared.db import make_engine, upgrade
from shared.events import ItemEvent
from shared.redisconn import client_for
from shared.settings import Settings


@dataclass
class Summary:
    project: str
    items: int = 0
    auto_accepted: int = 0
    auto_accept_correct: int = 0
    review_tasks: int = 0
    reviewed: int = 0
    human_labels: int = 0
    consensus_labels: int = 0
    training_label_accuracy: float = 0.0
    training_by_source: dict[str, int] = field(default_factory=dict)
    labels_stored: int = 0
    agreement: float | None = None
    accuracy_before: float = 0.0
    accuracy_after: float = 0.0
    model_before: str = ""
    model_after: str = ""
    holdout: int = 0
    seed_labels: int = 0
    reviewer_accuracy: dict[str, float] = field(default_factory=dict)
    # Seconds each reviewer spent thinking on the tasks it submitted: the truth the
    # router's measured durations (lease to submit) must cover.
    think_seconds: dict[str, float] = field(default_factory=dict)
    seconds: float = 0.0
    gold_items: int = 0
    gold_labels: int = 0  # human labels on gold tasks (not counted in human_labels)
    mode: str = "blind"
    paused: list[str] = field(default_factory=list)
    flagged: list[str] = field(default_factory=list)
    evaluation: dict[str, Any] = field(default_factory=dict)

    def render(self) -> str:
        auto_precision = self.auto_accept_correct / self.auto_accepted if self.auto_accepted else 0
        agreement = f"{self.agreement:.3f}" if self.agreement is not None else "n/a"
        lines = [
            f"loopwise demo — project {self.project} (scikit-learn digits)",
            f"  items streamed           {self.items}",
            f"  auto-accepted            {self.auto_accepted} "
            f"(precision vs truth {auto_precision:.3f})",
            f"  sent to review           {self.review_tasks} tasks",
            f"  reviewed                 {self.reviewed} items, {self.human_labels} human labels",
            f"  labels stored            {self.labels_stored} ({self.seed_labels} seed, "
            f"{self.auto_accepted} auto, {self.human_labels} human, {self.gold_labels} on gold, "
            f"{self.consensus_labels} consensus)",
            f"  pairwise agreement       {agreement}",
            f"  training labels correct  {self.training_label_accuracy:.3f} (current labels by "
            "source: " + ", ".join(f"{k} {v}" for k, v in sorted(self.training_by_source.items()))
            + ")",
            "  reviewer accuracy        "
            + ", ".join(f"{k} {v:.2f}" for k, v in sorted(self.reviewer_accuracy.items())),
            f"  held-out accuracy before {self.accuracy_before:.3f} ({self.model_before}, "
            f"{self.seed_labels} seed labels)",
            f"  held-out accuracy after  {self.accuracy_after:.3f} ({self.model_after}, "
            f"after review; {self.holdout} held-out items)",
            f"  wall time                {self.seconds:.1f} s",
            f"  review mode              {self.mode}; flagged by the quality service: "
            f"{', '.join(self.flagged) or 'none'}; paused: {', '.join(self.paused) or 'none'}",
        ]
        for name, stage in self.evaluation.get("stages", {}).items():
            lines.append(f"  {name:24s} {stage['verdict']} (p = {stage['p_value']:.2g}; "
                         f"{stage['errors_caught']} errors caught, {stage['errors_introduced']} "
                         f"introduced, in {stage['items']} answers on gold; "
                         f"{stage['human_hours'] * 3600:.0f} s measured)")
        comparison = self.evaluation.get("model_comparison") or {}
        if comparison.get("available"):
            arms = comparison["arms"]

            def accuracy(key: str) -> str:
                rate = (arms[key].get("accuracy") or {}).get("rate")
                return "—" if rate is None else f"{rate:.3f}"

            lines.append(
                f"  model on gold            loop's labels {accuracy('loop')}, single "
                f"unreviewed {accuracy('single_unreviewed')}, auto only "
                f"{accuracy('auto_only')} ({comparison['budget']} labels, "
                f"{comparison['gold_items']} held-out gold items)")
        lines.append(f"  reviewers' thinking      scaled down {1 / THINK_SCALE:.0f}x; "
                     "durations measured by the router from lease to submit")
        return "\n".join(lines)


def _say(message: str) -> None:
    print(message, file=sys.stderr, flush=True)


GOLD_ITEMS = 60
GOLD_RATE = 0.1


# Simulated reviewers think for a human's time scaled down this much (a real 6 s is 60 ms
# here), so that the router measures durations from lease to submit as it would for
# people, and the demo still ends in minutes.
THINK_SCALE = 0.01


@dataclass
class Behaviour:
    """What a simulated reviewer does, known exactly so every figure can be checked."""

    accuracy: float  # right this often when judging
    stamps: bool = False  # keeps any shown pre-label without looking
    skip_rate: float = 0.0  # gives a task back
    abandon_rate: float = 0.0  # walks away from a task until its lease has lapsed
    # Seconds (a person's, before THINK_SCALE) to judge an item: log-normal around
    # ``think_seconds + think_per_difficulty * difficulty`` (difficulty in [0, 1]).
    think_seconds: float = 3.0
    think_per_difficulty: float = 12.0
    glance_seconds: float = 1.0  # what a stamper spends on an item whose pre-label it keeps

    def think_time(self, difficulty: float, rng: random.Random, judged: bool = True) -> float:
        """How long this reviewer looks at an item, in seconds of real (scaled) time."""
        median = (self.think_seconds + self.think_per_difficulty * difficulty
                  if judged else self.glance_seconds)
        return THINK_SCALE * median * rng.lognormvariate(0.0, 0.35)


async def _until_lapsed(expires_at: datetime) -> None:
    """Sleep until a lease has expired (a moment after, so the router's clock agrees)."""
    left = (expires_at - datetime.now(UTC)).total_seconds()
    await asyncio.sleep(max(0.0, left) + 0.25)


async def _reviewer(api: AsyncClient, project: str, name: str, behaviour: Behaviour,
                    truth: dict[str, int], done: asyncio.Event, stats: dict[str, list[int]],
                    rng: random.Random, reviewed: list[str], paused: set[str],
                    difficulty: dict[str, float] | None = None,
                    thought: dict[str, float] | None = None) -> None:
    """Pull, think, submit: right with probability ``accuracy``, else a plausible
    confusion; a stamper submits the pre-label when one is shown. Thinking takes a time
    drawn from the item's difficulty (:meth:`Behaviour.think_time`); the router measures
    it (lease to submit), the reviewer never reports it. Stops when paused (423)."""
    while True:
        try:
            task = await api.next_task(project)
        except Paused:
            paused.add(name)
            return
        if task is None:
            if done.is_set():
                return
            await asyncio.sleep(0.2)
            continue
        draw = rng.random()
        if draw < behaviour.skip_rate:
            await api.skip(task.task_id)
            continue
        if draw < behaviour.skip_rate + behaviour.abandon_rate:
            # Walks away: asks for nothing until the lease has lapsed, as a person who left
            # would. Asking at once would get the same task back (a held lease is handed
            # again, for a reloaded page) and turn the abandon into a second look.
            await _until_lapsed(task.lease_expires_at)
            continue  # never submitted: the task went back to the queue for the others
        true_label = truth[task.item_id]
        stamping = behaviour.stamps and bool(task.prelabel)
        thinking = behaviour.think_time((difficulty or {}).get(task.item_id, 0.0), rng,
                                        judged=not stamping)
        await asyncio.sleep(thinking)
        if stamping:
            label = str(task.prelabel)
        elif rng.random() < behaviour.accuracy:
            label = str(true_label)
        else:
            label = str(rng.choice([c for c in range(10) if c != true_label]))
        if label not in task.options and task.options:
            label = str(true_label)
        try:
            await api.submit(task.task_id, label, guideline_version="g1")
        except Paused:
            paused.add(name)
            return
        stats.setdefault(name, []).append(int(label == str(true_label)))
        if thought is not None:
            thought[name] = thought.get(name, 0.0) + thinking
        reviewed.append(task.item_id)


async def _wait(predicate, timeout: float, what: str) -> None:
    deadline = time.monotonic() + timeout
    while not await predicate():
        if time.monotonic() > deadline:
            raise TimeoutError(f"timed out waiting for {what}")
        await asyncio.sleep(0.25)


async def _settings_applied(redis: aioredis.Redis, project: str) -> None:
    """Until every service that keeps a copy of the project's settings has taken them."""
    async def applied() -> bool:
        return all([await group_drained(redis, streams.PROJECTS, group) for group in (
            streams.GROUP_ROUTER, streams.GROUP_SCORER, streams.GROUP_QUALITY)])

    await _wait(applied, 30, f"the services to apply the settings of {project}")


async def _accuracy(api: AsyncClient, project: str, x: np.ndarray, y: np.ndarray
                    ) -> tuple[float, str]:
    result = await api.predict(project, features=x.tolist())
    classes = result["classes"]
    predicted = [classes[int(np.argmax(p))] for p in result["probs"]]
    return float(np.mean([p == str(t) for p, t in zip(predicted, y, strict=True)])), result[
        "model_version"]


ACCURACIES = (0.97, 0.92, 0.85, 0.95, 0.9, 0.88, 0.93, 0.8, 0.96, 0.9)


def difficulty_of(x: np.ndarray, y: np.ndarray) -> np.ndarray:
    """Each item's difficulty in [0, 1]: the share of its 10 nearest other items (in a
    5-fold split) that are of another class; a digit that looks like others is harder."""
    from sklearn.model_selection import cross_val_predict
    from sklearn.neighbors import KNeighborsClassifier

    probs = cross_val_predict(KNeighborsClassifier(10), x, y, cv=5, method="predict_proba")
    return np.asarray(1.0 - probs[np.arange(len(y)), y])


async def run_loop(settings: Settings, project: str, reviewers: int, overlap: int,
                   threshold: float, seed_labels: int, rng_seed: int = 0, mode: str = "blind",
                   behaviours: dict[str, Behaviour] | None = None,
                   gold_rate: float = GOLD_RATE, auto_pause: bool = True) -> Summary:
    """The whole loop on one project; ``behaviours`` (default: honest reviewers of the
    accuracies above) says what each simulated reviewer does."""
    started = time.perf_counter()
    summary = Summary(project=project, mode=mode)
    engine = make_engine(settings.database_url)
    admin_token = await create_token(engine, "demo-admin", "admin", project)
    if behaviours is None:
        behaviours = {f"reviewer-{i + 1}": Behaviour(ACCURACIES[i % len(ACCURACIES)])
                      for i in range(reviewers)}
    reviewer_names = list(behaviours)
    reviewer_tokens = {n: await create_token(engine, n, "labeler", project) for n in reviewer_names}
    await engine.dispose()

    digits = load_digits()
    x, y = digits.data, digits.target
    idx = np.arange(len(y))
    pool_idx, holdout_idx = train_test_split(idx, test_size=0.3, stratify=y, random_state=rng_seed)
    seed_idx, stream_idx = train_test_split(pool_idx, train_size=seed_labels, stratify=y[pool_idx],
                                            random_state=rng_seed)
    # Gold: known answers salted into the queue, held out of the stream (and of training),
    # so the evaluation can say what review did to label error.
    gold_idx, stream_idx = stream_idx[:GOLD_ITEMS], stream_idx[GOLD_ITEMS:]
    item_id = {int(i): f"digit-{int(i):04d}" for i in idx}
    truth = {item_id[int(i)]: int(y[i]) for i in idx}
    hardness = difficulty_of(x, y)
    difficulty = {item_id[int(i)]: float(hardness[i]) for i in idx}
    summary.holdout, summary.seed_labels, summary.items = len(holdout_idx), len(seed_idx), len(
        stream_idx)

    def payload(i: int) -> dict[str, Any]:
        return {"image": digits.images[i].astype(int).tolist(), "kind": "digit-8x8"}

    admin = AsyncClient(admin_token, settings=settings, timeout=300.0)  # the evaluation refits
    redis = client_for(settings)  # to watch the consumer groups drain
    try:
        await admin.update_project(project, {
            "routing": {"auto_accept_threshold": threshold, "overlap": overlap,
                        "gold_rate": gold_rate, "mode": mode},
            "quality": {"auto_pause": auto_pause}})
        await _settings_applied(redis, project)
        _say(f"[1/6] seed: registering {len(seed_idx)} labeled items and training model v1")
        await admin.register_items(project, [
            {"item_id": item_id[int(i)], "features": x[i].tolist(), "payload": payload(int(i))}
            for i in seed_idx])
        # Stored before the answer comes back (and published on loopwise:labels).
        await admin.post_labels(project, [
            {"item_id": item_id[int(i)], "label": str(y[i]), "source": "import",
             "batch_id": "seed", "guideline_version": "g1"} for i in seed_idx])
        await admin.train(project)
        summary.accuracy_before, summary.model_before = await _accuracy(
            admin, project, x[holdout_idx], y[holdout_idx])
        _say(f"      model {summary.model_before}: held-out accuracy "
             f"{summary.accuracy_before:.3f}")

        gold_guess = await admin.predict(project, features=x[gold_idx].tolist())
        await admin.add_gold(project, [
            {"item_id": item_id[int(i)], "label": str(y[i]), "payload": payload(int(i)),
             "prediction": {"model_version": gold_guess["model_version"],
                            "probs": dict(zip(gold_guess["classes"], probs, strict=True))}}
            for i, probs in zip(gold_idx, gold_guess["probs"], strict=True)])
        # The scorer owns item features: it judges refitted models on the gold items.
        await admin.register_items(project, [
            {"item_id": item_id[int(i)], "features": x[i].tolist(), "payload": payload(int(i))}
            for i in gold_idx])
        summary.gold_items = len(gold_idx)
        _say(f"      {len(gold_idx)} gold items salted into the queue ({gold_rate:.0%} of tasks)")

        _say(f"[2/6] streaming {len(stream_idx)} items on {streams.ITEMS}")
        await admin.post_items(
            ItemEvent(project=project, item_id=item_id[int(i)], features=x[i].tolist(),
                      payload=payload(int(i))) for i in stream_idx)

        _say(f"[3/6] {reviewers} simulated reviewers pull and submit over HTTP "
             f"(overlap {overlap})")
        done = asyncio.Event()
        stats: dict[str, list[int]] = {}
        reviewed: list[str] = []  # the item of every submit
        apis = {n: AsyncClient(t, settings=settings, timeout=60.0)
                for n, t in reviewer_tokens.items()}
        paused: set[str] = set()
        workers = [asyncio.create_task(_reviewer(apis[n], project, n, behaviours[n], truth,
                                                 done, stats, random.Random(rng_seed + k),
                                                 reviewed, paused, difficulty,
                                                 summary.think_seconds))
                   for k, n in enumerate(reviewer_names)]

        async def routed() -> bool:
            return (await group_drained(redis, streams.ITEMS, streams.GROUP_SCORER)
                    and await group_drained(redis, streams.PREDICTIONS, streams.GROUP_ROUTER))

        deadline = time.monotonic() + 600
        next_report = time.monotonic() + 2.0
        while not await routed():
            if time.monotonic() >= next_report:
                _say(f"      {sum(len(v) for v in stats.values())} labels submitted")
                next_report += 2.0
            if time.monotonic() > deadline:
                raise TimeoutError("items were not routed within 10 minutes")
            await asyncio.sleep(0.25)
        done.set()
        while not all(w.done() for w in workers):
            if time.monotonic() >= next_report:
                _say(f"      {sum(len(v) for v in stats.values())} labels submitted")
                next_report += 2.0
            await asyncio.sleep(0.25)
        await asyncio.gather(*workers)
        for a in apis.values():
            await a.close()
        gold_ids = {item_id[int(i)] for i in gold_idx}
        summary.gold_labels = sum(item in gold_ids for item in reviewed)
        summary.human_labels = sum(len(v) for v in stats.values()) - summary.gold_labels
        summary.reviewer_accuracy = {n: float(np.mean(v)) for n, v in stats.items() if v}
        summary.paused = sorted(paused)
        _say(f"      {summary.human_labels} labels submitted; queue empty")

        _say("[4/6] waiting for the labels and quality services to store everything")

        async def all_stored() -> bool:
            return (await group_drained(redis, streams.LABELS, streams.GROUP_LABELS)
                    and await group_drained(redis, streams.LABELS, streams.GROUP_QUALITY))

        await _wait(all_stored, 120, "label events to be stored")

        _say("      waiting for Dawid-Skene consensus over the overlapping labels")

        async def consensus_stored() -> bool:
            quality = await admin.quality(project)
            settled = quality.get("consensus", {}).get("items_with_consensus") or 0
            return settled >= len(set(reviewed) - gold_ids) and await all_stored()

        try:
            if overlap > 1:  # one label an item: nothing to settle
                await _wait(consensus_stored, 90, "consensus labels")
        except TimeoutError:
            _say("      (no consensus yet; retraining on the newest human labels)")
        labels = await admin.labels(project)
        by_source = labels["events_by_source"]
        summary.auto_accepted = by_source.get("auto", 0)
        summary.labels_stored = sum(by_source.values())
        summary.consensus_labels = by_source.get("consensus", 0)
        summary.reviewed = len(set(reviewed) - gold_ids)
        summary.review_tasks = summary.items - summary.auto_accepted
        summary.auto_accept_correct = sum(
            1 for r in labels["labels"] if r["source"] == "auto"
            and r["label"] == str(truth[r["item_id"]]))
        trained_on = [r for r in labels["labels"] if r["source"] != "auto"]
        summary.training_label_accuracy = float(np.mean(
            [r["label"] == str(truth[r["item_id"]]) for r in trained_on])) if trained_on else 0.0
        summary.training_by_source = dict(Counter(r["source"] for r in trained_on))

        _say("[5/6] retraining on the reviewed labels")
        await admin.train(project)
        summary.accuracy_after, summary.model_after = await _accuracy(
            admin, project, x[holdout_idx], y[holdout_idx])

        _say("[6/6] quality")
        quality = await admin.quality(project)
        summary.agreement = quality["pairwise_agreement"]
        summary.flagged = sorted(f["labeler_id"] for f in quality.get("flags", []))
        summary.evaluation = await admin.evaluation(project)
    finally:
        await admin.close()
        await redis.aclose()
    summary.seconds = time.perf_counter() - started
    return summary


def run_demo(settings: Settings, project: str | None = None, reviewers: int = 3, overlap: int = 2,
             threshold: float = 0.9, seed_labels: int = 50, start_services: bool = True) -> Summary:
    project = project or f"digits-{datetime.now(UTC):%Y%m%d%H%M%S}"
    private: PrivateRedis | None = None
    env: dict[str, str] = {}
    if not reachable(settings.redis_url):
        private = PrivateRedis()
        _say(f"no Redis at {settings.redis_url}; started a private redis-server at {private.url}")
        env["LOOPWISE_REDIS_URL"] = private.url
        settings = settings.model_copy(update={"redis_url": private.url})
    env["LOOPWISE_DATABASE_URL"] = settings.database_url
    try:
        _say(f"database {settings.database_url.split('@')[-1]}; redis {settings.redis_url}")
        upgrade(settings.database_url)
        group = ServiceGroup(settings, env=env) if start_services else None
        if group:
            _say("starting scorer, router, labels and quality")
            group.start()
        try:
            return asyncio.run(run_loop(settings, project, reviewers, overlap, threshold,
                                        seed_labels))
        finally:
            if group:
                group.stop()
    finally:
        if private:
            private.stop()


SCENARIO_ACCURACY = 0.96
SCENARIO_GOLD_RATE = 0.2  # enough answers on gold for the stage's test to have power
SCENARIO_SECTION = "## Automation bias on a real project (loopwise demo --scenario automation-bias)"


def _headline(summary: Summary) -> list[str]:
    ev = summary.evaluation
    stage = ev.get("stages", {}).get(f"review/{summary.mode}", {})
    model = ev.get("before_review", {}).get("model_on_gold", {})
    correction = ev.get("correction", {})

    def pct(rate: dict[str, Any] | None) -> str:
        if not rate or rate.get("rate") is None:
            return "—"
        low, high = rate["interval"]
        return f"{rate['rate']:.1%} [{low:.1%}, {high:.1%}]"

    comparison = ev.get("model_comparison") or {}
    arms = comparison.get("arms") if comparison.get("available") else None

    def model_on_gold(key: str) -> str:
        return pct(arms[key].get("accuracy")) if arms else "—"

    lines = [
        f"| {summary.mode} | {pct(model)} | {pct(stage.get('after'))} | "
        f"{stage.get('errors_caught', 0)} / {stage.get('errors_introduced', 0)} | "
        f"{stage.get('verdict', '—')} (p = {stage.get('p_value', 1.0):.2g}) | "
        f"{pct(correction.get('correction_rate')) if summary.mode == 'prelabel' else '—'} | "
        f"{', '.join(summary.flagged) or 'none'} | "
        f"{stage.get('human_hours', 0.0) * 3600:.0f} s | "
        f"{model_on_gold('loop')} | {model_on_gold('auto_only')} |"
    ]
    return lines


def run_automation_bias(settings: Settings, reviewers: int = 6, seed_labels: int = 50,
                        threshold: float = 0.9) -> tuple[list[Summary], str]:
    """The same reviewers, a third of them rubber-stampers, on two projects: prelabel
    mode, then blind. Leases last 5 s (the reviewers sometimes walk away from a task)."""
    stamp = set(range(0, reviewers, 3))  # a third of them
    behaviours = {  # people who know digits better than the model does, when they look
        f"{'stamper' if i in stamp else 'reviewer'}-{i + 1}": Behaviour(
            SCENARIO_ACCURACY, stamps=i in stamp, skip_rate=0.02, abandon_rate=0.01)
        for i in range(reviewers)}
    stamp_names = [n for n in behaviours if n.startswith("stamper")]
    env = {"LOOPWISE_DATABASE_URL": settings.database_url,
           "LOOPWISE_REDIS_URL": settings.redis_url, "LOOPWISE_LEASE_SECONDS": "5"}
    upgrade(settings.database_url)
    stamp_text = ", ".join(stamp_names)
    summaries = []
    with ServiceGroup(settings, env=env):
        for mode in ("prelabel", "blind"):
            project = f"bias-{mode}-{datetime.now(UTC):%Y%m%d%H%M%S}"
            _say(f"=== {mode} mode, project {project}: {reviewers} reviewers, "
                 f"{stamp_text} keep every pre-label shown")
            summaries.append(asyncio.run(run_loop(
                settings, project, reviewers, overlap=1, threshold=threshold,
                seed_labels=seed_labels, mode=mode, behaviours=behaviours,
                gold_rate=SCENARIO_GOLD_RATE, auto_pause=False)))
    text = "\n".join([
        f"{reviewers} simulated reviewers over HTTP on scikit-learn's digits, "
        f"{stamp_text} keep every pre-label they are shown (in blind mode they must judge, "
        f"and like the others are right on {SCENARIO_ACCURACY:.0%}); flags do not pause "
        "(`auto_pause` off), so the damage shows; single review (overlap 1), "
        f"{SCENARIO_GOLD_RATE:.0%} of tasks gold (half "
        "of it planted wrong in prelabel mode), reviewers skip 2% of tasks and walk away "
        "from 1% (leases of 5 s). "
        "Figures from `GET :8004/v1/projects/{p}/evaluation` on each project's stored "
        "events; error on gold with exact 95% intervals. Reviewers think for a time drawn "
        "from each digit's difficulty, scaled down "
        f"{1 / THINK_SCALE:.0f}x (stampers glance for 1 s, scaled, at a pre-label they "
        "keep); the review time is what the router measured from lease to submit. The "
        "last two columns: the model refitted by the scorer on the loop's labels and on the "
        "auto labels alone (same budget), accuracy on the held-out gold (with overlap 1 the "
        "loop's labels are the single answers).",
        "",
        "| mode | model's error on gold | error after review | errors caught / introduced "
        "| verdict of the review stage | pre-labels corrected | flagged | review time "
        "(measured, scaled) | model on loop's labels | model on auto labels only |",
        "|---|---:|---:|---:|---|---:|---|---:|---:|---:|",
        *(line for s in summaries for line in _headline(s)),
        "",
        _reading(summaries, stamp_names),
    ])
    return summaries, text


def _reading(summaries: list[Summary], stampers: list[str]) -> str:
    """What this run's figures say, in words taken from them (never a canned verdict)."""
    by_mode = {s.mode: s.evaluation for s in summaries}
    prelabel = by_mode.get("prelabel", {})

    def stage(mode: str) -> dict[str, Any]:
        return by_mode.get(mode, {}).get("stages", {}).get(f"review/{mode}", {})

    def after(mode: str) -> float | None:
        return (stage(mode).get("after") or {}).get("rate")

    def rate(value: float | None) -> str:
        return "—" if value is None else f"{value:.0%}"

    labelers = prelabel.get("labelers", {})
    stamp_rates = [labelers.get(n, {}).get("correction_rate") for n in stampers]
    honest_rates = [v.get("correction_rate") for n, v in labelers.items()
                    if n not in stampers and v.get("correction_rate") is not None]
    model_error = (prelabel.get("before_review", {}).get("model_on_gold") or {}).get("rate")
    flagged = next((s.flagged for s in summaries if s.mode == "prelabel"), [])
    p_after, b_after = after("prelabel"), after("blind")
    compared = ("more" if p_after is not None and b_after is not None and p_after > b_after
                else "no more")
    return (
        f"In prelabel mode review caught {stage('prelabel').get('errors_caught', 0)} errors "
        f"on gold against {stage('blind').get('errors_caught', 0)} in blind mode with the "
        f"same people, and left {compared} label error behind ({rate(p_after)} against "
        f"{rate(b_after)}); the prelabel stage's verdict: "
        f"{stage('prelabel').get('verdict', '—')}. The stampers corrected "
        f"{', '.join(rate(r) for r in stamp_rates)} of the pre-labels they were shown "
        f"(the honest reviewers {', '.join(rate(r) for r in honest_rates)}), against a "
        f"model error of {rate(model_error)} on gold; the quality service flagged "
        f"{', '.join(flagged) or 'nobody'}. In blind mode the same people must judge.")


__all__ = ["Behaviour", "Summary", "run_automation_bias", "run_demo"]
