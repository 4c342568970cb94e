"""History queries: which events of one instance stream a caller asked for, and reading them."""

from __future__ import annotations

from collections.abc import AsyncIterator, Sequence
from dataclasses import dataclass
from datetime import datetime
from typing import TYPE_CHECKING

from streamstore.errors import CorruptEventError, UsageError
from streamstore.events import corrupt, decode_entry, in_stream, text
from streamstore.executor import read_range
from streamstore.paths import FieldPath
from streamstore.projections.upcasting import Upcaster

if TYPE_CHECKING:
    from streamstore.connection import Client
    from streamstore.events import Event

__all__ = [
    "HistoryQuery",
    "epoch_ms",
    "field_path",
    "iter_history",
    "iter_stream",
    "read_history",
]

_PAGE = 1000


def field_path(path: str | Sequence[str]) -> FieldPath:
    """Read a field path given as ``"profile.skills"``, ``"$.profile.skills"`` or a tuple."""
    if isinstance(path, str):
        if path in ("", "$"):
            return ()
        parts = tuple(path.removeprefix("$.").split("."))
    else:
        parts = tuple(path)
    if not all(isinstance(part, str) and part for part in parts):
        raise UsageError(f"bad field path {path!r} (use 'name' or 'profile.skills')")
    return parts


def epoch_ms(moment: datetime) -> int:
    """Return an aware datetime as epoch milliseconds (the time part of stream ids)."""
    if moment.tzinfo is None or moment.utcoffset() is None:
        raise UsageError(
            f"{moment!r} has no timezone: pass an aware datetime, e.g. with tzinfo=UTC"
        )
    return int(moment.timestamp() * 1000)


@dataclass(frozen=True, slots=True)
class HistoryQuery:
    """What `history()` filters on; every bound is inclusive, and all given bounds apply."""

    #: Lowest and highest seq wanted.
    start_seq: int | None = None
    end_seq: int | None = None
    #: Earliest and latest write time wanted (aware datetimes; millisecond precision).
    since: datetime | None = None
    until: datetime | None = None
    #: Only events that touched this field (see `Event.touches`).
    path: FieldPath | None = None
    #: At most this many events (the first ones in the order asked for).
    limit: int | None = None
    #: Newest first.
    reverse: bool = False

    def __post_init__(self) -> None:
        """Refuse bounds that cannot be meant (negative limits, naive datetimes)."""
        if self.limit is not None and self.limit < 0:
            raise UsageError(f"limit must be >= 0, not {self.limit}")
        for moment in (self.since, self.until):
            if moment is not None:
                epoch_ms(moment)

    def id_range(self) -> tuple[str, str]:
        """Return the stream id range (XRANGE start, end) that the time bounds select."""
        start = "-" if self.since is None else f"{epoch_ms(self.since)}-0"
        end = "+" if self.until is None else str(epoch_ms(self.until))
        return start, end

    def wanted(self, event: Event) -> bool:
        """Tell whether ``event`` passes the seq and path filters."""
        if self.start_seq is not None and event.seq < self.start_seq:
            return False
        if self.end_seq is not None and event.seq > self.end_seq:
            return False
        return self.path is None or event.touches(self.path)

    def past_the_end(self, event: Event) -> bool:
        """Tell whether no event after ``event`` (in reading order) can pass the seq filter."""
        if self.reverse:
            return self.start_seq is not None and event.seq < self.start_seq
        return self.end_seq is not None and event.seq > self.end_seq


async def iter_history(
    client: Client, stream: str, query: HistoryQuery, upcast: Upcaster | None = None
) -> AsyncIterator[Event]:
    """Yield the events of ``stream`` that ``query`` selects, in its order, a page at a time.

    With ``upcast``, events are read as the current model schema sees them (before the path
    filter, so a renamed field's old events match its new name); events it drops are skipped.
    """
    if query.limit == 0:
        return
    start, end = query.id_range()
    page = min(_PAGE, query.limit) if query.limit and query.path is None else _PAGE
    count = 0
    async for events in iter_stream(
        client, stream, start=start, end=end, reverse=query.reverse, page=page
    ):
        for raw in events:
            if query.past_the_end(raw):
                return
            event = raw if upcast is None else upcast(raw)
            if event is None or not query.wanted(event):
                continue
            yield event
            count += 1
            if count == query.limit:
                return


async def read_history(
    client: Client, stream: str, query: HistoryQuery, upcast: Upcaster | None = None
) -> list[Event]:
    """Return the events `iter_history` yields, as a list."""
    return [event async for event in iter_history(client, stream, query, upcast)]


async def iter_stream(
    client: Client,
    stream: str,
    *,
    start: str = "-",
    end: str = "+",
    reverse: bool = False,
    page: int = _PAGE,
) -> AsyncIterator[list[Event]]:
    """Yield the events of ``stream`` between ids ``start`` and ``end`` (inclusive), by pages.

    Oldest first, or newest first with ``reverse``. Every entry is checked as it is decoded,
    and so is the order: each seq must follow the one before it (one more, or one less when
    reading backwards). At the first entry that fails, the events before it are yielded, then
    `CorruptEventError` names the stream, the entry and what is wrong.
    """
    step = -1 if reverse else 1
    low, high = start, end
    previous: int | None = None
    while True:
        reply = await read_range(client, stream, low, high, page, reverse=reverse)
        events: list[Event] = []
        error: CorruptEventError | None = None
        try:
            for entry_id, fields in reply:
                event = decode_entry(entry_id, fields)
                if previous is not None and event.seq != previous + step:
                    raise corrupt(
                        entry_id,
                        f"seq {event.seq} comes {'before' if reverse else 'after'} seq "
                        f"{previous} (a gap in the history, or a seq out of order)",
                    )
                previous = event.seq
                events.append(event)
        except CorruptEventError as exc:
            error = in_stream(stream, exc)
            error.__cause__ = exc
        if events:
            yield events
        if error is not None:
            raise error
        if len(reply) < page:
            return
        last = f"({text(reply[-1][0])}"
        if reverse:
            high = last
        else:
            low = last
