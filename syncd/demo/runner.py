"""Running the demo: start the sandboxes, set the stage, run the daemon through the scripted story,
print the summary."""

from __future__ import annotations

import asyncio
import contextlib
import os
import shutil
import sys
import tempfile
import time
from collections import Counter
from collections.abc import Callable, Iterator, Mapping
from datetime import UTC, datetime
from pathlib import Path
from typing import TextIO

from rich.console import Console
from rich.progress import BarColumn, Progress, TextColumn, TimeElapsedColumn
from rich.table import Table
from rich.text import Text

from syncd.config import Config
from syncd.daemon import run_daemon
from syncd.demo import script, seeding
from syncd.demo.data import ACTION_HELP, ACTION_STYLE, DemoError
from syncd.demo.feed import Feed, LogTap
from syncd.demo.roles import demo_config
from syncd.demo.sandboxes import Sandboxes
from syncd.demo.story import Outcome, Story
from syncd.logging import configure_logging
from syncd.sandboxkit import RunningSandbox, start_sandbox

Advance = Callable[[str], None]
"""Moves the progress bar one step on, naming the next."""


async def run_demo(base: Config, console: Console, *, workdir: Path, log_file: TextIO) -> int:
    """The whole demo; returns the exit code (0 when all scripted outcomes hold). The daemon's
    JSON log lines go to ``log_file``; the ledger is created in ``workdir``."""
    stage = seeding.set_stage(base, datetime.now(UTC))
    started = time.monotonic()
    steps = script.cast(stage.crm, stage.saludya)
    console.rule(script.BANNER)
    console.print(script.INTRODUCTION)
    console.print(_legend())
    feed = Feed(console)
    running: dict[str, RunningSandbox] = {}
    with _progress(console) as progress:
        task = progress.add_task("starting sandboxes", total=len(steps) + 3)

        def advance(description: str) -> None:
            progress.update(task, advance=1, description=description)

        try:
            for name, cfg in base.connectors.items():
                running[name] = await start_sandbox(cfg.type, port=0, rate_limits=False)
            config = demo_config(base, {n: r.url for n, r in running.items()}, workdir / "syncd-demo.db")
            console.print(_sandbox_table(config, running))
            advance("seeding")
            async with Sandboxes(running) as sandboxes:
                story = await _prepare(console, config, stage, sandboxes, feed)
                await _with_daemon(story, stage, steps, advance, log_file)
        finally:
            for sandbox in running.values():
                await sandbox.stop()
    return _report(console, feed, base, [outcome for outcome, _step in steps], time.monotonic() - started)


def _progress(console: Console) -> Progress:
    return Progress(
        TextColumn("[progress.description]{task.description}"),
        BarColumn(),
        TextColumn("{task.completed}/{task.total}"),
        TimeElapsedColumn(),
        console=console,
        transient=True,
    )


def _sandbox_table(config: Config, running: Mapping[str, RunningSandbox]) -> Table:
    table = Table(show_header=True, header_style="bold", box=None, padding=(0, 2))
    for column in ("connector", "type", "sandbox", "group"):
        table.add_column(column)
    for name, cfg in config.connectors.items():
        group = config.group_of(name)
        table.add_row(name, cfg.type, running[name].url, group.name if group else "-")
    return table


async def _prepare(console: Console, config: Config, stage: seeding.Stage, sandboxes: Sandboxes, feed: Feed) -> Story:
    """Seed the sandboxes, type the go-live bookings by hand, import the crosswalk, say what was done."""
    crm = stage.crm
    rows_by = await seeding.seed(sandboxes, config, stage)
    typed = await seeding.type_by_hand(sandboxes, config, crm, stage.crm_data)
    await seeding.import_crosswalk(config, rows_by, (crm.other, "patient", stage.missing_patient))
    seeded = {g: len(d.appointments) for g, d in stage.datasets.items() if g}
    console.print(
        "Seeded invented appointments into "
        + ", ".join(f"{stage.holders[g]} ({seeded[g]})" for g in stage.holders)
        + "; patients, practitioners, sites and services into every system; crosswalk imported "
        f"without patient {stage.missing_patient}'s {crm.other} row. {len(typed.both)} of "
        f"{crm.ehr}'s bookings were also typed by hand into {crm.crm} and "
        f"{crm.other}, one booking into {crm.crm} only (no syncd reference)."
    )
    return Story(
        console,
        config,
        crm,
        sandboxes,
        feed,
        stage.crm_data,
        rows_by,
        stage.missing_patient,
        typed=typed,
        saludya=stage.saludya,
        saludya_dataset=stage.saludya_dataset,
    )


async def _with_daemon(
    story: Story, stage: seeding.Stage, steps: list[tuple[Outcome, script.Step]], advance: Advance, log_file: TextIO
) -> None:
    """Run the daemon (its JSON log to ``log_file``, its decisions to the live view) through the first
    sync and the scripted steps, then stop it."""
    configure_logging("info", "json")
    with contextlib.redirect_stderr(LogTap(log_file, story.feed.on_decision)):
        daemon = asyncio.create_task(run_daemon(story.config, stop=story.stop, port=0))
        try:
            story.console.rule(script.FIRST_SYNC)
            advance("first sync")
            await _first_sync(story, stage, daemon)
            await _play(story, steps, daemon, advance)
            story.feed.quiet = True
            story.stop.set()
            advance("stopping the daemon")
            await asyncio.wait_for(daemon, timeout=40)
        finally:
            story.stop.set()
            if not daemon.done():
                daemon.cancel()
                with contextlib.suppress(BaseException):
                    await daemon


async def _first_sync(story: Story, stage: seeding.Stage, daemon: asyncio.Task[int]) -> None:
    expected = seeding.initial_expectations(story.config, stage)
    why = await seeding.wait_initial(story.sandboxes, expected, timeout=25.0)
    _raise_if_stopped(daemon)
    if why is not None:
        story.console.print(Text(f"  ✗ {why}", style="bold red"))
    else:
        await story.feed.settled()  # let the echoes of the creates pass


async def _play(
    story: Story, steps: list[tuple[Outcome, script.Step]], daemon: asyncio.Task[int], advance: Advance
) -> None:
    for outcome, step in steps:
        if story.stop.is_set():
            break
        advance(f"scenario {outcome.number}/{len(steps)}")
        story.console.rule(f"{outcome.number}. {outcome.title}")
        _raise_if_stopped(daemon)
        try:
            await step.run(story, outcome)
        except DemoError as exc:
            await story.settle(outcome, str(exc), "")


def _raise_if_stopped(daemon: asyncio.Task[int]) -> None:
    """A daemon that ended early ends the demo with its error."""
    if daemon.done():
        daemon.result()


def _legend() -> Table:
    legend = Table.grid(padding=(0, 2))
    for action in script.LEGEND:
        style, label = ACTION_STYLE[action]
        legend.add_row(Text("    " + label, style=style), ACTION_HELP[action])
    return legend


def _summary(feed: Feed, config: Config) -> Table:
    table = Table(title="What syncd wrote, per target system", title_justify="left")
    table.add_column("connector")
    table.add_column("type", style="dim")
    for label in ("created", "linked", "updated", "cancelled", "re-merged", "echoes", "dead letters", "conflicts"):
        table.add_column(label, justify="right")
    for name, cfg in config.connectors.items():
        c = feed.counts.get(name, Counter())
        table.add_row(
            name,
            cfg.type,
            str(c["created"] + c["replaced"]),
            str(c["linked"]),
            str(c["updated"]),
            str(c["cancelled"] + c["replaced"]),
            str(c["retry"]),
            str(c["echo"]),
            str(c["dead_letter"]),
            str(c["conflict"]),
        )
    return table


def _report(console: Console, feed: Feed, config: Config, outcomes: list[Outcome], elapsed: float) -> int:
    console.rule("Summary")
    console.print(_summary(feed, config))
    console.print()
    console.print(Text("What just happened:", style="bold"))
    for outcome in outcomes:
        line = Text("  ✓ " if outcome.ok else "  ✗ ", style="bold green" if outcome.ok else "bold red")
        line.append(f"{outcome.number}. {outcome.title}: ", style="bold")
        line.append(outcome.detail)
        console.print(line)
    failed = [o for o in outcomes if not o.ok]
    console.print()
    if failed:
        console.print(
            Text(
                f"demo finished in {elapsed:.0f}s: {len(failed)} of {len(outcomes)} scripted outcomes "
                f"did not hold ({', '.join(str(o.number) for o in failed)})",
                style="bold red",
            )
        )
        return 1
    console.print(
        Text(f"demo finished in {elapsed:.0f}s: all {len(outcomes)} scripted outcomes hold", style="bold green")
    )
    return 0


@contextlib.contextmanager
def workspace(keep: bool) -> Iterator[tuple[Path, TextIO]]:
    """A fresh temporary directory for the demo's ledger and its open JSON log file
    (``syncd-demo.log``); removed afterwards unless ``keep``."""
    path = Path(tempfile.mkdtemp(prefix="syncd-demo-"))
    try:
        with (path / "syncd-demo.log").open("a", encoding="utf-8") as log_file:
            yield path, log_file
    finally:
        if not keep:
            shutil.rmtree(path, ignore_errors=True)


def console_for(stream: TextIO | None = None) -> Console:
    """Rich output on stdout: live on a terminal; plain lines (120 columns unless ``$COLUMNS``) when
    piped."""
    out = stream or sys.stdout
    interactive = out.isatty()
    width = None if interactive or os.environ.get("COLUMNS", "").isdigit() else 120
    return Console(file=out, width=width, highlight=False, force_terminal=None if interactive else False)
