"""Importing records that pydantic-redis or pydantic-aioredis stored: old hashes in, events out.

`import_records` finds one model's records as one of the seed libraries left them in Redis (a
hash per record; docs/seed-formats.md describes both layouts), decodes each hash by that
library's rules, validates it as the streamstore `TableModel`, and writes it as ``insert`` does:
a ``saved`` event per record, many records per round trip. Each record keeps the time to live
its old key had left. A record that does not decode or validate is reported and not written;
the import goes on with the others.

The old keys (records, indexes, nested records) are only read, never changed or deleted: an
import can be checked (``dry_run``), run again (an upsert: one more ``saved`` event per record),
and the old data dropped by hand once nothing reads it. ``streamstore import`` (see
`streamstore.cli.migrate`) is this function on the command line.

How each library's hashes are decoded is `streamstore.migrate.formats`'s part.
"""

from __future__ import annotations

import json
import re
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import Literal

from pydantic import ValidationError

from streamstore.connection import Client
from streamstore.context import event_context
from streamstore.errors import NotJSONError, UsageError
from streamstore.executor import run_plans
from streamstore.migrate.formats import (
    PR_SEPARATOR,
    DecodeError,
    Nested,
    as_text,
    decode_aioredis,
    decode_pydantic_redis,
    hash_text,
    load_nested,
)
from streamstore.plan import PERSIST, Plan
from streamstore.schema import model_json
from streamstore.table import TableModel

__all__ = ["ImportReport", "Source", "import_records", "old_key_pattern"]

#: The libraries whose records can be imported.
Source = Literal["pydantic-redis", "pydantic-aioredis"]

#: Keys SCAN asks for per call; a hint of work per call, not a limit.
_SCAN_COUNT = 1000
#: Characters that mean something in a SCAN MATCH pattern.
_GLOB = re.compile(r"([*?\[\]\\])")


@dataclass(slots=True)
class ImportReport:
    """What `import_records` did or, in a dry run, would do."""

    source: Source
    #: The SCAN pattern of the old record keys that were read.
    pattern: str
    dry_run: bool = False
    #: Old records (hashes) read.
    read: int = 0
    #: Records written as ``saved`` events; in a dry run, the records that would be.
    imported: int = 0
    #: (old key, why) of each record that did not decode or validate: not written.
    failed: list[tuple[str, str]] = field(default_factory=list)
    #: Keys SCAN found that were gone (expired or deleted) by the time they were read.
    skipped: int = 0


def old_key_pattern(
    model: type[TableModel],
    *,
    source: Source,
    table: str | None = None,
    prefix: str | None = None,
    separator: str | None = None,
) -> str:
    """Return the SCAN pattern of the keys ``source`` stored ``model``'s records under.

    ``table`` is the old model's name in its keys: for pydantic-redis its class name
    (lowercased, as the library does), for pydantic-aioredis its ``_table_name``; by default
    ``model``'s class name, lowercased. ``prefix`` and ``separator`` are pydantic-aioredis's
    ``_redis_prefix`` (none by default) and ``_redis_separator`` (``:`` by default; ``_%&_``
    for data written before 1.0). `UsageError` for options the library does not have.
    """
    return _GLOB.sub(r"\\\1", _key_stem(model, source, table, prefix, separator)) + "*"


async def import_records(
    model: type[TableModel],
    *,
    source: Source,
    client: Client,
    target: Client | None = None,
    table: str | None = None,
    prefix: str | None = None,
    separator: str | None = None,
    dry_run: bool = False,
    batch: int = 100,
    progress: Callable[[int], object] | None = None,
) -> ImportReport:
    """Import every record ``source`` stored for ``model`` from ``client``'s Redis.

    Each old record hash is decoded (see the module's docstring), validated as ``model``, and
    written like ``model.insert`` does: a ``saved`` event (an upsert) whose meta says
    ``imported_from`` (library and old key), with the TTL the old key had left (rounded up to
    whole seconds) or none if it had none. Records go ``batch`` at a time: one round trip
    reads them, one writes them (plus one per level of pydantic-redis nesting). Writes go to
    ``target``, by default ``model``'s own Redis. ``table``, ``prefix`` and ``separator`` say
    where the old keys are (see `old_key_pattern`). A record that does not decode or validate
    is reported in ``failed`` and not written. ``dry_run`` reads, decodes and validates
    everything and writes nothing. The old keys are never changed. ``progress`` is called after
    each batch with the number of old keys it handled.

    Bytes replies are read as UTF-8, the libraries' default encoding; for another one, pass a
    client made with ``decode_responses=True`` and that encoding.
    """
    if not (isinstance(model, type) and issubclass(model, TableModel)):
        raise UsageError(f"{model!r} is not a TableModel: records are imported into one")
    if batch < 1:
        raise UsageError("batch must be >= 1")
    stem = _key_stem(model, source, table, prefix, separator)
    pattern = old_key_pattern(model, source=source, table=table, prefix=prefix, separator=separator)
    report = ImportReport(source, pattern, dry_run=dry_run)
    writer = None if dry_run else (target if target is not None else model._ss_client())
    importer = _Importer(model, stem, client, writer, report, progress)
    seen: set[bytes | str] = set()  # SCAN may return a key twice
    keys: list[bytes | str] = []
    async for key in client.scan_iter(match=pattern, count=_SCAN_COUNT, _type="HASH"):
        if key not in seen:
            seen.add(key)
            keys.append(key)
        if len(keys) == batch:
            await importer.run(keys)
            keys = []
    if keys:
        await importer.run(keys)
    return report


def _key_stem(
    model: type[TableModel],
    source: Source,
    table: str | None,
    prefix: str | None,
    separator: str | None,
) -> str:
    """Return what every old record key of ``model`` starts with; its pk follows."""
    if table == "":
        raise UsageError("table must not be empty")
    if source == "pydantic-redis":
        if prefix is not None or separator is not None:
            raise UsageError(
                "pydantic-redis keys have no prefix, and their separator is always _%&_: "
                "leave prefix and separator out"
            )
        return f"{(table or model.__name__).lower()}{PR_SEPARATOR}"
    if source == "pydantic-aioredis":
        if separator == "":
            raise UsageError("separator must not be empty")
        sep = (separator or ":").lower()
        head = f"{prefix.lower()}{sep}" if prefix else ""
        return f"{head}{model.__name__.lower() if table is None else table}{sep}"
    raise UsageError(f"unknown source {source!r}: use pydantic-redis or pydantic-aioredis")


@dataclass(slots=True)
class _Old:
    """An old record as read: its key, its hash as text, the TTL to give it."""

    key: str
    fields: dict[str, str]
    ttl: int


@dataclass(slots=True)
class _Importer:
    """Imports batches of old keys of one model, adding up what happened in ``report``."""

    model: type[TableModel]
    #: What the old record keys start with; the pk follows.
    stem: str
    client: Client
    #: Where the events go; None in a dry run.
    writer: Client | None
    report: ImportReport
    #: Called after each batch with the number of old keys it handled.
    progress: Callable[[int], object] | None

    async def run(self, keys: Sequence[bytes | str]) -> None:
        """Import the records at ``keys``.

        A round trip reads them, one per level of nesting loads nested pydantic-redis records,
        one writes them.
        """
        found = await self._read(keys)
        nested = Nested()
        if self.report.source == "pydantic-redis":
            nested = await load_nested(self.client, (old.fields for old in found))
        valid = []
        for old in found:
            record = self._validated(old, nested)
            if record is not None:
                valid.append((old, record))
        if self.writer is None:
            self.report.imported += len(valid)
        elif valid:
            await self._write(self.writer, valid)
        if self.progress is not None:
            self.progress(len(keys))

    async def _read(self, keys: Sequence[bytes | str]) -> list[_Old]:
        """Return the old records at ``keys`` that still exist, each with its TTL."""
        # Another library's hashes, read with the client the caller passed (often another
        # server): redis-py's pipeline, not our routing, which serves our own keys. Writes
        # go through the executor (`run_plans`).
        async with self.client.pipeline(transaction=False) as pipe:
            for key in keys:
                pipe.hgetall(key)
                pipe.pttl(key)
            replies = await pipe.execute()
        found = []
        for key, raw, pttl in zip(keys, replies[::2], replies[1::2], strict=True):
            name = as_text(key, errors="backslashreplace")
            if not raw or pttl == -2:  # noqa: PLR2004 (PTTL's "no such key": it just expired)
                self.report.skipped += 1
                continue
            self.report.read += 1
            try:
                found.append(_Old(name, hash_text(raw), _life_span(pttl)))
            except UnicodeDecodeError as exc:
                self.report.failed.append((name, f"not UTF-8 text: {exc}"))
        return found

    def _validated(self, old: _Old, nested: Nested) -> tuple[TableModel, str] | None:
        """Return the old record as a model and its document, or None after saying why not."""
        try:
            if self.report.source == "pydantic-redis":
                data = decode_pydantic_redis(old.fields, self.model, nested, (old.key,))
            else:
                data = decode_aioredis(old.fields, self.model)
            data.setdefault(self.model.get_primary_key_field(), old.key[len(self.stem) :])
            # JSON mode, as streamstore reads its documents: strict models still take ISO dates
            record = self.model.model_validate_json(json.dumps(data), by_name=True)
            return record, model_json(record)
        except (DecodeError, NotJSONError) as exc:
            self.report.failed.append((old.key, str(exc)))
        except ValidationError as exc:
            self.report.failed.append((old.key, _why(exc)))
        return None

    async def _write(
        self, writer: Client, valid: list[tuple[_Old, tuple[TableModel, str]]]
    ) -> None:
        """Write each record as a ``saved`` event with its TTL, all in one round trip.

        Not ``model.insert``: that gives every record one TTL, and writes to the class's Redis.
        """
        plans: list[Plan] = []
        for old, (record, _) in valid:
            with event_context(imported_from={"library": self.report.source, "key": old.key}):
                plans.append(record._ss_plan([record._ss_save_op()], create=False, ttl=old.ttl))
        applied = await run_plans(writer, plans)
        for (_, (record, _)), one in zip(valid, applied, strict=True):
            record._ss_applied(one)
        self.report.imported += len(plans)


def _life_span(pttl: int) -> int:
    """Return the TTL argument of a write keeping an old key's PTTL: whole seconds, rounded up."""
    if pttl < 0:  # -1: the old key never expires
        return PERSIST
    return max(1, -(-pttl // 1000))


def _why(exc: ValidationError) -> str:
    """Say in one line what pydantic found wrong: ``copies: Input should be ... (got 'many')``."""
    reasons = []
    for error in exc.errors(include_url=False):
        where = ".".join(str(part) for part in error["loc"]) or "record"
        got = error.get("input")
        shown = "" if isinstance(got, dict | list) else f" (got {_cut(repr(got))})"
        reasons.append(f"{where}: {error['msg']}{shown}")
    return "; ".join(reasons)


def _cut(text: str, width: int = 60) -> str:
    return text if len(text) <= width else text[: width - 1] + "…"
