"""The library's structlog logger, which never configures logging globally."""

from __future__ import annotations

import logging
from typing import Any

import structlog

__all__ = ["debug_enabled", "get_logger"]

_stdlib = logging.getLogger("streamstore")

# When the application has not configured structlog, its defaults would print every debug
# event to stdout. Until it does, our events go to the stdlib logger "streamstore" instead,
# where the application's logging levels and handlers decide (silent by default).
_bridge = structlog.wrap_logger(
    _stdlib,
    wrapper_class=structlog.stdlib.BoundLogger,
    processors=[structlog.processors.KeyValueRenderer(key_order=["event"])],
)


def get_logger() -> Any:
    """Return the application's structlog logger if it configured one, else the stdlib bridge."""
    if structlog.is_configured():
        return structlog.get_logger("streamstore")
    return _bridge


def debug_enabled() -> bool:
    """Tell whether debug events would go anywhere (cheap: lets hot paths skip building them)."""
    return structlog.is_configured() or _stdlib.isEnabledFor(logging.DEBUG)
