"""The ``streamstore`` command line: history, as-of, verify, rebuild, export and tail.

Thin on purpose: each command parses its arguments, calls the library (`Replayer`,
`iter_history`, ...) and renders what comes back. Data goes to stdout; progress displays,
summaries and ``error: ...`` lines go to stderr, so ``streamstore export ... | jq`` sees JSON only.

Every command talks to the server named by ``--url`` (default ``$REDIS_URL``), even when a model
class names its own ``Meta.redis``: the command line says which server to inspect, so the CLI
makes its own client and a `Replayer` on the class's keys and upcasters, never the class's client.
"""

from __future__ import annotations

import asyncio
import contextlib
import importlib
import json
import os
import re
import sys
from collections.abc import AsyncIterator, Callable, Iterator
from datetime import UTC, datetime
from typing import IO, Annotated, Any, NoReturn

import redis.asyncio as aioredis
import typer
from redis.exceptions import ConnectionError as RedisConnectionError
from redis.exceptions import RedisError
from rich import box
from rich.console import Console
from rich.progress import Progress, SpinnerColumn, TextColumn, TimeElapsedColumn
from rich.table import Table

from streamstore.connection import DEFAULT_URL, RedisSettings
from streamstore.errors import StreamStoreError
from streamstore.events import Event
from streamstore.keys import InstanceKeys, instance_keys_of
from streamstore.model import BaseRedisModel
from streamstore.projections.feed import follow_feed
from streamstore.projections.history import HistoryQuery, field_path, iter_history
from streamstore.projections.replay import Summary, replay_at

__all__ = ["app", "load_model", "main"]

app = typer.Typer(
    name="streamstore",
    help="Inspect streamstore data: histories, time travel, verify/rebuild, audit export, tail.",
    no_args_is_help=True,
    add_completion=False,
    pretty_exceptions_enable=False,  # user mistakes are one `error:` line: see _reported()
)

URL_HELP = "Redis URL (default: $REDIS_URL, else redis://localhost:6379/0)."
Url = Annotated[str, typer.Option(envvar="REDIS_URL", help=URL_HELP, show_default=False)]
ModelPath = Annotated[
    str, typer.Argument(metavar="MODEL", help="module:Class, e.g. app.models:User (from cwd).")
]
Key = Annotated[
    str, typer.Argument(metavar="KEY", help="A document key (model.key), e.g. '{User:7}:42'.")
]
Batch = Annotated[int, typer.Option(min=1, help="Instances read per round trip.")]
Pk = Annotated[str | None, typer.Option(help="Only the instance with this pk.")]
Json = Annotated[bool, typer.Option("--json", help="One JSON object per line.")]


def _time(what: str) -> Any:
    # TIME options are plain strings parsed by _parse_time, so a bad one is an `error:` line.
    return typer.Option(metavar="TIME", help=f"{what}: ISO 8601, e.g. 2026-11-30T10:00:00Z.")


#: Characters of an event's data shown in the history table before it is cut with "…".
DATA_WIDTH = 40
#: Per mode of verify/rebuild: what the summary calls an instance that differs, and its line.
OUTCOMES = {
    "verify": ("differing", "differs at"),
    "dry-run": ("to rewrite (dry run)", "would rewrite"),
    "rebuild": ("rewritten", "rewritten at"),
}


class CliError(Exception):
    """A user mistake, reported as one ``error:`` line and exit code ``code``."""

    def __init__(self, message: str, code: int = 1) -> None:
        """Keep ``message`` and the exit code (1; 2 for bad usage)."""
        super().__init__(message)
        self.code = code


def _fail(message: str, code: int = 1) -> NoReturn:
    # Library messages may span lines (pydantic's validation errors): keep the one-line promise.
    line = re.sub(r"\s*\n\s*", "; ", message.strip())
    typer.echo(f"error: {line}", err=True)
    raise typer.Exit(code)


@contextlib.contextmanager
def _reported() -> Iterator[None]:
    """Turn user mistakes and Redis errors into one ``error:`` line; let bugs show tracebacks."""
    try:
        yield
    except CliError as exc:
        _fail(str(exc), exc.code)
    except RedisConnectionError as exc:  # its message names host and port, never the password
        _fail(f"cannot connect to Redis: {exc}")
    except (StreamStoreError, RedisError) as exc:
        _fail(str(exc))


def _parse_time(value: str | None, option: str) -> datetime | None:
    """Read a TIME option (ISO 8601); naive times are UTC."""
    if value is None:
        return None
    try:
        moment = datetime.fromisoformat(value)
    except ValueError:
        example = "e.g. 2026-11-30T10:00:00Z"
        raise CliError(f"bad time {value!r} for {option}: use ISO 8601, {example}", 2) from None
    return moment if moment.tzinfo is not None else moment.replace(tzinfo=UTC)


def load_model(path: str) -> type[BaseRedisModel]:
    """Import ``module:Class`` with the current directory on sys.path (as uvicorn does)."""
    module_name, _, attribute = path.partition(":")
    if not module_name or not attribute:
        raise CliError(f"bad model {path!r}: use module:Class, e.g. app.models:User", 2)
    if os.getcwd() not in sys.path:
        sys.path.insert(0, os.getcwd())
    try:
        found: Any = importlib.import_module(module_name)
    except ImportError as exc:
        raise CliError(f"cannot import {module_name!r} for model {path!r}: {exc}") from None
    try:
        for name in attribute.split("."):
            found = getattr(found, name)
    except AttributeError:
        raise CliError(f"module {module_name!r} has no {attribute!r}") from None
    if not (isinstance(found, type) and issubclass(found, BaseRedisModel)):
        raise CliError(f"{path!r} is not a streamstore model (a BaseRedisModel subclass)")
    return found


@contextlib.asynccontextmanager
async def _connect(url: str) -> AsyncIterator[aioredis.Redis]:
    client = RedisSettings(url=url).client()
    try:
        yield client
    finally:
        await client.aclose()


def _instance_keys(key: str) -> InstanceKeys:
    try:
        return instance_keys_of(key)
    except ValueError as exc:
        raise CliError(str(exc)) from None


def _compact(value: Any) -> str:
    return json.dumps(value, separators=(",", ":"), ensure_ascii=False)


def _echo_json(record: dict[str, Any], out: IO[str] | None = None) -> None:
    typer.echo(_compact(record), file=out)  # click.echo flushes: live output through pipes


def _event_line(model: type[BaseRedisModel], pk: str, event: Event) -> dict[str, Any]:
    """One line of the audit log (export, tail --json): the event, whose it is first."""
    key = model.__ss_meta__.keys.for_pk(pk).doc
    return {"model": model.__name__, "key": key, "pk": pk, **event.to_dict()}


def _plural(count: int, noun: str) -> str:
    return f"{count} {noun}{'' if count == 1 else 's'}"


@contextlib.contextmanager
def _progress(what: str) -> Iterator[Callable[[], None]]:
    """Count ``what`` with a spinner on stderr (SCAN gives no total); yield the +1 callback.

    Only on a terminal: in logs and pipes a live display is noise (rich would print blank lines).
    """
    console = Console(stderr=True)
    if not console.is_terminal:
        yield lambda: None
        return
    columns = (SpinnerColumn(), TextColumn("{task.completed} " + what), TimeElapsedColumn())
    with Progress(*columns, console=console, transient=True) as progress:
        task = progress.add_task(what, total=None)
        yield lambda: progress.advance(task)


# --- history and as-of: one instance, by its document key ------------------------------------


@app.command()
def history(
    key: Key,
    *,
    url: Url = DEFAULT_URL,
    as_json: Json = False,
    from_seq: Annotated[int | None, typer.Option(help="Lowest seq shown.")] = None,
    to_seq: Annotated[int | None, typer.Option(help="Highest seq shown.")] = None,
    since: Annotated[str | None, _time("Earliest write time")] = None,
    until: Annotated[str | None, _time("Latest write time")] = None,
    path: Annotated[str | None, typer.Option(metavar="FIELD", help="e.g. profile.skills")] = None,
    limit: Annotated[int | None, typer.Option(help="At most this many events.")] = None,
    reverse: Annotated[bool, typer.Option("--reverse", help="Newest first.")] = False,
) -> None:
    """Print the events of one instance (as stored: no upcasting), oldest first."""
    # seq, time, type and path never wrap; data and meta give way on narrow terminals.
    table = Table(title=key, box=box.SIMPLE_HEAD, pad_edge=False)
    for name in ("seq", "time (UTC)", "type", "path"):
        table.add_column(name, no_wrap=True)
    table.add_column("data", overflow="ellipsis", min_width=12)
    table.add_column("meta", overflow="ellipsis", min_width=8)

    async def read(stream: str, query: HistoryQuery) -> None:
        async with _connect(url) as client:
            found = 0
            async for event in iter_history(client, stream, query):
                found += 1
                if as_json:
                    _echo_json({"key": key, **event.to_dict()})
                    continue
                data = _compact(event.data)
                data = data if len(data) <= DATA_WIDTH else data[: DATA_WIDTH - 1] + "…"
                meta = _compact(dict(event.meta)) if event.meta else ""
                when = event.at.strftime("%Y-%m-%d %H:%M:%S.%f")[:-3]
                table.add_row(str(event.seq), when, event.type, event.path, data, meta)
            if not found and not await client.exists(stream):  # no match is fine, no stream not
                raise CliError(f"{key} has no history (no stream {stream})")

    with _reported():
        stream = _instance_keys(key).stream
        query = HistoryQuery(
            start_seq=from_seq,
            end_seq=to_seq,
            since=_parse_time(since, "--since"),
            until=_parse_time(until, "--until"),
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
    at: Annotated[str | None, _time("The state at that time")] = None,
    model: Annotated[
        str | None, typer.Option(metavar="MODULE:CLASS", help="Upcast and validate as this model.")
    ] = None,
    url: Url = DEFAULT_URL,
) -> None:
    """Print one instance's document as it was after event --seq, or at time --at."""

    async def fold(cls: type[BaseRedisModel] | None, when: datetime | None) -> Any:
        async with _connect(url) as client:
            upcast = None if cls is None else cls.__ss_meta__.upcast
            keys = _instance_keys(key)
            document, _ = await replay_at(client, keys, seq=seq, at=when, upcast=upcast)
            return document

    with _reported():
        if (seq is None) == (at is None):
            raise CliError("as-of needs exactly one of --seq and --at", 2)
        moment = _parse_time(at, "--at")
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


# --- verify and rebuild: every instance of a class, or one -----------------------------------


@app.command()
def verify(model: ModelPath, *, pk: Pk = None, url: Url = DEFAULT_URL, batch: Batch = 100) -> None:
    """Check that each document equals the fold of its stream; exit 1 if any differs."""
    _check(model, "verify", pk, url, batch)


@app.command()
def rebuild(
    model: ModelPath,
    *,
    pk: Pk = None,
    dry_run: Annotated[bool, typer.Option("--dry-run", help="Only say what it would do.")] = False,
    url: Url = DEFAULT_URL,
    batch: Batch = 100,
) -> None:
    """Rewrite each document that differs from the fold of its stream (no events written)."""
    _check(model, "dry-run" if dry_run else "rebuild", pk, url, batch)


def _check(model: str, mode: str, pk: str | None, url: str, batch: int) -> None:
    """Verify or rebuild (``mode``: verify, dry-run, rebuild); print the summary; exit."""

    async def walk(cls: type[BaseRedisModel]) -> Summary:
        summary, dry_run = Summary(), mode == "dry-run"
        async with _connect(url) as client:
            replayer = cls.replayer(client)
            if pk is not None:
                one = (
                    replayer.verify(pk)
                    if mode == "verify"
                    else replayer.rebuild(pk, dry_run=dry_run)
                )
                summary.add(await one)
                return summary
            reports = (
                replayer.iter_verify(batch)
                if mode == "verify"
                else replayer.iter_rebuild(batch, dry_run=dry_run)
            )
            with _progress(f"{cls.__name__} instances") as advance:
                async for report in reports:
                    summary.add(report)
                    advance()
        return summary

    with _reported():
        cls = load_model(model)
        summary = asyncio.run(walk(cls))
    differing = sum(1 for report in summary.reports if not report.problem)
    counted, label = OUTCOMES[mode]
    typer.echo(
        f"{cls.__name__}: {_plural(summary.instances, 'instance')}, {summary.equal} equal, "
        f"{differing} {counted}, {len(summary.reports) - differing} not replayable, "
        f"{_plural(summary.events, 'event')} replayed"
    )
    for report in summary.reports:
        outcome = f"{label} {', '.join(report.differences)}"
        if report.problem:
            outcome = f"not replayable, left alone: {report.problem}"
        typer.echo(f"  {report.key}  {outcome}")
    # Exit 1 when an instance is left differing from its stream: what verify found, what a dry
    # run did not fix, and what rebuild could not replay.
    left = [r for r in summary.reports if r.problem or mode != "rebuild"]
    raise typer.Exit(1 if left else 0)


# --- export and tail: the audit log and the live change feed ---------------------------------


@app.command()
def export(
    model: ModelPath,
    *,
    fmt: Annotated[str, typer.Option("--format", help="Only jsonl exists.")] = "jsonl",
    since: Annotated[str | None, _time("Only events written since then")] = None,
    output: Annotated[str | None, typer.Option(metavar="FILE", help="Instead of stdout.")] = None,
    url: Url = DEFAULT_URL,
    batch: Batch = 100,
) -> None:
    """Write every event of every instance of MODEL as JSON lines (the audit log), as stored."""

    async def write(cls: type[BaseRedisModel], out: IO[str]) -> tuple[int, int]:
        events, pks = 0, set()
        async with _connect(url) as client:
            with _progress("events") as advance:
                walk = cls.replayer(client).iter_events(since=moment, batch=batch)
                async for pk, event in walk:
                    _echo_json(_event_line(cls, pk, event), out)
                    events += 1
                    pks.add(pk)
                    advance()
        return events, len(pks)

    with _reported():
        if fmt != "jsonl":
            raise CliError(f"unknown format {fmt!r}: the only format is jsonl", 2)
        cls, moment = load_model(model), _parse_time(since, "--since")
        try:
            out = sys.stdout if output is None else open(output, "w", encoding="utf-8")  # noqa: SIM115 (closed below)
        except OSError as exc:
            raise CliError(f"cannot write {output}: {exc.strerror}") from None
        try:
            events, instances = asyncio.run(write(cls, out))
        finally:
            if out is not sys.stdout:
                out.close()
    what = f"{_plural(events, 'event')} of {_plural(instances, cls.__name__ + ' instance')}"
    typer.echo(f"exported {what}", err=True)


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
            _connect(url) as client,
            contextlib.aclosing(follow_feed(client, cls.__ss_meta__.keys)) as events,
        ):
            async for pk, event in events:
                line = _event_line(cls, pk, event)
                if as_json:
                    _echo_json(line)
                else:
                    when = line["at"].replace("+00:00", "Z")
                    meta = _compact(line["meta"]) if event.meta else ""
                    what = f"#{event.seq} {event.type} {event.path} {_compact(event.data)} {meta}"
                    typer.echo(f"{when}  {line['key']}  {what.rstrip()}")
                printed += 1
                if printed == count:
                    return

    with _reported():
        cls = load_model(model)
        with contextlib.suppress(KeyboardInterrupt):  # Ctrl-C is how tail ends: exit code 0
            asyncio.run(follow(cls))


def main() -> None:
    """Run the command line (the ``streamstore`` script and ``python -m streamstore``)."""
    app(prog_name="streamstore")
