"""Commands for subscriber services: run them, and check that they are alive."""

from __future__ import annotations

import asyncio
from collections.abc import Sequence
from typing import Annotated, Any

import typer

from streamstore.cli._app import (
    CliError,
    Url,
    app,
    checked_url,
    connect,
    load_object,
    plural,
    reported,
)
from streamstore.connection import DEFAULT_URL
from streamstore.projections.runner import Runner, check_health
from streamstore.projections.subscriber import Subscriber

Target = Annotated[
    str,
    typer.Argument(
        metavar="SUBSCRIBER",
        help="module:name of a Subscriber, or of a list of them, e.g. app.services:indexer.",
    ),
]


def load_subscribers(path: str) -> list[Subscriber]:
    """Import one subscriber, or a list or tuple of them, from ``module:name``."""
    found: Any = load_object(path, "subscriber", "module:name, e.g. app.services:indexer")
    subscribers = list(found) if isinstance(found, list | tuple) else [found]
    if not subscribers or not all(isinstance(s, Subscriber) for s in subscribers):
        raise CliError(
            f"{path!r} is not a Subscriber (make one with @subscriber) or a list of them"
        )
    return subscribers


@app.command()
def run(
    target: Target,
    *,
    url: Url = DEFAULT_URL,
    burst: Annotated[bool, typer.Option("--burst", help="Handle the backlog, then exit.")] = False,
    concurrency: Annotated[int, typer.Option(min=1, help="Handlers running at once.")] = 10,
    batch: Annotated[int, typer.Option(min=1, help="Entries read per call.")] = 100,
    lease_ms: Annotated[
        int, typer.Option(min=100, help="How long a crashed runner's partitions wait (ms).")
    ] = 10_000,
    name: Annotated[str | None, typer.Option(help="This runner's consumer name.")] = None,
) -> None:
    """Run subscribers until SIGINT/SIGTERM, which drain what is in hand before exiting."""
    with reported():
        subscribers = load_subscribers(target)
        runner = Runner(
            *subscribers,
            redis=checked_url(url),
            burst=burst,
            concurrency=concurrency,
            batch=batch,
            lease_ms=lease_ms,
            name=name,
        )
        runner.run()
    stats = runner.stats
    typer.echo(
        f"{runner.name}: handled {plural(stats.handled, 'change')}, skipped {stats.skipped}, "
        f"retried {stats.retried}, dead-lettered {stats.dead_lettered}",
        err=True,
    )


@app.command()
def check(
    target: Target,
    *,
    url: Url = DEFAULT_URL,
    max_age: Annotated[float, typer.Option(help="Seconds a health report stays fresh.")] = 15.0,
) -> None:
    """Exit 0 if every subscriber has a runner that reported recently, else 1."""

    async def read(subscribers: Sequence[Subscriber]) -> dict[str, list[Any]]:
        async with connect(url) as client:
            return await check_health(client, subscribers, max_age=max_age)

    with reported():
        found = asyncio.run(read(load_subscribers(target)))
    healthy = True
    for name, reports in found.items():
        if not reports:
            healthy = False
            typer.echo(f"{name}: unhealthy, no runner reported in the last {max_age:g} s")
            continue
        handled = sum(int(r.get("handled", 0)) for r in reports)
        typer.echo(f"{name}: healthy, {plural(len(reports), 'runner')}, {handled} handled")
    raise typer.Exit(0 if healthy else 1)
