"""Event metadata: who and why, carried by a contextvar into every event written."""

from __future__ import annotations

import datetime as dt
import json
import math
import uuid
from collections.abc import Mapping
from contextvars import ContextVar, Token
from types import MappingProxyType, TracebackType
from typing import Any

from streamstore.errors import ArgumentTypeError, ArgumentValueError
from streamstore.keys import check_text

__all__ = ["current_meta", "current_meta_json", "event_context"]

_EMPTY: MappingProxyType[str, Any] = MappingProxyType({})
_meta: ContextVar[tuple[MappingProxyType[str, Any], str]] = ContextVar(
    "streamstore_event_meta", default=(_EMPTY, "{}")
)

#: Integers metadata may hold: signed 64-bit, what JSON readers in most languages keep exact.
_INT_RANGE = (-(2**63), 2**63 - 1)


def current_meta() -> MappingProxyType[str, Any]:
    """Return the metadata that events written now will carry."""
    return _meta.get()[0]


def current_meta_json() -> str:
    """Return `current_meta` as the JSON text stored in the event's ``meta`` field."""
    return _meta.get()[1]


def _json_value(value: Any, where: str, seen: frozenset[int]) -> Any:  # noqa: PLR0911 (one return per kind)
    """Return ``value`` as plain JSON data, or refuse it naming ``where`` it sits.

    Strict JSON only: no NaN or infinity, str keys only (JSON would turn ``1`` or ``True``
    into ``"1"``/``"true"`` and tuple keys have no form), no cycles, UTF-8 text. Dates, times
    and UUIDs become their ISO 8601 / hex text, as in documents; nothing else is guessed at.
    """
    if value is None or isinstance(value, bool | str):
        return check_text(value, where) if isinstance(value, str) else value
    if isinstance(value, int):
        if not _INT_RANGE[0] <= value <= _INT_RANGE[1]:
            raise ArgumentValueError(f"{where}: {value} is outside signed 64 bits")
        return int(value)
    if isinstance(value, float):
        if not math.isfinite(value):
            raise ArgumentValueError(f"{where}: {value} has no JSON form")
        return float(value)
    if isinstance(value, dt.datetime | dt.date | dt.time):
        return value.isoformat()
    if isinstance(value, uuid.UUID):
        return str(value)
    if isinstance(value, Mapping | list | tuple):
        if id(value) in seen:
            raise ArgumentValueError(f"{where} contains itself: a cycle has no JSON form")
        inner = seen | {id(value)}
        if not isinstance(value, Mapping):
            return [_json_value(item, f"{where}[{i}]", inner) for i, item in enumerate(value)]
        plain = {}
        for key, item in value.items():
            if not isinstance(key, str):
                raise ArgumentTypeError(
                    f"{where}: key {key!r} is a {type(key).__name__}; JSON object keys are str"
                )
            plain[check_text(key, f"{where}: key")] = _json_value(item, f"{where}[{key!r}]", inner)
        return plain
    raise ArgumentTypeError(
        f"{where} is a {type(value).__name__}, which has no JSON form (use str, int, float, "
        "bool, None, lists and dicts of them, or a date, time or UUID)"
    )


class event_context:  # noqa: N801 (used like a function: `with event_context(actor="alice"):`)
    """Add metadata (``actor``, ``correlation_id``, anything JSON) to every event written inside.

    Works with ``with`` and ``async with``; nested contexts merge, the inner value winning.
    It rides on a contextvar, so concurrent asyncio tasks each keep their own. Values are
    checked here, when the context is made: anything without a strict JSON form is an
    `ArgumentTypeError` / `ArgumentValueError` before a single event is written.
    """

    def __init__(self, **meta: Any) -> None:
        """Check the metadata and remember it; it applies from ``__enter__`` on."""
        try:
            self._meta = {
                check_text(name, "event_context key"): _json_value(value, name, frozenset())
                for name, value in meta.items()
            }
        except RecursionError:
            raise ArgumentValueError("event_context: metadata nested too deep for JSON") from None
        self._token: Token[tuple[MappingProxyType[str, Any], str]] | None = None

    def __enter__(self) -> MappingProxyType[str, Any]:
        """Start adding the metadata; returns the merged metadata now in force."""
        merged = MappingProxyType({**current_meta(), **self._meta})
        self._token = _meta.set((merged, json.dumps(dict(merged), allow_nan=False)))
        return merged

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        """Restore the metadata in force before."""
        if self._token is not None:
            _meta.reset(self._token)
            self._token = None

    async def __aenter__(self) -> MappingProxyType[str, Any]:
        """Async form of `__enter__`."""
        return self.__enter__()

    async def __aexit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        """Async form of `__exit__`."""
        self.__exit__(exc_type, exc, tb)
