"""The executor: runs plans and reads on a redis-py asyncio client, mapping Redis errors."""

from __future__ import annotations

import hashlib
import re
from collections.abc import AsyncIterator, Sequence
from dataclasses import dataclass
from typing import Any, cast

from redis.asyncio.cluster import RedisCluster
from redis.exceptions import ResponseError, WatchError

from streamstore.connection import Client
from streamstore.durability import Durability
from streamstore.errors import (
    ConcurrencyError,
    ConfigurationError,
    DocumentNotFoundError,
    RedisJSONMissingError,
)
from streamstore.events import Entry, Event, flat_entry, read_entry, text
from streamstore.plan import (
    APPLY_SCRIPT,
    REDISJSON_HINT,
    Applied,
    Plan,
    error_from_reply,
    parse_reply,
)
from streamstore.routing import Command, exchange, pinned, require_one_slot, send, send_each

__all__ = [
    "Head",
    "first_entry",
    "get_document",
    "get_document_and_seq",
    "get_path",
    "hold_lease",
    "iter_entries",
    "iter_events",
    "list_members",
    "put_document",
    "read_head",
    "read_heads",
    "release_lease",
    "run_plan",
    "run_plans",
    "run_plans_atomically",
    "scan_keys",
    "trim_before",
]

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
    if durability is not None:
        (applied,) = await _run_durably(client, [plan], durability)
        return applied
    return parse_reply(await _call(client, _FUNCTION, plan.keys, plan.args))


async def _call(client: Client, function: str, keys: Sequence[str], args: Sequence[str]) -> Any:
    """Call one of our functions, loading the library on a miss; map its errors."""
    (reply,), _ = await _send_calls(client, [(keys[0], _fcall_args(function, keys, args))])
    if isinstance(reply, ResponseError):
        message = str(reply)
        if "unknown command" in message.lower() and "fcall" in message.lower():
            raise ConfigurationError("streamstore needs Redis 7.0 or later (FCALL)") from None
        raise error_from_reply(message, key=keys[0]) or reply
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

    Raises the first plan's error, if any failed (the others have been applied). On a cluster
    the plans go to their slots' primaries, one round trip to each.
    """
    if durability is not None:
        return await _run_durably(client, plans, durability)
    replies = await _pipelined(client, _FUNCTION, [(plan.keys, plan.args) for plan in plans])
    return [_result(plan, reply) for plan, reply in zip(plans, replies, strict=True)]


async def _run_durably(
    client: Client, plans: Sequence[Plan], durability: Durability
) -> list[Applied]:
    """Run plans, then the durability wait, on the connection that wrote them.

    WAIT counts the replicas that hold what *its own connection* wrote, so writes and wait
    share one connection, to the primary of their slot: one round trip per primary, one WAIT
    after the last write there.
    """
    calls = [(plan.keys[0], _fcall_args(_FUNCTION, plan.keys, plan.args)) for plan in plans]
    replies, waits = await _send_calls(client, calls, then=durability.command())
    applied = [_result(plan, reply) for plan, reply in zip(plans, replies, strict=True)]
    for key, confirmed in waits:
        _check_durable(durability, confirmed, key, applied)
    return applied


def _check_durable(
    durability: Durability, reply: Any, key: str, applied: Sequence[Applied] = ()
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


@dataclass(frozen=True, slots=True)
class Check:
    """What must hold for one instance before a multi-instance write: its version, its document."""

    doc: str
    stream: str
    expected_seq: int | None
    must_exist: bool


async def run_plans_atomically(
    client: Client,
    plans: Sequence[Plan],
    checks: Sequence[Check],
    durability: Durability | None = None,
) -> list[Applied]:
    """Run plans of several instances all together or not at all.

    On one connection: WATCHes their documents and streams, verifies ``checks`` (raising
    `ConcurrencyError` or `DocumentNotFoundError` before anything is written), then sends every
    call in one MULTI/EXEC (and the durability wait after it). `WatchError` means another
    client wrote in between and nothing was applied. On a cluster every key must be in one
    hash slot, else `CrossSlotError` comes before anything is sent.
    """
    if isinstance(client, RedisCluster):
        require_one_slot([key for plan in plans for key in plan.keys])
    watched = [key for check in checks for key in (check.doc, check.stream)]
    for attempt in range(2):
        async with pinned(client, watched[0]) as connection:
            (watching,) = await exchange(connection, [("WATCH", *watched)])
            if isinstance(watching, ResponseError):
                raise watching
            found = await exchange(
                connection,
                [
                    command
                    for check in checks
                    for command in (
                        ("EXISTS", check.doc),
                        ("XREVRANGE", check.stream, "+", "-", "COUNT", 1),
                    )
                ],
            )
            for check, exists, last in zip(checks, found[::2], found[1::2], strict=True):
                _verify(check, exists, last)
            transaction: list[Command] = [
                ("MULTI",),
                *(_fcall_args(_FUNCTION, plan.keys, plan.args) for plan in plans),
                ("EXEC",),
            ]
            if durability is not None:
                transaction.append(durability.command())
            replies = await exchange(connection, transaction)
        results = replies[len(plans) + 1]
        if isinstance(results, ResponseError):
            raise results  # EXECABORT: a call was refused while queueing; nothing ran
        if results is None:
            raise WatchError("a watched key changed: nothing was applied")
        if attempt or not all(_function_missing(reply) for reply in results):
            break
        await _load_library(client)  # every call missed the function: nothing was applied
    applied = [_result(plan, reply) for plan, reply in zip(plans, results, strict=True)]
    if durability is not None:
        _check_durable(durability, replies[-1], plans[0].keys[0], applied)
    return applied


def _verify(check: Check, exists: Any, last: Any) -> None:
    """Raise if ``check`` fails, given its document's EXISTS and its stream's last entry."""
    if isinstance(exists, ResponseError) or isinstance(last, ResponseError):
        raise exists if isinstance(exists, ResponseError) else last
    if check.must_exist and not exists:
        raise DocumentNotFoundError(f"{check.doc} does not exist")
    if check.expected_seq is not None:
        seq = read_entry(*flat_entry(last[0])).seq if last else 0
        if seq != check.expected_seq:
            raise ConcurrencyError(f"{check.doc} was changed by another writer (now at seq {seq})")


def _function_missing(reply: Any) -> bool:
    """Tell whether a reply (or error) says the server lacks our function library."""
    return isinstance(reply, ResponseError) and str(reply).startswith("Function not found")


def _result(plan: Plan, reply: Any) -> Applied:
    if isinstance(reply, ResponseError):
        raise error_from_reply(str(reply), key=plan.keys[0]) or reply
    return parse_reply(reply)


async def _load_library(client: Client) -> None:
    # REPLACE: its name holds a hash of its text, so replacing changes nothing, and a client
    # loading it meanwhile is no error. On a cluster redis-py sends it to every primary.
    await client.function_load(_LIBRARY, replace=True)


def _json_error(exc: ResponseError) -> Exception:
    message = str(exc)
    if "nknown command" in message:
        return RedisJSONMissingError(REDISJSON_HINT)
    return exc


async def get_document(client: Client, key: str) -> str | bytes | None:
    """Return the raw JSON document at ``key`` (as the client returns it), or None."""
    raw: str | bytes | None = await _json_get(client, key)
    return raw  # bytes or str: it goes straight to validate_json


async def _json_get(client: Client, key: str, *paths: str) -> Any:
    """JSON.GET through our routing: like writes, many at once wait for a connection."""
    (reply,) = await send(client, key, [("JSON.GET", key, *paths)])
    if isinstance(reply, ResponseError):
        raise _json_error(reply) from None
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
            raise error_from_reply(str(reply), key=doc) or reply
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
        if reverse:
            reply = await client.xrevrange(stream, high, low, count=page)
        else:
            reply = await client.xrange(stream, low, high, count=page)
        entries = [read_entry(entry_id, fields) for entry_id, fields in cast("list[Any]", reply)]
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
