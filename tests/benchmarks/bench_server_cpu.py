"""Benchmark: Redis CPU per write (INFO commandstats), streamstore's script vs a hand-written MULTI."""

from __future__ import annotations

import argparse
import asyncio
import json
import platform
import statistics
import sys
import uuid
import zlib
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import redis
import redis.asyncio as aioredis
from pydantic import Field

from streamstore import BaseRedisModel
from streamstore.connection import resolve_client
from streamstore.testing import redis_url_for_tests

# The server's own time per write, from INFO commandstats after CONFIG RESETSTAT: what one
# write costs the single Redis thread, so what caps a server's write rate when many clients
# write. A script's (or EXEC's) time includes the commands it runs. Run it on a private server
# (the default): CONFIG RESETSTAT clears the statistics of everyone else on a shared one, and
# their commands would be counted too.
TASKS = 16  # writers in flight, each on its own instance (keeps the client from being the limit)
PARTITIONS = 16
FEED_MAXLEN = 10_000
LIB_PREFIX = "CpuUser"
RAW_PREFIX = "CpuRaw"
#: Commands that run streamstore's write, whichever way the executor calls it.
SCRIPT_COMMANDS = ("evalsha", "eval", "fcall")
#: Commands a raw write queues inside MULTI/EXEC.
RAW_COMMANDS = ("json.set", "json.arrappend", "xadd")

#: The document every instance starts from (both sides); `save` writes all of it.
DOC: dict[str, Any] = {
    "name": "Ada Lovelace",
    "age": 36,
    "email": "ada@example.org",
    "active": True,
    "score": 12,
    "country": "UK",
    "title": "Countess of Lovelace",
    "notes": "first published algorithm",
    "tags": ["math", "poetry", "engines"],
    "metadata": {"city": "London", "lang": "en"},
}


def make_user_model(url: str) -> type[BaseRedisModel]:
    class CpuUser(BaseRedisModel):
        name: str
        age: int = 0
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
            key_prefix = LIB_PREFIX
            partitions = PARTITIONS
            feed_maxlen = FEED_MAXLEN

    return CpuUser


# --- the raw side: the JSON command, then the event in stream and feed, in one MULTI/EXEC ----


@dataclass
class RawInstance:
    pk: str
    key: str
    stream: str
    feed: str
    seq: int = 0

    @classmethod
    def new(cls) -> RawInstance:
        pk = uuid.uuid4().hex
        tag = f"{{{RAW_PREFIX}:{zlib.crc32(pk.encode()) % PARTITIONS}}}"
        return cls(pk, f"{tag}:{pk}", f"{tag}#events:{pk}", f"{tag}#feed")


async def raw_write(
    client: aioredis.Redis, inst: RawInstance, command: tuple[str, ...], kind: str, data: str
) -> None:
    inst.seq += 1
    event: dict[str | bytes, str | int] = {"seq": inst.seq, "type": kind, "path": command[2]}
    event |= {"data": data, "ts": "1732262400000", "meta": "{}", "v": "1"}
    pipe = client.pipeline(transaction=True)
    pipe.execute_command(*command)
    pipe.xadd(inst.stream, event)
    pipe.xadd(
        inst.feed,
        {"pk": inst.pk, "id": "1732262400000-0", **event},
        maxlen=FEED_MAXLEN,
        approximate=True,
    )
    await pipe.execute()


def raw_op(name: str) -> Callable[[aioredis.Redis, RawInstance, int], Awaitable[None]]:
    async def op(client: aioredis.Redis, inst: RawInstance, i: int) -> None:
        if name == "set":
            value = json.dumps(f"name-{i}")
            command = ("JSON.SET", inst.key, "$.name", value)
            await raw_write(client, inst, command, "set", f'{{"value":{value}}}')
        elif name == "aappend":
            value = json.dumps(f"tag-{i}")
            command = ("JSON.ARRAPPEND", inst.key, "$.tags", value)
            await raw_write(client, inst, command, "list.append", f'{{"value":{value}}}')
        elif name == "aset_item":
            key, value = f"k{i % 8}", json.dumps(f"v{i}")
            command = ("JSON.SET", inst.key, f"$.metadata.{key}", value)
            data = f'{{"key":"{key}","value":{value}}}'
            await raw_write(client, inst, command, "dict.set_item", data)
        else:
            document = json.dumps(DOC)
            await raw_write(client, inst, ("JSON.SET", inst.key, "$", document), "saved", document)

    return op


# --- the streamstore side: the model API ----------------------------------------------------


def lib_op(name: str) -> Callable[[Any, int], Awaitable[Any]]:
    async def op(user: Any, i: int) -> Any:
        if name == "set":
            return await user.name.set(f"name-{i}")
        if name == "aappend":
            return await user.tags.aappend(f"tag-{i}")
        if name == "aset_item":
            return await user.metadata.aset_item(f"k{i % 8}", f"v{i}")
        return await user.save()

    return op


# --- measuring --------------------------------------------------------------------------------

OPERATIONS = ("set", "aappend", "aset_item", "save")


@dataclass
class Row:
    operation: str
    lib: list[float] = field(default_factory=list)
    raw: list[float] = field(default_factory=list)

    @property
    def lib_median(self) -> float:
        return statistics.median(self.lib)

    @property
    def raw_median(self) -> float:
        return statistics.median(self.raw)


async def server_usec(stats: aioredis.Redis, commands: tuple[str, ...]) -> float:
    """Total usec the server spent in ``commands`` since the last CONFIG RESETSTAT."""
    info = await stats.info("commandstats")
    return sum(float(info.get(f"cmdstat_{name}", {}).get("usec", 0)) for name in commands)


async def run_writes(
    instances: list[Any], op: Callable[[Any, int], Awaitable[Any]], writes: int
) -> None:
    per_task = writes // len(instances)

    async def work(instance: Any) -> None:
        for i in range(per_task):
            await op(instance, i)

    await asyncio.gather(*(work(instance) for instance in instances))


async def measure_lib(
    user_model: type[BaseRedisModel], stats: aioredis.Redis, name: str, writes: int
) -> float:
    users = [user_model.model_validate(DOC) for _ in range(TASKS)]
    await asyncio.gather(*(user.save() for user in users))
    await stats.config_resetstat()
    await run_writes(users, lib_op(name), writes)
    return await server_usec(stats, SCRIPT_COMMANDS) / (writes // TASKS * TASKS)


async def measure_raw(
    client: aioredis.Redis, stats: aioredis.Redis, name: str, writes: int
) -> float:
    instances = [RawInstance.new() for _ in range(TASKS)]
    await asyncio.gather(
        *(client.execute_command("JSON.SET", inst.key, "$", json.dumps(DOC)) for inst in instances)
    )
    op = raw_op(name)
    await stats.config_resetstat()
    await run_writes(instances, lambda inst, i: op(client, inst, i), writes)
    done = writes // TASKS * TASKS
    # EXEC's time includes the commands it runs; their own sum is the floor if a server
    # version counted them apart.
    exec_usec = await server_usec(stats, ("exec",))
    return max(exec_usec, await server_usec(stats, RAW_COMMANDS)) / done


async def measure(
    user_model: type[BaseRedisModel],
    client: aioredis.Redis,
    stats: aioredis.Redis,
    rounds: int,
    writes: int,
) -> list[Row]:
    rows = [Row(name) for name in OPERATIONS]
    for row in rows:  # warm-up: script loaded, pools at full size, caches filled
        await measure_lib(user_model, stats, row.operation, TASKS * 4)
        await measure_raw(client, stats, row.operation, TASKS * 4)
    for r in range(rounds):  # alternate which side goes first, so drift hits both alike
        for row in rows:
            if r % 2 == 0:
                row.lib.append(await measure_lib(user_model, stats, row.operation, writes))
                row.raw.append(await measure_raw(client, stats, row.operation, writes))
            else:
                row.raw.append(await measure_raw(client, stats, row.operation, writes))
                row.lib.append(await measure_lib(user_model, stats, row.operation, writes))
        print(f"  round {r + 1}/{rounds} done", file=sys.stderr)
    return rows


# --- reporting --------------------------------------------------------------------------------


def render(rows: list[Row], header: str) -> str:
    lines = [
        header,
        "",
        "| operation | streamstore µs/write | raw µs/write | ratio raw/streamstore |",
        "|---|--:|--:|--:|",
    ]
    lines += [
        f"| `{row.operation}` | {row.lib_median:.1f} | {row.raw_median:.1f} "
        f"| {row.raw_median / row.lib_median:.2f} |"
        for row in rows
    ]
    lines += [
        "",
        "Redis CPU per write from INFO commandstats (usec of the script call, or of EXEC, over the "
        "writes made); a ratio of 0.5 means a server sustains half as many streamstore writes as "
        "raw ones.",
    ]
    return "\n".join(lines) + "\n"


async def describe(stats: aioredis.Redis) -> str:
    server = await stats.info("server")
    text = f"Redis {server.get('redis_version', '?')}"
    modules = (await stats.info("modules")).get("modules", [])
    for module in modules if isinstance(modules, list) else []:
        if module.get("name") == "ReJSON":
            ver = int(module.get("ver", 0))
            text += f", RedisJSON {ver // 10000}.{ver // 100 % 100}.{ver % 100}"
    return text


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
    client = aioredis.Redis.from_url(url)
    stats = aioredis.Redis.from_url(url, decode_responses=True)
    try:
        rows = await measure(user_model, client, stats, args.rounds, args.writes)
        header = (
            f"Python {platform.python_version()}, redis-py {redis.__version__}, "
            f"{await describe(stats)}; {args.writes} writes per side and round over {TASKS} "
            f"instances, median of {args.rounds} rounds, sides alternating."
        )
        await cleanup(client)
    finally:
        await client.aclose()
        await stats.aclose()
        await resolve_client(url).aclose()
    return render(rows, header)


def parse_args() -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--rounds", type=int, default=None, help="rounds (default 7)")
    parser.add_argument("--writes", type=int, default=None, help="writes per side and round")
    parser.add_argument("--quick", action="store_true", help="few small rounds: a smoke run")
    parser.add_argument("--markdown", type=Path, help="also write the table to this file")
    args = parser.parse_args()
    if args.rounds is None:
        args.rounds = 3 if args.quick else 7
    if args.writes is None:
        args.writes = 320 if args.quick else 5_000
    args.writes = max(args.writes, TASKS)
    return args


def main() -> None:
    args = parse_args()
    with redis_url_for_tests() as url:  # $REDIS_URL, else a private redis-server + RedisJSON
        print(f"Measuring Redis CPU per write on {url} ...", file=sys.stderr)
        report = asyncio.run(run(url, args))
    print(report)
    if args.markdown is not None:
        args.markdown.write_text(report)


if __name__ == "__main__":
    main()
