"""The private Redis Cluster of RedisJSON-enabled redis-servers that cluster tests run against."""

from __future__ import annotations

import contextlib
import dataclasses
import shutil
import socket
import subprocess
import time
from typing import TYPE_CHECKING

import redis

from streamstore._logging import get_logger
from streamstore.errors import ConfigurationError, UsageError
from streamstore.testing.server import (
    Launched,
    RedisServer,
    _free_port,
    _log_path,
    _probe_client,
    _tail,
)

if TYPE_CHECKING:
    from collections.abc import Collection, Sequence

__all__ = ["CLUSTER_SLOTS", "RedisClusterServer"]

#: How many hash slots a Redis Cluster has; every one must be served for `cluster_state:ok`.
CLUSTER_SLOTS = 16384
#: A node's cluster bus listens on its client port plus this offset.
_BUS_PORT_OFFSET = 10000
_MAX_PORT = 65535
_PORT_ATTEMPTS = 100

_DEFAULT_NODE_TIMEOUT_MS = 500
_CREATE_TIMEOUT = 30.0
_HEALTH_TIMEOUT = 20.0
_POLL_INTERVAL = 0.05


def _find_redis_cli() -> str:
    binary = shutil.which("redis-cli")
    if binary is None:
        raise ConfigurationError(
            "redis-cli not found on PATH (it creates the cluster): install it, "
            "e.g. `apt-get install redis-tools`"
        )
    return binary


def _is_free(port: int) -> bool:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        try:
            sock.bind(("127.0.0.1", port))
        except OSError:
            return False
    return True


def _free_cluster_port() -> int:
    """Return a free loopback port whose cluster bus port is free too."""
    for _ in range(_PORT_ATTEMPTS):
        port = _free_port()
        # Ephemeral ports run up to 60999 on Linux, so about a quarter have no bus port at all.
        if port + _BUS_PORT_OFFSET <= _MAX_PORT and _is_free(port + _BUS_PORT_OFFSET):
            return port
    raise ConfigurationError(
        f"found no free port whose cluster bus port (+{_BUS_PORT_OFFSET}) is free as well "
        f"in {_PORT_ATTEMPTS} attempts"
    )


class _ClusterNode(RedisServer):
    """A `RedisServer` in cluster mode, on a port whose bus port is free."""

    def _pick_port(self) -> int:
        return _free_cluster_port()

    def _server_args(self, port: int) -> Sequence[str]:
        return ("--cluster-config-file", f"nodes-{port}.conf", *self._extra_args)

    def log_tail(self) -> str:
        """Return the last lines of the node's log."""
        return _tail(_log_path(self.directory, self.port))


@dataclasses.dataclass(frozen=True, slots=True)
class _NodeView:
    """One line of CLUSTER NODES: a node as some node of the cluster sees it."""

    port: int
    flags: frozenset[str]
    slot_count: int

    @classmethod
    def parse(cls, line: str) -> _NodeView:
        # <id> <ip:port@cport[,hostname]> <flags> <master> <ping> <pong> <epoch> <link> <slot>...
        fields = line.split()
        address = fields[1].split("@", 1)[0]
        slot_count = 0
        for slot in fields[8:]:
            if slot.startswith("["):  # a slot being migrated or imported, still served here
                continue
            first, _, last = slot.partition("-")
            slot_count += int(last or first) - int(first) + 1
        return cls(
            port=int(address.rpartition(":")[2] or 0),
            flags=frozenset(fields[2].split(",")),
            slot_count=slot_count,
        )


def _cluster_text(client: redis.Redis, subcommand: str) -> str:
    # As two words, the command gets none of redis-py's reply parsing (which changes between
    # versions): we read the text the Redis docs describe. The sync method has no annotations.
    reply: bytes = client.execute_command("CLUSTER", subcommand)  # type: ignore[no-untyped-call]
    return reply.decode()


def _cluster_nodes(client: redis.Redis) -> list[_NodeView]:
    text = _cluster_text(client, "NODES")
    return [_NodeView.parse(line) for line in text.splitlines() if line.strip()]


def _cluster_info(client: redis.Redis) -> dict[str, str]:
    text = _cluster_text(client, "INFO")
    return dict(line.split(":", 1) for line in text.splitlines() if ":" in line)


def _node_problem(client: redis.Redis, port: int, live: Collection[int]) -> str | None:
    """Say what keeps this node from being healthy in a cluster of ``live`` nodes, if anything."""
    info = _cluster_info(client)
    if info.get("cluster_state") != "ok":
        return f"node {port} reports cluster_state:{info.get('cluster_state')}"
    if info.get("cluster_slots_assigned") != str(CLUSTER_SLOTS):
        return f"node {port} has {info.get('cluster_slots_assigned')} slots assigned"
    views = _cluster_nodes(client)
    unknown = set(live) - {view.port for view in views if "handshake" not in view.flags}
    if unknown:
        return f"node {port} does not know the nodes on ports {sorted(unknown)} yet"
    served = sum(view.slot_count for view in views if "master" in view.flags and view.port in live)
    if served != CLUSTER_SLOTS:
        return f"node {port} sees {served} of {CLUSTER_SLOTS} slots served by live masters"
    myself = next(view for view in views if "myself" in view.flags)
    if "slave" in myself.flags:
        link = client.info("replication").get("master_link_status")
        if link != "up":
            return f"replica {port} reports master_link_status:{link}"
    return None


def _decoded(output: bytes | str | None) -> str:
    if isinstance(output, bytes):
        return output.decode(errors="replace")
    return output or ""


class RedisClusterServer(Launched):
    """A private Redis Cluster of RedisJSON-enabled redis-servers on free loopback ports.

    Each node is a `RedisServer` in cluster mode with its own temporary directory (no
    persistence); `redis-cli --cluster create` joins them. Use it as a context manager, or call
    `start()` and `stop()`. `kill()` crashes a node, for failover tests.
    """

    def __init__(
        self,
        masters: int = 3,
        replicas: int = 0,
        *,
        node_timeout_ms: int = _DEFAULT_NODE_TIMEOUT_MS,
        extra_args: Sequence[str] = (),
    ) -> None:
        """Prepare a cluster of ``masters`` masters with ``replicas`` replicas each.

        ``node_timeout_ms`` is how long a node may be unreachable before it counts as failed,
        so roughly how long a failover takes; ``extra_args`` go to every node's command line.
        """
        if masters < 3:  # noqa: PLR2004 - redis-cli refuses to create a smaller cluster
            raise UsageError(f"a Redis Cluster needs at least 3 masters, not {masters}")
        if replicas < 0:
            raise UsageError(f"replicas must be 0 or more, not {replicas}")
        if node_timeout_ms <= 0:
            raise UsageError(f"node_timeout_ms must be positive, not {node_timeout_ms}")
        self._masters = masters
        self._replicas = replicas
        self._node_args = (
            "--cluster-enabled", "yes",
            "--cluster-node-timeout", str(node_timeout_ms),
            # A replica may always stand in for its failed master however long their link has
            # been down: no data guarantee is worth a cluster that stays down in a test.
            "--cluster-replica-validity-factor", "0",
            # Replicas sync without waiting 5 s for other replicas to join the same transfer.
            "--repl-diskless-sync-delay", "0",
            *extra_args,
        )  # fmt: skip
        self._nodes: dict[int, _ClusterNode] = {}
        self._url: str | None = None

    @property
    def url(self) -> str:
        """A `redis+cluster://` URL listing the masters the cluster started with."""
        if self._url is None:
            raise UsageError("RedisClusterServer is not running; call start() first")
        return self._url

    @property
    def ports(self) -> tuple[int, ...]:
        """The client ports of every node started, killed ones included, in start order."""
        self._require_started()
        return tuple(self._nodes)

    def _require_started(self) -> None:
        if not self._nodes:
            raise UsageError("RedisClusterServer is not running; call start() first")

    def start(self) -> None:
        """Start the nodes, create the cluster and wait until it serves every slot."""
        if self._nodes:
            raise UsageError("RedisClusterServer is already running")
        redis_cli = _find_redis_cli()
        began = time.monotonic()
        try:
            for _ in range(self._masters * (1 + self._replicas)):
                node = _ClusterNode(self._node_args)
                node.start()
                self._nodes[node.port] = node
            self._create(redis_cli)
            self.wait_until_healthy()
            self._url = "redis+cluster://" + ",".join(
                f"127.0.0.1:{port}" for port in self.master_ports()
            )
        except BaseException:
            self.stop()
            raise
        get_logger().info(
            "redis_cluster.started", url=self._url, ports=self.ports,
            seconds=round(time.monotonic() - began, 2),
        )  # fmt: skip

    def _create(self, redis_cli: str) -> None:
        args = [
            redis_cli, "--cluster", "create",
            *(f"127.0.0.1:{port}" for port in self._nodes),
            "--cluster-replicas", str(self._replicas),
            "--cluster-yes",
        ]  # fmt: skip
        try:
            result = subprocess.run(  # noqa: S603 - fixed argv, no shell
                args,
                stdin=subprocess.DEVNULL,
                capture_output=True,
                timeout=_CREATE_TIMEOUT,
                check=False,
            )
        except subprocess.TimeoutExpired as error:
            partial = _decoded(error.stdout) + _decoded(error.stderr)
            raise ConfigurationError(
                f"redis-cli --cluster create did not finish within {_CREATE_TIMEOUT}s; "
                f"its output:\n{partial.strip()}"
            ) from error
        if result.returncode != 0:
            output = _decoded(result.stdout) + _decoded(result.stderr)
            raise ConfigurationError(
                f"redis-cli --cluster create failed with code {result.returncode}; "
                f"its output:\n{output.strip()}"
            )

    def _live_ports(self) -> list[int]:
        return [port for port, node in self._nodes.items() if node.is_running()]

    def _node(self, port: int) -> _ClusterNode:
        try:
            return self._nodes[port]
        except KeyError:
            raise UsageError(
                f"no node of this cluster listens on port {port}; its ports are {list(self._nodes)}"
            ) from None

    def pid_of(self, port: int) -> int:
        """Return the process id of the node on ``port``."""
        node = self._node(port)
        if not node.is_running():
            raise UsageError(f"the node on port {port} is not running")
        return node.pid

    def master_ports(self) -> list[int]:
        """Return the ports of the live masters, as a live node's CLUSTER NODES lists them now.

        After a failover this names the promoted replica, not the failed master.
        """
        self._require_started()
        live = self._live_ports()
        errors: list[str] = []
        for port in live:
            try:
                with _probe_client(port) as client:
                    views = _cluster_nodes(client)
            except (redis.RedisError, OSError) as error:
                errors.append(f"{port}: {error}")
                continue
            return sorted(
                view.port for view in views if "master" in view.flags and view.port in live
            )
        raise ConfigurationError(f"no live cluster node answered CLUSTER NODES: {errors}")

    def kill(self, port: int) -> None:
        """SIGKILL the node on ``port``, as a crash would; its replica takes over in a while."""
        self._node(port).kill()
        get_logger().info("redis_cluster.node_killed", port=port)

    def is_running(self) -> bool:
        """Whether every node's process is alive (so False after `kill()`)."""
        return bool(self._nodes) and all(node.is_running() for node in self._nodes.values())

    def wait_until_healthy(self, timeout: float = _HEALTH_TIMEOUT) -> None:
        """Wait until the live nodes form a working cluster, e.g. after a `kill()`.

        Healthy means: every live node reports `cluster_state:ok`, knows every live node and
        sees every slot served by a live master, and every live replica's link to its master is
        up. Raises `ConfigurationError` with the last problem seen after ``timeout`` seconds.
        """
        self._require_started()
        if not self._live_ports():
            raise ConfigurationError("no node of the cluster is running")
        began = time.monotonic()
        deadline = began + timeout
        while (problem := self._health_problem()) is not None:
            if time.monotonic() > deadline:
                raise ConfigurationError(
                    f"the cluster did not become healthy within {timeout}s: {problem[1]}; "
                    f"log tail of node {problem[0]}:\n{self._nodes[problem[0]].log_tail()}"
                )
            time.sleep(_POLL_INTERVAL)
        get_logger().debug("redis_cluster.healthy", seconds=round(time.monotonic() - began, 2))

    def _health_problem(self) -> tuple[int, str] | None:
        live = self._live_ports()
        for port in live:
            try:
                with _probe_client(port) as client:
                    problem = _node_problem(client, port, live)
            except (redis.RedisError, OSError) as error:
                problem = f"node {port} did not answer: {error}"
            if problem is not None:
                return port, problem
        return None

    def stop(self) -> None:
        """Shut every node down and remove their temp dirs.

        Safe to call more than once, and after nodes were killed or died on their own.
        """
        nodes, self._nodes = self._nodes, {}
        self._url = None
        # Every node is stopped even if stopping another one fails; errors are raised after.
        with contextlib.ExitStack() as stack:
            for node in nodes.values():
                stack.callback(node.stop)
        if nodes:
            get_logger().info("redis_cluster.stopped", ports=tuple(nodes))
