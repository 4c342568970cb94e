"""Redis Cluster: connection URLs, keys spread over masters, one-slot transactions, failover."""

from __future__ import annotations

import asyncio
import json
from collections import Counter
from typing import TYPE_CHECKING

import pytest
from cli_models import Customer
from clients import async_client, cluster_requested, sync_client
from pydantic import Field
from redis.asyncio.cluster import RedisCluster
from test_migrate import write_old, write_pydantic_aioredis
from typer.testing import CliRunner

from streamstore import (
    BaseRedisModel,
    ConfigurationError,
    CrossSlotError,
    Durability,
    DurabilityError,
    RedisSettings,
)
from streamstore.cli import app
from streamstore.connection import redacted
from streamstore.testing import RedisClusterServer

if TYPE_CHECKING:
    from collections.abc import AsyncIterator, Iterator

pytestmark = pytest.mark.cluster


@pytest.fixture(scope="module")
def cluster_url(redis_url: str) -> Iterator[str]:
    """A 3-master cluster: the session's own in a cluster run, else one started here."""
    if cluster_requested():
        yield redis_url
        return
    with RedisClusterServer(masters=3) as cluster:
        yield cluster.url


@pytest.fixture
async def cluster(cluster_url: str) -> AsyncIterator[RedisCluster]:
    client = async_client(cluster_url)
    assert isinstance(client, RedisCluster)
    await client.flushdb()
    yield client
    await client.aclose()


class Order(BaseRedisModel):
    customer: str = ""
    lines: list[str] = Field(default_factory=list)

    class Meta:
        # Not "Order": examples/subscriber_service.py has that one. The 16 hash tags of this
        # prefix spread over the three masters about evenly (the spread test relies on it).
        key_prefix = "Order2"


class Invoice(BaseRedisModel):
    total: int = 0


@pytest.fixture
def models(cluster_url: str) -> tuple[type[Order], type[Invoice]]:
    """`Order` and `Invoice` on the cluster (the same key prefixes, so the same slots)."""

    class OnClusterOrder(Order):
        class Meta:
            redis = cluster_url
            key_prefix = "Order2"

    class OnClusterInvoice(Invoice):
        class Meta:
            redis = cluster_url
            key_prefix = "Invoice"

    return OnClusterOrder, OnClusterInvoice


# --- connection settings -----------------------------------------------------------------


def test_a_cluster_url_lists_seed_nodes_and_makes_a_cluster_client() -> None:
    client = RedisSettings("redis+cluster://u:secret@127.0.0.1:7000,127.0.0.1:7001/0").client()
    assert isinstance(client, RedisCluster)
    seeds = sorted(node.port for node in client.nodes_manager.startup_nodes.values())
    assert seeds == [7000, 7001]
    assert redacted("redis+cluster://u:secret@h:1,h:2") == "redis+cluster://u:***@h:1,h:2"


def test_cluster_true_makes_a_plain_url_a_cluster_seed() -> None:
    assert isinstance(RedisSettings("redis://127.0.0.1:7000", cluster=True).client(), RedisCluster)


@pytest.mark.parametrize(
    "url", ["redis+cluster://127.0.0.1:7000/3", "redis+cluster://127.0.0.1:notaport"]
)
def test_a_bad_cluster_url_is_a_configuration_error(url: str) -> None:
    with pytest.raises(ConfigurationError, match="bad Redis URL"):
        RedisSettings(url).client()


# --- keys over masters -------------------------------------------------------------------


async def test_a_thousand_instances_spread_over_all_three_masters(
    cluster: RedisCluster, models: tuple[type[Order], type[Invoice]]
) -> None:
    order_class, _ = models
    orders = [order_class(customer=f"c{i}") for i in range(1000)]
    await asyncio.gather(*(order.save() for order in orders))
    per_master = Counter()
    for node in cluster.get_primaries():
        per_master[node.port] = sum(
            [
                1
                async for _ in cluster.scan_iter(
                    match="{Order2:*}:*", count=1000, target_nodes=node
                )
            ]
        )
    assert sum(per_master.values()) == 1000
    assert len(per_master) == 3
    assert all(0 < count <= 500 for count in per_master.values()), per_master
    # Every instance reads back whole from whichever master holds it.
    assert await order_class.get(orders[0].key) == orders[0]
    assert (await order_class.verify(orders[-1].pk)).equal


# --- transactions ------------------------------------------------------------------------


async def test_a_pipeline_over_two_slots_raises_before_writing(
    cluster: RedisCluster, models: tuple[type[Order], type[Invoice]]
) -> None:
    order_class, invoice_class = models
    order, invoice = order_class(customer="a"), invoice_class(total=1)

    async def save_both() -> None:
        async with order.pipeline():
            await order.save()
            await invoice.save()

    with pytest.raises(CrossSlotError, match="one hash slot"):
        await save_both()
    assert await cluster.dbsize() == 0  # no document, no event, no feed entry anywhere


async def test_a_pipeline_of_instances_in_one_partition_applies_all_together(
    cluster: RedisCluster, models: tuple[type[Order], type[Invoice]]
) -> None:
    order_class, _ = models
    first = order_class(customer="a")
    space = order_class.__ss_meta__.keys
    partition = space.partition(first.pk)
    second = next(
        order
        for order in (order_class(customer="b") for _ in range(10_000))
        if space.partition(order.pk) == partition
    )
    async with first.pipeline():
        await first.save()
        await second.save()
        await first.lines.aappend("x")
    assert (await order_class.get(first.key)).lines == ["x"]
    assert [event.type for event in await second.history()] == ["saved"]


# --- durability --------------------------------------------------------------------------


async def test_durability_waits_for_a_replica_and_says_when_none_confirmed(
    cluster: RedisCluster,
) -> None:
    """This cluster has no replicas: the write is applied, and the error says 0 of 1."""

    class Audit(BaseRedisModel):
        note: str = ""

        class Meta:
            redis = cluster
            durability = Durability(replicas=1, timeout_ms=50)

    audit = Audit(note="x")
    with pytest.raises(DurabilityError, match="0 of 1 replicas") as raised:
        await audit.save()
    assert raised.value.confirmed == 0
    assert (await Audit.get(audit.key)).note == "x"  # applied, only not confirmed


# --- the CLI -----------------------------------------------------------------------------


def test_the_cli_reads_and_verifies_on_a_cluster(cluster_url: str) -> None:
    """`--url redis+cluster://...`: history of one key, verify of a class scanned on all masters."""

    class OnClusterCustomer(Customer):
        class Meta:
            redis = cluster_url
            key_prefix = "CliCustomer"

    async def write() -> list[str]:
        customers = [OnClusterCustomer(name=f"c{i}") for i in range(30)]
        for customer in customers:
            await customer.save()
        await customers[0].tags.aappend("vip")
        return [customer.key for customer in customers]

    with sync_client(cluster_url) as flusher:
        flusher.flushdb()
    keys = asyncio.run(write())
    runner = CliRunner()
    history = runner.invoke(app, ["history", keys[0], "--url", cluster_url, "--json"])
    assert history.exit_code == 0, history.output
    assert [json.loads(line)["type"] for line in history.output.splitlines()] == [
        "saved",
        "list.append",
    ]
    verified = runner.invoke(app, ["verify", "cli_models:Customer", "--url", cluster_url])
    assert verified.exit_code == 0, verified.output
    # every instance, whichever master holds it
    assert verified.output.startswith("Customer: 30 instances, 30 equal, 0 differing")


def test_records_of_an_old_library_on_one_server_import_into_a_cluster(
    cluster_url: str, plain_redis_url: str
) -> None:
    """`streamstore import --old-url redis://old --url redis+cluster://new`: the way users move."""
    with sync_client(plain_redis_url) as old, sync_client(cluster_url) as new:
        old.flushdb()
        new.flushdb()
        write_old(plain_redis_url, write_pydantic_aioredis)
        runner = CliRunner()
        imported = runner.invoke(
            app,
            [
                "import",
                "test_migrate:Story",
                "--from",
                "pydantic-aioredis",
                "--old-url",
                plain_redis_url,
                "--url",
                cluster_url,
            ],
        )
        assert imported.exit_code == 0, imported.output
        assert "2 imported, 0 failed" in imported.output
        verified = runner.invoke(app, ["verify", "test_migrate:Story", "--url", cluster_url])
        assert verified.exit_code == 0, verified.output
        assert verified.output.startswith("Story: 2 instances, 2 equal, 0 differing")
        assert len(old.keys("story:*")) == 3  # the old records (and their index) stay put
