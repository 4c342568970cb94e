"""Table-style models: the seed libraries' insert, update, select and delete, as events.

`TableModel` is a `BaseRedisModel` whose records are addressed by a primary key field
(``_primary_key_field = "title"`` as in the seeds, or ``Meta.primary_key``) and handled a table
at a time, as in pydantic-redis and pydantic-aioredis. Every write is still an event in the
record's history: ``insert`` writes ``saved``, ``update`` writes ``set`` events, ``delete``
writes ``deleted``.
"""

from __future__ import annotations

import asyncio
import collections
import heapq
import sys
from collections.abc import AsyncIterator, Iterable, Sequence
from typing import Any, ClassVar, Self, cast

from streamstore import operations as ops
from streamstore.arguments import checked_int, checked_ttl
from streamstore.errors import ConfigurationError, UsageError
from streamstore.executor import list_members, run_plans
from streamstore.model import BaseRedisModel
from streamstore.plan import PERSIST
from streamstore.schema import field_codec

__all__ = ["TableModel"]

#: Members read from a partition's index per call when listing a whole table.
_PAGE = 1000


class TableModel(BaseRedisModel):
    """A model whose records have a primary key field and table-style class methods.

    ``delete`` here is the seeds' class method (``await Book.delete(ids=[...])``); the
    instance form of `BaseRedisModel` (``await book.delete()``) is not available on table models.
    """

    #: Set in a class body to make a base for table models that names no primary key itself.
    __ss_abstract__: ClassVar[bool] = False

    @classmethod
    def __pydantic_init_subclass__(cls, **kwargs: Any) -> None:
        """Require a primary key field, which names each record (not of abstract bases)."""
        super().__pydantic_init_subclass__(**kwargs)
        if cls.__ss_meta__.primary_key is None and not cls.__dict__.get("__ss_abstract__"):
            raise ConfigurationError(
                f"{cls.__name__}: name its primary key field, e.g. "
                "_primary_key_field: str = 'title' (or Meta.primary_key)"
            )

    @classmethod
    def get_primary_key_field(cls) -> str:
        """Return the name of the primary key field (the seeds' accessor)."""
        return cast("str", cls.__ss_meta__.primary_key)

    # --- writes -------------------------------------------------------------------------------

    @classmethod
    async def insert(
        cls, data: Self | Sequence[Self], life_span_seconds: int | None = None
    ) -> None:
        """Write one record or many (an upsert: each is a ``saved`` event), in one round trip.

        Each record's TTL becomes ``life_span_seconds``, else the store's life span; with
        neither, any TTL it had is removed. Each record is written atomically; with many, one
        may fail while others are written.
        """
        ttl = cls._ss_life_span(life_span_seconds)
        records = [data] if isinstance(data, TableModel) else list(data)
        if not all(isinstance(record, cls) for record in records):
            raise UsageError(f"{cls.__name__}.insert takes {cls.__name__} instances")
        if not records:
            return
        await cls._ss_write_each([(record, record._ss_save_op()) for record in records], ttl=ttl)

    @classmethod
    async def update(
        cls, _id: Any, data: dict[str, Any], life_span_seconds: int | None = None
    ) -> None:
        """Set some fields of the record ``_id`` (``set`` events, one atomic write).

        `DocumentNotFoundError` (a KeyError) if there is no such record: nothing is created.
        Its TTL becomes ``life_span_seconds``, else the store's life span, else none.
        """
        if not data:
            raise UsageError(f"{cls.__name__}.update needs at least one field to set")
        ttl = cls._ss_life_span(life_span_seconds)
        record = cls._ss_handle(str(_id))
        batch = []
        for name, value in data.items():
            if name == cls.__ss_meta__.primary_key:
                raise UsageError(f"{name!r} is the primary key of {cls.__name__}: it cannot change")
            codec = field_codec(cls, name)
            raw = codec.dump_json(codec.validate(value))
            batch.append(ops.set_value((name,), raw, readback=codec.may_hold_floats))
        await record._ss_apply(batch, create=False, ttl=ttl)

    @classmethod
    async def delete(cls, ids: Any | Sequence[Any] | None = None) -> int:  # type: ignore[override]  # (*)
        """Delete records (``deleted`` events): one id, a list of ids, or every record (None).

        Returns how many existed and were deleted; missing ids are not an error.
        (*) The seeds' class method; the instance ``delete()`` of other models is not offered.
        """
        pks = [pk async for pk in cls._ss_all_pks()] if ids is None else _ids(ids)
        deleted = 0
        for start in range(0, len(pks), _PAGE):
            chunk = pks[start : start + _PAGE]
            plans = [
                cls._ss_handle(pk)._ss_plan([ops.delete(if_exists=True)], create=False)
                for pk in chunk
            ]
            applied = await run_plans(cls._ss_client(), plans, cls.__ss_meta__.durability)
            deleted += sum(1 for result in applied if result.events)
        return deleted

    # --- reads --------------------------------------------------------------------------------

    @classmethod
    async def select(
        cls,
        columns: Sequence[str] | None = None,
        ids: Any | Sequence[Any] | None = None,
        skip: int | None = None,
        limit: int | None = None,
    ) -> list[Any]:
        """Return records: all of them in primary key order, or those of ``ids`` in that order.

        Every record in primary key order (by the key's text, byte by byte), so ``skip`` and
        ``limit`` page through a stable order; with ``ids``, in the order given, missing ones
        left out (and ``skip``/``limit`` apply to that list). ``columns`` gives dicts of just
        those fields instead of models. No record: ``[]``. Expired records never appear.
        """
        skip = None if skip is None else checked_int(skip, "skip", low=0, high=sys.maxsize)
        limit = None if limit is None else checked_int(limit, "limit", low=0, high=sys.maxsize)
        for column in columns or ():
            if column not in cls.__pydantic_fields__:
                raise UsageError(f"{cls.__name__} has no field {column!r}")
        start, stop = skip or 0, None if limit is None else (skip or 0) + limit
        if ids is not None:
            pks = _ids(ids)[start:stop]
        else:
            page = _PAGE if stop is None else max(1, min(_PAGE, stop))
            pks = [pk async for pk in _islice(cls._ss_all_pks(page), start, stop)]
        records = await cls._ss_load(pks)
        if columns is None:
            return records
        return [{column: record.__dict__[column] for column in columns} for record in records]

    @classmethod
    async def _ss_load(cls, pks: Sequence[str]) -> list[Self]:
        """Load records by pk in one round trip; the missing ones are left out."""
        if not pks:
            return []
        return await cls.get_many(pks)

    @classmethod
    async def _ss_all_pks(cls, page: int | None = None) -> AsyncIterator[str]:
        """Yield the pk of every live record in pk order: a merge of the partitions' indexes.

        Each partition is read ``page`` pks at a time, and only as far as the caller iterates:
        ``select(skip=s, limit=n)`` reads about s + n pks plus a page per partition.
        """
        keys = cls.__ss_meta__.keys
        client = cls._ss_client()
        size = page or _PAGE
        cursors = [_Cursor(client, *keys.listing(p), size) for p in range(keys.partitions)]
        firsts = await asyncio.gather(*(cursor.next() for cursor in cursors))
        heap = [(pk.encode(), i, pk) for i, pk in enumerate(firsts) if pk is not None]
        heapq.heapify(heap)
        while heap:
            _, i, pk = heapq.heappop(heap)
            yield pk
            following = await cursors[i].next()
            if following is not None:  # pk order is byte order, as in the indexes
                heapq.heappush(heap, (following.encode(), i, following))

    @classmethod
    def _ss_life_span(cls, seconds: int | None) -> int:
        """Return the TTL argument of an insert or update: given, the store's, or none."""
        if seconds is not None:
            return checked_ttl(seconds, "life_span_seconds")
        if cls.__ss_meta__.life_span is None:
            return PERSIST
        return cls.__ss_meta__.life_span


class _Cursor:
    """Reads one partition's index in pk order, a page per round trip, when asked for more."""

    def __init__(self, client: Any, index: str, expiry: str, page: int) -> None:
        self.client, self.index, self.expiry, self.page = client, index, expiry, page
        self.buffer: collections.deque[str] = collections.deque()
        self.after = ""
        self.done = False

    async def next(self) -> str | None:
        """Return the next pk of the partition, or None after the last."""
        if not self.buffer and not self.done:
            found = await list_members(
                self.client, self.index, self.expiry, after=self.after, count=self.page
            )
            self.buffer.extend(found)
            self.done = len(found) < self.page
            if found:
                self.after = found[-1]
        return self.buffer.popleft() if self.buffer else None


def _ids(ids: Any | Iterable[Any]) -> list[str]:
    """Return one id or several as pks (str)."""
    if isinstance(ids, str | bytes | int) or not isinstance(ids, Iterable):
        return [str(ids)]
    return [str(one) for one in ids]


async def _islice(source: AsyncIterator[str], start: int, stop: int | None) -> AsyncIterator[str]:
    """``itertools.islice`` for an async iterator."""
    index = 0
    async for item in source:
        if stop is not None and index >= stop:
            return
        if index >= start:
            yield item
        index += 1
