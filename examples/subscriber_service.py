"""An example subscriber service: counts the orders created each day and logs every order change.

Run it next to the application that writes `Order` instances, against the same Redis:

    REDIS_URL=redis://localhost:6379/0 streamstore run subscriber_service:orders_per_day

(from this folder; the current directory is importable). docker/compose.yaml runs it in a
container, against one Redis or against a Redis Cluster: see docker/README.md.

The read model is one Redis set per UTC day, `orders:created:<YYYY-MM-DD>`, holding the pks of
the orders created that day; `orders_created_on(day)` is its size. A set rather than a counter
because delivery is at least once: adding a pk again after a redelivery changes nothing.
"""

from __future__ import annotations

from datetime import date

import structlog
from pydantic import Field

from streamstore import BaseRedisModel
from streamstore.connection import resolve_client
from streamstore.projections import Change, subscriber

log = structlog.get_logger("subscriber_service")


class Order(BaseRedisModel):
    customer: str
    status: str = "new"
    total_cents: int = 0
    lines: list[str] = Field(default_factory=list)


def created_key(day: date) -> str:
    """Return the key of the set of orders created on ``day``."""
    return f"orders:created:{day.isoformat()}"


# start="beginning": a first deployment also counts the orders the feed still holds.
@subscriber(Order, name="orders-per-day", start="beginning")
async def orders_per_day(change: Change) -> None:
    log.info(
        "order.changed",
        pk=change.pk,
        seq=change.seq,
        type=change.type,
        path=change.path,
        at=change.at.isoformat(),
    )
    if change.seq == 1:  # an instance's first event (`saved`, or `duplicated` for a copy)
        # resolve_client(None) is the connection REDIS_URL names, as `streamstore run` uses.
        await resolve_client(None).sadd(created_key(change.at.date()), change.pk)


async def orders_created_on(day: date) -> int:
    """Return how many orders were created on ``day`` (UTC), as far as the subscriber got."""
    return int(await resolve_client(None).scard(created_key(day)))
