"""The change feed of a model class, followed live: every event written from now on."""

from __future__ import annotations

from collections.abc import AsyncGenerator, Mapping
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

from redis.asyncio.cluster import RedisCluster
from redis.exceptions import ResponseError

from streamstore.errors import CorruptEventError
from streamstore.events import Event, decode_feed_entry, flat_entry, in_stream, text
from streamstore.routing import send, send_each

if TYPE_CHECKING:
    from streamstore.connection import Client
    from streamstore.keys import KeySpace
    from streamstore.routing import Command

__all__ = ["BLOCK_MS", "CLUSTER_BLOCK_MS", "Group", "follow_feed", "read_feeds"]

# Redis calls: non-blocking reads go through our routing (`send`, `send_each`). A blocking
# XREAD / XREADGROUP uses the client itself: it holds its connection for up to `BLOCK_MS`, and
# must not hold one of the connections our routing shares out among writes.

#: On a cluster, how long a read blocks on one feed while the others are idle, in ms.
CLUSTER_BLOCK_MS = 100

#: Entries of one stream as read: ``(id, {field: value})``.
Entries = list[tuple[Any, dict[Any, Any]]]

#: How long one XREAD waits for news, in ms; it blocks again at once, so this only bounds a call.
BLOCK_MS = 5000


async def follow_feed(
    client: Client, keys: KeySpace, *, block_ms: int = BLOCK_MS
) -> AsyncGenerator[tuple[str, Event], None]:
    """Yield ``(pk, event)`` for each event written to the class's change feed from now on.

    One XREAD BLOCK reads every partition's feed. Events of one instance come in seq order;
    events of different partitions in write-time order within each reply. No consumer group:
    nothing is acknowledged, and a reader that stops misses what is written meanwhile.
    A feed entry that cannot be read (written by another program) raises `CorruptEventError`
    naming the feed and the entry.
    """
    feeds = [keys.feed(partition) for partition in range(keys.partitions)]
    async with client.pipeline(transaction=False) as pipe:
        for feed in feeds:
            pipe.xrevrange(feed, "+", "-", count=1)
        newest = await pipe.execute()
    # Start after each feed's newest entry rather than at "$": "$" means "newest" again at
    # every call, so an event arriving on a quiet partition between two XREADs would be lost.
    last = {
        feed: text(top[0][0]) if top else "0-0" for feed, top in zip(feeds, newest, strict=True)
    }
    while True:
        found = []
        for stream, entries in (await read_feeds(client, last, block_ms=block_ms)).items():
            for entry_id, fields in entries:
                last[text(stream)] = text(entry_id)
                try:
                    found.append(decode_feed_entry(entry_id, fields))
                except CorruptEventError as exc:
                    raise in_stream(text(stream), exc) from exc
        # A reply lists feed after feed: put its events in write-time order (a stable sort, so
        # each instance's events stay in seq order).
        found.sort(key=lambda item: item[1].ts)
        for item in found:
            yield item


@dataclass(frozen=True, slots=True)
class Group:
    """A consumer group and the consumer reading for it (`read_feeds` then uses XREADGROUP)."""

    name: str
    consumer: str


async def read_feeds(
    client: Client,
    positions: Mapping[str, str],
    *,
    count: int | None = None,
    block_ms: int | None = None,
    group: Group | None = None,
    turn: int = 0,
) -> dict[str, Entries]:
    """Read feeds from their positions: ``{feed: entries}`` for those that have some.

    On one server this is one XREAD (XREADGROUP with ``group``) of every feed, blocking up
    to ``block_ms`` when all are idle. A cluster cannot read streams of several slots in one
    command: each feed is read without blocking (one round trip per primary), and if none
    had anything, the read blocks on a single feed (``turn`` picks which) for at most
    `CLUSTER_BLOCK_MS`, so news on another feed waits that long at most.
    """
    if not isinstance(client, RedisCluster):
        streams: Any = dict(positions)
        if group is None:
            reply: Any = await client.xread(streams, count=count, block=block_ms)
        else:
            reply = await client.xreadgroup(
                group.name, group.consumer, streams, count=count, block=block_ms
            )
        items = reply.items() if isinstance(reply, dict) else reply or []
        return {text(name): entries for name, entries in items if entries}
    feeds = list(positions)
    replies, _ = await send_each(
        client, [(feed, _read_command(feed, positions[feed], count, None, group)) for feed in feeds]
    )
    found = _entries_of(replies)
    if found or block_ms is None or not feeds:
        return found
    feed = feeds[turn % len(feeds)]
    block = min(block_ms, CLUSTER_BLOCK_MS) or CLUSTER_BLOCK_MS
    return _entries_of(
        await send(client, feed, [_read_command(feed, positions[feed], count, block, group)])
    )


def _read_command(
    feed: str, position: str, count: int | None, block: int | None, group: Group | None
) -> Command:
    command: list[str | int] = (
        ["XREADGROUP", "GROUP", group.name, group.consumer] if group else ["XREAD"]
    )
    if count is not None:
        command += ["COUNT", count]
    if block is not None:
        command += ["BLOCK", block]
    return [*command, "STREAMS", feed, position]


def _entries_of(replies: list[Any]) -> dict[str, Entries]:
    """Turn raw XREAD replies into ``{stream: entries}`` (RESP2 arrays or RESP3 maps)."""
    found: dict[str, Entries] = {}
    for reply in replies:
        if isinstance(reply, ResponseError):
            raise reply
        for stream, entries in reply.items() if isinstance(reply, dict) else reply or []:
            parsed = [
                (entry_id, fields) if isinstance(fields, dict) else flat_entry((entry_id, fields))
                for entry_id, fields in entries
                if fields is not None  # a pending entry deleted meanwhile comes back as nil
            ]
            if parsed:
                found[text(stream)] = parsed
    return found
