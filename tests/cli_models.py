"""Sample models the CLI tests name as ``cli_models:<Class>`` (tests/ is on sys.path)."""

from __future__ import annotations

from pydantic import BaseModel, Field

from streamstore import BaseRedisModel, rename_field


class Profile(BaseModel):
    skills: list[str] = Field(default_factory=list)


class Customer(BaseRedisModel):
    name: str
    visits: int = 0
    tags: list[str] = Field(default_factory=list)
    profile: Profile = Field(default_factory=Profile)

    class Meta:
        key_prefix = "CliCustomer"


class Ticket(BaseRedisModel):
    """Four partitions, not the default 16: keys the CLI must read without the class."""

    title: str

    class Meta:
        partitions = 4


class PersonV1(BaseRedisModel):
    """The first schema of `Person`: wrote ``name``."""

    name: str
    photo: bytes = b""

    class Meta:
        key_prefix = "Person"


class Person(BaseRedisModel):
    """The current schema: ``name`` became ``full_name``; old events are upcast."""

    full_name: str
    photo: bytes = b""

    class Meta:
        key_prefix = "Person"
        schema_version = 2
        upcasters = {1: rename_field("name", "full_name")}  # noqa: RUF012 (Meta options)


NOT_A_MODEL = "just a string"


class Elsewhere(Customer):
    """`Customer`'s data, with a `Meta.redis` nobody listens on: the CLI's --url must win."""

    class Meta:
        key_prefix = "CliCustomer"
        redis = "redis://127.0.0.1:1/0"
