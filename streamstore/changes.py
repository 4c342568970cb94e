"""Changes: the field-level operations that turn a model's snapshot into its current state."""

from __future__ import annotations

import json
from typing import TYPE_CHECKING, Any

from streamstore import operations as ops
from streamstore import paths
from streamstore.enabled import RedisEnabledModel
from streamstore.errors import UnsafeKeyError

if TYPE_CHECKING:
    from streamstore.operations import Op

__all__ = ["changes_since"]


def _text(value: Any) -> str:
    """Canonical JSON text: tells 1 from 1.0 from True, ignores key order."""
    return json.dumps(value, sort_keys=True)


def changes_since(model: RedisEnabledModel, before: dict[str, Any]) -> list[Op]:
    """Return the operations that take ``before`` (the model's JSON form then) to its state now.

    Unchanged fields give nothing; nested models are compared field by field; a list that only
    grew at its end gives ``list.extend``; a dict gives ``dict.update`` for new and changed keys
    and ``dict.del_item`` for removed ones; anything else is a ``set`` of the whole field. So a
    lock holder's changes land as events a reader can follow, not as one opaque ``saved``.
    """
    found: list[Op] = []
    for name in type(model).__pydantic_fields__:
        value = model.__dict__[name]
        codec = model._ss_codec(name)
        raw = codec.dump_json(value)
        new = json.loads(raw)
        old = before.get(name)
        if name in before and _text(old) == _text(new):
            continue
        path = model._ss_locate(name)[1]
        if isinstance(value, RedisEnabledModel) and isinstance(old, dict):
            found += changes_since(value, old)
        elif isinstance(old, list) and isinstance(new, list) and _grew(old, new):
            readback = model._ss_container_codecs(name).item.may_hold_floats
            added = [json.dumps(item) for item in new[len(old) :]]
            found.append(ops.list_extend(path, added, readback=readback))
        elif (
            isinstance(old, dict)
            and isinstance(new, dict)
            and not isinstance(value, RedisEnabledModel)
        ):
            found += _dict_changes(model, name, path, old, new) or [
                ops.set_value(path, raw, readback=codec.may_hold_floats)
            ]
        else:
            found.append(ops.set_value(path, raw, readback=codec.may_hold_floats))
    return found


def _grew(old: list[Any], new: list[Any]) -> bool:
    return len(new) > len(old) and _text(new[: len(old)]) == _text(old)


def _dict_changes(
    model: RedisEnabledModel,
    name: str,
    path: paths.FieldPath,
    old: dict[str, Any],
    new: dict[str, Any],
) -> list[Op]:
    """Per-key operations for a dict field; empty when a key cannot be addressed one by one."""
    readback = model._ss_container_codecs(name).item.may_hold_floats
    updated = [
        (k, json.dumps(v)) for k, v in new.items() if k not in old or _text(old[k]) != _text(v)
    ]
    removed = [k for k in old if k not in new]
    try:
        found = [ops.dict_update(path, updated, readback=readback)] if updated else []
        found += [ops.dict_del_item(path, key) for key in removed]
    except UnsafeKeyError:
        return []
    return found
