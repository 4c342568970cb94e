"""Benchmark: Redis CPU per write (INFO commandstats), streamstore's script vs a hand-written MULTI."""

from __future__ import annotations

import argparse
import asyncio
import functools
import json
import platform
import statistics
import sys
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from typing import Any

import redis
import redis.asyncio as aioredis
from workload import (
    DOC,
    LIB_OPS,
    RAW_OPS,
    RawInstance,
    RawSpelling,
    cleanup,
    close,
    describe,
    make_user_model,
    parse_args_with_common,
    run_on_server,
)

from streamstore import BaseRedisModel

# The server's own time per write, from INFO commandstats after CONFIG RESETSTAT: what one
# write costs the single Redis thread, so what caps a server's write rate when many clients
# write. A script's (or EXEC's) time includes the commands it runs. Run it on a private server
# (the default): CONFIG RESETSTAT clears the statistics of everyone else on a shared one, and
# their commands would be counted too.
TASKS = 16  # writers in flight, each on its own instance (keeps the client from being the limit)
LIB_PREFIX = "CpuUser"
RAW_PREFIX = "CpuRaw"
#: Commands that run streamstore's write, whichever way the executor calls it.
SCRIPT_COMMANDS = ("evalsha", "eval", "fcall")
#: Commands a raw write queues inside MULTI/EXEC.
RAW_COMMANDS = ("json.set", "json.arrappend", "xadd")
#: How this benchmark's raw events are spelled: compact data, a fixed timestamp, the item's path.
SPELLING = RawSpelling(compact=True, fixed_ts="1732262400000", item_path=True)


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
    await run_writes(users, LIB_OPS[name], writes)
    return await server_usec(stats, SCRIPT_COMMANDS) / (writes // TASKS * TASKS)


async def measure_raw(
    client: aioredis.Redis, stats: aioredis.Redis, name: str, writes: int
) -> float:
    instances = [RawInstance.new(RAW_PREFIX, DOC) for _ in range(TASKS)]
    await asyncio.gather(
        *(client.execute_command("JSON.SET", inst.key, "$", json.dumps(DOC)) for inst in instances)
    )
    op = functools.partial(RAW_OPS[name], client, spelling=SPELLING)
    await stats.config_resetstat()
    await run_writes(instances, op, writes)
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


async def run(url: str, args: argparse.Namespace) -> str:
    user_model = make_user_model(url, LIB_PREFIX, profile=True)
    client = aioredis.Redis.from_url(url)
    stats = aioredis.Redis.from_url(url, decode_responses=True)
    try:
        rows = await measure(user_model, client, stats, args.rounds, args.writes)
        header = (
            f"Python {platform.python_version()}, redis-py {redis.__version__}, "
            f"{await describe(stats)}; {args.writes} writes per side and round over {TASKS} "
            f"instances, median of {args.rounds} rounds, sides alternating."
        )
        await cleanup(client, (LIB_PREFIX, RAW_PREFIX))
    finally:
        await close(url, client, stats)
    return render(rows, header)


def parse_args() -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--rounds", type=int, default=None, help="rounds (default 7)")
    parser.add_argument("--writes", type=int, default=None, help="writes per side and round")
    args = parse_args_with_common(parser, quick_help="few small rounds: a smoke run")
    if args.rounds is None:
        args.rounds = 3 if args.quick else 7
    if args.writes is None:
        args.writes = 320 if args.quick else 5_000
    args.writes = max(args.writes, TASKS)
    return args


def main() -> None:
    run_on_server(run, parse_args(), "Measuring Redis CPU per write on {url} ...")


if __name__ == "__main__":
    main()
