"""The ``loopwise`` command: run services, the demo, benchmarks, tokens and migrations."""

from __future__ import annotations

import asyncio
import signal
import time
from typing import Annotated

import typer

from shared.settings import SERVICES, get_settings

app = typer.Typer(help="loopwise: human-in-the-loop machine learning.", no_args_is_help=True)
token_app = typer.Typer(help="API tokens.", no_args_is_help=True)
db_app = typer.Typer(help="Database schema.", no_args_is_help=True)
bench_app = typer.Typer(help="Benchmarks (results go to BENCHMARKS.md).", no_args_is_help=True)
app.add_typer(token_app, name="token")
app.add_typer(db_app, name="db")
app.add_typer(bench_app, name="bench")


def _app_factory(service: str):
    from importlib import import_module

    return import_module(f"services.{service}.app").create_app


@app.command()
def serve(
    service: Annotated[str, typer.Argument(help="scorer | router | labels | quality")],
) -> None:
    """Run one service in this process (HTTP and stream consumers)."""
    import uvicorn

    if service not in SERVICES:
        raise typer.BadParameter(
            f"unknown service {service!r}; choose one of {', '.join(SERVICES)}"
        )
    settings = get_settings()
    uvicorn.run(
        _app_factory(service)(settings),
        host=settings.host,
        port=settings.port_of(service),
        log_level=settings.log_level.lower(),
        access_log=False,
    )


@app.command()
def up() -> None:
    """Start the four services, each its own process; Ctrl-C stops them all."""
    from loopwise.processes import ServiceGroup
    from shared.db import upgrade

    settings = get_settings()
    upgrade(settings.database_url)
    group = ServiceGroup(settings)
    group.start()
    for name in SERVICES:
        typer.echo(f"{name:8s} {settings.url_of(name)}  (docs: {settings.url_of(name)}/docs)")
    typer.echo("Ctrl-C stops all four.")
    stopping = False

    def _stop(*_: object) -> None:
        nonlocal stopping
        stopping = True

    signal.signal(signal.SIGINT, _stop)
    signal.signal(signal.SIGTERM, _stop)
    try:
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
) -> None:
    """The whole loop on scikit-learn's digits, with simulated reviewers, then a summary."""
    from loopwise.demo import run_demo

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


@token_app.command("create")
def token_create(
    user: Annotated[str, typer.Option(help="user id")],
    role: Annotated[str, typer.Option(help="labeler | reviewer | admin | service")],
    project: Annotated[str, typer.Option(help="project, or '*' for all")],
    ttl_days: Annotated[float | None, typer.Option(help="expire after this many days")] = None,
) -> None:
    """Create an API token and print it (only its hash is stored)."""
    from shared.auth import create_token
    from shared.db import make_engine, upgrade

    settings = get_settings()
    upgrade(settings.database_url)

    async def _create() -> str:
        engine = make_engine(settings.database_url)
        try:
            return await create_token(engine, user, role, project, ttl_days)
        finally:
            await engine.dispose()

    try:
        typer.echo(asyncio.run(_create()))
    except ValueError as exc:
        raise typer.BadParameter(str(exc)) from exc


@db_app.command("upgrade")
def db_upgrade(revision: str = "heads") -> None:
    """Apply the Alembic migrations (idempotent)."""
    from shared.db import upgrade

    upgrade(get_settings().database_url, revision)
    typer.echo("schema up to date")


@bench_app.command("quality")
def bench_quality(
    items: Annotated[int, typer.Option(help="items in the simulated crowd")] = 200_000,
    runs: Annotated[int, typer.Option(help="rubber-stamp simulation runs")] = 200,
    write: Annotated[bool, typer.Option(help="update BENCHMARKS.md")] = True,
) -> None:
    """Dawid-Skene vs crowd-kit, and rubber-stamp detection (BENCHMARKS.md)."""
    from bench.quality import run

    typer.echo(run(n_items=items, runs=runs, write=write))


if __name__ == "__main__":
    app()
