"""Shared fixtures: a private Redis with RedisJSON for the whole session."""

from __future__ import annotations

import contextlib
from typing import TYPE_CHECKING

import pytest
import pytest_asyncio
import redis as redis_sync
import redis.asyncio as aioredis

from streamstore.testing import RedisServer, redis_url_for_tests

if TYPE_CHECKING:
    from collections.abc import AsyncIterator, Iterator


@pytest.fixture(scope="session")
def redis_url() -> Iterator[str]:
    """URL of the session's Redis: `$REDIS_URL` if set, else a private server started here."""
    with redis_url_for_tests() as url:
        yield url


@pytest.fixture(scope="session")
def plain_redis_url() -> Iterator[str]:
    """URL of a private Redis *without* the RedisJSON module."""
    with RedisServer(redisjson=False) as server:
        yield server.url


@pytest.fixture(scope="session", autouse=True)
def _redis_url_env(redis_url: str) -> Iterator[None]:
    """Point `$REDIS_URL` at the session's Redis so default connections hit it."""
    with pytest.MonkeyPatch.context() as patch:
        patch.setenv("REDIS_URL", redis_url)
        yield


@contextlib.asynccontextmanager
async def flushed_client(url: str, *, decode: bool) -> AsyncIterator[aioredis.Redis]:
    """Open a client on ``url`` and flush its database first (so a failure leaves data to see)."""
    client = aioredis.Redis.from_url(url, decode_responses=decode)
    try:
        await client.flushdb()
        yield client
    finally:
        await client.aclose()


@pytest.fixture
def db(redis_url: str) -> Iterator[redis_sync.Redis]:
    """A sync client (str replies) on a freshly flushed database, for tests that are not async."""
    client = redis_sync.Redis.from_url(redis_url, decode_responses=True)
    client.flushdb()
    yield client
    client.close()


@pytest_asyncio.fixture
async def redis(redis_url: str) -> AsyncIterator[aioredis.Redis]:
    """A bytes-returning async client on a freshly flushed database."""
    async with flushed_client(redis_url, decode=False) as client:
        yield client


@pytest_asyncio.fixture
async def redis_decoded(redis_url: str) -> AsyncIterator[aioredis.Redis]:
    """A str-returning async client (`decode_responses=True`) on a freshly flushed database."""
    async with flushed_client(redis_url, decode=True) as client:
        yield client
