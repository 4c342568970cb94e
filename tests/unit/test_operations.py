"""The operations table: complete, and each row's fold step matches its golden cases."""

from __future__ import annotations

import re
from importlib import resources

import pytest
from golden_cases import BEFORE, CASES, Case

from streamstore import operations as ops
from streamstore.errors import CorruptEventError, UnsafeKeyError
from streamstore.events import Event
from streamstore.operations import OPERATIONS
from streamstore.projections import fold

LUA = resources.files("streamstore").joinpath("apply.lua").read_text()


def event(seq: int, kind: str, path: str, data: object) -> Event:
    return Event(id=f"1-{seq}", seq=seq, type=kind, path=path, data=data, ts=1)


def test_every_operation_has_a_lua_handler_and_nothing_else_does():
    handlers = set(re.findall(r"^OPS\['([a-z_.]+)'\] = ", LUA, flags=re.MULTILINE))
    assert handlers == set(OPERATIONS)


def test_every_operation_has_a_golden_case():
    assert {case.type for case in CASES} == set(OPERATIONS)


@pytest.mark.parametrize("case", CASES, ids=lambda c: c.name)
def test_fold_of_golden_event_gives_golden_document(case: Case):
    history = [event(1, "saved", "$", BEFORE), event(2, case.type, case.path, case.data_for(None))]
    assert fold(history) == case.after


@pytest.mark.parametrize("case", CASES, ids=lambda c: c.name)
def test_fold_of_every_prefix_is_the_document_at_that_point(case: Case):
    history = [event(1, "saved", "$", BEFORE), event(2, case.type, case.path, case.data_for(None))]
    assert fold(history[:0]) is None
    assert fold(history[:1]) == BEFORE
    assert fold(history[:2]) == case.after


def test_fold_does_not_share_state_with_the_events():
    saved = event(1, "saved", "$", {"tags": []})
    first = fold([saved, event(2, "list.append", "$.tags", {"value": 1})])
    assert first == {"tags": [1]}
    assert saved.data == {"tags": []}
    assert fold([saved]) == {"tags": []}


def test_field_event_on_absent_instance_is_a_corrupt_history():
    with pytest.raises(CorruptEventError, match="applies to no document"):
        fold([event(1, "set", "$.name", {"value": "x"})])


def test_event_on_a_path_the_document_lacks_is_a_corrupt_history():
    with pytest.raises(CorruptEventError, match="does not apply"):
        fold([event(1, "saved", "$", {}), event(2, "list.append", "$.tags", {"value": 1})])


def test_event_paths_render_and_parse_back():
    assert ops.event_path(()) == "$"
    assert ops.event_path(("profile", "skills")) == "$.profile.skills"
    assert ops.parse_event_path("$.profile.skills") == ("profile", "skills")
    assert ops.parse_event_path("$") == ()
    with pytest.raises(CorruptEventError):
        ops.parse_event_path("profile")


@pytest.mark.parametrize(
    ("key", "expected"),
    [
        ("plain", "$['m']['plain']"),
        ("a.b", "$['m']['a.b']"),
        ('say "hi"', "$['m']['say \"hi\"']"),
        ("it's", "$['m'][\"it's\"]"),
        ("", "$['m']['']"),
        ("ünï ☃", "$['m']['ünï ☃']"),
    ],
)
def test_dict_keys_are_quoted_with_the_quote_they_lack(key: str, expected: str):
    assert ops.item_json_path(("m",), key) == expected


@pytest.mark.parametrize("key", ["back\\slash", "both ' and \"", " leading space", " "])
def test_dict_keys_redisjson_cannot_address_are_refused(key: str):
    with pytest.raises(UnsafeKeyError, match="cannot be addressed"):
        ops.dict_set_item(("m",), key, "1")


def test_empty_extend_and_update_are_refused_by_the_constructors():
    with pytest.raises(ValueError, match="at least one"):
        ops.list_extend(("t",), [])
    with pytest.raises(ValueError, match="at least one"):
        ops.dict_update(("m",), [])


def test_only_whole_document_writes_and_forgiving_deletes_need_no_document():
    assert not ops.needs_document(ops.save("{}"))
    assert not ops.needs_document(ops.duplicate("{}", "k", 1))
    assert not ops.needs_document(ops.delete(if_exists=True))
    assert ops.needs_document(ops.delete())
    assert ops.needs_document(ops.list_append(("t",), "1"))
