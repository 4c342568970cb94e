"""The audit log sink: every event a JSON line, rotated by size, at least once."""

from __future__ import annotations

import json
from collections import Counter

import pytest
from pydantic import Field

from streamstore import BaseRedisModel
from streamstore.errors import ConfigurationError
from streamstore.projections import Change, Runner, Subscriber
from streamstore.projections.audit_log import audit_log, read_audit_log


class Ledger(BaseRedisModel):
    owner: str
    balance: int = 0
    tags: list[str] = Field(default_factory=list)

    class Meta:
        partitions = 2  # fewer feeds for the burst runner to walk


class Note(BaseRedisModel):
    text: str

    class Meta:
        partitions = 2


async def run(*subscribers: Subscriber) -> None:
    """Handle everything written so far."""
    await Runner(*subscribers, burst=True).async_run()


async def busy_ledgers(count: int, changes: int) -> list[Ledger]:
    """Save ``count`` ledgers and make ``changes`` more events on each."""
    ledgers = []
    for number in range(count):
        ledger = await Ledger(owner=f"owner-{number}").save()
        for step in range(changes):
            await ledger.balance.increase(step)
            await ledger.tags.aappend(f"tag-{step}")
        ledgers.append(ledger)
    return ledgers


async def expected_lines(*instances: BaseRedisModel) -> list[dict]:
    """What `streamstore export` writes for the instances' events, instance by instance."""
    return [
        {"model": type(m).__name__, "key": m.key, "pk": m.pk, **event.to_dict()}
        for m in instances
        for event in await m.history()
    ]


def lines_of(path) -> list[dict]:
    return [json.loads(line) for line in path.read_text(encoding="utf-8").splitlines()]


def by_instance(records: list[dict]) -> dict[str, list[dict]]:
    found: dict[str, list[dict]] = {}
    for record in records:
        found.setdefault(record["key"], []).append(record)
    return found


async def test_every_event_lands_as_a_line_in_order_per_instance(redis, tmp_path):
    ledgers = await busy_ledgers(3, changes=4)
    await ledgers[0].delete()
    note = await Note(text="hello").save()
    await note.text.set("hello, world")
    path = tmp_path / "audit.jsonl"
    await run(audit_log(Ledger, Note, path=path))
    records = lines_of(path)
    expected = await expected_lines(*ledgers, note)
    assert len(records) == len(expected) == 3 * 9 + 1 + 2
    assert by_instance(records) == by_instance(expected)  # same lines, each instance in seq order
    assert list(records[0])[:3] == ["model", "key", "pk"]
    assert {tuple(r) for r in records} == {tuple(e) for e in expected}  # export's field order


async def test_changes_after_the_first_run_are_appended(redis, tmp_path):
    (ledger,) = await busy_ledgers(1, changes=1)
    path = tmp_path / "audit.jsonl"
    sink = audit_log(Ledger, path=path)
    await run(sink)
    await ledger.balance.increase(5)
    await run(sink)
    assert [r["seq"] for r in lines_of(path)] == [1, 2, 3, 4]


async def test_rotation_keeps_every_line_whole_and_in_order(redis, tmp_path):
    (ledger,) = await busy_ledgers(1, changes=15)
    path = tmp_path / "audit.jsonl"
    await run(audit_log(Ledger, path=path, max_bytes=1000, backups=20))
    files = sorted(tmp_path.iterdir())
    assert len(files) >= 4
    assert [f.name for f in files] == ["audit.jsonl"] + [
        f"audit.jsonl.{n}" for n in sorted(range(1, len(files)), key=str)
    ]
    for file in files:
        raw = file.read_bytes()
        assert 0 < len(raw) <= 1000 and raw.endswith(b"\n")
        assert all(json.loads(line) for line in raw.splitlines())
    records = list(read_audit_log(path))  # oldest file first
    assert records == await expected_lines(ledger)


async def test_rotation_drops_the_oldest_file_beyond_backups(redis, tmp_path):
    (ledger,) = await busy_ledgers(1, changes=15)
    path = tmp_path / "audit.jsonl"
    await run(audit_log(Ledger, path=path, max_bytes=1000, backups=2))
    assert sorted(f.name for f in tmp_path.iterdir()) == [
        "audit.jsonl",
        "audit.jsonl.1",
        "audit.jsonl.2",
    ]
    records = list(read_audit_log(path))
    expected = await expected_lines(ledger)
    assert 0 < len(records) < len(expected)
    assert records == expected[-len(records) :]  # the newest lines, none missing among them


async def test_a_line_longer_than_max_bytes_gets_a_file_of_its_own(redis, tmp_path):
    await Note(text="short").save()
    await Note(text="x" * 500).save()
    path = tmp_path / "audit.jsonl"
    await run(audit_log(Note, path=path, max_bytes=300, backups=3))
    lengths = sorted(len(line) for f in tmp_path.iterdir() for line in f.read_bytes().splitlines())
    assert len(lengths) == 2 and lengths[1] > 300
    assert len(list(tmp_path.iterdir())) == 2


async def test_a_redelivered_change_appends_a_duplicate_that_its_key_and_id_identify(
    redis, tmp_path
):
    ledger = await Ledger(owner="ann").save()
    await ledger.balance.increase(10)
    path = tmp_path / "audit.jsonl"
    sink = audit_log(Ledger, path=path)
    failed: list[int] = []

    async def crash_once_after_writing(change: Change) -> None:
        await sink.handler(change)
        if change.seq == 1 and not failed:  # the line is written, the change not acknowledged
            failed.append(change.deliveries)
            raise RuntimeError("crashed before the ack")

    await run(sink.with_options(handler=crash_once_after_writing, retry_delay=0.001))
    records = lines_of(path)
    assert [r["seq"] for r in records] == [1, 1, 2]
    assert Counter((r["key"], r["id"]) for r in records)[(ledger.key, records[0]["id"])] == 2
    assert list(read_audit_log(path, dedupe=True)) == await expected_lines(ledger)


async def test_a_torn_line_stays_alone_and_readers_skip_it(redis, tmp_path):
    path = tmp_path / "audit.jsonl"
    path.write_bytes(b'{"model":"Ledger","key":"{Ledg')  # a write cut short by a crash
    ledger = await Ledger(owner="ann").save()
    await run(audit_log(Ledger, path=path))
    raw = path.read_bytes().splitlines()
    assert raw[0] == b'{"model":"Ledger","key":"{Ledg'
    assert json.loads(raw[1])["key"] == ledger.key
    assert list(read_audit_log(path)) == await expected_lines(ledger)


def test_audit_log_is_a_subscriber_of_every_change_from_the_beginning(tmp_path):
    sink = audit_log(Ledger, Note, path=tmp_path / "audit log.jsonl")
    assert sink.name == "audit_log:audit_log.jsonl"
    assert sink.models == (Ledger, Note)
    assert (sink.types, sink.paths, sink.start) == (None, None, "beginning")


def test_audit_log_refuses_settings_that_would_lose_lines(tmp_path):
    with pytest.raises(ConfigurationError, match="rotating needs backups >= 1"):
        audit_log(Ledger, path=tmp_path / "a.jsonl", max_bytes=1000, backups=0)
    with pytest.raises(ConfigurationError, match="must be >= 0"):
        audit_log(Ledger, path=tmp_path / "a.jsonl", max_bytes=-1)
    assert audit_log(Ledger, path=tmp_path / "a.jsonl", max_bytes=0, backups=0).name


async def test_a_change_that_cannot_be_written_is_dead_lettered_not_acknowledged(redis, tmp_path):
    ledger = await Ledger(owner="ann").save()
    sink = audit_log(Ledger, path=tmp_path / "missing" / "audit.jsonl").with_options(
        max_deliveries=2, retry_delay=0.001
    )
    await run(sink)
    keys = Ledger.__ss_meta__.keys.group_keys(
        Ledger.__ss_meta__.keys.partition(ledger.pk), sink.name
    )
    (_, dead), *_ = await redis.xrange(keys.dead)
    assert (dead[b"pk"], dead[b"seq"], dead[b"deliveries"]) == (ledger.pk.encode(), b"1", b"2")
    assert b"FileNotFoundError" in dead[b"error"]


class Crash(BaseException):
    """The process dies: no retry, no ack."""


async def test_a_change_written_before_a_crash_is_written_again_by_the_next_runner(redis, tmp_path):
    ledger = await Ledger(owner="ann").save()
    await ledger.balance.increase(10)
    path = tmp_path / "audit.jsonl"
    sink = audit_log(Ledger, path=path)

    async def write_then_die(change: Change) -> None:
        await sink.handler(change)
        raise Crash

    with pytest.raises(Crash):
        await run(sink.with_options(handler=write_then_die))
    assert [r["seq"] for r in lines_of(path)] == [1]
    await run(sink)  # takes over the unacknowledged changes
    assert [r["seq"] for r in lines_of(path)] == [1, 1, 2]
    assert list(read_audit_log(path, dedupe=True)) == await expected_lines(ledger)
