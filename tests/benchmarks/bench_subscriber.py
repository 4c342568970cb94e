"""Benchmark: a subscriber's throughput (no-op handler, batch acks) against raw XREADGROUP."""

from __future__ import annotations

import argparse
import sys
import time
import uuid
from dataclasses import dataclass, field
from typing import Any

import redis.asyncio as aioredis
from workload import (
    DOC,
    PARTITIONS,
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
from streamstore.projections import Change, Runner, subscriber

# What consuming the change feed through the library costs next to the bare reads and acks it is
# made of. The raw side reads every partition feed of the class with one hand-written XREADGROUP
# (redis-py, hiredis) per batch and acknowledges each partition's entries with one XACK, decoding
# nothing beyond what redis-py returns: the ceiling for any consumer in Python. streamstore also
# decodes each entry into a `Change`, groups a batch by instance, runs the handler once per
# change (in seq order per instance) and holds partition leases.
TARGET_RATIO = 0.50  # events/s through one consumer: at least 50% of the raw XREADGROUP rate
#: Entries per partition per XREADGROUP (the Runner's default ``batch``); the raw side too.
BATCH = 100
#: The Runner's default ``concurrency``: handlers running at once.
DEFAULT_CONCURRENCY = 10
#: Every event must stay in the feed (a trimmed feed would hand the consumers fewer).
FEED_MAXLEN = 10**7
PREFIX = "SubFeed"
RAW_CONSUMER = "raw"


# --- writing the feed (setup, not measured) -----------------------------------------------------

#: The event mix, repeated: field sets, increments, dict item sets and list appends.
CYCLE = ("set", "incr", "set_item", "append", "set", "incr", "append", "set_item")
#: Operations per script call (one instance each). One operation a call interleaves the
#: instances in the feed as live traffic would.
OPS_PER_CALL = 1


async def write_feed(model: type[BaseRedisModel], events: int, instances: int) -> None:
    """``events`` events over ``instances`` instances, written round-robin.

    Each instance's first call saves it (its ``saved`` event); the next ones run the mix.
    """
    users = [model.model_validate(DOC) for _ in range(instances)]
    mixes: list[Mix | None] = [None] * instances
    plans, left = [], events
    while left > 0:
        for n, user in enumerate(users):
            if left <= 0:
                break
            mix = mixes[n]
            if mix is None:
                batch = [ops.save(user.model_dump_json())]
                mixes[n] = Mix(CYCLE)
            else:
                batch = mix.take(min(OPS_PER_CALL, left))
            plans.append(user._ss_plan(batch, create=False))
            left -= len(batch)
    await send(model, plans)


# --- the two sides --------------------------------------------------------------------------


def feeds_of(model: type[BaseRedisModel]) -> list[str]:
    keys = model.__ss_meta__.keys
    return [keys.feed(partition) for partition in range(keys.partitions)]


async def raw_consume(client: aioredis.Redis, feeds: list[str], group: str, batch: int) -> int:
    """Create ``group`` at the start of every feed, read them all and ack; return how many read.

    One XREADGROUP reads ``batch`` entries of every partition; then one XACK per partition.
    """
    for feed in feeds:
        await client.xgroup_create(feed, group, id="0", mkstream=True)
    streams: Any = dict.fromkeys(feeds, ">")
    read = 0
    while True:
        reply: Any = await client.xreadgroup(group, RAW_CONSUMER, streams, count=batch)
        if not reply:
            return read
        for name, entries in reply.items() if isinstance(reply, dict) else reply:
            if entries:
                read += len(entries)
                await client.xack(name, group, *(entry_id for entry_id, _ in entries))


@dataclass
class Sides:
    """The measured runs of one round: the raw consumer and streamstore's Runner."""

    model: type[BaseRedisModel]
    url: str
    client: aioredis.Redis
    events: int
    batch: int
    feeds: list[str] = field(init=False)

    def __post_init__(self) -> None:
        self.feeds = feeds_of(self.model)

    async def drop_group(self, group: str, side: str) -> None:
        """Check that ``group`` left nothing pending on any feed, then remove the group."""
        async with self.client.pipeline(transaction=False) as pipe:
            for feed in self.feeds:
                pipe.xpending(feed, group)
            replies = await pipe.execute()
        pending = sum(int(reply["pending"]) for reply in replies)
        check(pending == 0, f"{side}: {pending} entries left pending in group {group}")
        async with self.client.pipeline(transaction=False) as pipe:
            for feed in self.feeds:
                pipe.xgroup_destroy(feed, group)
            await pipe.execute()

    async def raw(self) -> float:
        group = f"bench-raw-{uuid.uuid4().hex[:8]}"
        seconds, read = await timed(lambda: raw_consume(self.client, self.feeds, group, self.batch))
        check(read == self.events, f"raw XREADGROUP read {read} entries, not {self.events}")
        await self.drop_group(group, "raw")
        return seconds

    def runner(self, concurrency: int) -> tuple[Runner, list[int]]:
        """A Runner of a new subscriber (a new group, from the feed's start) with a no-op handler.

        Returns it and a one-item list counting the handler's calls.
        """
        calls = [0]

        async def handle(change: Change) -> None:  # a no-op: counts calls only
            calls[0] += 1

        sub = subscriber(self.model, name=f"bench-{uuid.uuid4().hex[:8]}", start="beginning")(
            handle
        )
        runner = Runner(sub, redis=self.url, burst=True, concurrency=concurrency, batch=self.batch)
        return runner, calls

    async def lib(self, concurrency: int) -> float:
        runner, calls = self.runner(concurrency)
        seconds, _ = await timed(runner.async_run)
        self.check_lib(runner, calls[0], concurrency)
        await self.drop_group(runner.subscribers[0].name, f"concurrency={concurrency}")
        return seconds

    def check_lib(self, runner: Runner, calls: int, concurrency: int) -> None:
        where, stats = f"concurrency={concurrency}", runner.stats
        check(calls == self.events, f"{where}: the handler ran {calls} times, not {self.events}")
        check(stats.handled == self.events, f"{where}: the runner handled {stats.handled}")
        bad = (stats.skipped, stats.retried, stats.dead_lettered)
        check(bad == (0, 0, 0), f"{where}: skipped, retried, dead-lettered {bad}")


# --- measuring --------------------------------------------------------------------------------


@dataclass
class RunnerRow(Row):
    """A `Row` of the Runner at one ``concurrency``."""

    concurrency: int = field(kw_only=True)


async def one_round(sides: Sides, rows: list[RunnerRow], raw_first: bool) -> None:
    """Each side once: the raw consumer first (or last), the Runners in between.

    The Runners go in one order after the raw side and in the other before it, so drift hits
    every side alike; each row's ratio compares with the raw run of the same round.
    """
    raw = await sides.raw() if raw_first else None
    for row in rows if raw_first else reversed(rows):
        row.lib.append(await sides.lib(row.concurrency))
    if raw is None:
        raw = await sides.raw()
    for row in rows:
        row.raw.append(raw)


async def measure(sides: Sides, rows: list[RunnerRow], rounds: int) -> None:
    await one_round(sides, rows, raw_first=True)  # warm-up, and a first check of all
    for row in rows:
        row.clear()
    for r in range(rounds):  # alternate which side goes first, so drift hits both alike
        await one_round(sides, rows, raw_first=r % 2 == 0)
        print(f"  round {r + 1}/{rounds} done", file=sys.stderr)


# --- profiling (--profile) --------------------------------------------------------------------


async def profile(sides: Sides, concurrencies: list[int], top: int) -> None:
    """Print cProfile's top costs of one streamstore round per concurrency to stderr."""
    for concurrency in concurrencies:
        runner, calls = sides.runner(concurrency)
        profiler = await profiled(runner.async_run)
        sides.check_lib(runner, calls[0], concurrency)
        await sides.drop_group(runner.subscribers[0].name, f"profile, concurrency={concurrency}")
        what = f"Runner(concurrency={concurrency})"
        print_profile(profiler, what, ("tottime", "cumulative"), top)


# --- reporting --------------------------------------------------------------------------------


def render(rows: list[RunnerRow], header: str) -> str:
    lines = table(header, rows)
    verdicts = "; ".join(
        f"concurrency={row.concurrency}: {'met' if row.ratio >= TARGET_RATIO else 'missed'} "
        f"({row.ratio:.0%})"
        for row in rows
    )
    lines += ["", f"Target: >= {TARGET_RATIO:.0%} of the raw XREADGROUP rate; {verdicts}."]
    return "\n".join(lines) + "\n"


async def run(url: str, args: argparse.Namespace) -> str:
    client = aioredis.Redis.from_url(url, decode_responses=False)  # same as streamstore's
    try:
        await cleanup(client, (PREFIX,))  # leftovers of an interrupted run would skew the counts
        model = make_user_model(url, PREFIX, feed_maxlen=FEED_MAXLEN)
        print(
            f"  writing {args.events:,} events over {args.instances:,} instances ...",
            file=sys.stderr,
        )
        started = time.perf_counter()
        await write_feed(model, args.events, args.instances)
        sides = Sides(model, url, client, args.events, args.batch)
        lengths = [await client.xlen(feed) for feed in sides.feeds]
        check(sum(lengths) == args.events, f"the feeds hold {sum(lengths)} entries")
        print(
            f"  written in {time.perf_counter() - started:.1f} s; "
            f"feed partitions hold {min(lengths):,}-{max(lengths):,} entries",
            file=sys.stderr,
        )
        rows = [
            RunnerRow(
                f"`Runner`, concurrency={c}{' (default)' if c == DEFAULT_CONCURRENCY else ''}",
                args.events,
                concurrency=c,
            )
            for c in dict.fromkeys((1, args.concurrency))
        ]
        await measure(sides, rows, args.rounds)
        for row in rows:
            print(f"  {row.case}: ratio per round {row.per_round()}", file=sys.stderr)
        if args.profile:
            await profile(sides, [row.concurrency for row in rows], args.profile)
        header = (
            f"{await versions(client)}; {args.events:,} events over {args.instances:,} "
            f"instances in {PARTITIONS} feed partitions; median of "
            f"{args.rounds} rounds per side, sides alternating, a new consumer group from the "
            f"feed's start each run. Raw: one XREADGROUP over the {PARTITIONS} feeds, COUNT "
            f"{args.batch} (the Runner's batch), then one XACK per partition; entries as redis-py "
            "returns them, nothing decoded. streamstore: `Runner(burst=True)`, one subscriber "
            "with a no-op handler; each run includes creating its group (both sides), and the "
            "Runner's leases and health key."
        )
        await cleanup(client, (PREFIX,))
    finally:
        await close(url, client)
    return render(rows, header)


def parse_args() -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--events", type=int, default=None, help="events in the feed (100,000)")
    parser.add_argument("--instances", type=int, default=None, help="instances writing (200)")
    parser.add_argument("--batch", type=int, default=BATCH, help=f"XREADGROUP COUNT ({BATCH})")
    parser.add_argument(
        "--concurrency",
        type=int,
        default=DEFAULT_CONCURRENCY,
        help=f"the second row's Runner concurrency ({DEFAULT_CONCURRENCY}); the first is 1",
    )
    add_rounds_url_profile(parser, profile_of="one Runner run per row")
    args = parse_args_with_common(parser, quick_help="a small feed, 3 rounds: a smoke run")
    fill_defaults(
        args,
        quick={"events": 2_000, "instances": 20, "rounds": 3},
        full={"events": 100_000, "instances": 200, "rounds": 5},
    )
    args.instances = max(args.instances, 1)
    args.events = max(args.events, args.instances)  # each instance has its `saved` event
    return args


def main() -> None:
    run_on_server(run, parse_args(), "Benchmarking subscribers against {url} ...")


if __name__ == "__main__":
    main()
