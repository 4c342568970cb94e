"""The `python -m streamstore.testing` command: a private server or cluster until stopped."""

from __future__ import annotations

import argparse
import signal
import sys
import threading
from typing import TYPE_CHECKING

from streamstore.testing.cluster import RedisClusterServer
from streamstore.testing.server import RedisServer

if TYPE_CHECKING:
    from collections.abc import Sequence
    from types import FrameType

__all__ = ["main"]


def _parse(argv: Sequence[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(
        prog="python -m streamstore.testing",
        description="Run a private redis-server with RedisJSON until Ctrl-C or SIGTERM, "
        "and print its REDIS_URL.",
    )
    parser.add_argument(
        "--cluster",
        action="store_true",
        help="start a Redis Cluster of 3 masters instead (REDIS_URL=redis+cluster://...)",
    )
    return parser.parse_args(argv)


def main(argv: Sequence[str] | None = None) -> None:
    """Run a private server or cluster until Ctrl-C or SIGTERM (`python -m streamstore.testing`)."""
    options = _parse(argv)
    stop_requested = threading.Event()

    def request_stop(signum: int, frame: FrameType | None) -> None:  # noqa: ARG001
        stop_requested.set()

    handled = (signal.SIGINT, signal.SIGTERM)
    previous = {signum: signal.signal(signum, request_stop) for signum in handled}
    try:
        with RedisClusterServer() if options.cluster else RedisServer() as server:
            sys.stdout.write(f"REDIS_URL={server.url}\n")
            sys.stdout.flush()
            while not stop_requested.wait(timeout=0.5):
                if not server.is_running():
                    raise SystemExit("redis-server exited unexpectedly")
    finally:
        for signum, handler in previous.items():
            signal.signal(signum, handler)
