"""Benchmark: streamstore's core operations against hand-written redis-py doing the same work."""

from __future__ import annotations

import argparse
import asyncio
import copy
import functools
import gc
import json
import platform
import statistics
import sys
import time
import uuid
import zlib
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pydantic
import redis
import redis.asyncio as aioredis
from pydantic import BaseModel, Field

from streamstore import BaseRedisModel
from streamstore.connection import resolve_client
from streamstore.testing import redis_url_for_tests

# Many writers on ONE instance serialize on its stream (and contend on its seq): that is not
# what this measures. In the concurrent mode every task works on its own instance, like the
# request handlers of a real app do.
TASKS = 32
TARGET_RATIO = 0.85
PARTITIONS = 16  # streamstore's default Meta.partitions; the raw side spreads keys the same way
FEED_MAXLEN = 10_000
LIB_PREFIX = "BenchUser"
RAW_PREFIX = "BenchRaw"

#: The document every instance starts from (both sides).
DOC: dict[str, Any] = {
    "name": "Ada Lovelace",
    "age": 36,
    "tags": ["math", "poetry", "engines"],
    "metadata": {"city": "London", "lang": "en"},
}


class PlainUser(BaseModel):
    """What a user would hand-write: a plain pydantic model, validated from json.loads."""

    name: str
    age: int = 0
    tags: list[str] = Field(default_factory=list)
    metadata: dict[str, str] = Field(default_factory=dict)


def make_user_model(url: str) -> type[BaseRedisModel]:
    class BenchUser(BaseRedisModel):
        name: str
        age: int = 0
        tags: list[str] = Field(default_factory=list)
        metadata: dict[str, str] = Field(default_factory=dict)

        class Meta:
            redis = url
            key_prefix = LIB_PREFIX
            partitions = PARTITIONS
            feed_maxlen = FEED_MAXLEN

    return BenchUser


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
    def new(cls) -> RawInstance:
        pk = uuid.uuid4().hex
        tag = f"{{{RAW_PREFIX}:{zlib.crc32(pk.encode()) % PARTITIONS}}}"
        return cls(pk, f"{tag}:{pk}", f"{tag}#events:{pk}", f"{tag}#feed", copy.deepcopy(DOC))


async def raw_write(
    client: aioredis.Redis,
    inst: RawInstance,
    command: tuple[str, ...],
    *,
    kind: str,
    path: str,
    data: str,
) -> None:
    """The JSON command, then the event in the instance stream and the feed, in one MULTI/EXEC.

    The feed's ``id`` cannot be the stream entry id inside MULTI; a same-sized stand-in is used.
    """
    inst.seq += 1
    ts = str(time.time_ns() // 1_000_000)
    event = {
        "seq": inst.seq,
        "type": kind,
        "path": path,
        "data": data,
        "ts": ts,
        "meta": "{}",
        "v": "1",
    }
    pipe = client.pipeline(transaction=True)
    pipe.execute_command(*command)
    pipe.xadd(inst.stream, event)
    pipe.xadd(
        inst.feed, {"pk": inst.pk, "id": f"{ts}-0", **event}, maxlen=FEED_MAXLEN, approximate=True
    )
    await pipe.execute()


async def raw_save(client: aioredis.Redis, inst: RawInstance, _i: int = 0) -> None:
    document = json.dumps(inst.doc)
    await raw_write(
        client, inst, ("JSON.SET", inst.key, "$", document), kind="saved", path="$", data=document
    )


async def raw_set(client: aioredis.Redis, inst: RawInstance, i: int) -> None:
    value = f"name-{i}"
    await raw_write(
        client,
        inst,
        ("JSON.SET", inst.key, "$.name", json.dumps(value)),
        kind="set",
        path="$.name",
        data=json.dumps({"value": value}),
    )
    inst.doc["name"] = value


async def raw_append(client: aioredis.Redis, inst: RawInstance, i: int) -> None:
    value = f"tag-{i}"
    await raw_write(
        client,
        inst,
        ("JSON.ARRAPPEND", inst.key, "$.tags", json.dumps(value)),
        kind="list.append",
        path="$.tags",
        data=json.dumps({"value": value}),
    )
    inst.doc["tags"].append(value)


async def raw_set_item(client: aioredis.Redis, inst: RawInstance, i: int) -> None:
    key, value = f"k{i % 8}", f"v{i}"
    await raw_write(
        client,
        inst,
        ("JSON.SET", inst.key, f"$.metadata.{key}", json.dumps(value)),
        kind="dict.set_item",
        path="$.metadata",
        data=json.dumps({"key": key, "value": value}),
    )
    inst.doc["metadata"][key] = value


async def raw_get(client: aioredis.Redis, inst: RawInstance, _i: int) -> None:
    PlainUser.model_validate(json.loads(await client.execute_command("JSON.GET", inst.key)))


# --- the streamstore side ---------------------------------------------------------------------


async def lib_set(user: Any, i: int) -> None:
    await user.name.set(f"name-{i}")


async def lib_append(user: Any, i: int) -> None:
    await user.tags.aappend(f"tag-{i}")


async def lib_set_item(user: Any, i: int) -> None:
    await user.metadata.aset_item(f"k{i % 8}", f"v{i}")


async def lib_save(user: Any, _i: int) -> None:
    await user.save()


# --- measuring --------------------------------------------------------------------------------

Op = Callable[[Any, int], Awaitable[None]]


@dataclass
class Side:
    """One side of a row: how to make its instances and one operation on an instance."""

    make: Callable[[int], Awaitable[list[Any]]]
    op: Op


@dataclass
class Row:
    operation: str
    mode: str
    tasks: int
    lib: Side
    raw: Side
    ops_per_round: int = 0
    lib_rates: list[float] = field(default_factory=list)
    raw_rates: list[float] = field(default_factory=list)

    @property
    def lib_median(self) -> float:
        return statistics.median(self.lib_rates)

    @property
    def raw_median(self) -> float:
        return statistics.median(self.raw_rates)

    @property
    def ratio(self) -> float:
        return self.lib_median / self.raw_median


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
        instances = [RawInstance.new() for _ in range(count)]
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


async def server_version(client: aioredis.Redis) -> str:
    info = await client.info("server")
    return str(info.get("redis_version", "?"))


async def cleanup(client: aioredis.Redis) -> None:
    """Remove the benchmark's keys (an external server may be someone's dev database)."""
    for prefix in (LIB_PREFIX, RAW_PREFIX):
        batch: list[bytes] = []
        async for key in client.scan_iter(match=f"{{{prefix}:*", count=1000):
            batch.append(key)
            if len(batch) >= 1000:
                await client.unlink(*batch)
                batch.clear()
        if batch:
            await client.unlink(*batch)


async def run(url: str, args: argparse.Namespace) -> str:
    user_model = make_user_model(url)
    client = aioredis.Redis.from_url(url, decode_responses=False)  # same as streamstore's
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
        header = (
            f"Python {platform.python_version()}, pydantic {pydantic.VERSION}, "
            f"redis-py {redis.__version__} (hiredis), Redis {await server_version(client)}; "
            f"median of {args.rounds} rounds per side, sides alternating."
        )
        await cleanup(client)
    finally:
        await client.aclose()
        await resolve_client(url).aclose()
    return render(rows, header)


def parse_args() -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--rounds", type=int, default=None, help="rounds per row (default 5)")
    parser.add_argument("--quick", action="store_true", help="tiny rounds: a smoke run")
    parser.add_argument("--markdown", type=Path, help="also write the table to this file")
    args = parser.parse_args()
    if args.rounds is None:
        args.rounds = 3 if args.quick else 5
    args.round_seconds = 0.04 if args.quick else 0.5
    args.warmup_ops = 64 if args.quick else 640
    return args


def main() -> None:
    args = parse_args()
    with redis_url_for_tests() as url:  # $REDIS_URL, else a private redis-server + RedisJSON
        print(f"Benchmarking against {url} ...", file=sys.stderr)
        report = asyncio.run(run(url, args))
    print(report)
    if args.markdown is not None:
        args.markdown.write_text(report)


if __name__ == "__main__":
    main()
