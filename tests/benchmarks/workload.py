"""The benchmark workload: the model, the hand-written redis-py writes mirroring streamstore's, and the server."""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import copy
import json
import sys
import time
import uuid
import zlib
from collections.abc import Awaitable, Callable, Coroutine, Iterable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import redis.asyncio as aioredis
from pydantic import Field

from streamstore import BaseRedisModel
from streamstore.connection import resolve_client
from streamstore.testing import redis_url_for_tests

PARTITIONS = 16  # streamstore's default Meta.partitions; the raw side spreads keys the same way
FEED_MAXLEN = 10_000

#: The document every instance starts from (both sides).
DOC: dict[str, Any] = {
    "name": "Ada Lovelace",
    "age": 36,
    "tags": ["math", "poetry", "engines"],
    "metadata": {"city": "London", "lang": "en"},
}


def make_user_model(
    url: str,
    prefix: str,
    *,
    profile: bool = False,
    snapshot_every: int = 0,
    feed_maxlen: int = FEED_MAXLEN,
) -> type[BaseRedisModel]:
    """The user model, named ``prefix`` and stored under it; ``profile`` adds six scalar fields.

    ``snapshot_every`` is the model's ``Meta.snapshot_every`` (0, the default: no snapshots);
    ``feed_maxlen`` its ``Meta.feed_maxlen`` (raise it to keep every event in the change feed).
    """
    every = snapshot_every  # (a class body cannot read an enclosing name it also assigns)
    maxlen = feed_maxlen

    class User(BaseRedisModel):
        name: str
        age: int = 0
        if profile:
            email: str = ""
            active: bool = False
            score: int = 0
            country: str = ""
            title: str = ""
            notes: str = ""
        tags: list[str] = Field(default_factory=list)
        metadata: dict[str, str] = Field(default_factory=dict)

        class Meta:
            redis = url
            key_prefix = prefix
            partitions = PARTITIONS
            feed_maxlen = maxlen
            snapshot_every = every

    User.__name__ = User.__qualname__ = prefix
    return User


# --- the raw side: redis-py, MULTI/EXEC, json.dumps ------------------------------------------


@dataclass
class RawInstance:
    """One hand-managed instance: its keys, its local seq counter and its local document."""

    pk: str
    key: str
    stream: str
    feed: str
    doc: dict[str, Any]
    seq: int = 0

    @classmethod
    def new(cls, prefix: str, doc: dict[str, Any]) -> RawInstance:
        """A fresh instance under ``prefix`` whose local document starts as a copy of ``doc``."""
        pk = uuid.uuid4().hex
        tag = f"{{{prefix}:{zlib.crc32(pk.encode()) % PARTITIONS}}}"
        return cls(pk, f"{tag}:{pk}", f"{tag}#events:{pk}", f"{tag}#feed", copy.deepcopy(doc))


@dataclass(frozen=True)
class RawSpelling:
    """How a benchmark's raw events are spelled (each benchmark keeps its own)."""

    #: Event data as compact JSON (``{"value":"x"}``) rather than json.dumps' default.
    compact: bool = False
    #: A fixed ``ts`` (and feed ``id``) instead of the current time in ms.
    fixed_ts: str | None = None
    #: The ``dict.set_item`` event's path is the item's (``$.metadata.k1``), not the dict's.
    item_path: bool = False

    def dumps(self, payload: dict[str, str]) -> str:
        """The event data for ``payload``."""
        return json.dumps(payload, separators=(",", ":") if self.compact else None)


DEFAULT_SPELLING = RawSpelling()


async def raw_write(
    client: aioredis.Redis,
    inst: RawInstance,
    command: tuple[str, ...],
    *,
    kind: str,
    path: str,
    data: str,
    spelling: RawSpelling = DEFAULT_SPELLING,
) -> None:
    """The JSON command, then the event in the instance stream and the feed, in one MULTI/EXEC.

    The feed's ``id`` cannot be the stream entry id inside MULTI; a same-sized stand-in is used.
    """
    inst.seq += 1
    ts = spelling.fixed_ts or str(time.time_ns() // 1_000_000)
    event = {
        "seq": inst.seq,
        "type": kind,
        "path": path,
        "data": data,
        "ts": ts,
        "meta": "{}",
        "v": "1",
    }
    pipe = client.pipeline(transaction=True)
    pipe.execute_command(*command)
    pipe.xadd(inst.stream, event)
    pipe.xadd(
        inst.feed, {"pk": inst.pk, "id": f"{ts}-0", **event}, maxlen=FEED_MAXLEN, approximate=True
    )
    await pipe.execute()


async def raw_save(
    client: aioredis.Redis,
    inst: RawInstance,
    _i: int = 0,
    *,
    spelling: RawSpelling = DEFAULT_SPELLING,
) -> None:
    """Write the instance's whole local document."""
    document = json.dumps(inst.doc)
    command = ("JSON.SET", inst.key, "$", document)
    await raw_write(client, inst, command, kind="saved", path="$", data=document, spelling=spelling)


async def raw_set(
    client: aioredis.Redis, inst: RawInstance, i: int, *, spelling: RawSpelling = DEFAULT_SPELLING
) -> None:
    """Set ``name``."""
    value = f"name-{i}"
    await raw_write(
        client,
        inst,
        ("JSON.SET", inst.key, "$.name", json.dumps(value)),
        kind="set",
        path="$.name",
        data=spelling.dumps({"value": value}),
        spelling=spelling,
    )
    inst.doc["name"] = value


async def raw_append(
    client: aioredis.Redis, inst: RawInstance, i: int, *, spelling: RawSpelling = DEFAULT_SPELLING
) -> None:
    """Append to ``tags``."""
    value = f"tag-{i}"
    await raw_write(
        client,
        inst,
        ("JSON.ARRAPPEND", inst.key, "$.tags", json.dumps(value)),
        kind="list.append",
        path="$.tags",
        data=spelling.dumps({"value": value}),
        spelling=spelling,
    )
    inst.doc["tags"].append(value)


async def raw_set_item(
    client: aioredis.Redis, inst: RawInstance, i: int, *, spelling: RawSpelling = DEFAULT_SPELLING
) -> None:
    """Set an item of ``metadata``."""
    key, value = f"k{i % 8}", f"v{i}"
    path = f"$.metadata.{key}"
    await raw_write(
        client,
        inst,
        ("JSON.SET", inst.key, path, json.dumps(value)),
        kind="dict.set_item",
        path=path if spelling.item_path else "$.metadata",
        data=spelling.dumps({"key": key, "value": value}),
        spelling=spelling,
    )
    inst.doc["metadata"][key] = value


#: The raw side of each write operation, by streamstore's method name.
RAW_OPS = {"set": raw_set, "aappend": raw_append, "aset_item": raw_set_item, "save": raw_save}


# --- the streamstore side ---------------------------------------------------------------------


async def lib_set(user: Any, i: int) -> None:
    """Set ``name``."""
    await user.name.set(f"name-{i}")


async def lib_append(user: Any, i: int) -> None:
    """Append to ``tags``."""
    await user.tags.aappend(f"tag-{i}")


async def lib_set_item(user: Any, i: int) -> None:
    """Set an item of ``metadata``."""
    await user.metadata.aset_item(f"k{i % 8}", f"v{i}")


async def lib_save(user: Any, _i: int) -> None:
    """Save the whole document."""
    await user.save()


#: The streamstore side of each write operation, by its method name.
LIB_OPS: dict[str, Callable[[Any, int], Awaitable[None]]] = {
    "set": lib_set,
    "aappend": lib_append,
    "aset_item": lib_set_item,
    "save": lib_save,
}


# --- the server -------------------------------------------------------------------------------


async def server_version(client: aioredis.Redis) -> str:
    """The server's Redis version."""
    info = await client.info("server")
    return str(info.get("redis_version", "?"))


async def describe(client: aioredis.Redis) -> str:
    """The server's Redis version and, when loaded, its RedisJSON version."""
    text = f"Redis {await server_version(client)}"
    modules = (await client.info("modules")).get("modules", [])
    for module in modules if isinstance(modules, list) else []:
        if module.get("name") == "ReJSON":
            ver = int(module.get("ver", 0))
            text += f", RedisJSON {ver // 10000}.{ver // 100 % 100}.{ver % 100}"
    return text


async def cleanup(client: aioredis.Redis, prefixes: Iterable[str]) -> None:
    """Remove the benchmark's keys (an external server may be someone's dev database)."""
    for prefix in prefixes:
        batch: list[bytes] = []
        async for key in client.scan_iter(match=f"{{{prefix}:*", count=1000):
            batch.append(key)
            if len(batch) >= 1000:
                await client.unlink(*batch)
                batch.clear()
        if batch:
            await client.unlink(*batch)


async def close(url: str, *clients: aioredis.Redis) -> None:
    """Close ``clients``, then the client streamstore made for ``url``."""
    for client in clients:
        await client.aclose()
    await resolve_client(url).aclose()


def parse_args_with_common(
    parser: argparse.ArgumentParser, *, quick_help: str
) -> argparse.Namespace:
    """Add the flags every benchmark has (``--quick``, ``--markdown``) and parse the arguments."""
    parser.add_argument("--quick", action="store_true", help=quick_help)
    parser.add_argument("--markdown", type=Path, help="also write the table to this file")
    return parser.parse_args()


def server_url(args: argparse.Namespace) -> contextlib.AbstractContextManager[str]:
    """``args.url`` when the benchmark has that flag and it is set, else `redis_url_for_tests`."""
    url = getattr(args, "url", None)
    return contextlib.nullcontext(url) if url else redis_url_for_tests()


def run_on_server(
    run: Callable[[str, argparse.Namespace], Coroutine[Any, Any, str]],
    args: argparse.Namespace,
    banner: str,
) -> None:
    """Run the benchmark on $REDIS_URL, else on a private server; print (and save) its report.

    A benchmark with a ``--url`` flag runs on that server when it is given.
    ``banner`` is printed to stderr first, with ``{url}`` replaced by the server's URL.
    """
    with server_url(args) as url:  # --url, $REDIS_URL, else a private redis-server + RedisJSON
        print(banner.format(url=url), file=sys.stderr)
        report = asyncio.run(run(url, args))
    print(report)
    if args.markdown is not None:
        args.markdown.write_text(report)
