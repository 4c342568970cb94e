"""The pure read side: document diffs, history filters, key mapping and upcasters (no Redis)."""

from __future__ import annotations

import re
from datetime import UTC, datetime, timedelta, timezone
from typing import Any

import pytest

from streamstore import (
    ArgumentTypeError,
    ArgumentValueError,
    ConfigurationError,
    UnsafeKeyError,
    UsageError,
)
from streamstore.events import Event
from streamstore.keys import KeySpace, instance_keys_of
from streamstore.projections import fold
from streamstore.projections.as_of import replay_at
from streamstore.projections.diff import differences, redisjson_path, render_path
from streamstore.projections.history import HistoryQuery, epoch_ms
from streamstore.projections.upcasting import (
    UpcasterChain,
    add_field,
    remove_field,
    rename_field,
)


def event(seq: int, kind: str, path: str, data: object, mv: int = 1) -> Event:
    return Event(id=f"1-{seq}", seq=seq, type=kind, path=path, data=data, ts=1, model_version=mv)


class TestDifferences:
    def test_equal_documents_have_none(self):
        doc = {"a": 1, "b": [1.5, {"c": None}], "d": "x"}
        assert list(differences(doc, {"d": "x", "b": [1.5, {"c": None}], "a": 1})) == []

    @pytest.mark.parametrize(
        ("found", "expected"),
        [(1, 1.0), (True, 1), (0, False), (1.0, 1)],
    )
    def test_numbers_of_another_json_type_differ(self, found, expected):
        assert list(differences({"n": found}, {"n": expected})) == [("n",)]

    def test_paths_name_the_outermost_difference_in_document_order(self):
        found = {"a": [1, 2], "b": {"x": 1, "gone": 0}, "c": [1, 2, 3]}
        expected = {"a": [1, 3], "b": {"x": 2, "new": 0}, "c": [1, 2]}
        assert list(differences(found, expected)) == [
            ("a", 1),
            ("b", "x"),
            ("b", "new"),
            ("b", "gone"),  # keys only the stored document has come after the expected ones
            ("c",),
        ]

    def test_paths_render_for_people_and_for_redisjson(self):
        path = ("profile", "skills", 2, "a b")
        assert render_path(path) == '$.profile.skills[2]["a b"]'
        assert redisjson_path(path) == "$['profile']['skills'][2]['a b']"
        assert redisjson_path(("it's",)) == '$["it\'s"]'
        with pytest.raises(UnsafeKeyError):
            redisjson_path(("back\\slash",))


class TestHistoryQuery:
    def test_seq_bounds_are_inclusive(self):
        query = HistoryQuery(start_seq=2, end_seq=3)
        assert [s for s in range(1, 6) if query.wanted(event(s, "set", "$.a", {}))] == [2, 3]

    def test_reading_stops_past_the_last_wanted_seq_in_either_direction(self):
        forward, backward = HistoryQuery(end_seq=3), HistoryQuery(start_seq=3, reverse=True)
        assert not forward.past_the_end(event(3, "set", "$.a", {}))
        assert forward.past_the_end(event(4, "set", "$.a", {}))
        assert backward.past_the_end(event(2, "set", "$.a", {}))

    def test_time_bounds_become_inclusive_stream_ids(self):
        since = datetime(2026, 1, 1, tzinfo=UTC)
        query = HistoryQuery(since=since, until=since + timedelta(seconds=1))
        assert query.id_range() == ("1767225600000-0", "1767225601000")
        assert HistoryQuery().id_range() == ("-", "+")

    def test_times_must_be_aware(self):
        with pytest.raises(UsageError, match="timezone"):
            HistoryQuery(since=datetime(2026, 1, 1))
        assert epoch_ms(datetime(1970, 1, 1, 1, tzinfo=timezone(timedelta(hours=1)))) == 0

    def test_a_negative_limit_is_refused(self):
        with pytest.raises(UsageError, match="limit"):
            HistoryQuery(limit=-1)

    @pytest.mark.parametrize(
        ("path", "touched"),
        [
            ("$", True),  # whole-document events touch every field
            ("$.profile", True),  # a parent was replaced
            ("$.profile.skills", True),
            ("$.profile.skills.x", True),  # a child changed
            ("$.profile.name", False),  # a sibling
            ("$.tags", False),
        ],
    )
    def test_a_field_filter_keeps_events_on_its_parents_itself_and_its_children(
        self, path, touched
    ):
        assert event(1, "set", path, {}).touches(("profile", "skills")) is touched


class TestInstanceKeysOf:
    def test_a_document_key_gives_every_key_of_its_instance_without_the_model(self):
        keys = KeySpace("User", 16).for_pk("a}:b")
        assert instance_keys_of(keys.doc) == keys

    @pytest.mark.parametrize("key", ["{User:1}#events:x", "User:1", "{User:1}", ""])
    def test_anything_else_is_refused(self, key):
        with pytest.raises(ValueError, match="not a streamstore document key"):
            instance_keys_of(key)

    @pytest.mark.parametrize(
        ("key", "error"),
        [
            ("{User:1}#events:x", ArgumentValueError),
            ("", ArgumentValueError),
            ("\ud800", ArgumentValueError),
            (b"{User:1}:x", ArgumentTypeError),
            (None, ArgumentTypeError),
        ],
    )
    def test_bad_input_is_a_usage_error_that_names_it(self, key, error):
        with pytest.raises(error, match="document key") as caught:
            instance_keys_of(key)
        assert isinstance(caught.value, UsageError)

    def test_a_class_parses_its_own_stream_keys_only(self):
        space = KeySpace("User", 16)
        keys = space.for_pk("p")
        assert space.pk_from_stream_key(keys.stream) == "p"
        assert space.pk_from_stream_key(keys.doc) is None
        assert KeySpace("Use", 16).pk_from_stream_key(keys.stream) is None


#: A client that fails if used: the checks below must come before any Redis call.
NO_CLIENT: Any = object()


class TestReplayAtArguments:
    """replay_at refuses bad arguments before it sends anything (so no Redis is needed here)."""

    @pytest.mark.parametrize(
        ("arguments", "error", "message"),
        [
            ({}, ArgumentTypeError, "exactly one of seq= and at="),
            ({"seq": 1, "at": datetime(2026, 1, 1, tzinfo=UTC)}, ArgumentTypeError, "exactly one"),
            ({"seq": "3"}, ArgumentTypeError, "seq must be an int, not str '3'"),
            ({"seq": True}, ArgumentTypeError, "seq must be an int, not bool"),
            ({"seq": 1.0}, ArgumentTypeError, "seq must be an int, not float"),
            ({"seq": -1}, ArgumentValueError, "seq must be from 0 to 9007199254740991, not -1"),
            ({"at": "2026-01-01"}, ArgumentTypeError, "at must be a datetime, not str"),
            ({"at": datetime(2026, 1, 1)}, UsageError, "no timezone"),
        ],
    )
    async def test_bad_arguments_are_usage_errors(self, arguments, error, message):
        with pytest.raises(error, match=re.escape(message)) as caught:
            await replay_at(NO_CLIENT, KeySpace("User", 16).for_pk("p"), **arguments)
        assert isinstance(caught.value, UsageError)


V1_HISTORY = [
    event(1, "saved", "$", {"name": "Ann", "profile": {"nick": "a", "age": 3}}),
    event(2, "set", "$.name", {"value": "Bo"}),
    event(3, "set", "$.profile", {"value": {"nick": "b", "age": 4}}),
    event(4, "set", "$.profile.nick", {"value": "c"}),
    event(5, "snapshot", "$", {"document": {"name": "Bo", "profile": {"nick": "c", "age": 4}}}),
    event(6, "duplicated", "$", {"document": {"name": "X", "profile": None}, "source": "k"}),
]


def upcast_all(chain: UpcasterChain, events: list[Event]) -> list[Event]:
    return [up for e in events if (up := chain(e)) is not None]


class TestUpcasters:
    def test_a_renamed_field_is_renamed_in_documents_paths_and_parent_values(self):
        chain = UpcasterChain(2, {1: rename_field("name", "full_name")}, "User")
        up = upcast_all(chain, V1_HISTORY)
        assert list(up[0].data) == ["full_name", "profile"]  # key order kept
        assert up[1].path == "$.full_name"
        assert up[4].data["document"]["full_name"] == "Bo"
        assert up[5].data == {"document": {"full_name": "X", "profile": None}, "source": "k"}
        assert {e.model_version for e in up} == {2}
        assert fold(up[:5]) == {"full_name": "Bo", "profile": {"nick": "c", "age": 4}}

    def test_a_nested_rename_reaches_into_a_parent_set(self):
        chain = UpcasterChain(2, {1: rename_field("profile.nick", "profile.nickname")}, "U")
        up = upcast_all(chain, V1_HISTORY)
        assert up[2].data == {"value": {"nickname": "b", "age": 4}}
        assert up[3].path == "$.profile.nickname"
        assert fold(up[:4]) == {"name": "Bo", "profile": {"nickname": "c", "age": 4}}

    def test_added_and_removed_fields(self):
        chain = UpcasterChain(
            3, {1: add_field("tags", []), 2: [remove_field("profile.age")]}, "User"
        )
        up = upcast_all(chain, V1_HISTORY[:4])
        assert fold(up) == {"name": "Bo", "profile": {"nick": "c"}, "tags": []}
        # Each event gets its own copy of the default: folding one never changes another.
        assert up[0].data["tags"] is not chain(V1_HISTORY[0]).data["tags"]

    def test_events_on_a_removed_field_leave_replay(self):
        chain = UpcasterChain(2, {1: remove_field("profile")}, "User")
        assert [e.seq for e in upcast_all(chain, V1_HISTORY)] == [1, 2, 5, 6]

    def test_events_of_the_current_version_pass_untouched(self):
        chain = UpcasterChain(2, {1: rename_field("name", "full_name")}, "User")
        current = event(7, "set", "$.name", {"value": "z"}, mv=2)
        assert chain(current) is current

    def test_only_the_steps_from_the_event_version_on_apply(self):
        chain = UpcasterChain(
            3, {1: rename_field("name", "nick"), 2: rename_field("nick", "handle")}, "User"
        )
        assert chain(event(1, "set", "$.name", {}, mv=1)).path == "$.handle"
        assert chain(event(1, "set", "$.nick", {}, mv=2)).path == "$.handle"

    @pytest.mark.parametrize(
        ("version", "upcasters", "message"),
        [
            (0, {}, "schema_version"),
            (2, {2: rename_field("a", "b")}, "from 1 to 1"),
            (2, {1: "not callable"}, "callable"),
        ],
    )
    def test_bad_settings_are_configuration_errors(self, version, upcasters, message):
        with pytest.raises(ConfigurationError, match=message):
            UpcasterChain(version, upcasters, "User")

    def test_a_rename_across_parents_is_refused(self):
        with pytest.raises(ConfigurationError, match="share a parent"):
            rename_field("profile.nick", "nick")
