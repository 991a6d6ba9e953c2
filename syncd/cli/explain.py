"""``syncd explain REF [--json]``: one appointment's lineage, from the ledger alone (no vendor call, no
vendor secret). The document is docs/reference.md §4's; :func:`syncd.lineage.explain` builds it (the
console's appointment page reads the same view)."""

from __future__ import annotations

from typing import Any

import click

from syncd.cli.common import (
    EXIT_CONFIG,
    EXIT_OK,
    EXIT_PARTIAL,
    EXIT_UNAVAILABLE,
    LEDGER_UNAVAILABLE,
    SyncdCommand,
    common_options,
    echo_json,
    fail,
    load,
    open_ledger,
    options,
    run,
    table,
)
from syncd.config import Config
from syncd.lineage import HASHED_FIELDS, RefError, explain, parse_ref

__all__ = ["explain_command", "timeline"]


async def _explain(config: Config, ref: str) -> dict[str, Any] | None:
    async with open_ledger(config) as ledger:
        return await explain(config, ledger, ref)


def _value(name: str, info: dict[str, Any]) -> str:
    if name in HASHED_FIELDS:
        return f"#{info['hash']}" if info.get("hash") else "(empty)"
    value = info.get("value")
    return "(empty)" if value is None else str(value)


def timeline(document: dict[str, Any]) -> list[str]:
    """The human output: links, each field with who set it and why, then the history newest first."""
    lines = [f"appointment {document['canonical_id']}"]
    links = ", ".join(f"{lk['connector']}:{lk['external_id']}{' (retired)' if lk['retired'] else ''}"
                      for lk in document["links"])
    lines.append(f"  linked: {links or 'nowhere yet'}")
    rows = [("field", "value", "set by", "changed there", "rule")]
    for name, info in document["fields"].items():
        rows.append((name, _value(name, info), info.get("source") or "-", info.get("changed_at") or "-",
                     info.get("rule") or "-"))
    lines.extend(table(rows, indent="  "))
    history = document["history"]
    lines.append(f"  history ({len(history)} entries, newest first):")
    for entry in history:
        fields = f" [{', '.join(entry['fields'])}]" if entry["fields"] else ""
        detail = f": {entry['detail']}" if entry.get("detail") else ""
        lines.append(f"    {entry['at']}  {entry['kind']:<11} {entry['connector'] or '-':<10} "
                     f"{entry['outcome'] or '-'}{fields}{detail}")
    return lines


@click.command("explain", cls=SyncdCommand, exit_codes={
    EXIT_OK: "found: the lineage is printed",
    EXIT_PARTIAL: "the ledger holds no such appointment",
    EXIT_CONFIG: "REF is malformed (neither a canonical id nor NAME:EXTERNAL_ID of a configured connector), or "
                 "a configuration error",
    EXIT_UNAVAILABLE: LEDGER_UNAVAILABLE,
})
@click.argument("ref", metavar="REF")
@common_options
@click.pass_context
def explain_command(ctx: click.Context, ref: str) -> None:
    """One appointment's lineage: why each field holds its value and who changed it.

    REF is NAME:EXTERNAL_ID (a connector's id for it, a retired one too) or the canonical id. Shows
    the systems it is linked in; per field its value, the system whose change set it, when it changed
    there and the rule that chose it (created, only_change, owner, newest, status_rank, resolved);
    then the history of reads, merges, writes, conflicts, dead letters and operator actions, newest
    first. Patient, notes, description and cancellation reason appear only as a short hash that
    changes when they do. Reads the ledger only: needs no vendor secret.
    """
    config = load(ctx, secrets=False)
    try:
        parse_ref(ref, config.connectors)
    except RefError as exc:
        fail(ctx, "usage_error", f"error: REF {ref!r}: {exc}", EXIT_CONFIG)
    document = run(_explain(config, ref))
    if document is None:
        fail(ctx, "not_found", f"error: the ledger holds no appointment {ref} (check the id, or run `syncd resync "
                               "--id NAME:EXTERNAL_ID` to read it)", EXIT_PARTIAL)
    if options(ctx).json:
        echo_json(document)
        ctx.exit(EXIT_OK)
    for line in timeline(document):
        click.echo(line)
    ctx.exit(EXIT_OK)
