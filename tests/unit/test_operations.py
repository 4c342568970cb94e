"""The operations table: complete, and each row's fold step matches its golden cases."""

from __future__ import annotations

import re
from importlib import resources

import pytest
from golden_cases import BEFORE, CASES, Case

from streamstore import operations as ops
from streamstore.errors import (
    CorruptEventError,
    EmptyContainerError,
    FieldTypeError,
    IndexTypeError,
    UnsafeKeyError,
    ValueRangeError,
)
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


# --- list indexes and numbers that Redis cannot take: refused by the core constructors --------

INT64_MAX, INT64_MIN = 2**63 - 1, -(2**63)


class Three:
    """An index-like object, as numpy integers are."""

    def __index__(self) -> int:
        return 3


@pytest.mark.parametrize("index", [1.5, 1.0, "0", None, b"1", [0]], ids=repr)
def test_list_constructors_refuse_an_index_that_is_not_an_integer(index: object):
    with pytest.raises(IndexTypeError, match="cannot be interpreted as an integer") as caught:
        ops.list_pop(("t",), index)  # type: ignore[arg-type]
    assert isinstance(caught.value, TypeError)
    with pytest.raises(IndexTypeError, match="cannot be interpreted as an integer"):
        ops.list_insert(("t",), index, '"x"')  # type: ignore[arg-type]


def test_list_constructors_take_indexes_as_a_python_list_does():
    assert ops.list_pop(("t",), True).args == ("1",)
    assert ops.list_pop(("t",), Three()).args == ("3",)
    assert ops.list_insert(("t",), False, '"x"').args == ("0", '"x"')
    assert ops.list_insert(("t",), Three(), '"x"').args == ("3", '"x"')


@pytest.mark.parametrize(
    ("index", "sent"),
    [
        (10**30, ops.LIST_INDEX_MAX),
        (2**63, ops.LIST_INDEX_MAX),
        (ops.LIST_INDEX_MAX + 1, ops.LIST_INDEX_MAX),
        (-(10**30), -ops.LIST_INDEX_MAX),
        (INT64_MIN, -ops.LIST_INDEX_MAX),
        (ops.LIST_INDEX_MAX, ops.LIST_INDEX_MAX),
    ],
    ids=str,
)
def test_an_insert_index_beyond_any_list_is_clamped(index: int, sent: int):
    assert ops.list_insert(("t",), index, "1").args == (str(sent), "1")


@pytest.mark.parametrize(
    "index",
    [ops.LIST_INDEX_MAX + 1, -ops.LIST_INDEX_MAX - 1, 2**63, INT64_MIN - 1, 10**30],
    ids=str,
)
def test_a_pop_index_beyond_any_list_is_out_of_range(index: int):
    with pytest.raises(EmptyContainerError, match="pop index out of range") as caught:
        ops.list_pop(("t",), index)
    assert isinstance(caught.value, IndexError)


@pytest.mark.parametrize("by", ["9223372036854775808", "-9223372036854775809", "1" * 5000])
def test_number_incr_refuses_an_amount_beyond_64_bits(by: str):
    with pytest.raises(ValueRangeError, match="must fit in signed 64 bits"):
        ops.number_incr(("n",), by)


@pytest.mark.parametrize(
    "by", ["NaN", "Infinity", "-Infinity", "true", '"1"', "null", "[1]", "1 1"]
)
def test_number_incr_refuses_an_amount_that_is_not_a_finite_number(by: str):
    with pytest.raises(FieldTypeError):
        ops.number_incr(("n",), by)


@pytest.mark.parametrize("by", [str(INT64_MAX), str(INT64_MIN), "-1", "0.5", "1e308"])
def test_number_incr_takes_integers_within_64_bits_and_finite_floats(by: str):
    assert ops.number_incr(("n",), by).args == (by,)


@pytest.mark.parametrize(
    ("kind", "index"),
    [
        ("list.pop", 1.5),
        ("list.pop", True),
        ("list.pop", "0"),
        ("list.pop", None),
        ("list.pop", -1),
        ("list.pop", 2),
        ("list.pop", 10**30),
        ("list.insert", 0.0),
        ("list.insert", False),
        ("list.insert", -1),
        ("list.insert", 3),
        ("list.insert", 10**30),
    ],
    ids=repr,
)
def test_fold_refuses_a_list_index_the_script_never_records(kind: str, index: object):
    """The script records the effective position, an integer within the list (docs/events.md)."""
    history = [
        event(1, "saved", "$", {"tags": ["a", "b"]}),
        event(2, kind, "$.tags", {"index": index, "value": "a"}),
    ]
    with pytest.raises(CorruptEventError, match=r"event 1-2 \(list\.(pop|insert) at \$\.tags\)"):
        fold(history)


def test_fold_takes_every_position_the_script_can_record():
    saved = event(1, "saved", "$", {"tags": ["a", "b"]})
    assert fold([saved, event(2, "list.insert", "$.tags", {"index": 2, "value": "c"})]) == {
        "tags": ["a", "b", "c"]
    }
    assert fold([saved, event(2, "list.pop", "$.tags", {"index": 1, "value": "b"})]) == {
        "tags": ["a"]
    }


@pytest.mark.parametrize("value", ["1", None, True, [1]], ids=repr)
def test_fold_refuses_an_increment_whose_result_is_not_a_number(value: object):
    history = [
        event(1, "saved", "$", {"n": 1}),
        event(2, "number.incr", "$.n", {"by": 1, "value": value}),
    ]
    with pytest.raises(CorruptEventError, match=r"number\.incr"):
        fold(history)
