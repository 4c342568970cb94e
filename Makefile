.PHONY: demo test lint

demo:
	bash scripts/demo.sh

test:
	bash scripts/test.sh

lint:
	bash scripts/bootstrap.sh
	.venv/bin/ruff check .
	.venv/bin/mypy
