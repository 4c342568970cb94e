"""Demo: save and mutate a model, then print its events from the stream and replay them.

Runs against a private redis-server with RedisJSON started for the demo, or against
``$REDIS_URL`` when set.
"""

from __future__ import annotations

import asyncio
import json
import os
from contextlib import ExitStack

from pydantic import BaseModel, Field

from streamstore import BaseRedisModel, event_context
from streamstore.projections import fold
from streamstore.testing import RedisServer


class Profile(BaseModel):
    bio: str = ""
    skills: list[str] = Field(default_factory=list)


class User(BaseRedisModel):
    name: str
    age: int = 0
    tags: list[str] = Field(default_factory=list)
    metadata: dict[str, str] = Field(default_factory=dict)
    profile: Profile = Field(default_factory=Profile)


async def main() -> None:
    user = User(name="John", age=30)
    with event_context(actor="demo", correlation_id="req-1"):
        await user.save()
        await user.name.set("John Doe")
        await user.age.increase()
        await user.tags.aextend(["python", "redis"])
        await user.metadata.aupdate(role="developer", team="core")
        await user.profile.skills.aappend("event sourcing")
        popped = await user.tags.apop()
        print(f"popped tag: {popped!r}")

    print(f"\ndocument {user.key}:")
    print(json.dumps(user.redis_dump(), indent=2))

    events = await user.history()
    print(f"\nstream {user.stream_key}:")
    print(f"{'seq':>3}  {'id':<16}  {'type':<12}  {'path':<16}  data")
    for event in events:
        data = json.dumps(event.data)
        print(f"{event.seq:>3}  {event.id:<16}  {event.type:<12}  {event.path:<16}  {data}")
    print(f"\nmeta of the last event: {dict(events[-1].meta)}")

    stored = await User.get(user.key)
    replayed = fold(events)
    print(f"fold(stream) == document: {replayed == stored.redis_dump()}")
    then = await User.as_of(user.pk, seq=3)
    print(f"as of seq 3: name={then.name!r} age={then.age} tags={then.tags}")
    print(f"events that touched tags: {[e.seq for e in await user.tags.history()]}")
    report = await User.verify(user.pk)
    print(f"verify: equal={report.equal}, {report.replayed} events replayed")


if __name__ == "__main__":
    with ExitStack() as stack:
        if "REDIS_URL" not in os.environ:
            server = stack.enter_context(RedisServer())
            os.environ["REDIS_URL"] = server.url
            print(f"private Redis with RedisJSON at {server.url}\n")
        asyncio.run(main())
