"""Benchmark: replay (rebuild, verify, verify_all) against reading the same streams with raw XRANGE."""

from __future__ import annotations

import argparse
import statistics
import sys
from dataclasses import dataclass, field
from typing import Any

import redis.asyncio as aioredis
from workload import (
    DOC,
    TAGS_CAP,
    BenchmarkDataError,
    Mix,
    Row,
    add_rounds_url_profile,
    check,
    cleanup,
    close,
    fill_defaults,
    make_user_model,
    parse_args_with_common,
    print_profile,
    profiled,
    run_on_server,
    send,
    table,
    timed,
    versions,
)

from streamstore import BaseRedisModel
from streamstore import operations as ops
from streamstore.executor import run_plans
from streamstore.projections.as_of import PAGE

# What the read side costs next to the bare reads it is made of. The raw side reads the same
# streams with hand-written redis-py (hiredis) and decodes nothing beyond what redis-py returns:
# the ceiling for any reader in Python. streamstore also decodes each entry's seq and type (and the
# path and data of those it folds), folds them into the document, compares it with the stored one
# and (rebuild) writes it back.
TARGET_RATIO = 0.40  # rebuild of a long stream: at least 40% of the raw XRANGE rate
#: Instances per pipelined round trip in `verify_all` (its default ``batch``); the raw side too.
BATCH = 100
SNAPSHOT_EVERY = 100
LONG_PREFIX = "ReplayLong"  # one instance with a long history
SNAP_PREFIX = "ReplaySnap"  # the same history, with Meta.snapshot_every
MANY_PREFIX = "ReplayMany"  # many instances with short histories


# --- writing the histories (setup, not measured) ----------------------------------------------


#: The event mix, repeated: mostly list appends, field sets and increments.
CYCLE = ("append", "set", "incr", "append", "set_item", "set", "append", "incr", "set", "append")
#: Operations per script call while writing.
OPS_PER_CALL = 10


async def write_long(model: type[BaseRedisModel], events: int) -> tuple[Any, Mix]:
    """One instance with ``events`` events (plus any snapshots the model writes).

    Returns it and its mix, to write more of the same.
    """
    user = model.model_validate(DOC)
    await user.save()  # event 1
    mix, plans, left = Mix(CYCLE), [], events - 1
    while left > 0:
        batch = mix.take(min(OPS_PER_CALL, left))
        left -= len(batch)
        plans.append(user._ss_plan(batch, create=False))
    await send(model, plans)
    return user, mix


async def events_after_snapshot(client: aioredis.Redis, stream: str) -> int | None:
    """How many events follow the newest ``snapshot`` event (None: none among the newest)."""
    entries = await client.xrevrange(stream, "+", "-", count=2 * SNAPSHOT_EVERY)
    for after, (_, fields) in enumerate(entries):
        if fields[b"type"] == b"snapshot":
            return after
    return None


async def end_between_snapshots(client: aioredis.Redis, user: Any, mix: Mix) -> None:
    """Write single events until half of ``SNAPSHOT_EVERY`` follow the newest snapshot.

    Where the last snapshot falls depends on the length and on how the writes were batched:
    the middle is the average case of a replay from a snapshot.
    """
    wanted = SNAPSHOT_EVERY // 2
    for _ in range(3 * SNAPSHOT_EVERY):
        if await events_after_snapshot(client, user.stream_key) == wanted:
            return
        await run_plans(type(user)._ss_client(), [user._ss_plan([mix.next()], create=False)])
    raise BenchmarkDataError(f"no snapshot every {SNAPSHOT_EVERY} events in {user.stream_key}")


async def write_many(model: type[BaseRedisModel], instances: int, per_instance: int) -> None:
    """``instances`` instances of ``per_instance`` events each: ``saved``, then the mix."""
    plans = []
    for _ in range(instances):
        user = model.model_validate(DOC)
        batch = Mix(CYCLE).take(per_instance - 1) or [ops.save(user.model_dump_json())]
        plans.append(user._ss_plan(batch, create=per_instance > 1))
    await send(model, plans)


# --- the raw side: hand-written redis-py --------------------------------------------------------


async def raw_read_stream(client: aioredis.Redis, stream: str | bytes, low: str = "-") -> int:
    """Read a whole stream with XRANGE, ``PAGE`` entries a call; return how many entries."""
    read = 0
    while True:
        entries = await client.xrange(stream, low, "+", count=PAGE)
        read += len(entries)
        if len(entries) < PAGE:
            return read
        low = "(" + entries[-1][0].decode()


async def raw_read_class(client: aioredis.Redis, prefix: str) -> tuple[int, int]:
    """SCAN a class's streams; read each with its document, ``BATCH`` pipelined a round trip.

    Returns (entries read, documents read).
    """
    entries = documents = 0

    async def read(streams: list[bytes]) -> None:
        nonlocal entries, documents
        async with client.pipeline(transaction=False) as pipe:
            for stream in streams:
                pipe.xrange(stream, "-", "+", count=PAGE)
                pipe.execute_command("JSON.GET", stream.replace(b"}#events:", b"}:", 1))
            replies = await pipe.execute()
        for stream, page, document in zip(streams, replies[0::2], replies[1::2], strict=True):
            entries += len(page)
            documents += document is not None
            if len(page) == PAGE:  # a long history: page on, on its own
                entries += await raw_read_stream(client, stream, "(" + page[-1][0].decode())

    cursor, pending = 0, []
    while True:
        cursor, keys = await client.scan(cursor, match=f"{{{prefix}:*}}#events:*", count=1000)
        pending += keys
        while len(pending) >= BATCH:
            await read(pending[:BATCH])
            del pending[:BATCH]
        if not cursor:
            break
    if pending:
        await read(pending)
    return entries, documents


# --- measuring --------------------------------------------------------------------------------


@dataclass
class LongCase:
    """The one-instance case: a long history, with and without snapshots."""

    model: type[BaseRedisModel]
    snap_model: type[BaseRedisModel]
    client: aioredis.Redis
    user: Any
    snap_user: Any
    events: int
    rebuild: Row
    verify: Row
    snap_seconds: list[float] = field(default_factory=list)
    snap_folded: int = 0

    async def corrupt(self, user: Any) -> None:
        """Change the stored document behind the library's back (so rebuild must write)."""
        await self.client.execute_command("JSON.SET", user.key, "$.name", '"corrupted"')

    async def raw(self) -> float:
        seconds, read = await timed(lambda: raw_read_stream(self.client, self.user.stream_key))
        check(read == self.events, f"raw XRANGE read {read} entries, not {self.events}")
        return seconds

    async def lib_rebuild(self) -> float:
        await self.corrupt(self.user)
        seconds, report = await timed(lambda: self.model.rebuild(self.user.pk))
        check(report.rewritten, f"rebuild did not rewrite: {report}")
        check(report.replayed == self.events, f"rebuild folded {report.replayed} events")
        return seconds

    async def lib_verify(self) -> float:
        seconds, report = await timed(lambda: self.model.verify(self.user.pk))
        check(report.equal, f"verify found differences: {report}")
        check(report.replayed == self.events, f"verify folded {report.replayed} events")
        return seconds

    async def lib_snap_rebuild(self) -> float:
        await self.corrupt(self.snap_user)
        seconds, report = await timed(lambda: self.snap_model.rebuild(self.snap_user.pk))
        check(report.rewritten, f"rebuild (snapshots) did not rewrite: {report}")
        self.snap_folded = report.replayed
        return seconds

    async def round(self, raw_first: bool) -> None:
        if raw_first:
            self.rebuild.raw.append(await self.raw())
        self.rebuild.lib.append(await self.lib_rebuild())
        self.verify.lib.append(await self.lib_verify())
        self.snap_seconds.append(await self.lib_snap_rebuild())
        if not raw_first:
            self.rebuild.raw.append(await self.raw())
        self.verify.raw.append(self.rebuild.raw[-1])  # the same raw read for both rows

    @property
    def snap_time_ratio(self) -> float:
        """Median wall time of the rebuild with snapshots over the one without."""
        return statistics.median(self.snap_seconds) / statistics.median(self.rebuild.lib)


@dataclass
class ManyCase:
    """The class-wide case: many instances with short histories."""

    model: type[BaseRedisModel]
    client: aioredis.Redis
    instances: int
    row: Row

    async def raw(self) -> float:
        seconds, (read, documents) = await timed(lambda: raw_read_class(self.client, MANY_PREFIX))
        check(read == self.row.events, f"raw read {read} entries, not {self.row.events}")
        check(documents == self.instances, f"raw read {documents} documents")
        return seconds

    async def lib(self) -> float:
        seconds, summary = await timed(lambda: self.model.verify_all(batch=BATCH))
        check(summary.instances == self.instances, f"verify_all saw {summary.instances} instances")
        check(summary.equal == self.instances, f"verify_all found differences: {summary}")
        check(summary.events == self.row.events, f"verify_all folded {summary.events} events")
        return seconds

    async def round(self, raw_first: bool) -> None:
        if raw_first:
            self.row.raw.append(await self.raw())
        self.row.lib.append(await self.lib())
        if not raw_first:
            self.row.raw.append(await self.raw())


async def setup_long(url: str, client: aioredis.Redis, events: int) -> LongCase:
    model = make_user_model(url, LONG_PREFIX)
    snap_model = make_user_model(url, SNAP_PREFIX, snapshot_every=SNAPSHOT_EVERY)
    user, _ = await write_long(model, events)
    snap_user, mix = await write_long(snap_model, events)
    await end_between_snapshots(client, snap_user, mix)
    length = await client.xlen(user.stream_key)
    check(length == events, f"the stream holds {length} entries, not {events}")
    case = LongCase(
        model,
        snap_model,
        client,
        user,
        snap_user,
        events,
        Row(f"`rebuild`, 1 instance of {events:,} events", events),
        Row(f"`verify`, 1 instance of {events:,} events", events),
    )
    # Warm-up: functions loaded, connections open, caches filled; and a first check of all.
    await case.round(raw_first=True)
    case.rebuild.clear()
    case.verify.clear()
    case.snap_seconds.clear()
    return case


async def setup_many(
    url: str, client: aioredis.Redis, instances: int, per_instance: int
) -> ManyCase:
    model = make_user_model(url, MANY_PREFIX)
    await write_many(model, instances, per_instance)
    events = instances * per_instance
    row = Row(f"`verify_all`, {instances:,} instances of {per_instance} events", events)
    case = ManyCase(model, client, instances, row)
    await case.round(raw_first=True)  # warm-up, and a first check of all
    row.clear()
    return case


async def measure(case: LongCase | ManyCase, rounds: int, name: str) -> None:
    for r in range(rounds):  # alternate which side goes first, so drift hits both alike
        await case.round(raw_first=r % 2 == 0)
        print(f"  {name}: round {r + 1}/{rounds} done", file=sys.stderr)


# --- profiling (--profile) --------------------------------------------------------------------


async def profile(long: LongCase, many: ManyCase, top: int) -> None:
    """Print cProfile's top costs of one rebuild and one verify_all to stderr."""
    await long.corrupt(long.user)
    cases = (
        ("rebuild", lambda: long.model.rebuild(long.user.pk)),
        ("verify_all", lambda: many.model.verify_all(batch=BATCH)),
    )
    for name, work in cases:
        print_profile(await profiled(work), name, ("cumulative", "tottime"), top)


# --- reporting --------------------------------------------------------------------------------


def render(long: LongCase, many: ManyCase, header: str) -> str:
    lines = table(header, (long.rebuild, long.verify, many.row))
    met = long.rebuild.ratio >= TARGET_RATIO
    snap = long.snap_time_ratio
    lines += [
        "",
        f"Target: `rebuild` >= {TARGET_RATIO:.0%} of the raw XRANGE rate; "
        f"{'met' if met else 'missed'} ({long.rebuild.ratio:.0%}).",
        "",
        f"With `Meta.snapshot_every = {SNAPSHOT_EVERY}` the same history's `rebuild` folds "
        f"{long.snap_folded} events (its last snapshot and the {long.snap_folded - 1} after it, "
        f"the average case) and takes {snap:.4f} of the wall time of the rebuild without "
        f"snapshots ({1 / snap:,.1f}x faster).",
    ]
    return "\n".join(lines) + "\n"


async def run(url: str, args: argparse.Namespace) -> str:
    client = aioredis.Redis.from_url(url, decode_responses=False)  # same as streamstore's
    prefixes = (LONG_PREFIX, SNAP_PREFIX, MANY_PREFIX)
    try:
        await cleanup(client, prefixes)  # leftovers of an interrupted run would skew the counts
        print(f"  writing 2 instances of {args.events:,} events ...", file=sys.stderr)
        long = await setup_long(url, client, args.events)
        print(
            f"  writing {args.instances:,} instances of {args.per_instance} events ...",
            file=sys.stderr,
        )
        many = await setup_many(url, client, args.instances, args.per_instance)
        await measure(long, args.rounds, "1 instance")
        await measure(many, args.rounds, f"{args.instances:,} instances")
        for row in (long.rebuild, long.verify, many.row):
            print(f"  {row.case}: ratio per round {row.per_round()}", file=sys.stderr)
        if args.profile:
            await profile(long, many, args.profile)
        header = (
            f"{await versions(client)}; median of {args.rounds} rounds per side, sides "
            f"alternating. Raw: XRANGE in pages of {PAGE} "
            f"(the library's page), and for many instances SCAN + pipelined XRANGE and JSON.GET, "
            f"{BATCH} instances per round trip (`verify_all`'s batch); entries as redis-py "
            "returns them, nothing decoded. Events are list appends (`tags` capped at "
            f"{TAGS_CAP} items by pops), field sets, increments and dict item sets."
        )
        await cleanup(client, prefixes)
    finally:
        await close(url, client)
    return render(long, many, header)


def parse_args() -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--events", type=int, default=None, help="events of the long history")
    parser.add_argument("--instances", type=int, default=None, help="instances for verify_all")
    parser.add_argument("--per-instance", type=int, default=None, help="events per instance")
    add_rounds_url_profile(parser, profile_of="rebuild and verify_all")
    args = parse_args_with_common(parser, quick_help="small histories, 3 rounds: a smoke run")
    fill_defaults(
        args,
        quick={"events": 1_000, "instances": 100, "per_instance": 20, "rounds": 3},
        full={"events": 100_000, "instances": 10_000, "per_instance": 20, "rounds": 5},
    )
    args.events = max(args.events, 1)
    args.per_instance = max(args.per_instance, 1)
    return args


def main() -> None:
    run_on_server(run, parse_args(), "Benchmarking replay against {url} ...")


if __name__ == "__main__":
    main()
