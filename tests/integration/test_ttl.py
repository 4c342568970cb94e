"""Meta.ttl: document and stream expire together, every write renews both, nothing is left over."""

from __future__ import annotations

from pydantic import Field
from waiting import eventually

from streamstore import BaseRedisModel
from streamstore.executor import list_members


class Session(BaseRedisModel):
    label: str = "t"
    hits: list[str] = Field(default_factory=list)

    class Meta:
        ttl = 1
        partitions = 1


async def gone(redis, *keys: str) -> bool:
    """Wait until none of ``keys`` exists (Redis expires keys on its own clock)."""

    async def none_left() -> bool:
        return not await redis.exists(*keys)

    return await eventually(none_left, f"{keys} to expire", within=5.0)


async def test_document_and_stream_expire_together_and_leave_no_orphan(redis):
    session = Session()
    await session.save()
    await session.hits.aextend(["a", "b"])  # a batch too: its undo key must not linger
    await session.aset(label="u", hits=["c"])
    assert 0 < await redis.pttl(session.key) <= 1000
    assert 0 < await redis.pttl(session.stream_key) <= 1000
    assert await gone(redis, session.key, session.stream_key)
    keys = Session.__ss_meta__.keys.for_pk(session.pk)
    assert await redis.zscore(keys.index, session.pk) is not None  # until it is next listed:
    assert await list_members(redis, keys.index, keys.expiry) == []  # a listing drops it
    leftovers = [key async for key in redis.scan_iter(match="{Session:0}*")]
    assert leftovers == [b"{Session:0}#feed"]  # the feed is trimmed by length, not by TTL


async def test_every_write_renews_the_ttl_of_both(redis):
    session = Session()
    await session.save()
    await redis.pexpire(session.key, 100_000)
    await redis.pexpire(session.stream_key, 100_000)
    await session.label.set("renewed")
    assert 0 < await redis.pttl(session.key) <= 1000
    assert 0 < await redis.pttl(session.stream_key) <= 1000


async def test_save_can_set_a_ttl_for_one_write_of_a_model_without_one(redis):
    class Note(BaseRedisModel):
        text: str = ""

        class Meta:
            key_prefix = "TtlNote"

    note = Note()
    await note.save(ttl=100)
    assert 0 < await redis.ttl(note.key) <= 100
    assert 0 < await redis.ttl(note.stream_key) <= 100
    other = Note()
    async with other.pipeline():
        await other.save(ttl=50)
    assert 0 < await redis.ttl(other.key) <= 50
