"""Durability: writes that wait for replicas, and what a missing confirmation leaves behind."""

from __future__ import annotations

import pytest
import redis as redis_sync
from pydantic import Field
from waiting import wait_until

from streamstore import (
    BaseRedisModel,
    ConfigurationError,
    Durability,
    DurabilityError,
)
from streamstore.testing import RedisServer


class Account(BaseRedisModel):
    """Durable on a server without replicas: every write is applied and unconfirmed."""

    name: str = ""
    tags: list[str] = Field(default_factory=list)

    class Meta:
        durability = Durability(replicas=1, timeout_ms=20)


async def test_an_unconfirmed_write_is_applied_and_the_model_shows_it(redis) -> None:
    account = Account(name="a")
    with pytest.raises(DurabilityError, match="0 of 1 replicas") as raised:
        await account.save()
    assert raised.value.confirmed == 0
    with pytest.raises(DurabilityError):
        await account.tags.aappend("x")
    assert account.tags == ["x"]  # once, from Redis: not lost, not doubled
    assert account.version == 2
    stored = await Account.get(account.key)
    assert stored.tags == ["x"]
    assert (await Account.verify(account.pk)).equal


@pytest.mark.single_node  # two partitions in one transaction: a cluster refuses
async def test_an_unconfirmed_pipeline_keeps_what_redis_applied(redis) -> None:
    first, second = Account(name="a"), Account(name="b")

    async def write_both() -> None:
        async with first.pipeline():
            await first.name.set("A")
            await second.name.set("B")

    with pytest.raises(DurabilityError):
        await write_both()
    assert (first.name, second.name) == ("A", "B")
    assert [(await Account.get(m.key)).name for m in (first, second)] == ["A", "B"]


@pytest.mark.single_node  # counts commands in one server's commandstats
async def test_a_batch_sends_every_write_before_one_wait(redis) -> None:
    original = Account(name="a")
    with pytest.raises(DurabilityError):
        await original.save()
    await redis.config_resetstat()
    with pytest.raises(DurabilityError) as raised:
        await original.duplicate_many(3)
    assert len(raised.value.applied) == 3
    stats = await redis.info("commandstats")
    assert (stats["cmdstat_fcall"]["calls"], stats["cmdstat_wait"]["calls"]) == (3, 1)


def test_strictest_takes_the_most_of_each_requirement() -> None:
    chosen = Durability.strictest(
        [None, Durability(replicas=2, timeout_ms=10), Durability(replicas=1, aof=True)]
    )
    assert chosen == Durability(replicas=2, aof=True, timeout_ms=1000)
    assert Durability.strictest([None]) is None


def test_asking_for_nothing_is_a_configuration_error() -> None:
    with pytest.raises(ConfigurationError):
        Durability(replicas=0)


async def test_aof_durability_on_a_server_without_waitaof_says_what_it_needs(redis) -> None:
    class Journal(BaseRedisModel):
        text: str = ""

        class Meta:
            durability = Durability(replicas=0, aof=True, timeout_ms=10)

    with pytest.raises(ConfigurationError, match=r"Redis 7\.2|appendonly"):
        await Journal(text="x").save()


async def test_a_replica_confirms_a_durable_write(redis_url) -> None:
    """One server with RedisJSON and a replica of it: the write returns confirmed."""
    with (
        RedisServer(["--repl-diskless-sync-delay", "0"]) as primary,
        RedisServer(["--replicaof", "127.0.0.1", str(primary.port)]) as replica,
        redis_sync.Redis(port=replica.port) as replica_client,
    ):
        wait_until(
            lambda: replica_client.info("replication")["master_link_status"] == "up",
            "the replica to sync",
        )

        class Replicated(Account):
            class Meta:
                redis = primary.url
                durability = Durability(replicas=1, timeout_ms=5000)

        account = Replicated(name="kept")
        await account.save()
        await account.tags.aappend("y")
        assert replica_client.execute_command("JSON.GET", account.key, "$.tags") == b'[["y"]]'
