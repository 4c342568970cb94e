"""history(): filters, field histories, audit metadata and the log line of every committed event."""

from __future__ import annotations

import asyncio
from datetime import UTC, datetime, timedelta

import pytest
import structlog
from pydantic import BaseModel, Field

from streamstore import BaseRedisModel, UsageError, event_context


class Address(BaseModel):
    city: str = ""
    lines: list[str] = Field(default_factory=list)


class Person(BaseRedisModel):
    name: str = ""
    tags: list[str] = Field(default_factory=list)
    address: Address = Field(default_factory=Address)

    class Meta:
        key_prefix = "HistoryPerson"


async def person_with_history() -> Person:
    """Seq 1 saved, 2 set name, 3 tags append, 4 address.city, 5 address.lines, 6 set address."""
    person = Person(name="ann")
    await person.save()
    await person.name.set("bo")
    await person.tags.aappend("x")
    await person.address.city.set("Oslo")
    await person.address.lines.aappend("Main St 1")
    await person.aset(address=Address(city="Rome"))
    return person


async def test_history_is_every_event_oldest_first_with_a_gapless_seq(redis):
    person = await person_with_history()
    events = await person.history()
    assert [e.seq for e in events] == [1, 2, 3, 4, 5, 6]
    assert [e.type for e in events] == ["saved", "set", "list.append", "set", "list.append", "set"]
    assert all(e.at.tzinfo is UTC and e.at.timestamp() * 1000 == e.ts for e in events)
    assert all(e.id.startswith(f"{e.ts}-") for e in events)


async def test_a_seq_range_limit_and_reverse_combine(redis):
    person = await person_with_history()
    assert [e.seq for e in await person.history(start_seq=2, end_seq=4)] == [2, 3, 4]
    assert [e.seq for e in await person.history(start_seq=5)] == [5, 6]
    assert [e.seq for e in await person.history(reverse=True, limit=2)] == [6, 5]
    assert [e.seq for e in await person.history(end_seq=4, reverse=True, limit=3)] == [4, 3, 2]
    assert [e.seq for e in await person.history(start_seq=3, limit=2)] == [3, 4]
    assert await person.history(limit=0) == []
    assert await person.history(start_seq=7) == []


async def test_a_time_range_selects_events_by_their_write_time(redis):
    person = await person_with_history()
    events = await person.history()
    middle = events[3].at
    found = await person.history(since=middle, until=middle)
    assert found and all(e.ts == events[3].ts for e in found)
    assert await person.history(until=events[0].at - timedelta(milliseconds=1)) == []
    later = await person.history(since=events[-1].at)
    assert later[-1].seq == 6 and all(e.ts == events[-1].ts for e in later)


async def test_naive_datetimes_are_refused_before_reading(redis):
    person = await person_with_history()
    with pytest.raises(UsageError, match="timezone"):
        await person.history(since=datetime(2026, 1, 1))


async def test_a_field_history_has_the_events_on_it_its_parents_and_its_children(redis):
    person = await person_with_history()
    assert [e.seq for e in await person.tags.history()] == [1, 3]
    assert [e.seq for e in await person.address.history()] == [1, 4, 5, 6]
    assert [e.seq for e in await person.address.city.history()] == [1, 4, 6]
    assert [e.seq for e in await person.address.lines.history(reverse=True, limit=2)] == [6, 5]
    assert [e.seq for e in await person.history(path="address.lines")] == [1, 5, 6]
    assert [e.seq for e in await person.history(path="$.name", start_seq=2)] == [2]


async def test_an_instance_without_events_has_an_empty_history(redis):
    assert await Person().history() == []


async def test_event_context_puts_its_metadata_into_every_event_written_inside(redis):
    person = Person()
    with event_context(actor="alice", correlation_id="req-7"):
        await person.save()
        async with event_context(reason="typo", actor="bob"):  # nested: merged, inner wins
            await person.name.set("Ann")
    await person.tags.aappend("after")
    metas = [dict(e.meta) for e in await person.history()]
    assert metas == [
        {"actor": "alice", "correlation_id": "req-7"},
        {"actor": "bob", "correlation_id": "req-7", "reason": "typo"},
        {},
    ]


async def test_concurrent_tasks_each_keep_their_own_event_context(redis):
    person = Person()
    await person.save()
    both_inside = asyncio.Barrier(2)

    async def write_as(actor: str) -> None:
        handle = Person()
        handle.pk = person.pk
        async with event_context(actor=actor):
            await both_inside.wait()  # both contexts are open at once
            for _ in range(5):
                await handle.tags.aappend(actor)

    await asyncio.gather(write_as("alice"), write_as("bob"))
    events = (await person.history())[1:]
    assert len(events) == 10
    assert all(e.meta == {"actor": e.data["value"]} for e in events)


async def test_every_committed_event_is_logged_with_model_key_seq_and_type(redis):
    person = Person()
    try:
        with structlog.testing.capture_logs() as logs:
            await person.save()
            await person.tags.aextend(["a", "b"])
    finally:
        structlog.reset_defaults()  # capture_logs leaves structlog marked as configured
    committed = [log for log in logs if log["event"] == "event.committed"]
    assert [(log["seq"], log["type"]) for log in committed] == [(1, "saved"), (2, "list.extend")]
    assert all(log["model"] == "Person" and log["key"] == person.key for log in committed)
    assert committed[0]["log_level"] == "debug"
