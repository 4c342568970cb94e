"""lock(): a real Redis lock, fresh data on entry, field-level events and a version check on exit."""

from __future__ import annotations

import asyncio

import pytest
from pydantic import Field

from streamstore import BaseRedisModel, ConcurrencyError, LockTimeoutError
from streamstore.projections import fold


class Account(BaseRedisModel):
    name: str
    balance: int = 0
    transaction_count: int = 0
    tags: list[str] = Field(default_factory=list)
    limits: dict[str, int] = Field(default_factory=dict)

    class Meta:
        key_prefix = "LockAccount"


async def test_changes_made_under_the_lock_are_written_as_field_events(redis):
    account = Account(name="John", balance=1000, tags=["a"], limits={"day": 5, "week": 20})
    await account.save()
    async with account.lock() as locked:
        locked.balance -= 50
        locked.transaction_count += 1
        locked.tags.append("b")
        locked.limits["day"] = 6
        del locked.limits["week"]
    events = await account.history()
    assert [(e.type, e.path) for e in events[1:]] == [
        ("set", "$.balance"),
        ("set", "$.transaction_count"),
        ("list.extend", "$.tags"),
        ("dict.update", "$.limits"),
        ("dict.del_item", "$.limits"),
    ]
    stored = await Account.get(account.key)
    assert (stored.balance, stored.transaction_count, stored.tags) == (950, 1, ["a", "b"])
    assert stored.limits == {"day": 6}
    assert fold(events) == stored.redis_dump()


async def test_the_lock_refreshes_the_model_on_entry(redis):
    account = Account(name="John", balance=10)
    await account.save()
    other = await Account.get(account.key)
    await other.balance.increase(5)
    async with account.lock("transfer") as locked:
        assert locked.balance == 15
        assert await redis.exists(f"{account.key}/transfer") == 1
    assert await redis.exists(f"{account.key}/transfer") == 0


async def test_holders_of_one_lock_serialize_and_lose_no_update(redis):
    account = Account(name="John")
    await account.save()

    async def add_one_twenty_times() -> None:
        handle = await Account.get(account.key)
        for _ in range(20):
            async with handle.lock() as locked:
                locked.balance += 1

    await asyncio.gather(*(add_one_twenty_times() for _ in range(3)))
    assert (await Account.get(account.key)).balance == 60


async def test_a_writer_that_skips_the_lock_makes_the_exit_a_conflict(redis):
    account = Account(name="John", balance=10)
    await account.save()

    async def change_while_someone_else_writes() -> None:
        async with account.lock() as locked:
            locked.balance = 99
            other = await Account.get(account.key)
            await other.name.set("Jim")

    with pytest.raises(ConcurrencyError):
        await change_while_someone_else_writes()
    stored = await Account.get(account.key)
    assert (stored.name, stored.balance) == ("Jim", 10)


async def test_a_block_that_raises_writes_nothing_and_restores_the_model(redis):
    account = Account(name="John", balance=10, tags=["a"])
    await account.save()

    async def change_then_fail() -> None:
        async with account.lock() as locked:
            locked.balance = 0
            locked.tags.append("x")
            raise ValueError("boom")

    with pytest.raises(ValueError, match="boom"):
        await change_then_fail()
    assert (account.balance, account.tags) == (10, ["a"])
    assert await redis.xlen(account.stream_key) == 1


async def test_a_dead_holder_releases_the_lock_by_expiry(redis):
    account = Account(name="John")
    await account.save()
    dead = redis.lock(f"{account.key}/default", timeout=0.3)
    assert await dead.acquire()  # never released: its holder "died"
    async with account.lock(blocking_timeout=5) as locked:
        locked.balance = 1
    assert (await Account.get(account.key)).balance == 1


async def test_a_lock_held_too_long_is_a_timeout(redis):
    account = Account(name="John")
    await account.save()
    held = redis.lock(f"{account.key}/default", timeout=30)
    assert await held.acquire()
    with pytest.raises(LockTimeoutError):
        async with account.lock(blocking_timeout=0.2):
            pass
    await held.release()


async def test_lock_from_key_loads_and_locks_in_one_step(redis):
    account = Account(name="John", balance=3)
    await account.save()
    async with Account.lock_from_key(account.key, "audit") as locked:
        assert locked.balance == 3
        locked.balance = 4
    assert (await Account.get(account.key)).balance == 4
