"""Field indexes: per chosen field of a model class, which pks hold each value (no RediSearch).

``field_index(User, "email")`` is a subscriber that keeps, per value of ``User.email``, the set
of pks holding it; ``await User.find_by(email="ann@example.com")`` reads it. Layout in
`streamstore.keys.IndexKeys`. Run the subscriber in a `Runner` like any other:

* Values come from the events: whole-document events (``saved``, ``duplicated``, ``snapshot``)
  and a ``set`` of the field or of a model containing it carry the new value, ``number.incr``
  its result, ``deleted`` removes the pk. Any other event on the field (a container operation
  on an ``Any`` field) makes the handler read the field from the document instead.
* A value is indexed by its JSON text, so for a field that can hold both (``int | str``,
  ``Any``) ``1`` and ``"1"`` are two values. Lookups first pass the value through the field's
  type as a write does (``User.find_by(age="30")`` looks for ``30``; a value the field cannot
  hold raises `FieldTypeError`).
* Each change updates every field it touches in one script call, and only if its event is
  newer (by stream id) than what the index holds for that pk: a redelivered or replayed change,
  or a `rebuild_index` racing the subscriber, never puts an older value back.
* Cluster: all keys of one class's indexes share the hash tag ``{<prefix>}`` (one slot), so
  updates and intersections work on a cluster, on one node. The script forms member set keys
  from declared prefixes, which a cluster accepts because they share that slot; it is only
  tested on a single server.

A new index on existing data: run the subscriber (default ``start="beginning"`` replays the
feed that is kept), and run `rebuild_index` once. Only the rebuild covers instances whose
events were trimmed from the feed (``Meta.feed_maxlen``); the order of the two does not matter.
"""

from __future__ import annotations

import enum
import json
import re
import types
from collections.abc import Callable, Mapping
from typing import TYPE_CHECKING, Annotated, Any, Literal, Union, get_args, get_origin

from pydantic import BaseModel
from redis.asyncio.client import Pipeline
from redis.asyncio.cluster import ClusterPipeline

from streamstore._logging import get_logger
from streamstore.connection import resolve_client
from streamstore.errors import FieldTypeError, UsageError
from streamstore.events import Event, loads, text
from streamstore.executor import existing, get_path, read_heads, scan_keys
from streamstore.keys import IndexKeys, index_keys
from streamstore.operations import JSON, OPERATIONS
from streamstore.paths import FieldPath, json_path
from streamstore.projections.history import field_path
from streamstore.projections.subscriber import Change, Subscriber
from streamstore.routing import send
from streamstore.schema import Codec, field_codec

if TYPE_CHECKING:
    from streamstore.connection import Client, Target
    from streamstore.meta import ModelClass

__all__ = ["field_index", "find_candidates", "find_pks", "rebuild_index", "value_text"]

#: Fields given to `field_index` in this process, per class: `find_by` accepts them even before
#: the subscriber recorded them in Redis (a fresh deploy with no change handled yet).
_DECLARED: dict[ModelClass, set[str]] = {}

# Updates one pk's entries in a class's indexes for one event, field by field, unless the
# index already holds that event or a newer one (stream ids compare as (ms, n)).
# KEYS[1]: the set of indexed field names; KEYS[1 + i]: field i's values hash.
# ARGV[1]: pk; ARGV[2]: the event id; ARGV[3i .. 3i+2]: field i's name, the prefix of its
# member set keys, its value's JSON text ('' when the field is absent).
_UPDATE = """
local function newer(a, b)
  local a_ms, a_n = string.match(a, '^(%d+)-(%d+)$')
  local b_ms, b_n = string.match(b, '^(%d+)-(%d+)$')
  if tonumber(a_ms) ~= tonumber(b_ms) then return tonumber(a_ms) > tonumber(b_ms) end
  return tonumber(a_n) > tonumber(b_n)
end
local pk, id, changed = ARGV[1], ARGV[2], 0
for i = 1, #KEYS - 1 do
  local field, members, value = ARGV[3 * i], ARGV[3 * i + 1], ARGV[3 * i + 2]
  local hash = KEYS[i + 1]
  redis.call('SADD', KEYS[1], field)
  local stored = redis.call('HGET', hash, pk)
  local old_id, old_value = nil, nil
  if stored then
    local space = string.find(stored, ' ', 1, true)
    old_id, old_value = string.sub(stored, 1, space - 1), string.sub(stored, space + 1)
  end
  if not old_id or newer(id, old_id) then
    if old_value and old_value ~= value then redis.call('SREM', members .. old_value, pk) end
    if value == '' then
      redis.call('HDEL', hash, pk)
    else
      redis.call('SADD', members .. value, pk)
      redis.call('HSET', hash, pk, id .. ' ' .. value)
    end
    changed = changed + 1
  end
end
return changed
"""

#: The id older than any event: a document without a stream is indexed unless the index has it.
_OLDEST = "0-0"

#: Pks checked per round trip when `rebuild_index` looks for entries without a document.
_PAGE = 1000

_NOT_IN_NAME = re.compile(r"[^A-Za-z0-9_.:-]")


class _Effect(enum.Enum):
    """What an event did to a field, when it is not simply the field's new value."""

    #: The event did not touch the field.
    UNTOUCHED = enum.auto()
    #: The event changed the field without carrying its value: read it from the document.
    READ = enum.auto()


# --- values --------------------------------------------------------------------------------


def value_text(value: JSON) -> str:
    """Return the text a JSON value is indexed by: compact JSON, object keys sorted."""
    return json.dumps(value, separators=(",", ":"), ensure_ascii=False, sort_keys=True)


def _text_at(value: JSON, path: FieldPath) -> str | None:
    """Return the indexed text of the field at ``path`` inside ``value``; None if absent."""
    for name in path:
        if not isinstance(value, dict) or name not in value:
            return None
        value = value[name]
    return value_text(value)


def _indexed_after(event: Event, path: FieldPath) -> str | _Effect | None:
    """Return the indexed text of the field at ``path`` after ``event`` (None: no value)."""
    if event.type == "deleted":
        return None
    if OPERATIONS[event.type].whole_document:
        document = event.data if event.type == "saved" else event.data["document"]
        return _text_at(document, path)
    if not event.touches(path):
        return _Effect.UNTOUCHED
    mine = event.field_path
    if event.type == "set" and path[: len(mine)] == mine:
        return _text_at(event.data["value"], path[len(mine) :])
    if event.type == "number.incr" and mine == path:
        return value_text(event.data["value"])
    return _Effect.READ


# --- fields --------------------------------------------------------------------------------


def _bare(annotation: Any) -> Any:
    """Drop Annotated metadata and a None arm: ``Annotated[Profile | None, ...]`` -> Profile."""
    while True:
        origin = get_origin(annotation)
        if origin is Annotated:
            annotation = get_args(annotation)[0]
            continue
        if origin in (Union, types.UnionType):
            arms = [arm for arm in get_args(annotation) if arm is not type(None)]
            if len(arms) == 1:
                annotation = arms[0]
                continue
        return annotation


def _is_model(annotation: Any) -> bool:
    return isinstance(annotation, type) and issubclass(annotation, BaseModel)


def _field(model: ModelClass, name: str) -> tuple[FieldPath, Codec]:
    """Return the path of the field ``name`` (dotted for nested models) and its codec.

    `UsageError` for a field the class does not have, and for one holding a list, dict, set,
    tuple or model: an index looks up single values.
    """
    path = field_path(name)
    if not issubclass(model, BaseModel):
        raise UsageError(f"{model!r} is not a pydantic model")
    owner: type[BaseModel] = model
    for depth, part in enumerate(path):
        where = f"{model.__name__}.{'.'.join(path[: depth + 1])}"
        info = owner.__pydantic_fields__.get(part)
        if info is None:
            raise UsageError(f"{model.__name__} has no field {'.'.join(path[: depth + 1])!r}")
        bare = _bare(info.annotation)
        if depth < len(path) - 1:
            if not _is_model(bare):
                raise UsageError(f"{where} is not a model: only model fields have fields")
            owner = bare
        elif _is_model(bare) or (get_origin(bare) or bare) in (list, dict, set, frozenset, tuple):
            raise UsageError(
                f"{where} holds a container: index a field holding one value (str, int, ...)"
            )
    return path, field_codec(owner, path[-1])


def _dotted(path: FieldPath) -> str:
    return ".".join(path)


def _keys(model: ModelClass) -> IndexKeys:
    return index_keys(model.__ss_meta__.keys.prefix)


def _client(model: ModelClass) -> Client:
    return resolve_client(model.__ss_meta__.redis)


# --- writing -------------------------------------------------------------------------------

# Redis calls: an index's own keys (one hash slot per class, ``{<prefix>}``) are kept with the
# client and its pipelines, which redis-py routes on a cluster: the subscriber's upkeep, off the
# write path. Queries go through our routing (`send`), like model reads.


async def _update(
    target: Target,
    keys: IndexKeys,
    pk: str,
    event_id: str,
    values: Mapping[str, str | None],
) -> None:
    """Update ``pk``'s entries for ``values`` (field -> text; None: absent) as of ``event_id``.

    ``target`` is a client, or a pipeline that queues the call. A pipeline sends the script's
    text (EVAL): a cluster pipeline cannot load a script on the nodes it will reach.
    """
    args = [pk, event_id]
    for field, value in values.items():
        args += [field, keys.members(field, ""), "" if value is None else value]
    script_keys = [keys.fields, *(keys.values(field) for field in values)]
    if isinstance(target, Pipeline | ClusterPipeline):
        target.eval(_UPDATE, len(script_keys), *script_keys, *args)
    else:
        await target.register_script(_UPDATE)(script_keys, args)


def field_index(
    model: ModelClass,
    *fields: str,
    name: str | None = None,
    start: Literal["now", "beginning"] = "beginning",
) -> Subscriber:
    """Return a subscriber keeping an index of ``model`` per field in ``fields``.

    Fields are names, dotted for fields of nested models (``"profile.email"``). ``name`` is
    the consumer group (default ``index:<prefix>:<field>:...``); ``start="beginning"`` indexes
    what the change feed still holds when the group is new (see `rebuild_index` for the rest).
    """
    if not fields:
        raise UsageError(f"field_index({model.__name__}): name at least one field")
    paths = {_dotted(path): path for path, _ in (_field(model, field) for field in fields)}
    keys = _keys(model)

    async def handle(change: Change) -> None:
        client = _client(model)
        values: dict[str, str | None] = {}
        for dotted, path in paths.items():
            found = _indexed_after(change, path)
            if found is _Effect.UNTOUCHED:
                continue
            if found is _Effect.READ:
                raw = await get_path(client, change.key, json_path(path))
                found = None if raw is None else value_text(loads(raw))
            values[dotted] = found
        if values:
            await _update(client, keys, change.pk, change.id, values)

    _DECLARED.setdefault(model, set()).update(paths)
    default = f"index:{model.__ss_meta__.keys.prefix}:{':'.join(paths)}"
    return Subscriber(
        handler=handle,
        models=(model,),
        name=name or _NOT_IN_NAME.sub("_", default),
        paths=tuple(paths.values()),
        start=start,
    )


async def rebuild_index(model: ModelClass, *fields: str) -> int:
    """Index the stored documents of ``model`` for ``fields`` (default: every indexed field).

    For an index added to existing data, or after the feed lost changes it never delivered.
    Safe while the subscriber runs: each document is indexed as of its stream's last event,
    which never replaces a newer value. Entries of instances whose document is gone (expired
    through ``Meta.ttl``, which writes no event) are removed. Returns the documents read.
    """
    client, keys = _client(model), _keys(model)
    if fields:
        paths = [_field(model, field)[0] for field in fields]
    else:
        recorded = {text(field) for field in await client.smembers(keys.fields)}
        paths = [
            _field(model, field)[0] for field in sorted(recorded | _DECLARED.get(model, set()))
        ]
        if not paths:
            raise UsageError(f"{model.__name__} has no field index to rebuild: name the fields")
    dotted = [_dotted(path) for path in paths]
    await client.sadd(keys.fields, *dotted)
    # Entries left from before this moment without a document are stale; a write after it has
    # a newer id, so removing the entry "as of" this moment never undoes that write.
    seconds, micros = await client.time()
    started = f"{seconds * 1000 + micros // 1000}-0"
    space = model.__ss_meta__.keys
    read = 0
    async for found in scan_keys(client, space.scan_pattern()):
        pks = [pk for key in found if (pk := space.pk_from_doc_key(key)) is not None]
        instances = [space.for_pk(pk) for pk in pks]
        heads = await read_heads(client, [(i.doc, i.stream) for i in instances], 1)
        async with client.pipeline(transaction=False) as pipe:
            for pk, head in zip(pks, heads, strict=True):
                if head.document is None:
                    continue  # gone since the scan: its `deleted` event is the subscriber's
                document = loads(head.document)
                last = text(head.entries[0].id) if head.entries else _OLDEST
                values = {
                    name: _text_at(document, path) for name, path in zip(dotted, paths, strict=True)
                }
                await _update(pipe, keys, pk, last, values)
                read += 1
            await pipe.execute()
    removed = sum([await _remove_stale(client, model, field, started) for field in dotted])
    get_logger().info(
        "index.rebuilt", model=model.__name__, fields=dotted, documents=read, removed=removed
    )
    return read


async def _remove_stale(client: Client, model: ModelClass, field: str, as_of: str) -> int:
    """Remove the entries of ``field`` whose document does not exist; return how many."""
    keys = _keys(model)

    async def remove_missing(pks: list[str]) -> int:
        exists = await existing(client, [model.key_for(pk) for pk in pks])
        missing = [pk for pk, found in zip(pks, exists, strict=True) if not found]
        for pk in missing:
            await _update(client, keys, pk, as_of, {field: None})
        return len(missing)

    removed, page = 0, []
    async for pk, _ in client.hscan_iter(keys.values(field), count=_PAGE):
        page.append(text(pk))
        if len(page) >= _PAGE:
            removed += await remove_missing(page)
            page = []
    return removed + (await remove_missing(page) if page else 0)


# --- reading -------------------------------------------------------------------------------


def _wanted(model: ModelClass, equals: Mapping[str, Any]) -> dict[str, str]:
    """Return the indexed text of each value asked for, checked by its field's type."""
    if not equals:
        raise UsageError(f"find_by({model.__name__}): name at least one field, e.g. email=...")
    wanted: dict[str, str] = {}
    for name, value in equals.items():
        path, codec = _field(model, name)
        try:
            valid = codec.validate(value)
        except FieldTypeError as exc:
            raise FieldTypeError(
                f"find_by {model.__name__}.{_dotted(path)}={value!r}: value must be {codec.name}"
            ) from exc.__cause__
        wanted[_dotted(path)] = value_text(loads(codec.dump_json(valid)))
    return wanted


async def _pks(model: ModelClass, wanted: Mapping[str, str]) -> set[str]:
    """Intersect the member sets of ``wanted``; `UsageError` if a field is not indexed."""
    client, keys = _client(model), _keys(model)
    fields = list(wanted)
    # Every key of a class's index shares one hash slot: one round trip, on a cluster too.
    recorded, found = await send(
        client,
        keys.fields,
        [
            ("SMISMEMBER", keys.fields, *fields),
            ("SINTER", *(keys.members(field, value) for field, value in wanted.items())),
        ],
    )
    for reply in (recorded, found):
        if isinstance(reply, Exception):
            raise reply
    declared = _DECLARED.get(model, set())
    missing = [
        f for f, known in zip(fields, recorded, strict=True) if not known and f not in declared
    ]
    if missing:
        field = missing[0]
        raise UsageError(
            f"{model.__name__}.{field} is not indexed: run field_index({model.__name__}, "
            f"{field!r}) in a Runner (and rebuild_index({model.__name__}, {field!r}) once for "
            "existing documents)"
        )
    return {text(pk) for pk in found}


async def find_pks(model: ModelClass, **equals: Any) -> set[str]:
    """Return the pks the index lists for every ``field=value`` given (dotted for nested).

    The index follows the change feed, so it may lag the documents by the subscriber's delay.
    `UsageError` for a field without an index; `FieldTypeError` for a value its field cannot hold.
    """
    return await _pks(model, _wanted(model, equals))


async def find_candidates(
    model: ModelClass, **equals: Any
) -> tuple[list[str], Callable[[JSON], bool]]:
    """Return the pks the index lists for every ``field=value`` given (sorted), and a check.

    The check tells whether a document (as ``redis_dump`` gives it) still holds every value:
    the index follows the change feed, so a listed instance may have changed since (see
    ``BaseRedisModel.find_by``, which loads the candidates and keeps those that pass).
    `UsageError` for a field without an index; `FieldTypeError` for a value its field cannot hold.
    """
    wanted = _wanted(model, equals)
    pks = sorted(await _pks(model, wanted))
    paths = {dotted: field_path(dotted) for dotted in wanted}

    def holds(document: JSON) -> bool:
        return all(_text_at(document, paths[field]) == text_ for field, text_ in wanted.items())

    return pks, holds
