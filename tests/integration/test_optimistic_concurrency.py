"""refresh() and save(expected_version=...): optimistic concurrency for read-modify-write."""

from __future__ import annotations

import pytest
from clients import async_client
from sample_models import User, stored

from streamstore import ConcurrencyError, DocumentNotFoundError, StreamStoreError


async def test_refresh_loads_what_others_wrote_and_the_version(redis_decoded):
    user = User(name="J")
    await user.save()
    other = await User.get(user.key)
    await other.tags.aappend("x")
    await other.name.set("K")
    await user.refresh()
    assert (user.name, user.tags, user.version) == ("K", ["x"], 3)


@pytest.mark.parametrize("decode", [True, False], ids=["decoded", "raw-bytes"])
async def test_refresh_reads_the_version_with_either_client_flavour(redis_url, decode):
    client = async_client(redis_url, decode=decode)

    class Flavoured(User):
        class Meta:
            redis = client

    try:
        user = Flavoured(name="J")
        await user.save()
        fresh = Flavoured(name="placeholder")
        fresh.pk = user.pk
        assert (await fresh.refresh()).version == 1
        assert fresh.name == "J"
    finally:
        await client.aclose()


async def test_save_with_the_current_version_writes_and_moves_the_version_on(redis):
    user = User(name="J")
    await user.save()
    await user.refresh()
    user.age = 40
    await user.save(expected_version=user.version)
    assert user.version == 2
    assert (await stored(redis, user.key))["age"] == 40


async def test_save_with_a_stale_version_is_a_conflict_and_writes_nothing(redis):
    user = User(name="J")
    await user.save()
    await user.refresh()
    seen = user.version
    other = await User.get(user.key)
    await other.name.set("someone else")
    user.age = 40
    with pytest.raises(ConcurrencyError, match="changed by another writer") as caught:
        await user.save(expected_version=seen)
    assert isinstance(caught.value, StreamStoreError)
    assert await redis.xlen(user.stream_key) == 2
    assert (await stored(redis, user.key))["age"] == 0


async def test_expected_version_zero_means_no_history_yet(redis):
    user = User(name="J")
    await user.save(expected_version=0)
    again = User(name="J2")
    again.pk = user.pk
    with pytest.raises(ConcurrencyError):
        await again.save(expected_version=0)
    assert (await stored(redis, user.key))["name"] == "J"


async def test_refresh_of_a_missing_instance_is_a_key_error(redis):
    user = User(name="J")
    with pytest.raises(DocumentNotFoundError):
        await user.refresh()
