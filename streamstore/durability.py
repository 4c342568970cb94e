"""Durability: how many replicas (and disks) must hold a write before it returns."""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from dataclasses import dataclass

from streamstore.errors import ConfigurationError, DurabilityError

__all__ = ["Durability"]


@dataclass(frozen=True, slots=True)
class Durability:
    """What a write waits for after Redis applied it, set per class as ``Meta.durability``.

    By default a write returns as soon as the primary applied it; replication is asynchronous,
    so a primary that fails right then can take the write with it. ``replicas=N`` sends
    ``WAIT N timeout_ms`` on the write's own connection: the write returns once N replicas
    have it in memory. ``aof=True`` sends ``WAITAOF 1 N timeout_ms`` instead (Redis 7.2 or
    later, ``appendonly yes``): the primary and N replicas have written it to their
    append-only files. Fewer confirmations in time raise `DurabilityError`; the write stays
    applied.
    """

    #: How many replicas must confirm the write.
    replicas: int = 1
    #: Wait for the append-only file (local and on ``replicas`` replicas), not just memory.
    aof: bool = False
    #: How long to wait for the confirmations, in milliseconds (0 waits forever).
    timeout_ms: int = 1000

    def __post_init__(self) -> None:
        """Refuse numbers that Redis would refuse, at class definition rather than first write."""
        if self.replicas < 0 or self.timeout_ms < 0:
            raise ConfigurationError("Durability: replicas and timeout_ms must be >= 0")
        if not self.replicas and not self.aof:
            raise ConfigurationError("Durability: wait for replicas >= 1, or for the aof")

    @classmethod
    def strictest(cls, wanted: Iterable[Durability | None]) -> Durability | None:
        """Return what satisfies every one of ``wanted`` (None when none asks for anything)."""
        asked = [durability for durability in wanted if durability is not None]
        if not asked:
            return None
        return cls(
            replicas=max(durability.replicas for durability in asked),
            aof=any(durability.aof for durability in asked),
            timeout_ms=max(durability.timeout_ms for durability in asked),
        )

    def command(self) -> tuple[str | int, ...]:
        """Return the command that waits for the confirmations (``WAIT`` or ``WAITAOF``)."""
        if self.aof:
            return ("WAITAOF", 1, self.replicas, self.timeout_ms)
        return ("WAIT", self.replicas, self.timeout_ms)

    def check(self, reply: object, key: str, applied: Sequence[object] = ()) -> None:
        """Raise `DurabilityError` unless ``reply`` (of `command`) confirms enough copies.

        ``applied`` (what the writes applied) travels with the error.
        """
        if self.aof:
            local, remote = reply if isinstance(reply, list) else (0, 0)
            if int(local) >= 1 and int(remote) >= self.replicas:
                return
            raise DurabilityError(
                f"{key}: written, but within {self.timeout_ms} ms the local aof "
                f"{'has' if int(local) else 'does not have'} it and {remote} of "
                f"{self.replicas} replicas' aof do",
                confirmed=int(remote),
                applied=applied,
            )
        confirmed = int(reply)  # type: ignore[call-overload]
        if confirmed < self.replicas:
            raise DurabilityError(
                f"{key}: written, but only {confirmed} of {self.replicas} replicas "
                f"confirmed it within {self.timeout_ms} ms",
                confirmed=confirmed,
                applied=applied,
            )
