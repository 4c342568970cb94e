"""A model's history API: history, time travel, verify, rebuild, snapshots and compaction."""

from __future__ import annotations

import asyncio
import json
from collections.abc import AsyncIterator
from datetime import datetime
from typing import TYPE_CHECKING, Any, ClassVar, Self

from streamstore import operations as ops
from streamstore.errors import DocumentNotFoundError
from streamstore.projections.field_index import find_candidates
from streamstore.projections.history import HistoryQuery, field_path, read_history
from streamstore.projections.replay import Replayer, Report, Summary

if TYPE_CHECKING:
    from collections.abc import Sequence

    from pydantic.fields import FieldInfo

    from streamstore.connection import Client
    from streamstore.events import Event
    from streamstore.meta import ModelMeta
    from streamstore.operations import Op
    from streamstore.plan import Applied

__all__ = ["Timeline"]


#: Documents `Timeline.find_by` loads at once: enough to overlap round trips, few connections.
LOAD_CONCURRENCY = 50


class Timeline:
    """What `BaseRedisModel` offers from the read side: histories, replay, field indexes.

    The model API's one door to `streamstore.projections` (a mixin; see the docs). Reads go
    through the model's upcasters, so events written under an older schema come back as the
    current model sees them; ``history(raw=True)`` and `all_events` give them as stored.
    """

    __slots__ = ()

    if TYPE_CHECKING:  # what BaseRedisModel provides
        __ss_meta__: ClassVar[ModelMeta]
        __pydantic_fields__: ClassVar[dict[str, FieldInfo]]

        @property
        def pk(self) -> str: ...  # noqa: D102 (stubs of what BaseRedisModel defines)
        @property
        def stream_key(self) -> str: ...  # noqa: D102
        @classmethod
        def _ss_client(cls) -> Client: ...
        @classmethod
        def key_for(cls, pk: str) -> str: ...  # noqa: D102
        @classmethod
        def _ss_loaded(
            cls, document: str | bytes, pk: str, where: str, *, version: int | None = None
        ) -> Self: ...
        async def _ss_apply(self, batch: Sequence[Op], *, create: bool = True) -> Applied: ...
        def _ss_only_top_level(self, action: str) -> None: ...
        @classmethod
        async def get(cls, key: str) -> Self: ...  # noqa: D102
        def redis_dump(self) -> dict[str, Any]: ...  # noqa: D102

    @classmethod
    async def find_by(cls, **equals: Any) -> list[Self]:
        """Return the instances whose fields hold every value given: ``find_by(email=...)``.

        Nested fields by dotted name, ``**{"profile.email": ...}``. Reads the field indexes
        that `streamstore.projections.field_index` subscribers keep, then loads each candidate
        and checks it again: an instance deleted or changed since it was indexed is left out
        (one changed *to* the value appears once the subscriber has handled the change).
        `UsageError` for a field without an index; `FieldTypeError` for a value its field
        cannot hold.
        """
        pks, holds = await find_candidates(cls, **equals)
        found: list[Self] = []
        for start in range(0, len(pks), LOAD_CONCURRENCY):
            chunk = pks[start : start + LOAD_CONCURRENCY]
            loaded = await asyncio.gather(*(cls._ss_get_or_none(pk) for pk in chunk))
            found += [one for one in loaded if one is not None and holds(one.redis_dump())]
        return found

    @classmethod
    async def _ss_get_or_none(cls, pk: str) -> Self | None:
        try:
            return await cls.get(cls.key_for(pk))
        except DocumentNotFoundError:
            return None  # deleted or expired since it was indexed

    @classmethod
    def replayer(cls, client: Client | None = None) -> Replayer:
        """Return the class's `Replayer`: the read side the methods below use.

        It reads through ``client``, else the class's own client (``Meta.redis``) for this loop.
        """
        return Replayer.for_meta(cls.__ss_meta__, client)

    # --- one instance ------------------------------------------------------------------------

    async def history(
        self,
        *,
        start_seq: int | None = None,
        end_seq: int | None = None,
        since: datetime | None = None,
        until: datetime | None = None,
        path: str | Sequence[str] | None = None,
        limit: int | None = None,
        reverse: bool = False,
        raw: bool = False,
    ) -> list[Event]:
        """Return this instance's events, oldest first (newest first with ``reverse``).

        Every filter is inclusive and they combine: a seq range, a time range (aware
        datetimes), a field ``path`` (``"profile.skills"``: only events that touched that
        field, its parents or its children; ``await model.tags.history()`` is the short form),
        and a ``limit``. ``raw=True`` skips upcasting: events exactly as stored.
        """
        query = HistoryQuery(
            start_seq=start_seq,
            end_seq=end_seq,
            since=since,
            until=until,
            path=None if path is None else field_path(path),
            limit=limit,
            reverse=reverse,
        )
        upcast = None if raw else type(self).__ss_meta__.upcast
        return await read_history(self._ss_client(), self.stream_key, query, upcast)

    @classmethod
    async def as_of(cls, pk: str, *, seq: int | None = None, at: datetime | None = None) -> Self:
        """Return the instance ``pk`` exactly as it was after event ``seq``, or at time ``at``.

        Built by folding the stream (from the newest snapshot before that point), so a deleted
        instance can be read as of before its deletion. `DocumentNotFoundError` (a KeyError)
        if it did not exist then; `HistoryTrimmedError` if compaction removed what that needs.
        """
        document, last = await cls.replayer().state_at(pk, seq=seq, at=at)
        where = f"{cls.key_for(pk)} as of {f'seq {seq}' if at is None else at.isoformat()}"
        return cls._ss_loaded(json.dumps(document), pk, where, version=last)

    @classmethod
    async def verify(cls, pk: str) -> Report:
        """Compare the stored document of ``pk`` with the fold of its stream.

        `Report.equal` tells whether they match, `Report.differences` where they do not.
        """
        return await cls.replayer().verify(pk)

    @classmethod
    async def rebuild(cls, pk: str, *, dry_run: bool = False) -> Report:
        """Rewrite the document of ``pk`` from its stream where they differ; no events written.

        With ``dry_run`` only report. An instance without events is reported, never deleted.
        """
        return await cls.replayer().rebuild(pk, dry_run=dry_run)

    async def snapshot(self) -> None:
        """Write a ``snapshot`` event now (``Meta.snapshot_every`` writes them automatically)."""
        self._ss_only_top_level("snapshot")
        await self._ss_apply([ops.snapshot()], create=False)

    async def compact(self) -> int:
        """Delete this instance's events before its newest snapshot; return how many went.

        Replay, verify, rebuild and ``as_of`` from the snapshot on keep working; ``as_of`` a
        point before it raises `HistoryTrimmedError`. No snapshot: nothing is deleted.
        """
        self._ss_only_top_level("compact")
        return await type(self).replayer().compact(self.pk)

    # --- every instance ----------------------------------------------------------------------

    @classmethod
    async def verify_all(cls, *, batch: int = 100) -> Summary:
        """Verify every instance of the class, ``batch`` per round trip, in bounded memory.

        The summary counts all of them and keeps the reports of those that differ.
        """
        summary = Summary()
        async for report in cls.replayer().iter_verify(batch):
            summary.add(report)
        return summary

    @classmethod
    async def rebuild_all(cls, *, batch: int = 100, dry_run: bool = False) -> Summary:
        """Rebuild every instance of the class whose document differs from its stream."""
        summary = Summary()
        async for report in cls.replayer().iter_rebuild(batch, dry_run=dry_run):
            summary.add(report)
        return summary

    @classmethod
    async def compact_all(cls, *, batch: int = 100) -> int:
        """Compact every instance of the class; return how many events were deleted."""
        replayer = cls.replayer()
        removed = 0
        async for pks in replayer.instances(batch):
            for pk in pks:
                removed += await replayer.compact(pk)
        return removed

    @classmethod
    def all_events(cls, *, since: datetime | None = None) -> AsyncIterator[tuple[str, Event]]:
        """Iterate ``(pk, event)`` over every event of every instance, as stored.

        Instance after instance, each in seq order (the audit log; no order across instances).
        """
        return cls.replayer().iter_events(since=since)
