"""The fold: replay events into the JSON document they produce, in pure Python."""

from __future__ import annotations

import copy
from collections.abc import Iterable
from typing import Any

from streamstore.errors import CorruptEventError
from streamstore.events import Event, text
from streamstore.operations import OPERATIONS
from streamstore.paths import FieldPath, event_path

__all__ = ["apply_change", "apply_event", "fold", "fold_changes"]


def apply_event(document: Any, event: Event, *, copy_data: bool = True) -> Any:
    """Return the document after ``event``; ``document`` is None while the instance is absent.

    The document may be changed in place. Raises `CorruptEventError` when the event cannot
    apply (a field event while the instance is absent, or a path the document lacks): the
    write path never produces such a history. ``copy_data=False`` lets the document take
    over the event's data instead of a copy: for events nobody else holds (a fresh read).
    """
    data = copy.deepcopy(event.data) if copy_data else event.data
    return apply_change(document, event.type, event.field_path, data, where=event.id)


def apply_change(
    document: Any, kind: str, path: FieldPath, data: Any, *, where: str | bytes = ""
) -> Any:
    """Return the document after an event of type ``kind`` at ``path`` with ``data``.

    The one fold step behind `apply_event` and `fold_changes`; ``where`` names the event in
    errors. ``data`` may become part of the document.
    """
    operation = OPERATIONS.get(kind)
    if operation is None:
        raise CorruptEventError(f"event {text(where)} has unknown type {kind!r}")
    if document is None and not operation.whole_document:
        raise CorruptEventError(f"event {text(where)} ({kind}) applies to no document")
    try:
        return operation.fold(document, path, data)
    except (KeyError, IndexError, TypeError, AttributeError) as exc:
        raise CorruptEventError(
            f"event {text(where)} ({kind} at {event_path(path)}) does not apply: {exc!r}"
        ) from exc


def fold_changes(
    changes: Iterable[tuple[str, FieldPath, Any, str | bytes]], document: Any = None
) -> Any:
    """Replay ``(type, path, data, id)`` changes (`streamstore.events.Entry.change`) in order.

    The fast form of `fold` for entries read just now: no `Event` objects, no copies.
    """
    for kind, path, data, where in changes:
        document = apply_change(document, kind, path, data, where=where)
    return document


def fold(events: Iterable[Event], document: Any = None, *, copy_data: bool = True) -> Any:
    """Replay ``events`` in order, starting from ``document`` (None: no instance yet).

    ``copy_data=False``: see `apply_event`.
    """
    for event in events:
        document = apply_event(document, event, copy_data=copy_data)
    return document
