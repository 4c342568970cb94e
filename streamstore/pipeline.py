"""Pipelines: operations on one or several models queued in a block and applied together at exit.

The pipeline sits below the model API: it knows models only as `Writer`, the write protocol
`streamstore.model.BaseRedisModel` provides.
"""

from __future__ import annotations

from contextvars import ContextVar, Token
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Protocol

from streamstore.durability import Durability
from streamstore.errors import DurabilityError, UsageError
from streamstore.executor import run_together
from streamstore.operations import OPERATIONS, stored_otherwise

if TYPE_CHECKING:
    from collections.abc import Sequence

    from streamstore.connection import Client
    from streamstore.operations import Op
    from streamstore.plan import Applied, Plan

__all__ = ["Pipeline", "Writer", "active_pipeline", "enter", "leave"]


class Writer(Protocol):
    """What the write path needs of an instance it writes: the model's write protocol.

    `streamstore.model.BaseRedisModel` provides it; the pipeline writes through it and
    nothing else, and the importer uses its planning and recording steps. (The ``_ss_`` names
    keep clear of model fields.)
    """

    @property
    def key(self) -> str:
        """The instance's document key."""

    @property
    def version(self) -> int | None:
        """The seq of the last event this object wrote or read, if known."""

    def _ss_plan(
        self,
        batch: Sequence[Op],
        *,
        create: bool,
        expected_seq: int | None = None,
        ttl: int | None = None,
    ) -> Plan:
        """Plan ``batch`` for this instance (``create``: save the model first if Redis has none)."""

    def _ss_target(self) -> tuple[Client, Durability | None]:
        """Return its class's client, and what a write waits for (``Meta.durability``)."""

    def _ss_applied(self, applied: Applied) -> None:
        """Record a write that reached Redis: persisted, its new version."""

    async def _ss_reload(self) -> None:
        """Read the instance again: after a write applied but not confirmed, or stored otherwise."""

    def _ss_local(self) -> object:
        """Return a copy of the local state, for `_ss_put_back`."""

    def _ss_put_back(self, state: object) -> None:
        """Put back the local state a `_ss_local` call copied."""


_active: ContextVar[Pipeline | None] = ContextVar("streamstore_pipeline", default=None)


def active_pipeline() -> Pipeline | None:
    """Return the open pipeline the current task is inside, if any.

    A task started inside a pipeline block inherits it; once the block has ended the pipeline
    is closed, and such a task's writes go straight to Redis instead of into a finished queue.
    """
    pipeline = _active.get()
    return None if pipeline is None or pipeline.closed else pipeline


@dataclass
class _Queued:
    """What one instance has queued: its operations, and what its local state was before."""

    model: Writer
    #: The local state before the pipeline touched it (put back if it fails).
    before: object
    ops: list[Op] = field(default_factory=list)
    #: The version the model's local state was read at, when the first write was queued.
    read_at: int = 0
    #: Whether an answer was computed from local state (a pop: its row is ``guarded``); the
    #: call then requires the instance still at ``read_at``.
    guarded: bool = False
    create: bool = False
    #: A per-call TTL override (the last one queued wins), else the model's Meta.ttl.
    ttl: int | None = None


class Pipeline:
    """Operations queued inside ``async with model.pipeline():``, applied at its exit.

    Everything queued, on one instance or several, is one function call that checks every
    instance (versions, documents, arguments) before its first write and undoes its own writes
    if a later operation fails: all together or not at all. On a cluster the instances must
    share a hash slot (`CrossSlotError` before anything is sent). If the block raises, or the
    call fails, every model touched goes back to its local state before the pipeline.
    """

    def __init__(self) -> None:
        """Start an empty pipeline."""
        self._queued: dict[int, _Queued] = {}
        self.closed = False

    def queue(
        self, model: Writer, batch: Sequence[Op], *, create: bool, ttl: int | None = None
    ) -> None:
        """Queue ``batch`` for ``model`` (called by the model instead of writing)."""
        entry = self._queued.get(id(model))
        if entry is None:
            entry = _Queued(model, model._ss_local(), read_at=model.version or 0, create=create)
            self._queued[id(model)] = entry
        entry.ops.extend(batch)
        entry.guarded = entry.guarded or any(OPERATIONS[op.type].guarded for op in batch)
        if ttl is not None:
            entry.ttl = ttl

    def queued(self, model: object) -> tuple[Op, ...]:
        """Return the operations queued for ``model`` so far, in order (none: empty)."""
        entry = self._queued.get(id(model))
        return () if entry is None else tuple(entry.ops)

    async def commit(self) -> None:
        """Apply everything queued; restore the local models and re-raise if that fails."""
        entries = [entry for entry in self._queued.values() if entry.ops]
        if not entries:
            return
        keys = [entry.model.key for entry in entries]
        if len(set(keys)) < len(keys):
            # Two objects of one instance would make two parts of one call that each read the
            # same last seq and share one undo copy: refused before anything is sent.
            self.restore()
            twice = next(key for key in keys if keys.count(key) > 1)
            raise UsageError(
                f"{twice} is written through two different objects in one pipeline: "
                "write each instance through one object"
            )
        plans = [_plan(entry) for entry in entries]
        # Models of several classes: wait as long as the most demanding of them asks.
        targets = [entry.model._ss_target() for entry in entries]
        durability = Durability.strictest(wait for _, wait in targets)
        try:
            applied = await run_together(targets[0][0], plans, durability)
        except DurabilityError:
            # Applied, only not confirmed: the models show what Redis now holds.
            for entry in entries:
                await entry.model._ss_reload()
            raise
        except BaseException:
            self.restore()
            raise
        for entry, result in zip(entries, applied, strict=True):
            entry.model._ss_applied(result)
            # Another writer got in between (the call started past the version the local
            # state was read at: an increase then sums theirs too), or a double RedisJSON
            # parsed a unit off: one read makes the model what Redis holds.
            overtaken = result.seq - len(result.events) != entry.read_at
            pairs = zip(entry.ops, result.results, strict=True)
            if overtaken or any(stored_otherwise(op, stored) for op, stored in pairs):
                await entry.model._ss_reload()

    def restore(self) -> None:
        """Put every model touched back to its local state before the pipeline."""
        for entry in self._queued.values():
            entry.model._ss_put_back(entry.before)


def _plan(entry: _Queued) -> Plan:
    guard = entry.read_at if entry.guarded else None
    return entry.model._ss_plan(entry.ops, create=entry.create, expected_seq=guard, ttl=entry.ttl)


def enter() -> tuple[Pipeline, Token[Pipeline | None]]:
    """Make a new pipeline the current task's active one."""
    pipeline = Pipeline()
    return pipeline, _active.set(pipeline)


def leave(pipeline: Pipeline, token: Token[Pipeline | None]) -> None:
    """Stop queueing: writes go to Redis again, in this task and in any it started."""
    pipeline.closed = True
    _active.reset(token)
