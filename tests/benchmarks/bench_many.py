"""Benchmark: many instances a call (get_many, select, save_many, insert) against raw JSON.MGET and pipelines."""

from __future__ import annotations

import argparse
import asyncio
import gc
import platform
import sys
import time
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from typing import Any

import pydantic
import redis
import redis.asyncio as aioredis
from bench_core import SlotRouted
from pydantic import BaseModel, Field
from redis.crc import key_slot
from workload import (
    DOC,
    PARTITIONS,
    Rates,
    RawInstance,
    add_rounds_url_profile,
    check,
    cleanup,
    close,
    make_user_model,
    parse_args_with_common,
    print_profile,
    profiled,
    queue_raw_save,
    run_on_server,
    server_version,
)

from streamstore import BaseRedisModel, RedisSettings
from streamstore.table import TableModel
from streamstore.testing import RedisClusterServer

# Reading and writing a thousand instances in one call, next to what a user would hand-write for
# the same: one JSON.MGET (one per hash slot on a cluster, a pipeline per primary) and a pydantic
# validation of each document; for writes, one pipeline in which each record is what one
# streamstore save does (JSON.SET, XADD to its stream, XADD to its partition's feed) in its own
# MULTI/EXEC, so each record is atomic on its own as in save_many and insert.
TARGET_RATIO = 0.8
LIB_PREFIX = "ManyUser"
TABLE_PREFIX = "ManyTable"
RAW_PREFIX = "ManyRaw"


class PlainUser(BaseModel):
    """What a user would hand-write: a plain pydantic model of the same fields."""

    name: str
    age: int = 0
    tags: list[str] = Field(default_factory=list)
    metadata: dict[str, str] = Field(default_factory=dict)


def make_table_model(url: str) -> type[TableModel]:
    """A table model of the user's fields, its primary key ``name``."""

    class ManyTable(TableModel):
        _primary_key_field: str = "name"
        name: str
        age: int = 0
        tags: list[str] = Field(default_factory=list)
        metadata: dict[str, str] = Field(default_factory=dict)

        class Meta:
            redis = url
            key_prefix = TABLE_PREFIX
            partitions = PARTITIONS

    return ManyTable


# --- the raw side: hand-written redis-py --------------------------------------------------------


class Route:
    """Where the raw side sends a key: the one server, else its primary's client (by slot)."""

    def __init__(self, client: Any, *, cluster: bool) -> None:
        self.client = client
        self.routed = SlotRouted(client) if cluster else None

    def client_for(self, key: str) -> aioredis.Redis:
        return self.client if self.routed is None else self.routed.client_for(key)

    def slot(self, key: str) -> int:
        return 0 if self.routed is None else key_slot(key.encode())

    async def aclose(self) -> None:
        await (self.client if self.routed is None else self.routed).aclose()


async def raw_read(route: Route, keys: list[str]) -> int:
    """JSON.MGET of ``keys`` (one per slot, a pipeline per server) and validate each; how many."""
    by_client: dict[aioredis.Redis, dict[int, list[str]]] = {}
    for key in keys:
        by_client.setdefault(route.client_for(key), {}).setdefault(route.slot(key), []).append(key)

    async def mget(client: aioredis.Redis, slots: dict[int, list[str]]) -> list[Any]:
        if len(slots) == 1:  # one server: the one JSON.MGET of them all
            (group,) = slots.values()
            return [await client.execute_command("JSON.MGET", *group, ".")]
        async with client.pipeline(transaction=False) as pipe:
            for group in slots.values():
                pipe.execute_command("JSON.MGET", *group, ".")
            return await pipe.execute()

    replies = await asyncio.gather(*(mget(client, slots) for client, slots in by_client.items()))
    users = [
        PlainUser.model_validate_json(document)
        for reply in replies
        for documents in reply
        for document in documents
    ]
    return len(users)


async def raw_write(route: Route, instances: list[RawInstance]) -> int:
    """Save each instance in its own MULTI/EXEC, a pipeline per server; return how many."""
    by_client: dict[aioredis.Redis, list[RawInstance]] = {}
    for inst in instances:
        by_client.setdefault(route.client_for(inst.key), []).append(inst)

    async def write(client: aioredis.Redis, batch: list[RawInstance]) -> int:
        async with client.pipeline(transaction=False) as pipe:
            for inst in batch:
                pipe.execute_command("MULTI")
                queue_raw_save(pipe, inst)
                pipe.execute_command("EXEC")
            replies = await pipe.execute()
        return sum(isinstance(reply, list) for reply in replies)  # one EXEC reply per record

    return sum(await asyncio.gather(*(write(c, batch) for c, batch in by_client.items())))


# --- measuring --------------------------------------------------------------------------------

#: One batch of work on one side: it returns how many records it read or wrote.
Batch = Callable[[], Awaitable[int]]


@dataclass
class Row(Rates):
    operation: str
    lib: Batch
    raw: Batch
    records: int
    batches_per_round: int = 0


async def timed(work: Batch, batches: int, records: int) -> float:
    """Run ``batches`` batches one after another; return records/s."""
    gc.collect()
    start = time.perf_counter()
    for _ in range(batches):
        done = await work()
        check(done == records, f"a batch handled {done} records, not {records}")
    return batches * records / (time.perf_counter() - start)


async def measure(row: Row, rounds: int, round_seconds: float) -> None:
    # Warm-up (functions loaded, pools at size, pydantic caches), then calibrate: batches so
    # that the faster side takes about `round_seconds` per round.
    for side in (row.lib, row.raw):
        await timed(side, 2, row.records)
    fastest = max(await timed(row.lib, 2, row.records), await timed(row.raw, 2, row.records))
    row.batches_per_round = max(1, round(fastest * round_seconds / row.records))
    for r in range(rounds):  # alternate which side goes first, so drift hits both alike
        sides = ((row.lib, row.lib_rates), (row.raw, row.raw_rates))
        for work, rates in sides if r % 2 == 0 else reversed(sides):
            rates.append(await timed(work, row.batches_per_round, row.records))


@dataclass
class Fixture:
    """The instances both sides read and write, made once (setup, not measured)."""

    user_model: type[BaseRedisModel]
    table_model: type[TableModel]
    users: list[Any]
    records: list[Any]
    raws: list[RawInstance]


async def setup(url: str, count: int) -> Fixture:
    user_model, table_model = make_user_model(url, LIB_PREFIX), make_table_model(url)
    users = [user_model.model_validate({**DOC, "name": f"user-{i}"}) for i in range(count)]
    records = [table_model.model_validate({**DOC, "name": f"user-{i}"}) for i in range(count)]
    await user_model.save_many(users)
    await table_model.insert(records)
    raws = [RawInstance.new(RAW_PREFIX, DOC) for _ in range(count)]
    return Fixture(user_model, table_model, users, records, raws)


def build_rows(fix: Fixture, route: Route) -> list[Row]:
    count = len(fix.users)
    pks = [user.pk for user in fix.users]
    keys = [user.key for user in fix.users]
    ids = [record.name for record in fix.records]
    table_keys = [record.key for record in fix.records]

    async def get_many() -> int:
        return len(await fix.user_model.get_many(pks))

    async def get_gather() -> int:
        return len(await asyncio.gather(*(fix.user_model.get(key) for key in keys)))

    async def select() -> int:
        return len(await fix.table_model.select(ids=ids))

    async def save_many() -> int:
        return len(await fix.user_model.save_many(fix.users))

    async def insert() -> int:
        await fix.table_model.insert(fix.records)
        return count

    async def read_users() -> int:
        return await raw_read(route, keys)

    async def read_table() -> int:
        return await raw_read(route, table_keys)

    async def write() -> int:
        return await raw_write(route, fix.raws)

    return [
        Row(f"`get_many` x{count:,}", get_many, read_users, count),
        Row(f"`get` x{count:,} (gather)", get_gather, read_users, count),
        Row(f"`select(ids)` x{count:,}", select, read_table, count),
        Row(f"`save_many` x{count:,}", save_many, write, count),
        Row(f"`insert` x{count:,}", insert, write, count),
    ]


# --- reporting --------------------------------------------------------------------------------


def render(rows: list[Row], header: str) -> str:
    lines = [
        header,
        "",
        "| operation | streamstore records/s | raw records/s | ratio |",
        "|---|--:|--:|--:|",
    ]
    lines += [
        f"| {row.operation} | {row.lib_median:,.0f} | {row.raw_median:,.0f} | {row.ratio:.2f} |"
        for row in rows
    ]
    targeted = [row for row in rows if "gather" not in row.operation]  # that row is context
    missing = [row.operation for row in targeted if row.ratio < TARGET_RATIO]
    verdict = "rows below it: " + ", ".join(missing) if missing else "every row meets it"
    lines += ["", f"Target: ratio >= {TARGET_RATIO} (the gather row is context); {verdict}."]
    return "\n".join(lines) + "\n"


async def run(url: str, args: argparse.Namespace) -> str:
    client: Any = RedisSettings(url).client()  # the same kind of client streamstore makes
    if args.cluster:
        await client.initialize()
    route = Route(client, cluster=args.cluster)
    try:
        if not args.cluster:
            await cleanup(client, (LIB_PREFIX, TABLE_PREFIX, RAW_PREFIX))
        fix = await setup(url, args.records)
        rows = build_rows(fix, route)
        for row in rows:
            await measure(row, args.rounds, args.round_seconds)
            ratios = " ".join(
                f"{lib / raw:.2f}" for lib, raw in zip(row.lib_rates, row.raw_rates, strict=True)
            )
            print(
                f"  {row.operation:<24} batches={row.batches_per_round:<4} "
                f"ratio per round: {ratios}",
                file=sys.stderr,
            )
        if args.profile:
            for row in rows:
                profile = await profiled(row.lib)
                print_profile(profile, row.operation, ("cumulative", "tottime"), args.profile)
        # (redis-py 8.1's async cluster client fails on INFO; the cluster is private anyway)
        server = "a private 3-primary cluster" if args.cluster else await server_version(client)
        header = (
            f"Python {platform.python_version()}, pydantic {pydantic.VERSION}, "
            f"redis-py {redis.__version__} (hiredis), Redis {server}; {args.records:,} "
            f"records a call, {PARTITIONS} partitions; median of {args.rounds} rounds per side, "
            "sides alternating. Raw reads: JSON.MGET (one a slot, a pipeline per server) and "
            "`model_validate_json` of a plain pydantic model; raw writes: one pipeline per "
            "server, JSON.SET + XADD stream + XADD feed in a MULTI/EXEC per record."
        )
        if not args.cluster:
            await cleanup(client, (LIB_PREFIX, TABLE_PREFIX, RAW_PREFIX))
    finally:
        await route.aclose()
        await close(url)  # the client streamstore made for it
    return render(rows, header)


def parse_args() -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--records", type=int, default=1_000, help="records a call (1,000)")
    parser.add_argument(
        "--cluster",
        action="store_true",
        help="both sides on a private 3-primary Redis Cluster (the raw side: a plain client "
        "per primary, by key slot)",
    )
    add_rounds_url_profile(parser, profile_of="one call of each row's streamstore side")
    args = parse_args_with_common(parser, quick_help="tiny rounds: a smoke run")
    if args.rounds is None:
        args.rounds = 3 if args.quick else 5
    args.round_seconds = 0.05 if args.quick else 0.5
    args.records = max(args.records, 1)
    return args


def main() -> None:
    args = parse_args()
    if not args.cluster:
        run_on_server(run, args, "Benchmarking many-record calls against {url} ...")
        return
    with RedisClusterServer(masters=3) as cluster:
        print(f"Benchmarking many-record calls against {cluster.url} ...", file=sys.stderr)
        report = asyncio.run(run(cluster.url, args))
    print(report)
    if args.markdown is not None:
        args.markdown.write_text(report)


if __name__ == "__main__":
    main()
