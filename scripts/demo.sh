#!/usr/bin/env bash
# Set up (if needed) and run the demo against a private Redis with RedisJSON.
set -euo pipefail
cd "$(dirname "$0")/.."

bash scripts/bootstrap.sh
exec .venv/bin/python examples/demo.py "$@"
