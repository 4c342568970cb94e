"""A model and subscribers the service CLI tests name as ``sample_services:<name>``."""

from __future__ import annotations

import redis.asyncio as aioredis

from streamstore import BaseRedisModel
from streamstore.projections import Change, subscriber


class Ticket(BaseRedisModel):
    title: str = ""
    status: str = "open"

    class Meta:
        key_prefix = "ServiceTicket"
        partitions = 2


async def _push(change: Change) -> None:
    """Record the change where the test can see it: a list in the same Redis."""
    client = Ticket._ss_client()
    await client.rpush(f"seen:{change.pk}", change.seq)


@subscriber(Ticket, name="ticket-log", start="beginning")
async def ticket_log(change: Change) -> None:
    await _push(change)


@subscriber(Ticket, name="status-watch", start="beginning", types={"set"})
async def status_watch(change: Change) -> None:
    await _push(change)


both = [ticket_log, status_watch]
not_a_subscriber = aioredis.Redis
