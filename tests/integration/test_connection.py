"""Connections: client flavours, event loops, and a server without RedisJSON."""

from __future__ import annotations

import asyncio

import pytest
import redis.asyncio as aioredis
from pydantic import Field

from streamstore import BaseRedisModel, ConfigurationError, RedisJSONMissingError, RedisSettings
from streamstore.connection import DEFAULT_URL

# Plain-client flavours, a server without RedisJSON, FUNCTION FLUSH on one server.
pytestmark = pytest.mark.single_node


class Note(BaseRedisModel):
    text: str = ""
    tags: list[str] = Field(default_factory=list)
    counts: dict[str, int] = Field(default_factory=dict)

    class Meta:
        key_prefix = "ConnectionNote"


async def exercise(model_cls: type[Note]) -> Note:
    note = model_cls(text="a")
    await note.save()
    await note.text.set("b")
    await note.tags.aappend("t")
    assert await note.tags.apop() == "t"
    await note.counts.aset_item("k", 1)
    assert await note.counts.apopitem() == ("k", 1)
    loaded = await model_cls.get(note.key)
    assert loaded == note
    assert [e.seq for e in await note.history()] == [1, 2, 3, 4, 5, 6]
    return note


@pytest.mark.parametrize("decode", [True, False], ids=["decoded", "raw-bytes"])
async def test_works_with_clients_that_decode_responses_or_not(redis_url, decode):
    client = aioredis.Redis.from_url(redis_url, decode_responses=decode)

    class Decoding(Note):
        class Meta:
            redis = client

    try:
        await exercise(Decoding)
    finally:
        await client.aclose()


async def test_meta_redis_may_be_a_url(redis_url):
    class ByUrl(Note):
        class Meta:
            redis = redis_url

    await exercise(ByUrl)


def test_default_client_survives_two_asyncio_run_calls(redis_url):
    """The default connection comes from REDIS_URL and is made once per event loop."""
    first = asyncio.run(exercise(Note))
    second = asyncio.run(exercise(Note))
    assert first.pk != second.pk


def test_settings_come_from_redis_url_or_the_documented_default(monkeypatch):
    monkeypatch.setenv("REDIS_URL", "redis://example:6380/2")
    assert RedisSettings.from_env().url == "redis://example:6380/2"
    monkeypatch.delenv("REDIS_URL")
    assert RedisSettings.from_env().url == DEFAULT_URL == "redis://localhost:6379/0"


def test_a_bad_url_is_a_configuration_error():
    with pytest.raises(ConfigurationError, match="bad Redis URL"):
        RedisSettings(url="nope://x").client()


def test_a_bad_url_s_error_never_shows_its_password():
    with pytest.raises(ConfigurationError) as caught:
        RedisSettings(url="redsi://ann:s3cret@db:6379/0").client()
    assert "s3cret" not in str(caught.value) and "redsi://ann:***@db:6379/0" in str(caught.value)
    assert caught.value.__cause__ is None and caught.value.__suppress_context__


async def test_a_server_without_redisjson_gives_a_clear_error_and_writes_nothing(plain_redis_url):
    class NoJson(Note):
        class Meta:
            redis = plain_redis_url

    note = NoJson()
    with pytest.raises(RedisJSONMissingError, match="--loadmodule") as caught:
        await note.save()
    assert "RedisJSON" in str(caught.value)
    with pytest.raises(RedisJSONMissingError):
        await NoJson.get(note.key)
    client = aioredis.Redis.from_url(plain_redis_url)
    try:
        assert await client.exists(note.stream_key) == 0
    finally:
        await client.aclose()


async def test_concurrent_blind_writers_on_one_instance_lose_nothing(redis):
    """Appends from 20 tasks on one instance: every one is kept, seq runs 1..N."""
    note = Note()
    await note.save()
    handles = [await Note.get(note.key) for _ in range(20)]

    async def writer(index: int, handle: Note) -> None:
        for step in range(10):
            await handle.tags.aappend(f"{index}-{step}")
            await handle.counts.aset_item(f"{index}", step)

    await asyncio.gather(*(writer(i, h) for i, h in enumerate(handles)))
    stored = await Note.get(note.key)
    assert sorted(stored.tags) == sorted(f"{i}-{s}" for i in range(20) for s in range(10))
    assert stored.counts == {str(i): 9 for i in range(20)}
    events = await note.history()
    assert [e.seq for e in events] == list(range(1, 402))


async def test_the_write_library_is_loaded_again_after_a_function_flush(redis):
    """Redis Functions can be flushed (or a server replaced); the next write loads them."""
    note = Note()
    await note.save()
    await redis.function_flush()
    await note.text.set("after flush")
    assert (await Note.get(note.key)).text == "after flush"
    libraries = await redis.function_list()
    names = [lib[lib.index(b"library_name") + 1] for lib in libraries]
    assert len(names) == 1
    assert names[0].startswith(b"streamstore_")
