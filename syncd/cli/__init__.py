"""The ``syncd`` command line (also ``python -m syncd``).

One module per command group, registered in :data:`COMMANDS`. :mod:`syncd.cli.common` holds what
they share: ``--config`` / ``--json`` / ``--quiet`` / ``--verbose`` at every level, the exit codes in
every ``--help``, the one place where errors become exit codes and JSON error documents (a
configuration problem prints one line per problem and exits 2, an unreachable ledger or vendor exits
3), loading the config and opening the ledger.
"""

from __future__ import annotations

import click

from syncd.cli.common import RootGroup, common_options
from syncd.cli.config import check_config
from syncd.cli.conflicts import conflicts
from syncd.cli.crosswalk import crosswalk
from syncd.cli.db import db
from syncd.cli.deadletters import deadletters
from syncd.cli.demo import demo_command
from syncd.cli.doctor import doctor
from syncd.cli.explain import explain_command
from syncd.cli.resync import resync_command
from syncd.cli.run import run_command
from syncd.cli.sandbox import sandbox
from syncd.cli.status import status

__all__ = ["COMMANDS", "main"]


@click.group(cls=RootGroup, context_settings={"help_option_names": ["-h", "--help"]})
@common_options
@click.version_option(package_name="syncd", prog_name="syncd")
def main() -> None:
    """syncd: keeps appointments in sync between healthcare CRMs and EHRs.

    Every command takes --config PATH (else $SYNCD_CONFIG, else ./config.toml), --json (exactly one
    JSON document on stdout, also on failure), -q/--quiet and -v/--verbose, before or after its
    name. Results go to stdout, logs and progress to stderr.
    """


COMMANDS: tuple[click.Command, ...] = (
    check_config, doctor, db, crosswalk, status, resync_command, deadletters, conflicts, explain_command, sandbox,
    run_command, demo_command,
)
for _command in COMMANDS:
    main.add_command(_command)
