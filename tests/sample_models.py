"""Models of the seed README (redis-pydantic) shared by the model API tests."""

from __future__ import annotations

import json
from datetime import datetime

from pydantic import BaseModel, Field

from streamstore import BaseRedisModel


class UserProfile(BaseModel):
    bio: str = ""
    skills: list[str] = Field(default_factory=list)
    settings: dict[str, bool] = Field(default_factory=dict)


class Address(BaseModel):
    street: str
    city: str
    country: str = "US"


class UserStats(BaseRedisModel):
    login_count: int = 0
    preferences: dict[str, bool] = Field(default_factory=dict)


class User(BaseRedisModel):
    name: str
    age: int = 0
    is_active: bool = True
    data: bytes = b""
    seen: datetime | None = None
    tags: list[str] = Field(default_factory=list)
    metadata: dict[str, str] = Field(default_factory=dict)
    preferences: dict[str, list[str]] = Field(default_factory=dict)
    profile: UserProfile = Field(default_factory=UserProfile)
    address: Address = Field(default_factory=lambda: Address(street="1 Main St", city="Boston"))
    stats: UserStats = Field(default_factory=UserStats)


class InnerModel(BaseModel):
    items: list[str] = Field(default_factory=list)
    counter: int = 0


class MiddleModel(BaseModel):
    inner: InnerModel = Field(default_factory=InnerModel)
    tags: list[str] = Field(default_factory=list)


class OuterModel(BaseRedisModel):
    middle: MiddleModel = Field(default_factory=MiddleModel)
    data: dict[str, int] = Field(default_factory=dict)


async def stored(redis, key):
    raw = await redis.execute_command("JSON.GET", key)
    return None if raw is None else json.loads(raw)
