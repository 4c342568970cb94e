"""streamstore: event-sourced Pydantic models on Redis Streams + RedisJSON."""

from streamstore.connection import RedisSettings
from streamstore.context import event_context
from streamstore.errors import (
    ConcurrencyError,
    ConfigurationError,
    CorruptDocumentError,
    CorruptEventError,
    DocumentNotFoundError,
    EmptyContainerError,
    FieldTypeError,
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

__all__ = [
    "BaseRedisModel",
    "ConcurrencyError",
    "ConfigurationError",
    "CorruptDocumentError",
    "CorruptEventError",
    "DocumentNotFoundError",
    "EmptyContainerError",
    "Event",
    "FieldTypeError",
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
    "StoredDataError",
    "StreamStoreError",
    "TopLevelOnlyError",
    "UnsafeKeyError",
    "UsageError",
    "event_context",
]
