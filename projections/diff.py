"""Strict comparison of JSON documents: where a folded document and a stored one differ."""

from __future__ import annotations

import json
from collections.abc import Iterator

from streamstore.operations import JSON
from streamstore.paths import bracket_key

__all__ = ["JsonPath", "differences", "pointer", "redisjson_path", "render_path"]

#: A position inside a JSON value: object keys and list indexes from the root.
JsonPath = tuple[str | int, ...]


def differences(found: JSON, expected: JSON, path: JsonPath = ()) -> Iterator[JsonPath]:
    """Yield the paths where ``found`` and ``expected`` differ, the outermost ones only.

    Stricter than ``==``: ``1``, ``1.0`` and ``True`` are three different JSON values, and
    object key order is ignored (RedisJSON keeps insertion order, JSON does not promise one).
    """
    if type(found) is not type(expected):
        yield path
    elif isinstance(expected, dict):
        for key in [*expected, *(key for key in found if key not in expected)]:
            if key not in found or key not in expected:
                yield (*path, key)
            else:
                yield from differences(found[key], expected[key], (*path, key))
    elif isinstance(expected, list):
        if len(found) != len(expected):
            yield path
            return
        for index, (mine, theirs) in enumerate(zip(found, expected, strict=True)):
            yield from differences(mine, theirs, (*path, index))
    elif found != expected:
        yield path


def pointer(document: JSON, path: JsonPath) -> JSON:
    """Return the value at ``path`` inside ``document``."""
    for step in path:
        document = document[step]
    return document


def render_path(path: JsonPath) -> str:
    """Render a path for people: ``$.profile.skills[2]``, ``$.labels['a b']``."""
    parts = ["$"]
    for step in path:
        if isinstance(step, int):
            parts.append(f"[{step}]")
        elif step.isidentifier():
            parts.append(f".{step}")
        else:
            parts.append(f"[{json.dumps(step, ensure_ascii=False)}]")
    return "".join(parts)


def redisjson_path(path: JsonPath) -> str:
    """Render a path as a RedisJSON path; `UnsafeKeyError` for a key it cannot address."""
    return "$" + "".join(
        f"[{step}]" if isinstance(step, int) else bracket_key(step) for step in path
    )
