"""streamstore: event-sourced Pydantic models on Redis Streams + RedisJSON."""

from streamstore.connection import RedisSettings
from streamstore.context import event_context
from streamstore.durability import Durability
from streamstore.errors import (
    ConcurrencyError,
    ConfigurationError,
    CorruptDocumentError,
    CorruptEventError,
    CrossSlotError,
    DocumentNotFoundError,
    DurabilityError,
    EmptyContainerError,
    FieldTypeError,
    HistoryTrimmedError,
    KeyMissingError,
    LockTimeoutError,
    NotJSONError,
    RedisJSONMissingError,
    StoredDataError,
    StreamStoreError,
    TopLevelOnlyError,
    UnsafeKeyError,
    UsageError,
)
from streamstore.events import Event
from streamstore.fields import (
    RedisBool,
    RedisBytes,
    RedisDatetime,
    RedisDict,
    RedisFloat,
    RedisInt,
    RedisList,
    RedisStr,
)
from streamstore.model import BaseRedisModel
from streamstore.projections.replay import Report, Summary
from streamstore.projections.upcasting import Upcaster, add_field, remove_field, rename_field

__all__ = [
    "BaseRedisModel",
    "ConcurrencyError",
    "ConfigurationError",
    "CorruptDocumentError",
    "CorruptEventError",
    "CrossSlotError",
    "DocumentNotFoundError",
    "Durability",
    "DurabilityError",
    "EmptyContainerError",
    "Event",
    "FieldTypeError",
    "HistoryTrimmedError",
    "KeyMissingError",
    "LockTimeoutError",
    "NotJSONError",
    "RedisBool",
    "RedisBytes",
    "RedisDatetime",
    "RedisDict",
    "RedisFloat",
    "RedisInt",
    "RedisJSONMissingError",
    "RedisList",
    "RedisSettings",
    "RedisStr",
    "Report",
    "StoredDataError",
    "StreamStoreError",
    "Summary",
    "TopLevelOnlyError",
    "UnsafeKeyError",
    "Upcaster",
    "UsageError",
    "add_field",
    "event_context",
    "remove_field",
    "rename_field",
]
