"""The service commands: `streamstore run` handles changes, `streamstore check` tells liveness."""

from __future__ import annotations

import asyncio
import os
import pathlib
import signal
import subprocess
import sys

import pytest
from sample_services import Ticket
from typer.testing import CliRunner
from waiting import wait_until

from streamstore.cli import app

# The documented service commands run against one server's redis:// URL.
pytestmark = pytest.mark.single_node

TESTS = pathlib.Path(__file__).parents[1]
DEADLINE = 20.0


def cli(*args: str, code: int = 0):
    result = CliRunner().invoke(app, list(args))
    if result.exception is not None and not isinstance(result.exception, SystemExit):
        raise result.exception
    assert result.exit_code == code, result.output
    return result


def tickets(count: int) -> list[str]:
    """Save ``count`` tickets and set each one's status: 2 events each; return their pks."""

    async def write() -> list[str]:
        made = []
        for i in range(count):
            ticket = Ticket(title=f"t{i}")
            await ticket.save()
            await ticket.status.set("closed")
            made.append(ticket.pk)
        return made

    return asyncio.run(write())


def test_run_burst_handles_the_backlog_of_every_subscriber_given(db):
    pks = tickets(5)
    result = cli("run", "sample_services:both", "--burst", "--lease-ms", "500")
    assert "handled 15 changes" in result.stderr  # 10 for ticket-log, 5 sets for status-watch
    for pk in pks:  # the two subscribers run side by side: their pushes interleave
        assert sorted(db.lrange(f"seen:{pk}", 0, -1)) == ["1", "2", "2"]


def test_check_is_unhealthy_without_a_runner_and_healthy_while_one_runs(db, redis_url):
    result = cli("check", "sample_services:ticket_log", code=1)
    assert "ticket-log: unhealthy, no runner reported" in result.stdout
    runner = subprocess.Popen(
        [
            sys.executable,
            "-m",
            "streamstore",
            "run",
            "sample_services:ticket_log",
            "--lease-ms",
            "600",
        ],
        env={**os.environ, "REDIS_URL": redis_url, "PYTHONPATH": str(TESTS)},
        stderr=subprocess.PIPE,
        text=True,
    )
    try:
        wait_until(
            lambda: db.keys("streamstore:health:ticket-log:*") or runner.poll() is not None,
            "the runner to report health",
        )
        assert runner.poll() is None, runner.communicate()
        result = cli("check", "sample_services:ticket_log")
        assert result.stdout.startswith("ticket-log: healthy, 1 runner")
        runner.send_signal(signal.SIGTERM)
        _, stderr = runner.communicate(timeout=DEADLINE)
    finally:
        if runner.poll() is None:
            runner.kill()
    assert runner.returncode == 0 and "Traceback" not in stderr
    assert "handled 0 changes" in stderr
    cli("check", "sample_services:ticket_log", code=1)  # it cleared its health key on exit


@pytest.mark.parametrize(
    ("target", "message"),
    [
        ("sample_services:not_a_subscriber", "is not a Subscriber"),
        ("sample_services:nope", "has no 'nope'"),
        ("no_such_module:x", "cannot import 'no_such_module'"),
        ("sample_services", "bad subscriber"),
    ],
)
def test_a_bad_subscriber_path_is_one_error_line(db, target, message):
    for command in ("run", "check"):
        result = CliRunner().invoke(app, [command, target])
        assert result.exit_code != 0
        (line,) = result.stderr.splitlines()
        assert line.startswith("error: ") and message in line
