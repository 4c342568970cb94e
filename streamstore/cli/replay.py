"""Commands that check documents against their streams, and repair them: verify, rebuild."""

from __future__ import annotations

import asyncio
from typing import Annotated

import typer

from streamstore.cli._app import (
    Batch,
    ModelPath,
    Pk,
    Url,
    app,
    connect,
    load_model,
    plural,
    progress,
    reported,
)
from streamstore.connection import DEFAULT_URL
from streamstore.model import BaseRedisModel
from streamstore.projections.replay import Summary

# --- verify and rebuild: every instance of a class, or one -----------------------------------

#: Per mode of verify/rebuild: what the summary calls an instance that differs, and its line.
OUTCOMES = {
    "verify": ("differing", "differs at"),
    "dry-run": ("to rewrite (dry run)", "would rewrite"),
    "rebuild": ("rewritten", "rewritten at"),
}


@app.command()
def verify(model: ModelPath, *, pk: Pk = None, url: Url = DEFAULT_URL, batch: Batch = 100) -> None:
    """Check that each document equals the fold of its stream; exit 1 if any differs."""
    _check(model, "verify", pk, url, batch)


@app.command()
def rebuild(
    model: ModelPath,
    *,
    pk: Pk = None,
    dry_run: Annotated[bool, typer.Option("--dry-run", help="Only say what it would do.")] = False,
    url: Url = DEFAULT_URL,
    batch: Batch = 100,
) -> None:
    """Rewrite each document that differs from the fold of its stream (no events written)."""
    _check(model, "dry-run" if dry_run else "rebuild", pk, url, batch)


def _check(model: str, mode: str, pk: str | None, url: str, batch: int) -> None:
    """Verify or rebuild (``mode``: verify, dry-run, rebuild); print the summary; exit."""

    async def walk(cls: type[BaseRedisModel]) -> Summary:
        summary, dry_run = Summary(), mode == "dry-run"
        async with connect(url) as client:
            replayer = cls.replayer(client)
            if pk is not None:
                one = (
                    replayer.verify(pk)
                    if mode == "verify"
                    else replayer.rebuild(pk, dry_run=dry_run)
                )
                summary.add(await one)
                return summary
            reports = (
                replayer.iter_verify(batch)
                if mode == "verify"
                else replayer.iter_rebuild(batch, dry_run=dry_run)
            )
            with progress(f"{cls.__name__} instances") as advance:
                async for report in reports:
                    summary.add(report)
                    advance()
        return summary

    with reported():
        cls = load_model(model)
        summary = asyncio.run(walk(cls))
    differing = sum(1 for report in summary.reports if not report.problem)
    counted, label = OUTCOMES[mode]
    corrupt = f" ({summary.corrupt} corrupt)" if summary.corrupt else ""
    typer.echo(
        f"{cls.__name__}: {plural(summary.instances, 'instance')}, {summary.equal} equal, "
        f"{differing} {counted}, {len(summary.reports) - differing} not replayable{corrupt}, "
        f"{plural(summary.events, 'event')} replayed"
    )
    for report in summary.reports:
        outcome = f"{label} {', '.join(report.differences)}"
        if report.problem:
            why = "corrupt" if report.corrupt else "not replayable"
            outcome = f"{why}, left alone: {report.problem}"
        typer.echo(f"  {report.key}  {outcome}")
    # Exit 1 when an instance is left differing from its stream: what verify found, what a dry
    # run did not fix, and what rebuild could not replay.
    left = [r for r in summary.reports if r.problem or mode != "rebuild"]
    raise typer.Exit(1 if left else 0)
