"""The audit log sink: every event of some model classes, one JSON line each, in a rotating file.

``audit_log(User, Order, path="/var/log/app/audit.jsonl")`` is a subscriber; run it in a
`Runner`. Each change becomes one line shaped like ``streamstore export``'s::

    {"model": "User", "key": "{User:7}:42", "pk": "42", "id": "...", "seq": 3, "type": ...}

* At least once: a line is written (and handed to the OS) before its change is acknowledged,
  so after a crash, a failed handler or a lost partition lease a change can be written again.
  A consumer dedupes on ``(key, id)``: ``id`` is the event's entry id in the instance's stream,
  unique for the instance even if its stream was recreated (``seq`` restarts then; ids do not).
  `read_audit_log` does this with ``dedupe=True``.
* Rotation by size, named as logging's ``RotatingFileHandler`` names files: before a line would
  take the file past ``max_bytes`` it becomes ``<path>.1``, ``<path>.1`` becomes ``<path>.2``
  and so on up to ``<path>.<backups>``, whose lines are dropped. Lines never straddle two
  files; a line longer than ``max_bytes`` gets a file of its own.
* Per instance, lines come in seq order (the runner hands an instance's changes over in order);
  instances interleave.
* One writer per file: run this subscriber in one process per host, and give each host's
  copy its own ``name`` (each group sees every change), or every copy gets a share of them.
* A write that fails (disk full, no directory) fails the handler: the change is retried, then
  parked in the dead-letter stream with the error, never acknowledged without its line.

Why not ``RotatingFileHandler`` itself: a logging handler reports a failed write on stderr and
carries on, so the change would be acknowledged without its line.

Each line is one unbuffered ``write`` to a file opened in append mode for that line: a few
microseconds of blocking I/O, fine on the event loop, and an outside tool (logrotate, a
shipper) may move the file at any time. Lines reach the OS, not the disk: a power cut can lose
the newest of them (a process crash cannot).
"""

from __future__ import annotations

import glob
import json
import os
import pathlib
import re
from collections.abc import Iterator
from typing import TYPE_CHECKING, Any, Literal

from streamstore.errors import ConfigurationError, UsageError
from streamstore.projections.subscriber import Change, Subscriber

if TYPE_CHECKING:
    from streamstore.events import Event
    from streamstore.meta import ModelClass

__all__ = [
    "RotatingLines",
    "audit_line",
    "audit_log",
    "audit_record",
    "log_files",
    "read_audit_log",
]

#: Default size at which the file rotates (10 MiB).
MAX_BYTES = 10 * 1024 * 1024
#: Default number of rotated files kept.
BACKUPS = 5

_NOT_IN_NAME = re.compile(r"[^A-Za-z0-9_.:-]")


def audit_record(model: ModelClass, pk: str, event: Event) -> dict[str, Any]:
    """Return the audit record of ``event`` of instance ``pk``: whose it is, then the event.

    The one shape of the audit log's lines, ``streamstore export`` and ``tail --json``.
    """
    return {"model": model.__name__, "key": model.key_for(pk), "pk": pk, **event.to_dict()}


def audit_line(change: Change) -> dict[str, Any]:
    """Return the audit record of ``change`` (see `audit_record`)."""
    if change.model is None:
        raise UsageError("an audit line needs the change's model class")
    return audit_record(change.model, change.pk, change)


class RotatingLines:
    """An append-only file of lines, rotated by size into ``<path>.1`` .. ``<path>.<backups>``."""

    def __init__(self, path: str | os.PathLike[str], max_bytes: int, backups: int) -> None:
        """Append to ``path``; ``max_bytes=0`` never rotates. Checks the settings, opens nothing.

        The directory must exist when lines come: a failed write raises (nothing is created).
        """
        self.path = pathlib.Path(path)
        if max_bytes < 0 or backups < 0:
            raise ConfigurationError(f"{self.path}: max_bytes and backups must be >= 0")
        if max_bytes and not backups:
            # RotatingFileHandler never rotates then; an audit log silently growing past its
            # limit, or truncated, would both surprise: ask for what is meant.
            raise ConfigurationError(f"{self.path}: rotating needs backups >= 1 (or max_bytes=0)")
        self.max_bytes = max_bytes
        self.backups = backups

    def append(self, line: str) -> None:
        """Append ``line`` (no newline in it) and its newline, rotating first if it must."""
        data = line.encode() + b"\n"
        fd = self._open()
        try:
            size = os.fstat(fd).st_size
            if self.max_bytes and size and size + len(data) > self.max_bytes:
                os.close(fd)
                fd = -1
                self._rotate()
                fd, size = self._open(), 0
            if size and os.pread(fd, 1, size - 1) != b"\n":
                # A torn line from a write that failed half-way: end it, so this line stays
                # whole. Its change was not acknowledged and is written again in full.
                data = b"\n" + data
            while data:
                data = data[os.write(fd, data) :]
        finally:
            if fd >= 0:
                os.close(fd)

    def _open(self) -> int:
        return os.open(self.path, os.O_RDWR | os.O_APPEND | os.O_CREAT, 0o644)

    def _backup(self, number: int) -> pathlib.Path:
        return self.path.with_name(f"{self.path.name}.{number}")

    def _rotate(self) -> None:
        """Shift ``<path>.n`` to ``<path>.n+1`` (the last one is replaced), then ``<path>``."""
        for number in range(self.backups - 1, 0, -1):
            if self._backup(number).exists():
                os.replace(self._backup(number), self._backup(number + 1))
        os.replace(self.path, self._backup(1))


def audit_log(
    *models: ModelClass,
    path: str | os.PathLike[str],
    max_bytes: int = MAX_BYTES,
    backups: int = BACKUPS,
    name: str | None = None,
    start: Literal["now", "beginning"] = "beginning",
) -> Subscriber:
    """Return a subscriber appending every event of ``models`` to ``path`` as a JSON line.

    ``name`` (the consumer group) defaults to ``audit_log:<file name>``; ``start="beginning"``
    writes what the change feed still holds when the group is new, then every change after.
    """
    sink = RotatingLines(path, max_bytes, backups)

    async def handle(change: Change) -> None:
        sink.append(json.dumps(audit_line(change), separators=(",", ":"), ensure_ascii=False))

    return Subscriber(
        handler=handle,
        models=models,
        name=name or _NOT_IN_NAME.sub("_", f"audit_log:{sink.path.name}"),
        start=start,
    )


def log_files(path: str | os.PathLike[str]) -> list[pathlib.Path]:
    """Return the files of the log at ``path`` that exist, oldest first (``path.<n>`` .. ``path``)."""
    current = pathlib.Path(path)
    numbered = []
    for file in current.parent.glob(f"{glob.escape(current.name)}.*"):
        suffix = file.name[len(current.name) + 1 :]
        if suffix.isdigit():
            numbered.append((int(suffix), file))
    older = [file for _, file in sorted(numbered, reverse=True)]
    return [*older, current] if current.exists() else older


def read_audit_log(
    path: str | os.PathLike[str], *, dedupe: bool = False
) -> Iterator[dict[str, Any]]:
    """Yield the records of the audit log at ``path``, oldest first; ``dedupe`` drops repeats.

    A repeat is a record whose ``(key, id)`` came before (a change written twice). Lines that
    do not parse are torn writes of a crash and are skipped: the change was not acknowledged,
    so its full line follows later.
    """
    seen: set[tuple[str, str]] = set()
    for file in log_files(path):
        with file.open(encoding="utf-8") as lines:
            for line in lines:
                try:
                    record = json.loads(line)
                except ValueError:
                    continue
                if dedupe:
                    identity = (record["key"], record["id"])
                    if identity in seen:
                        continue
                    seen.add(identity)
                yield record
