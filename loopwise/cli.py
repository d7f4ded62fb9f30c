"""The ``loopwise`` command: run services, the demo, benchmarks, tokens and migrations."""

from __future__ import annotations

import asyncio
import signal
import time
from pathlib import Path
from typing import Annotated, Any

import typer

from shared.settings import SERVICES, Settings, get_settings

app = typer.Typer(help="loopwise: human-in-the-loop machine learning.", no_args_is_help=True,
                  pretty_exceptions_enable=False)
token_app = typer.Typer(help="API tokens.", no_args_is_help=True)
db_app = typer.Typer(help="Database schema.", no_args_is_help=True)
bench_app = typer.Typer(help="Benchmarks (results go to BENCHMARKS.md).", no_args_is_help=True)
app.add_typer(token_app, name="token")
app.add_typer(db_app, name="db")
evaluate_app = typer.Typer(help="Experiments that measure what the loop achieves "
                            "(results go to EVALUATION.md).", no_args_is_help=True)
app.add_typer(bench_app, name="bench")
app.add_typer(evaluate_app, name="evaluate")

JsonFlag = Annotated[bool, typer.Option("--json", help="print it as JSON (one document)")]
ActingAs = Annotated[str | None, typer.Option("--as", help="operator named in the audit log")]


class CommandError(Exception):
    """An operational failure the command explains in one line (exit 1): an unknown
    project, a token that does not exist. Usage errors stay typer's (exit 2)."""


@app.callback()
def _options(
    debug: Annotated[bool, typer.Option(
        "--debug", help="on a failure, show the traceback instead of one line (anywhere on "
                        "the command line; LOOPWISE_DEBUG=1 does the same)")] = False,
) -> None:
    """Options of every command (``--debug`` is read by :func:`main` before typer runs)."""


def _stderr_console() -> Any:
    """Progress and status go to stderr, so that stdout stays the result (--json)."""
    from rich.console import Console

    return Console(stderr=True)


def _status(message: str) -> Any:
    """A spinner on stderr for work that takes a while (drawn only on a terminal)."""
    return _stderr_console().status(message)


def _known_project(settings: Settings, project: str) -> None:
    """Refuse a project that has neither settings nor stored label events: a typo must not
    read as an empty project."""
    from services.labels.commands import project_exists

    if not asyncio.run(project_exists(settings, project)):
        raise CommandError(f"unknown project {project!r}: no settings and no stored label "
                           "events (check the name, or the database URL)")


def _warn_flush(redis_url: str, bench: str) -> None:
    """The line a benchmark prints before it deletes a Redis database's keys."""
    from redis.connection import parse_url

    db = parse_url(redis_url).get("db", 0)
    typer.echo(f"loopwise: warning: bench {bench} FLUSHES Redis database {db} at "
               f"{redis_url.split('@')[-1]} before it runs (every key in it is deleted; "
               "--redis-url chooses another)", err=True)


def _build_app(service: str, settings: Settings) -> Any:
    """The service's app, imported and built with the collector paused, then frozen.

    Imports and app building make hundreds of thousands of objects that live as long as
    the process; collecting among them during start-up was wasted work (start-up about
    15% faster), and freezing them keeps later collections from walking them again.
    """
    import gc
    from importlib import import_module

    from shared.service import tune_gc

    _check_service(service)
    gc.disable()
    try:
        app_ = import_module(f"services.{service}.app").create_app(settings)
    finally:
        gc.enable()
    tune_gc()
    return app_


def _check_service(service: str) -> None:
    if service not in SERVICES:
        raise typer.BadParameter(
            f"unknown service {service!r}; choose one of {', '.join(SERVICES)}"
        )


@app.command()
def serve(
    service: Annotated[str, typer.Argument(help="scorer | router | labels | quality")],
) -> None:
    """Run one service in this process (HTTP and stream consumers).

    With LOOPWISE_STREAM_WORKERS=N > 1 it also forks N-1 consumer-only workers (more
    consumers in the same groups, no HTTP), as ``loopwise consume`` would run them.
    """
    from shared.metricsdir import prepare

    settings = get_settings()
    _check_service(service)
    prepare(service, settings)  # before prometheus_client is imported (with the app)
    app_ = _build_app(service, settings)
    import uvicorn

    from loopwise.processes import fork_stream_workers, stop_forked

    workers = fork_stream_workers(app_, settings, settings.stream_workers - 1)
    try:
        uvicorn.run(
            app_,
            host=settings.host,
            port=settings.port_of(service),
            log_level=settings.log_level.lower(),
            access_log=False,
        )
    finally:
        stop_forked(workers)


@app.command()
def consume(
    service: Annotated[str, typer.Argument(help="scorer | router | labels | quality")],
) -> None:
    """Run one service's stream consumers only (no HTTP), until SIGTERM or Ctrl-C."""
    from loopwise.processes import consume_until_stopped, run_loop

    settings = get_settings()
    app_ = _build_app(service, settings)
    run_loop(consume_until_stopped(app_))


@app.command()
def up() -> None:
    """Start the four services, each its own process; Ctrl-C stops them all."""
    from loopwise.localredis import reachable
    from loopwise.processes import ServiceGroup
    from shared.db import upgrade

    settings = get_settings()
    upgrade(settings.database_url)
    if not reachable(settings.redis_url):
        raise CommandError(f"cannot use Redis ({settings.redis_url.split('@')[-1]}): it does "
                           "not answer; start redis-server or set LOOPWISE_REDIS_URL")
    group = ServiceGroup(settings)
    stopping = False

    def _stop(*_: object) -> None:
        nonlocal stopping
        stopping = True

    # Before the services start: a Ctrl-C while they come up stops them as cleanly as later.
    signal.signal(signal.SIGINT, _stop)
    signal.signal(signal.SIGTERM, _stop)
    try:
        group.start(should_stop=lambda: stopping)
        if not stopping:
            for name in SERVICES:
                typer.echo(f"{name:8s} {settings.url_of(name)}  "
                           f"(docs: {settings.url_of(name)}/docs)")
            typer.echo("Ctrl-C stops all four.")
        while not stopping:
            dead = group.dead()
            if dead:
                typer.echo(f"service exited: {', '.join(dead)}; stopping the others", err=True)
                group.stop()
                raise typer.Exit(1)
            time.sleep(0.5)
    finally:
        group.stop()
        typer.echo("stopped.")


@app.command()
def demo(
    project: Annotated[
        str | None, typer.Option(help="project name (default: digits-<time>)")
    ] = None,
    reviewers: Annotated[int, typer.Option(min=1, max=10)] = 3,
    overlap: Annotated[int, typer.Option(min=1, max=5)] = 2,
    threshold: Annotated[float, typer.Option(min=0.0, max=1.0)] = 0.9,
    seed_labels: Annotated[int, typer.Option(min=20)] = 50,
    start_services: Annotated[
        bool, typer.Option(help="start the services (else use running ones)")
    ] = True,
    scenario: Annotated[str | None, typer.Option(
        help="automation-bias: a third of the reviewers rubber-stamp, prelabel then blind "
             "mode; preferences: comparisons, a reward model and position bias on a world "
             "with known truth (either records EVALUATION.md with --write)")] = None,
    write: Annotated[bool, typer.Option(help="record the scenario in EVALUATION.md")] = False,
) -> None:
    """The whole loop on scikit-learn's digits, with simulated reviewers, then a summary."""
    from loopwise.demo import run_demo

    if scenario is not None:
        _demo_scenario(scenario, max(reviewers, 6), seed_labels, threshold, write)
        return

    summary = run_demo(
        get_settings(),
        project=project,
        reviewers=reviewers,
        overlap=overlap,
        threshold=threshold,
        seed_labels=seed_labels,
        start_services=start_services,
    )
    typer.echo(summary.render())
    if summary.evaluation:
        from loopwise.evaluation_report import write_report

        where = write_report(summary.evaluation, Path("var") / "reports" / summary.project)
        typer.echo(f"  evaluation report        {where.resolve()} (open it in a browser; "
                   f"`loopwise evaluate --project {summary.project}` prints it again)")
    typer.echo(_next_steps(summary.project))


def _command_path() -> str:
    """How the user can type ``loopwise`` from here: bare if it is on PATH, else the
    virtual environment's script (``.venv/bin/loopwise`` after ``make demo``)."""
    import os
    import shutil
    import sys

    script = Path(sys.executable).parent / "loopwise"
    on_path = shutil.which("loopwise")
    if on_path and Path(on_path).resolve() == script.resolve():
        return "loopwise"
    try:
        return os.path.relpath(script)
    except ValueError:
        return str(script)


def _next_steps(project: str) -> str:
    """What to do after the demo, with commands that work as printed (same database)."""
    import os

    from loopwise.localredis import reachable

    settings = get_settings()
    lw = _command_path()
    db = os.environ.get("LOOPWISE_DATABASE_URL")
    env = f"LOOPWISE_DATABASE_URL={db} " if db else ""
    lines = [
        "",
        "Next steps (the demo stopped its services; its labels stay in the database):",
        f"  make up    (or: {env}{lw} up)",
        "      the four services again, on the demo's database; Ctrl-C stops them",
        f"  {env}{lw} token create --user alice --role labeler --project {project}",
        "      a token for a reviewer (prints it)",
        f"  {settings.url_of('router')}/",
        "      the reviewer page: sign in with that token; number keys label, Enter submits",
        f"  {env}{lw} evaluate --project {project}",
        "      does the review pay? the figures above, again (--json for a script)",
        "  README.md, \"Python client\"",
        "      post items and predictions from your code (loopwise.client)",
    ]
    if not reachable(settings.redis_url):
        lines.append(f"  (`up` needs Redis at {settings.redis_url.split('@')[-1]}: the demo "
                     "used a private one; `redis-server --daemonize yes` starts one)")
    return "\n".join(lines)


def _demo_scenario(scenario: str, reviewers: int, seed_labels: int, threshold: float,
                   write: bool) -> None:
    if scenario == "preferences":
        _demo_preferences(write)
        return
    if scenario != "automation-bias":
        typer.echo(f"unknown scenario {scenario!r}: try automation-bias or preferences",
                   err=True)
        raise typer.Exit(2)
    from bench import report
    from loopwise.demo import SCENARIO_SECTION, run_automation_bias
    from loopwise.evaluate import REPORT
    from loopwise.evaluation_report import write_report

    summaries, text = run_automation_bias(get_settings(), reviewers, seed_labels, threshold)
    for summary in summaries:
        typer.echo(summary.render())
        where = write_report(summary.evaluation, Path("var") / "reports" / summary.project)
        typer.echo(f"  evaluation report        {where.resolve()}")
    body = "\n".join([SCENARIO_SECTION, "", *report.header(
        f"loopwise demo --scenario automation-bias --reviewers {reviewers}"), "", text, ""])
    typer.echo(body)
    if write:
        report.write_section(SCENARIO_SECTION, body, REPORT)


def _demo_preferences(write: bool) -> None:
    from bench import report
    from loopwise.demo_preferences import SECTION, run_preferences
    from loopwise.evaluate import REPORT

    summary = run_preferences(get_settings())
    body = "\n".join([SECTION, "", *report.header("loopwise demo --scenario preferences"), "",
                      summary.render(), ""])
    typer.echo(body)
    if write:
        report.write_section(SECTION, body, REPORT)


@token_app.command("create")
def token_create(
    user: Annotated[str, typer.Option(help="user id")],
    role: Annotated[str, typer.Option(help="labeler | reviewer | admin | service")],
    project: Annotated[str, typer.Option(help="project, or '*' for all")],
    ttl_days: Annotated[float | None, typer.Option(help="expire after this many days")] = None,
    acting_as: ActingAs = None,
) -> None:
    """Create an API token and print it (only its hash is stored). The project must exist
    (declared, or holding labels), or be '*': the same rule as POST /v1/tokens."""
    from services.labels.commands import cli_actor, create_token

    settings = _upgraded()
    try:
        made = asyncio.run(create_token(settings, cli_actor(acting_as), user, role, project,
                                        ttl_days))
    except LookupError as exc:
        raise CommandError(str(exc).strip("'\"")) from exc
    except ValueError as exc:
        raise typer.BadParameter(str(exc)) from exc
    typer.echo(made["token"])


@db_app.command("upgrade")
def db_upgrade(revision: str = "heads") -> None:
    """Apply the Alembic migrations (idempotent)."""
    from shared.db import upgrade

    upgrade(get_settings().database_url, revision)
    typer.echo("schema up to date")


def _record(heading: str, command: str, body: str, write: bool) -> str:
    """A benchmark section: command, machine and date above the results."""
    from datetime import UTC, datetime

    from bench import report

    text = (f"{heading}\n\nCommand: `{command}`  \nMachine: {report.machine()}  \n"
            f"Date: {datetime.now(UTC):%Y-%m-%d %H:%M} UTC\n\n{body.strip()}\n")
    # The body's own headings go one level below ours, so the section stays one section.
    text = text.replace("\n# ", "\n### ").replace("\n## ", "\n### ")
    if write:
        report.write_section(heading, text)
    return text


@bench_app.command("al")
def bench_al(
    seeds: Annotated[int, typer.Option(min=1, help="seeds per dataset (protocol: 10)")] = 10,
    write: Annotated[bool, typer.Option(help="update BENCHMARKS.md")] = True,
) -> None:
    """Active-learning curves on digits and breast_cancer: every strategy against random."""
    from bench.al import main

    body = main(seeds=seeds)
    body += "\n\n![learning curves](bench/plots/al_curves.png)\n"
    typer.echo(_record("## Active learning (loopwise bench al)",
                       f"loopwise bench al --seeds {seeds}", body, write))


@bench_app.command("preferences")
def bench_preferences(
    seeds: Annotated[int, typer.Option(min=5, help="seeds (at least 5)")] = 5,
    budget: Annotated[int, typer.Option(min=100, help="comparisons per run")] = 800,
    write: Annotated[bool, typer.Option(help="update BENCHMARKS.md")] = True,
) -> None:
    """Reward-model accuracy against comparisons: active pair selection against random."""
    from bench.preferences import main

    body = main(seeds=seeds, budget=budget)
    body += "\n\n![preference learning curves](bench/plots/preferences.png)\n"
    typer.echo(_record("## Preference learning (loopwise bench preferences)",
                       f"loopwise bench preferences --seeds {seeds} --budget {budget}", body,
                       write))


@bench_app.command("pool")
def bench_pool(
    rows: Annotated[int, typer.Option(min=10_000, help="pool size")] = 1_000_000,
    budget: Annotated[int, typer.Option(min=1)] = 1000,
    write: Annotated[bool, typer.Option(help="update BENCHMARKS.md")] = True,
) -> None:
    """Score a large pool and select a diverse batch, next to predict_proba alone."""
    from bench.pool import main

    typer.echo(_record("## Pool selection (loopwise bench pool)",
                       f"loopwise bench pool --rows {rows} --budget {budget}",
                       main(n=rows, budget=budget), write))


@bench_app.command("quality")
def bench_quality(
    items: Annotated[int, typer.Option(help="items in the simulated crowd")] = 200_000,
    runs: Annotated[int, typer.Option(help="rubber-stamp simulation runs")] = 200,
    write: Annotated[bool, typer.Option(help="update BENCHMARKS.md")] = True,
    scale: Annotated[bool, typer.Option(
        help="settle latency at 10k/100k/1M votes and state memory at 100k/1M")] = True,
    huge: Annotated[bool, typer.Option(
        help="also one Dawid-Skene fit on 10M votes (3.3M items x 3, 200 labelers)")] = False,
    e2e: Annotated[bool, typer.Option(
        help="instead: the quality service as a process on Redis and PostgreSQL, projects "
        "posted on loopwise:labels (consensus latency, restart with/without checkpoint)")
    ] = False,
    e2e_sizes: Annotated[str, typer.Option(help="--e2e: votes per project, comma-separated")
                         ] = "10000,100000,1000000",
    e2e_bursts: Annotated[int, typer.Option(min=1, help="--e2e: bursts timed per size")] = 20,
    redis_url: Annotated[str, typer.Option(
        help="--e2e: a Redis database of its own: it is FLUSHED at start")
    ] = "redis://127.0.0.1:6379/9",
    database_url: Annotated[str | None, typer.Option(
        help="--e2e: a PostgreSQL database (the bench-e2e-* projects' rows are deleted)")] = None,
    port: Annotated[int, typer.Option(help="--e2e: the quality service's port")] = 8104,
    latency_only: Annotated[bool, typer.Option(
        help="instead: only the in-process settle latency at 10k/100k/1M votes")] = False,
    restart_votes: Annotated[int, typer.Option(
        help="instead: restart from a checkpoint against a full replay, with this many "
        "votes stored (needs --database-url; the bench-restart project's rows are deleted)")] = 0,
) -> None:
    """Dawid-Skene vs crowd-kit, quality at scale, rubber-stamp detection (BENCHMARKS.md)."""
    if latency_only:
        from bench import quality_scale

        typer.echo(_record("## Quality settle latency (loopwise bench quality --latency-only)",
                           "loopwise bench quality --latency-only",
                           "\n".join(quality_scale.render_latency(
                               quality_scale.settle_latency())), write))
        return
    if restart_votes:
        from bench import quality_scale

        if not database_url:
            raise typer.BadParameter("--restart-votes needs --database-url")
        typer.echo(_record("## Quality restart (loopwise bench quality --restart-votes)",
                           f"loopwise bench quality --restart-votes {restart_votes}",
                           "\n".join(quality_scale.render_restart(
                               quality_scale.restart_times(restart_votes, database_url))),
                           write))
        return
    if e2e:
        from bench import quality_e2e

        if not database_url:
            raise typer.BadParameter("--e2e needs --database-url (postgresql+asyncpg://...)")
        _warn_flush(redis_url, "quality --e2e")
        sizes = tuple(int(s) for s in e2e_sizes.split(",") if s.strip())
        result = quality_e2e.run(sizes, e2e_bursts, redis_url, database_url, port)
        typer.echo(_record("## Quality end to end (loopwise bench quality --e2e)",
                           f"loopwise bench quality --e2e --e2e-sizes {e2e_sizes} "
                           f"--e2e-bursts {e2e_bursts}",
                           "\n".join(quality_e2e.render(result)), write))
        return
    from bench.quality import run

    typer.echo(run(n_items=items, runs=runs, write=write, scale=scale, huge=huge))


@bench_app.command("review")
def bench_review(
    per_population: Annotated[int, typer.Option(help="reviewers of each kind")] = 10,
    tasks: Annotated[int, typer.Option(help="tasks each reviewer labels")] = 2000,
    seed: Annotated[int, typer.Option()] = 1,
    concurrency: Annotated[int, typer.Option(help="reviewers working at once")] = 8,
    simulated: Annotated[int, typer.Option(
        help="reviewers of each kind fed to the quality state directly (0: none)")] = 500,
    redis_url: Annotated[str, typer.Option(
        help="a Redis database of its own: it is FLUSHED at start")] = "redis://127.0.0.1:6379/8",
    database_url: Annotated[str | None, typer.Option(help="default: SQLite in a temp dir")] = None,
    write: Annotated[bool, typer.Option(help="update BENCHMARKS.md")] = True,
) -> None:
    """Reviewer-quality detection: many reviewers against the quality service's state,
    and a few through the four running services (BENCHMARKS.md)."""
    from bench.review import SECTION, run

    if per_population:
        _warn_flush(redis_url, "review")
    body = run(per_population, tasks, seed, concurrency, redis_url, database_url,
               simulated=simulated)
    command = (f"loopwise bench review --per-population {per_population} --tasks {tasks} "
               f"--simulated {simulated} --seed {seed}")
    typer.echo(_record(SECTION, command, body, write))


@bench_app.command("soak")
def bench_soak(
    rate: Annotated[float, typer.Option(min=1, help="predictions posted a second")] = 5000.0,
    seconds: Annotated[float, typer.Option(min=1, max=3600, help="how long to post")] = 600.0,
    warmup: Annotated[float, typer.Option(
        min=0, help="seconds not counted in the after-warm-up figures")] = 60.0,
    redis_url: Annotated[str, typer.Option(
        help="a Redis database of its own: it is FLUSHED at start")
    ] = "redis://127.0.0.1:6379/10",
    database_url: Annotated[str | None, typer.Option(
        help="the label store (default: SQLite in a temp dir)")] = None,
    port_base: Annotated[int, typer.Option(help="services on port_base+1..+4")] = 29100,
    workers: Annotated[int, typer.Option(
        min=1, help="stream workers of the router and the labels service "
                    "(LOOPWISE_STREAM_WORKERS)")] = 2,
    retention_seconds: Annotated[int, typer.Option(
        min=0, help="LOOPWISE_STREAM_RETENTION_SECONDS for the services")] = 60,
    write: Annotated[bool, typer.Option(help="update BENCHMARKS.md and bench/plots/soak.png")
                     ] = True,
) -> None:
    """Predictions at a fixed rate through the four services: throughput, end-to-end
    latency, stream lengths and memory over time (BENCHMARKS.md).

    FLUSHES the Redis database at --redis-url first (default db 10)."""
    import sys
    import tempfile
    from pathlib import Path

    from bench.soak import SECTION, run

    _warn_flush(redis_url, "soak")
    plot = (Path(__file__).resolve().parents[1] / "bench" / "plots" / "soak.png" if write
            else Path(tempfile.mkdtemp(prefix="loopwise-soak-plot-")) / "soak.png")
    body = run(rate=rate, seconds=seconds, warmup=warmup, redis_url=redis_url,
               database_url=database_url, port_base=port_base, workers=workers,
               retention_seconds=retention_seconds, plot=plot)
    if write:
        body += "\n\n![soak](bench/plots/soak.png)\n"
    typer.echo(_record(SECTION, " ".join(["loopwise", *sys.argv[1:]]), body, write))


@bench_app.command("scale")
def bench_scale(
    n: Annotated[int, typer.Option(min=1000, help="predictions a run")] = 60_000,
    rounds: Annotated[int, typer.Option(min=1, help="rounds of one then two replicas")] = 2,
    redis_url: Annotated[str, typer.Option(
        help="a Redis database of its own: it is FLUSHED before each run")
    ] = "redis://127.0.0.1:6379/11",
    database_url: Annotated[str, typer.Option(
        help="the label store: PostgreSQL (postgresql+asyncpg://...)")] = "",
    port_base: Annotated[int, typer.Option(
        help="replica k serves on port_base+10k+2 (router), +3 (labels)")] = 29200,
    write: Annotated[bool, typer.Option(help="update BENCHMARKS.md")] = True,
) -> None:
    """One replica of the router and the labels service against two, same run
    (BENCHMARKS.md). FLUSHES the Redis database at --redis-url (default db 11)."""
    import sys

    from bench.scale import SECTION, run

    body = run(n=n, rounds=rounds, redis_url=redis_url, database_url=database_url,
               port_base=port_base)
    typer.echo(_record(SECTION, " ".join(["loopwise", *sys.argv[1:]]), body, write))


@bench_app.command("cluster")
def bench_cluster(
    rounds: Annotated[int, typer.Option(min=1, help="rounds of both clients (A B B A)")] = 2,
    predictions: Annotated[int, typer.Option(min=1000, help="routed predictions a run")
                           ] = 24_000,
    reviews: Annotated[int, typer.Option(min=100, help="reviews (next + submit) a run")
                       ] = 6_000,
    cluster_url: Annotated[str, typer.Option(
        help="a redis+cluster:// node of a cluster to use; unset: start six nodes")] = "",
    port_base: Annotated[int, typer.Option(
        help="the started cluster's nodes listen on port_base..+5 (their bus +500)")] = 29400,
    write: Annotated[bool, typer.Option(help="update BENCHMARKS.md")] = True,
) -> None:
    """The router's scripts on a Redis Cluster: the auto-pipelining link against redis-py's
    cluster client, same run (BENCHMARKS.md)."""
    import sys

    from bench.cluster import SECTION, run

    body = run(rounds=rounds, predictions=predictions, reviews=reviews,
               cluster_url=cluster_url, port_base=port_base)
    typer.echo(_record(SECTION, " ".join(["loopwise", *sys.argv[1:]]), body, write))


# --- labels store commands (issue 5): operator tools acting on the database directly ----------

labels_app = typer.Typer(
    help="Label-set versions, reverts, exports, imports.", no_args_is_help=True
)
users_app = typer.Typer(help="Users.", no_args_is_help=True)
app.add_typer(labels_app, name="labels")
app.add_typer(users_app, name="users")


def _upgraded() -> Settings:
    """The settings, with the database migrated to the newest schema."""
    from shared.db import upgrade

    settings = get_settings()
    upgrade(settings.database_url)
    return settings


def _jsonable(value: object) -> object:
    """Times as ISO 8601 (what the HTTP API sends), anything else as its text."""
    from datetime import date

    return value.isoformat() if isinstance(value, date) else str(value)


def _echo_json(value: object) -> None:
    typer.echo(_json_text(value))


@token_app.command("revoke")
def token_revoke(
    token_id: Annotated[int, typer.Argument(help="token id (`loopwise token list`)")],
    acting_as: ActingAs = None,
    as_json: JsonFlag = False,
) -> None:
    """Revoke a token; services stop accepting it within 2 s."""
    from services.labels.commands import cli_actor, revoke_token

    try:
        was_live = asyncio.run(revoke_token(_upgraded(), token_id, cli_actor(acting_as)))
    except LookupError as exc:
        raise CommandError(str(exc).strip("'\"")) from exc
    if as_json:
        _echo_json({"id": token_id, "revoked": True, "was_live": was_live})
    else:
        typer.echo("revoked" if was_live else "the token was already revoked or expired")


@token_app.command("list")
def token_list(
    user: Annotated[str | None, typer.Option(help="only this user's tokens")] = None,
    project: Annotated[str | None, typer.Option(help="only tokens for this project")] = None,
    as_json: JsonFlag = False,
) -> None:
    """List tokens (never their secrets): id, user, role, project, expiry, revocation."""
    from services.labels.commands import list_tokens

    rows = asyncio.run(list_tokens(_upgraded(), user=user, project=project))
    if as_json:
        _echo_json(rows)
        return
    for t in rows:
        state = ("revoked " + f"{t['revoked_at']:%Y-%m-%d %H:%M}" if t["revoked_at"] else
                 "expires " + f"{t['expires_at']:%Y-%m-%d %H:%M}" if t["expires_at"] else
                 "no expiry")
        typer.echo(f"{t['id']:>6}  {t['user_id']:20s} {t['role']:9s} {t['project']:20s} "
                   f"created {t['created_at']:%Y-%m-%d %H:%M}  {state}")
    typer.echo(f"{len(rows)} token(s)", err=True)


@users_app.command("list")
def users_list(as_json: JsonFlag = False) -> None:
    """List users."""
    from services.labels.commands import cli_actor, user_command

    rows = asyncio.run(user_command(_upgraded(), "list", cli_actor(), None))
    if as_json:
        _echo_json(rows)
        return
    for u in rows:
        disabled = f"disabled {u['disabled_at']:%Y-%m-%d %H:%M}" if u.get("disabled_at") \
            else "active"
        typer.echo(f"{u['user_id']:24s} {u.get('display_name') or '':20s} {disabled}")
    typer.echo(f"{len(rows)} user(s)", err=True)


@users_app.command("create")
def users_create(user: Annotated[str, typer.Argument()], acting_as: ActingAs = None) -> None:
    """Register a user (tokens are made with `loopwise token create`)."""
    from services.labels.commands import cli_actor, user_command

    asyncio.run(user_command(_upgraded(), "create", cli_actor(acting_as), user))
    typer.echo(f"user {user} exists")


@users_app.command("disable")
def users_disable(user: Annotated[str, typer.Argument()], acting_as: ActingAs = None) -> None:
    """Disable a user: all of their tokens stop working within 2 s."""
    from services.labels.commands import cli_actor, user_command

    try:
        asyncio.run(user_command(_upgraded(), "disable", cli_actor(acting_as), user))
    except (ValueError, LookupError) as exc:
        raise typer.BadParameter(str(exc)) from exc
    typer.echo(f"user {user} disabled")


@labels_app.command("export")
def labels_export(
    project: Annotated[str, typer.Option(help="project")],
    version: Annotated[
        str | None, typer.Option(help="version number or name (default: head)")
    ] = None,
    format: Annotated[str, typer.Option(help="jsonl | csv | labelstudio")] = "jsonl",
    out: Annotated[
        str | None, typer.Option(help="output file (default: <project>-<version>.<ext>)")
    ] = None,
    item_key: Annotated[str | None, typer.Option(
        help="labelstudio: a data field to write the item id into")] = None,
    annotator_domain: Annotated[str, typer.Option(
        help="labelstudio: email domain for labelers (alice -> alice@DOMAIN)")] = "loopwise.local",
    as_json: JsonFlag = False,
) -> None:
    """Stream a version's labels to a file, with progress (on stderr)."""
    from pathlib import Path

    from rich.progress import BarColumn, MofNCompleteColumn, Progress, TimeRemainingColumn

    from services.labels.commands import export_version
    from services.labels.export import FORMATS

    if format not in FORMATS:
        raise typer.BadParameter(f"format must be one of {', '.join(FORMATS)}")
    ext = {"jsonl": "jsonl", "csv": "csv", "labelstudio": "json"}[format]
    path = Path(out or f"{project}-{version or 'head'}.{ext}")
    settings = _upgraded()
    _known_project(settings, project)
    with Progress("[progress.description]{task.description}", BarColumn(), MofNCompleteColumn(),
                  TimeRemainingColumn(), transient=False,
                  console=_stderr_console()) as progress:  # fmt: skip
        task = progress.add_task(f"exporting {project} to {path}", total=None)
        try:
            with path.open("wb") as sink:
                written = asyncio.run(export_version(
                    settings, project, sink, version=version, fmt=format, item_key=item_key,
                    annotator_domain=annotator_domain,
                    on_start=lambda total: progress.update(task, total=total),
                    on_rows=lambda n: progress.advance(task, n),
                ))  # fmt: skip
        except LookupError as exc:
            path.unlink(missing_ok=True)
            raise CommandError(str(exc).strip("'\"")) from exc
    if as_json:
        _echo_json({"project": project, "version": version or "head", "format": format,
                    "rows": written, "path": str(path)})
    else:
        typer.echo(f"{written} rows written to {path}")


@labels_app.command("import")
def labels_import(
    project: Annotated[str, typer.Option(help="project")],
    file: Annotated[str, typer.Argument(help="Label Studio JSON export")],
    label_key: Annotated[str | None, typer.Option(help="from_name of the label control")] = None,
    item_key: Annotated[str | None, typer.Option(help="data field holding the item id")] = None,
    batch_id: Annotated[str | None, typer.Option(help="batch id (default: file digest)")] = None,
    dry_run: Annotated[bool, typer.Option(help="check and report, write nothing")] = False,
    users: Annotated[str | None, typer.Option(
        help="Label Studio's GET /api/users/ saved as a file: annotators named by id are "
             "known by their email")] = None,
    annotator_domain: Annotated[str, typer.Option(
        help="an annotator email of this domain is that loopwise labeler "
             "(alice@DOMAIN -> alice)")] = "loopwise.local",
    acting_as: ActingAs = None,
    as_json: JsonFlag = False,
) -> None:
    """Import a Label Studio JSON export: every annotation or none (source=import)."""
    from pathlib import Path

    from services.labels.commands import cli_actor, import_labelstudio_file
    from services.labels.labelstudio import LabelStudioFormatError, user_emails

    data = Path(file).read_bytes()
    try:
        emails = user_emails(Path(users).read_bytes()) if users else None
    except LabelStudioFormatError as exc:
        raise CommandError(f"{users} is not Label Studio's user list: {exc.problems[0]}"
                           ) from exc
    settings = _upgraded()
    try:
        with _status(f"importing {file} ({len(data):,} bytes) into {project}"):
            summary = asyncio.run(import_labelstudio_file(
                settings, project, data, cli_actor(acting_as), label_key=label_key,
                item_key=item_key, batch_id=batch_id, dry_run=dry_run, users=emails,
                annotator_domain=annotator_domain,
            ))  # fmt: skip
    except LabelStudioFormatError as exc:
        problems = "; ".join(map(str, exc.problems[:3]))
        more = f" (and {len(exc.problems) - 3} more)" if len(exc.problems) > 3 else ""
        raise CommandError(f"{file} is not a Label Studio JSON export: {problems}{more}"
                           ) from exc
    except ValueError as exc:
        raise CommandError(f"{file}: {exc}") from exc
    if as_json:
        _echo_json(summary)
        return
    what = "would import" if dry_run else "imported"
    typer.echo(f"{what} {summary.get('annotations', 0)} annotation(s) of "
               f"{summary.get('tasks', 0)} task(s) into {project} as batch "
               f"{summary.get('batch_id')}; {len(summary.get('skipped', []))} skipped, "
               f"{summary.get('ignored', 0)} ignored")
    for skipped in summary.get("skipped", [])[:20]:
        typer.echo(f"  skipped: {skipped}")


@labels_app.command("versions")
def labels_versions(project: Annotated[str, typer.Option(help="project")],
                    as_json: JsonFlag = False) -> None:
    """List a project's label-set versions."""
    from services.labels.commands import list_versions

    settings = _upgraded()
    _known_project(settings, project)
    versions = asyncio.run(list_versions(settings, project))
    if as_json:
        _echo_json(versions)
        return
    if not versions:
        typer.echo(f"project {project} has no versions yet (`POST .../versions` makes one)",
                   err=True)
    for v in versions:
        typer.echo(f"{v['number']:>4}  {v['kind']:8s} {v['created_at']:%Y-%m-%d %H:%M:%S}  "
                   f"{v['author']}  -{v['excluded']} +{v['included']}  {v['name'] or ''}  "
                   f"{v['message']}")  # fmt: skip


@labels_app.command("revert")
def labels_revert(
    project: Annotated[str, typer.Option(help="project")],
    batch: Annotated[str | None, typer.Option(help="revert this batch id")] = None,
    labeler: Annotated[str | None, typer.Option(help="revert this labeler's labels")] = None,
    guideline: Annotated[str | None, typer.Option(help="revert this guideline version")] = None,
    since: Annotated[str | None, typer.Option(help="labels created at or after (ISO time)")] = None,
    until: Annotated[str | None, typer.Option(help="labels created before (ISO time)")] = None,
    event: Annotated[
        list[str] | None, typer.Option(help="revert this event id (repeatable)")
    ] = None,
    undo_version: Annotated[
        str | None, typer.Option(help="revert the revert made as this version")
    ] = None,
    message: Annotated[str, typer.Option(help="why")] = "",
    apply: Annotated[bool, typer.Option(help="make the version (default: dry run)")] = False,
    acting_as: ActingAs = None,
    as_json: JsonFlag = False,
) -> None:
    """Revert labels as a new version; without --apply, show what would change."""
    from pydantic import ValidationError

    from services.labels.commands import cli_actor, revert
    from services.labels.revert import RevertSelector

    selector = None
    settings = _upgraded()
    _known_project(settings, project)
    try:
        if undo_version is None:
            selector = RevertSelector(batch_id=batch, labeler_id=labeler,
                                      guideline_version=guideline, created_from=since,
                                      created_to=until, event_ids=event)  # fmt: skip
        result = asyncio.run(revert(
            settings, project, cli_actor(acting_as), selector=selector,
            undo_version=undo_version, message=message, dry_run=not apply,
        ))  # fmt: skip
    except ValidationError as exc:
        raise typer.BadParameter(str(exc)) from exc
    except (ValueError, LookupError) as exc:
        raise CommandError(str(exc).strip("'\"")) from exc
    if as_json:
        _echo_json(result)
        return
    for effect in result["effects"]:
        typer.echo(f"{effect['item_id']}: {effect['before']} -> {effect['after']}")
    if result["version"] is None:
        typer.echo(f"dry run: {result['events']} event(s), {result['items']} item(s); "
                   "--apply makes the version")  # fmt: skip
    else:
        typer.echo(f"version {result['version']['number']} made: {result['events']} event(s)")


@bench_app.command("labels")
def bench_labels(
    events: Annotated[int, typer.Option(help="label events for the ingest benchmark")] = 200_000,
    export_labels: Annotated[int, typer.Option(help="labels in the exported version")] = 1_000_000,
    write: Annotated[bool, typer.Option(help="record the results in BENCHMARKS.md")] = True,
) -> None:
    """Label ingest (batched inserts vs COPY) and a 1M-label streamed export."""
    from bench.labels import run

    typer.echo(run(get_settings(), events=events, export_labels=export_labels, write=write))


@bench_app.command("router")
def bench_router(
    redis_url: Annotated[str, typer.Option(
        help="a Redis database for the bench alone: it is FLUSHDB'ed at start")
    ] = "redis://127.0.0.1:6379/9",
    database_url: Annotated[str | None, typer.Option(
        help="database for the router's auth (default: SQLite in a temp dir)")] = None,
    predictions: Annotated[int, typer.Option(min=1000, help="entries put on the stream")] = 200_000,
    clients: Annotated[int, typer.Option(min=1, help="concurrent reviewer clients")] = 64,
    seconds: Annotated[float, typer.Option(
        min=1, max=30, help="measured load per server and round")] = 20.0,
    rounds: Annotated[int, typer.Option(min=1, help="alternating router/bare load rounds")] = 3,
    routing_rounds: Annotated[int, typer.Option(
        min=1, help="paired raw-loop/router routing rounds")] = 3,
    router_port: Annotated[int, typer.Option()] = 29002,
    bare_port: Annotated[int, typer.Option()] = 29010,
    workers: Annotated[int, typer.Option(
        min=1, help="stream workers of the headline routing run (another run uses one)")] = 3,
    write: Annotated[bool, typer.Option(help="record the results in BENCHMARKS.md")] = True,
) -> None:
    """Routing rate vs a raw XREADGROUP loop; reviewer API vs a bare endpoint.

    FLUSHES the Redis database at --redis-url first (default db 9), then fills it.
    """
    import sys

    from bench.router import main, write_section

    _warn_flush(redis_url, "router")
    report = main(redis_url=redis_url, database_url=database_url, predictions=predictions,
                  clients=clients, seconds=seconds, router_port=router_port,
                  bare_port=bare_port, workers=workers, rounds=rounds,
                  routing_rounds=routing_rounds,
                  command=" ".join(["loopwise", *sys.argv[1:]]))
    if write:
        write_section(report)
    typer.echo(report)


@evaluate_app.callback(invoke_without_command=True)
def evaluate_project(
    ctx: typer.Context,
    project: Annotated[str | None, typer.Option(
        help="evaluate this project's review from its stored label events")] = None,
    report: Annotated[Path | None, typer.Option(
        help="also write a self-contained HTML report (index.html) into this folder")] = None,
    as_json: Annotated[bool, typer.Option("--json", help="print the figures as JSON")] = False,
) -> None:
    """Does the project's review pay? Label error before and after each stage, per mode,
    with intervals and verdicts (the same figures as GET :8004/v1/projects/{p}/evaluation).
    ``loopwise evaluate review`` is the design-time simulation on digits."""
    if ctx.invoked_subcommand is not None:
        return
    if project is None:
        typer.echo(ctx.get_help())
        raise typer.Exit(2)
    from loopwise.evaluation_report import render_text, write_report
    from services.quality.service import evaluation_of
    from shared.db import make_engine
    from shared.peers import Peers

    settings = _upgraded()
    _known_project(settings, project)

    async def load() -> dict[str, Any]:
        engine = make_engine(settings.database_url)
        peers = Peers(settings, engine, "cli")  # the scorer refits the model comparison
        try:
            return await evaluation_of(engine, project, peers)
        finally:
            await peers.aclose()
            await engine.dispose()

    with _status(f"evaluating {project} from its stored label events"):
        result = asyncio.run(load())
    if result["label_events"] == 0:
        raise CommandError(f"project {project!r} has no stored label events to evaluate")
    typer.echo(_json_text(result) if as_json else render_text(result))
    if report is not None:
        typer.echo(f"report: {write_report(result, report)}", err=as_json)


def _json_text(value: object) -> str:
    import json

    return json.dumps(value, indent=2, default=_jsonable)


@evaluate_app.command("review")
def evaluate_review(
    seeds: Annotated[int, typer.Option(min=1, help="data splits (and random streams)")] = 5,
    rounds: Annotated[int, typer.Option(min=1, help="predict-route-review-retrain rounds")] = 8,
    budget: Annotated[int, typer.Option(min=1, help="human labels a round")] = 40,
    seed_labels: Annotated[int, typer.Option(min=10, help="labels before the first model")] = 30,
    threshold: Annotated[float, typer.Option(min=0.0, max=1.0,
                                             help="auto-accept confidence")] = 0.9,
    accuracy: Annotated[float, typer.Option(min=0.0, max=1.0,
                                            help="reviewers' accuracy when judging")] = 0.92,
    defer: Annotated[float, typer.Option(
        min=0.0, max=1.0, help="chance a reviewer keeps a shown pre-label unjudged")] = 0.5,
    write: Annotated[bool, typer.Option(help="record in EVALUATION.md, plot in bench/plots")
                     ] = True,
) -> None:
    """Does human review pay for itself? The loop against random sampling and no review."""
    import sys

    from loopwise.evaluate import main

    typer.echo(main(" ".join(["loopwise", *sys.argv[1:]]), write=write, seeds=seeds,
                    rounds=rounds, budget=budget, seed_labels=seed_labels,
                    threshold=threshold, accuracy=accuracy, defer=defer))


def _one_line(exc: BaseException) -> str:
    """Why a command failed, in one line an operator can act on."""
    if isinstance(exc, CommandError):
        return str(exc)
    if isinstance(exc, FileNotFoundError | IsADirectoryError | PermissionError):
        return f"{exc.strerror}: {exc.filename}"
    name = type(exc).__module__.split(".")[0]
    first = (str(exc).strip().splitlines() or [type(exc).__name__])[0]
    if name == "sqlalchemy" or isinstance(exc, ConnectionRefusedError | TimeoutError):
        url = get_settings().database_url.split("@")[-1]
        return f"cannot use the database ({url}): {first}"
    if name == "redis":
        url = get_settings().redis_url.split("@")[-1]
        return f"cannot use Redis ({url}): {first}"
    if _caused_by_redis(exc):  # e.g. stored, but Redis was down when it was to be published
        url = get_settings().redis_url.split("@")[-1]
        return f"cannot use Redis ({url}): {first}"
    return f"{type(exc).__name__}: {first}"


def _caused_by_redis(exc: BaseException) -> bool:
    seen: set[int] = set()
    cause = exc.__cause__ or exc.__context__
    while cause is not None and id(cause) not in seen:
        seen.add(id(cause))
        if type(cause).__module__.split(".")[0] == "redis":
            return True
        cause = cause.__cause__ or cause.__context__
    return False


def main() -> None:
    """The ``loopwise`` command. A command that fails says why in one line on stderr and
    exits 1 (usage errors: 2), instead of a traceback; ``--debug`` (anywhere on the command
    line) or LOOPWISE_DEBUG=1 shows it."""
    import os
    import sys

    debug = "--debug" in sys.argv[1:] or os.environ.get("LOOPWISE_DEBUG") == "1"
    sys.argv[1:] = [a for a in sys.argv[1:] if a != "--debug"]
    try:
        app()
    except Exception as exc:
        if debug:
            raise
        failure: BaseException = exc
        cause = exc.__cause__ or exc.__context__
        if type(exc).__module__.startswith("alembic") and cause is not None:
            failure = cause  # the migration could not run: say why, not where
        print(f"loopwise: error: {_one_line(failure)}", file=sys.stderr)
        sys.exit(1)


if __name__ == "__main__":
    main()
