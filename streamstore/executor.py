"""The executor: runs plans and reads on a redis-py asyncio client, mapping Redis errors."""

from __future__ import annotations

import hashlib
from typing import Any, cast

import redis.asyncio as aioredis
from redis.exceptions import NoScriptError, ResponseError

from streamstore.errors import RedisJSONMissingError
from streamstore.events import Event, decode_entry, text
from streamstore.plan import (
    APPLY_SCRIPT,
    REDISJSON_HINT,
    Applied,
    Plan,
    error_from_reply,
    parse_reply,
)

__all__ = ["get_document", "get_path", "read_events", "run_plan"]

_APPLY_SHA = hashlib.sha1(APPLY_SCRIPT.encode()).hexdigest()  # noqa: S324 (Redis names scripts by SHA-1)


async def run_plan(client: aioredis.Redis, plan: Plan) -> Applied:
    """Run ``plan`` atomically in one round trip (EVALSHA; the script is loaded on first miss)."""
    try:
        try:
            reply = await client.evalsha(_APPLY_SHA, len(plan.keys), *plan.keys, *plan.args)
        except NoScriptError:
            await client.script_load(APPLY_SCRIPT)
            reply = await client.evalsha(_APPLY_SHA, len(plan.keys), *plan.keys, *plan.args)
    except ResponseError as exc:
        error = error_from_reply(str(exc), key=plan.keys[0])
        if error is None:
            raise
        raise error from None
    return parse_reply(reply)


def _json_error(exc: ResponseError) -> Exception:
    message = str(exc)
    if "nknown command" in message:
        return RedisJSONMissingError(REDISJSON_HINT)
    return exc


async def get_document(client: aioredis.Redis, key: str) -> str | bytes | None:
    """Return the raw JSON document at ``key`` (as the client returns it), or None."""
    try:
        raw: str | bytes | None = await client.execute_command("JSON.GET", key)  # type: ignore[no-untyped-call]
    except ResponseError as exc:
        raise _json_error(exc) from None
    return raw  # bytes or str: it goes straight to validate_json


async def get_path(client: aioredis.Redis, key: str, path: str) -> str | None:
    """Return the raw JSON value at ``path`` of the document ``key``.

    None when the document does not exist or the path matches nothing.
    """
    try:
        raw: Any = await client.execute_command("JSON.GET", key, path)  # type: ignore[no-untyped-call]
    except ResponseError as exc:
        raise _json_error(exc) from None
    if raw is None:
        return None
    found = text(raw)
    return None if found == "[]" else found[1:-1]


async def read_events(
    client: aioredis.Redis,
    stream: str,
    *,
    start: str = "-",
    end: str = "+",
    count: int | None = None,
) -> list[Event]:
    """Return the events of ``stream`` between stream ids ``start`` and ``end``, oldest first."""
    entries = cast("list[tuple[Any, Any]]", await client.xrange(stream, start, end, count=count))
    return [decode_entry(entry_id, fields) for entry_id, fields in entries]
