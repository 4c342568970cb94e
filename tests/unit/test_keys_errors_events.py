"""Keys, the exception family, and decoding stream entries: pure code, no Redis."""

from __future__ import annotations

import ast
import inspect
import zlib

import pytest

import streamstore
from streamstore import errors
from streamstore.events import decode_entry
from streamstore.keys import EVENT_FIELDS, FEED_FIELDS, KeySpace
from streamstore.operations import list_append, list_clear, save
from streamstore.plan import build_plan, call_arguments, error_from_reply, parse_reply


class TestKeys:
    def test_partition_is_crc32_of_the_pk_modulo_partitions(self):
        space = KeySpace("User", 16)
        assert space.partition("abc") == zlib.crc32(b"abc") % 16 == 2

    def test_all_keys_of_an_instance_share_one_hash_tag(self):
        keys = KeySpace("User", 16).for_pk("abc")
        assert keys.doc == "{User:2}:abc"
        assert keys.stream == "{User:2}#events:abc"
        assert keys.feed == "{User:2}#feed"
        assert keys.undo == "{User:2}#undo:abc"

    @pytest.mark.parametrize("pk", ["abc", "a:b", "x}:y", "#events:z", "", "ü"])
    def test_a_document_key_gives_back_its_pk_and_no_other_key_does(self, pk):
        space = KeySpace("User", 16)
        keys = space.for_pk(pk)
        assert space.pk_from_doc_key(keys.doc) == pk
        assert space.pk_from_doc_key(keys.stream) is None
        assert space.pk_from_doc_key(keys.feed) is None
        assert KeySpace("Other", 16).pk_from_doc_key(keys.doc) is None

    def test_field_layouts_are_the_documented_ones(self):
        assert EVENT_FIELDS == ("seq", "type", "path", "data", "ts", "meta", "v", "mv")
        assert ("pk", "id", *EVENT_FIELDS) == FEED_FIELDS


class TestErrors:
    def test_errors_module_imports_nothing_from_the_package(self):
        tree = ast.parse(inspect.getsource(errors))
        imported = [node.module for node in ast.walk(tree) if isinstance(node, ast.ImportFrom)] + [
            alias.name
            for node in ast.walk(tree)
            if isinstance(node, ast.Import)
            for alias in node.names
        ]
        assert not [name for name in imported if name and name.startswith("streamstore")]

    def test_every_public_error_derives_from_the_root(self):
        for name in errors.__all__:
            assert issubclass(getattr(errors, name), errors.StreamStoreError)
            assert getattr(streamstore, name) is getattr(errors, name)

    @pytest.mark.parametrize(
        ("error", "builtin"),
        [
            (errors.FieldTypeError, TypeError),
            (errors.EmptyContainerError, IndexError),
            (errors.KeyMissingError, KeyError),
            (errors.DocumentNotFoundError, KeyError),
            (errors.UnsafeKeyError, ValueError),
            (errors.CorruptEventError, ValueError),
        ],
    )
    def test_errors_mix_in_the_builtin_the_seed_promises(self, error, builtin):
        assert issubclass(error, builtin)

    def test_key_errors_print_their_message_not_a_quoted_repr(self):
        assert str(errors.KeyMissingError("missing")) == "missing"
        assert str(errors.DocumentNotFoundError("User:1 does not exist")) == "User:1 does not exist"


class TestScriptProtocol:
    def test_a_plan_carries_the_four_keys_and_each_op_with_its_flags(self):
        keys = KeySpace("User", 1).for_pk("p")
        plan = build_plan(keys, "p", [list_append(("tags",), '"x"'), save("{}", readback=True)])
        assert plan.keys == (keys.doc, keys.stream, keys.feed, keys.undo, keys.index, keys.expiry)
        assert plan.args[:4] == ("p", "{}", "1", "1")  # pk, meta, layout v, model version
        assert plan.args[8:] == (
            "0",  # snapshot every (never)
            "2",
            "list.append", "$.tags", "$['tags']", "d", "1", '"x"',
            "saved", "$", "$", "rx", "1", "{}",
        )  # fmt: skip

    def test_a_call_over_several_plans_counts_them_then_lists_their_arguments(self):
        space = KeySpace("User", 1)
        first = build_plan(space.for_pk("a"), "a", [list_append(("tags",), '"x"')])
        second = build_plan(space.for_pk("b"), "b", [list_clear(("tags",))])
        keys, args = call_arguments([first, second])
        assert keys == [*first.keys, *second.keys]
        assert args == ["2", *first.args, *second.args]

    def test_script_replies_decode_from_bytes_or_str(self):
        (applied,) = parse_reply([[[[b"1-0", 1, b"saved"]], [None, b"3"], 1]])
        assert applied.events == (("1-0", 1, "saved"),)
        assert applied.results == (None, "3")
        assert applied.seq == 1

    @pytest.mark.parametrize(
        ("message", "error"),
        [
            ("STREAMSTORE NOT_FOUND 1 $.tags", errors.DocumentNotFoundError),
            ("STREAMSTORE EMPTY 1 pop from empty list", errors.EmptyContainerError),
            ('STREAMSTORE KEY 1 "k"', errors.KeyMissingError),
            ("STREAMSTORE CONFLICT 1 7", errors.ConcurrencyError),
            ("STREAMSTORE USAGE 1 ttl must be an integer", errors.UsageError),
            ("STREAMSTORE RANGE 1 $.n + 1 is out of range", errors.ValueRangeError),
            ("STREAMSTORE CORRUPT 1 k ends with entry 1-1", errors.CorruptEventError),
            ("STREAMSTORE WRONGTYPE 1 k holds a string", errors.StoredDataError),
            ("STREAMSTORE IDS 1 k has no room", errors.StoredDataError),
            ("STREAMSTORE NOPERM 1 this user may not run XADD", errors.PermissionDeniedError),
            ("STREAMSTORE REDIS 1 OOM", errors.ServerRefusedError),
            ("ERR unknown command 'JSON.SET'", errors.RedisJSONMissingError),
        ],
    )
    def test_script_errors_become_library_errors(self, message, error):
        assert isinstance(error_from_reply(message, keys=["k"]), error)

    def test_an_error_names_the_document_of_the_plan_that_failed(self):
        error = error_from_reply("STREAMSTORE NOT_FOUND 2 $.tags", keys=["a", "b"])
        assert str(error) == "b does not exist"

    def test_other_redis_errors_are_left_alone(self):
        assert error_from_reply("WRONGTYPE Operation against a key", keys=["k"]) is None


class TestDecodeEntry:
    def test_a_complete_entry_decodes(self):
        fields = {b"seq": b"2", b"type": b"set", b"path": b"$.a", b"data": b'{"value":1}',
                  b"ts": b"1700000000000", b"meta": b'{"actor":"x"}', b"v": b"1"}  # fmt: skip
        event = decode_entry(b"1700000000000-0", fields)
        assert (event.id, event.seq, event.type, event.data, event.meta) == (
            "1700000000000-0", 2, "set", {"value": 1}, {"actor": "x"},
        )  # fmt: skip
        assert event.at.year == 2023
        assert event.field_path == ("a",)

    def test_an_entry_from_before_model_versions_reads_as_version_1(self):
        fields = {"seq": "1", "type": "saved", "path": "$", "data": "{}", "ts": "1", "meta": "{}",
                  "v": "1"}  # fmt: skip
        assert decode_entry("1-0", fields).model_version == 1
        assert decode_entry("1-0", {**fields, "mv": "3"}).model_version == 3

    @pytest.mark.parametrize(
        ("change", "message"),
        [
            ({"type": "nope"}, "unknown event type"),
            ({"data": "{"}, "does not parse"),
            ({"seq": "x"}, "does not parse"),
        ],
    )
    def test_a_bad_entry_is_a_corrupt_event(self, change, message):
        fields = {
            "seq": "1",
            "type": "set",
            "path": "$.a",
            "data": "{}",
            "ts": "1",
            "meta": "{}",
            "v": "1",
        }
        with pytest.raises(errors.CorruptEventError, match=message):
            decode_entry("1-0", {**fields, **change})

    def test_a_missing_field_is_a_corrupt_event(self):
        with pytest.raises(errors.CorruptEventError, match="lacks fields"):
            decode_entry("1-0", {"type": "set"})
