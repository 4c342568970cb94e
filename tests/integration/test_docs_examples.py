"""Every Python code block of the README and docs/ runs, in order, against a real Redis."""

from __future__ import annotations

import ast
import asyncio
import os
import pathlib
import re
import shlex
import subprocess
import sys

import pytest

# The docs' examples and commands show a single server (redis:// URLs, plain clients).
pytestmark = pytest.mark.single_node

ROOT = pathlib.Path(__file__).parents[2]
DOCS = [ROOT / "README.md", *sorted((ROOT / "docs").glob("*.md"))]
BLOCK = re.compile(r"^```python\n(.*?)^```", re.DOTALL | re.MULTILINE)


def python_blocks(path: pathlib.Path) -> list[str]:
    return BLOCK.findall(path.read_text())


async def run_blocks(path: pathlib.Path) -> None:
    namespace: dict[str, object] = {"__name__": f"docs_{path.stem}"}
    for number, source in enumerate(python_blocks(path), start=1):
        code = compile(
            source,
            f"{path.name}#block{number}",
            "exec",
            flags=ast.PyCF_ALLOW_TOP_LEVEL_AWAIT,
            dont_inherit=True,  # run the examples as written, not under this module's __future__
        )
        result = eval(code, namespace)  # noqa: S307 (our own documentation, on purpose)
        if asyncio.iscoroutine(result):
            await result


#: Runs one page's blocks in a fresh interpreter: each page is a program of its own, as a
#: reader's would be, so its model classes never meet another page's or the tests' (two
#: modules' same-named classes are refused: they would share keys).
RUN_PAGE = (
    "import asyncio, pathlib, sys; sys.path.insert(0, sys.argv[1]); "
    "from test_docs_examples import run_blocks; asyncio.run(run_blocks(pathlib.Path(sys.argv[2])))"
)


def run_page(path: pathlib.Path) -> subprocess.CompletedProcess[str]:
    """Run every Python block of ``path`` in a fresh interpreter; return what it printed."""
    return subprocess.run(  # noqa: S603 (our own documentation, on purpose)
        [sys.executable, "-c", RUN_PAGE, str(pathlib.Path(__file__).parent), str(path)],
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
    )


@pytest.mark.parametrize("path", [p for p in DOCS if python_blocks(p)], ids=lambda p: p.name)
def test_code_examples_run(db, path: pathlib.Path):
    page = run_page(path)
    assert page.returncode == 0, page.stderr


def test_readme_gives_exactly_the_two_commands_and_ci_runs_the_test_one():
    readme = (ROOT / "README.md").read_text()
    section = readme.split("## Two commands", 1)[1].split("##", 1)[0]
    (commands,) = re.findall(r"```bash\n(.*?)```", section, re.DOTALL)
    lines = [line.split("#")[0].strip() for line in commands.strip().splitlines()]
    assert lines == ["bash scripts/demo.sh", "bash scripts/test.sh"]
    ci = (ROOT / ".ci" / "run").read_text()
    assert "scripts/test.sh" in shlex.split(ci.splitlines()[-1])


def test_the_demo_runs_and_shows_the_stream_folding_to_the_document(redis_url):
    demo = subprocess.run(  # noqa: S603 (our own demo script)
        [sys.executable, str(ROOT / "examples" / "demo.py")],
        env={**os.environ, "REDIS_URL": redis_url},
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )
    assert demo.returncode == 0, demo.stderr
    assert "fold(stream) == document: True" in demo.stdout
    assert "verify: equal=True, 7 events replayed" in demo.stdout
