"""Benchmark: Redis memory per instance and per event, streamstore against bare RedisJSON documents."""

from __future__ import annotations

import argparse
import asyncio
import json
import statistics
import sys
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field, fields
from typing import Any

import redis.asyncio as aioredis
from pydantic import BaseModel, Field
from workload import (
    BenchmarkDataError,
    check,
    cleanup,
    close,
    fill_defaults,
    parse_args_with_common,
    run_on_server,
    versions,
)

from streamstore import BaseRedisModel
from streamstore import operations as ops
from streamstore.executor import run_plans
from streamstore.keys import KeySpace
from streamstore.operations import Op
from streamstore.plan import Plan
from streamstore.schema import model_json

# What history costs in memory. Each instance is a RedisJSON document plus its event stream, an
# entry in its partition's index, and entries in its partition's change feed (trimmed to about
# Meta.feed_maxlen). The baseline is a bare document: JSON.SET, then changed in place by the same
# RedisJSON command; streamstore minus bare is what the history costs.
#
# Two measures: the server's `used_memory` before and after (everything, the keyspace's hash
# tables included) and `MEMORY USAGE key SAMPLES 0` of each key (exact per key). Run it on a
# private server (the default): used_memory counts every client's data.
#
# A stream is a chain of listpack nodes of at most stream-node-max-bytes (4096) or
# stream-node-max-entries (100). Redis allocates a new node at full size and shrinks it when the
# next one starts, so a stream grows in steps of a node. The instances of the main pass all have
# the same history, so their growth over a few events shows those steps; the cost of one more
# event in a long history is measured on a probe instance instead, over many events.
PARTITIONS = 16  # streamstore's default Meta.partitions
#: The feed keeps every event here, so its cost per entry shows; in use it is trimmed to about
#: Meta.feed_maxlen (10,000) entries per partition, which bounds its total.
FEED_KEEPS_ALL = 10_000_000
DEFAULT_FEED_MAXLEN = 10_000
#: A `Meta.snapshot_every` to price: each snapshot is a whole-document event.
SNAPSHOT_EVERY = 100
#: Snapshots written to one instance to measure a snapshot entry (a node of error at most).
SNAPSHOTS = 400
PREFIX = "Mem"
BARE_PREFIX = "MemBare"
#: Instances saved at once (a connection each).
SAVERS = 32
#: Writes per pipelined round trip, both sides. Small: the server's query buffers grow to hold
#: a round trip and shrink some time later, which used_memory would show as noise.
PER_ROUND_TRIP = 50


class Line(BaseModel):
    sku: str
    qty: int


def make_models(url: str) -> tuple[type[BaseRedisModel], type[BaseRedisModel]]:
    """A small model (a counter, a short string, a list of small dicts) and a 10-field one."""

    class MemSmall(BaseRedisModel):
        count: int = 0
        name: str = ""
        lines: list[Line] = Field(default_factory=list)

        class Meta:
            redis = url
            key_prefix = f"{PREFIX}Small"
            feed_maxlen = FEED_KEEPS_ALL

    class MemWide(BaseRedisModel):
        name: str = "Ada Lovelace"
        email: str = "ada@example.com"
        age: int = 36
        active: bool = True
        country: str = "GB"
        city: str = "London"
        plan: str = "pro"
        logins: int = 0
        joined: str = "1843-07-10"
        tags: list[str] = Field(default_factory=lambda: ["math", "poetry"])

        class Meta:
            redis = url
            key_prefix = f"{PREFIX}Wide"
            feed_maxlen = FEED_KEEPS_ALL

    return MemSmall, MemWide


# --- the cases: one kind of event each, on both sides -----------------------------------------


@dataclass(frozen=True)
class Case:
    """One kind of event: streamstore's operation and the bare RedisJSON command doing the same."""

    name: str
    model: type[BaseRedisModel]
    #: The operation of event ``i`` on ``instance``, as the field wrapper (or save) builds it.
    op: Callable[[Any, int], Op]
    #: The JSON command of event ``i`` on the bare document at ``key``.
    bare: Callable[[Any, str, int], tuple[str, ...]]
    #: Whether a document is what ``events`` events made of a new instance (both sides).
    expect: Callable[[dict[str, Any], int], bool]


def line_json(i: int) -> str:
    return Line(sku=f"SKU-{i:04d}", qty=i % 5 + 1).model_dump_json()


def saved_with(instance: Any, i: int) -> str:
    """The instance's whole document with one field changed, as `save()` writes it."""
    return model_json(instance.model_copy(update={"logins": i + 1}))


def make_cases(small: type[BaseRedisModel], wide: type[BaseRedisModel]) -> list[Case]:
    return [
        Case(
            "`increase()` an int",
            small,
            lambda _u, _i: ops.number_incr(("count",), "1"),
            lambda _u, key, _i: ("JSON.NUMINCRBY", key, "$.count", "1"),
            lambda doc, n: doc["count"] == n,
        ),
        Case(
            "`set()` a short str",
            small,
            lambda _u, i: ops.set_value(("name",), json.dumps(f"name-{i:04d}")),
            lambda _u, key, i: ("JSON.SET", key, "$.name", json.dumps(f"name-{i:04d}")),
            lambda doc, n: doc["name"] == f"name-{n - 1:04d}",
        ),
        Case(
            "`aappend()` a small dict",
            small,
            lambda _u, i: ops.list_append(("lines",), line_json(i)),
            lambda _u, key, i: ("JSON.ARRAPPEND", key, "$.lines", line_json(i)),
            lambda doc, n: len(doc["lines"]) == n,
        ),
        Case(
            "`save()` a 10-field model",
            wide,
            lambda u, i: ops.save(saved_with(u, i)),
            lambda u, key, i: ("JSON.SET", key, "$", saved_with(u, i)),
            lambda doc, n: doc["logins"] == n,
        ),
    ]


# --- measuring ----------------------------------------------------------------------------------


async def used_memory(client: aioredis.Redis) -> int:
    return int((await client.info("memory"))["used_memory"])


async def clean(client: aioredis.Redis, prefixes: Sequence[str]) -> None:
    """Delete the benchmark's keys, and wait until the server has freed them.

    `cleanup` UNLINKs, and large values are freed by a background thread: memory measured
    meanwhile would shrink under the measurement.
    """
    await cleanup(client, prefixes)
    for _ in range(1000):
        if not int((await client.info("memory")).get("lazyfree_pending_objects", 0)):
            return
        await asyncio.sleep(0.01)
    raise BenchmarkDataError("the server did not finish freeing the deleted keys")


async def usage(client: aioredis.Redis, keys: Sequence[str]) -> list[int]:
    """``MEMORY USAGE key SAMPLES 0`` (every element counted) of each key; 0 for a missing key."""
    async with client.pipeline(transaction=False) as pipe:
        for key in keys:
            pipe.memory_usage(key, samples=0)
        return [int(size or 0) for size in await pipe.execute()]


async def check_documents(case: Case, client: aioredis.Redis, keys: list[str], events: int) -> None:
    """Check a few documents against the events they were sent (the numbers mean nothing else)."""
    async with client.pipeline(transaction=False) as pipe:
        for key in keys[:10]:
            pipe.execute_command("JSON.GET", key)
        for text in await pipe.execute():
            doc = json.loads(text)
            check(case.expect(doc, events), f"{case.name}: after {events} events, {doc}")


async def send(model: type[BaseRedisModel], plans: list[Plan]) -> None:
    """Run ``plans`` in order, `PER_ROUND_TRIP` a round trip (each call atomic on its own)."""
    client = model._ss_client()
    for start in range(0, len(plans), PER_ROUND_TRIP):
        await run_plans(client, plans[start : start + PER_ROUND_TRIP])


def per(total: float, count: int) -> float:
    return total / count if count else 0.0


@dataclass(frozen=True)
class Size:
    """How much a round writes per case."""

    #: Instances created, each then given `events` events.
    instances: int
    events: int
    #: Events written to one instance to measure one more event of a long history.
    long: int


@dataclass
class Sample:
    """One case, one round, in bytes."""

    instance: float = 0.0  # used_memory growth per instance created
    doc: float = 0.0  # MEMORY USAGE of a new document (median)
    stream: float = 0.0  # ... of a new instance's stream, one event in it (median)
    feed: float = 0.0  # growth of the feeds' MEMORY USAGE per instance created
    index: float = 0.0  # the indexes' MEMORY USAGE per instance
    event_stream: float = 0.0  # instance stream growth per event, over a long history
    event_feed: float = 0.0  # feed growth per event
    total: float = 0.0  # used_memory growth per instance created and given its events
    stream_after: float = 0.0  # an instance's stream after its events (median)
    compacted: float = 0.0  # ... and after snapshot() + compact() (median)
    snapshot: float = 0.0  # one snapshot entry of a document after the events
    bare_instance: float = 0.0  # the bare side: used_memory growth per instance created
    bare_event: float = 0.0  # ... per event
    bare_total: float = 0.0  # ... per instance created and given its events


async def write_round_robin(case: Case, users: list[Any], events: int, first: int = 0) -> None:
    """Events ``first`` to ``first + events - 1`` of each instance, interleaved as many writers do."""
    model = case.model
    for i in range(first, first + events):
        await send(model, [user._ss_plan([case.op(user, i)], create=False) for user in users])


async def measure_streamstore(
    case: Case, client: aioredis.Redis, size: Size, sample: Sample
) -> list[Any]:
    instances, events, long = size.instances, size.events, size.long
    model = case.model
    space = model.__ss_meta__.keys
    feeds = [space.feed(p) for p in range(PARTITIONS)]
    indexes = [space.listing(p)[0] for p in range(PARTITIONS)]
    before = await used_memory(client)
    feeds_before = sum(await usage(client, feeds))

    users = [model() for _ in range(instances)]
    for start in range(0, instances, SAVERS):  # the public path: event `saved`
        await asyncio.gather(*(user.save() for user in users[start : start + SAVERS]))
    docs, streams = [u.key for u in users], [u.stream_key for u in users]
    sample.instance = per(await used_memory(client) - before, instances)
    sample.doc = statistics.median(await usage(client, docs))
    sample.stream = statistics.median(await usage(client, streams))
    feeds_created = sum(await usage(client, feeds))
    sample.feed = per(feeds_created - feeds_before, instances)
    sample.index = per(sum(await usage(client, indexes)), instances)

    await write_round_robin(case, users, events)
    sample.total = per(await used_memory(client) - before, instances)
    sample.stream_after = statistics.median(await usage(client, streams))
    sample.event_feed = per(sum(await usage(client, feeds)) - feeds_created, instances * events)
    await check_documents(case, client, docs, events)
    lengths = {await client.xlen(stream) for stream in streams[:10]}
    check(lengths == {events + 1}, f"streams hold {lengths} entries, not {events + 1}")
    in_feeds = sum([await client.xlen(feed) for feed in feeds])
    check(in_feeds == instances * (events + 1), f"the feeds hold {in_feeds} entries")

    await send(model, [user._ss_plan([ops.snapshot()], create=False) for user in users])
    removed = await model.compact_all()
    check(removed == instances * (events + 1), f"compact_all removed {removed} events")
    sample.compacted = statistics.median(await usage(client, streams))

    # One more event in a long history: a probe instance's stream over `long` events, from
    # half-way on (the first node's allocation is past; one node of error at most).
    (probe,) = users[:1]
    await write_round_robin(case, [probe], long // 2, first=events)
    halfway = (await usage(client, [probe.stream_key]))[0]
    await write_round_robin(case, [probe], long - long // 2, first=events + long // 2)
    sample.event_stream = per(
        (await usage(client, [probe.stream_key]))[0] - halfway, long - long // 2
    )

    # A snapshot entry of a document as the main pass left it: many of them on a fresh instance.
    fresh = model()
    await fresh.save()
    await write_round_robin(case, [fresh], events)
    start_size = (await usage(client, [fresh.stream_key]))[0]
    await send(model, [fresh._ss_plan([ops.snapshot()], create=False)] * SNAPSHOTS)
    sample.snapshot = per((await usage(client, [fresh.stream_key]))[0] - start_size, SNAPSHOTS)
    return users


async def measure_bare(
    case: Case, client: aioredis.Redis, users: list[Any], events: int, sample: Sample
) -> None:
    space = KeySpace(f"{BARE_PREFIX}{case.model.__name__}", PARTITIONS)
    keys = [space.for_pk(u.pk).doc for u in users]  # keys as long as streamstore's

    async def pipelined(commands: list[tuple[str, ...]]) -> None:
        for start in range(0, len(commands), PER_ROUND_TRIP):
            async with client.pipeline(transaction=False) as pipe:
                for command in commands[start : start + PER_ROUND_TRIP]:
                    pipe.execute_command(*command)
                await pipe.execute()

    before = await used_memory(client)
    # The instances' local state is still what they were created with (plans change none).
    docs = [model_json(u) for u in users]
    await pipelined([("JSON.SET", key, "$", doc) for key, doc in zip(keys, docs, strict=True)])
    created = await used_memory(client)
    for i in range(events):
        await pipelined([case.bare(u, key, i) for u, key in zip(users, keys, strict=True)])
    written = await used_memory(client)
    sample.bare_instance = per(created - before, len(users))
    sample.bare_event = per(written - created, len(users) * events)
    sample.bare_total = per(written - before, len(users))
    await check_documents(case, client, keys, events)


async def measure(case: Case, client: aioredis.Redis, size: Size) -> Sample:
    """One round of ``case``: streamstore's side, then the bare side, each from a clean slate."""
    sample = Sample()
    prefixes = (f"{PREFIX}Small", f"{PREFIX}Wide", f"{BARE_PREFIX}{case.model.__name__}")
    await clean(client, prefixes)
    users = await measure_streamstore(case, client, size, sample)
    await clean(client, prefixes)
    await measure_bare(case, client, users, size.events, sample)
    await clean(client, prefixes)
    return sample


# --- reporting ----------------------------------------------------------------------------------


@dataclass
class Result:
    case: Case
    samples: list[Sample] = field(default_factory=list)

    def __getattr__(self, name: str) -> float:
        """The median of a `Sample` field over the rounds."""
        if name not in {f.name for f in fields(Sample)}:
            raise AttributeError(name)
        return statistics.median(getattr(s, name) for s in self.samples)


def n(value: float) -> str:
    return f"{value:,.0f}"


def render(results: list[Result], header: str, events: int) -> str:
    lines = [
        header,
        "",
        "Per instance, at creation (its `saved` event):",
        "",
        "| model | streamstore B | document | stream | feed | index | bare RedisJSON B "
        "| history costs |",
        "|---|--:|--:|--:|--:|--:|--:|--:|",
    ]
    by_model: dict[type[BaseRedisModel], list[Result]] = {}
    for result in results:
        by_model.setdefault(result.case.model, []).append(result)
    for model, group in by_model.items():

        def m(name: str, group: list[Result] = group) -> float:
            return statistics.median(getattr(r, name) for r in group)

        lines.append(
            f"| {len(model.model_fields)} fields | {n(m('instance'))} | {n(m('doc'))} "
            f"| {n(m('stream'))} | {n(m('feed'))} | {n(m('index'))} | {n(m('bare_instance'))} "
            f"| {n(m('instance') - m('bare_instance'))} |"
        )
    lines += [
        "",
        "Per event, one more in a long history:",
        "",
        "| event | instance stream B | feed B | history costs B | the document's own change B |",
        "|---|--:|--:|--:|--:|",
    ]
    lines += [
        f"| {r.case.name} | {n(r.event_stream)} | {n(r.event_feed)} "
        f"| {n(r.event_stream + r.event_feed)} | {n(r.bare_event)} |"
        for r in results
    ]
    lines += [
        "",
        f"An instance after {events} events, in all; snapshots and compaction:",
        "",
        "| event | streamstore B | bare RedisJSON B | history costs | its stream B "
        "| ... after `snapshot()` + `compact()` | a snapshot entry B "
        f"| `snapshot_every = {SNAPSHOT_EVERY}` adds B/event |",
        "|---|--:|--:|--:|--:|--:|--:|--:|",
    ]
    lines += [
        f"| {r.case.name} | {n(r.total)} | {n(r.bare_total)} | {n(r.total - r.bare_total)} "
        f"| {n(r.stream_after)} | {n(r.compacted)} | {n(r.snapshot)} "
        f"| {n(r.snapshot / SNAPSHOT_EVERY)} |"
        for r in results
    ]
    feed_entry = statistics.median(r.event_feed for r in results)
    cap = PARTITIONS * DEFAULT_FEED_MAXLEN
    lines += [
        "",
        "streamstore B and bare RedisJSON B: growth of `INFO memory used_memory` per instance; "
        "the document's own change: the same per event on the bare side, which streamstore's "
        "documents match. The other columns: growth of `MEMORY USAGE key SAMPLES 0` (per key; "
        "they do not add up exactly to used_memory, which also counts the keyspace's own "
        "tables). History costs = streamstore - bare. A stream's newest listpack node is allocated whole (`stream-node-max-bytes`): "
        "most of what a new instance costs, and why its first events (those that fit in that "
        "node) cost less than the per-event figures. The change feed is kept whole here, so its "
        "entries count in the totals; in use it is trimmed to about `Meta.feed_maxlen` entries "
        f"per partition, so a class's feeds hold at most about {cap:,} entries "
        f"(~{cap * feed_entry / 2**20:,.0f} MiB at {feed_entry:,.0f} B each) however long the "
        "history: what keeps growing is the instance streams. Compaction deletes the events "
        "before the newest snapshot, but a stream keeps its newest listpack node.",
    ]
    return "\n".join(lines) + "\n"


async def run(url: str, args: argparse.Namespace) -> str:
    small, wide = make_models(url)
    cases = make_cases(small, wide)
    client = aioredis.Redis.from_url(url, decode_responses=True)
    setting = "stream-node-max-bytes"
    server_value = (await client.config_get(setting))[setting]
    try:
        if args.stream_node_max_bytes is not None:
            await client.config_set(setting, args.stream_node_max_bytes)
        # Warm-up: the Functions library loaded, connections and query buffers at full size.
        for case in cases:
            await measure(case, client, Size(SAVERS, 2, 4))
        results = [Result(case) for case in cases]
        size = Size(args.instances, args.events, args.long)
        for r in range(args.rounds):
            for result in results:
                result.samples.append(await measure(result.case, client, size))
            print(f"  round {r + 1}/{args.rounds} done", file=sys.stderr)
        node_bytes = (await client.config_get(setting))[setting]
        header = (
            f"{await versions(client)}; {args.instances:,} instances x {args.events} events per "
            f"case, one more event measured over {args.long:,} on one instance; median of "
            f"{args.rounds} rounds; {PARTITIONS} partitions, stream-node-max-bytes {node_bytes}."
        )
    finally:
        await client.config_set(setting, server_value)
        await close(url, client)
    return render(results, header, args.events)


def parse_args() -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--instances", type=int, default=None, help="instances per case")
    parser.add_argument("--events", type=int, default=None, help="events per instance")
    parser.add_argument("--long", type=int, default=None, help="events of the long history")
    parser.add_argument("--rounds", type=int, default=None, help="rounds per case (median)")
    parser.add_argument(
        "--stream-node-max-bytes",
        type=int,
        default=None,
        help="CONFIG SET this for the run (default: the server's, 4096 unless configured)",
    )
    args = parse_args_with_common(parser, quick_help="few instances and events: a smoke run")
    fill_defaults(
        args,
        quick={"instances": 50, "events": 10, "long": 200, "rounds": 1},
        full={"instances": 500, "events": 100, "long": 2_000, "rounds": 3},
    )
    if min(args.instances, args.events, args.long, args.rounds) < 1:
        raise BenchmarkDataError("--instances, --events, --long and --rounds must be at least 1")
    return args


def main() -> None:
    run_on_server(run, parse_args(), "Measuring memory per instance and per event on {url} ...")


if __name__ == "__main__":
    main()
