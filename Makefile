.PHONY: demo test test-cluster lint

demo:
	bash scripts/demo.sh

test:
	bash scripts/test.sh

test-cluster:
	STREAMSTORE_TEST_CLUSTER=1 bash scripts/test.sh tests/integration

lint:
	bash scripts/bootstrap.sh
	.venv/bin/ruff check .
	.venv/bin/ruff format --check streamstore projections tests
	.venv/bin/mypy
