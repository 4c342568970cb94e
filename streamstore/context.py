"""Event metadata: who and why, carried by a contextvar into every event written."""

from __future__ import annotations

import json
from contextvars import ContextVar, Token
from types import MappingProxyType, TracebackType
from typing import Any

__all__ = ["current_meta", "current_meta_json", "event_context"]

_EMPTY: MappingProxyType[str, Any] = MappingProxyType({})
_meta: ContextVar[tuple[MappingProxyType[str, Any], str]] = ContextVar(
    "streamstore_event_meta", default=(_EMPTY, "{}")
)


def current_meta() -> MappingProxyType[str, Any]:
    """Return the metadata that events written now will carry."""
    return _meta.get()[0]


def current_meta_json() -> str:
    """Return `current_meta` as the JSON text stored in the event's ``meta`` field."""
    return _meta.get()[1]


class event_context:  # noqa: N801 (used like a function: `with event_context(actor="alice"):`)
    """Add metadata (``actor``, ``correlation_id``, anything JSON) to every event written inside.

    Works with ``with`` and ``async with``; nested contexts merge, the inner value winning.
    It rides on a contextvar, so concurrent asyncio tasks each keep their own.
    """

    def __init__(self, **meta: Any) -> None:
        """Remember the metadata; it applies from ``__enter__`` on."""
        self._meta = meta
        self._token: Token[tuple[MappingProxyType[str, Any], str]] | None = None

    def __enter__(self) -> MappingProxyType[str, Any]:
        """Start adding the metadata; returns the merged metadata now in force."""
        merged = MappingProxyType({**current_meta(), **self._meta})
        self._token = _meta.set((merged, json.dumps(dict(merged), default=str)))
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
