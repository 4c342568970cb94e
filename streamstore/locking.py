"""Pessimistic locking: ``async with model.lock():`` holds a Redis lock around a read-change-write."""

from __future__ import annotations

import contextlib
from typing import TYPE_CHECKING, Any, Self, cast

from redis.exceptions import LockError

from streamstore.changes import changes_since
from streamstore.errors import LockTimeoutError

if TYPE_CHECKING:
    from collections.abc import AsyncIterator, Sequence

    from streamstore.connection import Client
    from streamstore.enabled import RedisEnabledModel
    from streamstore.operations import Op
    from streamstore.plan import Applied

__all__ = ["Locking"]


class Locking:
    """What `BaseRedisModel` offers to lock an instance (a mixin; see docs/transactions.md)."""

    __slots__ = ()

    if TYPE_CHECKING:  # what BaseRedisModel provides

        @property
        def key(self) -> str: ...  # noqa: D102 (stubs of what BaseRedisModel defines)
        @property
        def version(self) -> int | None: ...  # noqa: D102
        @classmethod
        def _ss_client(cls) -> Client: ...
        @classmethod
        def _ss_handle(cls, pk: str) -> Self: ...
        @classmethod
        def _pk_of(cls, key: str) -> str: ...
        async def refresh(self) -> Self: ...  # noqa: D102
        def redis_dump(self) -> dict[str, Any]: ...  # noqa: D102
        def _ss_restore(self, before: dict[str, Any]) -> None: ...
        def _ss_only_top_level(self, action: str) -> None: ...
        async def _ss_apply(
            self, batch: Sequence[Op], *, create: bool = True, expected_seq: int | None = None
        ) -> Applied: ...

    @contextlib.asynccontextmanager
    async def lock(
        self,
        action: str = "default",
        *,
        timeout: float = 10.0,  # noqa: ASYNC109 (the lock's expiry, as the seed names it)
        blocking_timeout: float = 10.0,
    ) -> AsyncIterator[Self]:
        """Hold a Redis lock on this instance, work on fresh data, write the changes on exit.

        The lock lives at ``{model.key}/{action}`` with a token and an expiry of ``timeout``
        seconds, so a holder that dies releases it by expiry. On entry the model is refreshed
        from Redis; on a normal exit what changed is written as field-level events (``set``,
        ``list.extend``, ``dict.update``, ``dict.del_item``) in one atomic step, which fails with
        `ConcurrencyError` if anyone wrote meanwhile (a writer that does not take the lock, or
        a holder whose lock expired). If the block raises, nothing is written and the local
        model goes back to what was read on entry. `LockTimeoutError` if the lock stays taken
        for ``blocking_timeout`` seconds.
        """
        self._ss_only_top_level("lock")
        lock = self._ss_client().lock(
            f"{self.key}/{action}", timeout=timeout, blocking_timeout=blocking_timeout
        )
        if not await lock.acquire():
            raise LockTimeoutError(f"{self.key}/{action} is held by someone else")
        try:
            await self.refresh()
            version, before = self.version, self.redis_dump()
            try:
                yield self
            except BaseException:
                self._ss_restore(before)
                raise
            found = changes_since(cast("RedisEnabledModel", self), before)  # a BaseRedisModel
            if found:
                await self._ss_apply(found, create=False, expected_seq=version)
        finally:
            with contextlib.suppress(LockError):  # expired: our write was guarded by version
                await lock.release()

    @classmethod
    @contextlib.asynccontextmanager
    async def lock_from_key(
        cls,
        key: str,
        action: str = "default",
        *,
        timeout: float = 10.0,  # noqa: ASYNC109 (see lock)
        blocking_timeout: float = 10.0,
    ) -> AsyncIterator[Self]:
        """Load the instance at ``key`` and hold its lock (see `lock`)."""
        model = cls._ss_handle(cls._pk_of(key))
        async with model.lock(action, timeout=timeout, blocking_timeout=blocking_timeout):
            yield model
