"""The executor: runs plans and reads on a redis-py asyncio client, mapping Redis errors."""

from __future__ import annotations

import hashlib
import re
from collections.abc import AsyncIterator, Mapping, Sequence
from dataclasses import dataclass
from importlib import resources
from typing import Any, cast

from redis.asyncio.cluster import RedisCluster
from redis.crc import key_slot
from redis.exceptions import (
    ClusterError,
    NoPermissionError,
    OutOfMemoryError,
    ReadOnlyError,
    ResponseError,
)

from streamstore.connection import Client
from streamstore.durability import Durability
from streamstore.errors import (
    ConfigurationError,
    PermissionDeniedError,
    ServerRefusedError,
)
from streamstore.events import Entry, Event, flat_entry, read_entry, text
from streamstore.plan import (
    Applied,
    Plan,
    call_arguments,
    error_from_reply,
    parse_reply,
)
from streamstore.routing import Command, require_one_slot, send, send_each

__all__ = [
    "Head",
    "delete_keys",
    "existing",
    "first_entry",
    "get_document",
    "get_document_and_seq",
    "get_documents",
    "get_path",
    "get_values",
    "hold_lease",
    "iter_entries",
    "iter_events",
    "list_members",
    "put_document",
    "read_head",
    "read_heads",
    "read_range",
    "release_lease",
    "run_each",
    "run_plan",
    "run_plans",
    "run_together",
    "scan_keys",
    "set_expiring",
    "trim_before",
]

#: Source of apply.lua, the Redis Functions library every write and the read side's functions run.
APPLY_SCRIPT = resources.files("streamstore").joinpath("apply.lua").read_text()

# apply.lua is a Redis Functions library. Redis has one namespace of functions per server, so
# it is loaded under names made from a hash of its text: two versions of streamstore sharing a
# server (a rolling deploy) each find their own and never replace each other's.
_LIBRARY_ID = hashlib.sha1(APPLY_SCRIPT.encode()).hexdigest()[:16]  # noqa: S324 (a name, not security)
_FUNCTION, _READ, _PUT, _LEASE, _MEMBERS = (
    f"streamstore_{name}_{_LIBRARY_ID}" for name in ("apply", "read", "put", "lease", "members")
)
_LIBRARY = re.sub(
    r"(function_name = |register_function\()'streamstore_(\w+)'",
    rf"\1'streamstore_\2_{_LIBRARY_ID}'",
    APPLY_SCRIPT.replace("#!lua name=streamstore\n", f"#!lua name=streamstore_{_LIBRARY_ID}\n", 1),
)


async def run_plan(client: Client, plan: Plan, durability: Durability | None = None) -> Applied:
    """Run ``plan`` atomically in one round trip (FCALL; the library is loaded on first miss).

    With ``durability``, the wait for replicas follows in the same round trip.
    """
    (applied,) = await run_together(client, [plan], durability)
    return applied


async def run_together(
    client: Client, plans: Sequence[Plan], durability: Durability | None = None
) -> list[Applied]:
    """Apply the plans of one or several instances in one function call: all of them or none.

    The function checks every plan (versions, documents, arguments, permissions) before its
    first write, and puts back what it changed if a later operation fails, so a failure leaves
    every instance as it was. On a cluster the instances must share a hash slot, else
    `CrossSlotError` is raised before anything is sent. With ``durability``, the wait for
    replicas follows in the same round trip.
    """
    if len(plans) > 1 and isinstance(client, RedisCluster):
        require_one_slot([key for plan in plans for key in plan.keys])
    keys, args = call_arguments(plans)
    docs = [plan.keys[0] for plan in plans]
    call = (keys[0], _fcall_args(_FUNCTION, keys, args))
    if durability is None:
        (reply,), _ = await _send_calls(client, [call])
        return _applied(reply, docs)
    (reply,), waits = await _send_calls(client, [call], then=durability.command())
    applied = _applied(reply, docs)
    for key, confirmed in waits:
        _check_durable(durability, confirmed, key, applied)
    return applied


async def _call(client: Client, function: str, keys: Sequence[str], args: Sequence[str]) -> Any:
    """Call one of our functions, loading the library on a miss; map its errors."""
    (reply,), _ = await _send_calls(client, [(keys[0], _fcall_args(function, keys, args))])
    if isinstance(reply, ResponseError):
        raise _refusal(reply, keys[:1]) from None
    return reply


async def _send_calls(
    client: Client, calls: Sequence[tuple[str, Command]], then: Command | None = None
) -> tuple[list[Any], list[tuple[str, Any]]]:
    """`send_each` our function calls; where a server lacked our library, load it and resend.

    A call that missed the function ran nothing, so sending it again is safe.
    """
    replies, trailing = await send_each(client, calls, then=then)
    missing = [index for index, reply in enumerate(replies) if _function_missing(reply)]
    if missing:
        await _load_library(client)
        again, more = await send_each(client, [calls[index] for index in missing], then=then)
        for index, reply in zip(missing, again, strict=True):
            replies[index] = reply
        trailing += more
    return replies, trailing


def _fcall_args(function: str, keys: Sequence[str], args: Sequence[str]) -> Command:
    return ("FCALL", function, len(keys), *keys, *args)


async def run_plans(
    client: Client, plans: Sequence[Plan], durability: Durability | None = None
) -> list[Applied]:
    """Run several plans in one round trip; each is atomic on its own, not all together.

    Raises the first plan's error, if any failed (the others have been applied: `run_each`
    tells which). On a cluster the plans go to their slots' primaries, one round trip to each.
    """
    results = await run_each(client, plans, durability)
    for result in results:
        if isinstance(result, Exception):
            raise result
    return cast("list[Applied]", results)


async def run_each(
    client: Client, plans: Sequence[Plan], durability: Durability | None = None
) -> list[Applied | Exception]:
    """`run_plans`, returning per plan what it applied or the error that refused it.

    With ``durability``, a `DurabilityError` is raised whose ``applied`` holds, per plan, what
    it applied (None where it was refused).
    """
    calls = []
    for plan in plans:
        keys, args = call_arguments([plan])
        calls.append((keys[0], _fcall_args(_FUNCTION, keys, args)))
    replies, waits = await _send_calls(
        client, calls, then=None if durability is None else durability.command()
    )
    results: list[Applied | Exception] = [
        _refusal(reply, plan.keys[:1])
        if isinstance(reply, ResponseError)
        else parse_reply(reply)[0]
        for plan, reply in zip(plans, replies, strict=True)
    ]
    if durability is not None:
        applied = [result if isinstance(result, Applied) else None for result in results]
        for key, confirmed in waits:
            _check_durable(durability, confirmed, key, applied)
    return results


def _check_durable(
    durability: Durability, reply: Any, key: str, applied: Sequence[Applied | None] = ()
) -> None:
    if isinstance(reply, ResponseError):
        message = str(reply)
        if "unknown command" in message.lower():
            raise ConfigurationError(f"Durability(aof=True) needs Redis 7.2 or later: {message}")
        if "appendonly" in message.lower():
            raise ConfigurationError(f"Durability(aof=True) needs `appendonly yes`: {message}")
        raise reply
    durability.check(reply, key, applied)


async def _pipelined(
    client: Client, function: str, calls: Sequence[tuple[Sequence[str], Sequence[str]]]
) -> list[Any]:
    """Call ``function`` once per ``(keys, args)``, one round trip per primary; the replies.

    Errors come back as replies.
    """
    commands = [(keys[0], _fcall_args(function, keys, args)) for keys, args in calls]
    replies, _ = await _send_calls(client, commands)
    return replies


def _function_missing(reply: Any) -> bool:
    """Tell whether a reply (or error) says the server lacks our function library."""
    return isinstance(reply, ResponseError) and str(reply).startswith("Function not found")


def _applied(reply: Any, docs: Sequence[str]) -> list[Applied]:
    """Read an apply call's reply; raise the library error an error reply stands for."""
    if isinstance(reply, ResponseError):
        raise _refusal(reply, docs) from None
    return parse_reply(reply)


def _refusal(reply: ResponseError, docs: Sequence[str]) -> Exception:
    """Return the error a refused call raises: the library's own, never a bare `ResponseError`.

    Replies about the server's state rather than the call (a read-only replica, a cluster
    that is down) stay redis-py's, which failover code catches with connection errors.
    """
    if isinstance(reply, ReadOnlyError | ClusterError):
        return reply
    message = str(reply)
    if "unknown command" in message.lower() and "fcall" in message.lower():
        return ConfigurationError("streamstore needs Redis 7.0 or later (FCALL)")
    mapped = error_from_reply(message, keys=docs)
    if mapped is not None:
        return mapped
    where = docs[0] if docs else "?"
    if isinstance(reply, OutOfMemoryError):
        return ServerRefusedError(
            f"{where}: Redis is out of memory (maxmemory); nothing was written"
        )
    if isinstance(reply, NoPermissionError):
        return PermissionDeniedError(f"{where}: {message}; nothing was written")
    return ServerRefusedError(f"{where}: Redis refused the call ({message}); nothing was written")


async def _load_library(client: Client) -> None:
    # REPLACE: its name holds a hash of its text, so replacing changes nothing, and a client
    # loading it meanwhile is no error. On a cluster redis-py sends it to every primary.
    try:
        await client.function_load(_LIBRARY, replace=True)
    except NoPermissionError as exc:
        raise PermissionDeniedError(
            f"the server lacks streamstore's function library and this user may not load it "
            f"({exc}): grant +function|load, or let the application's user write once first"
        ) from None


async def get_document(client: Client, key: str) -> str | bytes | None:
    """Return the raw JSON document at ``key`` (as the client returns it), or None."""
    raw: str | bytes | None = await _json_get(client, key)
    return raw  # bytes or str: it goes straight to validate_json


#: Most keys one JSON.MGET reads.
_MGET_KEYS = 1000


async def get_documents(client: Client, keys: Sequence[str]) -> list[str | bytes | None]:
    """Return the raw JSON documents at ``keys`` (None where there is none), in order.

    One JSON.MGET per hash slot (one server: one for all) and `_MGET_KEYS` keys, those of a
    primary in one round trip; each document is read on its own, as of its own moment.
    """
    by_slot: dict[int, list[int]] = {}
    for index, key in enumerate(keys):
        slot = 0 if not isinstance(client, RedisCluster) else key_slot(key.encode())
        by_slot.setdefault(slot, []).append(index)
    # At most _MGET_KEYS a command: a huge one would hold the server up for everyone else.
    groups = [
        indexes[start : start + _MGET_KEYS]
        for indexes in by_slot.values()
        for start in range(0, len(indexes), _MGET_KEYS)
    ]
    replies = await _each(
        client,
        [(keys[group[0]], ("JSON.MGET", *(keys[i] for i in group), ".")) for group in groups],
    )
    found: list[str | bytes | None] = [None] * len(keys)
    for group, documents in zip(groups, replies, strict=True):
        for index, document in zip(group, documents, strict=True):
            found[index] = document
    return found


async def existing(client: Client, keys: Sequence[str]) -> list[bool]:
    """Tell, for each of ``keys``, whether it exists (one round trip per primary)."""
    return [bool(found) for found in await _each(client, [(key, ("EXISTS", key)) for key in keys])]


async def get_values(client: Client, keys: Sequence[str]) -> list[str | bytes | None]:
    """Return the string values at ``keys`` (None where there is none), in order."""
    return await _each(client, [(key, ("GET", key)) for key in keys])


async def set_expiring(client: Client, values: Mapping[str, str], ms: int) -> None:
    """Set each key of ``values`` to its value, expiring in ``ms`` milliseconds."""
    await _each(client, [(key, ("SET", key, value, "PX", ms)) for key, value in values.items()])


async def delete_keys(client: Client, keys: Sequence[str]) -> int:
    """Delete ``keys`` (each on its own: a cluster spreads them); return how many existed."""
    return sum(await _each(client, [(key, ("DEL", key)) for key in keys]))


async def _each(client: Client, calls: Sequence[tuple[str, Command]]) -> list[Any]:
    """Send independent one-key commands through our routing; raise the first refusal."""
    replies, _ = await send_each(client, calls)
    for (key, _), reply in zip(calls, replies, strict=True):
        if isinstance(reply, ResponseError):
            raise _refusal(reply, [key]) from None
    return replies


async def _json_get(client: Client, key: str, *paths: str) -> Any:
    """JSON.GET through our routing: like writes, many at once wait for a connection."""
    (reply,) = await send(client, key, [("JSON.GET", key, *paths)])
    if isinstance(reply, ResponseError):
        raise _refusal(reply, [key]) from None
    return reply


async def get_document_and_seq(
    client: Client, key: str, stream: str
) -> tuple[str | bytes | None, int]:
    """Return the document at ``key`` and the last seq of ``stream``, read atomically."""
    head = await read_head(client, key, stream, 1)
    return head.document, head.entries[0].seq if head.entries else 0


async def get_path(client: Client, key: str, path: str) -> str | None:
    """Return the raw JSON value at ``path`` of the document ``key``.

    None when the document does not exist or the path matches nothing.
    """
    raw = await _json_get(client, key, path)
    if raw is None:
        return None
    found = text(raw)
    return None if found == "[]" else found[1:-1]


# --- the read side: what replay, verify and rebuild read and write ---------------------------


@dataclass(frozen=True, slots=True)
class Head:
    """A document and the newest entries of its stream, read together in one atomic call."""

    #: The document's JSON text, or None when there is none.
    document: str | bytes | None
    #: The newest entries of the stream, newest first.
    entries: list[Entry]


def _head(reply: Sequence[Any]) -> Head:
    raw, entries = reply
    return Head(raw or None, [read_entry(*flat_entry(entry)) for entry in entries])


async def read_head(client: Client, doc: str, stream: str, count: int) -> Head:
    """Read the document ``doc`` and the newest ``count`` events of ``stream`` atomically."""
    return _head(await _call(client, _READ, (doc, stream), (str(count),)))


async def read_heads(client: Client, pairs: Sequence[tuple[str, str]], count: int) -> list[Head]:
    """`read_head` for many instances in one round trip (each read atomic on its own)."""
    replies = await _pipelined(
        client, _READ, [((doc, stream), (str(count),)) for doc, stream in pairs]
    )
    heads = []
    for (doc, _), reply in zip(pairs, replies, strict=True):
        if isinstance(reply, ResponseError):
            raise _refusal(reply, [doc]) from None
        heads.append(_head(reply))
    return heads


async def put_document(
    client: Client, doc: str, stream: str, *, expected_seq: int, path: str, value: str
) -> str | None:
    """Write ``value`` at ``path`` of ``doc`` if its stream is still at ``expected_seq``.

    ``value=""`` deletes the document. A stream that moved on raises `ConcurrencyError`.

    Returns the value as RedisJSON stored it (its JSON text inside ``[...]``), None on delete.
    """
    stored = await _call(client, _PUT, (doc, stream), (str(expected_seq), path, value))
    return None if stored is None else text(stored)


async def read_range(
    client: Client, stream: str, low: str, high: str, count: int, *, reverse: bool = False
) -> list[tuple[Any, dict[Any, Any]]]:
    """Return one page of ``stream``: up to ``count`` entries from ``low`` to ``high``.

    Oldest first (XRANGE), or newest first from ``high`` with ``reverse`` (XREVRANGE); each
    entry as ``(id, fields)``, names and values as the client returns them.
    """
    if reverse:
        return cast("list[Any]", await client.xrevrange(stream, high, low, count=count))
    return cast("list[Any]", await client.xrange(stream, low, high, count=count))


async def iter_entries(
    client: Client,
    stream: str,
    *,
    start: str = "-",
    end: str = "+",
    reverse: bool = False,
    page: int = 1000,
) -> AsyncIterator[list[Entry]]:
    """Yield the entries of ``stream`` between ids ``start`` and ``end`` (inclusive), by pages.

    Oldest first, or newest first with ``reverse``. Each page is one XRANGE (XREVRANGE); memory
    holds one page, whatever the stream's length.
    """
    low, high = start, end
    while True:
        reply = await read_range(client, stream, low, high, page, reverse=reverse)
        entries = [read_entry(entry_id, fields) for entry_id, fields in reply]
        if entries:
            yield entries
        if len(entries) < page:
            return
        if reverse:
            high = f"({text(entries[-1].id)}"
        else:
            low = f"({text(entries[-1].id)}"


async def iter_events(
    client: Client,
    stream: str,
    *,
    start: str = "-",
    end: str = "+",
    reverse: bool = False,
    page: int = 1000,
) -> AsyncIterator[list[Event]]:
    """`iter_entries`, each entry decoded into an `Event`."""
    async for entries in iter_entries(
        client, stream, start=start, end=end, reverse=reverse, page=page
    ):
        yield [entry.event() for entry in entries]


async def scan_keys(client: Client, pattern: str, *, count: int = 1000) -> AsyncIterator[list[str]]:
    """Yield the keys matching ``pattern``, one SCAN page at a time (never the whole keyspace).

    Like SCAN itself, a key present throughout is yielded at least once, and may be yielded
    twice if the keyspace is resized meanwhile.
    On a cluster every primary is scanned.
    """
    page: list[str] = []
    async for key in client.scan_iter(match=pattern, count=count):
        page.append(text(key))
        if len(page) >= count:
            yield page
            page = []
    if page:
        yield page


async def trim_before(client: Client, stream: str, first_kept_id: str) -> int:
    """Delete the entries of ``stream`` older than ``first_kept_id``; return how many."""
    return int(await client.xtrim(stream, minid=first_kept_id, approximate=False))


async def first_entry(client: Client, stream: str) -> Entry | None:
    """Return the oldest entry kept in ``stream``, or None when it has none."""
    async for page in iter_entries(client, stream, page=1):
        return page[0]
    return None


async def hold_lease(client: Client, key: str, owner: str, ms: int) -> bool:
    """Renew the lease ``key`` for ``ms`` if ``owner`` holds it; tell whether it does."""
    return bool(await _call(client, _LEASE, (key,), ("renew", owner, str(ms))))


async def release_lease(client: Client, key: str, owner: str) -> bool:
    """Release the lease ``key`` if ``owner`` holds it; tell whether it did."""
    return bool(await _call(client, _LEASE, (key,), ("release", owner, "0")))


async def list_members(
    client: Client, index: str, expiry: str, *, after: str = "", count: int = 1000
) -> list[str]:
    """Return up to ``count`` pks of a partition's index in pk order, after ``after``.

    Instances whose expiry has passed are dropped from the index first.
    """
    found = await _call(client, _MEMBERS, (index, expiry), (after, str(count)))
    return [text(pk) for pk in found]
