"""Entries another program wrote into our streams and feeds: one clear error, never a stuck reader.

The entries go in with XADD from a raw client (bytes, so b"\\xff" goes in as is), as a careless
script or another service would write them.
"""

from __future__ import annotations

import asyncio
import re

import pytest
from clients import async_client
from pydantic import Field
from typer.testing import CliRunner

from streamstore import BaseRedisModel, CorruptEventError
from streamstore.cli import app
from streamstore.projections import Change, Runner, subscriber
from streamstore.projections.runner import catch_up


class Parcel(BaseRedisModel):
    label: str = ""
    tags: list[str] = Field(default_factory=list)

    class Meta:
        key_prefix = "ForeignParcel"
        partitions = 2


GOOD = {
    b"seq": b"3",
    b"type": b"set",
    b"path": b"$.label",
    b"data": b'{"value":"x"}',
    b"ts": b"1700000000000",
    b"meta": b"{}",
    b"v": b"1",
    b"mv": b"1",
}


def but(**values: bytes) -> dict[bytes, bytes]:
    return {**GOOD, **{name.encode(): value for name, value in values.items()}}


#: Stream entries another program could append after two good events (seq 1 and 2).
FOREIGN: dict[str, tuple[dict[bytes, bytes], str]] = {
    "fields missing": ({b"seq": b"3", b"type": b"set"}, "lacks fields"),
    "seq not an integer": (but(seq=b"x"), "field 'seq' does not parse"),
    "seq not first": ({b"type": b"set", **GOOD}, "starts with fields ['type']"),
    "data not UTF-8": (but(data=b'{"value":"\xff"}'), "field 'data' is not UTF-8"),
    "a name not UTF-8": ({**GOOD, b"\xff": b"1"}, "field name that is not UTF-8"),
    "path without $": (but(path=b"label"), "path 'label' is not"),
    "data not JSON": (but(data=b"{value"), "field 'data' does not parse as JSON"),
    "meta not an object": (but(meta=b"[]"), "meta is an array, not an object"),
    "unknown type": (but(type=b"shuffle"), "unknown event type 'shuffle'"),
    "seq with a gap": (but(seq=b"5"), "seq 5 comes after seq 2"),
    "seq going backwards": (but(seq=b"1"), "seq 1 comes after seq 2"),
    "pop without index": (
        but(type=b"list.pop", path=b"$.tags", data=b'{"value":"a"}'),
        "data lacks 'index'",
    ),
    "pop with a float index": (
        but(type=b"list.pop", path=b"$.tags", data=b'{"index":0.5,"value":"a"}'),
        "data['index'] is a number, not an integer",
    ),
}

# Replay reads a gap backwards: from the newer entry's side it is "seq 2 comes before seq 5".
GAP_BACKWARDS = {
    "seq with a gap": "comes before seq 5",
    "seq going backwards": "comes before seq 1",
}

cases = pytest.mark.parametrize(("fields", "reason"), FOREIGN.values(), ids=FOREIGN.keys())


async def parcel_with_foreign_entry(redis, fields: dict[bytes, bytes], pk: str = "p1"):
    """A parcel with two good events, then ``fields`` appended by hand; and the entry's id."""
    parcel = Parcel(label="a", tags=["a"])
    parcel.pk = pk
    await parcel.save()
    await parcel.tags.aappend("b")
    entry_id = (await redis.xadd(parcel.stream_key, fields)).decode()
    return parcel, entry_id


def names_the_entry(message: str, parcel: Parcel, entry_id: str) -> bool:
    return message.startswith(f"{parcel.stream_key} entry {entry_id}: ")


async def snapshot_of(redis, parcel: Parcel) -> tuple:
    """Everything a read must leave alone: the document, the stream, the key count."""
    document = await redis.execute_command("JSON.GET", parcel.key)
    return document, await redis.xlen(parcel.stream_key), await redis.dbsize()


@cases
async def test_history_is_one_error_naming_the_stream_entry_and_what_is_wrong(
    redis, fields, reason
):
    parcel, entry_id = await parcel_with_foreign_entry(redis, fields)
    for read in (parcel.history, parcel.tags.history, lambda: parcel.history(raw=True)):
        with pytest.raises(CorruptEventError) as found:
            await read()
        assert names_the_entry(str(found.value), parcel, entry_id) and reason in str(found.value)


@cases
async def test_as_of_is_one_error_naming_the_entry(redis, fields, reason):
    parcel, _ = await parcel_with_foreign_entry(redis, fields)
    with pytest.raises(CorruptEventError) as found:
        await Parcel.as_of(parcel.pk, seq=3)
    message = str(found.value)
    assert message.startswith(f"{parcel.stream_key} entry ")
    assert GAP_BACKWARDS.get(next(k for k, v in FOREIGN.items() if v[0] is fields), reason) in (
        message
    )


@cases
async def test_verify_and_rebuild_report_the_entry_and_leave_everything_alone(
    redis, fields, reason
):
    parcel, _ = await parcel_with_foreign_entry(redis, fields)
    await redis.execute_command("JSON.SET", parcel.key, "$.label", '"changed by hand"')
    before = await snapshot_of(redis, parcel)
    for report in (
        await Parcel.verify(parcel.pk),
        await Parcel.rebuild(parcel.pk),
        await Parcel.rebuild(parcel.pk, dry_run=True),
    ):
        assert report.corrupt and not report.equal and not report.rewritten
        assert report.problem is not None and report.problem.startswith(parcel.stream_key)
    assert await snapshot_of(redis, parcel) == before


@cases
async def test_class_wide_walks_report_the_corrupt_instance_and_go_on(redis, fields, reason):
    await parcel_with_foreign_entry(redis, fields, pk="bad")
    good = Parcel(label="fine")
    await good.save()
    await good.tags.aappend("x")
    for summary in (await Parcel.verify_all(batch=1), await Parcel.rebuild_all()):
        assert (summary.instances, summary.equal, summary.corrupt) == (2, 1, 1)
        (report,) = summary.reports
        assert report.pk == "bad" and report.corrupt


async def test_the_audit_log_gives_every_readable_event_then_names_the_corrupt_instances(redis):
    bad, entry_id = await parcel_with_foreign_entry(redis, but(data=b"\xff"), pk="bad")
    await bad.label.set("after")  # a good event after the bad one: not reached
    good = Parcel(label="fine")
    await good.save()
    seen: list[tuple[str, int]] = []

    async def read_all() -> None:
        async for pk, event in Parcel.all_events():
            seen.append((pk, event.seq))

    with pytest.raises(CorruptEventError, match="1 ForeignParcel instance") as found:
        await read_all()
    assert f"{bad.stream_key} entry {entry_id}: field 'data' is not UTF-8" in str(found.value)
    assert sorted(seen) == sorted([("bad", 1), ("bad", 2), (good.pk, 1)])

    reported: list[str] = []
    walk = Parcel.replayer().iter_events(on_corrupt=lambda pk, exc: reported.append(pk))
    assert sorted([(pk, e.seq) async for pk, e in walk]) == sorted(seen)
    assert reported == ["bad"]


async def test_catch_up_hands_over_what_it_can_read_and_goes_on(redis):
    await parcel_with_foreign_entry(redis, but(type=b"shuffle"), pk="bad")
    good = Parcel(label="fine")
    await good.save()
    seen: list[tuple[str, int]] = []

    @subscriber(Parcel, name="catching-up")
    async def record(change: Change) -> None:
        seen.append((change.pk, change.seq))

    assert await catch_up(record) == 3
    assert sorted(seen) == sorted([("bad", 1), ("bad", 2), (good.pk, 1)])


# --- subscribers: a feed entry that cannot be decoded is dead-lettered ------------------------

#: Feed entries another program could add; each is put between two good changes.
FOREIGN_FEED: dict[str, dict[bytes, bytes]] = {
    "pk not UTF-8": {b"pk": b"\xff", b"id": b"1-1", **GOOD},
    "data not UTF-8": {b"pk": b"p1", b"id": b"1-1", **but(data=b'{"value":"\xff"}')},
    "path without $": {b"pk": b"p1", b"id": b"1-1", **but(path=b"label")},
    "meta not an object": {b"pk": b"p1", b"id": b"1-1", **but(meta=b'"alice"')},
    "data without its keys": {b"pk": b"p1", b"id": b"1-1", **but(data=b"{}")},
    "id not an entry id": {b"pk": b"p1", b"id": b"\xff", **GOOD},
    "fields out of order": {b"id": b"1-1", b"pk": b"p1", **GOOD},
    "nothing but a name": {b"hello": b"world"},
}


def recorder(name: str):
    seen: list[Change] = []

    @subscriber(Parcel, name=name, start="beginning", retry_delay=0.001)
    async def record(change: Change) -> None:
        seen.append(change)

    return record, seen


@pytest.mark.parametrize("fields", FOREIGN_FEED.values(), ids=FOREIGN_FEED.keys())
async def test_a_subscriber_dead_letters_a_foreign_feed_entry_and_goes_on(redis, fields):
    parcel = Parcel(label="a")
    parcel.pk = "p1"
    await parcel.save()
    keys = Parcel.__ss_meta__.keys.group_keys(Parcel.__ss_meta__.keys.partition("p1"), "g")
    foreign_id = (await redis.xadd(keys.feed, fields)).decode()
    await parcel.label.set("b")
    record, seen = recorder("g")

    runner = Runner(record, burst=True, lease_ms=1000)
    await runner.async_run()  # returns: the burst run ends cleanly

    assert [(c.seq, c.type) for c in seen] == [(1, "saved"), (2, "set")]
    ((_, parked),) = await redis.xrange(keys.dead)
    assert parked[b"feed_id"].decode() == foreign_id
    assert f"{keys.feed} entry {foreign_id}: ".encode() in parked[b"error"]
    assert (await redis.xpending(keys.feed, "g"))["pending"] == 0

    again = Runner(recorder("g")[0], burst=True, lease_ms=1000)
    await again.async_run()  # a restart meets nothing left to choke on
    assert again.stats.dead_lettered == 0 and await redis.xlen(keys.dead) == 1


async def test_a_foreign_entry_left_pending_by_a_crashed_consumer_is_dead_lettered(redis):
    parcel = Parcel(label="a")
    parcel.pk = "p1"
    await parcel.save()
    keys = Parcel.__ss_meta__.keys.group_keys(Parcel.__ss_meta__.keys.partition("p1"), "taken")
    await redis.xadd(keys.feed, FOREIGN_FEED["data not UTF-8"])
    await parcel.label.set("b")
    await redis.xgroup_create(keys.feed, "taken", id="0")
    # A consumer (an older version, say) read all three and died before acknowledging any.
    await redis.xreadgroup("taken", "crashed", {keys.feed: ">"})
    record, seen = recorder("taken")

    runner = Runner(record, burst=True, lease_ms=1000)
    await runner.async_run()

    assert [c.seq for c in seen] == [1, 2] and runner.stats.dead_lettered == 1
    assert (await redis.xpending(keys.feed, "taken"))["pending"] == 0


async def test_a_subscriber_on_a_decoding_client_dead_letters_the_same_entry(redis_url, redis):
    parcel = Parcel(label="a")
    parcel.pk = "p1"
    await parcel.save()
    keys = Parcel.__ss_meta__.keys.group_keys(Parcel.__ss_meta__.keys.partition("p1"), "str")
    await redis.xadd(keys.feed, FOREIGN_FEED["path without $"])
    await parcel.label.set("b")
    record, seen = recorder("str")
    client = async_client(redis_url, decode=True)
    try:
        runner = Runner(record, burst=True, lease_ms=1000, redis=client)
        await runner.async_run()
    finally:
        await client.aclose()
    assert [c.seq for c in seen] == [1, 2] and runner.stats.dead_lettered == 1


# --- the command line: one error line, never a traceback, never a password -------------------


def run_cli(*args: str):
    result = CliRunner().invoke(app, list(args), env={"COLUMNS": "200"})
    assert result.exception is None or isinstance(result.exception, SystemExit), result.exception
    return result


def one_error_line(result) -> str:
    assert result.exit_code != 0
    lines = result.stderr.splitlines()
    assert len(lines) == 1 and lines[0].startswith("error: "), result.stderr
    assert "Traceback" not in result.output
    return lines[0]


def written(redis_url: str, fields: dict[bytes, bytes], pk: str = "p1") -> tuple[Parcel, str]:
    """`parcel_with_foreign_entry` for the sync CLI tests (the CLI runs its own event loop)."""

    async def write() -> tuple[Parcel, str]:
        client = async_client(redis_url)
        try:
            return await parcel_with_foreign_entry(client, fields, pk)
        finally:
            await client.aclose()

    return asyncio.run(write())


def save(parcel: Parcel, *labels: str) -> None:
    async def write() -> None:
        await parcel.save()
        for label in labels:
            await parcel.label.set(label)

    asyncio.run(write())


def test_cli_commands_on_one_instance_say_which_entry_is_corrupt(db, redis_url):
    parcel, entry_id = written(redis_url, but(data=b'{"value":"\xff"}'))
    named = f"{parcel.stream_key} entry {entry_id}: field 'data' is not UTF-8"
    for args in (
        ["history", parcel.key],
        ["history", parcel.key, "--json"],
        ["as-of", parcel.key, "--seq", "3"],
    ):
        assert named in one_error_line(run_cli(*args, "--url", redis_url))
    result = run_cli("verify", "test_foreign_entries:Parcel", "--pk", "p1", "--url", redis_url)
    assert result.exit_code == 1
    assert f"{parcel.key}  corrupt, left alone: {named}" in result.stdout


def test_cli_walks_over_a_class_count_the_corrupt_instances_and_go_on(db, redis_url):
    written(redis_url, {**GOOD, b"\xff\xfe": b"x"}, pk="bad")
    save(Parcel(label="fine"))
    model = "test_foreign_entries:Parcel"
    for command in (["verify"], ["rebuild"], ["rebuild", "--dry-run"]):
        result = run_cli(*command, model, "--url", redis_url)
        assert result.exit_code == 1
        assert "2 instances, 1 equal" in result.stdout and "(1 corrupt)" in result.stdout
    result = run_cli("export", model, "--url", redis_url)
    assert result.exit_code == 1
    assert sorted(line.count('"seq"') for line in result.stdout.splitlines()) == [1, 1, 1]
    assert re.search(r"^corrupt: 'bad': .*field name that is not UTF-8", result.stderr, re.M)
    assert "error: 1 instance with a corrupt entry" in result.stderr


def test_cli_history_prints_values_that_look_like_markup_as_they_are(db, redis_url):
    parcel = Parcel(label="[/]")
    save(parcel, "[bold]x[/bold]")
    result = run_cli("history", parcel.key, "--url", redis_url)
    assert result.exit_code == 0 and "[bold]x[/bold]" in result.stdout


@subscriber(Parcel, name="cli-url-check")
async def parcel_subscriber(change: Change) -> None:
    """What `streamstore run` is given in the URL tests (it never gets to run)."""


#: URLs that do not parse: every command refuses them before it connects.
BAD_URLS = [
    ("redis://[::1", "error: bad Redis URL 'redis://[::1': Invalid IPv6 URL"),
    ("redis://:hunter2secret@[::1", "error: bad Redis URL 'redis://:***@[::1'"),
    ("foo://:hunter2secret@x", "error: bad Redis URL 'foo://:***@x': Redis URL must"),
    ("redis://:hunter2secret@127.0.0.1:99999/0", "error: bad Redis URL"),
]
#: URLs that parse but lead nowhere.
UNREACHABLE = [
    ("redis://:hunter2secret@127.0.0.1:1/0", "error: cannot connect to Redis"),
    ("redis+cluster://:hunter2secret@127.0.0.1:1", "error: cannot use the Redis Cluster"),
]
COMMANDS = {
    "history": ["history", "{ForeignParcel:0}:p1"],
    "verify": ["verify", "test_foreign_entries:Parcel"],
    "export": ["export", "test_foreign_entries:Parcel"],
}


@pytest.mark.parametrize(("url", "message"), BAD_URLS + UNREACHABLE)
@pytest.mark.parametrize("command", COMMANDS.values(), ids=COMMANDS.keys())
def test_a_bad_or_unreachable_url_is_one_line_without_the_password(url, message, command):
    result = run_cli(*command, "--url", url)
    assert one_error_line(result).startswith(message)
    assert "hunter2secret" not in result.stdout + result.stderr


@pytest.mark.parametrize(("url", "message"), BAD_URLS)
def test_the_runner_refuses_a_bad_url_in_one_line_without_the_password(url, message):
    result = run_cli("run", "test_foreign_entries:parcel_subscriber", "--burst", "--url", url)
    assert one_error_line(result).startswith(message)
    assert "hunter2secret" not in result.stdout + result.stderr


@pytest.mark.single_node(reason="an ACL user lives on one node; a cluster needs it on each")
def test_a_wrong_password_is_one_line_without_it(db, redis_url):
    db.acl_setuser("parcel-cli", enabled=True, passwords=["+rightpassword"], commands=["+@all"])
    try:
        url = redis_url.replace("://", "://parcel-cli:wrongpassword@", 1)
        result = run_cli("verify", "test_foreign_entries:Parcel", "--url", url)
    finally:
        db.acl_deluser("parcel-cli")
    assert one_error_line(result).startswith("error: cannot connect to Redis: ")
    assert "wrongpassword" not in result.stdout + result.stderr
