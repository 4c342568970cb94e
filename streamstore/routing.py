"""Routing: our commands, sent on one connection to the primary that holds their keys."""

from __future__ import annotations

import asyncio
import collections
import contextlib
import weakref
from typing import TYPE_CHECKING, Any, TypeAlias, cast

import hiredis
from redis.asyncio.cluster import ClusterNode, RedisCluster
from redis.crc import key_slot
from redis.exceptions import AskError, MaxConnectionsError, ResponseError, TryAgainError
from redis.exceptions import ConnectionError as RedisConnectionError

from streamstore.errors import ConfigurationError, CrossSlotError

if TYPE_CHECKING:
    from collections.abc import AsyncIterator, Awaitable, Callable, Sequence

    import redis.asyncio as aioredis

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
    lease = await _Lease.take(client, key)
    try:
        yield lease.connection
    except BaseException as exc:
        await lease.drop(exc)
        raise
    finally:
        await lease.give_back()


class _Lease:
    """A connection taken for our calls: from whose pool, and through which `_Gate`."""

    __slots__ = ("client", "connection", "gate", "node")

    def __init__(
        self, client: Client, node: ClusterNode | None, gate: _Gate, connection: Any
    ) -> None:
        self.client, self.node, self.gate, self.connection = client, node, gate, connection

    @classmethod
    async def take(cls, client: Client, key: str) -> _Lease:
        """Take a connection to the primary of ``key``'s slot, waiting while ours hold them all."""
        gates = _gates.get(client)
        if gates is None:
            gates = _gates[client] = {}
        if isinstance(client, RedisCluster):
            await client.initialize()
            node = client.get_node_from_key(key)
            if node is None:
                raise ConfigurationError(f"no cluster node serves the slot of {key}")
            gate = gates.get(node.name) or gates.setdefault(node.name, _Gate())

            async def from_node() -> Any:
                return node.acquire_connection()

            return cls(client, node, gate, await gate.acquire(from_node))
        gate = gates.get("") or gates.setdefault("", _Gate())
        return cls(client, None, gate, await gate.acquire(client.connection_pool.get_connection))

    async def drop(self, failure: BaseException) -> None:
        """Disconnect after ``failure`` (replies may be unread, a WATCH held).

        On a cluster, a connection failure also refreshes the map: the node may be gone.
        """
        await self.connection.disconnect()
        if isinstance(self.client, RedisCluster) and isinstance(
            failure, RedisConnectionError | OSError
        ):
            with contextlib.suppress(Exception):
                await _refresh(self.client)

    async def give_back(self) -> None:
        """Return the connection to its pool and let a waiting call have one."""
        if self.node is not None:
            self.node.release(self.connection)
        else:
            await cast("aioredis.Redis", self.client).connection_pool.release(self.connection)
        self.gate.release()


class _Gate:
    """Our calls in flight to one server (or cluster node), and a queue for a free connection.

    redis-py's pools raise `MaxConnectionsError` when full rather than waiting (its blocking
    pool waits, but costs every call about 20%). Our calls wait instead, for one of ours to
    give its connection back; if none of ours holds one (the client's own commands fill the
    pool), the error stands.
    """

    def __init__(self) -> None:
        self.in_flight = 0
        self.waiting: collections.deque[asyncio.Future[None]] = collections.deque()

    async def acquire(self, take: Callable[[], Awaitable[Any]]) -> Any:
        """Return a connection from ``take``, waiting while our own calls hold them all."""
        while True:
            self.in_flight += 1  # counted from the start: a connection may still be connecting
            try:
                return await take()
            except MaxConnectionsError:
                self.in_flight -= 1
                if not self.in_flight:
                    raise
            except BaseException:
                self.in_flight -= 1
                raise
            woken = asyncio.get_running_loop().create_future()
            self.waiting.append(woken)
            await woken

    def release(self) -> None:
        """Count a connection given back, and wake the longest waiting call (if any)."""
        self.in_flight -= 1
        while self.waiting:
            woken = self.waiting.popleft()
            if not woken.done():  # a cancelled waiter is skipped
                woken.set_result(None)
                break


#: Per client, a `_Gate` per cluster node name ("" for a single server).
_gates: weakref.WeakKeyDictionary[Client, dict[str, _Gate]] = weakref.WeakKeyDictionary()


def _packed(connection: Any, commands: Sequence[Command]) -> Any:
    """Return ``commands`` in the wire format, as the connection would pack them.

    hiredis packs a command several times faster than redis-py's own packer (a write's ~26
    arguments: about 2 µs against 16); it encodes text as UTF-8, so it is used only where the
    connection does the same.
    """
    encoder = connection.encoder
    if encoder.encoding.lower() in _UTF8 and encoder.encoding_errors == "strict":
        return [hiredis.pack_command(cast("Any", tuple(command))) for command in commands]
    return connection.pack_commands(commands)


_UTF8 = ("utf-8", "utf8")


async def exchange(connection: Any, commands: Sequence[Command]) -> list[Any]:
    """Send ``commands`` in one write and read their replies, errors as values."""
    await connection.send_packed_command(_packed(connection, commands))
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


async def send_each(
    client: Client, calls: Sequence[tuple[str, Command]], *, then: Command | None = None
) -> tuple[list[Any], list[tuple[str, Any]]]:
    """Send independent ``(key, command)`` calls, one round trip per primary; replies in order.

    Each command runs on its own, not all together. On a cluster the primaries are sent to
    concurrently. ``then``, if given, follows each primary's calls on the same connection (a
    WAIT after the writes it must wait for); its replies come second, each with a key of the
    calls it followed.
    """
    trailing: list[tuple[str, Any]] = []
    if not calls:
        return [], trailing
    extra = [then] if then is not None else []
    if len(calls) == 1 or not isinstance(client, RedisCluster):  # one primary: no grouping
        key = calls[0][0]
        replies = await send(client, key, [*(command for _, command in calls), *extra])
        if then is not None:
            trailing.append((key, replies.pop()))
        return replies, trailing
    replies = [None] * len(calls)
    pending = list(range(len(calls)))
    for attempt in range(2):
        await client.initialize()
        groups: dict[str, list[int]] = collections.defaultdict(list)
        for index in pending:
            node = client.get_node_from_key(calls[index][0])
            groups[node.name if node else ""].append(index)

        async def one_node(indexes: list[int]) -> None:
            key = calls[indexes[0]][0]
            found = await _send_once(client, key, [*(calls[i][1] for i in indexes), *extra])
            if then is not None:
                trailing.append((key, found.pop()))
            for index, reply in zip(indexes, found, strict=True):
                replies[index] = reply

        await asyncio.gather(*(one_node(indexes) for indexes in groups.values()))
        pending = [index for index in pending if _redirected([replies[index]])]
        if not pending or attempt:
            break
        await _refresh(client)  # those slots moved (nothing ran there): send them again
    return replies, trailing


async def _send_once(client: Client, key: str, commands: Sequence[Command]) -> list[Any]:
    # `pinned`, without a context manager's cost on the hot path of every write and read.
    lease = await _Lease.take(client, key)
    try:
        return await exchange(lease.connection, commands)
    except BaseException as exc:
        await lease.drop(exc)
        raise
    finally:
        await lease.give_back()


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
