#!/usr/bin/env bash
# Set up (if needed), then lint, type-check and run the test suite.
set -euo pipefail
cd "$(dirname "$0")/.."

bash scripts/bootstrap.sh
exec bash scripts/check.sh "$@"
