"""The operations table: complete, and each row's fold step matches its golden cases."""

from __future__ import annotations

import math
import re
from importlib import resources
from pathlib import Path

import pytest
from golden_cases import BEFORE, CASES, Case, Sample

from streamstore import operations as ops
from streamstore import paths
from streamstore.errors import (
    CorruptEventError,
    EmptyContainerError,
    FieldTypeError,
    IndexTypeError,
    UnsafeKeyError,
    ValueRangeError,
)
from streamstore.events import Event
from streamstore.operations import OPERATIONS, Op
from streamstore.pipeline import enter, leave
from streamstore.projections import fold

LUA = resources.files("streamstore").joinpath("apply.lua").read_text()
EVENTS_DOC = (Path(__file__).parents[2] / "docs" / "events.md").read_text()


def event(seq: int, kind: str, path: str, data: object) -> Event:
    return Event(id=f"1-{seq}", seq=seq, type=kind, path=path, data=data, ts=1)


def test_every_operation_has_a_lua_handler_and_nothing_else_does():
    handlers = set(re.findall(r"^OPS\['([a-z_.]+)'\] = ", LUA, flags=re.MULTILINE))
    assert handlers == set(OPERATIONS)


def test_every_operation_has_a_golden_case():
    assert {case.type for case in CASES} == set(OPERATIONS)


def _documented_rows() -> dict[str, tuple[str, str]]:
    """The event types table of docs/events.md: type -> (path column, data column)."""
    section = EVENTS_DOC.split("## Event types", 1)[1].split("\n## ", 1)[0]
    rows = re.findall(r"^\| `([a-z_.]+)` \| ([^|]+) \| ([^|]+) \|", section, flags=re.MULTILINE)
    return {kind: (path.strip(), data.strip()) for kind, path, data in rows}


def test_docs_list_every_event_type_with_its_data_keys_and_path():
    documented = _documented_rows()
    assert set(documented) == set(OPERATIONS)
    for kind, row in OPERATIONS.items():
        path, data = documented[kind]
        assert path == ("`$`" if row.whole_document else "field"), kind
        assert set(re.findall(r'"(\w+)":', data)) == set(row.data), kind


@pytest.mark.parametrize("case", CASES, ids=lambda c: c.name)
def test_golden_data_holds_exactly_the_keys_of_its_row(case: Case):
    data = case.data_for(None)
    if case.type == "saved":  # its data is the document
        assert data == BEFORE
    else:
        assert set(data) == set(OPERATIONS[case.type].data)


#: Where the golden event data holds what the mutation sent, per type with a ``sent``.
SENT_IN_DATA = {
    "saved": lambda data: data,
    "duplicated": lambda data: data["document"],
    "set": lambda data: data["value"],
    "list.append": lambda data: data["value"],
    "list.extend": lambda data: data["values"],
    "list.insert": lambda data: data["value"],
    "dict.set_item": lambda data: data["value"],
    "dict.update": lambda data: data["items"],
}


def test_rows_that_read_back_are_the_ones_that_send_values():
    assert {kind for kind, row in OPERATIONS.items() if row.sent} == set(SENT_IN_DATA)


async def queued_by(case: Case) -> tuple[Op, ...]:
    """Run a golden mutation inside a pipeline: what it queues, without Redis."""
    model = Sample()
    pipeline, token = enter()
    try:
        await case.mutate(model)
    finally:
        leave(pipeline, token)
    return pipeline.queued(model)


@pytest.mark.parametrize("case", [c for c in CASES if not c.on_result], ids=lambda c: c.name)
async def test_golden_mutation_builds_the_op_its_event_records(case: Case):
    """Mutation -> Op, the other direction of the golden cases (events -> fold), no Redis."""
    (op,) = await queued_by(case)
    assert (op.type, paths.event_path(op.path)) == (case.type, case.path)
    row = OPERATIONS[op.type]
    if row.sent is not None:
        # what it sent is what the event records (RedisJSON may store a double a unit off)
        assert within_a_unit(row.sent(op.args), SENT_IN_DATA[op.type](case.data_for(None)))


@pytest.mark.parametrize("case", [c for c in CASES if not c.on_result], ids=lambda c: c.name)
async def test_golden_mutation_leaves_the_model_as_the_document_after_it(case: Case):
    """The local step of every row changes the model as the event changes the document."""
    model = Sample()
    pipeline, token = enter()
    try:
        await case.mutate(model)
    finally:
        leave(pipeline, token)
    if case.after is not None:
        assert within_a_unit(model.redis_dump(), case.after)


def within_a_unit(sent: object, stored: object) -> bool:
    """Equal JSON values, but for doubles RedisJSON may store a unit in the last place off."""
    if type(sent) is float and type(stored) is float:
        return abs(sent - stored) <= math.ulp(sent)
    if isinstance(sent, dict) and isinstance(stored, dict):
        return sent.keys() == stored.keys() and all(
            within_a_unit(sent[key], stored[key]) for key in sent
        )
    if isinstance(sent, list) and isinstance(stored, list):
        return len(sent) == len(stored) and all(map(within_a_unit, sent, stored))
    return sent == stored


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
    assert paths.event_path(()) == "$"
    assert paths.event_path(("profile", "skills")) == "$.profile.skills"
    assert paths.parse_event_path("$.profile.skills") == ("profile", "skills")
    assert paths.parse_event_path("$") == ()
    with pytest.raises(CorruptEventError):
        paths.parse_event_path("profile")


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
    assert paths.item_json_path(("m",), key) == expected


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
