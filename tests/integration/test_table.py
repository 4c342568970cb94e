"""Stores and table-style models: insert, update, select and delete as the seed libraries had them."""

from __future__ import annotations

import dataclasses
import re
from datetime import UTC, datetime
from urllib.parse import urlsplit

import pytest
import redis.asyncio as aioredis
from clients import is_cluster_url
from test_docs_examples import ROOT, run_page
from test_duplicate import CountingConnection
from waiting import eventually

from streamstore import (
    ConfigurationError,
    DocumentNotFoundError,
    FieldTypeError,
    UsageError,
)
from streamstore.store import RedisConfig, Store
from streamstore.table import TableModel


class Book(TableModel):
    _primary_key_field: str = "title"
    title: str
    author: str
    pages: int = 0
    published: datetime = datetime(2000, 1, 1, tzinfo=UTC)

    class Meta:
        key_prefix = "TableBook"
        partitions = 4


def store_for(redis_url: str, name: str = "shelf", life_span: int | None = None) -> Store:
    url = urlsplit(redis_url.replace(",", "/", 1))  # a cluster's first seed node is enough
    config = RedisConfig(
        host=url.hostname or "",
        port=url.port or 6379,
        db=0 if is_cluster_url(redis_url) else int(url.path[1:] or 0),
        cluster=is_cluster_url(redis_url),
    )
    return Store(name=name, redis_config=config, life_span_in_seconds=life_span)


@pytest.fixture
def shelf(redis, redis_url) -> Store:
    store = store_for(redis_url)
    store.register_model(Book)
    return store


BOOKS = [
    Book(title="Oliver Twist", author="Charles Dickens", pages=608),
    Book(title="Jane Eyre", author="Charlotte Bronte", pages=532),
    Book(title="Pride and Prejudice", author="Jane Austen", pages=432),
]


async def test_insert_writes_saved_events_and_select_returns_records_in_key_order(shelf):
    await Book.insert(BOOKS)
    assert [b.title for b in await Book.select()] == [
        "Jane Eyre",
        "Oliver Twist",
        "Pride and Prejudice",
    ]
    assert (await Book.select(ids=["Jane Eyre"]))[0] == BOOKS[1]
    assert [e.type for e in await BOOKS[0].history()] == ["saved"]
    assert BOOKS[0].key.startswith("{shelf:TableBook:")


@pytest.mark.single_node  # counts round trips on a plain client's connection
async def test_insert_of_many_is_one_round_trip(shelf, redis_url):
    pool = aioredis.ConnectionPool.from_url(redis_url, connection_class=CountingConnection)
    client = aioredis.Redis.from_pool(pool)  # owns the pool: aclose() closes its connections
    meta = Book.__ss_meta__
    try:
        Book.__ss_meta__ = dataclasses.replace(meta, redis=client)  # count this client's sends
        await Book.insert(BOOKS[0])  # loads the function library too
        CountingConnection.sends = 0
        await Book.insert([Book(title=f"t{i}", author="a") for i in range(50)])
        assert CountingConnection.sends == 1
        assert len(await Book.select()) == 51
    finally:
        Book.__ss_meta__ = meta
        await client.aclose()


async def test_insert_is_an_upsert(shelf):
    await Book.insert(BOOKS[0])
    await Book.insert(Book(title="Oliver Twist", author="Boz"))
    (found,) = await Book.select()
    assert (found.author, found.pages) == ("Boz", 0)
    assert [e.type for e in await found.history()] == ["saved", "saved"]


async def test_update_writes_set_events_for_the_fields_given(shelf):
    await Book.insert(BOOKS)
    await Book.update(_id="Oliver Twist", data={"author": "Charlie Ickens", "pages": 600})
    (found,) = await Book.select(ids="Oliver Twist")
    assert (found.author, found.pages) == ("Charlie Ickens", 600)
    history = await found.history()
    assert [(e.type, e.path) for e in history] == [
        ("saved", "$"),
        ("set", "$.author"),
        ("set", "$.pages"),
    ]


async def test_updating_a_missing_record_is_a_key_error_and_creates_nothing(shelf, redis):
    with pytest.raises(DocumentNotFoundError) as caught:
        await Book.update(_id="Missing", data={"author": "x"})
    assert isinstance(caught.value, KeyError)
    assert await redis.keys("*Missing*") == []
    assert await Book.select() == []


async def test_bad_updates_are_refused_before_anything_is_written(shelf, redis):
    await Book.insert(BOOKS[0])
    before = await redis.execute_command("JSON.GET", BOOKS[0].key)
    with pytest.raises(FieldTypeError, match="Value must be int"):
        await Book.update(_id="Oliver Twist", data={"author": "ok", "pages": "many"})
    with pytest.raises(UsageError, match="primary key"):
        await Book.update(_id="Oliver Twist", data={"title": "Oliver"})
    with pytest.raises(UsageError, match="no field"):
        await Book.update(_id="Oliver Twist", data={"isbn": "1"})
    with pytest.raises(UsageError, match="primary key"):
        await BOOKS[0].title.set("renamed")
    assert await redis.execute_command("JSON.GET", BOOKS[0].key) == before
    assert len(await BOOKS[0].history()) == 1


async def test_select_by_ids_keeps_their_order_and_skips_missing_ones(shelf):
    await Book.insert(BOOKS)
    found = await Book.select(ids=["Pride and Prejudice", "nope", "Jane Eyre"])
    assert [b.title for b in found] == ["Pride and Prejudice", "Jane Eyre"]
    assert await Book.select(ids=[]) == []
    assert await Book.select(ids=["nope"]) == []


async def test_pages_through_every_record_in_a_stable_order(shelf):
    titles = [f"book {i:03}" for i in range(37)]
    await Book.insert([Book(title=t, author="a") for t in reversed(titles)])
    pages = [await Book.select(skip=skip, limit=10) for skip in range(0, 40, 10)]
    assert [b.title for page in pages for b in page] == titles
    assert [len(page) for page in pages] == [10, 10, 10, 7]
    assert await Book.select(skip=40) == []


async def test_paging_reads_each_partition_a_page_at_a_time_and_keeps_the_order(shelf, monkeypatch):
    monkeypatch.setattr("streamstore.table._PAGE", 2)  # many small pages per partition
    titles = [f"b{i:02}" for i in range(23)]
    await Book.insert([Book(title=t, author="a") for t in titles])
    assert [b.title for b in await Book.select()] == titles
    assert [b.title for b in await Book.select(skip=5, limit=7)] == titles[5:12]
    assert await Book.delete() == 23


async def test_columns_give_dicts_of_those_fields_with_their_real_types(shelf):
    await Book.insert(BOOKS[0])
    (row,) = await Book.select(columns=["pages", "published"])
    assert row == {"pages": 608, "published": datetime(2000, 1, 1, tzinfo=UTC)}
    assert type(row["pages"]) is int and type(row["published"]) is datetime
    with pytest.raises(UsageError, match="no field 'isbn'"):
        await Book.select(columns=["isbn"])


async def test_delete_one_many_or_all_and_the_histories_stay(shelf, redis):
    await Book.insert([*BOOKS, Book(title="Emma", author="Jane Austen")])
    assert await Book.delete(ids="Emma") == 1
    assert await Book.delete(ids=["Jane Eyre", "nope"]) == 1
    assert [b.title for b in await Book.select()] == ["Oliver Twist", "Pride and Prejudice"]
    assert await Book.delete() == 2
    assert await Book.select() == []
    assert await Book.delete() == 0
    assert [e.type for e in await BOOKS[0].history()] == ["saved", "deleted"]


async def test_ttl_store_default_per_call_override_and_insert_overwrites(redis, redis_url):
    store = store_for(redis_url, life_span=3600)
    store.register_model(Book)
    await Book.insert(BOOKS[0])
    assert 3500 < await redis.ttl(BOOKS[0].key) <= 3600  # the store's life span
    assert 3500 < await redis.ttl(BOOKS[0].stream_key) <= 3600  # history expires with it
    await Book.update(_id="Oliver Twist", data={"pages": 1}, life_span_seconds=60)
    assert 0 < await redis.ttl(BOOKS[0].key) <= 60  # a per-call override
    await Book.insert(BOOKS[0], life_span_seconds=120)
    assert 60 < await redis.ttl(BOOKS[0].key) <= 120  # insert overwrites the TTL
    plain = store_for(redis_url)  # no life span: insert removes any TTL
    plain.register_model(Book)
    await Book.insert(BOOKS[1], life_span_seconds=100)
    await Book.insert(BOOKS[1])
    assert await redis.ttl(BOOKS[1].key) == -1 and await redis.ttl(BOOKS[1].stream_key) == -1


async def test_expired_records_never_linger_in_the_index(shelf, redis):
    await Book.insert(BOOKS[:2])
    await Book.insert(BOOKS[2], life_span_seconds=1)
    keys = Book.__ss_meta__.keys.for_pk(BOOKS[2].pk)
    assert await redis.zscore(keys.expiry, BOOKS[2].pk) is not None

    async def expired() -> bool:
        return not await redis.exists(BOOKS[2].key)

    await eventually(expired, "the record to expire", within=5)
    assert [b.title for b in await Book.select()] == ["Jane Eyre", "Oliver Twist"]
    assert await redis.zscore(keys.index, BOOKS[2].pk) is None  # gone from the index itself
    assert await redis.zscore(keys.expiry, BOOKS[2].pk) is None


async def test_two_stores_on_one_database_never_see_each_other(redis, redis_url):
    class Note(TableModel):
        class Meta:
            key_prefix = "TableNote"
            primary_key = "slug"

        slug: str
        text: str = ""

    store_for(redis_url, name="alpha").register_model(Note)
    await Note.insert(Note(slug="a", text="alpha's"))
    store_for(redis_url, name="beta").register_model(Note)
    assert await Note.select() == []
    await Note.insert(Note(slug="a", text="beta's"))
    assert [n.text for n in await Note.select()] == ["beta's"]
    store_for(redis_url, name="alpha").register_model(Note)
    assert [n.text for n in await Note.select()] == ["alpha's"]


def test_a_table_model_must_name_its_primary_key():
    with pytest.raises(ConfigurationError, match="primary key field"):

        class Nameless(TableModel):
            title: str

    with pytest.raises(ConfigurationError, match="not a field"):

        class Wrong(TableModel):
            _primary_key_field: str = "isbn"
            title: str


def test_redis_config_is_a_url_with_password_and_ssl():
    assert RedisConfig().redis_url == "redis://localhost:6379/0"
    config = RedisConfig(host="db", port=6380, db=5, password="p@ss/w", ssl=True)  # noqa: S106 (a test value)
    assert config.redis_url == "rediss://:p%40ss%2Fw@db:6380/5"
    with pytest.raises(ConfigurationError, match="store name"):
        Store(name="has space")


@pytest.mark.single_node  # the seed's tutorial connects to one server by URL
async def test_the_seed_update_tutorial_prints_what_the_seed_shows(redis):
    page = ROOT / "docs" / "tables.md"
    ran = run_page(page)  # its own interpreter: the page's `Book` is not this module's
    (expected, *_) = re.findall(r"```text\n(.*?)```", page.read_text(), re.DOTALL)
    assert ran.returncode == 0, ran.stderr
    assert ran.stdout == expected
