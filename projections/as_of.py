"""One instance's state at a point of its history: find the point, walk back, fold forward."""

from __future__ import annotations

from collections.abc import AsyncIterator
from datetime import datetime
from typing import TYPE_CHECKING

from streamstore.arguments import checked_count
from streamstore.errors import (
    ArgumentTypeError,
    CorruptEventError,
    DocumentNotFoundError,
    HistoryTrimmedError,
)
from streamstore.events import corrupt, in_stream, read_entry, text
from streamstore.executor import first_entry, iter_entries, read_range
from streamstore.operations import JSON
from streamstore.projections.fold import fold, fold_changes
from streamstore.projections.history import epoch_ms
from streamstore.projections.upcasting import Upcaster

if TYPE_CHECKING:
    from streamstore.connection import Client
    from streamstore.events import Entry
    from streamstore.keys import InstanceKeys

__all__ = ["PAGE", "check_start", "collect_back", "fold_entries", "replay_at"]

#: Events read per XRANGE page when walking a long stream.
PAGE = 1000


async def replay_at(
    client: Client,
    keys: InstanceKeys,
    *,
    seq: int | None = None,
    at: datetime | None = None,
    upcast: Upcaster | None = None,
    page: int = PAGE,
) -> tuple[JSON, int]:
    """Fold one instance's stream up to event ``seq`` or time ``at``; also return the last seq.

    Needs only the instance's keys (`streamstore.keys.instance_keys_of` makes them from a
    document key), not its model class. See `Replayer.as_of` for the errors; bad arguments
    (both or neither of ``seq`` and ``at``, a ``seq`` that is no int >= 0, an ``at`` that is
    no datetime) raise `ArgumentTypeError` or `ArgumentValueError` before anything is read.
    """
    if (seq is None) == (at is None):
        raise ArgumentTypeError("as_of() takes exactly one of seq= and at=")
    if seq is not None:
        seq = checked_count(seq, "seq")
    if at is not None and not isinstance(at, datetime):
        raise ArgumentTypeError(f"at must be a datetime, not {type(at).__name__} {at!r}")
    try:
        return await _replay_at(client, keys, seq=seq, at=at, upcast=upcast, page=page)
    except CorruptEventError as exc:
        raise in_stream(keys.stream, exc) from exc


async def _replay_at(
    client: Client,
    keys: InstanceKeys,
    *,
    seq: int | None,
    at: datetime | None,
    upcast: Upcaster | None,
    page: int,
) -> tuple[JSON, int]:
    end = str(epoch_ms(at)) if at is not None else await _end_at_seq(client, keys.stream, seq, page)
    target = f"seq {seq}" if at is None else at.isoformat()
    pages = iter_entries(client, keys.stream, end=end, reverse=True, page=page)
    entries, oldest = await collect_back(pages, keys.stream, keep_to=seq)
    if not entries:
        if oldest is None:  # nothing up to `at`: is the history there trimmed?
            first = await first_entry(client, keys.stream)
            oldest = None if first is None else first.seq
        if oldest is not None and oldest > 1:
            raise HistoryTrimmedError(
                f"{keys.stream}: events before seq {oldest} were compacted; "
                f"the state at {target} cannot be replayed"
            )
        raise DocumentNotFoundError(f"{keys.doc} did not exist at {target}")
    check_start(entries, keys.stream, target)
    document = fold_entries(entries, upcast)
    if document is None:
        raise DocumentNotFoundError(f"{keys.doc} did not exist at {target}")
    return document, entries[-1].seq


async def _end_at_seq(client: Client, stream: str, seq: int | None, page: int) -> str:
    """Return an id to read back from for the state at ``seq``: at or after its entry.

    Reading back from the newest entry costs a page per `PAGE` newer events; instead the
    entry is found by its id. Ids grow with seq, so each probe (the newest entry at or before
    a guessed time) narrows the range from one side: the guess is interpolated from the
    range's ends, and halves it where that made no headway (bursts written in one call share
    a millisecond). Once the entry is within ``page`` entries of the lower end, one forward
    read finds it. A few reads in all, whatever the history's length; ``+`` (read from the
    newest) where the search cannot help.
    """
    newest = await read_range(client, stream, "-", "+", 1, reverse=True)
    oldest = await read_range(client, stream, "-", "+", 1)
    if seq is None or not newest or not oldest:
        return "+"
    low, high = read_entry(*oldest[0]), read_entry(*newest[0])
    if seq >= high.seq or seq < low.seq:
        return "+"  # the newest state, or one compaction removed: the walk back says which
    # Every entry up to `floor` ms has a seq <= low.seq; the target's time is after it and at
    # or before high's. Each probe raises `floor` or lowers `high`: the loop ends.
    floor, halve = _id_ms(low.id), False
    for _ in range(_PROBES):
        if seq - low.seq < page or _id_ms(high.id) - floor <= 1:
            break  # near enough to read forward (or one millisecond holds the rest)
        top = _id_ms(high.id)
        share = (seq - low.seq) / (high.seq - low.seq)
        guess = (floor + top) // 2 if halve else floor + int(share * (top - floor))
        guess = min(max(guess, floor + 1), top - 1)
        (found,) = await read_range(
            client, stream, "-", f"{guess}-{_LAST_ID_PART}", 1, reverse=True
        )
        probe = read_entry(*found)
        if probe.seq == seq:
            return text(probe.id)
        span = high.seq - low.seq
        if probe.seq > seq:
            high, halve = probe, _far(probe.seq - seq, span)
        else:
            halve = probe.seq == low.seq or _far(seq - probe.seq, span)
            low, floor = probe, guess
    # The entry is near ``low`` (or within one millisecond): read forward just up to it.
    wanted = min(seq - low.seq + 1, PAGE)  # one read, a burst in one millisecond included
    async for entries in iter_entries(client, stream, start=text(low.id), page=wanted):
        for entry in entries:
            if entry.seq >= seq:
                return text(entry.id)
    return "+"


#: Most probes `_end_at_seq` makes: bisecting a millisecond range of 2**48 takes 48.
_PROBES = 64
_LAST_ID_PART = "18446744073709551615"


def _id_ms(entry_id: str | bytes) -> int:
    return int(text(entry_id).partition("-")[0])


def _far(left: int, span: int) -> bool:
    """Tell whether a probe left more than half the range: halve it next (no headway)."""
    return left * 2 > span


def fold_entries(entries: list[Entry], upcast: Upcaster | None) -> JSON:
    """Fold entries read just now (the document may take over their data).

    With upcasters they are decoded into events first (upcasters work on events); without,
    only their type, path and data are decoded.
    """
    if upcast is not None:
        events = (upcast(entry.event()) for entry in entries)
        return fold((event for event in events if event is not None), copy_data=False)
    return fold_changes(entry.change() for entry in entries)


async def collect_back(
    pages: AsyncIterator[list[Entry]], stream: str, *, keep_to: int | None = None
) -> tuple[list[Entry], int | None]:
    """Walk a stream newest first, gathering entries back to the newest whole-document one.

    ``keep_to`` skips entries with a higher seq. Returns the entries oldest first and the seq
    of the oldest entry seen (None: none). Raises `CorruptEventError` on a gap in seq.
    """
    kept: list[Entry] = []
    expected: int | None = None
    async for page in pages:
        for entry in page:
            if expected is not None and entry.seq != expected:
                raise in_stream(
                    stream,
                    corrupt(
                        entry.id,
                        f"seq {entry.seq} comes before seq {expected + 1} (a gap in the "
                        "history, a seq out of order, or compaction ran while it was read)",
                    ),
                )
            expected = entry.seq - 1
            if keep_to is not None and entry.seq > keep_to:
                continue
            kept.append(entry)
            if entry.whole_document:
                kept.reverse()
                return kept, entry.seq
    kept.reverse()
    return kept, None if expected is None else expected + 1


def check_start(entries: list[Entry], stream: str, target: str) -> None:
    """Refuse to fold entries that do not start at a whole-document event."""
    first = entries[0]
    if first.whole_document:
        return
    if first.seq > 1:
        raise HistoryTrimmedError(
            f"{stream}: events before seq {first.seq} were removed and no snapshot follows; "
            f"the state at {target} cannot be replayed"
        )
    raise in_stream(
        stream, corrupt(first.id, f"the history starts with {first.type}, not a saved event")
    )
