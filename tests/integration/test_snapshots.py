"""Snapshots and compaction: replay starts at the newest snapshot, and what it needs survives."""

from __future__ import annotations

import json

import pytest
from pydantic import Field

from streamstore import BaseRedisModel, ConfigurationError, HistoryTrimmedError


class Log(BaseRedisModel):
    lines: list[str] = Field(default_factory=list)
    count: int = 0

    class Meta:
        snapshot_every = 5


async def log_with(lines: int) -> Log:
    log = Log()
    await log.save()
    for i in range(lines):
        await log.lines.aappend(f"line {i}")
    return log


async def test_a_snapshot_follows_every_nth_event_with_the_document_as_stored(redis):
    log = await log_with(9)  # saved + 4 appends, snapshot, 5 appends, snapshot
    events = await log.history()
    assert [e.seq for e in events if e.type == "snapshot"] == [6, 12]
    snapshot = events[-1]
    raw = await redis.execute_command("JSON.GET", log.key)
    assert snapshot.data == {"document": json.loads(raw)}
    assert snapshot.path == "$" and log.version == 12
    feed = await redis.xrevrange(Log.__ss_meta__.keys.for_pk(log.pk).feed, count=1)
    assert feed[0][1][b"type"] == b"snapshot" and feed[0][1][b"seq"] == b"12"


async def test_a_batch_crossing_a_multiple_gets_one_snapshot_after_it(redis):
    log = await log_with(3)  # seq 1..4
    await log.lines.aextend(["a", "b"])  # seq 5 crosses 5: snapshot at 6
    await log.aset(count=1, lines=[])  # seq 7, 8
    assert [e.type for e in await log.history(start_seq=5)] == [
        "list.extend",
        "snapshot",
        "set",
        "set",
    ]


async def test_replay_reads_only_from_the_newest_snapshot(redis):
    log = await log_with(12)  # snapshots at 6 and 12; seq 13, 14, 15 after
    report = await Log.verify(log.pk)
    assert report.equal and (report.seq, report.replayed) == (15, 4)


async def test_an_explicit_snapshot_changes_nothing_but_starts_replay(redis):
    class Plain(BaseRedisModel):
        n: int = 0

    plain = Plain()
    await plain.save()
    await plain.n.increase(2)
    await plain.snapshot()
    await plain.n.increase(3)
    assert [e.type for e in await plain.history()][-2:] == ["snapshot", "number.incr"]
    assert (await Plain.verify(plain.pk)).replayed == 2
    assert (await Plain.get(plain.key)).n == 5


async def test_compaction_trims_before_the_newest_snapshot_and_replay_still_works(redis):
    log = await log_with(13)  # snapshots at 6 and 12
    current = await Log.get(log.key)
    assert await log.compact() == 11
    assert [e.seq for e in await log.history()] == [12, 13, 14, 15, 16]
    assert (await Log.verify(log.pk)).equal
    await redis.execute_command("JSON.SET", log.key, "$.lines", "[]")
    assert (await Log.rebuild(log.pk)).rewritten
    assert await Log.get(log.key) == current
    assert await Log.as_of(log.pk, seq=16) == current
    assert (await Log.as_of(log.pk, seq=12)).lines == [f"line {i}" for i in range(9)]
    assert await log.compact() == 0  # nothing before the newest snapshot any more


async def test_as_of_before_the_oldest_kept_event_is_a_clear_error(redis):
    log = await log_with(13)
    events = await log.history()
    await log.compact()
    with pytest.raises(HistoryTrimmedError, match="events before seq 12 were compacted"):
        await Log.as_of(log.pk, seq=11)
    with pytest.raises(HistoryTrimmedError, match="compacted"):
        await Log.as_of(log.pk, at=events[0].at)
    assert isinstance(HistoryTrimmedError("x"), LookupError)


async def test_without_a_snapshot_compaction_keeps_everything(redis):
    log = await log_with(3)
    assert await log.compact() == 0
    assert len(await log.history()) == 4


async def test_history_trimmed_by_hand_without_a_snapshot_is_reported(redis):
    log = await log_with(3)
    second = (await log.history())[1]
    await redis.xtrim(log.stream_key, minid=second.id, approximate=False)
    report = await Log.verify(log.pk)
    assert report.problem is not None and "removed" in report.problem


async def test_compact_all_compacts_every_instance(redis):
    logs = [await log_with(13) for _ in range(3)]
    short = await log_with(2)
    assert await Log.compact_all(batch=2) == 33
    for log in logs:
        assert (await log.history())[0].seq == 12
    assert len(await short.history()) == 3
    assert (await Log.verify_all()).equal == 4


def test_snapshot_every_must_be_a_non_negative_int():
    with pytest.raises(ConfigurationError, match="snapshot_every"):

        class Bad(BaseRedisModel):
            class Meta:
                snapshot_every = -1


class LongLog(BaseRedisModel):
    count: int = 0

    class Meta:
        snapshot_every = 100
        partitions = 1


async def long_log(events: int, *, burst: int) -> LongLog:
    """A history of about ``events`` events, written ``burst`` increments per call."""
    log = LongLog()
    await log.save()
    while (log.version or 0) < events:
        async with log.pipeline():
            for _ in range(burst):
                await log.count.increase(1)
    return log


async def range_reads(redis) -> int:
    stats = await redis.info("commandstats")
    return sum(stats.get(f"cmdstat_{name}", {}).get("calls", 0) for name in ("xrange", "xrevrange"))


@pytest.mark.single_node  # counts the server's own command statistics
@pytest.mark.parametrize("burst", [1, 250], ids=["one per call", "bursts"])
async def test_as_of_a_seq_reads_a_few_pages_whatever_the_history_length(redis, burst):
    """A dozen pages of history, yet a few reads: the count does not grow with the length.

    The search for the target's entry guesses from write times, so the count varies a little
    with how the writes were spread in time: 4-8 reads on an idle machine, 11 seen once under
    load; reading back from the newest event took 16 or more for the early targets here.
    """
    log = await long_log(16_000, burst=burst)
    history = await log.history()
    by_seq = {event.seq: event for event in history}
    counts: list[int] = []
    for target in (2, 777, 8_001, 15_432, log.version - 1, *range(3, log.version, 397)):
        before = await range_reads(redis)
        found = await LongLog.as_of(log.pk, seq=target)
        counts.append(await range_reads(redis) - before)
        values = [e.data["value"] for e in history if e.seq <= target and e.type == "number.incr"]
        assert found.count == (values[-1] if values else 0)
        assert found.version == target or by_seq[found.version].type == "snapshot"
    assert max(counts) <= 12
    assert sum(counts) / len(counts) <= 7
