"""The fold: replay events into the JSON document they produce, in pure Python."""

from __future__ import annotations

import copy
from collections.abc import Iterable
from typing import Any

from streamstore.errors import CorruptEventError
from streamstore.events import Event
from streamstore.operations import OPERATIONS

__all__ = ["apply_event", "fold"]


def apply_event(document: Any, event: Event, *, copy_data: bool = True) -> Any:
    """Return the document after ``event``; ``document`` is None while the instance is absent.

    The document may be changed in place. Raises `CorruptEventError` when the event cannot
    apply (a field event while the instance is absent, or a path the document lacks): the
    write path never produces such a history. ``copy_data=False`` lets the document take
    over the event's data instead of a copy: for events nobody else holds (a fresh read).
    """
    operation = OPERATIONS.get(event.type)
    if operation is None:
        raise CorruptEventError(f"event {event.id} has unknown type {event.type!r}")
    if document is None and not operation.whole_document:
        raise CorruptEventError(f"event {event.id} ({event.type}) applies to no document")
    try:
        data = copy.deepcopy(event.data) if copy_data else event.data
        return operation.fold(document, event.field_path, data)
    except (KeyError, IndexError, TypeError, AttributeError) as exc:
        raise CorruptEventError(
            f"event {event.id} ({event.type} at {event.path}) does not apply: {exc!r}"
        ) from exc


def fold(events: Iterable[Event], document: Any = None, *, copy_data: bool = True) -> Any:
    """Replay ``events`` in order, starting from ``document`` (None: no instance yet).

    ``copy_data=False``: see `apply_event`.
    """
    for event in events:
        document = apply_event(document, event, copy_data=copy_data)
    return document
