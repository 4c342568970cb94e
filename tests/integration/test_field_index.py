"""Field indexes: a subscriber keeps per-value sets of pks; find_by reads them."""

from __future__ import annotations

from typing import Any

import pytest
from pydantic import BaseModel, Field

from streamstore import BaseRedisModel
from streamstore.errors import FieldTypeError, UsageError
from streamstore.events import Event
from streamstore.keys import index_keys
from streamstore.projections import Change, Runner, Subscriber
from streamstore.projections import field_index as field_index_module
from streamstore.projections.field_index import field_index, find_pks, rebuild_index
from streamstore.projections.subscriber import change_of


class Contact(BaseModel):
    email: str = ""
    city: str = ""


class Member(BaseRedisModel):
    email: str
    age: int = 0
    code: int | str = 0
    score: float = 0.0
    contact: Contact = Field(default_factory=Contact)
    home: Contact | None = None
    extra: Any = None
    tags: list[str] = Field(default_factory=list)

    class Meta:
        partitions = 2  # fewer feeds for the burst runner to walk


KEYS = index_keys("Member")


async def run(*subscribers: Subscriber) -> None:
    """Handle everything written so far."""
    await Runner(*subscribers, burst=True).async_run()


async def members(emails: list[str], **fields: Any) -> list[Member]:
    """Save one Member per email given, with the other fields."""
    return [await Member(email=email, **fields).save() for email in emails]


def emails(found: list[Member]) -> list[str]:
    return sorted(member.email for member in found)


def change_for(member: Member, event: Event) -> Change:
    """The change a subscriber gets for ``event`` of ``member``."""
    change = change_of(event, Member, member.pk)
    assert change is not None
    return change


@pytest.fixture
def only_redis_knows(monkeypatch):
    """Forget the fields this process declared, as a process that only reads would."""
    monkeypatch.setattr(field_index_module, "_DECLARED", {})


# --- following changes -------------------------------------------------------------------------


async def test_find_by_returns_the_saved_instances_holding_the_value(redis):
    ann, bob, _ = await members(emails=["ann@x.io", "bob@x.io", "cy@x.io"])
    await run(field_index(Member, "email"))
    assert await Member.find_by(email="ann@x.io") == [ann]
    assert await find_pks(Member, email="bob@x.io") == {bob.pk}
    assert await Member.find_by(email="nobody@x.io") == []


async def test_a_set_of_the_field_moves_the_instance_to_its_new_value(redis):
    (ann,) = await members(emails=["ann@x.io"])
    index = field_index(Member, "email")
    await run(index)
    await ann.email.set("ann@y.io")
    await run(index)
    assert await find_pks(Member, email="ann@x.io") == set()
    assert emails(await Member.find_by(email="ann@y.io")) == ["ann@y.io"]
    assert not await redis.exists(KEYS.members("email", '"ann@x.io"'))
    stored = await redis.hget(KEYS.values("email"), ann.pk)
    assert stored.decode().endswith(' "ann@y.io"')


async def test_a_nested_field_follows_sets_of_itself_and_of_its_parent_model(redis):
    (ann,) = await members(emails=["ann@x.io"], contact=Contact(email="ann@old.io"))
    index = field_index(Member, "contact.email", "home.email")
    await run(index)
    assert await find_pks(Member, **{"contact.email": "ann@old.io"}) == {ann.pk}
    await ann.contact.email.set("ann@work.io")
    async with ann.lock() as locked:  # None -> a model: a `set` of the parent
        locked.home = Contact(email="ann@home.io", city="Oslo")
    assert [(e.type, e.path) for e in await ann.history()][1:] == [
        ("set", "$.contact.email"),
        ("set", "$.home"),
    ]
    await run(index)
    assert await find_pks(Member, **{"contact.email": "ann@old.io"}) == set()
    assert await find_pks(Member, **{"contact.email": "ann@work.io"}) == {ann.pk}
    found = await Member.find_by(**{"home.email": "ann@home.io"})
    assert [m.home.city for m in found if m.home is not None] == ["Oslo"]
    async with ann.lock() as locked:  # the parent set to None: the field has no value
        locked.home = None
    await run(index)
    assert await find_pks(Member, **{"home.email": "ann@home.io"}) == set()
    assert await redis.hkeys(KEYS.values("home.email")) == []


async def test_a_number_incr_moves_the_instance_to_the_result(redis):
    (ann,) = await members(emails=["ann@x.io"], age=30)
    index = field_index(Member, "age")
    await ann.age.increase(2)
    await run(index)
    assert await find_pks(Member, age=30) == set()
    assert await find_pks(Member, age=32) == {ann.pk}


async def test_a_deleted_instance_leaves_every_index(redis):
    ann, bob = await members(emails=["ann@x.io", "bob@x.io"], age=30)
    index = field_index(Member, "email", "age")
    await run(index)
    await ann.delete()
    await run(index)
    assert await find_pks(Member, age=30) == {bob.pk}
    assert await find_pks(Member, email="ann@x.io") == set()
    assert await redis.hkeys(KEYS.values("email")) == [bob.pk.encode()]
    assert not await redis.exists(KEYS.members("email", '"ann@x.io"'))


async def test_two_fields_intersect(redis):
    ann, _ = await members(emails=["ann@x.io", "bob@x.io"], age=30)
    await members(emails=["ann@x.io", "cy@x.io"], age=40)  # the same email, another age
    await run(field_index(Member, "email", "age"))
    assert await Member.find_by(email="ann@x.io", age=30) == [ann]
    assert len(await Member.find_by(email="ann@x.io")) == 2
    assert emails(await Member.find_by(age=40)) == ["ann@x.io", "cy@x.io"]


async def test_values_are_told_apart_by_their_json_text(redis):
    number, string = (
        await Member(email="n", code=1).save(),
        await Member(email="s", code="1").save(),
    )
    aged = await Member(email="a", age=30).save()
    await run(field_index(Member, "code", "age"))
    assert await find_pks(Member, code=1) == {number.pk}
    assert await find_pks(Member, code="1") == {string.pk}
    assert await redis.exists(KEYS.members("code", "1"), KEYS.members("code", '"1"')) == 2
    # A value passes through the field's type first, as a write's would: "30" is 30 for an int.
    assert await find_pks(Member, age="30") == {aged.pk}
    with pytest.raises(FieldTypeError, match=r"Member\.age='thirty': value must be int"):
        await find_pks(Member, age="thirty")


async def test_a_container_change_on_an_any_field_reads_the_value_from_the_document(redis):
    ann = await Member(email="ann@x.io", extra={"a": 1}).save()
    index = field_index(Member, "extra")
    await run(index)
    await ann.extra.aset_item("b", 2)
    assert [e.type for e in await ann.history()][-1] == "dict.set_item"
    await run(index)
    assert await find_pks(Member, extra={"a": 1}) == set()
    assert await find_pks(Member, extra={"b": 2, "a": 1}) == {ann.pk}  # key order ignored


async def test_an_older_change_delivered_again_never_puts_its_value_back(redis):
    (ann,) = await members(emails=["ann@x.io"])
    await ann.email.set("ann@y.io")
    index = field_index(Member, "email")
    await run(index)
    saved, _ = await ann.history()
    await index.handler(change_for(ann, saved))  # a redelivery of seq 1
    assert await find_pks(Member, email="ann@x.io") == set()
    assert await find_pks(Member, email="ann@y.io") == {ann.pk}


# --- reading -----------------------------------------------------------------------------------


async def test_find_by_leaves_out_instances_gone_or_changed_since_indexed(redis):
    ann, bob, cy = await members(emails=["ann@x.io", "bob@x.io", "cy@x.io"], age=30)
    await run(field_index(Member, "age"))
    await redis.delete(ann.key)  # gone without an event, as with Meta.ttl
    await bob.age.set(31)  # not handled yet
    assert await find_pks(Member, age=30) == {ann.pk, bob.pk, cy.pk}
    assert await Member.find_by(age=30) == [cy]


async def test_a_process_that_only_reads_knows_the_indexed_fields_from_redis(
    redis, only_redis_knows
):
    (ann,) = await members(emails=["ann@x.io"])
    await run(field_index(Member, "email"))
    field_index_module._DECLARED.clear()  # field_index() ran in another process
    assert await Member.find_by(email="ann@x.io") == [ann]
    assert await redis.smembers(KEYS.fields) == {b"email"}


async def test_an_unindexed_field_is_an_error_not_an_empty_result(redis, only_redis_knows):
    await members(emails=["ann@x.io"], score=1.5)
    with pytest.raises(UsageError, match=r"Member\.score is not indexed: run field_index"):
        await Member.find_by(score=1.5)
    with pytest.raises(UsageError, match="Member has no field 'nickname'"):
        await Member.find_by(nickname="ann")
    with pytest.raises(UsageError, match="name at least one field"):
        await Member.find_by()


def test_field_index_refuses_fields_it_cannot_index():
    with pytest.raises(UsageError, match=r"Member has no field 'contact\.phone'"):
        field_index(Member, "contact.phone")
    with pytest.raises(UsageError, match=r"Member\.tags holds a container"):
        field_index(Member, "tags")
    with pytest.raises(UsageError, match=r"Member\.email is not a model"):
        field_index(Member, "email.domain")
    with pytest.raises(UsageError, match="name at least one field"):
        field_index(Member)


def test_field_index_is_a_subscriber_filtered_on_its_fields():
    index = field_index(Member, "email", "contact.email")
    assert index.name == "index:Member:email:contact.email"
    assert index.models == (Member,)
    assert index.paths == (("email",), ("contact", "email"))
    assert index.start == "beginning"


# --- rebuilding --------------------------------------------------------------------------------


async def test_rebuild_index_indexes_existing_documents(redis, only_redis_knows):
    ann, bob = await members(emails=["ann@x.io", "bob@x.io"], contact=Contact(city="Oslo"))
    await ann.email.set("ann@y.io")
    assert await rebuild_index(Member, "email", "contact.city") == 2
    assert await Member.find_by(email="ann@y.io") == [await Member.get(ann.key)]
    assert await find_pks(Member, email="ann@x.io") == set()
    assert await find_pks(Member, **{"contact.city": "Oslo"}) == {ann.pk, bob.pk}
    stored = await redis.hget(KEYS.values("email"), ann.pk)
    assert stored.decode() == f'{(await ann.history())[-1].id} "ann@y.io"'


async def test_rebuild_index_removes_entries_whose_document_is_gone(redis, only_redis_knows):
    ann, bob = await members(emails=["ann@x.io", "bob@x.io"])
    await run(field_index(Member, "email"))
    await redis.delete(ann.key, ann.stream_key)  # expired: no event says so
    assert await rebuild_index(Member) == 1  # the fields recorded in Redis
    assert await find_pks(Member, email="ann@x.io") == set()
    assert await redis.hkeys(KEYS.values("email")) == [bob.pk.encode()]


async def test_changes_older_than_a_rebuild_never_replace_its_values(redis):
    ann, bob = await members(emails=["ann@x.io", "bob@x.io"])
    await bob.email.set("bob@y.io")
    await rebuild_index(Member, "email")
    rebuilt = await index_state(redis)
    # The subscriber starts after the rebuild and replays the feed: only its `saved` events
    # here, so an index taking them would hold bob's first email again.
    saved_only = field_index(Member, "email").with_options(types=frozenset({"saved"}))
    await run(saved_only)
    assert await index_state(redis) == rebuilt
    assert await find_pks(Member, email="bob@y.io") == {bob.pk}
    assert await find_pks(Member, email="bob@x.io") == set()
    assert await find_pks(Member, email="ann@x.io") == {ann.pk}


async def index_state(redis) -> dict[bytes, Any]:
    """Every index key and what it holds."""
    state: dict[bytes, Any] = {}
    async for key in redis.scan_iter("streamstore:index:*"):
        kind = await redis.type(key)
        state[key] = await (redis.hgetall(key) if kind == b"hash" else redis.smembers(key))
    return state
