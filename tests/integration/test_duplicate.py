"""duplicate() and duplicate_many() (seed "Model Duplication"), with the copy's history."""

from __future__ import annotations

import pytest
import redis.asyncio as aioredis
from pydantic import Field
from sample_models import User, UserProfile, stored

from streamstore import BaseRedisModel, TopLevelOnlyError
from streamstore.projections import fold


async def test_a_duplicate_has_a_new_pk_and_the_same_data(redis):
    original = User(name="John", age=30, tags=["python", "redis"])
    await original.save()
    duplicate = await original.duplicate()
    assert duplicate.pk != original.pk
    assert (duplicate.name, duplicate.age, duplicate.tags) == ("John", 30, ["python", "redis"])
    assert await stored(redis, duplicate.key) == await stored(redis, original.key)


async def test_the_copy_history_starts_with_where_it_came_from(redis):
    original = User(name="John")
    await original.save()
    await original.name.set("John 2")
    duplicate = await original.duplicate()
    (event,) = await duplicate.history()
    assert (event.seq, event.type) == (1, "duplicated")
    assert event.data["source"] == original.key
    assert event.data["source_seq"] == 2
    assert event.data["document"]["name"] == "John 2"
    assert fold([event]) == await stored(redis, duplicate.key)
    assert [e.type for e in await original.history()] == ["saved", "set"]


async def test_duplicates_are_independent(redis):
    original = User(name="John", tags=["python"])
    await original.save()
    duplicate = await original.duplicate()
    await duplicate.tags.aappend("redis")
    await duplicate.name.set("John Copy")
    await duplicate.profile.skills.aappend("JavaScript")
    await original.tags.load()
    await original.profile.skills.load()
    assert (original.tags, original.name, original.profile.skills) == (["python"], "John", [])
    assert (duplicate.tags, duplicate.name) == (["python", "redis"], "John Copy")


async def test_nested_models_are_copied_and_stay_redis_enabled(redis):
    original = User(
        name="Alice",
        profile=UserProfile(bio="Engineer", skills=["Python"], settings={"dark": True}),
    )
    await original.save()
    await original.stats.preferences.aupdate(notifications=True)
    original.stats.login_count = 10
    await original.save()
    duplicate = await original.duplicate()
    assert duplicate.profile == original.profile
    assert duplicate.stats.login_count == 10
    await duplicate.stats.preferences.aset_item("email_alerts", True)
    await original.stats.preferences.load()
    assert "email_alerts" not in original.stats.preferences
    assert duplicate.stats.preferences["email_alerts"] is True


async def test_duplicate_many_makes_distinct_copies(redis):
    original = User(name="Template User", age=25)
    await original.save()
    duplicates = await original.duplicate_many(5)
    assert len({d.pk for d in duplicates} | {original.pk}) == 6
    for duplicate in duplicates:
        assert (await User.get(duplicate.key)).name == "Template User"
        assert [e.type for e in await duplicate.history()] == ["duplicated"]


class CountingConnection(aioredis.Connection):
    """Counts what is sent: one send per command, or per pipeline."""

    sends = 0

    async def send_packed_command(self, command, check_health=True):
        type(self).sends += 1
        await super().send_packed_command(command, check_health)


@pytest.mark.single_node  # counts round trips on a plain client's connection
async def test_duplicate_many_of_a_hundred_is_one_round_trip(redis, redis_url):
    pool = aioredis.ConnectionPool.from_url(redis_url, connection_class=CountingConnection)
    client = aioredis.Redis.from_pool(pool)  # owns the pool: aclose() closes its connections

    class Counted(BaseRedisModel):
        name: str = "t"
        tags: list[str] = Field(default_factory=list)

        class Meta:
            redis = client

    try:
        original = Counted()
        await original.save()  # loads the function library too
        CountingConnection.sends = 0
        copies = await original.duplicate_many(100)
        assert CountingConnection.sends == 1
        assert len(copies) == 100
        assert await redis.exists(*(c.key for c in copies)) == 100
    finally:
        await client.aclose()


async def test_only_top_level_models_can_be_duplicated(redis):
    user = User(name="Test")
    await user.save()
    for inner in (user.profile, user.stats):
        with pytest.raises(RuntimeError, match=r"^Can only duplicate from top level model$") as e:
            await inner.duplicate()
        assert isinstance(e.value, TopLevelOnlyError)
