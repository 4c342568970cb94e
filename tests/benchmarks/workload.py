"""The benchmark workload: the model, the hand-written redis-py writes mirroring streamstore's, and the server.

Also what the replay and subscriber benchmarks share: the event mix their histories are written
with, the data checks, the timing, the table's rows and their report and command-line helpers.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import copy
import cProfile
import gc
import json
import platform
import pstats
import statistics
import sys
import time
import uuid
import zlib
from collections.abc import Awaitable, Callable, Coroutine, Iterable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import hiredis
import redis
import redis.asyncio as aioredis
from pydantic import Field

from streamstore import BaseRedisModel
from streamstore import operations as ops
from streamstore.connection import resolve_client
from streamstore.executor import run_plans
from streamstore.operations import Op
from streamstore.testing import redis_url_for_tests

PARTITIONS = 16  # streamstore's default Meta.partitions; the raw side spreads keys the same way
FEED_MAXLEN = 10_000

#: The document every instance starts from (both sides).
DOC: dict[str, Any] = {
    "name": "Ada Lovelace",
    "age": 36,
    "tags": ["math", "poetry", "engines"],
    "metadata": {"city": "London", "lang": "en"},
}


def make_user_model(
    url: str,
    prefix: str,
    *,
    profile: bool = False,
    snapshot_every: int = 0,
    feed_maxlen: int = FEED_MAXLEN,
) -> type[BaseRedisModel]:
    """The user model, named ``prefix`` and stored under it; ``profile`` adds six scalar fields.

    ``snapshot_every`` is the model's ``Meta.snapshot_every`` (0, the default: no snapshots);
    ``feed_maxlen`` its ``Meta.feed_maxlen`` (raise it to keep every event in the change feed).
    """
    every = snapshot_every  # (a class body cannot read an enclosing name it also assigns)
    maxlen = feed_maxlen

    class User(BaseRedisModel):
        name: str
        age: int = 0
        if profile:
            email: str = ""
            active: bool = False
            score: int = 0
            country: str = ""
            title: str = ""
            notes: str = ""
        tags: list[str] = Field(default_factory=list)
        metadata: dict[str, str] = Field(default_factory=dict)

        class Meta:
            redis = url
            key_prefix = prefix
            partitions = PARTITIONS
            feed_maxlen = maxlen
            snapshot_every = every

    User.__name__ = User.__qualname__ = prefix
    return User


# --- the raw side: redis-py, MULTI/EXEC, json.dumps ------------------------------------------


@dataclass
class RawInstance:
    """One hand-managed instance: its keys, its local seq counter and its local document."""

    pk: str
    key: str
    stream: str
    feed: str
    doc: dict[str, Any]
    seq: int = 0

    @classmethod
    def new(cls, prefix: str, doc: dict[str, Any]) -> RawInstance:
        """A fresh instance under ``prefix`` whose local document starts as a copy of ``doc``."""
        pk = uuid.uuid4().hex
        tag = f"{{{prefix}:{zlib.crc32(pk.encode()) % PARTITIONS}}}"
        return cls(pk, f"{tag}:{pk}", f"{tag}#events:{pk}", f"{tag}#feed", copy.deepcopy(doc))


@dataclass(frozen=True)
class RawSpelling:
    """How a benchmark's raw events are spelled (each benchmark keeps its own)."""

    #: Event data as compact JSON (``{"value":"x"}``) rather than json.dumps' default.
    compact: bool = False
    #: A fixed ``ts`` (and feed ``id``) instead of the current time in ms.
    fixed_ts: str | None = None
    #: The ``dict.set_item`` event's path is the item's (``$.metadata.k1``), not the dict's.
    item_path: bool = False

    def dumps(self, payload: dict[str, str]) -> str:
        """The event data for ``payload``."""
        return json.dumps(payload, separators=(",", ":") if self.compact else None)


DEFAULT_SPELLING = RawSpelling()


async def raw_write(
    client: aioredis.Redis,
    inst: RawInstance,
    command: tuple[str, ...],
    *,
    kind: str,
    path: str,
    data: str,
    spelling: RawSpelling = DEFAULT_SPELLING,
) -> None:
    """The JSON command, then the event in the instance stream and the feed, in one MULTI/EXEC.

    The feed's ``id`` cannot be the stream entry id inside MULTI; a same-sized stand-in is used.
    """
    pipe = client.pipeline(transaction=True)
    queue_raw_write(pipe, inst, command, kind=kind, path=path, data=data, spelling=spelling)
    await pipe.execute()


def queue_raw_write(
    pipe: Any,
    inst: RawInstance,
    command: tuple[str, ...],
    *,
    kind: str,
    path: str,
    data: str,
    spelling: RawSpelling = DEFAULT_SPELLING,
) -> None:
    """Queue on ``pipe`` what `raw_write` sends: the JSON command and the two XADDs."""
    inst.seq += 1
    ts = spelling.fixed_ts or str(time.time_ns() // 1_000_000)
    event = {
        "seq": inst.seq,
        "type": kind,
        "path": path,
        "data": data,
        "ts": ts,
        "meta": "{}",
        "v": "1",
    }
    pipe.execute_command(*command)
    pipe.xadd(inst.stream, event)
    pipe.xadd(
        inst.feed, {"pk": inst.pk, "id": f"{ts}-0", **event}, maxlen=FEED_MAXLEN, approximate=True
    )


async def raw_save(
    client: aioredis.Redis,
    inst: RawInstance,
    _i: int = 0,
    *,
    spelling: RawSpelling = DEFAULT_SPELLING,
) -> None:
    """Write the instance's whole local document."""
    document = json.dumps(inst.doc)
    command = ("JSON.SET", inst.key, "$", document)
    await raw_write(client, inst, command, kind="saved", path="$", data=document, spelling=spelling)


def queue_raw_save(
    pipe: Any, inst: RawInstance, *, spelling: RawSpelling = DEFAULT_SPELLING
) -> None:
    """Queue on ``pipe`` what `raw_save` sends (without its MULTI and EXEC)."""
    document = json.dumps(inst.doc)
    command = ("JSON.SET", inst.key, "$", document)
    queue_raw_write(pipe, inst, command, kind="saved", path="$", data=document, spelling=spelling)


async def raw_set(
    client: aioredis.Redis, inst: RawInstance, i: int, *, spelling: RawSpelling = DEFAULT_SPELLING
) -> None:
    """Set ``name``."""
    value = f"name-{i}"
    await raw_write(
        client,
        inst,
        ("JSON.SET", inst.key, "$.name", json.dumps(value)),
        kind="set",
        path="$.name",
        data=spelling.dumps({"value": value}),
        spelling=spelling,
    )
    inst.doc["name"] = value


async def raw_append(
    client: aioredis.Redis, inst: RawInstance, i: int, *, spelling: RawSpelling = DEFAULT_SPELLING
) -> None:
    """Append to ``tags``."""
    value = f"tag-{i}"
    await raw_write(
        client,
        inst,
        ("JSON.ARRAPPEND", inst.key, "$.tags", json.dumps(value)),
        kind="list.append",
        path="$.tags",
        data=spelling.dumps({"value": value}),
        spelling=spelling,
    )
    inst.doc["tags"].append(value)


async def raw_set_item(
    client: aioredis.Redis, inst: RawInstance, i: int, *, spelling: RawSpelling = DEFAULT_SPELLING
) -> None:
    """Set an item of ``metadata``."""
    key, value = f"k{i % 8}", f"v{i}"
    path = f"$.metadata.{key}"
    await raw_write(
        client,
        inst,
        ("JSON.SET", inst.key, path, json.dumps(value)),
        kind="dict.set_item",
        path=path if spelling.item_path else "$.metadata",
        data=spelling.dumps({"key": key, "value": value}),
        spelling=spelling,
    )
    inst.doc["metadata"][key] = value


#: The raw side of each write operation, by streamstore's method name.
RAW_OPS = {"set": raw_set, "aappend": raw_append, "aset_item": raw_set_item, "save": raw_save}


# --- the streamstore side ---------------------------------------------------------------------


async def lib_set(user: Any, i: int) -> None:
    """Set ``name``."""
    await user.name.set(f"name-{i}")


async def lib_append(user: Any, i: int) -> None:
    """Append to ``tags``."""
    await user.tags.aappend(f"tag-{i}")


async def lib_set_item(user: Any, i: int) -> None:
    """Set an item of ``metadata``."""
    await user.metadata.aset_item(f"k{i % 8}", f"v{i}")


async def lib_save(user: Any, _i: int) -> None:
    """Save the whole document."""
    await user.save()


#: The streamstore side of each write operation, by its method name.
LIB_OPS: dict[str, Callable[[Any, int], Awaitable[None]]] = {
    "set": lib_set,
    "aappend": lib_append,
    "aset_item": lib_set_item,
    "save": lib_save,
}


# --- writing histories through streamstore (setup, not measured) -------------------------------


class BenchmarkDataError(Exception):
    """The benchmark's data is not what it wrote: its numbers would mean nothing."""


def check(condition: bool, what: str) -> None:
    """Raise `BenchmarkDataError` saying ``what`` unless ``condition`` holds."""
    if not condition:
        raise BenchmarkDataError(what)


#: ``tags`` keeps its newest items only (an append on a full list pops the oldest instead), so
#: the document stays small however long the history: what is measured is the events.
TAGS_CAP = 50
#: Script calls per pipelined round trip while writing.
CALLS_PER_ROUND_TRIP = 500


class Mix:
    """The operations of one instance's history, in order (a local count keeps ``tags`` capped).

    ``cycle`` is the event mix, repeated (each benchmark keeps its own): ``append`` (to ``tags``),
    ``set`` (``name``), ``incr`` (``age``) and ``set_item`` (an item of ``metadata``).
    """

    def __init__(self, cycle: Sequence[str]) -> None:
        self.cycle = cycle
        self.i = 0
        self.tags = len(DOC["tags"])

    def next(self) -> Op:
        """The next operation."""
        i, kind = self.i, self.cycle[self.i % len(self.cycle)]
        self.i += 1
        if kind == "append":
            if self.tags >= TAGS_CAP:
                self.tags -= 1
                return ops.list_pop(("tags",), 0)
            self.tags += 1
            return ops.list_append(("tags",), json.dumps(f"tag-{i}"))
        if kind == "set":
            return ops.set_value(("name",), json.dumps(f"name-{i}"))
        if kind == "incr":
            return ops.number_incr(("age",), "1")
        return ops.dict_set_item(("metadata",), f"k{i % 8}", json.dumps(f"v{i}"))

    def take(self, count: int) -> list[Op]:
        """The next ``count`` operations."""
        return [self.next() for _ in range(count)]


async def send(model: type[BaseRedisModel], plans: list[Any]) -> None:
    """Run ``plans`` in order, pipelined (each call atomic on its own)."""
    client = model._ss_client()
    for start in range(0, len(plans), CALLS_PER_ROUND_TRIP):
        await run_plans(client, plans[start : start + CALLS_PER_ROUND_TRIP])


# --- measuring and reporting a raw side against streamstore's, in events/s ---------------------


async def timed(work: Callable[[], Awaitable[Any]]) -> tuple[float, Any]:
    """Run ``work`` once; return (seconds, its result)."""
    gc.collect()
    start = time.perf_counter()
    result = await work()
    return time.perf_counter() - start, result


@dataclass(kw_only=True)
class Rates:
    """Each side's rate per round, and their medians: the part of a table row both sides fill."""

    lib_rates: list[float] = field(default_factory=list)
    raw_rates: list[float] = field(default_factory=list)

    @property
    def lib_median(self) -> float:
        """streamstore's median rate."""
        return statistics.median(self.lib_rates)

    @property
    def raw_median(self) -> float:
        """The raw side's median rate."""
        return statistics.median(self.raw_rates)

    @property
    def ratio(self) -> float:
        """streamstore's median rate over the raw side's."""
        return self.lib_median / self.raw_median


@dataclass
class Row:
    """One line of the table: seconds per round of each side, for ``events`` events."""

    case: str
    events: int
    raw: list[float] = field(default_factory=list)
    lib: list[float] = field(default_factory=list)

    @property
    def raw_rate(self) -> float:
        """The raw side's median events/s."""
        return self.events / statistics.median(self.raw)

    @property
    def lib_rate(self) -> float:
        """streamstore's median events/s."""
        return self.events / statistics.median(self.lib)

    @property
    def ratio(self) -> float:
        """streamstore's median rate over the raw side's."""
        return self.lib_rate / self.raw_rate

    def per_round(self) -> str:
        """Each round's ratio (raw seconds over streamstore's), for the log."""
        return " ".join(f"{raw / lib:.2f}" for lib, raw in zip(self.lib, self.raw, strict=True))

    def clear(self) -> None:
        """Forget the rounds so far (the warm-up's)."""
        self.raw.clear()
        self.lib.clear()


async def profiled(work: Callable[[], Awaitable[Any]]) -> cProfile.Profile:
    """Run ``work`` once under cProfile; return the profile."""
    profiler = cProfile.Profile()
    gc.collect()
    profiler.enable()
    await work()
    profiler.disable()
    return profiler


def print_profile(profiler: cProfile.Profile, what: str, orders: Iterable[str], top: int) -> None:
    """Print the ``top`` costs of ``what`` to stderr, sorted by each of ``orders`` in turn."""
    for order in orders:
        print(f"\n--- profile of {what}, by {order} ---", file=sys.stderr)
        stats = pstats.Stats(profiler, stream=sys.stderr)
        stats.strip_dirs().sort_stats(order).print_stats(top)


def table(header: str, rows: Iterable[Row]) -> list[str]:
    """The report's lines: ``header``, then each row's median rates and their ratio."""
    lines = [
        header,
        "",
        "| case | raw events/s (median) | streamstore events/s (median) | ratio |",
        "|---|--:|--:|--:|",
    ]
    lines += [
        f"| {row.case} | {row.raw_rate:,.0f} | {row.lib_rate:,.0f} | {row.ratio:.2f} |"
        for row in rows
    ]
    return lines


# --- the server -------------------------------------------------------------------------------


async def server_version(client: aioredis.Redis) -> str:
    """The server's Redis version."""
    info = await client.info("server")
    return str(info.get("redis_version", "?"))


async def describe(client: aioredis.Redis) -> str:
    """The server's Redis version and, when loaded, its RedisJSON version."""
    text = f"Redis {await server_version(client)}"
    modules = (await client.info("modules")).get("modules", [])
    for module in modules if isinstance(modules, list) else []:
        if module.get("name") == "ReJSON":
            ver = int(module.get("ver", 0))
            text += f", RedisJSON {ver // 10000}.{ver // 100 % 100}.{ver % 100}"
    return text


async def versions(client: aioredis.Redis) -> str:
    """Python's, redis-py's, hiredis' and the server's versions: where a report's header starts."""
    return (
        f"Python {platform.python_version()}, redis-py {redis.__version__} "
        f"(hiredis {hiredis.__version__}), {await describe(client)}"
    )


async def cleanup(client: aioredis.Redis, prefixes: Iterable[str]) -> None:
    """Remove the benchmark's keys (an external server may be someone's dev database)."""
    for prefix in prefixes:
        batch: list[bytes] = []
        async for key in client.scan_iter(match=f"{{{prefix}:*", count=1000):
            batch.append(key)
            if len(batch) >= 1000:
                await client.unlink(*batch)
                batch.clear()
        if batch:
            await client.unlink(*batch)


async def close(url: str, *clients: aioredis.Redis) -> None:
    """Close ``clients``, then the client streamstore made for ``url``."""
    for client in clients:
        await client.aclose()
    await resolve_client(url).aclose()


def parse_args_with_common(
    parser: argparse.ArgumentParser, *, quick_help: str
) -> argparse.Namespace:
    """Add the flags every benchmark has (``--quick``, ``--markdown``) and parse the arguments."""
    parser.add_argument("--quick", action="store_true", help=quick_help)
    parser.add_argument("--markdown", type=Path, help="also write the table to this file")
    return parser.parse_args()


def add_rounds_url_profile(parser: argparse.ArgumentParser, *, profile_of: str) -> None:
    """Add ``--rounds``, ``--url`` and ``--profile`` (cProfile's top costs of ``profile_of``)."""
    parser.add_argument("--rounds", type=int, default=None, help="rounds per side (default 5)")
    parser.add_argument("--url", help="use this Redis (with RedisJSON) instead of a private one")
    parser.add_argument(
        "--profile",
        type=int,
        nargs="?",
        const=25,
        default=0,
        metavar="TOP",
        help=f"after the rounds, print cProfile's TOP (25) costs of {profile_of}",
    )


def fill_defaults(args: argparse.Namespace, *, quick: dict[str, int], full: dict[str, int]) -> None:
    """Set each flag of ``args`` left unset (None) to its default: ``quick``'s with --quick."""
    for name, default in (quick if args.quick else full).items():
        if getattr(args, name) is None:
            setattr(args, name, default)


def server_url(args: argparse.Namespace) -> contextlib.AbstractContextManager[str]:
    """``args.url`` when the benchmark has that flag and it is set, else `redis_url_for_tests`."""
    url = getattr(args, "url", None)
    return contextlib.nullcontext(url) if url else redis_url_for_tests()


def run_on_server(
    run: Callable[[str, argparse.Namespace], Coroutine[Any, Any, str]],
    args: argparse.Namespace,
    banner: str,
) -> None:
    """Run the benchmark on $REDIS_URL, else on a private server; print (and save) its report.

    A benchmark with a ``--url`` flag runs on that server when it is given.
    ``banner`` is printed to stderr first, with ``{url}`` replaced by the server's URL.
    """
    with server_url(args) as url:  # --url, $REDIS_URL, else a private redis-server + RedisJSON
        print(banner.format(url=url), file=sys.stderr)
        report = asyncio.run(run(url, args))
    print(report)
    if args.markdown is not None:
        args.markdown.write_text(report)
