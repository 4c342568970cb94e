"""The change feed of a model class, followed live: every event written from now on."""

from __future__ import annotations

from collections.abc import AsyncGenerator
from typing import TYPE_CHECKING, Any

from streamstore.events import Event, decode_feed_entry, text

if TYPE_CHECKING:
    import redis.asyncio as aioredis

    from streamstore.keys import KeySpace

__all__ = ["BLOCK_MS", "follow_feed"]

#: How long one XREAD waits for news, in ms; it blocks again at once, so this only bounds a call.
BLOCK_MS = 5000


async def follow_feed(
    client: aioredis.Redis, keys: KeySpace, *, block_ms: int = BLOCK_MS
) -> AsyncGenerator[tuple[str, Event], None]:
    """Yield ``(pk, event)`` for each event written to the class's change feed from now on.

    One XREAD BLOCK reads every partition's feed. Events of one instance come in seq order;
    events of different partitions in write-time order within each reply. No consumer group:
    nothing is acknowledged, and a reader that stops misses what is written meanwhile.
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
        reply: Any = await client.xread(last, block=block_ms)  # type: ignore[arg-type]
        found = []
        for stream, entries in reply.items() if isinstance(reply, dict) else reply or []:
            for entry_id, fields in entries:
                last[text(stream)] = text(entry_id)
                found.append(decode_feed_entry(entry_id, fields))
        # A reply lists feed after feed: put its events in write-time order (a stable sort, so
        # each instance's events stay in seq order).
        found.sort(key=lambda item: item[1].ts)
        for item in found:
            yield item
