"""The private Redis Cluster launcher, against real processes."""

from __future__ import annotations

import itertools
import os
import signal
import socket
import subprocess
import sys

import pytest
import redis
from redis.backoff import NoBackoff
from redis.cluster import RedisCluster
from redis.exceptions import MovedError
from redis.retry import Retry

from streamstore.errors import ConfigurationError, UsageError
from streamstore.testing import RedisClusterServer
from streamstore.testing import cluster as cluster_launcher

# Starts clusters of its own: once per CI run is enough.
pytestmark = pytest.mark.single_node


def _node_client(port: int) -> redis.Redis:
    # No retries: checking that a stopped node does not answer should not take a backoff.
    return redis.Redis(
        port=port, socket_timeout=2, socket_connect_timeout=2, retry=Retry(NoBackoff(), 0)
    )


def _cluster_client(port: int) -> RedisCluster:
    return RedisCluster(host="127.0.0.1", port=port, socket_timeout=2, socket_connect_timeout=2)


def _answers(port: int) -> bool:
    with _node_client(port) as client:
        try:
            return bool(client.ping())
        except redis.ConnectionError:
            return False


def _node_directory(port: int) -> str:
    with _node_client(port) as client:
        directory: str = client.config_get("dir")["dir"]
    return directory


@pytest.fixture(scope="module")
def cluster():
    """One 3-master cluster shared by the tests that only read its shape or write keys."""
    with RedisClusterServer(extra_args=["--maxmemory-policy", "allkeys-lru"]) as running:
        yield running


# --- a 3-master cluster ---------------------------------------------------------------------


def test_three_masters_serve_all_16384_slots_and_the_url_lists_them(cluster):
    masters = cluster.master_ports()
    assert len(cluster.ports) == 3
    assert sorted(masters) == sorted(cluster.ports)
    assert cluster.url == "redis+cluster://" + ",".join(f"127.0.0.1:{port}" for port in masters)

    with _node_client(masters[0]) as client:
        ranges = client.execute_command("CLUSTER", "SLOTS")
    assert sum(end - start + 1 for start, end, *_ in ranges) == 16384
    assert {int(owner[1]) for _, _, owner, *_ in ranges} == set(masters)


def test_keys_written_through_redis_cluster_read_back_from_every_master(cluster):
    keys = [f"key-{i}" for i in range(30)]
    with _cluster_client(cluster.ports[0]) as client:
        for key in keys:
            client.set(key, f"value of {key}")

        assert [client.get(key) for key in keys] == [f"value of {key}".encode() for key in keys]
        assert {client.get_node_from_key(key).port for key in keys} == set(cluster.ports)


def test_json_set_works_in_cluster_mode(cluster):
    with _cluster_client(cluster.ports[-1]) as client:
        client.execute_command("JSON.SET", "doc:1", "$", '{"tags": ["a", "b"]}')

        assert client.execute_command("JSON.GET", "doc:1", "$.tags[1]") == b'["b"]'


def test_extra_args_reach_every_node(cluster):
    for port in cluster.ports:
        with _node_client(port) as client:
            assert client.config_get("maxmemory-policy") == {"maxmemory-policy": "allkeys-lru"}


# --- stopping -------------------------------------------------------------------------------


def test_stop_after_a_kill_ends_every_process_and_removes_every_temp_dir():
    cluster = RedisClusterServer()
    cluster.start()
    ports = cluster.ports
    pids = [cluster.pid_of(port) for port in ports]
    directories = [_node_directory(port) for port in ports]
    assert all(os.path.isdir(directory) for directory in directories)
    cluster.kill(ports[0])
    with pytest.raises(UsageError, match="not running"):
        cluster.pid_of(ports[0])

    cluster.stop()

    for pid in pids:
        with pytest.raises(ProcessLookupError):
            os.kill(pid, 0)  # reaped, not a zombie
    assert not any(os.path.exists(directory) for directory in directories)
    assert not any(_answers(port) for port in ports)
    with pytest.raises(UsageError, match="not running"):
        _ = cluster.url
    cluster.stop()  # a second stop is harmless


# --- failover -------------------------------------------------------------------------------


def _set_a_key_this_master_serves(client: redis.Redis, value: str) -> str:
    """Write ``value`` under the first key whose slot the node of ``client`` serves."""
    for i in itertools.count():
        key = f"survivor-{i}"
        try:
            client.set(key, value)
        except MovedError:
            continue
        return key
    raise AssertionError("unreachable")


def test_a_killed_master_is_replaced_by_its_replica_which_kept_the_data():
    with RedisClusterServer(replicas=1) as cluster:
        assert len(cluster.ports) == 6
        before = cluster.master_ports()
        victim = before[0]
        with _node_client(victim) as direct:
            key = _set_a_key_this_master_serves(direct, "written before the crash")
            assert direct.execute_command("WAIT", 1, 1000) == 1  # the replica has it

        cluster.kill(victim)
        cluster.wait_until_healthy()

        after = cluster.master_ports()
        promoted = set(after) - set(before)
        assert victim not in after
        assert len(after) == 3
        assert len(promoted) == 1
        assert promoted < set(cluster.ports)
        with _cluster_client(after[0]) as client:
            assert client.get(key) == b"written before the crash"
            assert {client.get_node_from_key(key).port} == promoted


def test_without_replicas_a_killed_master_leaves_the_cluster_unhealthy_and_says_why():
    with RedisClusterServer() as cluster:
        victim = cluster.master_ports()[0]

        cluster.kill(victim)

        with pytest.raises(
            ConfigurationError,
            match=r"(?s)did not become healthy within 0.5s: node \d+ .*log tail of node \d+",
        ):
            cluster.wait_until_healthy(timeout=0.5)
        assert victim not in cluster.master_ports()


# --- configuration errors -------------------------------------------------------------------


def test_fewer_than_three_masters_are_refused():
    with pytest.raises(UsageError, match="at least 3 masters"):
        RedisClusterServer(masters=2)


def test_start_without_redis_cli_says_how_to_get_it(monkeypatch, tmp_path):
    monkeypatch.setenv("PATH", str(tmp_path))

    with pytest.raises(ConfigurationError, match=r"redis-cli not found.*redis-tools"):
        RedisClusterServer().start()


def test_a_failed_cluster_create_shows_redis_cli_output_and_stops_the_nodes(monkeypatch, tmp_path):
    fake = tmp_path / "redis-cli"
    fake.write_text(
        f'#!/bin/sh\necho "$@" > {tmp_path}/args\necho "[ERR] Node is not empty"\nexit 1\n'
    )
    fake.chmod(0o755)
    monkeypatch.setenv("PATH", f"{tmp_path}{os.pathsep}{os.environ['PATH']}")

    with pytest.raises(
        ConfigurationError, match=r"(?s)failed with code 1.*\[ERR\] Node is not empty"
    ):
        RedisClusterServer().start()

    args = (tmp_path / "args").read_text().split()
    ports = [int(arg.rpartition(":")[2]) for arg in args if arg.startswith("127.0.0.1:")]
    assert len(ports) == 3
    assert not any(_answers(port) for port in ports)


def test_a_node_port_is_only_chosen_when_its_cluster_bus_port_is_free_too(monkeypatch):
    with socket.socket() as squatter:
        squatter.bind(("127.0.0.1", 0))
        bus_taken = squatter.getsockname()[1]
        offered = iter([bus_taken - 10000])
        real_free_port = cluster_launcher._free_port
        monkeypatch.setattr(
            cluster_launcher, "_free_port", lambda: next(offered, None) or real_free_port()
        )

        port = cluster_launcher._free_cluster_port()

    assert port != bus_taken - 10000


# --- python -m streamstore.testing --cluster ------------------------------------------------


def test_the_command_prints_a_cluster_url_and_stops_the_cluster_on_sigterm():
    command = [sys.executable, "-m", "streamstore.testing", "--cluster"]
    with subprocess.Popen(command, stdout=subprocess.PIPE, text=True) as process:  # noqa: S603
        try:
            line = process.stdout.readline().strip()
            assert line.startswith("REDIS_URL=redis+cluster://127.0.0.1:")
            ports = [int(node.rpartition(":")[2]) for node in line.split("//")[1].split(",")]
            assert len(ports) == 3
            with _cluster_client(ports[0]) as client:
                client.set("from-the-command", "yes")
                assert client.get("from-the-command") == b"yes"
        finally:
            process.send_signal(signal.SIGTERM)
            assert process.wait(timeout=10) == 0

    assert not any(_answers(port) for port in ports)
