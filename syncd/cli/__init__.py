"""The ``syncd`` command line (also ``python -m syncd``).

Commands live in the modules of this package (one per command group) and are registered in :data:`COMMANDS`; this module
owns the one place where errors become exit codes (CONTRACT section 4): a configuration problem
prints one line per problem on stderr and exits 2, an unreachable ledger exits 3.
"""

from __future__ import annotations

from typing import Any

import click

from syncd.cli.common import EXIT_CONFIG, EXIT_UNAVAILABLE, config_option
from syncd.cli.config import check_config
from syncd.cli.conflicts import conflicts
from syncd.cli.crosswalk import crosswalk
from syncd.cli.db import db
from syncd.cli.deadletters import deadletters
from syncd.cli.demo import demo_command
from syncd.cli.resync import resync_command
from syncd.cli.run import run_command
from syncd.cli.sandbox import sandbox
from syncd.cli.status import status
from syncd.errors import ConfigError
from syncd.ledger.store import LedgerUnavailable

__all__ = ["COMMANDS", "main"]


class SyncdGroup(click.Group):
    """Turns syncd's errors into CONTRACT exit codes, for every (sub)command."""

    def invoke(self, ctx: click.Context) -> Any:
        try:
            return super().invoke(ctx)
        except ConfigError as exc:
            for problem in exc.problems:
                click.echo(problem, err=True)
            raise click.exceptions.Exit(EXIT_CONFIG) from None
        except LedgerUnavailable as exc:
            click.echo(f"error: {exc}", err=True)
            raise click.exceptions.Exit(EXIT_UNAVAILABLE) from None


@click.group(cls=SyncdGroup, context_settings={"help_option_names": ["-h", "--help"]})
@config_option
@click.version_option(package_name="syncd", prog_name="syncd")
def main() -> None:
    """syncd: keeps appointments in sync between healthcare CRMs and EHRs."""


COMMANDS: tuple[click.Command, ...] = (
    check_config, db, crosswalk, status, resync_command, deadletters, conflicts, sandbox, run_command,
    demo_command,
)
for _command in COMMANDS:
    main.add_command(_command)
