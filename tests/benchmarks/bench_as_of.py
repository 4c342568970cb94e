"""Benchmark: as_of(seq=) in a long history: the stream reads it makes and its time against one raw XRANGE."""

from __future__ import annotations

import argparse
import statistics
import sys
import time
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from typing import Any

import redis.asyncio as aioredis
from workload import (
    DOC,
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
    versions,
)

from streamstore import BaseRedisModel

# What reading an instance as of a past seq costs in a long history with snapshots. as_of finds
# the entry of that seq by its id and folds from the nearest snapshot before it, so it must at
# least read the entries from that snapshot on: about `SNAPSHOT_EVERY` of them, one XRANGE. That
# XRANGE, with redis-py and nothing decoded, is the raw side. The stream reads are counted by the
# server (INFO commandstats, XRANGE and XREVRANGE calls): run it on a private server (the
# default), where no other client reads streams meanwhile.
TARGET_READS = 10  # stream reads for one as_of, anywhere in the history
SNAPSHOT_EVERY = 100
PREFIX = "AsOf"
#: Increments per pipeline block while writing the history (each block is one function call).
#: A call is never split by a snapshot, so blocks longer than SNAPSHOT_EVERY space them wider.
BURST = SNAPSHOT_EVERY


async def write_history(model: type[BaseRedisModel], events: int, burst: int) -> Any:
    """One instance of about ``events`` events: ``saved``, then increments of ``age``, ``burst``
    a pipeline block."""
    user = model.model_validate(DOC)
    await user.save()
    while (user.version or 0) < events:
        async with user.pipeline():
            for _ in range(min(burst, events - (user.version or 0))):
                await user.age.increase(1)
    return user


async def range_reads(client: aioredis.Redis) -> int:
    """The server's XRANGE and XREVRANGE calls so far."""
    stats = await client.info("commandstats")
    return sum(stats.get(f"cmdstat_{name}", {}).get("calls", 0) for name in ("xrange", "xrevrange"))


async def net_output(client: aioredis.Redis) -> int:
    return int((await client.info("stats"))["total_net_output_bytes"])


async def bytes_out(client: aioredis.Redis, work: Callable[[], Awaitable[Any]]) -> int:
    """The bytes the server sent while ``work`` ran (less the reply of the INFO that counted)."""
    before = await net_output(client)
    await work()
    after = await net_output(client)
    info_reply = await net_output(client) - after
    return after - before - info_reply


@dataclass
class Target:
    """One seq to read the instance as of: its reads, and seconds per call on each side."""

    seq: int
    age: int  # the age the fold must give
    entry_id: str  # where the raw XRANGE starts: SNAPSHOT_EVERY entries before the target's end
    reads: int = 0
    lib_bytes: int = 0  # bytes the server sent for one as_of
    raw_bytes: int = 0  # ... for the raw XRANGE
    lib: list[float] = field(default_factory=list)
    raw: list[float] = field(default_factory=list)

    @property
    def lib_rate(self) -> float:
        return 1 / statistics.median(self.lib)

    @property
    def raw_rate(self) -> float:
        return 1 / statistics.median(self.raw)

    @property
    def ratio(self) -> float:
        return self.lib_rate / self.raw_rate


async def seconds_per_call(work: Callable[[], Awaitable[Any]], calls: int) -> float:
    start = time.perf_counter()
    for _ in range(calls):
        await work()
    return (time.perf_counter() - start) / calls


async def measure(
    model: type[BaseRedisModel],
    client: aioredis.Redis,
    user: Any,
    target: Target,
    args: argparse.Namespace,
) -> None:
    stream = user.stream_key

    async def lib() -> None:
        found = await model.as_of(user.pk, seq=target.seq)
        check(found.age == target.age, f"as_of seq {target.seq}: age {found.age}, not {target.age}")

    async def raw() -> None:
        entries = await client.xrange(stream, target.entry_id, "+", count=SNAPSHOT_EVERY)
        check(len(entries) == SNAPSHOT_EVERY, f"XRANGE read {len(entries)} entries")

    before = await range_reads(client)
    await lib()
    target.reads = await range_reads(client) - before
    target.lib_bytes = await bytes_out(client, lib)
    target.raw_bytes = await bytes_out(client, raw)
    for r in range(args.rounds):  # alternate which side goes first, so drift hits both alike
        sides = ((lib, target.lib), (raw, target.raw))
        for work, seconds in sides if r % 2 == 0 else reversed(sides):
            seconds.append(await seconds_per_call(work, args.calls))


def render(targets: list[Target], header: str, events: int) -> str:
    lines = [
        header,
        "",
        "| target seq | stream reads | `as_of` calls/s (median) | raw XRANGE of "
        f"{SNAPSHOT_EVERY} calls/s (median) | ratio | server sent, `as_of` KB | ... raw KB |",
        "|--:|--:|--:|--:|--:|--:|--:|",
    ]
    lines += [
        f"| {t.seq:,} | {t.reads} | {t.lib_rate:,.0f} | {t.raw_rate:,.0f} | {t.ratio:.2f} "
        f"| {t.lib_bytes / 1000:,.1f} | {t.raw_bytes / 1000:,.1f} |"
        for t in targets
    ]
    worst = max(t.reads for t in targets)
    verdict = "met" if worst <= TARGET_READS else "missed"
    lines += [
        "",
        f"Target: <= {TARGET_READS} stream reads (XRANGE/XREVRANGE) for one `as_of` anywhere in "
        f"a {events:,}-event history; {verdict} (at most {worst}).",
    ]
    return "\n".join(lines) + "\n"


async def run(url: str, args: argparse.Namespace) -> str:
    client = aioredis.Redis.from_url(url, decode_responses=True)
    model = make_user_model(url, PREFIX, snapshot_every=SNAPSHOT_EVERY)
    try:
        await cleanup(client, (PREFIX,))
        print(f"  writing {args.events:,} events ...", file=sys.stderr)
        user = await write_history(model, args.events, args.burst)
        history = await user.history()
        check(len(history) == user.version, f"{len(history)} events, version {user.version}")
        snapshots = sum(event.type == "snapshot" for event in history)
        expected = user.version // (max(SNAPSHOT_EVERY, args.burst) + 1) - 1
        check(snapshots >= expected, f"only {snapshots} snapshots")
        ages: dict[int, int] = {}  # the age after each seq, from the events themselves
        age = 0
        for event in history:
            if event.type == "saved":
                age = DOC["age"]
            elif event.type == "number.incr":
                age = event.data["value"]
            ages[event.seq] = age
        ids = {event.seq: event.id for event in history}
        last = user.version
        seqs = sorted({min(max(2, s), last - 1) for s in (2, *args.targets, last - 1)})
        starts = {
            seq: ids[min(max(1, seq - SNAPSHOT_EVERY + 1), last - SNAPSHOT_EVERY + 1)]
            for seq in seqs
        }
        targets = [Target(seq, ages[seq], starts[seq]) for seq in seqs]
        for target in targets:
            await measure(model, client, user, target, args)
            print(
                f"  seq {target.seq:>6,}: {target.reads} reads, ratio per round "
                + " ".join(f"{r / lib:.2f}" for lib, r in zip(target.lib, target.raw, strict=True)),
                file=sys.stderr,
            )
        if args.profile:
            middle = targets[len(targets) // 2]
            work = await profiled(lambda: model.as_of(user.pk, seq=middle.seq))
            print_profile(work, f"as_of seq {middle.seq}", ("cumulative", "tottime"), args.profile)
        header = (
            f"{await versions(client)}; one instance of {last:,} events (`saved`, then "
            f"increments written {args.burst} a pipeline), `Meta.snapshot_every = {SNAPSHOT_EVERY}` "
            f"({snapshots} snapshots); median of {args.rounds} rounds of {args.calls} calls per "
            "side, sides alternating. Stream reads: the server's XRANGE + XREVRANGE calls "
            f"for one `as_of`. Raw: one XRANGE of the {SNAPSHOT_EVERY} entries up to the target's "
            "(from the first for the early ones), as redis-py returns them, nothing decoded. Server sent: growth of INFO "
            "stats total_net_output_bytes over one call."
        )
        await cleanup(client, (PREFIX,))
    finally:
        await close(url, client)
    return render(targets, header, last)


def parse_args() -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--events", type=int, default=None, help="events of the history")
    parser.add_argument("--calls", type=int, default=None, help="calls per side and round")
    parser.add_argument(
        "--targets",
        type=int,
        nargs="*",
        default=None,
        help="seqs to read as of, besides 2 and the last but one (default: quarters)",
    )
    parser.add_argument(
        "--burst",
        type=int,
        default=BURST,
        help=f"increments per pipeline block while writing (default {BURST}; a block is never "
        "split, so longer ones space the snapshots wider)",
    )
    add_rounds_url_profile(parser, profile_of="one as_of in the middle of the history")
    args = parse_args_with_common(parser, quick_help="a short history, 3 rounds: a smoke run")
    fill_defaults(
        args,
        quick={"events": 2_000, "calls": 20, "rounds": 3},
        full={"events": 20_000, "calls": 100, "rounds": 5},
    )
    args.events = max(args.events, 3)
    if args.targets is None:
        args.targets = [args.events * k // 4 for k in (1, 2, 3)]
    return args


def main() -> None:
    run_on_server(run, parse_args(), "Benchmarking as_of against {url} ...")


if __name__ == "__main__":
    main()
