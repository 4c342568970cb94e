"""Schema evolution: a renamed field's old events replay into the new model, end to end."""

from __future__ import annotations

import pytest
from pydantic import BaseModel, Field, ValidationError

from streamstore import (
    BaseRedisModel,
    CorruptDocumentError,
    add_field,
    remove_field,
    rename_field,
)


class Settings(BaseModel):
    theme: str = "light"


class CustomerV1(BaseRedisModel):
    """The model as version 1 of the app wrote it."""

    name: str
    legacy_code: str = ""
    settings: Settings = Field(default_factory=Settings)

    class Meta:
        key_prefix = "EvolvingCustomer"


#: What changed from version 1 to 2: ``name`` became ``full_name``, ``tier`` was added.
V1_TO_V2 = [rename_field("name", "full_name"), add_field("tier", "basic")]


class CustomerV2(BaseRedisModel):
    """Version 2: ``name`` became ``full_name``, ``tier`` was added, ``legacy_code`` dropped."""

    full_name: str
    tier: str = "basic"
    settings: Settings = Field(default_factory=Settings)

    class Meta:
        key_prefix = "EvolvingCustomer"
        schema_version = 2
        upcasters = {1: V1_TO_V2}  # noqa: RUF012 (read once, when the class is made)


class CustomerV3(CustomerV2):
    """Version 3: the same fields; old events that set ``legacy_code`` now leave replay."""

    class Meta:
        key_prefix = "EvolvingCustomer"
        schema_version = 3
        upcasters = {1: V1_TO_V2, 2: remove_field("legacy_code")}  # noqa: RUF012


async def v1_customer() -> CustomerV1:
    old = CustomerV1(name="Ann", legacy_code="A-1")
    await old.save()
    await old.name.set("Ann Lee")
    await old.legacy_code.set("A-2")
    await old.settings.theme.set("dark")
    return old


async def test_old_events_replay_into_the_new_model_and_rebuild_migrates_documents(redis):
    old = await v1_customer()
    assert [e.model_version for e in await old.history()] == [1, 1, 1, 1]

    # The v1 document does not load as v2 until it is rebuilt from the upcast events.
    with pytest.raises(CorruptDocumentError):
        await CustomerV2.get(old.key)
    assert (await CustomerV2.verify(old.pk)).differences == ("$.full_name", "$.tier", "$.name")
    assert (await CustomerV2.rebuild_all()).rewritten == 1
    migrated = await CustomerV2.get(old.key)
    assert migrated == CustomerV2(full_name="Ann Lee", settings=Settings(theme="dark"))

    # Time travel reads the old events through the upcasters too.
    assert (await CustomerV2.as_of(old.pk, seq=1)).full_name == "Ann"

    # New events carry the new version; the renamed field's history spans both names.
    await migrated.full_name.set("Ann Lee-Smith")
    raw = await migrated.history(raw=True)
    assert [(e.path, e.model_version) for e in raw[1:]] == [
        ("$.name", 1),
        ("$.legacy_code", 1),
        ("$.settings.theme", 1),
        ("$.full_name", 2),
    ]
    assert [e.seq for e in await migrated.full_name.history()] == [1, 2, 5]
    assert (await CustomerV2.verify(old.pk)).equal


async def test_a_removed_field_s_events_leave_replay_and_versions_chain(redis):
    old = await v1_customer()
    assert (await CustomerV3.rebuild(old.pk)).rewritten
    current = await CustomerV3.get(old.key)
    assert current.model_dump() == {
        "full_name": "Ann Lee",
        "tier": "basic",
        "settings": {"theme": "dark"},
    }
    assert [e.seq for e in await current.history()] == [1, 2, 4]  # seq 3 set legacy_code
    assert (await CustomerV3.verify(old.pk)).equal


async def test_without_an_upcaster_the_old_history_does_not_fit_the_new_model(redis):
    class CustomerNoUpcast(BaseRedisModel):
        full_name: str

        class Meta:
            key_prefix = "EvolvingCustomer"
            schema_version = 2

    old = await v1_customer()
    with pytest.raises(CorruptDocumentError) as caught:
        await CustomerNoUpcast.as_of(old.pk, seq=1)
    assert isinstance(caught.value.__cause__, ValidationError)
