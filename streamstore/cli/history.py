"""Commands on histories: one instance's events and past states, a class's audit log and feed."""

from __future__ import annotations

import asyncio
import contextlib
import json
import sys
from datetime import datetime
from typing import IO, Annotated, Any

import typer
from rich import box
from rich.console import Console
from rich.table import Table
from rich.text import Text

from streamstore.cli._app import (
    Batch,
    CliError,
    Json,
    Key,
    ModelPath,
    Url,
    app,
    compact,
    connect,
    echo_json,
    fail,
    instance_keys,
    load_model,
    parse_time,
    plural,
    progress,
    reported,
    scrubbed,
    time_option,
)
from streamstore.connection import DEFAULT_URL
from streamstore.errors import CorruptEventError
from streamstore.executor import existing
from streamstore.model import BaseRedisModel
from streamstore.projections.as_of import replay_at
from streamstore.projections.audit_log import audit_record
from streamstore.projections.feed import follow_feed
from streamstore.projections.history import HistoryQuery, field_path, iter_history

# --- history and as-of: one instance, by its document key ------------------------------------

#: Characters of an event's data shown in the history table before it is cut with "…".
DATA_WIDTH = 40


@app.command()
def history(
    key: Key,
    *,
    url: Url = DEFAULT_URL,
    as_json: Json = False,
    from_seq: Annotated[int | None, typer.Option(help="Lowest seq shown.")] = None,
    to_seq: Annotated[int | None, typer.Option(help="Highest seq shown.")] = None,
    since: Annotated[str | None, time_option("Earliest write time")] = None,
    until: Annotated[str | None, time_option("Latest write time")] = None,
    path: Annotated[str | None, typer.Option(metavar="FIELD", help="e.g. profile.skills")] = None,
    limit: Annotated[int | None, typer.Option(help="At most this many events.")] = None,
    reverse: Annotated[bool, typer.Option("--reverse", help="Newest first.")] = False,
) -> None:
    """Print the events of one instance (as stored: no upcasting), oldest first."""
    # seq, time, type and path never wrap; data and meta give way on narrow terminals.
    table = Table(title=Text(key), box=box.SIMPLE_HEAD, pad_edge=False)
    for name in ("seq", "time (UTC)", "type", "path"):
        table.add_column(name, no_wrap=True)
    table.add_column("data", overflow="ellipsis", min_width=12)
    table.add_column("meta", overflow="ellipsis", min_width=8)

    async def read(stream: str, query: HistoryQuery) -> None:
        async with connect(url) as client:
            found = 0
            async for event in iter_history(client, stream, query):
                found += 1
                if as_json:
                    echo_json({"key": key, **event.to_dict()})
                    continue
                data = compact(event.data)
                data = data if len(data) <= DATA_WIDTH else data[: DATA_WIDTH - 1] + "…"
                meta = compact(dict(event.meta)) if event.meta else ""
                when = event.at.strftime("%Y-%m-%d %H:%M:%S.%f")[:-3]
                # Text, not str: rich would read "[...]" in stored values as markup.
                cells = (str(event.seq), when, event.type, event.path, data, meta)
                table.add_row(*(Text(cell) for cell in cells))
            if not found and not (await existing(client, [stream]))[0]:  # no stream: an error
                raise CliError(f"{key} has no history (no stream {stream})")

    with reported():
        stream = instance_keys(key).stream
        query = HistoryQuery(
            start_seq=from_seq,
            end_seq=to_seq,
            since=parse_time(since, "--since"),
            until=parse_time(until, "--until"),
            path=None if path is None else field_path(path),
            limit=limit,
            reverse=reverse,
        )
        asyncio.run(read(stream, query))
    if not as_json:
        Console().print(table)


@app.command("as-of")
def as_of(
    key: Key,
    *,
    seq: Annotated[int | None, typer.Option(help="The state right after event SEQ.")] = None,
    at: Annotated[str | None, time_option("The state at that time")] = None,
    model: Annotated[
        str | None, typer.Option(metavar="MODULE:CLASS", help="Upcast and validate as this model.")
    ] = None,
    url: Url = DEFAULT_URL,
) -> None:
    """Print one instance's document as it was after event --seq, or at time --at."""

    async def fold(cls: type[BaseRedisModel] | None, when: datetime | None) -> Any:
        async with connect(url) as client:
            upcast = None if cls is None else cls.__ss_meta__.upcast
            keys = instance_keys(key)
            document, _ = await replay_at(client, keys, seq=seq, at=when, upcast=upcast)
            return document

    with reported():
        if (seq is None) == (at is None):
            raise CliError("as-of needs exactly one of --seq and --at", 2)
        moment = parse_time(at, "--at")
        if model is None:  # the raw fold: events as stored, no upcasters
            document = asyncio.run(fold(None, moment))
        else:
            cls = load_model(model)
            if cls.__ss_meta__.keys.pk_from_doc_key(key) is None:
                raise CliError(f"{key!r} is not a {cls.__name__} key")
            folded = asyncio.run(fold(cls, moment))
            try:  # JSON mode, as documents are read: bytes fields are base64 text
                document = cls.model_validate_json(json.dumps(folded)).redis_dump()
            except ValueError as exc:
                raise CliError(f"{key} does not validate as {cls.__name__}: {exc}") from None
    typer.echo(json.dumps(document, indent=2, ensure_ascii=False))


# --- export and tail: the audit log and the live change feed ---------------------------------


@app.command()
def export(
    model: ModelPath,
    *,
    fmt: Annotated[str, typer.Option("--format", help="Only jsonl exists.")] = "jsonl",
    since: Annotated[str | None, time_option("Only events written since then")] = None,
    output: Annotated[str | None, typer.Option(metavar="FILE", help="Instead of stdout.")] = None,
    url: Url = DEFAULT_URL,
    batch: Batch = 100,
) -> None:
    """Write every event of every instance of MODEL as JSON lines (the audit log), as stored."""
    damaged: list[str] = []

    def report(pk: str, exc: CorruptEventError) -> None:  # one line each, then on to the next
        damaged.append(pk)
        typer.echo(scrubbed(f"corrupt: {pk!r}: {exc}"), err=True)

    async def write(cls: type[BaseRedisModel], out: IO[str]) -> tuple[int, int]:
        events, pks = 0, set()
        async with connect(url) as client:
            with progress("events") as advance:
                walk = cls.replayer(client).iter_events(
                    since=moment, batch=batch, on_corrupt=report
                )
                async for pk, event in walk:
                    echo_json(audit_record(cls, pk, event), out)
                    events += 1
                    pks.add(pk)
                    advance()
        return events, len(pks)

    with reported():
        if fmt != "jsonl":
            raise CliError(f"unknown format {fmt!r}: the only format is jsonl", 2)
        cls, moment = load_model(model), parse_time(since, "--since")
        try:
            out = sys.stdout if output is None else open(output, "w", encoding="utf-8")  # noqa: SIM115 (closed below)
        except OSError as exc:
            raise CliError(f"cannot write {output}: {exc.strerror}") from None
        try:
            events, instances = asyncio.run(write(cls, out))
        finally:
            if out is not sys.stdout:
                out.close()
    what = f"{plural(events, 'event')} of {plural(instances, cls.__name__ + ' instance')}"
    typer.echo(f"exported {what}", err=True)
    if damaged:
        fail(
            f"{plural(len(damaged), 'instance')} with a corrupt entry: exported up to it "
            "(see the corrupt: lines above)"
        )


@app.command()
def tail(
    model: ModelPath,
    *,
    url: Url = DEFAULT_URL,
    as_json: Json = False,
    count: Annotated[int | None, typer.Option(min=1, help="Stop after COUNT events.")] = None,
) -> None:
    """Print events of MODEL as they are written, from now on, until Ctrl-C (or --count)."""

    async def follow(cls: type[BaseRedisModel]) -> None:
        printed = 0
        async with (
            connect(url) as client,
            contextlib.aclosing(follow_feed(client, cls.__ss_meta__.keys)) as events,
        ):
            async for pk, event in events:
                line = audit_record(cls, pk, event)
                if as_json:
                    echo_json(line)
                else:
                    when = line["at"].replace("+00:00", "Z")
                    meta = compact(line["meta"]) if event.meta else ""
                    what = f"#{event.seq} {event.type} {event.path} {compact(event.data)} {meta}"
                    typer.echo(f"{when}  {line['key']}  {what.rstrip()}")
                printed += 1
                if printed == count:
                    return

    with reported():
        cls = load_model(model)
        with contextlib.suppress(KeyboardInterrupt):  # Ctrl-C is how tail ends: exit code 0
            asyncio.run(follow(cls))
