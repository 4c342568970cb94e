"""Benchmark: streamstore's core operations against hand-written redis-py doing the same work."""

from __future__ import annotations

import argparse
import asyncio
import functools
import gc
import json
import platform
import sys
import time
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from typing import Any

import pydantic
import redis
import redis.asyncio as aioredis
from pydantic import BaseModel, Field
from workload import (
    DOC,
    Rates,
    RawInstance,
    cleanup,
    close,
    lib_append,
    lib_save,
    lib_set,
    lib_set_item,
    make_user_model,
    parse_args_with_common,
    raw_append,
    raw_save,
    raw_set,
    raw_set_item,
    run_on_server,
    server_version,
)

from streamstore import BaseRedisModel, RedisSettings
from streamstore.testing import RedisClusterServer

# Many writers on ONE instance serialize on its stream (and contend on its seq): that is not
# what this measures. In the concurrent mode every task works on its own instance, like the
# request handlers of a real app do.
TASKS = 32
TARGET_RATIO = 0.85
LIB_PREFIX = "BenchUser"
RAW_PREFIX = "BenchRaw"


class PlainUser(BaseModel):
    """What a user would hand-write: a plain pydantic model, validated from json.loads."""

    name: str
    age: int = 0
    tags: list[str] = Field(default_factory=list)
    metadata: dict[str, str] = Field(default_factory=dict)


# --- the raw side's read (the writes are in workload.py) ----------------------------------------


async def raw_get(client: aioredis.Redis, inst: RawInstance, _i: int) -> None:
    PlainUser.model_validate(json.loads(await client.execute_command("JSON.GET", inst.key)))


# --- the raw side on a cluster -----------------------------------------------------------------


class SlotRouted:
    """Hand-written cluster routing for the raw side: a plain client per primary, by key slot.

    redis-py 8.1's own RedisCluster runs this MULTI about 6x slower (it asks a node for the
    keys of each queued command, on another event loop) and breaks with concurrent tasks, so
    the raw side does what a careful user would: MULTI on a plain client of the key's primary.
    """

    def __init__(self, cluster: Any) -> None:
        self.cluster = cluster
        self.clients: dict[str, aioredis.Redis] = {}

    def client_for(self, key: str) -> aioredis.Redis:
        node = self.cluster.get_node_from_key(key)
        client = self.clients.get(node.name)
        if client is None:
            client = self.clients[node.name] = aioredis.Redis(host=node.host, port=node.port)
        return client

    def pipeline(self, transaction: bool = True) -> _RoutedPipeline:
        assert transaction
        return _RoutedPipeline(self)

    async def execute_command(self, *args: Any) -> Any:
        return await self.client_for(args[1]).execute_command(*args)

    async def aclose(self) -> None:
        for client in self.clients.values():
            await client.aclose()
        await self.cluster.aclose()


class _RoutedPipeline:
    """Queues calls, then runs them in one MULTI/EXEC on the primary of the first call's key."""

    def __init__(self, router: SlotRouted) -> None:
        self.router = router
        self.calls: list[tuple[str, tuple[Any, ...], dict[str, Any]]] = []

    def __getattr__(self, name: str) -> Callable[..., None]:
        def queue(*args: Any, **kwargs: Any) -> None:
            self.calls.append((name, args, kwargs))

        return queue

    async def execute(self) -> list[Any]:
        name, args, _ = self.calls[0]
        key = args[1] if name == "execute_command" else args[0]
        async with self.router.client_for(key).pipeline(transaction=True) as pipe:
            for name, args, kwargs in self.calls:
                getattr(pipe, name)(*args, **kwargs)
            return await pipe.execute()


# --- measuring --------------------------------------------------------------------------------

Op = Callable[[Any, int], Awaitable[None]]


@dataclass
class Side:
    """One side of a row: how to make its instances and one operation on an instance."""

    make: Callable[[int], Awaitable[list[Any]]]
    op: Op


@dataclass
class Row(Rates):
    operation: str
    mode: str
    tasks: int
    lib: Side
    raw: Side
    ops_per_round: int = 0


async def timed(side: Side, tasks: int, ops: int) -> float:
    """Run ``ops`` operations over ``tasks`` fresh instances; return ops/s."""
    instances = await side.make(tasks)
    per_task = max(1, ops // tasks)

    async def work(instance: Any) -> None:
        for i in range(per_task):
            await side.op(instance, i)

    gc.collect()
    start = time.perf_counter()
    if tasks == 1:
        await work(instances[0])
    else:
        await asyncio.gather(*(work(instance) for instance in instances))
    return per_task * tasks / (time.perf_counter() - start)


async def measure(row: Row, rounds: int, round_seconds: float, warmup_ops: int) -> None:
    # Warm-up (script load, connection pools at full size, pydantic caches), then calibrate:
    # N so that the faster side takes about `round_seconds` per round.
    await timed(row.lib, row.tasks, warmup_ops)
    await timed(row.raw, row.tasks, warmup_ops)
    fastest = max(
        await timed(row.lib, row.tasks, warmup_ops), await timed(row.raw, row.tasks, warmup_ops)
    )
    ops = max(row.tasks, int(fastest * round_seconds) // row.tasks * row.tasks)
    row.ops_per_round = ops
    for r in range(rounds):  # alternate which side goes first, so drift hits both alike
        if r % 2 == 0:
            row.lib_rates.append(await timed(row.lib, row.tasks, ops))
            row.raw_rates.append(await timed(row.raw, row.tasks, ops))
        else:
            row.raw_rates.append(await timed(row.raw, row.tasks, ops))
            row.lib_rates.append(await timed(row.lib, row.tasks, ops))


def build_rows(user_model: type[BaseRedisModel], client: aioredis.Redis) -> list[Row]:
    async def lib_fresh(count: int) -> list[Any]:
        users = [user_model.model_validate(DOC) for _ in range(count)]
        await asyncio.gather(*(user.save() for user in users))
        return users

    async def raw_fresh(count: int) -> list[RawInstance]:
        instances = [RawInstance.new(RAW_PREFIX, DOC) for _ in range(count)]
        await asyncio.gather(*(raw_save(client, inst) for inst in instances))
        return instances

    async def lib_fresh_keys(count: int) -> list[str]:
        return [user.key for user in await lib_fresh(count)]

    async def lib_get(key: str, _i: int) -> None:
        await user_model.get(key)

    table = [
        ("set", lib_set, raw_set),
        ("aappend", lib_append, raw_append),
        ("aset_item", lib_set_item, raw_set_item),
        ("save", lib_save, raw_save),
        ("get", lib_get, raw_get),
    ]
    return [
        Row(
            name,
            mode,
            tasks,
            Side(lib_fresh_keys if name == "get" else lib_fresh, lib_fn),
            Side(raw_fresh, functools.partial(raw_fn, client)),
        )
        for name, lib_fn, raw_fn in table
        for mode, tasks in (("sequential", 1), (f"{TASKS} tasks", TASKS))
    ]


# --- reporting --------------------------------------------------------------------------------


def render(rows: list[Row], header: str) -> str:
    lines = [
        header,
        "",
        "| operation | mode | streamstore ops/s | raw ops/s | ratio |",
        "|---|---|--:|--:|--:|",
    ]
    lines += [
        f"| `{row.operation}` | {row.mode} | {row.lib_median:,.0f} | {row.raw_median:,.0f} "
        f"| {row.ratio:.2f} |"
        for row in rows
    ]
    missing = [f"`{row.operation}` ({row.mode})" for row in rows if row.ratio < TARGET_RATIO]
    verdict = "rows below it: " + ", ".join(missing) if missing else "every row meets it"
    lines += ["", f"Target: ratio >= {TARGET_RATIO}; {verdict}."]
    return "\n".join(lines) + "\n"


async def run(url: str, args: argparse.Namespace) -> str:
    user_model = make_user_model(url, LIB_PREFIX)
    client: Any = RedisSettings(url).client()  # the same kind of client streamstore makes
    if args.cluster:
        await client.initialize()
        client = SlotRouted(client)
    try:
        rows = build_rows(user_model, client)
        for row in rows:
            await measure(row, args.rounds, args.round_seconds, args.warmup_ops)
            ratios = " ".join(
                f"{lib / raw:.2f}" for lib, raw in zip(row.lib_rates, row.raw_rates, strict=True)
            )
            print(
                f"  {row.operation:<9} {row.mode:<10} N={row.ops_per_round:<6} "
                f"ratio per round: {ratios}",
                file=sys.stderr,
            )
        # (redis-py 8.1's async cluster client fails on INFO; the cluster is private anyway)
        server = "a private 3-primary cluster" if args.cluster else await server_version(client)
        header = (
            f"Python {platform.python_version()}, pydantic {pydantic.VERSION}, "
            f"redis-py {redis.__version__} (hiredis), Redis {server}; "
            f"median of {args.rounds} rounds per side, sides alternating."
        )
        if not args.cluster:
            await cleanup(client, (LIB_PREFIX, RAW_PREFIX))
    finally:
        await close(url, client)
    return render(rows, header)


def parse_args() -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--rounds", type=int, default=None, help="rounds per row (default 5)")
    parser.add_argument(
        "--cluster",
        action="store_true",
        help="both sides on a private 3-primary Redis Cluster (the raw side: redis-py's "
        "RedisCluster, MULTI/EXEC in one slot)",
    )
    args = parse_args_with_common(parser, quick_help="tiny rounds: a smoke run")
    if args.rounds is None:
        args.rounds = 3 if args.quick else 5
    args.round_seconds = 0.04 if args.quick else 0.5
    args.warmup_ops = 64 if args.quick else 640
    return args


def main() -> None:
    args = parse_args()
    if not args.cluster:
        run_on_server(run, args, "Benchmarking against {url} ...")
        return
    with RedisClusterServer(masters=3) as cluster:
        print(f"Benchmarking against {cluster.url} ...", file=sys.stderr)
        report = asyncio.run(run(cluster.url, args))
    print(report)
    if args.markdown is not None:
        args.markdown.write_text(report)


if __name__ == "__main__":
    main()
