"""Every Redis key template and every stream field name the library uses."""

from __future__ import annotations

import zlib
from dataclasses import dataclass
from typing import Any

from streamstore.errors import ArgumentTypeError, ArgumentValueError

__all__ = [
    "EVENT_FIELDS",
    "EVENT_SCHEMA_VERSION",
    "FEED_FIELDS",
    "REQUIRED_EVENT_FIELDS",
    "InstanceKeys",
    "KeySpace",
    "check_text",
    "instance_keys_of",
]

#: Version of the stream entry layout below; written into every entry as ``v``.
EVENT_SCHEMA_VERSION = "1"

#: Fields of an instance stream entry, in the order they are written. ``mv`` (the model's
#: ``Meta.schema_version``, read by upcasters) came after ``v`` 1 was first written: readers take
#: a missing ``mv`` as 1. Fields are only ever added, so readers ignore fields they do not know.
EVENT_FIELDS = ("seq", "type", "path", "data", "ts", "meta", "v", "mv")

#: Fields every entry has; the others may be missing in older entries.
REQUIRED_EVENT_FIELDS = EVENT_FIELDS[:-1]

#: Fields of a change feed entry: the instance's pk and stream id, then the event fields.
FEED_FIELDS = ("pk", "id", *EVENT_FIELDS)


def check_text(value: Any, what: str) -> str:
    r"""Return ``value`` if it is a str that UTF-8 can encode, else raise naming ``what``.

    A lone surrogate (``"\ud800"``, as a bad decode with ``surrogateescape`` leaves) has no
    UTF-8 form: redis-py would fail while sending, so it is refused before anything is sent.
    `ArgumentTypeError` for a non-str, `ArgumentValueError` for an unencodable one.
    """
    if not isinstance(value, str):
        raise ArgumentTypeError(f"{what} must be a str, not {type(value).__name__} {value!r}")
    try:
        value.encode()
    except UnicodeEncodeError as exc:
        raise ArgumentValueError(
            f"{what} {value!r} holds a lone surrogate at {exc.start}: not valid Unicode text"
        ) from None
    return value


@dataclass(frozen=True, slots=True)
class InstanceKeys:
    """The keys one write touches; they share one hash tag, hence one cluster slot."""

    doc: str
    stream: str
    feed: str
    #: Scratch copy of the document while a batch of operations runs (deleted at its end).
    undo: str
    #: The partition's live instances: pks in a sorted set, in pk order (``select``).
    index: str
    #: The partition's instances that expire: pk -> expiry time in epoch ms (a sorted set).
    expiry: str


@dataclass(frozen=True, slots=True)
class KeySpace:
    """Key layout of one model class.

    ``prefix`` is the class's key prefix (its name unless ``Meta.key_prefix`` says otherwise)
    and ``partitions`` the number of change feed partitions (``Meta.partitions``). An instance
    lives in partition ``crc32(pk) % partitions``; its document, its stream and that partition's
    feed all carry the hash tag ``{<prefix>:<partition>}``::

        {User:7}:<pk>           the JSON document (model.key)
        {User:7}#events:<pk>    the instance's event stream (model.stream_key)
        {User:7}#feed           the change feed of partition 7
        {User:7}#undo:<pk>      scratch copy of the document during a batch (never left behind)
        {User:7}#index          the pks of partition 7's live instances (a sorted set, by pk)
        {User:7}#expiry         those with a TTL: pk -> expiry in epoch ms (a sorted set)

    Documents use ``}:`` after the tag and everything else ``}#``, so no pk can make a document
    key collide with a stream or feed key.
    """

    prefix: str
    partitions: int

    def partition(self, pk: str) -> int:
        """Return the feed partition of ``pk`` (stable across processes and languages).

        Every key of an instance goes through here, so a pk that is not UTF-8 text stops here.
        """
        if not isinstance(pk, str):
            raise ArgumentTypeError(f"a pk must be a str, not {type(pk).__name__} {pk!r}")
        try:
            return zlib.crc32(pk.encode()) % self.partitions
        except UnicodeEncodeError:
            check_text(pk, "pk")
            raise

    def tag(self, partition: int) -> str:
        """Return the hash tag shared by every key of ``partition``."""
        return f"{{{self.prefix}:{partition}}}"

    def for_pk(self, pk: str) -> InstanceKeys:
        """Return the document, stream and feed keys of the instance ``pk``."""
        return instance_keys_of(self.doc_key(pk))

    def doc_key(self, pk: str) -> str:
        """Return the document key of the instance ``pk`` alone (cheaper than `for_pk`)."""
        return f"{{{self.prefix}:{self.partition(pk)}}}:{pk}"

    def feed(self, partition: int) -> str:
        """Return the change feed key of ``partition``."""
        return f"{self.tag(partition)}#feed"

    def listing(self, partition: int) -> tuple[str, str]:
        """Return the index and expiry keys of ``partition`` (see `InstanceKeys`)."""
        tag = self.tag(partition)
        return f"{tag}#index", f"{tag}#expiry"

    def group_keys(self, partition: int, group: str) -> GroupKeys:
        """Return the keys a subscriber group keeps next to the feed of ``partition``."""
        tag = self.tag(partition)
        return GroupKeys(
            feed=f"{tag}#feed",
            lease=f"{tag}#lease:{group}",
            dead=f"{tag}#dead:{group}",
            handled=f"{tag}#handled:{group}",
        )

    def members(self, group: str) -> str:
        """Return the key listing the live consumers of ``group`` on this class (a sorted set)."""
        return f"streamstore:members:{self.prefix}:{group}"

    def pk_from_doc_key(self, key: str) -> str | None:
        """Return the pk inside a document key of this class, or None if it is not one."""
        return self._pk_after(key, "}:")

    def pk_from_stream_key(self, key: str) -> str | None:
        """Return the pk inside an instance stream key of this class, or None if it is not one."""
        return self._pk_after(key, "}#events:")

    def _pk_after(self, key: str, separator: str) -> str | None:
        check_text(key, "a key")
        head, sep, pk = key.partition(separator)
        if not sep or head != f"{{{self.prefix}:{self.partition(pk)}":
            return None
        return pk

    def scan_pattern(self) -> str:
        """Return a SCAN pattern matching every key of this class (filter with the parsers above).

        ``Meta.key_prefix`` cannot hold glob characters, so the pattern needs no escaping.
        """
        return f"{{{self.prefix}:*}}*"


def instance_keys_of(doc_key: str) -> InstanceKeys:
    """Return every key of the instance whose document key is ``doc_key``, without its class.

    All of them differ from the document key only after the hash tag (which holds no ``}``,
    since key prefixes cannot). `ArgumentTypeError` for a non-str, `ArgumentValueError` (a
    ValueError) for a str that is not a document key.
    """
    end = check_text(doc_key, "a document key").find("}")
    if not doc_key.startswith("{") or doc_key[end + 1 : end + 2] != ":":
        raise ArgumentValueError(
            f"{doc_key!r} is not a streamstore document key ({{<prefix>:<n>}}:<pk>)"
        )
    tag, pk = doc_key[: end + 1], doc_key[end + 2 :]
    return InstanceKeys(
        doc=doc_key,
        stream=f"{tag}#events:{pk}",
        feed=f"{tag}#feed",
        undo=f"{tag}#undo:{pk}",
        index=f"{tag}#index",  # the same two as KeySpace.listing
        expiry=f"{tag}#expiry",
    )


def health_key(group: str, consumer: str) -> str:
    """Return the key where a consumer of ``group`` reports that it is alive and how it fares."""
    return f"streamstore:health:{group}:{consumer}"


def health_pattern(group: str) -> str:
    """Return a SCAN pattern for the health keys of every consumer of ``group``."""
    return f"streamstore:health:{group}:*"


@dataclass(frozen=True, slots=True)
class GroupKeys:
    """What a subscriber group keeps per feed partition; one hash tag, so one cluster slot.

    ``{User:7}#lease:<group>``     which consumer reads this partition now (with an expiry)
    ``{User:7}#dead:<group>``      events whose handler kept failing, with the error (a stream)
    ``{User:7}#handled:<group>``   per pk, the last seq handled (the idempotency helper's hash)
    """

    feed: str
    lease: str
    dead: str
    handled: str


@dataclass(frozen=True, slots=True)
class IndexKeys:
    """The keys of one model class's field indexes (`streamstore.projections.field_index`).

    Every key carries the hash tag ``{<prefix>}`` (no partition number, unlike the instance
    keys), so one update of several fields, and the intersection of several fields' sets,
    touch one cluster slot::

        streamstore:index:{User}                    the indexed field names (a set)
        streamstore:index:{User}:email              per pk, "<event id> <value>" (a hash)
        streamstore:index:{User}:email=<value>      the pks whose email is <value> (a set)

    ``<value>`` is the field value's JSON text (``"ann@example.com"`` with its quotes, ``30``,
    ``null``); nested fields are dotted (``profile.email``). Field names hold no ``=``, so a
    values hash never collides with a members set.
    """

    prefix: str

    @property
    def fields(self) -> str:
        """Return the key of the set of indexed field names of the class."""
        return f"streamstore:index:{{{self.prefix}}}"

    def values(self, field: str) -> str:
        """Return the key of the hash: pk -> the id of the event indexed last, and the value."""
        return f"{self.fields}:{field}"

    def members(self, field: str, value: str) -> str:
        """Return the key of the set of pks whose ``field`` holds ``value`` (JSON text).

        With ``value=""`` it is the prefix the index script appends a value to.
        """
        return f"{self.values(field)}={value}"


def index_keys(prefix: str) -> IndexKeys:
    """Return the field index keys of the model class with key prefix ``prefix``."""
    return IndexKeys(prefix)
