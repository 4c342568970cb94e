"""Reading entries another program wrote: every check names the entry, and the fast paths agree."""

from __future__ import annotations

import pytest
from golden_cases import CASES

from streamstore.errors import CorruptEventError
from streamstore.events import (
    Event,
    check_data,
    data_fits,
    decode_bytes_entry,
    decode_entry,
    decode_feed_entry,
    read_entry,
)
from streamstore.projections.subscriber import Change

GOOD = {
    b"seq": b"3",
    b"type": b"list.pop",
    b"path": b"$.tags",
    b"data": b'{"index":0,"value":"a"}',
    b"ts": b"1700000000000",
    b"meta": b'{"actor":"ann"}',
    b"v": b"1",
    b"mv": b"1",
}


def changed(**values: bytes | None) -> dict[bytes, bytes]:
    """GOOD with some fields replaced (None: removed); names with a trailing _ keep their place."""
    fields = dict(GOOD)
    for name, value in values.items():
        if value is None:
            del fields[name.encode()]
        else:
            fields[name.encode()] = value
    return fields


#: Entries another program could have written, and what the error must say about each.
BAD: dict[str, tuple[dict[bytes, bytes], str]] = {
    "fields missing": ({b"seq": b"3", b"type": b"set"}, "lacks fields ['path', 'data'"),
    "seq not an integer": (changed(seq=b"three"), "field 'seq' does not parse as an integer"),
    "seq zero": (changed(seq=b"0"), "field 'seq' does not parse as an integer >= 1"),
    "seq not first": (
        {b"type": GOOD[b"type"], **changed(type=None)},
        "starts with fields ['type'], not ['seq']",
    ),
    "data not UTF-8": (changed(data=b'{"index":0,"value":"\xff"}'), "'data' is not UTF-8"),
    "a name not UTF-8": ({**GOOD, b"\xfe": b"1"}, "field name that is not UTF-8: b'\\xfe'"),
    "path without $": (changed(path=b"tags"), "path 'tags' is not '$' or '$.name"),
    "path with an empty name": (changed(path=b"$.a..b"), "path '$.a..b' is not"),
    "field event at $": (changed(path=b"$"), "of a list.pop event must be a field"),
    "whole-document event at a field": (
        changed(type=b"saved", data=b"{}"),
        "of a saved event must be '$'",
    ),
    "data not JSON": (changed(data=b"{index"), "field 'data' does not parse as JSON"),
    "data not an object": (changed(data=b"[0]"), "data is an array, not an object"),
    "meta not JSON": (changed(meta=b"actor=ann"), "field 'meta' does not parse as JSON"),
    "meta not an object": (changed(meta=b'["ann"]'), "meta is an array, not an object"),
    "unknown type": (changed(type=b"list.shuffle"), "unknown event type 'list.shuffle'"),
    "index missing": (changed(data=b'{"value":"a"}'), "data lacks 'index'"),
    "index a float": (changed(data=b'{"index":0.0,"value":"a"}'), "is a number, not an integer"),
    "index a boolean": (changed(data=b'{"index":false,"value":"a"}'), "is a boolean"),
    "ts not a number": (changed(ts=b"yesterday"), "field 'ts' does not parse"),
    "mv not a number": (changed(mv=b"two"), "field 'mv' does not parse"),
}


@pytest.mark.parametrize("case", CASES, ids=lambda c: c.name)
def test_the_data_every_golden_case_writes_has_its_type_s_shape(case):
    data = case.data_for(None)
    assert check_data(case.type, data) is None and data_fits(case.type, data)


def test_a_well_formed_entry_decodes_the_same_on_every_path():
    event = decode_entry(b"1700000000000-5", GOOD)
    assert (event.seq, event.type, event.data, event.meta) == (
        3,
        "list.pop",
        {"index": 0, "value": "a"},
        {"actor": "ann"},
    )
    entry = read_entry(b"1700000000000-5", GOOD)
    assert entry.change() == ("list.pop", ("tags",), {"index": 0, "value": "a"}, entry.id)
    feed = {b"pk": b"p1", b"id": b"1700000000000-5", **GOOD}
    fast = decode_bytes_entry(feed, Event)
    assert fast == event
    assert decode_feed_entry(b"1700000000001-0", feed) == ("p1", event)


@pytest.mark.parametrize(("fields", "message"), BAD.values(), ids=BAD.keys())
def test_a_bad_stream_entry_is_one_error_naming_the_entry_and_what_is_wrong(fields, message):
    with pytest.raises(CorruptEventError) as found:
        decode_entry(b"1700000000000-7", fields)
    assert str(found.value).startswith("entry 1700000000000-7: ")
    assert message in str(found.value)


@pytest.mark.parametrize(("fields", "message"), BAD.values(), ids=BAD.keys())
def test_replay_s_lazy_reading_refuses_the_same_entries(fields, message):
    with pytest.raises(CorruptEventError, match=r"^entry 1700000000000-7: ") as found:
        read_entry(b"1700000000000-7", fields).change()
    assert message in str(found.value)


@pytest.mark.parametrize(("fields", "message"), BAD.values(), ids=BAD.keys())
def test_the_subscriber_s_fast_path_refuses_what_the_careful_one_does(fields, message):
    feed = {b"pk": b"p1", b"id": b"1700000000000-7", **fields}
    with pytest.raises((KeyError, ValueError, TypeError)):
        decode_bytes_entry(feed, Event)
    with pytest.raises(CorruptEventError, match=r"^entry 1700000000001-0: ") as found:
        decode_feed_entry(b"1700000000001-0", feed)
    # A feed entry starts with pk and id: the same words, with those two in front.
    assert message.replace("['type'", "['pk', 'id', 'type'").replace(
        "not ['seq']", "not ['pk', 'id', 'seq']"
    ) in str(found.value)


@pytest.mark.parametrize(
    ("feed", "message"),
    [
        ({b"id": b"1-0", **GOOD}, "lacks fields ['pk']"),
        ({b"pk": b"\xff", b"id": b"1-0", **GOOD}, "field 'pk' is not UTF-8"),
        ({b"pk": b"p1", b"id": b"one", **GOOD}, "field 'id' is 'one', not a stream entry id"),
        ({b"id": b"1-0", b"pk": b"p1", **GOOD}, "starts with fields ['id', 'pk', 'seq']"),
    ],
    ids=["pk missing", "pk not UTF-8", "id not an id", "pk and id swapped"],
)
def test_a_bad_feed_entry_is_refused_on_both_paths(feed, message):
    with pytest.raises((KeyError, ValueError, TypeError)):  # what the consumer's fast path does
        decode_bytes_entry(feed, Change, pk=feed[b"pk"].decode())
    with pytest.raises(CorruptEventError, match=r"^entry 9-0: ") as found:
        decode_feed_entry(b"9-0", feed)
    assert message in str(found.value)


def test_a_bad_value_is_shown_as_its_repr_and_cut_short():
    fields = changed(type=b"\x1b[2J" + b"x" * 200)
    with pytest.raises(CorruptEventError) as found:
        decode_entry("1-0", fields)
    assert "\x1b" not in str(found.value) and str(found.value).endswith("…")


def test_unknown_fields_that_are_text_are_ignored_as_the_wire_format_promises():
    fields = {**GOOD, b"tenant": b"acme"}
    assert decode_entry("1-0", fields).seq == 3
    assert read_entry("1-0", fields).change()[0] == "list.pop"
