"""pipeline(): operations queued in a block, applied together at exit, really rolled back on error."""

from __future__ import annotations

import asyncio
import contextvars
import json

import pytest
from pydantic import Field

from streamstore import BaseRedisModel, ConcurrencyError, DocumentNotFoundError
from streamstore.projections import fold


class User(BaseRedisModel):
    name: str
    tags: list[str] = Field(default_factory=list)
    metadata: dict[str, str] = Field(default_factory=dict)
    counter: int = 0

    class Meta:
        key_prefix = "PipelineUser"


async def outside_the_pipeline(write):
    """Run ``write`` as another client would: in a context with no pipeline."""
    await asyncio.create_task(write(), context=contextvars.Context())


async def document(redis, key):
    raw = await redis.execute_command("JSON.GET", key)
    return None if raw is None else json.loads(raw)


async def test_queued_operations_reach_redis_only_at_exit_all_together(redis):
    user = User(name="John", tags=["python"], metadata={"role": "developer"})
    await user.save()
    async with user.pipeline() as pipelined:
        await pipelined.tags.aappend("redis")
        await pipelined.tags.aextend(["async", "pydantic"])
        await pipelined.metadata.aupdate(level="senior", department="engineering")
        await pipelined.counter.set(100)
        assert await redis.xlen(user.stream_key) == 1  # nothing sent yet
        assert pipelined.tags == ["python", "redis", "async", "pydantic"]  # local state follows
    events = await user.history()
    assert [e.type for e in events] == ["saved", "list.append", "list.extend", "dict.update", "set"]
    assert len({e.ts for e in events[1:]}) == 1  # one atomic call
    assert fold(events) == await document(redis, user.key) == user.redis_dump()


async def test_a_block_that_raises_sends_nothing_and_restores_local_objects(redis):
    user = User(name="John", tags=["python"], metadata={"role": "developer"})
    await user.save()

    async def fail_midway() -> None:
        async with user.pipeline() as pipelined:
            await pipelined.tags.aappend("temp_tag")
            await pipelined.metadata.aset_item("temp", "value")
            raise ValueError("Something went wrong")

    with pytest.raises(ValueError, match="went wrong"):
        await fail_midway()
    assert await redis.xlen(user.stream_key) == 1
    assert (await User.get(user.key)).tags == ["python"]
    assert (user.tags, user.metadata) == (["python"], {"role": "developer"})


async def test_the_pipeline_refreshes_the_model_on_entry(redis):
    user = User(name="John")
    await user.save()
    other = await User.get(user.key)
    await other.tags.aappend("from-other")
    async with user.pipeline() as pipelined:
        assert pipelined.tags == ["from-other"]


async def test_pops_answer_from_the_refreshed_state_and_apply_at_exit(redis):
    user = User(name="John", tags=["a", "b"], metadata={"k": "v", "z": "w"})
    await user.save()
    async with user.pipeline() as pipelined:
        assert await pipelined.tags.apop() == "b"
        assert await pipelined.metadata.apop("k") == "v"
        assert await pipelined.metadata.apop("missing", "dflt") == "dflt"
        assert await pipelined.metadata.apopitem() == ("z", "w")
        assert await pipelined.counter.increase(5) == 5
    stored = await User.get(user.key)
    assert (stored.tags, stored.metadata, stored.counter) == (["a"], {}, 5)
    events = await user.history()
    assert [e.data.get("value") for e in events[1:4]] == ["b", "v", "w"]


async def test_a_pop_whose_basis_changed_meanwhile_is_a_conflict_and_nothing_is_written(redis):
    user = User(name="John", tags=["a", "b"])
    await user.save()

    async def pop_while_someone_appends() -> None:
        async with user.pipeline() as pipelined:
            assert await pipelined.tags.apop() == "b"

            async def append_c() -> None:
                await (await User.get(user.key)).tags.aappend("c")

            await outside_the_pipeline(append_c)

    with pytest.raises(ConcurrencyError):
        await pop_while_someone_appends()
    assert (await User.get(user.key)).tags == ["a", "b", "c"]
    assert user.tags == ["a", "b"]


async def test_empty_pops_inside_a_pipeline_raise_like_outside(redis):
    user = User(name="John")
    await user.save()
    async with user.pipeline() as pipelined:
        with pytest.raises(IndexError):
            await pipelined.tags.apop()
        with pytest.raises(KeyError):
            await pipelined.metadata.apop("missing")
        with pytest.raises(KeyError):
            await pipelined.metadata.apopitem()
    assert await redis.xlen(user.stream_key) == 1


@pytest.mark.single_node  # instances of several partitions in one transaction: a cluster refuses (test_cluster.py)
async def test_several_models_apply_all_together(redis):
    user, user1, user2 = User(name="U"), User(name="John"), User(name="John2")
    for model in (user, user1, user2):
        await model.save()
    async with user.pipeline():
        await user1.delete()
        await user2.delete()
        await user.name.set("still here")
    assert await redis.exists(user1.key, user2.key) == 0
    assert (await User.get(user.key)).name == "still here"


@pytest.mark.single_node  # instances of several partitions in one transaction: a cluster refuses (test_cluster.py)
async def test_several_models_apply_not_at_all_when_one_changed_meanwhile(redis):
    first, second = User(name="A", tags=["x"]), User(name="B")
    await first.save()
    await second.save()
    await first.refresh()

    async def pop_one_write_other() -> None:
        async with second.pipeline():
            assert await first.tags.apop() == "x"
            await second.name.set("B2")

            async def append_y() -> None:
                await (await User.get(first.key)).tags.aappend("y")

            await outside_the_pipeline(append_y)

    with pytest.raises(ConcurrencyError):
        await pop_one_write_other()
    assert (await User.get(second.key)).name == "B"
    assert (await User.get(first.key)).tags == ["x", "y"]
    assert (first.tags, second.name) == (["x"], "B")


@pytest.mark.single_node  # instances of several partitions in one transaction: a cluster refuses (test_cluster.py)
async def test_several_models_fail_together_when_one_document_is_gone(redis):
    present, gone = User(name="A"), User(name="B")
    await present.save()
    await gone.save()
    await User.try_delete(gone.key)

    async def write_both() -> None:
        async with present.pipeline():
            await present.name.set("A2")
            await gone.name.set("B2")

    with pytest.raises(DocumentNotFoundError):
        await write_both()
    assert (await User.get(present.key)).name == "A"


async def test_a_task_started_inside_the_block_writes_directly_once_it_has_ended(redis):
    user = User(name="John")
    await user.save()
    started = asyncio.Event()
    release = asyncio.Event()

    async def late_writer() -> None:
        started.set()
        await release.wait()
        await user.tags.aappend("late")

    async with user.pipeline():
        task = asyncio.create_task(late_writer())  # inherits the pipeline's context
        await started.wait()
    release.set()
    await task
    assert (await User.get(user.key)).tags == ["late"]


async def test_a_pipeline_inside_a_pipeline_joins_it(redis):
    user = User(name="John")
    await user.save()
    async with user.pipeline() as outer:
        await outer.tags.aappend("a")
        async with user.pipeline() as inner:
            await inner.tags.aappend("b")
        assert await redis.xlen(user.stream_key) == 1  # the inner exit sent nothing
    assert (await User.get(user.key)).tags == ["a", "b"]


@pytest.mark.single_node  # instances of several partitions in one transaction: a cluster refuses (test_cluster.py)
async def test_try_delete_is_queued_too_and_answers_whether_it_existed(redis):
    keep, doomed = User(name="keep"), User(name="doomed")
    await keep.save()
    await doomed.save()
    async with keep.pipeline():
        assert await User.try_delete(doomed.key) is True
        assert await User.try_delete(User.key_for("nobody")) is False
        assert await redis.exists(doomed.key) == 1  # queued, not yet applied
    assert await redis.exists(doomed.key) == 0
    assert [e.type for e in await doomed.history()] == ["saved", "deleted"]
    assert await redis.exists(User.key_for("nobody").replace("}:", "}#events:")) == 0


async def test_an_increase_is_not_a_conflict_and_the_model_shows_every_writer_s_sum(redis):
    user = User(name="John", counter=10)
    await user.save()
    other = await User.get(user.key)
    async with user.pipeline() as pipelined:
        assert await pipelined.counter.increase(5) == 15  # from local state
        await outside_the_pipeline(lambda: other.counter.increase(100))
    assert user.counter == 115 == (await User.get(user.key)).counter
    assert user.version == 3  # saved, their increase, ours
    assert fold(await user.history()) == await document(redis, user.key) == user.redis_dump()


async def test_a_write_overtaken_by_another_writer_leaves_the_model_as_redis_holds_it(redis):
    user = User(name="John", tags=["a"])
    await user.save()
    other = await User.get(user.key)
    async with user.pipeline() as pipelined:
        await pipelined.tags.aappend("mine")
        await outside_the_pipeline(lambda: other.tags.aappend("theirs"))
        assert pipelined.tags == ["a", "mine"]
    assert user.tags == ["a", "theirs", "mine"]
    assert user.redis_dump() == await document(redis, user.key)
