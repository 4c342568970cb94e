"""Field paths: how a field is named in events (``$.profile.skills``) and addressed in RedisJSON."""

from __future__ import annotations

from streamstore.errors import CorruptEventError, UnsafeKeyError

__all__ = [
    "FieldPath",
    "bracket_key",
    "event_path",
    "item_json_path",
    "json_path",
    "parse_event_path",
]

#: A field's position in the document: model field names from the root, e.g. ("profile", "skills").
FieldPath = tuple[str, ...]


def event_path(path: FieldPath) -> str:
    """Render a field path as the event's ``path``: ``$`` or ``$.profile.skills``."""
    return "".join(("$", *(f".{name}" for name in path)))


def parse_event_path(text: str) -> FieldPath:
    """Parse an event ``path`` back into field names."""
    if text == "$":
        return ()
    if not text.startswith("$."):
        raise CorruptEventError(f"event path must start with '$.': {text!r}")
    return tuple(text[2:].split("."))


def json_path(path: FieldPath) -> str:
    """Render a field path as a RedisJSON path (bracket form: safe for any identifier)."""
    return "".join(("$", *(f"['{name}']" for name in path)))


def item_json_path(path: FieldPath, key: str) -> str:
    """Return the RedisJSON path of ``key`` inside the dict at ``path`` (see `bracket_key`)."""
    return json_path(path) + bracket_key(key)


def bracket_key(key: str) -> str:
    """Return the RedisJSON path step that selects ``key`` of an object: ``['key']``.

    RedisJSON reads the text between the quotes literally, has no working escape sequence, and
    drops leading spaces; so the key is wrapped in whichever quote it does not contain, and a
    key with a backslash, with both quotes, or starting with a space cannot be addressed:
    `UnsafeKeyError`, raised before anything is written.
    """
    if "\\" in key or ("'" in key and '"' in key) or key.startswith(" "):
        raise UnsafeKeyError(
            f"dict key {key!r} cannot be addressed in a RedisJSON path "
            "(it contains a backslash or both quote characters, or starts with a space)"
        )
    quote = '"' if "'" in key else "'"
    return f"[{quote}{key}{quote}]"
