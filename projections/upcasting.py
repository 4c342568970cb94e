"""Upcasters: read events written under an older model schema as the current model's events.

Pure. Each event records the ``Meta.schema_version`` of the model that wrote it (``mv``). A model
whose schema changed bumps its version and says, per old version, how an event of that version
becomes one of the next: ``Meta.upcasters = {1: rename_field("name", "full_name")}``. Replay,
``as_of``, ``verify``, ``rebuild`` and ``history()`` read every event through the chain, so old
events fold into documents of the current shape. Stored events are never rewritten.
"""

from __future__ import annotations

import copy
import dataclasses
from collections.abc import Callable, Mapping, Sequence
from typing import Any, TypeAlias

from streamstore.errors import ConfigurationError
from streamstore.events import Event
from streamstore.operations import JSON, OPERATIONS
from streamstore.paths import FieldPath, event_path

__all__ = [
    "Upcaster",
    "UpcasterChain",
    "add_field",
    "remove_field",
    "rename_field",
]

#: Turns an event of one model version into the same event under the next version, or None
#: when the event means nothing under the new schema (it is then left out of replay).
Upcaster: TypeAlias = Callable[[Event], Event | None]


class UpcasterChain:
    """The upcasters of one model class, validated once; call it on an event to upcast it."""

    __slots__ = ("steps", "version")

    def __init__(
        self, version: int, upcasters: Mapping[int, Upcaster | Sequence[Upcaster]], owner: str
    ) -> None:
        """Check ``upcasters`` (keys are the versions they read, 1 .. version-1)."""
        if not isinstance(version, int) or isinstance(version, bool) or version < 1:
            raise ConfigurationError(f"{owner}: Meta.schema_version must be an int >= 1")
        steps: dict[int, tuple[Upcaster, ...]] = {}
        for old, found in upcasters.items():
            if not isinstance(old, int) or not 1 <= old < version:
                raise ConfigurationError(
                    f"{owner}: Meta.upcasters key {old!r} must be a schema version from 1 to "
                    f"{version - 1} (the version of the events it reads)"
                )
            chain = tuple(found) if isinstance(found, Sequence) else (found,)
            if not all(callable(step) for step in chain):
                raise ConfigurationError(f"{owner}: Meta.upcasters[{old}] must be callable")
            steps[old] = chain
        self.version = version
        self.steps = steps

    def __call__(self, event: Event) -> Event | None:
        """Return ``event`` as the current model version reads it (None: it has no effect)."""
        current: Event | None = event
        for old in range(event.model_version, self.version):
            for step in self.steps.get(old, ()):
                if current is None:
                    return None
                current = step(current)
            if current is None:
                return None
            current = dataclasses.replace(current, model_version=old + 1)
        return current

    @property
    def is_identity(self) -> bool:
        """Tell whether no event ever changes (no upcaster registered)."""
        return not self.steps


def _split(dotted: str) -> FieldPath:
    path = tuple(dotted.removeprefix("$.").split("."))
    if not all(path):
        raise ConfigurationError(f"bad field path {dotted!r} (use 'name' or 'profile.name')")
    return path


def _documents(event: Event) -> tuple[JSON, Callable[[JSON], JSON]] | None:
    """Return the whole document an event carries and how to put a changed one back."""
    if not OPERATIONS[event.type].whole_document or event.type == "deleted":
        return None
    if event.type == "saved":
        return event.data, lambda doc: doc
    return event.data["document"], lambda doc: {**event.data, "document": doc}


def _edited(value: JSON, names: FieldPath, edit: Callable[[dict[str, JSON]], None]) -> JSON:
    """Return a copy of ``value`` with ``edit`` applied to the object at ``names[:-1]`` in it."""
    value = copy.deepcopy(value)
    parent = value
    for name in names[:-1]:
        parent = parent.get(name) if isinstance(parent, dict) else None
    if isinstance(parent, dict):
        edit(parent)
    return value


def _edit_document(event: Event, edit: Callable[[dict[str, JSON]], None], path: FieldPath) -> Event:
    """Apply ``edit`` to the object holding the field at ``path`` in a whole-document event."""
    found = _documents(event)
    if found is None:
        return event
    document, rewrap = found
    return dataclasses.replace(event, data=rewrap(_edited(document, path, edit)))


def _edit_value(event: Event, edit: Callable[[dict[str, JSON]], None], path: FieldPath) -> Event:
    """For a ``set`` of an ancestor of ``path``: apply ``edit`` inside the value it sets."""
    if event.type != "set":
        return event
    value = _edited(event.data["value"], path[len(event.field_path) :], edit)
    return dataclasses.replace(event, data={**event.data, "value": value})


def _field_upcaster(
    path: FieldPath,
    edit: Callable[[dict[str, JSON]], None],
    on_field: Callable[[Event, FieldPath], Event | None],
) -> Upcaster:
    """Return an upcaster that changes one model field wherever an event mentions it.

    Whole-document events get ``edit`` on their document; a ``set`` of an ancestor gets it on
    its value; an event on the field itself or inside it goes to ``on_field``.
    """

    def upcast(event: Event) -> Event | None:
        mine = event.field_path
        if not mine:
            return _edit_document(event, edit, path)
        if mine[: len(path)] == path:
            return on_field(event, mine)
        if path[: len(mine)] == mine:
            return _edit_value(event, edit, path)
        return event

    return upcast


def rename_field(old: str, new: str) -> Upcaster:
    """Upcaster for a field renamed from ``old`` to ``new`` (dotted paths, same parent).

    ``rename_field("name", "full_name")``, ``rename_field("profile.nick", "profile.nickname")``.
    Covers model fields reached by field names from the root; fields inside list items or dict
    values need an upcaster of your own.
    """
    old_path, new_path = _split(old), _split(new)
    if old_path[:-1] != new_path[:-1]:
        raise ConfigurationError(f"rename_field({old!r}, {new!r}): both must share a parent")
    last_old, last_new = old_path[-1], new_path[-1]

    def edit(parent: dict[str, JSON]) -> None:
        if last_old in parent:
            # Keep the document's key order: the renamed field stays where it was.
            items = [(last_new if k == last_old else k, v) for k, v in parent.items()]
            parent.clear()
            parent.update(items)

    def on_field(event: Event, mine: FieldPath) -> Event:
        return dataclasses.replace(event, path=event_path(new_path + mine[len(old_path) :]))

    return _field_upcaster(old_path, edit, on_field)


def add_field(name: str, default: Any) -> Upcaster:
    """Upcaster for a field added with ``default``: old documents get it when replayed.

    Not needed for pydantic to load old documents (it fills defaults itself), but it makes
    replayed documents equal to what a ``save()`` of the new model writes.
    """
    path = _split(name)
    last = path[-1]

    def edit(parent: dict[str, JSON]) -> None:
        parent.setdefault(last, copy.deepcopy(default))

    return _field_upcaster(path, edit, lambda event, _: event)


def remove_field(name: str) -> Upcaster:
    """Upcaster for a removed field: dropped from documents; events on it leave replay."""
    path = _split(name)
    last = path[-1]

    def edit(parent: dict[str, JSON]) -> None:
        parent.pop(last, None)

    return _field_upcaster(path, edit, lambda _event, _path: None)
