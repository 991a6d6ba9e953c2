"""``syncd deadletters list / show / retry / discard``: records that could not be synced
(docs/reference.md §4, §7). ``list``, ``show``, ``discard`` and ``retry --dry-run`` read the ledger
only and need no vendor secret; ``retry`` talks to the vendors."""

from __future__ import annotations

from typing import Any

import click

from syncd.cli.common import (
    EXIT_CONFIG,
    EXIT_OK,
    EXIT_PARTIAL,
    EXIT_UNAVAILABLE,
    LEDGER_UNAVAILABLE,
    LIST_EXIT_CODES,
    SyncdCommand,
    SyncdGroup,
    common_options,
    echo_json,
    echo_next_step,
    fail,
    iso,
    load,
    open_ledger,
    options,
    progress,
    run,
    show_exit_codes,
)
from syncd.cli.views import format_values, systems_view
from syncd.ledger.models import DeadLetter
from syncd.repairs import discard_dead_letters, retry_dead_letters

__all__ = ["deadletters"]

def _row(r: DeadLetter) -> dict[str, Any]:
    return {"id": r.id, "connector": r.connector, "canonical_id": r.canonical_id, "external_id": r.external_id,
            "kind": r.kind, "reason": r.reason, "attempts": r.attempts, "first_seen": iso(r.first_seen),
            "last_tried": iso(r.last_tried)}


def _phase(letter: DeadLetter) -> str:
    return str((letter.payload or {}).get("phase") or "unknown")


def _plan(letter: DeadLetter) -> str | None:
    """What ``retry`` would do with ``letter`` (None: it cannot be retried automatically)."""
    phase = _phase(letter)
    if phase == "read" and letter.external_id:
        return f"re-read {letter.connector} record {letter.external_id} and reconcile it"
    if phase == "write":
        op = str((letter.payload or {}).get("op", "update"))
        return f"send the queued {op} to {letter.connector} again"
    if phase == "cancel_old" and letter.external_id:
        return f"cancel the replaced record {letter.external_id} on {letter.connector}"
    return None


def _next_step(letter: DeadLetter) -> str:
    lid = letter.id
    if _plan(letter) is None:
        return (f"syncd deadletters discard {lid} (it cannot be retried automatically; a later change or "
                "`syncd resync` brings the record again)")
    if letter.kind == "missing_reference":
        return (f"import the missing crosswalk row named in the reason (`syncd crosswalk import FILE`), then "
                f"`syncd deadletters retry {lid}`")
    if letter.kind == "mapping":
        return (f"fix the record in {letter.connector} (or the mapping), then `syncd deadletters retry {lid}`; "
                f"or `syncd deadletters discard {lid}`")
    return (f"fix the cause in the vendor named in the reason, then `syncd deadletters retry {lid}`; or "
            f"`syncd deadletters discard {lid}`")


@click.group("deadletters", cls=SyncdGroup)
@common_options
def deadletters() -> None:
    """Inspect, replay or drop records that could not be synced."""


@deadletters.command("list", exit_codes=LIST_EXIT_CODES)
@common_options
@click.pass_context
def deadletters_list(ctx: click.Context) -> None:
    """List unresolved dead letters (exit 0 whenever the list could be read)."""
    config = load(ctx, secrets=False)

    async def go() -> list[dict[str, Any]]:
        async with open_ledger(config) as ledger, ledger.transaction(readonly=True) as tx:
            return [_row(r) for r in await tx.dead_letters()]

    rows = run(go())
    if options(ctx).json:
        echo_json({"dead_letters": rows})
        return
    if not rows:
        click.echo("no dead letters")
    for r in rows:
        record = f"{r['connector']} record {r['external_id'] or '(none yet)'}"
        canonical = r["canonical_id"] or "-"
        click.echo(f"#{r['id']} {r['kind']} on {record}, appointment {canonical}, {r['attempts']} attempts: "
                   f"{r['reason']}")
    echo_next_step(ctx, rows, "syncd deadletters show ID")


@deadletters.command("show", exit_codes=show_exit_codes("dead letter"))
@common_options
@click.argument("letter_id", metavar="ID", type=int)
@click.pass_context
def deadletters_show(ctx: click.Context, letter_id: int) -> None:
    """One dead letter: its reason, the source record, what each system holds as far as syncd knows
    (status, times, references; free text only as length and digest), and the next command to run."""
    config = load(ctx, secrets=False)

    async def go() -> dict[str, Any] | None:
        async with open_ledger(config) as ledger, ledger.transaction(readonly=True) as tx:
            found = await tx.dead_letters(ids=[letter_id], include_resolved=True)
            if not found:
                return None
            letter = found[0]
            links: list[Any] = []
            row = None
            if letter.canonical_id:
                links = (await tx.links_of([letter.canonical_id], include_retired=True)).get(letter.canonical_id, [])
                row = (await tx.appointments([letter.canonical_id])).get(letter.canonical_id)
        source = str((letter.payload or {}).get("source") or (letter.payload or {}).get("outbox", {}).get("source")
                     or letter.connector)
        source_id = letter.external_id if source == letter.connector else next(
            (lk.external_id for lk in links if lk.connector == source and not lk.retired), None)
        doc = _row(letter)
        doc.update(resolved=letter.resolved, retriable=letter.retriable, phase=_phase(letter),
                   retry_would=_plan(letter), source={"connector": source, "external_id": source_id},
                   systems=systems_view(row, links), next=None if letter.resolved else _next_step(letter))
        return doc

    doc = run(go())
    if doc is None:
        fail(ctx, "not_found", f"no dead letter #{letter_id} in the ledger (see `syncd deadletters list`)",
             EXIT_PARTIAL)
    if options(ctx).json:
        echo_json({"dead_letter": doc})
        return
    state = "resolved" if doc["resolved"] else "open"
    click.echo(f"dead letter #{doc['id']} ({state}): {doc['kind']} on {doc['connector']}, phase {doc['phase']}")
    click.echo(f"  reason: {doc['reason']}")
    click.echo(f"  appointment: {doc['canonical_id'] or '-'}")
    src = doc["source"]
    click.echo(f"  source record: {src['connector']} {src['external_id'] or '(no id yet)'}")
    click.echo(f"  attempts: {doc['attempts']}, first seen {doc['first_seen']}, last tried {doc['last_tried']}")
    click.echo("  what each system holds, as far as syncd knows (free text as length and digest):")
    for name, info in doc["systems"].items():
        ident = f" {info['external_id']}" if info.get("external_id") else ""
        retired = " (retired)" if info.get("retired") else ""
        click.echo(f"    {name}{ident}{retired}: {format_values(info['values'])}")
    if doc["next"]:
        click.echo(f"  next: {doc['next']}")


@deadletters.command("retry", exit_codes={
    EXIT_OK: "every dead letter asked for was retried and is done (--dry-run: every one can be retried)",
    EXIT_PARTIAL: "some failed again, are unknown, or cannot be retried automatically",
    EXIT_CONFIG: "usage or configuration error",
    EXIT_UNAVAILABLE: "could not run: the ledger is unreachable, or a vendor refused authentication",
})
@common_options
@click.argument("ids", nargs=-1, type=int, metavar="[ID]...")
@click.option("--all", "all_", is_flag=True, help="Retry every unresolved dead letter.")
@click.option("--dry-run", is_flag=True,
              help="Say what each retry would do; contact no vendor and change nothing.")
@click.pass_context
def deadletters_retry(ctx: click.Context, ids: tuple[int, ...], all_: bool, dry_run: bool) -> None:
    """Replay dead letters (after fixing their cause, e.g. importing a crosswalk row)."""
    if bool(ids) == all_:
        raise click.UsageError("give dead-letter IDs or --all (not both)")
    config = load(ctx, secrets=not dry_run)
    wanted = None if all_ else list(ids)
    if dry_run:

        async def plan() -> list[dict[str, Any]]:
            async with open_ledger(config) as ledger, ledger.transaction(readonly=True) as tx:
                letters = await tx.dead_letters(ids=wanted)
            found = {dl.id for dl in letters}
            out = [{"id": i, "result": "unknown or already resolved", "would": None}
                   for i in sorted(set(wanted or ()) - found)]
            for letter in letters:
                would = _plan(letter)
                out.append({"id": letter.id, "result": "would retry" if would else "cannot be retried automatically",
                            "would": would})
            return sorted(out, key=lambda r: int(r["id"] or 0))

        results = run(plan())
        code = EXIT_OK if all(r["would"] for r in results) else EXIT_PARTIAL
    else:
        with progress(ctx, "retrying dead letters"):
            code, results = run(retry_dead_letters(config, wanted))
    if options(ctx).json:
        echo_json({"ok": code == EXIT_OK, "dry_run": dry_run, "results": results})
        ctx.exit(code)
    for r in results:
        detail = f": {r['would']}" if r.get("would") else ""
        click.echo(f"#{r['id']}: {r['result']}{detail}")
    if not results:
        click.echo("nothing to retry")
    ctx.exit(code)


@deadletters.command("discard", cls=SyncdCommand, exit_codes={
    EXIT_OK: "every dead letter asked for was discarded",
    EXIT_PARTIAL: "some ids were unknown or already resolved",
    EXIT_CONFIG: "usage or configuration error",
    EXIT_UNAVAILABLE: LEDGER_UNAVAILABLE,
})
@common_options
@click.argument("ids", nargs=-1, type=int, required=True, metavar="ID...")
@click.pass_context
def deadletters_discard(ctx: click.Context, ids: tuple[int, ...]) -> None:
    """Drop dead letters for good (kept in the ledger as resolved)."""
    config = load(ctx, secrets=False)

    async def go() -> int:
        async with open_ledger(config) as ledger:
            return await discard_dead_letters(config, list(ids), ledger=ledger)

    changed = run(go())
    code = EXIT_OK if changed == len(set(ids)) else EXIT_PARTIAL
    if options(ctx).json:
        echo_json({"ok": code == EXIT_OK, "discarded": changed, "asked": len(set(ids))})
    else:
        click.echo(f"discarded {changed} of {len(set(ids))}")
    ctx.exit(code)
