"""What every command shares: its options, exit codes in ``--help``, the one way to load the config
and open the ledger, JSON documents and error documents, progress on stderr.

Options accepted by every command and group, at any level (``syncd --config X status`` and ``syncd
status --config X`` are the same): ``--config PATH``, ``--json``, ``-q/--quiet``, ``-v/--verbose``.
They are kept in ``ctx.meta``, which click shares across a command's context chain.

Output: the result goes to stdout (``--json``: exactly one JSON document), logs and progress to
stderr. A command that fails prints what went wrong on stderr and, under ``--json``, one error
document on stdout instead of its result::

    {"ok": false, "exit_code": 3, "error": {"code": "ledger_unavailable", "message": "..."}}

``error.code`` is one of ``usage_error`` and ``config_error`` (exit 2), ``ledger_unavailable``,
``already_running``, ``cannot_serve``, ``auth_failed``, ``unreachable``, ``rate_limited``,
``vendor_error`` (exit 3), ``not_found`` (exit 1); a config error adds ``problems`` (one line per
problem), a vendor error ``connector`` and ``config_key``.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import os
import re
import sys
from collections.abc import AsyncIterator, Awaitable, Callable, Iterator, Mapping, Sequence
from datetime import UTC, datetime
from pathlib import Path
from typing import Any, NoReturn, TypeVar

import click
from sqlalchemy.exc import SQLAlchemyError

from syncd.config import Config, load_config, resolve_config_path
from syncd.errors import (
    EXIT_CONFIG,
    EXIT_OK,
    EXIT_PARTIAL,
    EXIT_UNAVAILABLE,
    AuthFailure,
    ConfigError,
    RateLimited,
    SyncdError,
    VendorError,
)
from syncd.ledger.store import Ledger, LedgerUnavailable, describe_ledger_error
from syncd.logging import configure_logging

__all__ = [
    "EXIT_CONFIG",
    "EXIT_OK",
    "EXIT_PARTIAL",
    "EXIT_UNAVAILABLE",
    "STANDARD_EXIT_CODES",
    "Progress",
    "SyncdCommand",
    "SyncdGroup",
    "common_options",
    "config_option",
    "echo_json",
    "fail",
    "iso",
    "load",
    "open_ledger",
    "options",
    "progress",
    "run",
    "table",
]

F = TypeVar("F", bound=Callable[..., Any])
T = TypeVar("T")

_CONFIG_KEY = "syncd.config_path"
_JSON_KEY = "syncd.json"
_QUIET_KEY = "syncd.quiet"
_VERBOSE_KEY = "syncd.verbose"

STANDARD_EXIT_CODES: Mapping[int, str] = {
    EXIT_OK: "everything done",
    EXIT_PARTIAL: "done, but some records were dead-lettered or conflicts are left open",
    EXIT_CONFIG: "usage or configuration error, nothing done",
    EXIT_UNAVAILABLE: "could not run (ledger unreachable, a vendor refused authentication or stayed "
    "unreachable), nothing lost",
}
LEDGER_UNAVAILABLE = "could not run: the ledger is unreachable or not initialised"
LIST_EXIT_CODES: Mapping[int, str] = {
    EXIT_OK: "the list could be read (whatever it holds)",
    EXIT_CONFIG: "usage or configuration error",
    EXIT_UNAVAILABLE: LEDGER_UNAVAILABLE,
}
"""A ``list`` command's: it fails only when it cannot read the ledger."""


def show_exit_codes(thing: str) -> dict[int, str]:
    """The exit codes of a ``show ID`` command for one ``thing`` (a conflict, a dead letter)."""
    return {
        EXIT_OK: f"the {thing} was found and shown",
        EXIT_PARTIAL: f"no {thing} with that id",
        EXIT_CONFIG: "usage or configuration error",
        EXIT_UNAVAILABLE: LEDGER_UNAVAILABLE,
    }


# -- options --------------------------------------------------------------------------------------------
class Options:
    """The global options of the running command (from ``ctx.meta``)."""

    def __init__(self, ctx: click.Context) -> None:
        self.ctx = ctx

    @property
    def json(self) -> bool:
        return bool(self.ctx.meta.get(_JSON_KEY))

    @property
    def quiet(self) -> bool:
        return bool(self.ctx.meta.get(_QUIET_KEY))

    @property
    def verbose(self) -> bool:
        return bool(self.ctx.meta.get(_VERBOSE_KEY))

    @property
    def config_path(self) -> str | None:
        value = self.ctx.meta.get(_CONFIG_KEY)
        return str(value) if value is not None else None


def options(ctx: click.Context) -> Options:
    return Options(ctx)


def _remember(key: str) -> Callable[[click.Context, click.Parameter, Any], None]:
    def callback(ctx: click.Context, _param: click.Parameter, value: Any) -> None:
        if value:  # a flag given at any level stays on; an absent one never turns it off
            ctx.meta[key] = value

    return callback


def config_option(func: F) -> F:
    """``--config PATH`` (else ``$SYNCD_CONFIG``, else ``./config.toml``), on any command or group."""
    option = click.option(
        "--config", "config_path", metavar="PATH", expose_value=False, is_eager=True,
        callback=_remember(_CONFIG_KEY), help="Config file (default: $SYNCD_CONFIG, else ./config.toml).",
    )
    return option(func)


def common_options(func: F) -> F:
    """``--config``, ``--json``, ``--quiet`` and ``--verbose``, for every command and group."""
    func = click.option("-v", "--verbose", is_flag=True, expose_value=False, is_eager=True,
                        callback=_remember(_VERBOSE_KEY),
                        help="More detail on stderr: debug logs, every check.")(func)
    func = click.option("-q", "--quiet", is_flag=True, expose_value=False, is_eager=True,
                        callback=_remember(_QUIET_KEY),
                        help="Less on stderr: no progress, no notices; logs at warning level and above.")(func)
    func = click.option("--json", "json_output", is_flag=True, expose_value=False, is_eager=True,
                        callback=_remember(_JSON_KEY),
                        help="Print exactly one JSON document on stdout (also on failure).")(func)
    return config_option(func)


# -- exit codes in every --help -------------------------------------------------------------------------
class _ExitCodesInHelp:
    """Ends a command's or a group's ``--help`` with its exit codes (``exit_codes=``, else the standard ones)."""

    def __init__(self, *args: Any, exit_codes: Mapping[int, str] | None = None, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self.exit_codes = dict(STANDARD_EXIT_CODES if exit_codes is None else exit_codes)

    def format_epilog(self, ctx: click.Context, formatter: click.HelpFormatter) -> None:
        super().format_epilog(ctx, formatter)  # type: ignore[misc]  # click.Command's, after this mixin
        with formatter.section("Exit codes"):
            formatter.write_dl([(str(code), text) for code, text in sorted(self.exit_codes.items())])


class SyncdCommand(_ExitCodesInHelp, click.Command):
    """A command whose ``--help`` ends with its exit codes."""


class SyncdGroup(_ExitCodesInHelp, click.Group):
    """A group whose ``--help`` ends with the exit codes, whose subcommands are :class:`SyncdCommand`,
    and which turns syncd's errors into exit codes and error documents, for every (sub)command."""

    command_class = SyncdCommand

    def invoke(self, ctx: click.Context) -> Any:
        try:
            return super().invoke(ctx)
        except ConfigError as exc:
            fail(ctx, "config_error", "; ".join(exc.problems), EXIT_CONFIG, lines=exc.problems,
                 problems=exc.problems)
        except LedgerUnavailable as exc:
            fail(ctx, "ledger_unavailable", f"error: {exc}", EXIT_UNAVAILABLE)
        except VendorError as exc:
            code = ("auth_failed" if isinstance(exc, AuthFailure) else "rate_limited" if isinstance(exc, RateLimited)
                    else "unreachable" if exc.status is None else "vendor_error")
            fail(ctx, code, f"error: {exc.headline}: {exc.explain()}", EXIT_UNAVAILABLE, connector=exc.connector,
                 config_key=exc.config_key)
        except SQLAlchemyError as exc:
            # a ledger that went away mid-command: say where, never the statement or its parameters
            fail(ctx, "ledger_unavailable", f"error: ledger failed: {_ledger_text(ctx, exc)}", EXIT_UNAVAILABLE)
        except SyncdError as exc:
            code = re.sub(r"(?<!^)(?=[A-Z])", "_", type(exc).__name__).lower()
            fail(ctx, code, f"error: {exc}", EXIT_UNAVAILABLE)


SyncdGroup.group_class = SyncdGroup


def _ledger_text(ctx: click.Context, exc: BaseException) -> str:
    url = ctx.meta.get("syncd.ledger_url")
    return describe_ledger_error(str(url), exc) if url else type(exc).__name__


class RootGroup(SyncdGroup):
    """The ``syncd`` group: under ``--json`` a usage error (unknown option, missing argument) is an
    error document too, whichever level it happens at."""

    def main(self, args: Sequence[str] | None = None, prog_name: str | None = None,
             complete_var: str | None = None, standalone_mode: bool = True, **extra: Any) -> Any:
        argv = list(sys.argv[1:] if args is None else args)
        wants_json = "--json" in (argv[: argv.index("--")] if "--" in argv else argv)
        if not standalone_mode or not wants_json:
            return super().main(argv, prog_name, complete_var, standalone_mode, **extra)
        try:
            code = super().main(argv, prog_name, complete_var, False, **extra)
        except click.ClickException as exc:
            click.echo(f"Error: {exc.format_message()}", err=True)
            echo_json(_error_document("usage_error", exc.format_message(), exc.exit_code))
            sys.exit(exc.exit_code)
        except click.Abort:
            sys.exit(1)
        sys.exit(code if isinstance(code, int) else 0)


def _error_document(code: str, message: str, exit_code: int, **extra: Any) -> dict[str, Any]:
    error: dict[str, Any] = {"code": code, "message": message}
    error.update({k: v for k, v in extra.items() if v is not None})
    return {"ok": False, "exit_code": exit_code, "error": error}


def fail(ctx: click.Context, code: str, message: str, exit_code: int, *, lines: Sequence[str] | None = None,
         **extra: Any) -> NoReturn:
    """Stop the command: ``lines`` (or ``message``) on stderr, under ``--json`` the error document on
    stdout, then exit ``exit_code``."""
    for line in lines if lines is not None else [message]:
        click.echo(line, err=True)
    if options(ctx).json:
        text = message[len("error: "):] if message.startswith("error: ") else message
        echo_json(_error_document(code, text, exit_code, **extra))
    raise click.exceptions.Exit(exit_code)


# -- config, ledger, event loop --------------------------------------------------------------------------
def load(ctx: click.Context, *, configure_logs: bool = True, secrets: bool = True) -> Config:
    """Load and validate the config (a ConfigError becomes exit 2). ``secrets=False`` for commands that
    need no vendor secret: an unset ``${NAME}`` in one is no error then (structure is still checked)."""
    opts = options(ctx)
    path = resolve_config_path(opts.config_path)
    if not Path(path).is_file():
        if opts.config_path:
            origin = "given with --config"
        elif os.environ.get("SYNCD_CONFIG"):
            origin = "from $SYNCD_CONFIG"
        else:
            origin = "the default, in the current directory"
        raise ConfigError([f"config: file not found: {Path(path).resolve()} ({origin}); give --config PATH or "
                           "set $SYNCD_CONFIG"])
    config = load_config(path, secrets=secrets)
    ctx.meta["syncd.ledger_url"] = config.ledger.url
    if configure_logs:
        level = config.log.level
        if opts.verbose:
            level = "debug"
        elif opts.quiet:
            level = "warning" if level in ("debug", "info") else level
        configure_logging(level, config.log.format)
    return config


@contextlib.asynccontextmanager
async def open_ledger(config: Config, *, create: bool = False, upgrade: bool = False,
                      current: bool = True) -> AsyncIterator[Ledger]:
    """The one way a command opens the ledger: ``create``/``upgrade`` for commands that may create it,
    else an existing ledger that ``current`` requires at the newest schema (exit 3 with what to run)."""
    ledger = await Ledger.open(config.ledger.url, create=create)
    try:
        if upgrade:
            await ledger.upgrade()
        elif current:
            revision = await ledger.revision()
            if revision is None:
                raise LedgerUnavailable("ledger not initialised (run `syncd db upgrade`)")
            if revision != Ledger.head_revision():
                raise LedgerUnavailable(f"ledger schema at revision {revision}, not current (run `syncd db upgrade`)")
        yield ledger
    finally:
        await ledger.close()


def run(coro: Awaitable[T]) -> T:
    """Run a coroutine to completion from a (synchronous) click command."""

    async def wrapper() -> T:
        return await coro

    return asyncio.run(wrapper())


# -- output ----------------------------------------------------------------------------------------------
def echo_json(document: Any) -> None:
    """Print exactly one JSON document on stdout."""
    click.echo(json.dumps(document, sort_keys=True, default=str))


def iso(value: datetime | None) -> str | None:
    """A UTC time as ``2026-12-08T09:30:00Z`` (None stays None)."""
    return None if value is None else value.astimezone(UTC).strftime("%Y-%m-%dT%H:%M:%SZ")


def table(rows: Sequence[Sequence[str]], *, indent: str = "") -> list[str]:
    """Rows (the first is the header) as aligned text lines."""
    if not rows:
        return []
    widths = [max(len(row[i]) for row in rows) for i in range(len(rows[0]))]
    return [indent + "  ".join(cell.ljust(w) for cell, w in zip(row, widths, strict=True)).rstrip() for row in rows]


class Progress:
    """A live line on stderr (rich), or nothing: off under ``--json`` or ``--quiet`` and when stderr is
    not a terminal, so pipes and logs never see it."""

    def __init__(self, ctx: click.Context, title: str) -> None:
        opts = options(ctx)
        self.enabled = not opts.json and not opts.quiet and sys.stderr.isatty()
        self.title = title
        self._status: Any = None

    def __enter__(self) -> Progress:
        if self.enabled:
            from rich.console import Console

            console = Console(stderr=True, highlight=False)
            self._status = console.status(self.title, spinner="dots")
            self._status.__enter__()
        return self

    def update(self, text: str) -> None:
        if self._status is not None:
            self._status.update(f"{self.title}: {text}")

    def __exit__(self, *exc: object) -> None:
        if self._status is not None:
            self._status.__exit__(None, None, None)
            self._status = None


@contextlib.contextmanager
def progress(ctx: click.Context, title: str) -> Iterator[Progress]:
    with Progress(ctx, title) as handle:
        yield handle


def echo_next_step(ctx: click.Context, rows: Sequence[object], command: str) -> None:
    """After a non-empty list (unless ``--quiet``): the command that shows one row's details, on stderr."""
    if rows and not options(ctx).quiet:
        click.echo(f"details and the next step: {command}", err=True)
