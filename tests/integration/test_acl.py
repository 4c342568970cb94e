"""The ACL rules docs/operations.md gives: each role's operations work, a missing permission writes nothing."""

from __future__ import annotations

import asyncio
import json
import pathlib
import re
import shlex
from typing import TYPE_CHECKING, Any

import pytest
import redis as redis_sync
from pydantic import Field
from typer.testing import CliRunner

from streamstore import BaseRedisModel, PermissionDeniedError, StreamStoreError
from streamstore.cli import app as cli_app
from streamstore.projections import Change, Runner, subscriber
from streamstore.projections.runner import check_health
from streamstore.table import TableModel
from streamstore.testing import RedisServer

if TYPE_CHECKING:
    from collections.abc import Callable, Iterator

# ACL users live on one server: these tests set them up on a private one (a cluster would need
# every rule on every node, which is the same rule N times).
pytestmark = pytest.mark.single_node

DOC = pathlib.Path(__file__).parents[2] / "docs" / "operations.md"
#: The class the documented rules name, and the classes these tests stand it for.
DOC_PREFIX = "Order"


class AclOrder(BaseRedisModel):
    """The model every role works on; its Redis is whatever ``$REDIS_URL`` names."""

    customer: str = ""
    status: str = "new"
    total: int = 0
    lines: list[str] = Field(default_factory=list)
    notes: dict[str, str] = Field(default_factory=dict)


class AclBook(TableModel):
    """The table API's model, for the application role."""

    _primary_key_field: str = "title"
    title: str
    author: str = ""


# --- the documented rules, as the tests apply them -------------------------------------------


def documented_rules() -> dict[str, list[list[str]]]:
    """Per user, the ``ACL SETUSER`` lines of the docs' Permissions section, split into words."""
    section = DOC.read_text().split("## Permissions (ACL)", 1)[1].split("\n## ", 1)[0]
    rules: dict[str, list[list[str]]] = {}
    for block in re.findall(r"```text\n(.*?)```", section, re.DOTALL):
        for line in block.splitlines():
            if line.startswith("ACL SETUSER "):
                words = shlex.split(line)
                rules.setdefault(words[2], []).append(words)
    return rules


def apply_rule(admin: redis_sync.Redis, user: str, *, prefixes: tuple[str, ...]) -> str:
    """Create ``user`` as documented, for the classes with ``prefixes``; return its URL."""
    password = ""
    for words in documented_rules()[user]:
        arguments: list[str] = []
        for word in words[3:]:
            if word.startswith("~") and "{" + DOC_PREFIX + ":" in word:
                arguments += [word.replace(DOC_PREFIX, prefix, 1) for prefix in prefixes]
            elif word.startswith("~") and f":{DOC_PREFIX}:" in word:
                arguments += [word.replace(f":{DOC_PREFIX}:", f":{p}:") for p in prefixes]
            else:
                arguments.append(word)
            if word.startswith(">"):
                password = word[1:]
        admin.execute_command("ACL", "SETUSER", user, *arguments)
    return user_url(admin, user, password)


def user_url(admin: redis_sync.Redis, user: str, password: str) -> str:
    """The URL of ``user`` on the server ``admin`` talks to."""
    port = admin.connection_pool.connection_kwargs["port"]
    return f"redis://{user}:{password}@127.0.0.1:{port}/0"


# --- fixtures and helpers --------------------------------------------------------------------


@pytest.fixture(scope="module")
def acl_server() -> Iterator[RedisServer]:
    """A private server for this module's users."""
    with RedisServer() as server:
        yield server


@pytest.fixture
def admin(acl_server: RedisServer) -> Iterator[redis_sync.Redis]:
    """The default (all-powerful) user on a flushed database, with no other users and no ACL log."""
    with redis_sync.Redis.from_url(acl_server.url) as client:
        client.flushall()
        for user in client.acl_users():
            if user != "default":
                client.acl_deluser(user)
        client.acl_log_reset()
        yield client


class Acting:
    """Switch whose URL the models use: ``as_user(url)`` for the user, ``as_admin()`` back."""

    def __init__(self, monkeypatch: pytest.MonkeyPatch, admin_url: str) -> None:
        self.monkeypatch, self.admin_url = monkeypatch, admin_url

    def as_user(self, url: str) -> None:
        self.monkeypatch.setenv("REDIS_URL", url)

    def as_admin(self) -> None:
        self.monkeypatch.setenv("REDIS_URL", self.admin_url)


@pytest.fixture
def acting(monkeypatch: pytest.MonkeyPatch, acl_server: RedisServer, admin) -> Acting:
    """Models talk to the ACL server (cleaned by ``admin``), as its default user until told."""
    switch = Acting(monkeypatch, acl_server.url)
    switch.as_admin()
    return switch


def contents(client: redis_sync.Redis) -> dict[bytes, bytes | None]:
    """Every key with its serialized value: equal means nothing was written."""
    return {key: client.dump(key) for key in sorted(client.scan_iter())}


def denials(admin: redis_sync.Redis) -> list[dict[str, Any]]:
    return admin.acl_log()


def cli(*args: str) -> str:
    result = CliRunner().invoke(cli_app, list(args), env={"COLUMNS": "200"})
    if result.exception is not None and not isinstance(result.exception, SystemExit):
        raise result.exception
    assert result.exit_code == 0, result.output
    return result.output


# --- the documented rules ----------------------------------------------------------------------


def test_the_docs_give_a_rule_for_the_app_the_auditor_and_the_subscriber():
    assert set(documented_rules()) == {"app", "auditor", "subscriber"}


async def test_the_obvious_category_rule_misses_the_json_commands_and_is_refused_whole(
    admin, acting
):
    """+@read +@write +@stream +@scripting: no RedisJSON command; a save says so, writes nothing."""
    categories = admin.acl_cat()
    admin.execute_command(
        "ACL",
        "SETUSER",
        "obvious",
        "on",
        ">pw",
        "~*",
        "+@read",
        "+@write",
        "+@stream",
        "+@scripting",
    )
    if "json" in categories:  # Redis 8: RedisJSON's commands have a category of their own
        assert "json.set" in admin.acl_cat("json")
    else:
        verdict = admin.execute_command("ACL", "DRYRUN", "obvious", "JSON.SET", "k", "$", "1")
        assert b"no permissions" in verdict

    await AclOrder(customer="setup").save()  # the app's first write loads the library
    acting.as_user(user_url(admin, "obvious", "pw"))
    order = AclOrder(customer="ann")
    before = contents(admin)
    if "json" in categories:
        await order.save()
        return
    with pytest.raises(PermissionDeniedError, match=r"(?i)json"):
        await order.save()
    assert contents(admin) == before


async def test_the_app_rule_runs_the_model_api_pipelines_locks_tables_and_upkeep(admin, acting):
    url = apply_rule(admin, "app", prefixes=("AclOrder", "AclBook"))
    acting.as_user(url)  # the app's user loads the library itself
    order, other = AclOrder(customer="ann"), AclOrder(customer="bob")
    await order.save()
    await other.save(ttl=600)
    await order.status.set("paid")
    assert await order.total.increase(5) == 5
    await order.lines.aappend("tea")
    await order.lines.aextend(["cup", "pot"])
    await order.lines.ainsert(0, "first")
    assert await order.lines.apop() == "pot"
    await order.notes.aset_item("gift", "yes")
    await order.notes.aupdate(wrap="red", card="no")
    await order.notes.adel_item("card")
    assert await order.notes.apop("wrap") == "red"
    assert await order.notes.apopitem() == ("gift", "yes")
    await order.aset(status="shipped", total=7)
    async with order.pipeline():
        await order.lines.aappend("p")
        await other.lines.aappend("q")
    async with order.lock():
        order.status = "locked"
    await order.refresh()
    await order.save(expected_version=order.version)
    copy = await order.duplicate()
    await copy.delete()
    assert await AclOrder.try_delete(copy.key) is False
    assert (await AclOrder.get(order.key)).status == "locked"
    assert [e.seq for e in await order.history()][-1] == order.version
    assert (await AclOrder.as_of(order.pk, seq=2)).status == "paid"
    assert (await AclOrder.verify(order.pk)).equal
    summary = await AclOrder.verify_all()
    assert summary.equal == summary.instances >= 2
    await order.snapshot()
    await order.lines.aclear()
    await order.notes.aclear()
    assert await order.compact() > 0
    assert (await AclOrder.rebuild(order.pk)).equal

    await AclBook.insert([AclBook(title="Emma", author="Austen")], life_span_seconds=600)
    await AclBook.insert(AclBook(title="Persuasion", author="Austen"))
    await AclBook.update(_id="Emma", data={"author": "Jane Austen"})
    assert [book.title for book in await AclBook.select()] == ["Emma", "Persuasion"]
    assert await AclBook.delete(ids=["Emma"]) == 1

    assert denials(admin) == []


async def test_the_auditor_rule_reads_history_replays_and_verifies_from_python_and_the_cli(
    admin, acting
):
    order = AclOrder(customer="ann")
    await order.save()  # written by the default user, as the app would
    await order.status.set("paid")
    await order.lines.aappend("tea")
    url = apply_rule(admin, "auditor", prefixes=("AclOrder",))
    acting.as_user(url)

    assert [e.type for e in await order.history()] == ["saved", "set", "list.append"]
    assert [e.seq for e in await order.lines.history()] == [1, 3]  # saved, then the append
    assert (await AclOrder.as_of(order.pk, seq=2)).status == "paid"
    assert (await AclOrder.get(order.key)).lines == ["tea"]
    assert (await AclOrder.verify(order.pk)).equal
    assert (await AclOrder.verify_all()).instances == 1

    # The CLI runs its own event loop, so in a thread of its own here.
    model = f"{__name__}:AclOrder"
    assert "list.append" in await asyncio.to_thread(cli, "history", order.key, "--url", url)
    assert '"paid"' in await asyncio.to_thread(cli, "as-of", order.key, "--seq", "2", "--url", url)
    await asyncio.to_thread(cli, "verify", model, "--url", url)
    exported = await asyncio.to_thread(cli, "export", model, "--url", url)
    exported = [json.loads(line) for line in exported.splitlines() if line.startswith("{")]
    assert [event["seq"] for event in exported] == [1, 2, 3]
    assert denials(admin) == []


async def test_the_auditor_cannot_write_and_its_attempt_changes_nothing(admin, acting):
    order = AclOrder(customer="ann")
    await order.save()
    acting.as_user(apply_rule(admin, "auditor", prefixes=("AclOrder",)))
    before, local = contents(admin), order.redis_dump()

    for write in (
        lambda: order.status.set("forged"),
        lambda: order.lines.aappend("forged"),
        order.save,
        order.delete,
        lambda: AclOrder(customer="forged").save(),
    ):
        with pytest.raises(PermissionDeniedError):
            await write()
        assert contents(admin) == before
        assert order.redis_dump() == local


async def test_the_subscriber_rule_runs_a_runner_with_dedupe_dead_letters_and_health(admin, acting):
    first, second = AclOrder(customer="ann"), AclOrder(customer="bob")
    await first.save()
    await second.save()
    await first.status.set("paid")
    seen: list[tuple[str, int]] = []

    @subscriber(
        AclOrder, name="acl-test", start="beginning", dedupe=True, max_deliveries=2,
        retry_delay=0.001,
    )  # fmt: skip
    async def handle(change: Change) -> None:
        if change.type == "set":
            raise RuntimeError("this one goes to the dead letters")
        seen.append((change.pk, change.seq))

    acting.as_user(apply_rule(admin, "subscriber", prefixes=("AclOrder",)))
    runner = Runner(handle, burst=True)
    await runner.async_run()

    assert sorted(seen) == sorted([(first.pk, 1), (second.pk, 1)])
    assert runner.stats.dead_lettered == 1
    client = AclOrder._ss_client()
    assert set(await check_health(client, [handle])) == {"acl-test"}
    assert denials(admin) == []


# --- one permission missing: refused whole, nothing written -----------------------------------


def _feed_unreachable(admin: redis_sync.Redis) -> None:
    tag = "~{AclOrder:*}"
    patterns = [f"{tag}:*", f"{tag}#events:*", f"{tag}#undo:*", f"{tag}#index", f"{tag}#expiry"]
    admin.execute_command("ACL", "SETUSER", "app", "resetkeys", *patterns)


#: (what is taken from the app's user, what that user then tries, what the error names)
MISSING: dict[str, tuple[Callable[[redis_sync.Redis], None], str, str]] = {
    "xadd": (lambda admin: admin.acl_setuser("app", commands=["-xadd"]), "append", "xadd"),
    "json.arrappend": (
        lambda admin: admin.acl_setuser("app", commands=["-json.arrappend"]),
        "append",
        "json.arrappend",
    ),
    "zadd": (lambda admin: admin.acl_setuser("app", commands=["-zadd"]), "create", "zadd"),
    "expire": (lambda admin: admin.acl_setuser("app", commands=["-expire"]), "ttl", "expire"),
    "copy": (lambda admin: admin.acl_setuser("app", commands=["-copy"]), "batch", "copy"),
    "the feed key": (_feed_unreachable, "append", "feed|key"),
    "xadd, in a pipeline of two": (
        lambda admin: admin.acl_setuser("app", commands=["-xadd"]),
        "pipeline",
        "xadd",
    ),
}


async def _attempt(kind: str, order: AclOrder, other: AclOrder) -> None:
    if kind == "append":
        await order.lines.aappend("x")
    elif kind == "create":
        await AclOrder(customer="new").save()
    elif kind == "ttl":
        await order.save(ttl=60)
    elif kind == "batch":
        await order.aset(status="paid", total=3)
    else:
        async with order.pipeline():
            await order.lines.aappend("x")
            await other.lines.aappend("y")


@pytest.mark.parametrize("missing", list(MISSING))
async def test_a_missing_permission_raises_before_anything_is_written(admin, acting, missing):
    """The write raises PermissionDeniedError naming what is missing; Redis and the models are unchanged."""
    revoke, kind, named = MISSING[missing]
    acting.as_user(apply_rule(admin, "app", prefixes=("AclOrder",)))
    order, other = AclOrder(customer="ann", lines=["a"]), AclOrder(customer="bob")
    await order.save()
    await other.save()
    revoke(admin)
    before, local = contents(admin), (order.redis_dump(), other.redis_dump())

    with pytest.raises(PermissionDeniedError, match=f"(?i){named}") as refused:
        await _attempt(kind, order, other)

    assert isinstance(refused.value, StreamStoreError)
    assert contents(admin) == before
    assert (order.redis_dump(), other.redis_dump()) == local


async def test_an_auditor_that_finds_the_library_missing_gets_a_clear_error(admin, acting):
    """Without +function|load the library cannot be loaded: PermissionDeniedError, not a raw reply."""
    order = AclOrder(customer="ann")
    await order.save()
    admin.function_flush()
    acting.as_user(apply_rule(admin, "auditor", prefixes=("AclOrder",)))
    with pytest.raises(PermissionDeniedError, match=r"(?i)function"):
        await AclOrder.verify(order.pk)
    acting.as_admin()
    await order.status.set("loaded again")  # the app's next write loads it
    acting.as_user(apply_rule(admin, "auditor", prefixes=("AclOrder",)))
    assert (await AclOrder.verify(order.pk)).equal
