"""The exception family: every error the library raises derives from StreamStoreError."""

from __future__ import annotations

from collections.abc import Sequence

__all__ = [
    "ArgumentTypeError",
    "ArgumentValueError",
    "ConcurrencyError",
    "ConfigurationError",
    "CorruptDocumentError",
    "CorruptEventError",
    "CrossSlotError",
    "DocumentNotFoundError",
    "DurabilityError",
    "EmptyContainerError",
    "FieldTypeError",
    "HistoryTrimmedError",
    "IndexTypeError",
    "KeyMissingError",
    "LockTimeoutError",
    "NotJSONError",
    "PermissionDeniedError",
    "RedisJSONMissingError",
    "ServerRefusedError",
    "StoredDataError",
    "StreamStoreError",
    "TopLevelOnlyError",
    "UnsafeKeyError",
    "UsageError",
    "ValueRangeError",
]


class StreamStoreError(Exception):
    """Root of every error raised by streamstore."""


# --- the caller used the library wrongly; nothing was written -------------------------------


class UsageError(StreamStoreError):
    """The caller asked for something the library cannot do (misuse, not bad data)."""


class TopLevelOnlyError(UsageError, RuntimeError):
    """An operation of a whole instance (save, delete, duplicate, lock) on a nested model."""


class FieldTypeError(UsageError, TypeError):
    """A value does not fit the field's type, e.g. ``Value must be int``.

    The pydantic ``ValidationError`` with the details is chained as ``__cause__``.
    """


class ArgumentTypeError(UsageError, TypeError):
    """An argument of the wrong type: ``ttl="abc"``, ``True`` where a count is meant, a pk of 3."""


class ArgumentValueError(UsageError, ValueError):
    """An argument of the right type that cannot be used: out of range, NaN, a lone surrogate."""


class NotJSONError(UsageError, TypeError):
    """A value has no JSON form (a type pydantic cannot serialize); nothing is stored as pickle."""


class UnsafeKeyError(UsageError, ValueError):
    """A dict key cannot be addressed safely with a RedisJSON path.

    RedisJSON's JSONPath has no working escape sequences and drops leading spaces, so a key
    that contains a backslash or both a single and a double quote, or starts with a space,
    cannot be written item by item.
    """


class IndexTypeError(UsageError, TypeError):
    """A list index that is not an integer (a float, a str, None), as Python's list refuses it.

    Anything with ``__index__`` counts as an integer, like in a list: bools, numpy integers.
    """


class ValueRangeError(FieldTypeError, ValueError):
    """A number RedisJSON cannot hold: an int outside signed 64 bits, or a float that overflows.

    RedisJSON computes with integers as signed 64-bit values: a wider one is stored as a float
    (or becomes one at its next increment), and a sum past the limit wraps round to the other
    end. So such values are refused before anything is written, and an increment that would
    overflow is refused by the write function with the document unchanged.
    """


class EmptyContainerError(UsageError, IndexError):
    """Pop from an empty list, or a list index out of range."""


class CrossSlotError(UsageError):
    """A transaction would span several Redis Cluster hash slots, which no cluster can do.

    Raised before anything is written. All keys of one instance share a slot; two instances
    share one only if they are of one class and in one partition.
    """


class KeyMissingError(UsageError, KeyError):
    """A dict key that is not there (``apop`` without default, ``adel_item``, ``apopitem``)."""

    def __str__(self) -> str:
        """Show the message, not KeyError's quoted repr of it."""
        return str(self.args[0]) if self.args else ""


class DocumentNotFoundError(StreamStoreError, KeyError):
    """The model instance has no document in Redis (never saved, deleted, or expired)."""

    def __str__(self) -> str:
        """Show the message, not KeyError's quoted repr of it."""
        return str(self.args[0]) if self.args else ""


class HistoryTrimmedError(StreamStoreError, LookupError):
    """The events needed to replay a past state were removed (by compaction, or by hand)."""


class ConfigurationError(StreamStoreError):
    """The environment is not usable: bad Redis URL, missing server binary, and the like."""


class RedisJSONMissingError(ConfigurationError):
    """The Redis server has no RedisJSON module loaded."""


class PermissionDeniedError(ConfigurationError):
    """The Redis user may not run a command (or touch a key) the write needs (ACL).

    Checked before the write's first change: nothing was written. docs/operations.md lists the
    ACL rules the library needs.
    """


class ServerRefusedError(StreamStoreError):
    """Redis refused a command the write needed (e.g. out of memory); nothing stays half-written."""


class DurabilityError(StreamStoreError):
    """Writes were applied, but fewer replicas (or disks) confirmed them than ``Meta.durability`` asks.

    The writes are not undone: they are in the primary's memory and may still reach the
    replicas, or be lost if the primary fails first. The models written are refreshed from
    Redis before this is raised, so they show what Redis holds.
    """

    def __init__(self, message: str, *, confirmed: int, applied: Sequence[object] = ()) -> None:
        """Keep how many replicas confirmed in time, and what was applied (`Applied` each)."""
        super().__init__(message)
        #: How many replicas (for ``aof``: replicas' append-only files) confirmed in time.
        self.confirmed = confirmed
        #: What each write applied, in order (an `streamstore.plan.Applied` each).
        self.applied = list(applied)


# --- what is stored is not what we expect ---------------------------------------------------


class StoredDataError(StreamStoreError, ValueError):
    """What Redis holds cannot be read as streamstore data."""


class CorruptEventError(StoredDataError):
    """A stream entry cannot be read as an event, or does not apply to the document."""


class CorruptDocumentError(StoredDataError):
    """A stored document does not validate as the model it should hold."""


# --- someone else wrote in between ---------------------------------------------------------


class ConcurrencyError(StreamStoreError):
    """Another writer changed the instance between our read and our write."""


class LockTimeoutError(ConcurrencyError, TimeoutError):
    """A lock held by someone else was not released in time."""
