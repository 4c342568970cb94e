"""The ``import`` command: records pydantic-redis or pydantic-aioredis stored, as ``saved`` events."""

from __future__ import annotations

import asyncio
import contextlib
from enum import StrEnum
from typing import Annotated

import typer

from streamstore.cli._app import (
    CliError,
    ModelPath,
    Url,
    app,
    connect,
    load_model,
    plural,
    progress,
    reported,
)
from streamstore.connection import DEFAULT_URL
from streamstore.errors import UsageError
from streamstore.migrate import ImportReport, Source, import_records, old_key_pattern
from streamstore.table import TableModel


class Library(StrEnum):
    """The libraries ``--from`` names (an Enum, so ``--help`` lists them)."""

    PYDANTIC_REDIS = "pydantic-redis"
    PYDANTIC_AIOREDIS = "pydantic-aioredis"


@app.command("import")
def import_(
    model: ModelPath,
    *,
    library: Annotated[
        Library,
        typer.Option("--from", help="The library that stored the records.", show_default=False),
    ],
    table: Annotated[
        str | None,
        typer.Option(
            help="The old model's name in its keys: pydantic-redis's class name, "
            "pydantic-aioredis's _table_name. Default: MODEL's class name, lowercased.",
            show_default=False,
        ),
    ] = None,
    prefix: Annotated[
        str | None,
        typer.Option(help="pydantic-aioredis's _redis_prefix (default: none).", show_default=False),
    ] = None,
    separator: Annotated[
        str | None,
        typer.Option(
            help="pydantic-aioredis's _redis_separator (default ':'; '_%&_' for data "
            "written before 1.0).",
            show_default=False,
        ),
    ] = None,
    dry_run: Annotated[
        bool, typer.Option("--dry-run", help="Read, decode and validate; write nothing.")
    ] = False,
    url: Url = DEFAULT_URL,
    old_url: Annotated[
        str | None,
        typer.Option(
            metavar="URL", help="Redis of the old records (default: --url).", show_default=False
        ),
    ] = None,
    batch: Annotated[
        int, typer.Option(min=1, help="Records read and written per round trip.")
    ] = 100,
) -> None:
    """Import what pydantic-redis or pydantic-aioredis stored for MODEL, as saved events.

    MODEL is the streamstore TableModel the records become. Each old hash is decoded by its
    library's rules, validated as MODEL and written as one saved event, keeping the TTL its key
    had left. Records that do not validate are listed and not written; exit 1 if there are any.
    The old keys are only read, never changed or deleted. Running it again is an upsert (one
    more saved event per record).
    """
    source: Source = library.value

    async def run(cls: type[TableModel]) -> ImportReport:
        async with connect(url) as target, contextlib.AsyncExitStack() as stack:
            old = target if old_url is None else await stack.enter_async_context(connect(old_url))
            with progress("old records") as advance:

                def handled(count: int) -> None:
                    for _ in range(count):
                        advance()

                return await import_records(
                    cls,
                    source=source,
                    client=old,
                    target=target,
                    table=table,
                    prefix=prefix,
                    separator=separator,
                    dry_run=dry_run,
                    batch=batch,
                    progress=handled,
                )

    with reported():
        cls = load_model(model)
        if not issubclass(cls, TableModel):
            raise CliError(f"{model!r} is not a TableModel (a model with a primary key field)")
        try:  # the options, checked before anything is read
            old_key_pattern(cls, source=source, table=table, prefix=prefix, separator=separator)
        except UsageError as exc:
            raise CliError(str(exc), 2) from None
        report = asyncio.run(run(cls))
    done = "valid (dry run: nothing written)" if report.dry_run else "imported"
    typer.echo(
        f"{cls.__name__}: {plural(report.read, 'record')} read from {source} keys "
        f"{report.pattern}, {report.imported} {done}, {len(report.failed)} failed, "
        f"{report.skipped} skipped (gone before they were read)"
    )
    for key, why in report.failed:
        typer.echo(f"  {key}  {why}")
    raise typer.Exit(1 if report.failed else 0)
