"""Automatic saving: pydantic-aioredis's ``_auto_save``, ``_auto_sync`` and ``update()`` block.

`AutoSaving` is a `TableModel` that can write on its own: with ``_auto_save`` a record is
inserted when it is constructed, with ``_auto_sync`` an attribute assignment is written as a
``set`` event. Both are off by default and on in `AutoModel`; set them per class (``_auto_save:
bool = True``), per instance (``Book(..., _auto_save=False)``) or later (``set_auto_save()``).

Construction and assignment are synchronous, so these writes run as tasks of the running event
loop. Reads of the class (``select``, ``get``) and ``Model.flush()`` first wait for the class's
pending writes, so a process always reads what it wrote; a write that failed in the background
raises there (and is logged), never silently lost.
"""

from __future__ import annotations

import asyncio
import contextlib
import weakref
from collections.abc import AsyncIterator, Callable
from typing import Any, ClassVar, Self

from pydantic import PrivateAttr

from streamstore import operations as ops
from streamstore._logging import get_logger
from streamstore.changes import changes_since
from streamstore.errors import UsageError
from streamstore.table import TableModel

__all__ = ["AutoModel", "AutoSaving"]

_SETTINGS = ("_auto_save", "_auto_sync")


class _Pending:
    """A class's background writes, and the first error among them not yet reported."""

    def __init__(self) -> None:
        self.tasks: set[asyncio.Task[Any]] = set()
        self.error: BaseException | None = None


_pending: weakref.WeakKeyDictionary[type[Any], _Pending] = weakref.WeakKeyDictionary()


class _ClassOrInstance:
    """One name, two methods: the class's and the instance's.

    ``Book.update(_id=...)`` (pydantic-redis) and ``async with book.update():``
    (pydantic-aioredis) both keep working on one model.
    """

    def __init__(self, on_class: Callable[..., Any], on_instance: Callable[..., Any]) -> None:
        """Keep the two (undecorated functions or classmethod objects)."""
        self.on_class = on_class
        self.on_instance = on_instance

    def __get__(self, instance: Any, owner: type[Any]) -> Any:
        """Return the class's method on the class, the instance's on an instance."""
        if instance is None:
            return self.on_class.__get__(owner, owner)
        return self.on_instance.__get__(instance, owner)


class AutoSaving(TableModel):
    """A table model that saves itself on construction and syncs assignments, when told to."""

    _auto_save: bool = PrivateAttr(default=False)
    _auto_sync: bool = PrivateAttr(default=False)

    # Bookkeeping outside pydantic's private attributes, which `==` compares: whether an
    # update() block is open, and the latest background write (each waits for the one before,
    # so writes of one instance reach Redis in the order they were made).
    __slots__ = ("_ss_batching", "_ss_last_write")

    __ss_abstract__: ClassVar[bool] = True

    def __init__(self, **data: Any) -> None:
        """Validate ``data``; ``_auto_save`` / ``_auto_sync`` keywords override the class's."""
        overrides = {name: data.pop(name) for name in _SETTINGS if name in data}
        super().__init__(**data)
        for name, value in overrides.items():
            setattr(self, name, bool(value))
        if self._auto_save:
            self._ss_background(type(self).insert(self))

    # Pydantic calls a model's own __init__ from model_validate too (for loaded records, as_of,
    # rollbacks). Only construction in code may save, so it is marked as pydantic's own kind of
    # __init__, which validation skips.
    __init__.__pydantic_base_init__ = True  # type: ignore[attr-defined]

    def set_auto_save(self, auto_save: bool = True) -> None:
        """Change this instance's ``_auto_save`` (it only matters at construction)."""
        self._auto_save = auto_save

    def set_auto_sync(self, auto_sync: bool = True) -> None:
        """Change this instance's ``_auto_sync``: whether assignments are written."""
        self._auto_sync = auto_sync

    def __setattr__(self, name: str, value: Any) -> None:
        """Assign; with ``_auto_sync`` (outside an ``update()`` block) write it as a ``set``."""
        if name not in type(self).__pydantic_fields__:
            super().__setattr__(name, value)
            return
        codec = self._ss_codec(name)
        valid = codec.validate(value)  # a bad value raises here: nothing assigned or written
        super().__setattr__(name, valid)
        if self._auto_sync and not getattr(self, "_ss_batching", False):
            raw = codec.dump_json(valid)
            op = ops.set_value((name,), raw, readback=codec.may_hold_floats)
            self._ss_background(self._ss_apply([op]))  # saves the record first if Redis has none

    @contextlib.asynccontextmanager
    async def _batch(self) -> AsyncIterator[Self]:
        """Hold assignments back, then write what changed in one atomic step at the end.

        If the block raises, nothing is written and the fields go back to what they were.
        """
        before = self.redis_dump()
        object.__setattr__(self, "_ss_batching", True)
        try:
            yield self
        except BaseException:
            self._ss_restore(before)
            raise
        finally:
            object.__setattr__(self, "_ss_batching", False)
        found = changes_since(self, before)
        previous = getattr(self, "_ss_last_write", None)
        if previous is not None:  # this instance's earlier writes land first
            await asyncio.gather(previous, return_exceptions=True)  # (flush reports failures)
        if found:
            await self._ss_apply(found, create=False)

    @classmethod
    async def _update_record(
        cls, _id: Any, data: dict[str, Any], life_span_seconds: int | None = None
    ) -> None:
        """`TableModel.update`, after this class's pending automatic writes."""
        await cls.flush()
        await TableModel.__dict__["update"].__func__(cls, _id, data, life_span_seconds)

    update: ClassVar[Any] = _ClassOrInstance(_update_record, _batch)

    # --- background writes -------------------------------------------------------------------

    def _ss_background(self, write: Any) -> None:
        """Run ``write`` (a coroutine) as a task; the class's reads wait for it."""
        try:
            loop = asyncio.get_running_loop()
        except RuntimeError:
            write.close()
            raise UsageError(
                f"{type(self).__name__}: automatic saving writes in the running event loop; "
                "make or change this model inside async code, or turn _auto_save/_auto_sync off"
            ) from None
        pending = _pending.setdefault(type(self), _Pending())
        previous = getattr(self, "_ss_last_write", None)

        async def in_order() -> None:
            if previous is not None:
                with contextlib.suppress(BaseException):  # its own callback reports it
                    await previous
            await write

        task = loop.create_task(in_order())
        object.__setattr__(self, "_ss_last_write", task)
        pending.tasks.add(task)
        task.add_done_callback(lambda done: _finished(pending, done, type(self).__name__))

    @classmethod
    async def flush(cls) -> None:
        """Wait for this class's automatic writes; raise the first that failed, if any."""
        pending = _pending.get(cls)
        if pending is None:
            return
        while pending.tasks:
            await asyncio.gather(*pending.tasks, return_exceptions=True)
        error, pending.error = pending.error, None
        if error is not None:
            raise error

    @classmethod
    async def select(cls, *args: Any, **kwargs: Any) -> list[Any]:
        """`TableModel.select`, after this class's pending automatic writes."""
        await cls.flush()
        return await super().select(*args, **kwargs)

    @classmethod
    async def delete(cls, ids: Any = None) -> int:  # type: ignore[override]  # (see TableModel)
        """`TableModel.delete`, after this class's pending automatic writes."""
        await cls.flush()
        return await super().delete(ids)

    @classmethod
    async def get(cls, key: str) -> Self:
        """`BaseRedisModel.get`, after this class's pending automatic writes."""
        await cls.flush()
        return await super().get(key)


def _finished(pending: _Pending, task: asyncio.Task[Any], model: str) -> None:
    """Forget a finished write; keep its error for the next flush, and log it."""
    pending.tasks.discard(task)
    if task.cancelled():
        return
    error = task.exception()
    if error is not None:
        if pending.error is None:
            pending.error = error
        get_logger().error("autosave.failed", model=model, error=repr(error))


class AutoModel(AutoSaving):
    """pydantic-aioredis's ``AutoModel``: saved on construction, assignments synced."""

    _auto_save: bool = PrivateAttr(default=True)
    _auto_sync: bool = PrivateAttr(default=True)
    __ss_abstract__: ClassVar[bool] = True
