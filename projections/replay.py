"""Replay: documents rebuilt from streams, verified against them, read as of a point, compacted."""

from __future__ import annotations

import dataclasses
import json
import math
from collections.abc import AsyncIterator, Callable, Iterator
from dataclasses import dataclass
from datetime import datetime
from typing import TYPE_CHECKING, Any

from streamstore.arguments import checked_count
from streamstore.connection import resolve_client
from streamstore.errors import (
    ArgumentTypeError,
    ConcurrencyError,
    CorruptEventError,
    DocumentNotFoundError,
    HistoryTrimmedError,
    StoredDataError,
    UnsafeKeyError,
)
from streamstore.events import corrupt, in_stream, loads, read_entry, text
from streamstore.executor import (
    Head,
    existing,
    first_entry,
    iter_entries,
    put_document,
    read_head,
    read_heads,
    read_range,
    scan_keys,
    trim_before,
)
from streamstore.operations import JSON
from streamstore.projections.diff import (
    JsonPath,
    differences,
    pointer,
    redisjson_path,
    render_path,
)
from streamstore.projections.fold import fold, fold_changes
from streamstore.projections.history import epoch_ms, iter_stream
from streamstore.projections.upcasting import Upcaster

if TYPE_CHECKING:
    from streamstore.connection import Client
    from streamstore.events import Entry, Event
    from streamstore.keys import InstanceKeys, KeySpace
    from streamstore.meta import ModelMeta

__all__ = ["Replayer", "Report", "Summary", "replay_at"]

#: Events read per XRANGE page when walking a long stream.
PAGE = 1000
#: Newest events read together with each document in class-wide batches: enough for most
#: instances (or their last snapshot) in one call; longer histories are paged on their own.
BATCH_HEAD = 64
#: How often `rebuild` re-reads and tries again when writers keep moving the stream.
REBUILD_ATTEMPTS = 3
#: How many damaged instances the error after an `iter_events` walk names.
_LISTED = 10

NO_HISTORY = (
    "no history: the document has no events (written by other means, or its stream was deleted)"
)


@dataclass(frozen=True, slots=True)
class Report:
    """What `verify` or `rebuild` found for one instance."""

    key: str
    pk: str
    #: The last seq of the instance's stream (0: no events).
    seq: int
    #: How many events were folded (from the newest whole-document event on).
    replayed: int
    #: Where the stored document and the fold differ, e.g. ``("$.tags[2]",)``; ``$``: all of it.
    differences: tuple[str, ...] = ()
    #: Why the history could not be replayed at all (then the document was left alone).
    problem: str | None = None
    #: Whether `rebuild` wrote the document.
    rewritten: bool = False
    #: Whether the problem is an entry that cannot be read or applied (written by another
    #: program, or damaged); ``problem`` names its stream and id and says what is wrong.
    corrupt: bool = False

    @property
    def equal(self) -> bool:
        """Tell whether the stored document is exactly what the stream folds to."""
        return not self.differences and self.problem is None


@dataclass(slots=True)
class Summary:
    """Totals of a class-wide `verify_all` / `rebuild_all`; ``reports`` keeps the unequal ones."""

    instances: int = 0
    equal: int = 0
    rewritten: int = 0
    events: int = 0
    #: Instances whose history holds an entry that cannot be read or applied.
    corrupt: int = 0
    reports: list[Report] = dataclasses.field(default_factory=list)

    def add(self, report: Report) -> None:
        """Count one instance's report."""
        self.instances += 1
        self.events += report.replayed
        self.rewritten += report.rewritten
        self.corrupt += report.corrupt
        if report.equal:
            self.equal += 1
        else:
            self.reports.append(report)


@dataclass(frozen=True, slots=True)
class _Latest:
    """An instance's stored document next to what its stream folds to."""

    document: JSON
    folded: JSON
    seq: int
    replayed: int
    problem: str | None = None
    corrupt: bool = False


_ABSENT: Any = object()  # no document stored (None is a stored JSON null)


class Replayer:
    """The read side of one model class: its keys, its client and how to upcast its events."""

    def __init__(
        self,
        client: Client,
        keys: KeySpace,
        upcast: Upcaster | None = None,
        *,
        head: int = BATCH_HEAD,
        page: int = PAGE,
    ) -> None:
        """Replay instances of the class whose keys are ``keys``, reading through ``client``.

        ``page``: entries `as_of` reads a time walking back to a whole-document event.
        """
        self.client = client
        self.keys = keys
        self.upcast = upcast
        self.head = head
        self.page = page

    @classmethod
    def for_meta(cls, meta: ModelMeta, client: Client | None = None) -> Replayer:
        """Return the replayer of the class whose options are ``meta``.

        It reads through ``client``, else the class's own client (``Meta.redis``) for this loop.
        With ``Meta.snapshot_every``, `as_of` walks back in pages of about two snapshot periods
        (a snapshot is that close, but for bursts written in one call), not of `PAGE` entries.
        """
        every = meta.snapshot_every
        page = min(PAGE, 2 * (every + 1)) if every else PAGE
        return cls(client or resolve_client(meta.redis), meta.keys, meta.upcast, page=page)

    # --- one instance ------------------------------------------------------------------------

    async def as_of(self, pk: str, *, seq: int | None = None, at: datetime | None = None) -> JSON:
        """Return the document as it was after event ``seq``, or at time ``at`` (inclusive).

        `DocumentNotFoundError` if the instance did not exist then, `HistoryTrimmedError` if
        compaction removed the events needed.
        """
        document, _ = await self.state_at(pk, seq=seq, at=at)
        return document

    async def state_at(
        self, pk: str, *, seq: int | None = None, at: datetime | None = None
    ) -> tuple[JSON, int]:
        """Return `as_of`'s document and the seq of the last event it folded."""
        return await replay_at(
            self.client, self.keys.for_pk(pk), seq=seq, at=at, upcast=self.upcast, page=self.page
        )

    async def verify(self, pk: str) -> Report:
        """Compare the stored document with the fold of its stream.

        A history that cannot be replayed (none at all, a gap, trimmed, an entry that cannot be
        read or applied) is no error here: the report says so in ``problem``.
        """
        keys = self.keys.for_pk(pk)
        return self._report(keys, pk, await self._latest(keys))

    async def rebuild(self, pk: str, *, dry_run: bool = False) -> Report:
        """Rewrite the stored document from its stream if they differ (not with ``dry_run``).

        The write happens only if no event was added since the read (else it reads again, up to
        `REBUILD_ATTEMPTS` times, then `ConcurrencyError`). An instance without events is
        reported and left alone: its document is not deleted.
        """
        keys = self.keys.for_pk(pk)
        latest = await self._latest(keys)
        for _ in range(REBUILD_ATTEMPTS):
            report = self._report(keys, pk, latest)
            if report.equal or report.problem or dry_run:
                return report
            try:
                await self._write(keys, latest)
            except ConcurrencyError:
                latest = await self._latest(keys)
                continue
            return dataclasses.replace(report, rewritten=True)
        raise ConcurrencyError(f"{keys.doc} kept changing while being rebuilt")

    async def compact(self, pk: str) -> int:
        """Delete the events before the newest ``snapshot`` event; return how many went."""
        stream = self.keys.for_pk(pk).stream
        async for page in iter_entries(self.client, stream, reverse=True, page=PAGE):
            for entry in page:
                if entry.type == "snapshot":
                    return await trim_before(self.client, stream, text(entry.id))
        return 0

    # --- every instance of the class, in batches ---------------------------------------------

    async def instances(self, batch: int = 100) -> AsyncIterator[list[str]]:
        """Yield the pks of every instance, ``batch`` at a time, with bounded memory.

        An instance is anything with a stream or a document under the class's keys. SCAN may
        yield a pk twice if the keyspace is resized meanwhile.
        """
        found: list[str] = []
        async for keys in scan_keys(self.client, self.keys.scan_pattern()):
            documents = []
            for key in keys:
                pk = self.keys.pk_from_stream_key(key)
                if pk is not None:
                    found.append(pk)
                elif (pk := self.keys.pk_from_doc_key(key)) is not None:
                    documents.append(pk)
            found += await self._without_stream(documents)
            while len(found) >= batch:
                yield found[:batch]
                del found[:batch]
        if found:
            yield found

    async def iter_verify(self, batch: int = 100) -> AsyncIterator[Report]:
        """Yield a `verify` report for every instance; one round trip per batch, mostly."""
        async for report in self._walk(batch):
            yield report

    async def iter_rebuild(
        self, batch: int = 100, *, dry_run: bool = False
    ) -> AsyncIterator[Report]:
        """Yield a `rebuild` report for every instance (writing only those that differ)."""
        async for report in self._walk(batch):
            if report.equal or report.problem or dry_run:
                yield report
                continue
            try:
                rebuilt = await self.rebuild(report.pk)
            except ConcurrencyError as exc:  # one busy instance must not stop the walk
                rebuilt = dataclasses.replace(report, problem=str(exc))
            yield rebuilt

    async def _walk(self, batch: int) -> AsyncIterator[Report]:
        """Verify every instance, a batch of heads per round trip.

        An instance gone between the scan and the read (expired, deleted by hand) is skipped.
        """
        async for pks in self.instances(batch):
            for pk, keys, head in await self._heads(pks):
                try:
                    latest = await self._latest(keys, head)
                except DocumentNotFoundError:
                    continue
                yield self._report(keys, pk, latest)

    async def _heads(self, pks: list[str]) -> list[tuple[str, InstanceKeys, Head | None]]:
        """Read the heads of ``pks`` in one round trip.

        If one of them holds an entry that cannot be read, the batch is read again one
        instance at a time: that one gets None (`_latest` reads and reports it on its own).
        """
        keys = [self.keys.for_pk(pk) for pk in pks]
        try:
            heads: list[Head | None] = list(
                await read_heads(self.client, [(k.doc, k.stream) for k in keys], self.head)
            )
        except CorruptEventError:
            heads = [None] * len(keys)
        return list(zip(pks, keys, heads, strict=True))

    async def iter_events(
        self,
        *,
        since: datetime | None = None,
        batch: int = 100,
        on_corrupt: Callable[[str, CorruptEventError], None] | None = None,
    ) -> AsyncIterator[tuple[str, Event]]:
        """Yield ``(pk, event)`` for every event of every instance, as stored (not upcast).

        Instance by instance, each in seq order; ``since`` skips events written before it.
        An instance whose stream holds an entry that cannot be read (or a seq out of order)
        yields its events up to that entry, then the walk goes on with the next instance:
        ``on_corrupt(pk, error)`` is called for it, or without ``on_corrupt`` one
        `CorruptEventError` naming every such instance is raised once the walk is done.
        """
        start = "-" if since is None else f"{epoch_ms(since)}-0"
        damaged: list[CorruptEventError] = []
        async for pks in self.instances(batch):
            for pk in pks:
                stream = self.keys.for_pk(pk).stream
                try:
                    async for page in iter_stream(self.client, stream, start=start, page=PAGE):
                        for event in page:
                            yield pk, event
                except CorruptEventError as exc:
                    if on_corrupt is None:
                        damaged.append(exc)
                    else:
                        on_corrupt(pk, exc)
        if damaged:
            listed = "; ".join(str(exc) for exc in damaged[:_LISTED])
            more = f"; and {len(damaged) - _LISTED} more" if len(damaged) > _LISTED else ""
            raise CorruptEventError(
                f"{len(damaged)} {self.keys.prefix} instance(s) have an entry that cannot be "
                f"read (their events up to it were given; every other instance's in full): "
                f"{listed}{more}"
            )

    # --- internals ---------------------------------------------------------------------------

    async def _without_stream(self, pks: list[str]) -> list[str]:
        """Return those of ``pks`` whose document has no stream (seen only as documents)."""
        if not pks:
            return []
        found = await existing(self.client, [self.keys.for_pk(pk).stream for pk in pks])
        return [pk for pk, exists in zip(pks, found, strict=True) if not exists]

    async def _latest(self, keys: InstanceKeys, head: Head | None = None) -> _Latest:
        """Read the stored document and fold its stream from the newest whole-document event.

        Starts from ``head`` (the document and newest entries, read together; read here when
        not given) and pages further back only if the head holds no whole-document event.
        """
        if head is None:
            try:
                head = await read_head(self.client, keys.doc, keys.stream, self.head)
            except CorruptEventError as exc:  # among the newest entries
                return _Latest(_ABSENT, _ABSENT, 0, 0, str(in_stream(keys.stream, exc)), True)
        document = _ABSENT if head.document is None else loads(head.document)
        if not head.entries:
            if document is _ABSENT:
                raise DocumentNotFoundError(f"{keys.doc} does not exist and has no history")
            return _Latest(document, _ABSENT, 0, 0, NO_HISTORY)
        seq = head.entries[0].seq
        try:
            entries, _ = await _collect_back(self._pages_after(keys.stream, head), keys.stream)
            _check_start(entries, keys.stream, "its last event")
            folded = _fold(entries, self.upcast)
        except CorruptEventError as exc:
            return _Latest(document, _ABSENT, seq, 0, str(in_stream(keys.stream, exc)), True)
        except (StoredDataError, HistoryTrimmedError) as exc:
            return _Latest(document, _ABSENT, seq, 0, str(exc))
        return _Latest(document, _ABSENT if folded is None else folded, seq, len(entries))

    async def _pages_after(self, stream: str, head: Head) -> AsyncIterator[list[Entry]]:
        """Yield the head's entries, then older pages if the head was full."""
        yield head.entries
        if len(head.entries) == self.head:
            end = f"({text(head.entries[-1].id)}"
            async for page in iter_entries(self.client, stream, end=end, reverse=True, page=PAGE):
                yield page

    def _report(self, keys: InstanceKeys, pk: str, latest: _Latest) -> Report:
        found = [render_path(path) for path in _differences(latest.document, latest.folded)]
        return Report(
            key=keys.doc,
            pk=pk,
            seq=latest.seq,
            replayed=latest.replayed,
            differences=tuple(found),
            problem=latest.problem,
            corrupt=latest.corrupt,
        )

    async def _write(self, keys: InstanceKeys, latest: _Latest) -> None:
        """Store the fold as the document, exactly.

        RedisJSON's number parser lands some doubles one unit in the last place away from the
        text it reads (about 10% of arbitrary doubles; everyday decimals are exact). Each float
        that comes back different is written again in other texts (see `_float_texts`) until
        the parser lands on the intended value.
        """
        seq = latest.seq
        if latest.folded is _ABSENT:
            await put_document(
                self.client, keys.doc, keys.stream, expected_seq=seq, path="$", value=""
            )
            return
        wanted = latest.folded
        stored = await put_document(
            self.client, keys.doc, keys.stream, expected_seq=seq, path="$", value=json.dumps(wanted)
        )
        for path in list(differences(json.loads(stored or "[null]")[0], wanted)):
            value = pointer(wanted, path)
            if not isinstance(value, float):
                raise StoredDataError(
                    f"{keys.doc}: RedisJSON stored {render_path(path)} differently"
                )
            await self._put_float(keys, seq, path, value)

    async def _put_float(self, keys: InstanceKeys, seq: int, path: JsonPath, wanted: float) -> None:
        try:
            target = redisjson_path(path)
        except UnsafeKeyError as exc:
            raise StoredDataError(
                f"{keys.doc}: cannot rewrite {render_path(path)}: {exc}"
            ) from None
        for candidate in _float_texts(wanted):
            stored = await put_document(
                self.client,
                keys.doc,
                keys.stream,
                expected_seq=seq,
                path=target,
                value=candidate,
            )
            found = json.loads(stored or "[]")
            if found and isinstance(found[0], float) and found[0] == wanted:
                return
        raise StoredDataError(
            f"{keys.doc}: RedisJSON cannot store {wanted!r} at {render_path(path)}"
        )


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
    entries, oldest = await _collect_back(pages, keys.stream, keep_to=seq)
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
    _check_start(entries, keys.stream, target)
    document = _fold(entries, upcast)
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
    wanted = min(seq - low.seq + 1, page)
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


def _fold(entries: list[Entry], upcast: Upcaster | None) -> JSON:
    """Fold entries read just now (the document may take over their data).

    With upcasters they are decoded into events first (upcasters work on events); without,
    only their type, path and data are decoded.
    """
    if upcast is not None:
        events = (upcast(entry.event()) for entry in entries)
        return fold((event for event in events if event is not None), copy_data=False)
    return fold_changes(entry.change() for entry in entries)


def _differences(document: JSON, folded: JSON) -> Iterator[Any]:
    if document is _ABSENT or folded is _ABSENT:
        if document is not folded:
            yield ()
        return
    yield from differences(document, folded)


def _float_texts(value: float, reach: int = 3) -> Iterator[str]:
    """Yield texts to try for storing ``value`` exactly in RedisJSON, likeliest first.

    Its parser takes a long form (``%.20e``) exactly more often than the shortest one; where
    neither lands on ``value``, the text of a neighbouring double does (measured on random
    doubles: at most four tries).
    """
    yield f"{value:.20e}"
    up = down = value
    for _ in range(reach):
        up, down = math.nextafter(up, math.inf), math.nextafter(down, -math.inf)
        for near in (up, down):
            yield repr(near)
            yield f"{near:.20e}"


async def _collect_back(
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


def _check_start(entries: list[Entry], stream: str, target: str) -> None:
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
