"""Replay: documents rebuilt from streams, verified against them, read as of a point, compacted."""

from __future__ import annotations

import dataclasses
import json
import math
from collections.abc import AsyncIterator, Callable, Iterator
from dataclasses import dataclass
from datetime import datetime
from typing import TYPE_CHECKING, Any

from streamstore.connection import resolve_client
from streamstore.errors import (
    ConcurrencyError,
    CorruptEventError,
    DocumentNotFoundError,
    HistoryTrimmedError,
    StoredDataError,
    UnsafeKeyError,
)
from streamstore.events import in_stream, loads, text
from streamstore.executor import (
    Head,
    existing,
    iter_entries,
    put_document,
    read_head,
    read_heads,
    scan_keys,
    trim_before,
)
from streamstore.operations import JSON
from streamstore.projections.as_of import PAGE, check_start, collect_back, fold_entries, replay_at
from streamstore.projections.diff import (
    JsonPath,
    differences,
    pointer,
    redisjson_path,
    render_path,
)
from streamstore.projections.history import epoch_ms, iter_stream
from streamstore.projections.upcasting import Upcaster

if TYPE_CHECKING:
    from streamstore.connection import Client
    from streamstore.events import Entry, Event
    from streamstore.keys import InstanceKeys, KeySpace
    from streamstore.meta import ModelMeta

__all__ = ["Replayer", "Report", "Summary"]

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
            entries, _ = await collect_back(self._pages_after(keys.stream, head), keys.stream)
            check_start(entries, keys.stream, "its last event")
            folded = fold_entries(entries, self.upcast)
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
