"""The `streamstore` command line against the session's Redis: real output, exit codes, its docs.

Plain sync tests: the CLI runs its own event loop per command (asyncio.run), so the data is set
up with asyncio.run too. `tail` runs as a subprocess (`python -m streamstore`), as a user runs it.
"""

from __future__ import annotations

import ast
import asyncio
import json
import os
import pathlib
import re
import shlex
import signal
import subprocess
import sys
import threading
import types
from datetime import UTC, datetime, timedelta

import pytest
import redis
from cli_models import Customer, PersonV1, Ticket
from typer.testing import CliRunner
from waiting import wait_until

from streamstore import event_context
from streamstore.cli import app

# The documented CLI session runs against one server's redis:// URL.
pytestmark = pytest.mark.single_node

TESTS = pathlib.Path(__file__).parents[1]
DOC = TESTS.parent / "docs" / "cli.md"
DEADLINE = 20.0  # seconds any awaited condition may take before the test fails


def invoke(*args: str):
    """Run the CLI in process (200 columns wide); return the click Result."""
    return CliRunner().invoke(app, list(args), env={"COLUMNS": "200"})


def cli(*args: str, code: int = 0):
    """Run the CLI in process, check its exit code, return the click Result."""
    result = invoke(*args)
    if result.exception is not None and not isinstance(result.exception, SystemExit):
        raise result.exception  # a traceback: never what a user should see
    assert result.exit_code == code, result.output
    return result


def json_lines(text: str) -> list[dict]:
    return [json.loads(line) for line in text.splitlines()]


def after_this_ms(db, ts: int) -> None:
    """Return once the server clock is past ``ts`` (so the next write gets a later time)."""

    def later() -> bool:
        seconds, microseconds = db.time()
        return seconds * 1000 + microseconds // 1000 > ts

    wait_until(later, "the server clock to pass an event's ms")


def tail_is_reading(db) -> bool:
    return any(c["cmd"] == "xread" and "b" in c["flags"] for c in db.client_list())


def add_customer(pk: str, name: str = "Ann") -> Customer:
    async def write() -> Customer:
        customer = Customer(name=name)
        customer.pk = pk
        with event_context(actor="alice"):
            await customer.save()
            await customer.visits.increase(2)
            await customer.tags.aappend("vip")
            await customer.profile.skills.aappend("-".join(["negotiation"] * 6))
        return customer

    return asyncio.run(write())


def events_of(model):
    return asyncio.run(model.history())


# --- history ----------------------------------------------------------------------------------


def test_history_prints_a_table_of_every_event(db):
    ann = add_customer("ann")
    result = cli("history", ann.key)
    lines = [line for line in result.stdout.splitlines() if line.strip()]
    assert lines[0].strip() == ann.key  # the title
    assert lines[1].split() == ["seq", "time", "(UTC)", "type", "path", "data", "meta"]
    rows = [line.split() for line in lines[3:]]
    times = [e.at.strftime("%Y-%m-%d %H:%M:%S.%f")[:-3].split() for e in events_of(ann)]
    assert [row[:5] for row in rows] == [
        ["1", *times[0], "saved", "$"],
        ["2", *times[1], "number.incr", "$.visits"],
        ["3", *times[2], "list.append", "$.tags"],
        ["4", *times[3], "list.append", "$.profile.skills"],
    ]
    assert rows[1][5:] == ['{"by":2,"value":2}', '{"actor":"alice"}']
    assert rows[3][5].endswith("…") and len(rows[3][5]) == 40  # long data is abbreviated
    assert result.stderr == ""


def test_history_json_lines_carry_each_event_and_its_key(db):
    ann = add_customer("ann")
    lines = json_lines(cli("history", ann.key, "--json").stdout)
    assert lines == [{"key": ann.key, **event.to_dict()} for event in events_of(ann)]
    assert lines[1]["data"] == {"by": 2, "value": 2} and lines[1]["meta"] == {"actor": "alice"}


def test_history_filters_combine(db):
    ann = add_customer("ann")

    def seqs(*options: str) -> list[int]:
        return [
            line["seq"] for line in json_lines(cli("history", ann.key, "--json", *options).stdout)
        ]

    assert seqs("--from-seq", "2", "--to-seq", "3") == [2, 3]
    assert seqs("--path", "tags") == [1, 3]  # saved touches every field
    assert seqs("--path", "profile.skills", "--reverse") == [4, 1]
    assert seqs("--reverse", "--limit", "2") == [4, 3]
    assert seqs("--path", "name", "--from-seq", "2") == []  # nothing matches: no error


def test_history_time_filters_read_iso_times_with_and_without_offsets(db):
    ann = add_customer("ann")
    first = events_of(ann)[-1]
    after_this_ms(db, first.ts)
    asyncio.run(ann.name.set("Ann Lee"))
    last = events_of(ann)[-1]
    as_naive_utc = last.at.replace(tzinfo=None).isoformat(timespec="milliseconds")
    in_paris = last.at.astimezone(UTC).replace(tzinfo=None) + timedelta(hours=1)
    since = json_lines(cli("history", ann.key, "--json", "--since", as_naive_utc).stdout)
    assert [line["seq"] for line in since] == [5]
    offset = in_paris.isoformat(timespec="milliseconds") + "+01:00"
    since = json_lines(cli("history", ann.key, "--json", "--since", offset).stdout)
    assert [line["seq"] for line in since] == [5]
    until = cli("history", ann.key, "--json", "--until", first.at.isoformat()).stdout
    assert [line["seq"] for line in json_lines(until)] == [1, 2, 3, 4]
    day = events_of(ann)[0].at.date().isoformat()  # a date alone: midnight UTC
    assert len(json_lines(cli("history", ann.key, "--json", "--since", day).stdout)) == 5


def test_history_of_a_key_without_events_is_one_error_line(db):
    keys = Customer.__ss_meta__.keys.for_pk("nobody")
    result = cli("history", keys.doc, code=1)
    assert result.stderr == f"error: {keys.doc} has no history (no stream {keys.stream})\n"
    assert result.stdout == ""


# --- as-of ------------------------------------------------------------------------------------


def test_as_of_by_seq_and_by_time_without_the_model(db):
    async def write() -> Ticket:
        ticket = Ticket(title="first")
        ticket.pk = "t-1"
        await ticket.save()
        return ticket

    ticket = asyncio.run(write())
    assert ticket.key.startswith("{Ticket:") and Ticket.__ss_meta__.partitions == 4
    saved = events_of(ticket)[0]
    after_this_ms(db, saved.ts)
    asyncio.run(ticket.title.set("second"))
    assert json.loads(cli("as-of", ticket.key, "--seq", "1").stdout) == {"title": "first"}
    assert json.loads(cli("as-of", ticket.key, "--seq", "2").stdout) == {"title": "second"}
    at_saved = saved.at.isoformat(timespec="milliseconds")
    result = cli("as-of", ticket.key, "--at", at_saved)
    assert json.loads(result.stdout) == {"title": "first"}
    assert result.stdout == '{\n  "title": "first"\n}\n'  # indented
    now = datetime.now(UTC).isoformat()
    assert json.loads(cli("as-of", ticket.key, "--at", now).stdout) == {"title": "second"}
    before = (saved.at - timedelta(seconds=1)).isoformat()
    result = cli("as-of", ticket.key, "--at", before, code=1)
    assert result.stderr == f"error: {ticket.key} did not exist at {before}\n"


def test_as_of_with_the_model_goes_through_its_upcasters(db):
    async def write() -> PersonV1:
        old = PersonV1(name="Bob", photo=b"\x00\xfb\xff")
        old.pk = "bob"
        await old.save()
        return old

    old = asyncio.run(write())
    photo = old.redis_dump()["photo"]  # base64 text, in documents and events alike
    raw = json.loads(cli("as-of", old.key, "--seq", "1").stdout)
    assert raw == {"name": "Bob", "photo": photo}
    upcast = cli("as-of", old.key, "--seq", "1", "--model", "cli_models:Person").stdout
    assert json.loads(upcast) == {"full_name": "Bob", "photo": photo}
    result = cli("as-of", old.key, "--seq", "1", "--model", "cli_models:Customer", code=1)
    assert result.stderr == f"error: {old.key!r} is not a Customer key\n"


# --- verify and rebuild -----------------------------------------------------------------------


def test_verify_rebuild_and_dry_run_on_a_corrupted_document(db):
    ann, bob, cid = add_customer("ann"), add_customer("bob", "Bob"), add_customer("cid", "Cid")
    result = cli("verify", "cli_models:Customer")
    assert result.stdout == (
        "Customer: 3 instances, 3 equal, 0 differing, 0 not replayable, 12 events replayed\n"
    )

    db.execute_command("JSON.SET", bob.key, "$.name", '"Mallory"')
    db.execute_command("JSON.SET", bob.key, "$.tags[0]", '"gold"')
    result = cli("verify", "cli_models:Customer", code=1)
    assert result.stdout.splitlines() == [
        "Customer: 3 instances, 2 equal, 1 differing, 0 not replayable, 12 events replayed",
        f"  {bob.key}  differs at $.name, $.tags[0]",
    ]
    assert cli("verify", "cli_models:Customer", "--pk", "ann").stdout.startswith(
        "Customer: 1 instance, 1 equal, 0 differing"
    )
    cli("verify", "cli_models:Customer", "--pk", "bob", code=1)

    result = cli("rebuild", "cli_models:Customer", "--dry-run", code=1)
    assert result.stdout.splitlines() == [
        "Customer: 3 instances, 2 equal, 1 to rewrite (dry run), 0 not replayable, "
        "12 events replayed",
        f"  {bob.key}  would rewrite $.name, $.tags[0]",
    ]
    assert json.loads(db.execute_command("JSON.GET", bob.key))["name"] == "Mallory"  # untouched

    result = cli("rebuild", "cli_models:Customer", "--batch", "2")
    assert result.stdout.splitlines() == [
        "Customer: 3 instances, 2 equal, 1 rewritten, 0 not replayable, 12 events replayed",
        f"  {bob.key}  rewritten at $.name, $.tags[0]",
    ]
    assert json.loads(db.execute_command("JSON.GET", bob.key)) == bob.redis_dump()
    assert cli("verify", "cli_models:Customer").stdout.startswith("Customer: 3 instances, 3 equal")
    assert db.xlen(bob.stream_key) == 4  # rebuild writes no event
    assert {ann.key, cid.key}.isdisjoint(result.stdout)


def test_a_document_without_history_is_reported_and_left_alone(db):
    add_customer("ann")
    orphan = Customer.key_for("orphan")
    db.execute_command("JSON.SET", orphan, "$", json.dumps({"name": "Nobody", "visits": 0}))
    for command in (["verify"], ["rebuild"]):
        result = cli(*command, "cli_models:Customer", code=1)
        assert "2 instances, 1 equal" in result.stdout and "1 not replayable" in result.stdout
        assert f"  {orphan}  not replayable, left alone: no history" in result.stdout
    assert db.exists(orphan)


def test_the_url_option_wins_over_the_models_own_redis(db, redis_url):
    ann = add_customer("ann")  # Elsewhere reads Customer's keys; its Meta.redis is unreachable
    result = cli("verify", "cli_models:Elsewhere", "--url", redis_url)
    assert result.stdout.startswith("Elsewhere: 1 instance, 1 equal")
    model = "cli_models:Elsewhere"
    document = json.loads(cli("as-of", ann.key, "--seq", "4", "--model", model).stdout)
    assert document == ann.redis_dump()


# --- export -----------------------------------------------------------------------------------


def test_export_writes_every_event_as_a_json_line(db):
    ann, bob = add_customer("ann"), add_customer("bob", "Bob")
    result = cli("export", "cli_models:Customer", "--format", "jsonl")
    lines = json_lines(result.stdout)
    expected = [
        {"model": "Customer", "key": model.key, "pk": model.pk, **event.to_dict()}
        for model in (ann, bob)
        for event in events_of(model)
    ]
    assert sorted(lines, key=lambda line: (line["pk"], line["seq"])) == expected
    assert result.stderr == "exported 8 events of 2 Customer instances\n"


def test_export_since_and_to_a_file(db, tmp_path):
    ann, bob = add_customer("ann"), add_customer("bob", "Bob")
    after_this_ms(db, max(event.ts for model in (ann, bob) for event in events_of(model)))
    asyncio.run(ann.tags.aappend("late"))
    late = events_of(ann)[-1]
    output = tmp_path / "audit.jsonl"
    result = cli(
        "export", "cli_models:Customer", "--since", late.at.isoformat(), "--output", str(output)
    )
    assert result.stdout == ""
    assert json_lines(output.read_text()) == [
        {"model": "Customer", "key": ann.key, "pk": "ann", **late.to_dict()}
    ]
    assert result.stderr == "exported 1 event of 1 Customer instance\n"


# --- tail (a subprocess, as users run it) ------------------------------------------------------


def start_tail(db, redis_url: str, *options: str) -> subprocess.Popen[str]:
    """Start ``python -m streamstore tail`` and return once it is blocked reading the feed."""
    process = subprocess.Popen(  # noqa: S603 (our interpreter, our module)
        [sys.executable, "-m", "streamstore", "tail", "cli_models:Customer", *options],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
        env={**os.environ, "REDIS_URL": redis_url, "PYTHONPATH": str(TESTS)},
    )

    wait_until(lambda: tail_is_reading(db) or process.poll() is not None, "tail to block in XREAD")
    assert process.poll() is None, process.communicate()
    return process


@pytest.fixture
def processes():
    started: list[subprocess.Popen[str]] = []
    yield started
    for process in started:
        if process.poll() is None:
            process.kill()
        process.communicate()


def test_tail_prints_the_events_written_after_it_started(db, redis_url, processes):
    before = add_customer("before")
    processes.append(process := start_tail(db, redis_url, "--count", "3", "--json"))
    ann, bob = Customer(name="Ann"), Customer(name="Bob")
    ann.pk, bob.pk = "ann", "bob"
    partitions = [Customer.__ss_meta__.keys.partition(m.pk) for m in (bob, ann, before)]
    assert partitions == sorted(partitions)  # feed order would print them the other way round
    writes = [(ann, ann.save), (bob, bob.save), (before, before.visits.increase)]
    for model, write in [*writes, writes[-1]]:  # the fourth comes after --count: not printed
        asyncio.run(write())
        after_this_ms(db, events_of(model)[-1].ts)  # write times in the order written
    out, err = process.communicate(timeout=DEADLINE)
    assert (process.returncode, err) == (0, "")
    lines = json_lines(out)
    assert [(line["key"], line["seq"], line["type"]) for line in lines] == [
        (ann.key, 1, "saved"),
        (bob.key, 1, "saved"),
        (before.key, 5, "number.incr"),
    ]
    assert lines[2] == {
        "model": "Customer",
        "key": before.key,
        "pk": "before",
        **events_of(before)[4].to_dict(),
    }


def test_tail_prints_one_readable_line_per_event(db, redis_url, processes):
    ann = add_customer("ann")
    processes.append(process := start_tail(db, redis_url, "--count", "1"))
    with event_context(actor="bob"):
        asyncio.run(ann.name.set("Ann Lee"))
    out, _ = process.communicate(timeout=DEADLINE)
    event = events_of(ann)[-1]
    when = event.at.isoformat(timespec="milliseconds").replace("+00:00", "Z")
    assert out == f'{when}  {ann.key}  #5 set $.name {{"value":"Ann Lee"}} {{"actor":"bob"}}\n'


def test_ctrl_c_stops_tail_quietly_with_exit_code_0(db, redis_url, processes):
    processes.append(process := start_tail(db, redis_url))
    process.send_signal(signal.SIGINT)
    out, err = process.communicate(timeout=DEADLINE)
    assert (process.returncode, out, err) == (0, "", "")


# --- user mistakes: one `error:` line, a non-zero exit code, no traceback ------------------------


@pytest.mark.parametrize(
    ("args", "code", "message"),
    [
        (
            ["verify", "cli_models:Customer", "--url", "redis://127.0.0.1:1"],
            1,
            "error: cannot connect to Redis: Error 111 connecting to 127.0.0.1:1.",
        ),
        (
            ["history", "{Customer:3}:ann", "--url", "http://example.com"],
            1,
            "error: bad Redis URL 'http://example.com'",
        ),
        (
            ["verify", "no_such_module:User"],
            1,
            "error: cannot import 'no_such_module' for model 'no_such_module:User': No module named",
        ),
        (["export", "cli_models:Nobody"], 1, "error: module 'cli_models' has no 'Nobody'"),
        (
            ["rebuild", "cli_models:NOT_A_MODEL"],
            1,
            "error: 'cli_models:NOT_A_MODEL' is not a streamstore model (a BaseRedisModel subclass)",
        ),
        (["verify", "cli_models"], 2, "error: bad model 'cli_models': use module:Class"),
        (
            ["verify", "cli_models:Customer", "--pk", "nobody"],
            1,
            f"error: {Customer.key_for('nobody')} does not exist and has no history",
        ),
        (["history", "{Customer:3}:ann"], 1, "error: {Customer:3}:ann has no history"),
        (["history", "Customer:ann"], 1, "error: 'Customer:ann' is not a streamstore document key"),
        (
            ["as-of", "{Customer:3}:ann", "--seq", "1"],
            1,
            "error: {Customer:3}:ann did not exist at seq 1",
        ),
        (
            ["history", "{Customer:3}:ann", "--since", "yesterday"],
            2,
            "error: bad time 'yesterday' for --since: use ISO 8601",
        ),
        (
            ["as-of", "{Customer:3}:ann", "--at", "30/11/2026"],
            2,
            "error: bad time '30/11/2026' for --at",
        ),
        (["as-of", "{Customer:3}:ann"], 2, "error: as-of needs exactly one of --seq and --at"),
        (
            ["as-of", "{Customer:3}:ann", "--seq", "1", "--at", "2026-11-30"],
            2,
            "error: as-of needs exactly one of --seq and --at",
        ),
        (
            ["export", "cli_models:Customer", "--format", "csv"],
            2,
            "error: unknown format 'csv': the only format is jsonl",
        ),
        (["history", "{Customer:3}:ann", "--path", "a..b"], 1, "error: bad field path 'a..b'"),
        (
            ["export", "cli_models:Customer", "--output", "/no/such/dir/x.jsonl"],
            1,
            "error: cannot write /no/such/dir/x.jsonl: No such file or directory",
        ),
    ],
)
def test_a_user_mistake_is_one_error_line(db, args, code, message):
    result = cli(*args, code=code)
    assert result.stderr.startswith(message)
    assert len(result.stderr.splitlines()) == 1 and result.stdout == ""


def test_a_server_without_redisjson_is_one_error_line(plain_redis_url):
    plain = redis.Redis.from_url(plain_redis_url)
    plain.flushdb()
    plain.xadd(Customer.__ss_meta__.keys.for_pk("ann").stream, {"seq": "1"})
    result = cli("verify", "cli_models:Customer", "--url", plain_redis_url, code=1)
    plain.close()
    assert result.stderr.startswith("error: The Redis server has no RedisJSON module.")
    assert len(result.stderr.splitlines()) == 1


def test_python_dash_m_streamstore_runs_the_same_app():
    result = subprocess.run(
        [sys.executable, "-m", "streamstore", "--help"], capture_output=True, text=True, check=True
    )
    for command in ("history", "as-of", "verify", "rebuild", "export", "tail"):
        assert command in result.stdout
    assert "Usage: streamstore" in result.stdout


# --- docs/cli.md: its python blocks and `$ streamstore` commands, in page order ---------------

BLOCKS = re.compile(r"^```(python|console)\n(.*?)^```", re.DOTALL | re.MULTILINE)
VARYING = [
    (re.compile(r"\d{4}-\d\d-\d\d[T ]\d\d:\d\d:\d\d\.\d{3}(Z|\+00:00)?"), "<time>"),
    (re.compile(r"\d{13}-\d+"), "<id>"),
    (re.compile(r"\d{13}"), "<ts>"),
]


def comparable(text: str) -> list[str]:
    """Lines with times, ids and runs of spaces made comparable; blank lines dropped."""
    for pattern, placeholder in VARYING:
        text = pattern.sub(placeholder, text)
    return [" ".join(line.split()) for line in text.splitlines() if line.strip()]


def console_commands(block: str) -> list[tuple[list[str], int, list[str]]]:
    """Each ``$ streamstore ...`` line: its arguments, documented exit code, documented output."""
    commands: list[tuple[list[str], int, list[str]]] = []
    for line in block.splitlines():
        if line.startswith("$ "):
            words = shlex.split(line[2:], comments=True)
            assert words[0] == "streamstore", line
            documented = re.search(r"# exit code (\d)", line)
            commands.append((words[1:], int(documented.group(1)) if documented else 0, []))
        else:
            commands[-1][2].append(line)
    return commands


def run_python(source: str, namespace: dict) -> None:
    code = compile(
        source, str(DOC), "exec", flags=ast.PyCF_ALLOW_TOP_LEVEL_AWAIT, dont_inherit=True
    )
    result = eval(code, namespace)  # noqa: S307 (our own documentation, on purpose)
    if asyncio.iscoroutine(result):
        asyncio.run(result)


def test_every_command_of_the_cli_page_runs_with_its_documented_output(db, tmp_path, monkeypatch):
    # The page's first block is `shop.py`: its blocks run in a module of that name.
    shop = types.ModuleType("shop")
    monkeypatch.setitem(sys.modules, "shop", shop)
    monkeypatch.chdir(tmp_path)
    tail: tuple[threading.Thread, dict, list[str]] | None = None
    ran = 0
    for kind, block in BLOCKS.findall(DOC.read_text()):
        if kind == "python":
            run_python(block, shop.__dict__)
            if tail is not None:  # the block that writes what a running `tail` waits for
                thread, box, expected = tail
                thread.join(DEADLINE)
                assert not thread.is_alive() and box["result"].exit_code == 0, box
                assert comparable(box["result"].output) == comparable("\n".join(expected))
                tail = None
            continue
        for args, code, expected in console_commands(block):
            ran += 1
            if args[0] == "tail":  # blocks until the next python block writes an event
                box: dict = {}
                thread = threading.Thread(
                    target=lambda a=args, b=box: b.update(result=invoke(*a)), daemon=True
                )
                thread.start()
                wait_until(lambda: tail_is_reading(db), "tail to block in XREAD")
                tail = (thread, box, expected)
                continue
            actual = cli(*args, code=code).output
            assert comparable(actual) == comparable("\n".join(expected)), (args, actual)
    assert tail is None and ran >= 10
