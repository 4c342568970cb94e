"""Routing: our commands, sent on one connection to the primary that holds their keys."""

from __future__ import annotations

import asyncio
import collections
import contextlib
import weakref
from typing import TYPE_CHECKING, Any, TypeAlias

from redis.asyncio.cluster import ClusterNode, RedisCluster
from redis.crc import key_slot
from redis.exceptions import AskError, MaxConnectionsError, ResponseError, TryAgainError
from redis.exceptions import ConnectionError as RedisConnectionError

from streamstore.errors import ConfigurationError, CrossSlotError

if TYPE_CHECKING:
    from collections.abc import AsyncIterator, Sequence

    from streamstore.connection import Client

__all__ = ["Command", "exchange", "pinned", "require_one_slot", "send", "send_each"]

#: One command: its name and arguments, as sent.
Command: TypeAlias = "Sequence[str | int]"

# Why not redis-py's own routing for these? A cluster client learns the keys of an FCALL by
# asking a node (COMMAND GETKEYS), one extra round trip per call, and its transactions cannot
# queue an FCALL. We always know the keys: the first names the slot, and every key of a call
# shares it. One connection also lets WAIT follow the write it must wait for.


@contextlib.asynccontextmanager
async def pinned(client: Client, key: str) -> AsyncIterator[Any]:
    """Hold one connection to the primary of ``key``'s slot (any connection, on one server).

    A connection that fails is dropped, and a cluster client then refreshes its map of the
    cluster, so that the next call finds a promoted replica.
    """
    node = None
    if isinstance(client, RedisCluster):
        await client.initialize()
        node = client.get_node_from_key(key)
        if node is None:
            raise ConfigurationError(f"no cluster node serves the slot of {key}")
        gate = _gates.setdefault(client, {}).setdefault(node.name, _Gate())
        connection: Any = await gate.acquire(node)
    else:
        connection = await client.connection_pool.get_connection()  # type: ignore[no-untyped-call]
    try:
        yield connection
    except BaseException as exc:
        await connection.disconnect()  # replies may be unread (or a WATCH held): start afresh
        if isinstance(client, RedisCluster) and isinstance(exc, RedisConnectionError | OSError):
            with contextlib.suppress(Exception):
                await _refresh(client)
        raise
    finally:
        if node is not None:
            gate.release(node, connection)
        else:
            await client.connection_pool.release(connection)  # type: ignore[union-attr]


class _Gate:
    """Our calls in flight to one cluster node, and a wait for a connection when all are taken.

    A cluster node's pool raises `MaxConnectionsError` when it is full rather than waiting.
    Our calls wait instead, for one of ours to give its connection back; if none of ours
    holds one (the client's own commands fill the pool), the error stands.
    """

    def __init__(self) -> None:
        self.in_flight = 0
        self.waiting: collections.deque[asyncio.Future[None]] = collections.deque()

    async def acquire(self, node: ClusterNode) -> Any:
        """Take a connection of ``node``, waiting while our own calls hold them all."""
        while True:
            try:
                connection = node.acquire_connection()
            except MaxConnectionsError:
                if not self.in_flight:
                    raise
                woken = asyncio.get_running_loop().create_future()
                self.waiting.append(woken)
                await woken
                continue
            self.in_flight += 1
            return connection

    def release(self, node: ClusterNode, connection: Any) -> None:
        """Give ``connection`` back and wake the longest waiting call (if any)."""
        node.release(connection)
        self.in_flight -= 1
        while self.waiting:
            woken = self.waiting.popleft()
            if not woken.done():  # a cancelled waiter is skipped
                woken.set_result(None)
                break


#: Per cluster client, a `_Gate` per node name.
_gates: weakref.WeakKeyDictionary[RedisCluster, dict[str, _Gate]] = weakref.WeakKeyDictionary()


async def exchange(connection: Any, commands: Sequence[Command]) -> list[Any]:
    """Send ``commands`` in one write and read their replies, errors as values."""
    await connection.send_packed_command(connection.pack_commands(commands))
    replies: list[Any] = []
    for _ in commands:
        try:
            replies.append(await connection.read_response())
        except ResponseError as exc:
            replies.append(exc)
    return replies


async def send(client: Client, key: str, commands: Sequence[Command]) -> list[Any]:
    """Send ``commands`` (all on ``key``'s slot) in one round trip; return their replies.

    On a cluster, replies saying the slot is elsewhere (nothing ran) make the client refresh
    its map and send them once more. A failed connection is not retried: what ran is unknown.
    """
    replies = await _send_once(client, key, commands)
    if _redirected(replies) and isinstance(client, RedisCluster):
        await _refresh(client)
        replies = await _send_once(client, key, commands)
    return replies


async def send_each(client: Client, calls: Sequence[tuple[str, Command]]) -> list[Any]:
    """Send independent ``(key, command)`` calls, one round trip per primary; replies in order.

    Each command runs on its own, not all together. On a cluster the primaries are sent to
    concurrently.
    """
    if not calls:
        return []
    if not isinstance(client, RedisCluster):
        return await send(client, calls[0][0], [command for _, command in calls])
    replies: list[Any] = [None] * len(calls)
    pending = list(range(len(calls)))
    for attempt in range(2):
        await client.initialize()
        groups: dict[str, list[int]] = collections.defaultdict(list)
        for index in pending:
            node = client.get_node_from_key(calls[index][0])
            groups[node.name if node else ""].append(index)

        async def one_node(indexes: list[int]) -> None:
            found = await _send_once(client, calls[indexes[0]][0], [calls[i][1] for i in indexes])
            for index, reply in zip(indexes, found, strict=True):
                replies[index] = reply

        await asyncio.gather(*(one_node(indexes) for indexes in groups.values()))
        pending = [index for index in pending if _redirected([replies[index]])]
        if not pending or attempt:
            break
        await _refresh(client)  # those slots moved (nothing ran there): send them again
    return replies


async def _send_once(client: Client, key: str, commands: Sequence[Command]) -> list[Any]:
    async with pinned(client, key) as connection:
        return await exchange(connection, commands)


def _redirected(replies: Sequence[Any]) -> bool:
    return any(isinstance(reply, AskError | TryAgainError) for reply in replies)


async def _refresh(client: RedisCluster) -> None:
    await client.nodes_manager.initialize()


def require_one_slot(keys: Sequence[str]) -> None:
    """Raise `CrossSlotError` unless every key hashes to one cluster slot."""
    slots = {key_slot(key.encode()) for key in keys}
    if len(slots) > 1:
        tags = sorted({key.partition("}")[0] + "}" for key in keys})
        raise CrossSlotError(
            f"a transaction on a Redis Cluster must stay in one hash slot, but these "
            f"instances are in {len(slots)} ({', '.join(tags)}): only instances of one class "
            "in one partition can change together; write them one by one instead"
        )
