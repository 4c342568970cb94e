"""What every command shares: the typer app, options, error lines, model loading, progress."""

from __future__ import annotations

import contextlib
import importlib
import json
import os
import re
import sys
import urllib.parse
from collections.abc import AsyncIterator, Callable, Iterator
from datetime import UTC, datetime
from typing import IO, Annotated, Any, NoReturn

import typer
from redis.exceptions import ConnectionError as RedisConnectionError
from redis.exceptions import RedisClusterException, RedisError
from rich.console import Console
from rich.progress import Progress, SpinnerColumn, TextColumn, TimeElapsedColumn

from streamstore.connection import Client, RedisSettings, redacted
from streamstore.errors import StreamStoreError
from streamstore.keys import InstanceKeys, instance_keys_of
from streamstore.model import BaseRedisModel

app = typer.Typer(
    name="streamstore",
    help="Inspect streamstore data: histories, time travel, verify/rebuild, audit export, tail.",
    no_args_is_help=True,
    add_completion=False,
    pretty_exceptions_enable=False,  # user mistakes are one `error:` line: see reported()
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


def time_option(what: str) -> Any:
    # TIME options are plain strings parsed by parse_time, so a bad one is an `error:` line.
    return typer.Option(metavar="TIME", help=f"{what}: ISO 8601, e.g. 2026-11-30T10:00:00Z.")


class CliError(Exception):
    """A user mistake, reported as one ``error:`` line and exit code ``code``."""

    def __init__(self, message: str, code: int = 1) -> None:
        """Keep ``message`` and the exit code (1; 2 for bad usage)."""
        super().__init__(message)
        self.code = code


def fail(message: str, code: int = 1) -> NoReturn:
    # Library messages may span lines (pydantic's validation errors): keep the one-line promise.
    line = re.sub(r"\s*\n\s*", "; ", scrubbed(message.strip()))
    typer.echo(f"error: {line}", err=True)
    raise typer.Exit(code)


#: Passwords of the URLs this process was given: never printed, whatever an error quotes.
_SECRETS: set[str] = set()
#: Shorter secrets are hidden only where they appear as a URL's password, not everywhere.
_SHORT_SECRET = 4
_AUTHORITY = re.compile(r"^[A-Za-z][A-Za-z0-9+.-]*://([^/?#]*)")


def remember_secret(url: str) -> None:
    """Note the password of ``url`` (or a lone user part, which some URLs use for it)."""
    found = _AUTHORITY.match(url)
    credentials = found.group(1).rpartition("@")[0] if found else ""
    secret = credentials.partition(":")[2] if ":" in credentials else credentials
    if secret:
        _SECRETS.update({secret, urllib.parse.unquote(secret)})


def scrubbed(message: str) -> str:
    """Return ``message`` with every remembered password replaced by ``***``."""
    for secret in sorted(_SECRETS, key=len, reverse=True):
        if len(secret) >= _SHORT_SECRET:
            message = message.replace(secret, "***")
        else:
            message = message.replace(f":{secret}@", ":***@")
    return message


def checked_url(url: str) -> str:
    """Return ``url`` once its password is remembered and it parses; else a `CliError`."""
    remember_secret(url)
    try:
        urllib.parse.urlsplit(url)
    except ValueError as exc:  # "Invalid IPv6 URL": where redis-py would raise it bare
        raise CliError(f"bad Redis URL {shown_url(url)!r}: {exc}") from None
    return url


def shown_url(url: str) -> str:
    """Return ``url`` fit for a message: its password replaced, even when it does not parse."""
    try:
        return redacted(url)
    except ValueError:
        return scrubbed(url)


@contextlib.contextmanager
def reported() -> Iterator[None]:
    """Turn user mistakes and Redis errors into one ``error:`` line; let bugs show tracebacks."""
    try:
        yield
    except CliError as exc:
        fail(str(exc), exc.code)
    except RedisConnectionError as exc:  # its message names host and port, never the password
        fail(f"cannot connect to Redis: {exc}")
    except RedisClusterException as exc:  # no seed node answered, and the like
        fail(f"cannot use the Redis Cluster: {exc}")
    except (StreamStoreError, RedisError) as exc:
        fail(str(exc))


def parse_time(value: str | None, option: str) -> datetime | None:
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
    """Import a model class from ``module:Class``."""
    found = load_object(path, "model", "module:Class, e.g. app.models:User")
    if not (isinstance(found, type) and issubclass(found, BaseRedisModel)):
        raise CliError(f"{path!r} is not a streamstore model (a BaseRedisModel subclass)")
    return found


def load_object(path: str, what: str, form: str) -> Any:
    """Import ``module:attribute`` with the current directory on sys.path (as uvicorn does).

    ``what`` and ``form`` word the error for a path of the wrong shape.
    """
    module_name, _, attribute = path.partition(":")
    if not module_name or not attribute:
        raise CliError(f"bad {what} {path!r}: use {form}", 2)
    if os.getcwd() not in sys.path:
        sys.path.insert(0, os.getcwd())
    try:
        found: Any = importlib.import_module(module_name)
    except ImportError as exc:
        raise CliError(f"cannot import {module_name!r} for {what} {path!r}: {exc}") from None
    try:
        for name in attribute.split("."):
            found = getattr(found, name)
    except AttributeError:
        raise CliError(f"module {module_name!r} has no {attribute!r}") from None
    return found


@contextlib.asynccontextmanager
async def connect(url: str) -> AsyncIterator[Client]:
    """Open a client on ``url`` for one command; a URL that does not parse is a `CliError`."""
    client = RedisSettings(url=checked_url(url)).client()
    try:
        yield client
    finally:
        await client.aclose()


def instance_keys(key: str) -> InstanceKeys:
    try:
        return instance_keys_of(key)
    except ValueError as exc:
        raise CliError(str(exc)) from None


def compact(value: Any) -> str:
    return json.dumps(value, separators=(",", ":"), ensure_ascii=False)


def echo_json(record: dict[str, Any], out: IO[str] | None = None) -> None:
    typer.echo(compact(record), file=out)  # click.echo flushes: live output through pipes


def plural(count: int, noun: str) -> str:
    return f"{count} {noun}{'' if count == 1 else 's'}"


@contextlib.contextmanager
def progress(what: str) -> Iterator[Callable[[], None]]:
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
