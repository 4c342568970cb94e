"""Subscribers: which changes a service consumes and the handler that consumes them."""

from __future__ import annotations

import dataclasses
import re
from collections.abc import Awaitable, Callable, Iterable, Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, Literal

from streamstore.errors import ConfigurationError
from streamstore.events import Event
from streamstore.projections.history import field_path

if TYPE_CHECKING:
    from streamstore.meta import ModelClass
    from streamstore.paths import FieldPath

__all__ = ["Change", "Handler", "Subscriber", "change_of", "subscriber"]


@dataclass(frozen=True, slots=True)
class Change(Event):
    """An event as a subscriber's handler gets it: the `Event`, and whose it is.

    It is the same event `history()` returns (upcast to the model's current schema), with
    the model class, the instance's pk, and delivery details.
    """

    #: The model class the event belongs to.
    model: ModelClass | None = None
    #: The instance's primary key.
    pk: str = ""
    #: The change feed entry this delivery came from (not the instance stream's ``id``).
    feed_id: str = ""
    #: How many times this event has been delivered to the group (1 the first time).
    deliveries: int = 1

    @property
    def key(self) -> str:
        """Return the instance's document key."""
        if self.model is None:
            return ""
        return self.model.key_for(self.pk)


#: What a subscriber runs for each change; it must not return before the change is handled.
Handler = Callable[[Change], Awaitable[None]]

_EVENT_FIELDS = tuple(field.name for field in dataclasses.fields(Event))


def change_of(
    event: Event,
    model: ModelClass,
    pk: str,
    *,
    feed_id: str = "",
    deliveries: int = 1,
) -> Change | None:
    """Return ``event`` of instance ``pk`` as a `Change`, upcast to the model's schema.

    None when an upcaster drops it (it means nothing under the current schema).
    """
    upcast = model.__ss_meta__.upcast
    current = event if upcast is None else upcast(event)
    if current is None:
        return None
    own = {name: getattr(current, name) for name in _EVENT_FIELDS}
    return Change(**own, model=model, pk=pk, feed_id=feed_id, deliveries=deliveries)


_NAME = re.compile(r"^[A-Za-z0-9_.:-]+$")
_NOT_IN_NAME = re.compile(r"[^A-Za-z0-9_.:-]")


@dataclass(frozen=True)
class Subscriber:
    """A handler and what it consumes: model classes, and optionally event types and fields.

    ``name`` is the Redis consumer group: processes running the same subscriber share its work,
    and subscribers with different names each see every change. Make them with `subscriber`.
    """

    handler: Handler
    models: tuple[ModelClass, ...]
    name: str
    #: Only events of these types reach the handler (None: all); the rest are acknowledged.
    types: frozenset[str] | None = None
    #: Only events that touched one of these fields reach the handler (None: all).
    paths: tuple[FieldPath, ...] | None = None
    #: After this many failed deliveries an event goes to the dead-letter stream.
    max_deliveries: int = 5
    #: Seconds before the first retry of a failed handler; doubled for each next one.
    retry_delay: float = 0.05
    #: Where a new group starts: "now" (only changes written after) or "beginning" (the whole
    #: retained feed).
    start: Literal["now", "beginning"] = "now"
    #: Skip changes whose handling already completed once (see `Subscriber.dedupe`).
    dedupe: bool = False

    def __post_init__(self) -> None:
        """Check the settings once, when the subscriber is made."""
        where = f"subscriber {self.name!r}"
        if not _NAME.match(self.name):
            raise ConfigurationError(f"{where}: a name may hold letters, digits and _.:- only")
        if not self.models:
            raise ConfigurationError(f"{where}: subscribe to at least one model class")
        if self.max_deliveries < 1:
            raise ConfigurationError(f"{where}: max_deliveries must be >= 1")
        if self.start not in ("now", "beginning"):
            raise ConfigurationError(f"{where}: start must be 'now' or 'beginning'")

    def wants(self, change: Event) -> bool:
        """Tell whether ``change`` passes the type and field filters."""
        if self.types is not None and change.type not in self.types:
            return False
        return self.paths is None or any(change.touches(path) for path in self.paths)

    def with_options(self, **changes: Any) -> Subscriber:
        """Return a copy with some settings changed (e.g. ``start="beginning"``)."""
        return dataclasses.replace(self, **changes)


def subscriber(
    *models: ModelClass,
    name: str | None = None,
    types: Iterable[str] | None = None,
    paths: Iterable[str | Sequence[str]] | None = None,
    max_deliveries: int = 5,
    retry_delay: float = 0.05,
    start: Literal["now", "beginning"] = "now",
    dedupe: bool = False,
) -> Callable[[Handler], Subscriber]:
    """Make a `Subscriber` of an ``async def handle(change)`` function (a decorator).

    ``@subscriber(User, Order, types={"saved"}, paths=["email"])``; the name (the consumer
    group) defaults to the handler's module and name.
    """

    def make(handler: Handler) -> Subscriber:
        return Subscriber(
            handler=handler,
            models=tuple(models),
            name=name or _NOT_IN_NAME.sub("_", f"{handler.__module__}.{handler.__qualname__}"),
            types=None if types is None else frozenset(types),
            paths=None if paths is None else tuple(field_path(path) for path in paths),
            max_deliveries=max_deliveries,
            retry_delay=retry_delay,
            start=start,
            dedupe=dedupe,
        )

    return make
