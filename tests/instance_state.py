"""What Redis holds for instances: the before/after snapshot the all-or-nothing tests compare."""

from __future__ import annotations

from typing import Any

from streamstore import BaseRedisModel


async def instance_state(redis: Any, *models: BaseRedisModel) -> list[Any]:
    """Everything a write could change: per instance its document, stream and feed."""
    found = []
    for model in models:
        keys = model._ss_instance_keys()
        found += [
            await redis.execute_command("JSON.GET", keys.doc),
            await redis.xrange(keys.stream),
            await redis.xrange(keys.feed),
        ]
    return found
