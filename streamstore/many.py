"""Many instances at once: get_many and save_many, one round trip per server."""

from __future__ import annotations

from typing import TYPE_CHECKING, ClassVar, Self, cast

from streamstore.arguments import checked_ttl
from streamstore.errors import DurabilityError, UsageError
from streamstore.executor import get_documents, run_each
from streamstore.keys import check_text
from streamstore.pipeline import active_pipeline
from streamstore.plan import Applied

if TYPE_CHECKING:
    from collections.abc import Iterable, Sequence

    from streamstore.connection import Client
    from streamstore.meta import ModelMeta
    from streamstore.operations import Op
    from streamstore.plan import Plan

__all__ = ["ManyAtOnce"]


class ManyAtOnce:
    """What `BaseRedisModel` offers on many instances at once (a mixin; see docs/models.md)."""

    __slots__ = ()

    if TYPE_CHECKING:  # what BaseRedisModel provides
        __ss_meta__: ClassVar[ModelMeta]

        @classmethod
        def key_for(cls, pk: str) -> str: ...  # noqa: D102 (stubs of what BaseRedisModel defines)
        @classmethod
        def _ss_client(cls) -> Client: ...
        @classmethod
        def _ss_loaded(
            cls, document: str | bytes, pk: str, where: str, *, version: int | None = None
        ) -> Self: ...
        async def save(  # noqa: D102
            self, *, expected_version: int | None = None, ttl: int | None = None
        ) -> Self: ...
        def _ss_save_op(self) -> Op: ...
        def _ss_only_top_level(self, action: str, message: str | None = None) -> None: ...
        def _ss_plan(
            self,
            batch: Sequence[Op],
            *,
            create: bool,
            expected_seq: int | None = None,
            ttl: int | None = None,
        ) -> Plan: ...
        def _ss_applied(self, applied: Applied) -> None: ...
        def _ss_keep_stored(self, op: Op, applied: Applied) -> None: ...

    @classmethod
    async def get_many(cls, pks: Iterable[str]) -> list[Self]:
        """Load the instances ``pks`` that exist, in the order given (the missing are left out).

        One JSON.MGET per hash slot, those of a server in one round trip: far cheaper than a
        `get` each. Each document is read as of its own moment, not all at one instant.
        """
        wanted = [check_text(pk, "pk") for pk in pks]
        keys = [cls.key_for(pk) for pk in wanted]
        found = await get_documents(cls._ss_client(), keys)
        return [
            cls._ss_loaded(raw, pk, key)
            for pk, key, raw in zip(wanted, keys, found, strict=True)
            if raw is not None
        ]

    @classmethod
    async def save_many(cls, models: Iterable[Self], *, ttl: int | None = None) -> list[Self]:
        """Write each model whole (a ``saved`` event each) in one round trip per server.

        Each write is atomic on its own, not all together: if one is refused, the others are
        written and the first refusal is raised. ``ttl`` as for `save`. Returns the models.
        Inside a pipeline they are queued like `save`.
        """
        records = list(models)
        if not all(isinstance(record, cls) for record in records):
            raise UsageError(f"{cls.__name__}.save_many takes {cls.__name__} instances")
        if ttl is not None:
            ttl = checked_ttl(ttl)
        for record in records:
            record._ss_only_top_level("save")
        if active_pipeline() is not None:
            for record in records:
                await record.save(ttl=ttl)
            return records
        await cls._ss_write_each([(record, record._ss_save_op()) for record in records], ttl=ttl)
        return records

    @classmethod
    async def _ss_write_many(
        cls, models: Sequence[ManyAtOnce], plans: Sequence[Plan]
    ) -> list[Applied | Exception]:
        """Run one plan per model in one round trip per primary, each atomic on its own.

        Every model whose write went through records it, whatever happened to the others;
        returns per model what it applied or the error that refused it.
        """
        try:
            results = await run_each(cls._ss_client(), plans, cls.__ss_meta__.durability)
        except DurabilityError as exc:
            for model, unconfirmed in zip(models, exc.applied, strict=True):
                if unconfirmed is not None:  # applied, only not confirmed: record it, then raise
                    model._ss_applied(cast("Applied", unconfirmed))
            raise
        for model, result in zip(models, results, strict=True):
            if isinstance(result, Applied):
                model._ss_applied(result)
        return results

    @classmethod
    async def _ss_write_each(
        cls, writes: Sequence[tuple[ManyAtOnce, Op]], *, ttl: int | None = None
    ) -> None:
        """Apply one whole-document operation per model, each atomic, in few round trips.

        Each model whose write went through takes its document as Redis stored it; then the
        first refusal, if any, is raised (the other writes stand).
        """
        plans = [model._ss_plan([op], create=False, ttl=ttl) for model, op in writes]
        results = await cls._ss_write_many([model for model, _ in writes], plans)
        for (model, op), result in zip(writes, results, strict=True):
            if isinstance(result, Applied):
                model._ss_keep_stored(op, result)
        for result in results:
            if isinstance(result, Exception):
                raise result
