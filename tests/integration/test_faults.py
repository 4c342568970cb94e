"""Faults an operator or the network causes: a killed server, a cut connection, memory running out."""

from __future__ import annotations

import asyncio
import contextlib
from collections import defaultdict
from typing import TYPE_CHECKING, Literal

import pytest
import redis as redis_sync
from pydantic import Field
from redis.exceptions import ConnectionError as RedisConnectionError
from redis.exceptions import RedisError
from waiting import eventually

from streamstore import BaseRedisModel, DocumentNotFoundError, StreamStoreError
from streamstore.testing import RedisServer

if TYPE_CHECKING:
    from collections.abc import AsyncIterator, Iterator

# Each test starts its own single server (to kill it, cut its connections, starve its memory);
# a cluster primary being killed is tests/integration/test_cluster_failover.py.
pytestmark = pytest.mark.single_node


class FaultLedger(BaseRedisModel):
    """The instances the fault tests write; their Redis is whatever ``$REDIS_URL`` names."""

    entries: list[int] = Field(default_factory=list)
    note: str = ""


# --- helpers ---------------------------------------------------------------------------------


@contextlib.contextmanager
def server_for_models(
    monkeypatch: pytest.MonkeyPatch, server: RedisServer, url: str | None = None
) -> Iterator[redis_sync.Redis]:
    """Point the models at ``url`` (default: ``server``); yield a direct client of ``server``."""
    monkeypatch.setenv("REDIS_URL", url or server.url)
    with redis_sync.Redis.from_url(server.url) as client:
        yield client


def contents(client: redis_sync.Redis) -> dict[bytes, bytes | None]:
    """Every key of the server with its serialized value: equal means nothing was written."""
    return {key: client.dump(key) for key in sorted(client.scan_iter())}


async def append_in_one_pipeline(
    first: FaultLedger, one: int, second: FaultLedger, two: int
) -> None:
    """Append ``one`` to ``first`` and ``two`` to ``second`` in one pipeline."""
    async with first.pipeline():
        await first.entries.aappend(one)
        await second.entries.aappend(two)


async def assert_fold_equals_document(*ledgers: FaultLedger) -> None:
    for ledger in ledgers:
        report = await FaultLedger.verify(ledger.pk)
        assert report.equal, report


# --- a. the server is SIGKILLed mid-write and restarted from its append-only file ---------------

#: Instances written concurrently, and the acknowledged appends each must have before the
#: kill and again after the restart.
WRITERS, BEFORE, AFTER = 6, 10, 10


async def test_after_a_kill_and_restart_every_acknowledged_write_is_there_and_folds(monkeypatch):
    """SIGKILL under a write loop (appendfsync always): no acknowledged write lost, none half."""
    with RedisServer(appendonly=True) as server, server_for_models(monkeypatch, server):
        ledgers = [FaultLedger() for _ in range(WRITERS)]
        for ledger in ledgers:
            await ledger.save()
        acknowledged: dict[str, list[int]] = defaultdict(list)
        unknown: dict[str, set[int]] = defaultdict(set)  # failed: applied or not, nobody knows
        failures: list[BaseException] = []
        restarted = asyncio.Event()
        after_restart: dict[str, int] = defaultdict(int)

        async def write(ledger: FaultLedger) -> None:
            value = 0
            while after_restart[ledger.pk] < AFTER:
                value += 1
                try:
                    await ledger.entries.aappend(value)
                except (RedisError, StreamStoreError, OSError) as exc:
                    failures.append(exc)
                    unknown[ledger.pk].add(value)
                    await restarted.wait()
                    continue
                acknowledged[ledger.pk].append(value)
                after_restart[ledger.pk] += restarted.is_set()

        writers = [asyncio.create_task(write(ledger)) for ledger in ledgers]
        await eventually(
            lambda: _all_have(acknowledged, ledgers, BEFORE), "acknowledged writes before the kill"
        )
        await asyncio.to_thread(server.kill)
        await asyncio.to_thread(server.restart)
        restarted.set()
        await asyncio.wait_for(asyncio.gather(*writers), timeout=60)

        assert failures, "the kill should have cut some writes"
        for ledger in ledgers:
            stored = await FaultLedger.get(ledger.key)
            kept = set(stored.entries)
            assert set(acknowledged[ledger.pk]) <= kept, "an acknowledged write was lost"
            assert kept <= set(acknowledged[ledger.pk]) | unknown[ledger.pk]
            assert stored.entries == sorted(stored.entries)  # in the order they were written
            assert [e.seq for e in await stored.history()] == list(range(1, len(kept) + 2))
        await assert_fold_equals_document(*ledgers)


async def _all_have(acknowledged: dict[str, list[int]], ledgers: list[FaultLedger], n: int) -> bool:
    return all(len(acknowledged[ledger.pk]) >= n for ledger in ledgers)


# --- b. the connection is cut while a pipeline over two instances commits ----------------------

Cut = Literal["before", "within", "after"]


class CuttingProxy:
    """A TCP proxy in front of a Redis server that cuts a connection at a chosen command.

    Once armed with a marker, the first chunk a client sends containing it is cut: ``before``
    forwards none of it, ``within`` forwards it up to its second marker (or into its first),
    ``after`` forwards all of it. Then the client's connection is closed, so no reply reaches
    it; the server's side stays open until the proxy stops (it runs what it received).
    """

    def __init__(self, upstream_port: int) -> None:
        self.upstream_port = upstream_port
        self.marker = b""
        self.cut: Cut = "before"
        self.tripped = asyncio.Event()
        self._server: asyncio.Server | None = None
        self._upstreams: list[asyncio.StreamWriter] = []

    @property
    def url(self) -> str:
        assert self._server is not None
        port = self._server.sockets[0].getsockname()[1]
        return f"redis://127.0.0.1:{port}/0"

    def arm(self, marker: bytes, cut: Cut) -> None:
        self.marker, self.cut = marker, cut

    @contextlib.asynccontextmanager
    async def running(self) -> AsyncIterator[CuttingProxy]:
        self._server = await asyncio.start_server(self._serve, "127.0.0.1", 0)
        try:
            yield self
        finally:
            self._server.close()
            for upstream in self._upstreams:
                upstream.close()
            await self._server.wait_closed()

    async def _serve(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        up_reader, up_writer = await asyncio.open_connection("127.0.0.1", self.upstream_port)
        self._upstreams.append(up_writer)
        replies = asyncio.create_task(self._pump(up_reader, writer))
        try:
            while data := await reader.read(1 << 16):
                if self.marker and not self.tripped.is_set() and self.marker in data:
                    self.tripped.set()
                    up_writer.write(data[: self._cut_at(data)])
                    await up_writer.drain()
                    break
                up_writer.write(data)
                await up_writer.drain()
        finally:
            replies.cancel()
            writer.close()

    def _cut_at(self, data: bytes) -> int:
        if self.cut == "before":
            return 0
        if self.cut == "after":
            return len(data)
        first = data.index(self.marker)
        second = data.find(self.marker, first + 1)
        return second if second >= 0 else first + len(self.marker)

    @staticmethod
    async def _pump(source: asyncio.StreamReader, sink: asyncio.StreamWriter) -> None:
        while data := await source.read(1 << 16):
            sink.write(data)
            await sink.drain()


# What each cut leaves in Redis: the commit never arrived, arrived in part, or arrived whole.
EXPECTED_AFTER_CUT = {"before": "neither", "within": "neither", "after": "both"}


@pytest.mark.parametrize("cut", ["before", "within", "after"])
async def test_a_connection_cut_during_a_pipeline_commit_writes_both_instances_or_neither(
    monkeypatch, cut: Cut
):
    """Cut before the commit, inside it, or after it reached Redis: never one instance only."""
    with RedisServer() as server:
        async with CuttingProxy(server.port).running() as proxy:
            with server_for_models(monkeypatch, server, proxy.url) as direct:
                first, second = FaultLedger(entries=[1]), FaultLedger(entries=[2])
                await first.save()
                await second.save()  # also loads the function library: not what is cut
                local = (first.redis_dump(), second.redis_dump())
                proxy.arm(b"streamstore_apply", cut)

                with pytest.raises((RedisConnectionError, StreamStoreError)):
                    await append_in_one_pipeline(first, 10, second, 20)

                assert proxy.tripped.is_set()
                # The outcome is unknown to the client: the models show what they held before.
                assert (first.redis_dump(), second.redis_dump()) == local

                async def lengths() -> list[int]:
                    return [direct.xlen(ledger.stream_key) for ledger in (first, second)]

                if EXPECTED_AFTER_CUT[cut] == "both":
                    await eventually(
                        lambda: _equal_async(lengths, [2, 2]), "the commit to be applied"
                    )
                assert await lengths() == ([2, 2] if EXPECTED_AFTER_CUT[cut] == "both" else [1, 1])
                await first.refresh()
                await second.refresh()
                expected = {"both": ([1, 10], [2, 20]), "neither": ([1], [2])}[
                    EXPECTED_AFTER_CUT[cut]
                ]
                assert (first.entries, second.entries) == expected
                await assert_fold_equals_document(first, second)


async def _equal_async(read, expected) -> bool:
    return await read() == expected


# --- c. memory runs out (maxmemory, noeviction) --------------------------------------------------


@pytest.fixture
def starved(monkeypatch) -> Iterator[tuple[RedisServer, redis_sync.Redis]]:
    """A private server whose ``maxmemory`` the test lowers; its direct client."""
    with RedisServer() as server, server_for_models(monkeypatch, server) as direct:
        yield server, direct


async def test_out_of_memory_refuses_every_write_whole_and_reads_go_on(starved):
    """Over maxmemory: a clear StreamStoreError per write, nothing half-written, reads work."""
    _, direct = starved
    first, second = FaultLedger(entries=[1]), FaultLedger(entries=[2])
    await first.save()
    await second.save()
    direct.config_set("maxmemory", 1)  # used memory is far above: Redis refuses every write
    stored, local = contents(direct), (first.redis_dump(), second.redis_dump())

    attempts = {
        "a field write": lambda: first.entries.aappend(3),
        "a batch": lambda: first.aset(note="n", entries=[4]),
        "a new instance": lambda: FaultLedger(note="new").save(),
        "a delete": first.delete,
        "a pipeline of two instances": lambda: append_in_one_pipeline(first, 5, second, 6),
    }
    for what, attempt in attempts.items():
        with pytest.raises(StreamStoreError, match=r"(?i)memory") as refused:
            await attempt()
        assert not isinstance(refused.value, RedisError), f"{what}: a raw redis error"
        assert contents(direct) == stored, f"{what} wrote something"
        assert (first.redis_dump(), second.redis_dump()) == local, f"{what} changed the models"

    assert (await FaultLedger.get(first.key)).entries == [1]  # reads still work
    assert [e.type for e in await first.history()] == ["saved"]
    await assert_fold_equals_document(first, second)

    direct.config_set("maxmemory", 0)
    await first.entries.aappend(3)  # memory back: writes work again
    assert (await FaultLedger.get(first.key)).entries == [1, 3]
    await assert_fold_equals_document(first)


async def test_a_write_that_starts_under_maxmemory_completes_whole_even_past_it(starved):
    """Redis checks memory when a call starts: a big write is applied whole, the next refused."""
    _, direct = starved
    ledger = FaultLedger()
    await ledger.save()
    used = int(direct.info("memory")["used_memory"])
    # Room for the request itself (Redis counts what it has read of it), not for what it stores.
    direct.config_set("maxmemory", used + 5_000_000)

    await ledger.note.set("x" * 2_000_000)  # starts under the limit, ends far above it

    assert len((await FaultLedger.get(ledger.key)).note) == 2_000_000
    with pytest.raises(StreamStoreError, match=r"(?i)memory"):
        await ledger.entries.aappend(1)
    await assert_fold_equals_document(ledger)


# --- d. what else an operator does to a live server ---------------------------------------------


async def test_a_restart_without_persistence_under_a_live_model_refuses_its_next_field_write(
    monkeypatch,
):
    """All data and the function library are gone: a field write says so, a save starts anew."""
    with RedisServer() as server, server_for_models(monkeypatch, server) as direct:
        ledger = FaultLedger(entries=[1])
        await ledger.save()
        await ledger.entries.aappend(2)
        await asyncio.to_thread(server.kill)  # the event loop sees its connections close
        await asyncio.to_thread(server.restart)
        assert direct.dbsize() == 0
        assert direct.function_list() == []

        with pytest.raises(DocumentNotFoundError):
            await ledger.entries.aappend(3)
        assert direct.dbsize() == 0  # nothing written, not even a stream
        assert ledger.entries == [1, 2]  # the local model is as it was

        await ledger.save()  # a new history: the old one is gone with the server's data
        assert [e.seq for e in await ledger.history()] == [1]
        assert (await FaultLedger.get(ledger.key)).entries == [1, 2]
        await assert_fold_equals_document(ledger)


async def test_flushall_between_writes_is_seen_as_a_missing_document(monkeypatch):
    """FLUSHALL under a live model: its next field write raises and writes nothing."""
    with RedisServer() as server, server_for_models(monkeypatch, server) as direct:
        ledger = FaultLedger(entries=[1])
        await ledger.save()
        direct.flushall()
        with pytest.raises(DocumentNotFoundError):
            await ledger.note.set("after the flush")
        assert direct.dbsize() == 0
        await ledger.save()
        await assert_fold_equals_document(ledger)


async def test_function_flush_is_repaired_by_the_next_write(monkeypatch):
    """FUNCTION FLUSH (our library deleted): the next write loads it again and applies once."""
    with RedisServer() as server, server_for_models(monkeypatch, server) as direct:
        ledger = FaultLedger()
        await ledger.save()
        direct.function_flush()
        await ledger.entries.aappend(1)
        assert [e.type for e in await ledger.history()] == ["saved", "list.append"]
        await assert_fold_equals_document(ledger)


async def test_client_pause_write_holds_a_write_until_unpaused_and_it_applies_once(monkeypatch):
    """CLIENT PAUSE WRITE: reads go on, a write waits for the pause to end, then applies once."""
    with RedisServer() as server, server_for_models(monkeypatch, server) as direct:
        ledger = FaultLedger()
        await ledger.save()
        direct.client_pause(60_000, all=False)  # WRITE mode: only writes wait
        try:
            writing = asyncio.create_task(ledger.entries.aappend(1))
            await eventually(lambda: _blocked_clients(direct), "the write to be held by the pause")
            assert not writing.done()
            assert (await FaultLedger.get(ledger.key)).entries == []  # reads are not held
            assert [e.type for e in await ledger.history()] == ["saved"]
            await assert_fold_equals_document(ledger)
            assert direct.xlen(ledger.stream_key) == 1
        finally:
            direct.client_unpause()
        await asyncio.wait_for(writing, timeout=10)
        assert (await FaultLedger.get(ledger.key)).entries == [1]
        assert [e.type for e in await ledger.history()] == ["saved", "list.append"]


async def _blocked_clients(client: redis_sync.Redis) -> bool:
    return int(client.info("clients")["blocked_clients"]) > 0


async def test_tiny_stream_nodes_change_memory_only_not_what_is_stored(monkeypatch):
    """stream-node-max-bytes/entries set very low: histories and documents stay exact."""
    with RedisServer() as server, server_for_models(monkeypatch, server) as direct:
        direct.config_set("stream-node-max-entries", 2)
        direct.config_set("stream-node-max-bytes", 64)
        ledger = FaultLedger()
        await ledger.save()
        for value in range(20):
            await ledger.entries.aappend(value)
        assert [e.seq for e in await ledger.history()] == list(range(1, 22))
        assert (await FaultLedger.get(ledger.key)).entries == list(range(20))
        await assert_fold_equals_document(ledger)
