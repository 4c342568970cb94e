"""Benchmark: what ``Meta.durability`` (a WAIT after each write) costs, against redis-py's own WAIT."""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import json
import statistics
import sys
import time
from collections.abc import Awaitable, Callable, Iterator
from dataclasses import dataclass, field
from typing import Any

import redis
import redis.asyncio as aioredis
from workload import (
    DOC,
    FEED_MAXLEN,
    RawInstance,
    check,
    close,
    fill_defaults,
    lib_set,
    make_user_model,
    parse_args_with_common,
    raw_save,
    raw_set,
    timed,
    versions,
)

from streamstore import BaseRedisModel, Durability
from streamstore.testing import RedisServer

# Four sides, each setting one field (`name`) of its own instances: streamstore with and without
# `Durability(replicas=1)`, and workload.py's raw MULTI/EXEC with and without `WAIT 1 1000` after
# it. Both waiting sides send the write and its WAIT in one round trip on one connection, so what
# durability adds is the primary's round trip to the replica. The servers are always private (a
# primary and one replica on loopback): $REDIS_URL has no replica to wait for.
DURABILITY = Durability(replicas=1, timeout_ms=1000)
#: Concurrent writers in the concurrent mode, each on its own instance (as in bench_core).
TASKS = 10
LIB_PREFIX = "BenchUser"
DURABLE_PREFIX = "BenchDurable"
RAW_PREFIX = "BenchRaw"
#: How long the replica may take to attach to the primary.
SYNC_TIMEOUT = 10.0
_POLL_INTERVAL = 0.02


# --- the servers --------------------------------------------------------------------------------


@contextlib.contextmanager
def primary_and_replica() -> Iterator[tuple[RedisServer, RedisServer]]:
    """A primary and one replica of it, both with RedisJSON, once the replica's link is up."""
    # Else the primary waits 5 s for more replicas to share the first full sync.
    with RedisServer(["--repl-diskless-sync-delay", "0"]) as primary:
        replica_args = ["--replicaof", "127.0.0.1", str(primary.port)]
        with RedisServer(replica_args) as replica:
            wait_for_link(replica)
            yield primary, replica


def wait_for_link(replica: RedisServer) -> None:
    """Return once ``replica`` reports ``master_link_status:up``; raise after `SYNC_TIMEOUT`."""
    deadline = time.monotonic() + SYNC_TIMEOUT
    with redis.Redis(port=replica.port) as client:
        while (status := client.info("replication").get("master_link_status")) != "up":
            check(time.monotonic() < deadline, f"replica link still {status} after {SYNC_TIMEOUT}s")
            time.sleep(_POLL_INTERVAL)


# --- the raw side with WAIT (without it: workload.raw_set) ---------------------------------------


async def raw_set_waiting(client: aioredis.Redis, inst: RawInstance, i: int) -> None:
    """`workload.raw_set`, then ``WAIT 1 1000``: one round trip on one connection.

    WAIT counts the replicas holding what its own connection wrote, and redis-py's transaction
    pipeline sends nothing after its EXEC (a WAIT sent apart may get another pooled connection):
    so MULTI and EXEC are queued by hand in a plain pipeline. The event is `workload.raw_write`'s,
    field for field.
    """
    value = f"name-{i}"
    inst.seq += 1
    ts = str(time.time_ns() // 1_000_000)
    event = {
        "seq": inst.seq,
        "type": "set",
        "path": "$.name",
        "data": json.dumps({"value": value}),
        "ts": ts,
        "meta": "{}",
        "v": "1",
    }
    pipe = client.pipeline(transaction=False)
    pipe.execute_command("MULTI")
    pipe.execute_command("JSON.SET", inst.key, "$.name", json.dumps(value))
    pipe.xadd(inst.stream, event)
    pipe.xadd(
        inst.feed, {"pk": inst.pk, "id": f"{ts}-0", **event}, maxlen=FEED_MAXLEN, approximate=True
    )
    pipe.execute_command("EXEC")
    pipe.wait(DURABILITY.replicas, DURABILITY.timeout_ms)
    *_, applied, confirmed = await pipe.execute()
    check(isinstance(applied, list), f"{inst.key}: EXEC replied {applied!r}")
    check(confirmed >= DURABILITY.replicas, f"{inst.key}: WAIT confirmed {confirmed} replicas")
    inst.doc["name"] = value


# --- measuring ----------------------------------------------------------------------------------


@dataclass
class Side:
    """One of the four: how to make its fresh instances, one write, and its ops/s per round."""

    case: str
    make: Callable[[int], Awaitable[list[Any]]]
    op: Callable[[Any, int], Awaitable[None]]
    #: WAITs sent per write, and per fresh instance (the durable model's `save` waits too).
    waits_per_write: int = 0
    waits_per_instance: int = 0
    rates: list[float] = field(default_factory=list)

    @property
    def median(self) -> float:
        """Its median ops/s."""
        return statistics.median(self.rates)


@dataclass
class Mode:
    """One writer or several: the four sides, in the table's order."""

    name: str
    tasks: int
    lib: Side
    lib_waiting: Side
    raw: Side
    raw_waiting: Side
    ops_per_round: int = 0

    @property
    def sides(self) -> list[Side]:
        """The four sides, in the table's order."""
        return [self.lib, self.lib_waiting, self.raw, self.raw_waiting]


async def rate(side: Side, tasks: int, ops: int) -> float:
    """Write ``ops`` times over ``tasks`` fresh instances, one writer each; return ops/s."""
    instances = await side.make(tasks)
    per_task = max(1, ops // tasks)

    async def work(instance: Any) -> None:
        for i in range(per_task):
            await side.op(instance, i)

    if tasks == 1:
        seconds, _ = await timed(lambda: work(instances[0]))
    else:
        seconds, _ = await timed(lambda: asyncio.gather(*(work(inst) for inst in instances)))
    return per_task * tasks / seconds


async def wait_calls(primary: aioredis.Redis) -> int:
    """How many WAITs the primary has run."""
    stats = await primary.info("commandstats")
    return int(stats.get("cmdstat_wait", {}).get("calls", 0))


async def measure(mode: Mode, args: argparse.Namespace, primary: aioredis.Redis) -> None:
    """Warm up, size the rounds so the fastest side takes ``round_seconds``, then run them.

    The four sides' order rotates each round, so drift hits them alike. Checks that each
    waiting write sent exactly one WAIT, or the rows would measure something else.
    """
    for side in mode.sides:  # scripts loaded, pools full, pydantic caches warm
        await rate(side, mode.tasks, args.warmup_ops)
    fastest = max([await rate(side, mode.tasks, args.warmup_ops) for side in mode.sides])
    ops = max(mode.tasks, int(fastest * args.round_seconds) // mode.tasks * mode.tasks)
    mode.ops_per_round = ops
    sides, before = mode.sides, await wait_calls(primary)
    for r in range(args.rounds):
        for side in sides[r % len(sides) :] + sides[: r % len(sides)]:
            side.rates.append(await rate(side, mode.tasks, ops))
    sent = await wait_calls(primary) - before
    expected = args.rounds * sum(
        side.waits_per_write * ops + side.waits_per_instance * mode.tasks for side in sides
    )
    check(sent == expected, f"{mode.name}: {sent} WAITs reached the primary, not {expected}")
    print(
        f"  {mode.name:<10} N={ops:<6} streamstore/raw per round: {per_round(mode.lib, mode.raw)}"
        f"; with WAIT: {per_round(mode.lib_waiting, mode.raw_waiting)}",
        file=sys.stderr,
    )


def per_round(lib: Side, raw: Side) -> str:
    """Each round's ratio of ``lib``'s rate to ``raw``'s, for the log."""
    return " ".join(f"{a / b:.2f}" for a, b in zip(lib.rates, raw.rates, strict=True))


def build_modes(
    plain: type[BaseRedisModel], durable: type[BaseRedisModel], client: aioredis.Redis
) -> list[Mode]:
    """The sequential and the concurrent mode, each with its four sides."""

    def lib_fresh(model: type[BaseRedisModel]) -> Callable[[int], Awaitable[list[Any]]]:
        async def make(count: int) -> list[Any]:
            users = [model.model_validate(DOC) for _ in range(count)]
            await asyncio.gather(*(user.save() for user in users))
            return users

        return make

    async def raw_fresh(count: int) -> list[RawInstance]:
        instances = [RawInstance.new(RAW_PREFIX, DOC) for _ in range(count)]
        await asyncio.gather(*(raw_save(client, inst) for inst in instances))
        return instances

    async def raw_op(inst: RawInstance, i: int) -> None:
        await raw_set(client, inst, i)

    async def raw_op_waiting(inst: RawInstance, i: int) -> None:
        await raw_set_waiting(client, inst, i)

    wait = f"WAIT {DURABILITY.replicas} {DURABILITY.timeout_ms}"
    return [
        Mode(
            name,
            tasks,
            lib=Side("streamstore", lib_fresh(plain), lib_set),
            lib_waiting=Side(
                f"streamstore, `Durability(replicas={DURABILITY.replicas})`",
                lib_fresh(durable),
                lib_set,
                waits_per_write=1,
                waits_per_instance=1,
            ),
            raw=Side("raw MULTI/EXEC", raw_fresh, raw_op),
            raw_waiting=Side(f"raw MULTI/EXEC + `{wait}`", raw_fresh, raw_op_waiting, 1),
        )
        for name, tasks in (("sequential", 1), (f"{TASKS} tasks", TASKS))
    ]


def make_durable_model(plain: type[BaseRedisModel]) -> type[BaseRedisModel]:
    """``plain`` under its own prefix, every write waiting for `DURABILITY`."""

    class Durable(plain):  # type: ignore[valid-type,misc]  # a base made at run time
        class Meta:
            key_prefix = DURABLE_PREFIX
            durability = DURABILITY

    Durable.__name__ = Durable.__qualname__ = DURABLE_PREFIX
    return Durable


async def check_replica_has_it(durable: type[BaseRedisModel], replica_url: str) -> None:
    """A durable write, once returned, is on the replica: read it there straight away."""
    user: Any = durable.model_validate(DOC)
    await user.save()
    await user.name.set("on the replica")
    async with aioredis.Redis.from_url(replica_url) as replica:
        found = await replica.execute_command("JSON.GET", user.key, "$.name")
    check(json.loads(found) == ["on the replica"], f"the replica has {found!r} at {user.key}")


# --- reporting ----------------------------------------------------------------------------------


def render(modes: list[Mode], header: str) -> str:
    """The table: per mode and side its median ops/s, streamstore over raw, and what WAIT costs.

    "durability slowdown" is a side's ops/s without WAIT over its ops/s with it; "+µs/write" is
    the time per write it adds (with several writers, of the wall clock, not of each write).
    """
    lines = [
        header,
        "",
        "| mode | case | ops/s (median) | streamstore / raw | durability slowdown | +µs/write |",
        "|---|---|--:|--:|--:|--:|",
    ]
    for mode in modes:
        for side, raw_side, without in (
            (mode.lib, mode.raw, None),
            (mode.lib_waiting, mode.raw_waiting, mode.lib),
            (mode.raw, None, None),
            (mode.raw_waiting, None, mode.raw),
        ):
            ratio = f"{side.median / raw_side.median:.2f}" if raw_side else ""
            slowdown = f"{without.median / side.median:.2f}x" if without else ""
            extra = f"{1e6 / side.median - 1e6 / without.median:,.0f}" if without else ""
            lines.append(
                f"| {mode.name} | {side.case} | {side.median:,.0f} | {ratio} | {slowdown} "
                f"| {extra} |"
            )
    return "\n".join(lines) + "\n"


async def run(primary_url: str, replica_url: str, args: argparse.Namespace) -> str:
    """Measure both modes; return the report."""
    plain = make_user_model(primary_url, LIB_PREFIX)
    durable = make_durable_model(plain)
    client = aioredis.Redis.from_url(primary_url, decode_responses=False)  # as streamstore's
    try:
        modes = build_modes(plain, durable, client)
        for mode in modes:
            await measure(mode, args, client)
        await check_replica_has_it(durable, replica_url)
        header = (
            f"{await versions(client)}; a primary and one replica on loopback; `set` of one "
            f"field; median of {args.rounds} rounds per side, the four sides' order rotating."
        )
    finally:
        await close(primary_url, client)
    return render(modes, header)


def parse_args() -> argparse.Namespace:
    """The command line; ``--quick`` makes tiny rounds."""
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--rounds", type=int, default=None, help="rounds per side (default 7)")
    args = parse_args_with_common(parser, quick_help="tiny rounds: a smoke run")
    fill_defaults(args, quick={"rounds": 3}, full={"rounds": 7})
    args.round_seconds = 0.04 if args.quick else 0.5
    args.warmup_ops = 64 if args.quick else 640
    return args


def main() -> None:
    """Start the primary and its replica, measure, print (and save) the report."""
    args = parse_args()
    with primary_and_replica() as (primary, replica):
        print(
            f"Benchmarking durability on {primary.url} (replica {replica.url}) ...",
            file=sys.stderr,
        )
        report = asyncio.run(run(primary.url, replica.url, args))
    print(report)
    if args.markdown is not None:
        args.markdown.write_text(report)


if __name__ == "__main__":
    main()
