"""The ``streamstore`` command line: inspect, check and repair stored data; run subscribers.

Thin on purpose: each command parses its arguments, calls the library (`Replayer`,
`iter_history`, `Runner`, ...) and renders what comes back. Data goes to stdout; progress
displays, summaries and ``error: ...`` lines go to stderr, so ``streamstore export ... | jq``
sees JSON only.

Every command talks to the server named by ``--url`` (default ``$REDIS_URL``), even when a model
class names its own ``Meta.redis``: the command line says which server to inspect, so the CLI
makes its own client and a `Replayer` on the class's keys and upcasters, never the class's client.
"""

from streamstore.cli import history, migrate, replay, service
from streamstore.cli._app import app, load_model

__all__ = ["app", "load_model", "main"]

_COMMANDS = (history, migrate, replay, service)  # imported for their @app.command registrations


def main() -> None:
    """Run the command line (the ``streamstore`` script and ``python -m streamstore``)."""
    app(prog_name="streamstore")
