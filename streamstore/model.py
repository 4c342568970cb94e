"""BaseRedisModel: a top-level model's identity, keys, settings, reads and writes."""

from __future__ import annotations

import contextlib
import copy
import json
import uuid
from typing import TYPE_CHECKING, Any, ClassVar, Self, cast

from pydantic import BaseModel

from streamstore import operations as ops
from streamstore._logging import debug_enabled, get_logger
from streamstore.arguments import checked_count, checked_ttl
from streamstore.connection import resolve_client
from streamstore.context import current_meta_json
from streamstore.enabled import RedisEnabledModel
from streamstore.errors import (
    ArgumentValueError,
    CorruptDocumentError,
    DocumentNotFoundError,
    DurabilityError,
    TopLevelOnlyError,
    UsageError,
)
from streamstore.executor import (
    existing,
    get_document,
    get_document_and_seq,
    run_plan,
)
from streamstore.keys import InstanceKeys, check_text
from streamstore.locking import Locking
from streamstore.many import ManyAtOnce
from streamstore.meta import ModelMeta
from streamstore.pipeline import active_pipeline, enter, leave
from streamstore.plan import Applied, build_plan
from streamstore.schema import codec_for, model_json
from streamstore.timeline import Timeline

if TYPE_CHECKING:
    from collections.abc import AsyncIterator, Sequence

    from streamstore.connection import Client
    from streamstore.durability import Durability
    from streamstore.operations import Op
    from streamstore.plan import Plan

__all__ = ["BaseRedisModel", "ModelMeta"]


class BaseRedisModel(Timeline, Locking, ManyAtOnce, RedisEnabledModel):  # type: ignore[misc]  # (*)
    """A pydantic model stored as a RedisJSON document, with every change an event in a stream.

    Every write (``save``, ``await model.field.set(...)``, list and dict operations, ``delete``)
    is validated locally, then applied to the document and appended to the instance's stream
    and its partition's change feed in one atomic step. Configure with an inner ``class Meta``:
    ``redis`` (client, URL or settings), ``ttl``, ``partitions``, ``key_prefix``, ``feed_maxlen``,
    ``snapshot_every``, ``schema_version`` and ``upcasters``. History, replay, time travel,
    verification and compaction come from `streamstore.timeline.Timeline`.

    (*) ``history()`` of nested models (`RedisEnabledModel`) takes the same filters as
    `Timeline.history` minus ``path``, passed on as keywords; mypy sees two signatures.
    """

    __slots__ = ("_ss_keys", "_ss_persisted", "_ss_pk", "_ss_version")
    __ss_meta__: ClassVar[ModelMeta]
    __ss_top_level__: ClassVar[bool] = True

    if TYPE_CHECKING:
        _ss_pk: str
        _ss_keys: InstanceKeys
        _ss_version: int | None
        _ss_persisted: bool

    @classmethod
    def __pydantic_init_subclass__(cls, **kwargs: Any) -> None:
        """Read the class's ``Meta`` once, when the class is made."""
        super().__pydantic_init_subclass__(**kwargs)
        cls.__ss_meta__ = ModelMeta.for_class(cls)

    # --- identity --------------------------------------------------------------------------

    @property
    def pk(self) -> str:
        """The instance's primary key.

        Its primary key field's value, if the class names one; else a random hex UUID until
        you set one.
        """
        field_name = type(self).__ss_meta__.primary_key
        if field_name is not None:
            return str(self.__dict__[field_name])
        try:
            return self._ss_pk
        except AttributeError:
            object.__setattr__(self, "_ss_pk", uuid.uuid4().hex)
            return self._ss_pk

    @pk.setter
    def pk(self, value: str) -> None:
        if not check_text(value, "pk"):
            raise ArgumentValueError("pk must be a non-empty str")
        key_field = type(self).__ss_meta__.primary_key
        if key_field is not None and value != self.pk:
            raise UsageError(f"the pk of a {type(self).__name__} is its {key_field!r} field")
        object.__setattr__(self, "_ss_pk", value)
        object.__setattr__(self, "_ss_keys", type(self).__ss_meta__.keys.for_pk(value))
        object.__setattr__(self, "_ss_persisted", False)
        object.__setattr__(self, "_ss_version", None)

    def _ss_instance_keys(self) -> InstanceKeys:
        if type(self).__ss_meta__.primary_key is not None:  # the field may have been reassigned
            return type(self).__ss_meta__.keys.for_pk(self.pk)
        try:
            return self._ss_keys
        except AttributeError:
            keys = type(self).__ss_meta__.keys.for_pk(self.pk)
            object.__setattr__(self, "_ss_keys", keys)
            return keys

    @property
    def key(self) -> str:
        """Key of the instance's JSON document, e.g. ``{User:7}:3f2a...``."""
        return self._ss_instance_keys().doc

    @property
    def stream_key(self) -> str:
        """Key of the instance's event stream, e.g. ``{User:7}#events:3f2a...``."""
        return self._ss_instance_keys().stream

    @property
    def version(self) -> int | None:
        """Seq of the last event this object wrote or read, if known."""
        return getattr(self, "_ss_version", None)

    @classmethod
    def key_for(cls, pk: str) -> str:
        """Return the document key of the instance ``pk``."""
        return cls.__ss_meta__.keys.doc_key(pk)

    @classmethod
    def _ss_handle(cls, pk: str) -> Self:
        """Return an unvalidated instance that only addresses the stored instance ``pk``.

        Writes through it never create the instance first (it is taken as stored): a partial
        document is never written.
        """
        key_field = cls.__ss_meta__.primary_key
        values: dict[str, Any] = {} if key_field is None else {key_field: pk}
        model = cast("Self", cls.model_construct(None, **values))
        if key_field is None:
            model.pk = pk
        object.__setattr__(model, "_ss_persisted", True)
        return model

    @classmethod
    def _pk_of(cls, key: str) -> str:
        pk = cls.__ss_meta__.keys.pk_from_doc_key(key)
        if pk is None:
            raise UsageError(
                f"{key!r} is not a {cls.__name__} key (pass model.key, or {cls.__name__}.key_for(pk))"
            )
        return pk

    # --- reads -----------------------------------------------------------------------------

    @classmethod
    def _ss_client(cls) -> Client:
        return resolve_client(cls.__ss_meta__.redis)

    @classmethod
    async def get(cls, key: str) -> Self:
        """Load the instance stored at ``key``; `DocumentNotFoundError` (a KeyError) if none."""
        pk = cls._pk_of(key)
        raw = await get_document(cls._ss_client(), key)
        if raw is None:
            raise DocumentNotFoundError(f"{key} does not exist")
        return cls._ss_loaded(raw, pk, key)

    @classmethod
    def _ss_loaded(
        cls, document: str | bytes, pk: str, where: str, *, version: int | None = None
    ) -> Self:
        """Validate a document's JSON text (stored or replayed) as the stored instance ``pk``.

        JSON mode matters: bytes are base64 text in documents. `CorruptDocumentError` names
        ``where`` the document came from. ``version``: the seq the document reflects, if known.
        """
        try:
            model = cls.model_validate_json(document)
        except ValueError as exc:
            raise CorruptDocumentError(
                f"{where} does not validate as {cls.__name__}: {exc}"
            ) from exc
        object.__setattr__(model, "_ss_pk", pk)
        object.__setattr__(model, "_ss_persisted", True)
        if version is not None:
            object.__setattr__(model, "_ss_version", version)
        return model

    async def refresh(self) -> Self:
        """Reload every field from Redis, and learn the instance's version (its last seq).

        Raises `DocumentNotFoundError` (a KeyError) when Redis has no document.
        """
        self._ss_only_top_level("refresh")
        keys = self._ss_instance_keys()
        raw, seq = await get_document_and_seq(self._ss_client(), keys.doc, keys.stream)
        if raw is None:
            raise DocumentNotFoundError(f"{keys.doc} does not exist")
        self._ss_adopt(raw, keys.doc)
        object.__setattr__(self, "_ss_persisted", True)
        object.__setattr__(self, "_ss_version", seq)
        return self

    def redis_dump(self) -> dict[str, Any]:
        """Return the document as stored in Redis: JSON types only (bytes as base64)."""
        return self.model_dump(mode="json", by_alias=False)

    # --- writes ----------------------------------------------------------------------------

    async def save(self, *, expected_version: int | None = None, ttl: int | None = None) -> Self:
        """Write the whole model (event ``saved``) and return it.

        With ``expected_version``, write only if the instance's last seq is exactly that (0: no
        history yet), else raise `ConcurrencyError` and write nothing: optimistic concurrency
        for a read-modify-write (``await m.refresh()``, change ``m``, ``await m.save(
        expected_version=m.version)``). ``ttl`` (seconds) overrides ``Meta.ttl`` for this write:
        document and stream then expire together after it.
        """
        if ttl is not None:
            ttl = checked_ttl(ttl)
        if expected_version is not None:
            expected_version = checked_count(expected_version, "expected_version")
        self._ss_only_top_level("save")
        op = self._ss_save_op()
        applied = await self._ss_apply([op], create=False, expected_seq=expected_version, ttl=ttl)
        self._ss_keep_stored(op, applied)
        return self

    def _ss_save_op(self) -> Op:
        """Return the operation writing this model whole (event ``saved``)."""
        return ops.save(model_json(self), readback=codec_for(type(self)).may_hold_floats)

    async def delete(self, key: str | None = None) -> None:
        """Delete this instance's document (event ``deleted``); its stream stays as history.

        With ``key``, delete that instance instead. Raises `DocumentNotFoundError` (a KeyError)
        when there is nothing to delete; see `try_delete` for the forgiving form.
        """
        if key is not None and key != self.key:
            if not await type(self).try_delete(key):
                raise DocumentNotFoundError(f"{key} does not exist")
            return
        self._ss_only_top_level("delete")
        await self._ss_apply([ops.delete()], create=False)
        object.__setattr__(self, "_ss_persisted", False)

    @classmethod
    async def try_delete(cls, key: str) -> bool:
        """Delete the instance at ``key`` if it exists; return whether it did.

        Inside a pipeline the delete is queued, and the answer is whether it existed when asked.
        """
        model = cls._ss_handle(cls._pk_of(key))
        existed = None
        if active_pipeline() is not None:
            (existed,) = await existing(model._ss_client(), [key])
        applied = await model._ss_apply([ops.delete(if_exists=True)], create=False)
        return existed if existed is not None else bool(applied.events)

    async def duplicate(self) -> Self:
        """Copy this model to a new pk; the copy's history starts with a ``duplicated`` event.

        The event carries the whole document, the source's key and its version as this object
        last knew it (``source_seq``, None if it never wrote or refreshed). The copy is
        independent from then on. Nested models raise `TopLevelOnlyError` (a `RuntimeError`).
        """
        (copy,) = await self.duplicate_many(1)
        return copy

    async def duplicate_many(self, count: int) -> list[Self]:
        """Make ``count`` copies (see `duplicate`) in one round trip; each write is atomic."""
        count = checked_count(count, "count")
        self._ss_only_top_level("duplicate", "Can only duplicate from top level model")
        document = model_json(self)
        readback = codec_for(type(self)).may_hold_floats
        op = ops.duplicate(document, self.key, self.version, readback=readback)
        copies = [type(self).model_validate_json(document) for _ in range(count)]
        await type(self)._ss_write_each([(duplicate, op) for duplicate in copies])
        return copies

    def _ss_adopt(self, document: str | bytes, where: str) -> None:
        """Take every field from ``document``, the JSON text Redis holds at ``where``."""
        try:
            fresh = type(self).model_validate_json(document)
        except ValueError as exc:
            raise CorruptDocumentError(f"{where} does not validate: {exc}") from exc
        self.__dict__.update(fresh.__dict__)
        self.__pydantic_fields_set__.update(fresh.__pydantic_fields_set__)

    def _ss_keep_stored(self, op: Op, applied: Applied) -> None:
        """After a whole-document write: take the document as Redis stored it, where it differs.

        ``applied.results[0]`` is that document when ``op`` asked to read it back (None inside a
        pipeline, or when the model holds no floats); a double RedisJSON parsed a unit off is
        the only difference there can be.
        """
        stored = applied.results[0]
        if stored is not None and ops.stored_otherwise(op, stored):
            self._ss_adopt(stored, self.key)

    def _ss_target(self) -> tuple[Client, Durability | None]:
        """Return the client this class writes with, and what its writes wait for."""
        return type(self)._ss_client(), type(self).__ss_meta__.durability

    def _ss_local(self) -> object:
        """Return a copy of the local field values (see `_ss_put_back`)."""
        return copy.deepcopy(self.__dict__)

    def _ss_put_back(self, state: object) -> None:
        """Make the local field values those a `_ss_local` call copied."""
        self.__dict__.clear()
        self.__dict__.update(cast("dict[str, Any]", state))

    def _ss_restore(self, before: dict[str, Any]) -> None:
        """Put back the fields as they were when ``before`` (a `redis_dump`) was taken."""
        fresh = type(self).model_validate_json(json.dumps(before))
        self.__dict__.update(fresh.__dict__)

    def _ss_only_top_level(self, action: str, message: str | None = None) -> None:
        if self._ss_parent_or_none() is not None:
            raise TopLevelOnlyError(
                message or f"{action}() works on the top-level model, not on a nested one"
            )

    async def _ss_apply(
        self,
        batch: Sequence[Op],
        *,
        create: bool = True,
        expected_seq: int | None = None,
        ttl: int | None = None,
    ) -> Applied:
        """Apply ``batch`` atomically; with ``create``, first save the model if Redis has none.

        Inside a pipeline the batch is queued instead, and the returned `Applied` has no
        results: callers that need one compute it from local state (see `streamstore.fields`).
        """
        key_field = type(self).__ss_meta__.primary_key
        if key_field is not None and any(op.path[:1] == (key_field,) for op in batch):
            raise UsageError(
                f"{key_field!r} is the primary key of {type(self).__name__}: it names the record, "
                "so it cannot change (insert a record with the new key, delete the old one)"
            )
        pipeline = active_pipeline()
        persisted = getattr(self, "_ss_persisted", False)
        if pipeline is not None:
            pipeline.queue(self, batch, create=create and not persisted, ttl=ttl)
            return Applied(events=(), results=(None,) * len(batch), seq=self.version or 0)
        plan = self._ss_plan(
            batch, create=create and not persisted, expected_seq=expected_seq, ttl=ttl
        )
        try:
            (applied,) = await self._ss_send([plan])
        except DurabilityError:
            await self._ss_reload()
            raise
        self._ss_applied(applied)
        return applied

    async def _ss_reload(self) -> None:
        """Show what Redis holds after a write (applied but not confirmed, or stored otherwise)."""
        object.__setattr__(self, "_ss_persisted", True)
        with contextlib.suppress(DocumentNotFoundError):  # a delete that went through
            await self.refresh()

    def _ss_plan(
        self,
        batch: Sequence[Op],
        *,
        create: bool,
        expected_seq: int | None = None,
        ttl: int | None = None,
    ) -> Plan:
        """Plan ``batch`` for this instance; ``create`` saves the model first if Redis has none.

        ``ttl`` overrides ``Meta.ttl`` for this write.
        """
        meta = type(self).__ss_meta__
        return build_plan(
            self._ss_instance_keys(),
            self.pk,
            batch,
            meta_json=current_meta_json(),
            ttl=meta.ttl if ttl is None else ttl,
            feed_maxlen=meta.feed_maxlen,
            expected_seq=expected_seq,
            create_json=model_json(self) if create else None,
            model_version=meta.schema_version,
            snapshot_every=meta.snapshot_every,
        )

    async def _ss_send(self, plans: Sequence[Plan]) -> list[Applied]:
        client, durability = self._ss_client(), self.__ss_meta__.durability
        return [await run_plan(client, plan, durability) for plan in plans]

    def _ss_applied(self, applied: Applied) -> None:
        """Record a write that reached Redis: persisted, new version, logged."""
        object.__setattr__(self, "_ss_persisted", True)
        object.__setattr__(self, "_ss_version", applied.seq)
        _log_events(type(self), self.key, applied)

    @contextlib.asynccontextmanager
    async def pipeline(self) -> AsyncIterator[Self]:
        """Queue every write in the block and apply them all at its exit.

        On entry the model is refreshed from Redis (if it is stored). Writes on any model are
        queued; the pops (``apop``, ``apopitem``, dict ``apop``) answer from the local state and
        make the exit check that the instance has not changed since (`ConcurrencyError` if
        another client wrote meanwhile). ``increase`` answers from the local state too but
        needs no such check: if another client wrote meanwhile, the model is read again after
        the exit, so it shows the sum Redis computed. At exit
        everything queued, on one instance or several, is one atomic function call that checks
        every instance before its first write: all or nothing (on a cluster the instances must
        share a slot, else `CrossSlotError` before anything is sent). If the block or the call
        fails, every model touched goes back to its local state before the pipeline. A pipeline
        inside a pipeline joins it.
        """
        if active_pipeline() is not None:
            yield self
            return
        with contextlib.suppress(DocumentNotFoundError):
            await self.refresh()
        pipeline, token = enter()
        try:
            yield self
        except BaseException:
            pipeline.restore()
            raise
        finally:
            leave(pipeline, token)
        await pipeline.commit()


def _log_events(model: type[BaseModel], key: str, applied: Applied) -> None:
    """Log each committed event (debug level) with model, key, seq and type bound."""
    if not debug_enabled():
        return
    log = get_logger()
    for event_id, seq, kind in applied.events:
        log.debug("event.committed", model=model.__name__, key=key, seq=seq, type=kind, id=event_id)
