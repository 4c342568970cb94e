"""Golden cases: one mutation, the event it must write, and the document before and after.

Unit tests fold ``before`` + event and expect ``after`` (no Redis); integration tests run the
mutation on a real Redis and expect exactly that event in the stream and ``after`` as the
document. Every event type of the operations table must have at least one case.
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any

from pydantic import BaseModel, Field

from streamstore import BaseRedisModel


class Inner(BaseModel):
    label: str = ""
    items: list[str] = Field(default_factory=list)


class Sample(BaseRedisModel):
    name: str = "n"
    count: int = 1
    ratio: float = 0.5
    flag: bool = False
    blob: bytes = b""
    when: datetime = datetime(2024, 1, 2, 3, 4, 5, tzinfo=UTC)
    tags: list[str] = Field(default_factory=lambda: ["a", "b"])
    scores: dict[str, int] = Field(default_factory=lambda: {"x": 1, "y": 2})
    inner: Inner = Field(default_factory=Inner)


BEFORE: dict[str, Any] = Sample().redis_dump()


def doc(**changes: Any) -> dict[str, Any]:
    """Return the default document with ``changes`` applied at the top level."""
    return {**BEFORE, **changes}


@dataclass(frozen=True)
class Case:
    name: str
    mutate: Callable[[Sample], Awaitable[Any]]
    type: str
    path: str
    #: The event's data, or a function of the saved model giving it (when it names the model).
    data: Any
    after: dict[str, Any] | None
    returns: Any = None
    #: The event is written to the instance the mutation returns (a copy), not the one mutated.
    on_result: bool = False

    def data_for(self, model: Sample | None) -> Any:
        return self.data(model) if callable(self.data) else self.data


CASES: list[Case] = [
    Case("save", lambda m: m.save(), "saved", "$", BEFORE, BEFORE, returns=...),
    Case("set str", lambda m: m.name.set("z"), "set", "$.name", {"value": "z"}, doc(name="z"), "z"),
    Case(
        "set bool",
        lambda m: m.flag.set(True),
        "set",
        "$.flag",
        {"value": True},
        doc(flag=True),
        True,
    ),
    Case(
        "set bytes as base64",
        lambda m: m.blob.set(b"\xff\x00"),
        "set",
        "$.blob",
        {"value": "_wA="},
        doc(blob="_wA="),
        b"\xff\x00",
    ),
    Case(
        "set datetime as ISO 8601",
        lambda m: m.when.set(datetime(2025, 5, 6, 7, 8, 9, tzinfo=UTC)),
        "set",
        "$.when",
        {"value": "2025-05-06T07:08:09Z"},
        doc(when="2025-05-06T07:08:09Z"),
        datetime(2025, 5, 6, 7, 8, 9, tzinfo=UTC),
    ),
    Case(
        "set nested field",
        lambda m: m.inner.label.set("L"),
        "set",
        "$.inner.label",
        {"value": "L"},
        doc(inner={"label": "L", "items": []}),
        "L",
    ),
    Case(
        "set float",
        lambda m: m.ratio.set(0.125),
        "set",
        "$.ratio",
        {"value": 0.125},
        doc(ratio=0.125),
        0.125,
    ),
    Case(
        "set float as RedisJSON stores it",
        lambda m: m.ratio.set(2.06321047576396e47),
        "set",
        "$.ratio",
        {"value": 2.0632104757639597e47},
        doc(ratio=2.0632104757639597e47),
        2.0632104757639597e47,
    ),
    Case(
        "increase int",
        lambda m: m.count.increase(5),
        "number.incr",
        "$.count",
        {"by": 5, "value": 6},
        doc(count=6),
        6,
    ),
    Case(
        "increase float",
        lambda m: m.ratio.increase(0.25),
        "number.incr",
        "$.ratio",
        {"by": 0.25, "value": 0.75},
        doc(ratio=0.75),
        0.75,
    ),
    Case(
        "append",
        lambda m: m.tags.aappend("c"),
        "list.append",
        "$.tags",
        {"value": "c"},
        doc(tags=["a", "b", "c"]),
    ),
    Case(
        "append nested",
        lambda m: m.inner.items.aappend("i"),
        "list.append",
        "$.inner.items",
        {"value": "i"},
        doc(inner={"label": "", "items": ["i"]}),
    ),
    Case(
        "extend",
        lambda m: m.tags.aextend(["c", "d"]),
        "list.extend",
        "$.tags",
        {"values": ["c", "d"]},
        doc(tags=["a", "b", "c", "d"]),
    ),
    Case(
        "insert",
        lambda m: m.tags.ainsert(1, "c"),
        "list.insert",
        "$.tags",
        {"index": 1, "value": "c"},
        doc(tags=["a", "c", "b"]),
    ),
    Case(
        "insert past the end is clamped",
        lambda m: m.tags.ainsert(99, "c"),
        "list.insert",
        "$.tags",
        {"index": 2, "value": "c"},
        doc(tags=["a", "b", "c"]),
    ),
    Case(
        "insert negative",
        lambda m: m.tags.ainsert(-1, "c"),
        "list.insert",
        "$.tags",
        {"index": 1, "value": "c"},
        doc(tags=["a", "c", "b"]),
    ),
    Case(
        "pop last",
        lambda m: m.tags.apop(),
        "list.pop",
        "$.tags",
        {"index": 1, "value": "b"},
        doc(tags=["a"]),
        "b",
    ),
    Case(
        "pop first",
        lambda m: m.tags.apop(0),
        "list.pop",
        "$.tags",
        {"index": 0, "value": "a"},
        doc(tags=["b"]),
        "a",
    ),
    Case("clear list", lambda m: m.tags.aclear(), "list.clear", "$.tags", {}, doc(tags=[])),
    Case(
        "set item",
        lambda m: m.scores.aset_item("z", 9),
        "dict.set_item",
        "$.scores",
        {"key": "z", "value": 9},
        doc(scores={"x": 1, "y": 2, "z": 9}),
    ),
    Case(
        "set item with JSONPath characters",
        lambda m: m.scores.aset_item("a.b[0]$ 'q'", 3),
        "dict.set_item",
        "$.scores",
        {"key": "a.b[0]$ 'q'", "value": 3},
        doc(scores={"x": 1, "y": 2, "a.b[0]$ 'q'": 3}),
    ),
    Case(
        "update",
        lambda m: m.scores.aupdate(x=5, w=6),
        "dict.update",
        "$.scores",
        {"items": {"x": 5, "w": 6}},
        doc(scores={"x": 5, "y": 2, "w": 6}),
    ),
    Case(
        "del item",
        lambda m: m.scores.adel_item("x"),
        "dict.del_item",
        "$.scores",
        {"key": "x", "value": 1},
        doc(scores={"y": 2}),
    ),
    Case(
        "pop key",
        lambda m: m.scores.apop("y"),
        "dict.pop",
        "$.scores",
        {"key": "y", "value": 2},
        doc(scores={"x": 1}),
        2,
    ),
    Case(
        "popitem takes the last key",
        lambda m: m.scores.apopitem(),
        "dict.popitem",
        "$.scores",
        {"key": "y", "value": 2},
        doc(scores={"x": 1}),
        ("y", 2),
    ),
    Case("clear dict", lambda m: m.scores.aclear(), "dict.clear", "$.scores", {}, doc(scores={})),
    Case("delete", lambda m: m.delete(), "deleted", "$", {}, None),
    Case("snapshot", lambda m: m.snapshot(), "snapshot", "$", {"document": BEFORE}, BEFORE),
    Case(
        "duplicate",
        lambda m: m.duplicate(),
        "duplicated",
        "$",
        lambda m: {"document": BEFORE, "source": m.key if m else "{Sample:1}:x", "source_seq": 1},
        BEFORE,
        returns=...,
        on_result=True,
    ),
]
