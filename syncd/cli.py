"""The ``syncd`` command line (also ``python -m syncd``).

Commands live in ``syncd/cli_*.py`` modules and are registered in :data:`COMMANDS`; this module
owns the one place where errors become exit codes (docs/reference.md §4): a configuration problem
prints one line per problem on stderr and exits 2, an unreachable ledger exits 3.
"""

from __future__ import annotations

from typing import Any

import click

from syncd.cli_common import EXIT_CONFIG, EXIT_UNAVAILABLE, config_option
from syncd.cli_config import check_config
from syncd.cli_crosswalk import crosswalk
from syncd.cli_db import db
from syncd.cli_demo import demo_command
from syncd.cli_run import run_command
from syncd.cli_sandbox import sandbox
from syncd.cli_status import status
from syncd.cli_sync import conflicts, deadletters, resync_command
from syncd.errors import ConfigError
from syncd.ledger.store import LedgerUnavailable

__all__ = ["COMMANDS", "main"]


class SyncdGroup(click.Group):
    """Turns syncd's errors into docs/reference.md §4 exit codes, for every (sub)command."""

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
