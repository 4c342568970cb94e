"""Failover: a primary is SIGKILLed, its replica takes over, and no acknowledged event is lost."""

from __future__ import annotations

import asyncio
from collections import defaultdict

import pytest
from pydantic import Field
from redis.asyncio.cluster import ClusterNode, RedisCluster
from redis.exceptions import RedisError
from waiting import eventually

from streamstore import BaseRedisModel, Durability, StreamStoreError
from streamstore.projections import Change, Runner, subscriber
from streamstore.testing import RedisClusterServer

pytestmark = pytest.mark.cluster

#: Instances written to concurrently; spread over every primary.
WRITERS = 12
#: Acknowledged appends each writer must see before the kill, and again after the failover.
BEFORE, AFTER = 15, 15


async def test_writes_continue_through_a_failover_and_no_acknowledged_event_is_lost() -> None:
    # Two replicas per primary: after the failover the promoted one still has a replica to
    # confirm writes (with one, every write there would be applied but unconfirmed).
    with RedisClusterServer(masters=3, replicas=2) as cluster:

        class Ledger(BaseRedisModel):
            entries: list[int] = Field(default_factory=list)

            class Meta:
                key_prefix = "FailoverLedger"
                redis = cluster.url
                durability = Durability(replicas=1, timeout_ms=2000)

        ledgers = [Ledger() for _ in range(WRITERS)]
        for ledger in ledgers:
            await ledger.save()
        victim = primary_of(ledgers[0])
        on_victim = [ledger for ledger in ledgers if primary_of(ledger) == victim]

        acknowledged: dict[str, list[int]] = defaultdict(list)
        failures: list[BaseException] = []
        healthy = asyncio.Event()
        after: dict[str, int] = defaultdict(int)

        async def write(ledger: Ledger) -> None:
            value = 0
            while after[ledger.pk] < AFTER:
                value += 1
                try:
                    await ledger.entries.aappend(value)
                except (RedisError, StreamStoreError, OSError) as exc:
                    failures.append(exc)  # unknown outcome: may or may not have been applied
                    await asyncio.sleep(0.05)  # back off while the cluster fails over
                    continue
                acknowledged[ledger.pk].append(value)
                if healthy.is_set():
                    after[ledger.pk] += 1

        writers = [asyncio.create_task(write(ledger)) for ledger in ledgers]
        await eventually(
            lambda: _all_at_least(acknowledged, ledgers, BEFORE), "writes before the kill"
        )
        await asyncio.to_thread(cluster.kill, victim.port)
        await asyncio.to_thread(cluster.wait_until_healthy)
        assert victim.port not in cluster.master_ports()
        healthy.set()
        await asyncio.wait_for(asyncio.gather(*writers), timeout=60)

        assert failures, "the kill should have interrupted some writes"
        for ledger in ledgers:
            stored = await Ledger.get(ledger.key)
            appends = [event for event in await stored.history() if event.type != "saved"]
            kept = set(stored.entries)
            lost = [value for value in acknowledged[ledger.pk] if value not in kept]
            assert not lost, f"{ledger.pk} lost acknowledged appends {lost}"
            assert len(appends) == len(stored.entries)  # an event per element, none invented
            assert (await Ledger.verify(ledger.pk)).equal
        assert all(after[ledger.pk] >= AFTER for ledger in on_victim)


def primary_of(model: BaseRedisModel) -> ClusterNode:
    """The primary that holds ``model``'s keys now."""
    client = model._ss_client()
    assert isinstance(client, RedisCluster)
    node = client.get_node_from_key(model._ss_instance_keys().doc)
    assert node is not None
    return node


async def _all_at_least(
    acknowledged: dict[str, list[int]], ledgers: list[BaseRedisModel], n: int
) -> bool:
    return all(len(acknowledged[ledger.pk]) >= n for ledger in ledgers)


async def test_a_subscriber_runs_on_through_a_failover_and_misses_no_acknowledged_event() -> None:
    with RedisClusterServer(masters=3, replicas=2) as cluster:

        class Tick(BaseRedisModel):
            n: int = 0

            class Meta:
                redis = cluster.url
                durability = Durability(replicas=1, timeout_ms=2000)

        seen: set[tuple[str, int]] = set()

        @subscriber(Tick, name="ticks", start="beginning")
        async def record(change: Change) -> None:
            seen.add((change.pk, change.seq))

        ticks = [Tick() for _ in range(WRITERS)]
        acknowledged: set[tuple[str, int]] = set()

        async def tick_all() -> None:
            for tick in ticks:
                try:
                    if tick.version:
                        await tick.n.increase(1)
                    else:
                        await tick.save()
                except (RedisError, StreamStoreError, OSError):
                    continue  # unknown outcome: the subscriber may or may not see it
                acknowledged.add((tick.pk, tick.version or 0))

        runner = Runner(record, redis=cluster.url, lease_ms=1000, block_ms=100)
        running = asyncio.create_task(runner.async_run())
        for _ in range(5):
            await tick_all()
        victim = primary_of(ticks[0])
        await asyncio.to_thread(cluster.kill, victim.port)
        await tick_all()  # some of these meet the dead primary
        await asyncio.to_thread(cluster.wait_until_healthy)
        for _ in range(5):
            await tick_all()

        async def all_seen() -> bool:
            assert not running.done(), "the runner stopped"
            return acknowledged <= seen

        await eventually(all_seen, "the subscriber to see every acknowledged change", within=30)
        runner.stop()
        await asyncio.wait_for(running, timeout=10)
        assert len(acknowledged) >= WRITERS * 10
