"""One subscriber group on one model class: partition leases, reads, handling, acks, dead letters.

Per-instance order needs one reader per feed partition at a time, so the consumers of a group
divide the partitions between them with leases (``{User:3}#lease:<group>``, ``SET NX PX``,
renewed while held). Each aims for its fair share: the partitions divided by the live consumers
(a sorted set of heartbeats). A consumer that dies stops renewing; once its leases expire,
others take its partitions over, first claiming the entries it had read but not acknowledged.
"""

from __future__ import annotations

import asyncio
import dataclasses
import json
import math
import time
import traceback
from collections.abc import Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

from redis.exceptions import ResponseError

from streamstore._logging import debug_enabled, get_logger
from streamstore.errors import CorruptEventError
from streamstore.events import decode_bytes_entry, decode_feed_entry, in_stream, text
from streamstore.executor import hold_lease, release_lease
from streamstore.projections.feed import Group, read_feeds
from streamstore.projections.subscriber import Change, Subscriber, change_of

# Redis calls: leases and reads go through the executors (`hold_lease`, `read_feeds`). The
# consumer group commands below (XGROUP, XINFO, XAUTOCLAIM, XPENDING, XACK, the handled hash and
# the dead-letter MULTI) use the client itself: each names one key, which redis-py's cluster
# client routes and redirects on its own, and redis-py parses their replies (XINFO's maps,
# XAUTOCLAIM's triples) where our routing returns raw ones. None is on the write path.

if TYPE_CHECKING:
    from streamstore.connection import Client
    from streamstore.keys import GroupKeys, KeySpace
    from streamstore.meta import ModelClass

__all__ = ["GroupConsumer", "Stats"]

#: Position of a partition whose own pending entries are read first (after a takeover).
PENDING = "0"
#: Position of a partition whose backlog is done: new entries only.
NEW = ">"
#: Pending entries claimed per call when taking a partition over.
CLAIM_PAGE = 1000


@dataclass(slots=True)
class Stats:
    """What a runner did, for its health key and logs."""

    handled: int = 0
    skipped: int = 0
    retried: int = 0
    dead_lettered: int = 0
    batches: int = 0


class GroupConsumer:
    """Consumes one model class's change feed for one subscriber, as one member of its group."""

    def __init__(
        self,
        client: Client,
        subscriber: Subscriber,
        model: ModelClass,
        consumer: str,
        *,
        lease_ms: int,
        batch: int,
        limit: asyncio.Semaphore | None,
        stats: Stats,
    ) -> None:
        """Prepare to consume ``model``'s feed as ``consumer`` of ``subscriber``'s group."""
        self.client = client
        self.subscriber = subscriber
        self.model = model
        self.consumer = consumer
        self.lease_ms = lease_ms
        self.batch = batch
        self.limit = limit
        self.stats = stats
        self.group = subscriber.name
        self.keys: KeySpace = model.__ss_meta__.keys
        self.upcast = model.__ss_meta__.upcast
        #: Partitions held, and where reading each goes on (`PENDING` or `NEW`).
        self.owned: dict[int, str] = {}
        #: Counts polls, so that on a cluster an idle wait blocks on each feed in turn.
        self._turn = 0
        #: Partitions whose feed lost entries this group had not read (see `_behind_retention`).
        self.behind: set[int] = set()
        self.log = get_logger().bind(subscriber=self.group, model=model.__name__, consumer=consumer)

    def _keys(self, partition: int) -> GroupKeys:
        return self.keys.group_keys(partition, self.group)

    async def setup(self) -> None:
        """Create the group on every partition's feed (if new: from now, or from the start)."""
        start = "$" if self.subscriber.start == "now" else "0"
        for partition in range(self.keys.partitions):
            try:
                await self.client.xgroup_create(
                    self._keys(partition).feed, self.group, id=start, mkstream=True
                )
            except ResponseError as exc:
                if "BUSYGROUP" not in str(exc):
                    raise

    # --- leases ------------------------------------------------------------------------------

    async def keep_alive(self) -> int:
        """Heartbeat and renew every held lease (dropping those lost); return the live members.

        The runner calls this on its own schedule, also while a batch is being handled: a
        long batch must not let its partition's lease run out under it, or another consumer
        would take the partition over and handle the same changes at the same time.
        """
        now = int(time.time() * 1000)
        members = self.keys.members(self.group)
        async with self.client.pipeline(transaction=False) as pipe:
            pipe.zadd(members, {self.consumer: now})
            pipe.zremrangebyscore(members, "-inf", now - self.lease_ms)
            pipe.zcard(members)
            *_, live = await pipe.execute()
        for partition in list(self.owned):
            lease = self._keys(partition).lease
            held = await hold_lease(self.client, lease, self.consumer, self.lease_ms)
            if not held and self.owned.pop(partition, None) is not None:
                self.log.warning("subscriber.lease.lost", partition=partition)
        return int(live)

    async def rebalance(self) -> None:
        """Keep alive, give back partitions above a fair share, take free ones up to it.

        The share is the partitions divided by the live members of the group.
        """
        live = await self.keep_alive()
        share = math.ceil(self.keys.partitions / max(1, live))
        while len(self.owned) > share:
            partition = max(self.owned)
            await release_lease(self.client, self._keys(partition).lease, self.consumer)
            self.owned.pop(partition, None)
            self.log.info("subscriber.lease.released", partition=partition)
        for partition in range(self.keys.partitions):
            if len(self.owned) >= share:
                break
            if partition in self.owned:
                continue
            lease = self._keys(partition).lease
            if await self.client.set(lease, self.consumer, nx=True, px=self.lease_ms):
                await self._take_over(partition)

    async def _take_over(self, partition: int) -> None:
        """Claim what earlier holders of ``partition`` read but did not acknowledge.

        JUSTID: claiming must not count as a delivery; the pending read that follows does.
        """
        feed, claimed, start = self._keys(partition).feed, 0, "0-0"
        while True:
            # (redis-py returns only the ids with JUSTID, not the cursor: page by the last id.)
            ids: Any = await self.client.xautoclaim(
                feed,
                self.group,
                self.consumer,
                min_idle_time=0,
                start_id=start,
                count=CLAIM_PAGE,
                justid=True,
            )
            claimed += len(ids)
            if len(ids) < CLAIM_PAGE:
                break
            ms, seq = _stream_id(text(ids[-1]))
            start = f"{ms}-{seq + 1}"
        self.owned[partition] = PENDING
        self.log.info("subscriber.lease.acquired", partition=partition, claimed=claimed)
        if await self._behind_retention(feed):
            self.behind.add(partition)
            self.log.warning(
                "subscriber.behind_retention",
                partition=partition,
                hint="changes were trimmed from the feed before this group read them; "
                "catch up from the instance streams (projections.runner.catch_up)",
            )

    async def _behind_retention(self, feed: str) -> bool:
        """Tell whether entries this group had not read yet were removed from ``feed``.

        Redis 7.0 reports neither directly (a group's ``lag`` still counts trimmed entries,
        ``max-deleted-entry-id`` only XDEL), so: the group is behind if the feed is empty but
        made ids past the group's position, or its first entry lies past that position while
        more entries were added than the group read and the feed still holds.
        """
        stream: Any = await self.client.xinfo_stream(feed)
        groups: Any = await self.client.xinfo_groups(feed)
        mine = next(g for g in groups if text(g["name"]) == self.group)
        position = _stream_id(text(mine["last-delivered-id"]))
        deleted = stream.get("max-deleted-entry-id")
        if deleted is not None and _stream_id(text(deleted)) > position:
            return True  # XDEL took an entry the group had not read
        first = stream.get("first-entry")
        if first is None:
            return _stream_id(text(stream["last-generated-id"])) > position
        if _stream_id(text(first[0])) <= position:
            return False
        read = int(mine.get("entries-read") or 0)
        return int(stream["entries-added"]) - read > int(stream["length"])

    def resume_after_outage(self) -> None:
        """Read each held partition's pending entries again before new ones.

        A batch interrupted by an outage may have been handled but not acknowledged; its
        entries stay pending for this consumer, and only a pending read delivers them again.
        """
        for partition in self.owned:
            self.owned[partition] = PENDING

    async def release_all(self) -> None:
        """Give back every lease and leave the group's members (a clean shutdown)."""
        for partition in list(self.owned):
            await release_lease(self.client, self._keys(partition).lease, self.consumer)
        self.owned.clear()
        await self.client.zrem(self.keys.members(self.group), self.consumer)

    async def settled(self) -> bool:
        """Tell whether the group has nothing left to do on this class (burst mode's exit).

        True when every held partition's pending backlog is done and, on every partition, the
        group has no entry pending and none undelivered. Partitions held by other consumers
        count too: a consumer that just died still looks alive until its leases run out, and
        its work must be taken over before a burst run may end.
        """
        if any(position != NEW for position in self.owned.values()):
            return False
        async with self.client.pipeline(transaction=False) as pipe:
            for partition in range(self.keys.partitions):
                feed = self._keys(partition).feed
                pipe.xinfo_groups(feed)
                pipe.xinfo_stream(feed)
            replies = await pipe.execute()
        for groups, stream in zip(replies[0::2], replies[1::2], strict=True):
            mine = next(g for g in groups if text(g["name"]) == self.group)
            if mine["pending"]:
                return False
            last = stream["last-entry"]  # the newest entry still there (trimmed ones are gone)
            delivered = _stream_id(text(mine["last-delivered-id"]))
            if last is not None and _stream_id(text(last[0])) > delivered:
                return False
        return True

    # --- reading and handling ----------------------------------------------------------------

    async def poll(self, block_ms: int | None) -> bool:
        """Read one batch from the held partitions and handle it; tell whether anything moved.

        Something moved when entries were handled, or a partition's pending backlog ran out
        (its new entries are read from the next poll on).
        """
        if not self.owned:
            return False
        streams = {self._keys(p).feed: position for p, position in self.owned.items()}
        block = block_ms if all(position == NEW for position in streams.values()) else None
        self._turn += 1
        found = await read_feeds(
            self.client,
            streams,
            count=self.batch,
            block_ms=block,
            group=Group(self.group, self.consumer),
            turn=self._turn,
        )
        moved = False
        acks: dict[str, list[str]] = {}
        for partition, position in list(self.owned.items()):
            feed = self._keys(partition).feed
            entries = found.get(feed)
            if entries:
                acks[feed] = await self._handle(partition, entries, pending=position == PENDING)
                moved = True
            elif position == PENDING:
                self.owned[partition] = NEW  # this partition's backlog is done
                moved = True
        if any(acks.values()):  # every partition's acknowledgements in one round trip
            async with self.client.pipeline(transaction=False) as pipe:
                for feed, ids in acks.items():
                    if ids:
                        pipe.xack(feed, self.group, *ids)
                await pipe.execute()
        return moved

    async def _handle(self, partition: int, entries: Sequence[Any], *, pending: bool) -> list[str]:
        """Handle a batch of one partition, per instance in order; return the ids to acknowledge.

        Dead-lettered changes are acknowledged already, with their dead letter.
        """
        keys = self._keys(partition)
        started = time.perf_counter()
        acks: list[str] = []
        runs: dict[str, list[Change]] = {}
        counts = await self._deliveries(keys, entries) if pending else {}
        for feed_id, fields in entries:
            fid = text(feed_id)
            try:
                change = self._change(fid, fields, counts.get(fid, 1))
            except CorruptEventError as exc:  # a poison entry must not stop the runner
                error = in_stream(keys.feed, exc)
                await self._park(keys, {**fields, "feed_id": fid}, error, fid)
                self.log.exception("subscriber.dead_letter", feed_id=fid, error=str(error))
                continue
            if change is None or not self.subscriber.wants(change):
                acks.append(fid)
                self.stats.skipped += 1
                continue
            runs.setdefault(change.pk, []).append(change)
        if self.limit is None or len(runs) == 1:
            for run in runs.values():
                acks += await self._run(keys, run)
        else:
            for done in await asyncio.gather(*(self._run(keys, run) for run in runs.values())):
                acks += done
        self.stats.batches += 1
        if debug_enabled():
            self.log.debug(
                "subscriber.batch",
                partition=partition,
                entries=len(entries),
                instances=len(runs),
                ms=round((time.perf_counter() - started) * 1000, 2),
            )
        return acks

    def _change(self, feed_id: str, fields: Any, deliveries: int) -> Change | None:
        """Decode a feed entry into a `Change` (upcast first).

        None when the entry is gone (trimmed while pending) or means nothing under the model's
        current schema (an upcaster dropped it).
        """
        if not fields:
            return None  # trimmed from the feed while it was pending: nothing left to deliver
        if self.upcast is None:
            try:  # the common case, several times cheaper: bytes fields straight into a Change
                return decode_bytes_entry(
                    fields,
                    Change,
                    model=self.model,
                    pk=text(fields[b"pk"]),
                    feed_id=feed_id,
                    deliveries=deliveries,
                )
            except (KeyError, ValueError, TypeError, StopIteration):
                pass  # str fields (a decoding client), or a malformed entry: the full path says
        pk, event = decode_feed_entry(feed_id, fields)
        return change_of(event, self.model, pk, feed_id=feed_id, deliveries=deliveries)

    async def _deliveries(self, keys: GroupKeys, entries: Sequence[Any]) -> dict[str, int]:
        """Return how often each pending entry was delivered already (XPENDING)."""
        first, last = text(entries[0][0]), text(entries[-1][0])
        found: Any = await self.client.xpending_range(
            keys.feed,
            self.group,
            min=first,
            max=last,
            count=len(entries),
            consumername=self.consumer,
        )
        return {text(item["message_id"]): int(item["times_delivered"]) for item in found}

    async def _run(self, keys: GroupKeys, run: list[Change]) -> list[str]:
        """Handle one instance's changes in seq order; return the feed ids to acknowledge.

        With a concurrency limit, one instance's run takes one slot from start to end.
        """
        if self.limit is None:
            return [change.feed_id for change in run if await self._deliver(keys, change)]
        async with self.limit:
            return [change.feed_id for change in run if await self._deliver(keys, change)]

    async def _deliver(self, keys: GroupKeys, change: Change) -> bool:
        """Run the handler, retrying; True if handled (to ack), False if dead-lettered."""
        subscriber = self.subscriber
        if subscriber.dedupe and await self._already_handled(keys, change):
            self.stats.skipped += 1
            return True
        attempt = change.deliveries
        while True:
            try:
                await subscriber.handler(change)
            except Exception as exc:  # noqa: BLE001 (any handler failure is retried, then parked)
                if attempt >= subscriber.max_deliveries:
                    await self._dead_letter(keys, change, exc, attempt)
                    return False
                self.stats.retried += 1
                delay = subscriber.retry_delay * 2 ** (attempt - change.deliveries)
                self.log.warning(
                    "subscriber.retry",
                    pk=change.pk,
                    seq=change.seq,
                    attempt=attempt,
                    error=repr(exc),
                )
                await asyncio.sleep(delay)  # backoff before the next delivery
                attempt += 1
                change = dataclasses.replace(change, deliveries=attempt)
                continue
            break
        if subscriber.dedupe:
            await self.client.hset(keys.handled, change.pk, str(change.seq))
        self.stats.handled += 1
        return True

    async def _already_handled(self, keys: GroupKeys, change: Change) -> bool:
        last = await self.client.hget(keys.handled, change.pk)
        return last is not None and int(last) >= change.seq

    async def _dead_letter(
        self, keys: GroupKeys, change: Change, exc: BaseException, attempts: int
    ) -> None:
        """Park ``change`` in the dead-letter stream with its error, and acknowledge it."""
        record = {
            "pk": change.pk,
            "id": change.id,
            "seq": change.seq,
            "type": change.type,
            "path": change.path,
            "data": json.dumps(change.data),
            "meta": json.dumps(dict(change.meta)),
            "ts": change.ts,
            "feed_id": change.feed_id,
            "deliveries": attempts,
        }
        await self._park(keys, record, exc, change.feed_id)
        self.log.error(
            "subscriber.dead_letter",
            pk=change.pk,
            seq=change.seq,
            deliveries=attempts,
            error=repr(exc),
        )

    async def _park(
        self, keys: GroupKeys, record: dict[Any, Any], exc: BaseException, feed_id: str
    ) -> None:
        """Add ``record`` and the error to the dead-letter stream and acknowledge ``feed_id``.

        One MULTI (dead letters and feed share a slot): never parked without being acknowledged,
        nor acknowledged without being parked.
        """
        record = {
            **record,
            "consumer": self.consumer,
            "error": repr(exc),
            "traceback": "".join(traceback.format_exception(exc))[-4000:],
        }
        async with self.client.pipeline(transaction=True) as pipe:
            pipe.xadd(keys.dead, record)
            pipe.xack(keys.feed, self.group, feed_id)
            await pipe.execute()
        self.stats.dead_lettered += 1


def _stream_id(entry_id: str) -> tuple[int, int]:
    """Return a stream entry id as a tuple that sorts like the stream does."""
    ms, _, seq = entry_id.partition("-")
    return int(ms), int(seq or 0)
