#!/usr/bin/env bash
# Lint, type-check and test, using the tools in .venv (run scripts/bootstrap.sh first).
# Arguments replace the default pytest target `tests`, e.g. `bash scripts/check.sh -k launcher`.
set -euo pipefail
cd "$(dirname "$0")/.."

echo "== ruff check"
.venv/bin/ruff check .
echo "== ruff format --check"
.venv/bin/ruff format --check streamstore projections tests
echo "== mypy"
.venv/bin/mypy
echo "== mkdocs build --strict"
.venv/bin/mkdocs build --strict --quiet -d "$(mktemp -d)"
echo "== pytest"
.venv/bin/pytest -q -p no:cacheprovider --ignore=tests/benchmarks "${@:-tests}"
if [ "$#" -eq 0 ] && [ -z "${STREAMSTORE_TEST_CLUSTER:-}" ]; then
    echo "== pytest against a local 3-primary Redis Cluster (make test-cluster)"
    STREAMSTORE_TEST_CLUSTER=1 .venv/bin/pytest -q -p no:cacheprovider tests/integration
fi
