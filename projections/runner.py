"""The subscriber runner: runs subscribers until stopped, drains on SIGTERM, reports health.

Shaped like arq's worker: `Runner.run` owns an event loop and its signals, `Runner.async_run`
embeds in an application's loop, ``burst=True`` handles the backlog and returns (what tests and
batch jobs use), and a health key says the runner is alive (`check_health`).
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import os
import signal
import socket
import time
import uuid
from collections.abc import Sequence
from datetime import datetime
from typing import TYPE_CHECKING, Any

from redis.exceptions import ClusterError, ReadOnlyError, TryAgainError
from redis.exceptions import ConnectionError as RedisConnectionError
from redis.exceptions import TimeoutError as RedisTimeoutError

from streamstore._logging import get_logger
from streamstore.connection import ClientSource, resolve_client
from streamstore.errors import ConfigurationError, CorruptEventError
from streamstore.events import text
from streamstore.executor import delete_keys, get_values, scan_keys, set_expiring
from streamstore.keys import health_key, health_pattern
from streamstore.projections.consumer import GroupConsumer, Stats
from streamstore.projections.replay import Replayer
from streamstore.projections.subscriber import change_of

if TYPE_CHECKING:
    from streamstore.connection import Client
    from streamstore.projections.subscriber import Subscriber

__all__ = ["Health", "Runner", "catch_up", "check_health"]

#: Shorter leases would expire between two renewals of a busy consumer.
MIN_LEASE_MS = 100

#: Errors that mean Redis is unreachable for now (down, failing over, a primary demoted): the
#: runner waits and goes on rather than stopping.
UNAVAILABLE = (
    RedisConnectionError,
    RedisTimeoutError,
    ClusterError,  # CLUSTERDOWN and MASTERDOWN too
    TryAgainError,
    ReadOnlyError,
    OSError,
)
#: How long the runner waits after Redis was unavailable: doubling from the first to the last.
OUTAGE_BACKOFF = (0.05, 2.0)


class Runner:
    """Runs subscribers: each consumes its models' change feeds as one member of its group.

    ``concurrency`` bounds the instances being handled at once (changes of one instance always
    run one after another, in seq order). ``lease_ms`` is how long a partition stays with a consumer
    that stopped renewing it (a crashed one): the delay before another takes over.
    """

    def __init__(
        self,
        *subscribers: Subscriber,
        redis: ClientSource = None,
        concurrency: int = 10,
        batch: int = 100,
        lease_ms: int = 10_000,
        block_ms: int = 2_000,
        health_every: float = 5.0,
        burst: bool = False,
        name: str | None = None,
    ) -> None:
        """Configure a runner of ``subscribers`` (``redis``: as ``Meta.redis``; default REDIS_URL)."""
        if not subscribers:
            raise ConfigurationError("a Runner needs at least one subscriber")
        names = [s.name for s in subscribers]
        if len(set(names)) != len(names):
            raise ConfigurationError(f"subscriber names must differ: {names}")
        if concurrency < 1 or batch < 1 or lease_ms < MIN_LEASE_MS:
            raise ConfigurationError(
                f"concurrency and batch must be >= 1, lease_ms >= {MIN_LEASE_MS}"
            )
        self.subscribers = subscribers
        self.redis = redis
        self.concurrency = concurrency
        self.batch = batch
        self.lease_ms = lease_ms
        self.block_ms = min(block_ms, lease_ms // 3)  # a blocked read must not outlive a lease
        self.health_every = health_every
        self.burst = burst
        self.name = name or f"{socket.gethostname()}-{os.getpid()}-{uuid.uuid4().hex[:6]}"
        self.stats = Stats()
        self.started = time.time()
        self._stop = asyncio.Event()
        self._consumers: list[GroupConsumer] = []
        self.log = get_logger().bind(consumer=self.name)

    def behind_retention(self) -> dict[tuple[str, str], list[int]]:
        """Return, per (subscriber, model class), the partitions whose feed lost unread changes.

        Trimmed by ``Meta.feed_maxlen`` before the group read them: a case for `catch_up`.
        """
        return {
            (c.subscriber.name, c.model.__name__): sorted(c.behind)
            for c in self._consumers
            if c.behind
        }

    def stop(self) -> None:
        """Ask the runner to finish: no new reads; batches in hand are handled and acknowledged."""
        self._stop.set()

    def run(self) -> None:
        """Run in a new event loop until SIGINT/SIGTERM (or, in burst mode, the backlog is done)."""
        loop = asyncio.new_event_loop()
        try:
            for signum in (signal.SIGINT, signal.SIGTERM):
                loop.add_signal_handler(signum, self._on_signal, signum)
            loop.run_until_complete(self.async_run())
        finally:
            loop.close()

    def _on_signal(self, signum: int) -> None:
        self.log.info("runner.stopping", signal=signal.Signals(signum).name)
        self.stop()

    async def async_run(self) -> None:
        """Run in the current event loop until `stop` (or, in burst mode, the backlog is done)."""
        self._stop = asyncio.Event()  # bound to the running loop
        client = resolve_client(self.redis)
        limit = asyncio.Semaphore(self.concurrency) if self.concurrency > 1 else None
        consumers = [
            GroupConsumer(
                client,
                sub,
                model,
                self.name,
                lease_ms=self.lease_ms,
                batch=self.batch,
                limit=limit,
                stats=self.stats,
            )
            for sub in self.subscribers
            for model in sub.models
        ]
        self._consumers = consumers
        for consumer in consumers:
            await consumer.setup()
        self.log.info(
            "runner.started", subscribers=[s.name for s in self.subscribers], burst=self.burst
        )
        health = asyncio.create_task(self._report_health(client, consumers))
        try:
            await asyncio.gather(*(self._consume(consumer) for consumer in consumers))
        finally:
            health.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await health
            for consumer in consumers:
                await consumer.release_all()
            await self._clear_health(client)
            self.log.info("runner.stopped", **self._totals())

    async def _consume(self, consumer: GroupConsumer) -> None:
        """One group on one model: rebalance now and then, read and handle until stopped."""
        every = self.lease_ms / 3000  # renew well before a lease runs out
        done = asyncio.Event()
        alive = asyncio.create_task(self._keep_alive(consumer, every, done))
        backoff = OUTAGE_BACKOFF[0]
        try:
            next_rebalance = 0.0
            while not self._stop.is_set():
                try:
                    if time.monotonic() >= next_rebalance:
                        await consumer.rebalance()
                        next_rebalance = time.monotonic() + every
                    moved = await consumer.poll(None if self.burst else self.block_ms)
                    if not moved and self.burst and await consumer.settled():
                        return
                except UNAVAILABLE as exc:
                    # What was handled but not acknowledged stays pending: read it again first.
                    consumer.resume_after_outage()
                    self.log.warning("runner.redis_unavailable", error=repr(exc), retry_in=backoff)
                    await self._pause(backoff)
                    backoff = min(backoff * 2, OUTAGE_BACKOFF[1])
                    next_rebalance = 0.0
                    continue
                backoff = OUTAGE_BACKOFF[0]
                if moved:
                    continue
                if self.burst or not consumer.owned:
                    # Nothing to read yet: wait for a lease to come free (or for stop).
                    await self._pause(max(0.0, next_rebalance - time.monotonic()))
        finally:
            # Cancelling alone is not enough: a cancellation that lands inside a Redis call can
            # come out of the client as a connection or timeout error, which the loop outlives
            # (a burst run never sets `_stop`), and `await alive` would then wait forever.
            done.set()
            alive.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await alive

    async def _keep_alive(self, consumer: GroupConsumer, every: float, done: asyncio.Event) -> None:
        """Renew the consumer's leases on a clock of their own, also while it handles a batch.

        Ends when the runner stops or ``done`` is set (its consuming loop ended).
        """
        while not (self._stop.is_set() or done.is_set()):
            await self._pause(every)
            if done.is_set():
                break
            try:
                await consumer.keep_alive()
            except UNAVAILABLE as exc:  # the consuming loop waits it out and logs it
                self.log.debug("runner.keep_alive_failed", error=repr(exc))

    async def _pause(self, seconds: float) -> None:
        """Wait ``seconds``, or less if the runner is stopped meanwhile."""
        with contextlib.suppress(TimeoutError):
            await asyncio.wait_for(self._stop.wait(), timeout=seconds)

    # --- health ------------------------------------------------------------------------------

    def _totals(self) -> dict[str, Any]:
        stats = self.stats
        return {
            "handled": stats.handled,
            "skipped": stats.skipped,
            "retried": stats.retried,
            "dead_lettered": stats.dead_lettered,
            "batches": stats.batches,
        }

    async def _report_health(self, client: Client, consumers: list[GroupConsumer]) -> None:
        """Write the health key of each group every ``health_every`` seconds, with a TTL."""
        ttl = max(1, int(self.health_every * 3 * 1000))
        while True:
            report = {
                "consumer": self.name,
                "pid": os.getpid(),
                "started": self.started,
                "at": time.time(),
                **self._totals(),
            }
            reports: dict[str, str] = {}
            for sub in self.subscribers:
                held = {c.model.__name__: sorted(c.owned) for c in consumers if c.subscriber is sub}
                reports[health_key(sub.name, self.name)] = json.dumps(
                    {**report, "partitions": held}
                )
            try:
                await set_expiring(client, reports, ttl)
            except UNAVAILABLE as exc:  # reported again next period; the key's TTL tells the rest
                self.log.debug("runner.health_report_failed", error=repr(exc))
            await asyncio.sleep(self.health_every)  # the reporting period

    async def _clear_health(self, client: Client) -> None:
        await delete_keys(client, [health_key(sub.name, self.name) for sub in self.subscribers])


class Health(dict[str, Any]):
    """One consumer's health report, as its runner last wrote it."""


async def check_health(
    client: Client, subscribers: Sequence[Subscriber], *, max_age: float = 15.0
) -> dict[str, list[Health]]:
    """Return, per subscriber name, the fresh health reports of its live consumers.

    A subscriber with an empty list has no runner that reported within ``max_age`` seconds.
    """
    found: dict[str, list[Health]] = {}
    now = time.time()
    for sub in subscribers:
        reports: list[Health] = []
        async for keys in scan_keys(client, health_pattern(sub.name)):
            for raw in await get_values(client, keys):
                if raw is None:
                    continue  # expired since the scan
                report = Health(json.loads(text(raw)))
                if now - float(report.get("at", 0)) <= max_age:
                    reports.append(report)
        found[sub.name] = reports
    return found


async def catch_up(
    subscriber: Subscriber, *, since: datetime | None = None, redis: ClientSource = None
) -> int:
    """Hand every change since ``since`` to the subscriber's handler, from the instance streams.

    The instance streams are the durable history; this goes instance by instance, each in seq
    order. For a group that fell behind the feed's retention, or a new subscriber that needs history
    older than the feed keeps. It uses no consumer group (nothing is acknowledged); handlers
    should be idempotent, as changes the group also delivers arrive twice. Returns how many
    changes were handled. An instance whose stream holds an entry that cannot be read is
    handled up to that entry and logged (``subscriber.catch_up.corrupt``); the rest goes on.
    """
    client = resolve_client(redis)
    handled = 0
    log = get_logger().bind(subscriber=subscriber.name)

    def skip(pk: str, exc: CorruptEventError) -> None:
        log.error("subscriber.catch_up.corrupt", pk=pk, error=str(exc))

    for model in subscriber.models:
        replayer = Replayer.for_meta(model.__ss_meta__, client)
        async for pk, event in replayer.iter_events(since=since, on_corrupt=skip):
            change = change_of(event, model, pk)
            if change is not None and subscriber.wants(change):
                await subscriber.handler(change)
                handled += 1
    return handled
