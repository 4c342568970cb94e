"""Importing what pydantic-redis and pydantic-aioredis stored: `import_records` and `streamstore import`.

The old data is written by hand with HSET/ZADD/SADD exactly as docs/seed-formats.md says each
library writes it (the values below are the ones its tables show), then imported and read back
through the streamstore models.
"""

from __future__ import annotations

import asyncio
import json
from datetime import UTC, date, datetime
from enum import StrEnum
from typing import Any
from urllib.parse import urlsplit, urlunsplit

import pytest
import redis
import redis.asyncio as aioredis
from pydantic import BaseModel, Field
from test_duplicate import CountingConnection
from typer.testing import CliRunner

from streamstore import UsageError
from streamstore.cli import app
from streamstore.migrate import import_records, old_key_pattern
from streamstore.table import TableModel

# --- sample models ----------------------------------------------------------------------------


# The old libraries' data sits on one plain server; round trips are counted on one connection.
pytestmark = pytest.mark.single_node


class Agent(BaseModel):
    name: str
    phone: str  # digits: raw text in pydantic-redis, never a number


class Author(BaseModel):
    name: str
    born: date | None = None
    agent: Agent | None = None


class Publisher(BaseModel):
    """A plain pydantic model to pydantic-redis: stored as JSON text inside JSON."""

    name: str
    since: int


class Color(StrEnum):
    RED = "red"
    BLUE = "blue"


class Novel(TableModel):
    """What pydantic-redis stored as ``novel_%&_<title>``."""

    _primary_key_field: str = "title"
    title: str
    copies: int
    price: float
    in_print: bool
    published: date
    isbn: str
    subtitle: str | None = None
    rating: float | None = None
    tags: list[str] = Field(default_factory=list)
    stock: dict[str, int] = Field(default_factory=dict)
    years: tuple[int, int] | None = None
    color: Color = Color.RED
    author: Author | None = None
    co_authors: list[Author] = Field(default_factory=list)
    pair: tuple[str, Author] | None = None
    by_role: dict[str, Author] = Field(default_factory=dict)
    publisher: Publisher | None = None
    reprints: list[Publisher] = Field(default_factory=list)


class Story(TableModel):
    """What pydantic-aioredis stored as ``story:<title>``."""

    _primary_key_field: str = "title"
    title: str
    copies: int
    price: float
    in_print: bool
    published: date
    written: datetime | None = None
    subtitle: str | None = None
    pages: int | None = None
    tags: list[str] = Field(default_factory=list)
    flags: list[bool] = Field(default_factory=list)
    extra: dict[str, Any] = Field(default_factory=dict)
    years: tuple[int, int] | None = None
    color: Color = Color.RED
    author: Author | None = None
    co_authors: list[Author] = Field(default_factory=list)


class Entry(TableModel):
    """A pydantic-aioredis model with ``_table_name``, ``_redis_prefix``, ``_redis_separator``."""

    _primary_key_field: str = "id"
    id: int
    note: str


# --- old data, as each library writes it ------------------------------------------------------

JANE = Author(name="Jane Austen", born=date(1775, 12, 16), agent=Agent(name="Ann", phone="0123"))
ANNE = Author(name="Anne Bronte")

PR_AUTHORS = {  # pydantic-redis: nested models are hashes of their own, referred to by key
    "author_%&_Jane Austen": {
        "name": "Jane Austen",
        "born": '"1775-12-16"',
        "__agent": "agent_%&_Ann",
    },
    "author_%&_Anne Bronte": {"name": "Anne Bronte", "born": "null", "__agent": "null"},
    "agent_%&_Ann": {"name": "Ann", "phone": "0123"},
}
PR_NOVELS = {
    "novel_%&_Emma": {
        "title": "Emma",
        "copies": "3",
        "price": "4.5",
        "in_print": "true",
        "published": '"1815-12-23"',
        "isbn": "9780141439587",
        "subtitle": "null",
        "rating": "null",
        "tags": '["classic","romance"]',
        "stock": '{"london":2}',
        "years": "[1815,1816]",
        "color": "red",
        "__author": "author_%&_Jane Austen",
        "___co_authors": '["author_%&_Anne Bronte","author_%&_Jane Austen"]',
        "____pair": '["p","author_%&_Jane Austen"]',
        "_____by_role": '{"editor":"author_%&_Anne Bronte"}',
        "publisher": '"{\\"name\\":\\"Murray\\",\\"since\\":1768}"',
        "reprints": '["{\\"name\\":\\"Penguin\\",\\"since\\":1935}"]',
    },
    "novel_%&_Persuasion": {
        "title": "Persuasion",
        "copies": "0",
        "price": "7",
        "in_print": "false",
        "published": '"1817-12-20"',
        "isbn": "123",
        "subtitle": "true",
        "rating": "4.0",
        "tags": "[]",
        "stock": "{}",
        "years": "null",
        "color": "blue",
        "__author": "null",
        "___co_authors": "[]",
        "____pair": "null",
        "_____by_role": "{}",
        "publisher": "null",
        "reprints": "[]",
    },
}
NOVELS = [
    Novel(
        title="Emma",
        copies=3,
        price=4.5,
        in_print=True,
        published=date(1815, 12, 23),
        isbn="9780141439587",
        tags=["classic", "romance"],
        stock={"london": 2},
        years=(1815, 1816),
        color=Color.RED,
        author=JANE,
        co_authors=[ANNE, JANE],
        pair=("p", JANE),
        by_role={"editor": ANNE},
        publisher=Publisher(name="Murray", since=1768),
        reprints=[Publisher(name="Penguin", since=1935)],
    ),
    Novel(
        title="Persuasion",
        copies=0,
        price=7.0,
        in_print=False,
        published=date(1817, 12, 20),
        isbn="123",
        subtitle="true",
        rating=4.0,
        color=Color.BLUE,
    ),
]

AIO_STORIES = {  # pydantic-aioredis: json.dumps with spaces; containers of non-str dumped twice
    "story:Emma": {
        "title": "Emma",
        "copies": "3",
        "price": "5.0",
        "in_print": "true",
        "published": '"1815-12-23"',
        "written": '"2024-01-02T03:04:05+00:00"',
        "subtitle": "None",
        "pages": "None",
        "tags": '["classic", "romance"]',
        "flags": '"[true, false]"',
        "extra": '"{\\"k\\": [1, \\"v\\"]}"',
        "years": '"[1815, 1816]"',
        "color": '"red"',
        "author": json.dumps(JANE.model_dump(mode="json")),
        "co_authors": json.dumps(json.dumps([ANNE.model_dump(mode="json")])),
    },
    "story:Persuasion": {
        "title": "Persuasion",
        "copies": "0",
        "price": "7.25",
        "in_print": "false",
        "published": '"1817-12-20"',
        "written": "null",
        "subtitle": "A Novel",
        "pages": "250",
        "tags": "[]",
        "flags": '"[]"',
        "extra": '"{}"',
        "years": "null",
        "color": '"blue"',
        "author": "null",
        "co_authors": '"[]"',
    },
}
STORIES = [
    Story(
        title="Emma",
        copies=3,
        price=5.0,
        in_print=True,
        published=date(1815, 12, 23),
        written=datetime(2024, 1, 2, 3, 4, 5, tzinfo=UTC),
        tags=["classic", "romance"],
        flags=[True, False],
        extra={"k": [1, "v"]},
        years=(1815, 1816),
        author=JANE,
        co_authors=[ANNE],
    ),
    Story(
        title="Persuasion",
        copies=0,
        price=7.25,
        in_print=False,
        published=date(1817, 12, 20),
        subtitle="A Novel",
        pages=250,
        color=Color.BLUE,
    ),
]


async def write_pydantic_redis(client, novels: dict[str, dict[str, str]] = PR_NOVELS) -> None:
    """HSET each record and nested record, ZADD each to its model's index (as 0.7.0 does)."""
    for key, fields in {**PR_AUTHORS, **novels}.items():
        await client.hset(key, mapping=fields)
        index = key.partition("_%&_")[0] + "__index"
        await client.zadd(index, {key: 1796013718.75})


async def write_pydantic_aioredis(client, stories: dict[str, dict[str, str]] = AIO_STORIES) -> None:
    """HSET each record and SADD it to ``story:__index`` (as 1.4.0 does)."""
    for key, fields in stories.items():
        await client.hset(key, mapping=fields)
        await client.sadd("story:__index", key)


async def old_state(client) -> dict[bytes, Any]:
    """Every key that is not streamstore's (theirs start with '{'), with its content."""
    state: dict[bytes, Any] = {}
    async for key in client.scan_iter():
        if key.startswith(b"{"):
            continue
        kind = await client.type(key)
        if kind == b"hash":
            state[key] = await client.hgetall(key)
        elif kind == b"zset":
            state[key] = await client.zrange(key, 0, -1, withscores=True)
        else:
            state[key] = await client.smembers(key)
    return state


async def streamstore_keys(client) -> list[bytes]:
    return [key async for key in client.scan_iter(match="{*")]


# --- import_records ---------------------------------------------------------------------------


async def test_pydantic_redis_records_and_their_nested_records_come_back_with_their_types(redis):
    await write_pydantic_redis(redis)
    report = await import_records(Novel, source="pydantic-redis", client=redis)
    assert (report.read, report.imported, report.failed, report.skipped) == (2, 2, [], 0)
    assert report.pattern == "novel_%&_*"
    found = await Novel.select()
    assert found == NOVELS
    emma = found[0]
    assert isinstance(emma.published, date) and emma.color is Color.RED
    assert emma.years == (1815, 1816) and emma.pair == ("p", JANE)
    assert emma.author is not None and emma.author.agent == Agent(name="Ann", phone="0123")
    assert found[1].isbn == "123" and found[1].subtitle == "true"  # str fields stay text
    history = await emma.history()
    assert [(e.type, e.path) for e in history] == [("saved", "$")]
    assert history[0].meta == {
        "imported_from": {"library": "pydantic-redis", "key": "novel_%&_Emma"}
    }


async def test_pydantic_aioredis_records_come_back_with_their_types(redis):
    await write_pydantic_aioredis(redis)
    report = await import_records(Story, source="pydantic-aioredis", client=redis)
    assert (report.read, report.imported, report.failed, report.skipped) == (2, 2, [], 0)
    assert report.pattern == "story:*"  # story:__index is a set: never read as a record
    found = await Story.select()
    assert found == STORIES
    assert found[0].written == datetime(2024, 1, 2, 3, 4, 5, tzinfo=UTC)
    assert found[0].subtitle is None and found[0].pages is None  # "None" in Optional fields
    assert [[e.type for e in await story.history()] for story in found] == [["saved"], ["saved"]]


async def test_pydantic_aioredis_prefix_separator_and_table_name_the_keys(redis):
    for pk, note in ((1, "one"), (2, "two")):
        await redis.hset(f"myapp_%&_CustomTable_%&_{pk}", mapping={"id": str(pk), "note": note})
        await redis.sadd("myapp_%&_CustomTable_%&___index", f"myapp_%&_CustomTable_%&_{pk}")
    await redis.hset("entry:3", mapping={"id": "3", "note": "another layout"})
    options = {"table": "CustomTable", "prefix": "MyApp", "separator": "_%&_"}
    report = await import_records(Entry, source="pydantic-aioredis", client=redis, **options)
    assert (report.read, report.imported, report.pattern) == (2, 2, "myapp_%&_CustomTable_%&_*")
    assert await Entry.select() == [Entry(id=1, note="one"), Entry(id=2, note="two")]


async def test_each_batch_is_written_in_one_round_trip_to_the_target(redis, redis_url):
    for pk in range(50):
        await redis.hset(f"entry:{pk}", mapping={"id": str(pk), "note": f"n{pk}"})
    await Entry.insert(Entry(id=-1, note="loads the function library"))
    pool = aioredis.ConnectionPool.from_url(redis_url, connection_class=CountingConnection)
    target = aioredis.Redis.from_pool(pool)  # owns the pool: aclose() closes its connections
    try:
        await target.ping()  # connects: the handshake is not the import's
        CountingConnection.sends = 0
        report = await import_records(
            Entry, source="pydantic-aioredis", client=redis, target=target, batch=20
        )
        assert CountingConnection.sends == 3  # 20 + 20 + 10 records
    finally:
        await target.aclose()
    assert report.imported == 50 and len(await Entry.select()) == 51


async def test_each_record_keeps_the_ttl_its_old_key_had_left(redis):
    await write_pydantic_redis(redis)
    await redis.pexpire("novel_%&_Emma", 99_500)  # 99.5 s: rounded up to 100
    await import_records(Novel, source="pydantic-redis", client=redis)
    emma, persuasion = (Novel.__ss_meta__.keys.for_pk(pk) for pk in ("Emma", "Persuasion"))
    for key in (emma.doc, emma.stream):
        assert 99_000 < await redis.pttl(key) <= 100_000
    assert await redis.ttl(persuasion.doc) == -1 and await redis.ttl(persuasion.stream) == -1
    assert await redis.pttl("novel_%&_Emma") > 0  # the old key keeps its own


async def test_records_that_do_not_validate_are_reported_and_the_others_imported(redis):
    bad = {
        "novel_%&_Bad": {**PR_NOVELS["novel_%&_Persuasion"], "title": "Bad", "copies": "many"},
        "novel_%&_Orphan": {
            **PR_NOVELS["novel_%&_Persuasion"],
            "title": "Orphan",
            "__author": "author_%&_Nobody",
        },
        "novel_%&_Loop": {
            **PR_NOVELS["novel_%&_Persuasion"],
            "title": "Loop",
            "__author": "author_%&_Loop",
        },
    }
    await write_pydantic_redis(redis, {**PR_NOVELS, **bad})
    await redis.hset("author_%&_Loop", mapping={"name": "Loop", "__agent": "author_%&_Loop"})
    report = await import_records(Novel, source="pydantic-redis", client=redis, batch=2)
    assert (report.read, report.imported) == (5, 2)
    assert sorted(report.failed) == [
        (
            "novel_%&_Bad",
            "copies: Input should be a valid integer, unable to parse string as an integer (got 'many')",
        ),
        (
            "novel_%&_Loop",
            "nested records refer to each other in a cycle: author_%&_Loop -> author_%&_Loop",
        ),
        ("novel_%&_Orphan", "nested record author_%&_Nobody does not exist"),
    ]
    assert [novel.title for novel in await Novel.select()] == ["Emma", "Persuasion"]


async def test_a_dry_run_validates_and_writes_nothing(redis):
    await write_pydantic_aioredis(
        redis,
        {
            **AIO_STORIES,
            "story:Bad": {**AIO_STORIES["story:Emma"], "title": "Bad", "flags": '"[1, 2]"'},
        },
    )
    report = await import_records(Story, source="pydantic-aioredis", client=redis, dry_run=True)
    assert report.dry_run and (report.read, report.imported) == (3, 2)
    assert report.failed == [
        ("story:Bad", "flags.1: Input should be a valid boolean, unable to interpret input (got 2)")
    ]
    assert await streamstore_keys(redis) == []


async def test_a_second_import_is_an_upsert_and_the_old_keys_stay_as_they_were(redis):
    await write_pydantic_redis(redis)
    await redis.expire("novel_%&_Persuasion", 500)
    before = await old_state(redis)
    for _ in range(2):
        await import_records(Novel, source="pydantic-redis", client=redis)
    assert await Novel.select() == NOVELS
    for novel in NOVELS:
        history = await novel.history()
        assert [e.type for e in history] == ["saved", "saved"]
        assert history[0].data == history[1].data
    assert await old_state(redis) == before
    assert 0 < await redis.ttl("novel_%&_Persuasion") <= 500


async def test_records_gone_before_they_are_read_are_skipped(redis, monkeypatch):
    await write_pydantic_aioredis(redis)
    scan = type(redis).scan_iter

    async def scan_then_expire(self, *args, **kwargs):  # a key that expires right after SCAN
        async for key in scan(self, *args, **kwargs):
            yield key
            if key == b"story:Emma":
                await self.delete(key)

    monkeypatch.setattr(type(redis), "scan_iter", scan_then_expire)
    report = await import_records(Story, source="pydantic-aioredis", client=redis, batch=10)
    assert (report.read, report.imported, report.skipped) == (1, 1, 1)
    assert [story.title for story in await Story.select()] == ["Persuasion"]


async def test_options_a_library_does_not_have_are_refused(redis):
    with pytest.raises(UsageError, match="pydantic-redis keys have no prefix"):
        await import_records(Novel, source="pydantic-redis", client=redis, prefix="app")
    with pytest.raises(UsageError, match="unknown source"):
        await import_records(Novel, source="redis-om", client=redis)  # type: ignore[arg-type]
    with pytest.raises(UsageError, match="batch"):
        await import_records(Novel, source="pydantic-redis", client=redis, batch=0)
    with pytest.raises(UsageError, match="not a TableModel"):
        await import_records(Publisher, source="pydantic-redis", client=redis)  # type: ignore[arg-type]
    assert (
        old_key_pattern(Novel, source="pydantic-redis", table="Old[Novel]") == "old\\[novel\\]_%&_*"
    )


# --- streamstore import -----------------------------------------------------------------------


@pytest.fixture
def other_db(redis_url):
    """Database 1 of the session's server, flushed: where the old data lives for --old-url."""
    url = urlunsplit(urlsplit(redis_url)._replace(path="/1"))
    client = redis.Redis.from_url(url, decode_responses=True)
    client.flushdb()
    yield url, client
    client.flushdb()
    client.close()


def cli(*args: str, code: int = 0):
    """Run the CLI in process, check its exit code, return the click Result."""
    result = CliRunner().invoke(app, list(args), env={"COLUMNS": "200"})
    if result.exception is not None and not isinstance(result.exception, SystemExit):
        raise result.exception
    assert result.exit_code == code, result.output
    return result


def write_old(url: str, write, *args) -> None:
    """Run one of the ``write_*`` helpers above on the database at ``url``."""

    async def run() -> None:
        client = aioredis.Redis.from_url(url)
        try:
            await write(client, *args)
        finally:
            await client.aclose()

    asyncio.run(run())


def test_import_from_another_redis_prints_a_summary_and_exits_0(db, redis_url, other_db):
    old_url, old = other_db
    write_old(old_url, write_pydantic_aioredis)
    old.expire("story:Emma", 300)
    result = cli(
        "import", "test_migrate:Story", "--from", "pydantic-aioredis", "--old-url", old_url
    )
    assert result.stdout == (
        "Story: 2 records read from pydantic-aioredis keys story:*, 2 imported, 0 failed, "
        "0 skipped (gone before they were read)\n"
    )
    assert asyncio.run(Story.select()) == STORIES
    assert 0 < db.ttl(Story.key_for("Emma")) <= 300
    assert db.keys("story:*") == [] and len(old.keys("story:*")) == 3  # the old data stayed put


def test_import_lists_each_record_that_failed_and_exits_1(db, redis_url):
    bad = {**PR_NOVELS["novel_%&_Persuasion"], "title": "Bad", "published": '"someday"'}
    write_old(redis_url, write_pydantic_redis, {**PR_NOVELS, "novel_%&_Bad": bad})
    args = ("import", "test_migrate:Novel", "--from", "pydantic-redis", "--batch", "1")
    dry = cli(*args, "--dry-run", code=1)
    assert dry.stdout.splitlines() == [
        "Novel: 3 records read from pydantic-redis keys novel_%&_*, 2 valid (dry run: nothing "
        "written), 1 failed, 0 skipped (gone before they were read)",
        "  novel_%&_Bad  published: Input should be a valid date or datetime, "
        "input is too short (got 'someday')",
    ]
    assert db.keys("{*") == []
    result = cli(*args, code=1)
    assert result.stdout.splitlines()[0].startswith("Novel: 3 records read from")
    assert ", 2 imported, 1 failed," in result.stdout
    assert asyncio.run(Novel.select()) == NOVELS


def test_import_mistakes_are_one_error_line(db):
    result = cli(
        "import", "test_migrate:Novel", "--from", "pydantic-redis", "--prefix", "x", code=2
    )
    assert result.stderr.startswith("error: pydantic-redis keys have no prefix")
    result = cli("import", "cli_models:Customer", "--from", "pydantic-redis", code=1)
    assert result.stderr == (
        "error: 'cli_models:Customer' is not a TableModel (a model with a primary key field)\n"
    )
    result = cli("import", "test_migrate:Novel", "--from", "redis-om", code=2)
    assert "'redis-om' is not one of 'pydantic-redis', 'pydantic-aioredis'" in result.stderr
    assert cli("import", "test_migrate:Novel", code=2).stderr.count("--from") >= 1


def test_import_help_names_every_option():
    text = cli("import", "--help").stdout
    for option in (
        "--from",
        "--table",
        "--prefix",
        "--separator",
        "--dry-run",
        "--url",
        "--old-url",
        "--batch",
    ):
        assert option in text
    assert "pydantic-redis|pydantic-aioredis" in text and "never changed or deleted" in text
