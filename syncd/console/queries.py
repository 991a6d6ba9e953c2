"""What the console pages show, read from the ledger: ids, statuses, times and counts, never patient data.

Each page has one function here returning plain data for its template:

* :func:`overview` -- per connector its status figures and state (:func:`connector_state`), per sync
  group its counts, and the writes/errors per connector and hour over the last 24 hours;
* :func:`dead_letter_rows` and :func:`conflict_rows` -- the two work lists;
* :func:`appointment_view` -- one appointment: its links, the merge base's fields (patient and free text
  only as a short hash), its open conflicts and dead letters, and its history (newest first).

Free text (notes, description, cancellation reason) and the patient reference appear only as a short
digest that changes when they do; conflict values arrive redacted from the ledger already, and a
patient value inside one is hashed here as well.
"""

from __future__ import annotations

import json
from collections.abc import Mapping
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any

from syncd.config import Config
from syncd.ledger.models import ConflictRow, DeadLetter, utcnow
from syncd.ledger.store import Ledger, LineageRecord
from syncd.lineage import HASHED_FIELDS, RefError, history_row, lineage_view, parse_ref, short_hash
from syncd.model import TEXT_FIELDS, text_digest

__all__ = [
    "HASHED_FIELDS",
    "HISTORY_LIMIT",
    "WRITE_ACTIONS",
    "ConnectorState",
    "RefError",
    "appointment_view",
    "conflict_rows",
    "connector_state",
    "connector_status",
    "dead_letter_rows",
    "overview",
    "parse_ref",
    "short_hash",
]

WRITE_ACTIONS = ("create", "update", "cancel", "replaced")
"""Audit actions that are a write to the connector they name."""
HISTORY_LIMIT = 200
CHART_HOURS = 24
RUNTIME_KEYS = ("status.rate_limit", "status.subscription")

BACKLOG_WARN = 100
"""Queued inbox or outbox rows of one connector above which its state is amber."""
LAG_FACTOR = 3
"""A polled connector whose last successful poll is older than this many intervals (plus a minute) is red."""


def _iso(value: datetime | None) -> str | None:
    return None if value is None else value.astimezone(UTC).strftime("%Y-%m-%dT%H:%M:%SZ")


def _loads(value: str | None) -> Any:
    if value is None:
        return None
    try:
        return json.loads(value)
    except ValueError:
        return None


# -- connector state ----------------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class ConnectorState:
    level: str
    """``ok`` (green), ``degraded`` (amber) or ``failing`` (red)."""
    reason: str

    @property
    def colour(self) -> str:
        return {"ok": "green", "degraded": "amber"}.get(self.level, "red")


def connector_state(info: Mapping[str, Any]) -> ConnectorState:
    """The state of one connector from its status figures (an entry of :func:`connector_status`).

    This is the one place the console decides green/amber/red: red when polls fail and no poll has
    succeeded for several intervals (or ever); amber for a failed last poll after recent successes, a
    polled connector never polled yet, a rate-limit wait, a failed subscription, dead letters or a
    large backlog; green otherwise. Open conflicts belong to an appointment, not to one of its systems:
    the sync group's row counts them.
    """
    failing: list[str] = []
    degraded: list[str] = []
    poll = float(info.get("poll_interval") or 0)
    lag = info.get("lag_s")
    stale = poll > 0 and lag is not None and lag > LAG_FACTOR * poll + 60
    error = info.get("last_error")
    if error:
        if info.get("last_success_at") is None or stale:
            failing.append(f"polls failing: {error}")
        else:
            degraded.append(f"last poll failed: {error}")
    elif poll > 0 and info.get("last_success_at") is None:
        degraded.append("not polled yet")
    elif stale:
        failing.append(f"no successful poll for {lag:.0f} s (interval {poll:g} s)")
    rate = info.get("rate_limit") or {}
    if isinstance(rate, Mapping) and float(rate.get("blocked_for_s") or 0) > 0:
        degraded.append(f"rate limited: waiting {float(rate['blocked_for_s']):g} s")
    subscription = info.get("subscription") or {}
    if isinstance(subscription, Mapping) and subscription.get("subscription") == "failed":
        degraded.append(f"webhook subscription failed ({subscription.get('code') or 'error'})")
    if info.get("dead_letters"):
        degraded.append(f"{info['dead_letters']} dead letter(s)")
    for key, what in (("outbox_pending", "queued writes"), ("inbox_pending", "stored webhook deliveries")):
        if int(info.get(key) or 0) > BACKLOG_WARN:
            degraded.append(f"{info[key]} {what}")
    if failing:
        return ConnectorState("failing", "; ".join(failing + degraded))
    if degraded:
        return ConnectorState("degraded", "; ".join(degraded))
    return ConnectorState("ok", "polling" if poll > 0 else "webhooks only (not polled)")


async def connector_status(config: Config, ledger: Ledger, *, now: datetime | None = None) -> dict[str, dict[str, Any]]:
    """Per configured connector the figures ``syncd status`` shows (same keys as its ``--json``
    document), plus ``cursor_age_s``, read in one transaction."""
    now = now or utcnow()
    names = list(config.connectors)
    async with ledger.transaction(readonly=True) as tx:
        summaries = await tx.connector_summaries(names)
        cursors = await tx.cursors(names)
        runtime = {name: await tx.state_get(name, RUNTIME_KEYS) for name in names}
    out: dict[str, dict[str, Any]] = {}
    for name, conn in config.connectors.items():
        summary = summaries[name]
        group = config.group_of(name)
        cursor = cursors.get(name)
        lag = None if summary.last_success_at is None else round((now - summary.last_success_at).total_seconds(), 1)
        cursor_age = None
        if cursor is not None and cursor.value is not None:
            cursor_age = round((now - cursor.updated_at).total_seconds(), 1)
        out[name] = {
            "type": conn.type,
            "sync_group": group.name if group else None,
            "poll_interval": conn.poll_interval,
            "webhooks": conn.webhook_secret is not None,
            "last_success_at": _iso(summary.last_success_at),
            "cursor": summary.cursor,
            "cursor_age_s": cursor_age,
            "lag_s": lag,
            "last_error": summary.last_error,
            "inbox_pending": summary.inbox_pending,
            "outbox_pending": summary.outbox_pending,
            "dead_letters": summary.dead_letters,
            "open_conflicts": summary.open_conflicts,
            "rate_limit": _loads(runtime[name].get("status.rate_limit")),
            "subscription": _loads(runtime[name].get("status.subscription")),
        }
    return out


# -- overview -----------------------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class HourlySeries:
    connector: str
    hours: tuple[int, ...]
    """Whole hours since the epoch (UTC), oldest first, ``CHART_HOURS`` of them ending with the current one."""
    writes: tuple[int, ...]
    errors: tuple[int, ...]


async def overview(config: Config, ledger: Ledger, *, now: datetime | None = None) -> dict[str, Any]:
    """Everything the overview page shows."""
    now = now or utcnow()
    status = await connector_status(config, ledger, now=now)
    current_hour = int(now.timestamp()) // 3600
    first_hour = current_hour - CHART_HOURS + 1
    since = datetime.fromtimestamp(first_hour * 3600, UTC)
    async with ledger.transaction(readonly=True) as tx:
        activity = await tx.hourly_activity(since, WRITE_ACTIONS)
        groups = await tx.group_figures()
    hours = tuple(range(first_hour, current_hour + 1))
    series: list[HourlySeries] = []
    connectors: list[dict[str, Any]] = []
    for name, info in status.items():
        per_hour = activity.get(name, {})
        writes = tuple(per_hour.get(h, (0, 0))[0] for h in hours)
        errors = tuple(per_hour.get(h, (0, 0))[1] for h in hours)
        series.append(HourlySeries(name, hours, writes, errors))
        row = {"name": name, **info, "writes_1h": writes[-1], "errors_1h": errors[-1],
               "writes_24h": sum(writes), "errors_24h": sum(errors)}
        row["state"] = connector_state(row)
        connectors.append(row)
    group_rows = []
    for group in config.sync:
        figures = groups.get(group.name, {})
        group_rows.append({
            "name": group.name,
            "members": list(group.members),
            "appointments": figures.get("appointments", 0),
            "dead_letters": sum(int(status[m]["dead_letters"]) for m in group.members if m in status),
            "open_conflicts": figures.get("open_conflicts", 0),
        })
    return {"now": _iso(now), "connectors": connectors, "groups": group_rows, "series": series}


# -- work lists ---------------------------------------------------------------------------------


def _letter(row: DeadLetter) -> dict[str, Any]:
    return {"id": row.id, "connector": row.connector, "canonical_id": row.canonical_id,
            "external_id": row.external_id, "kind": row.kind, "reason": row.reason, "attempts": row.attempts,
            "retriable": row.retriable, "first_seen": _iso(row.first_seen), "last_tried": _iso(row.last_tried)}


async def dead_letter_rows(
    ledger: Ledger, *, connector: str | None = None, kind: str | None = None
) -> tuple[list[dict[str, Any]], list[str]]:
    """Unresolved dead letters (oldest first), filtered by connector and kind; and every kind present."""
    async with ledger.transaction(readonly=True) as tx:
        rows = await tx.dead_letters(connector=connector)
    kinds = sorted({row.kind for row in rows})
    return [_letter(row) for row in rows if kind is None or row.kind == kind], kinds


def _display_value(field: str, value: Any) -> str:
    """A conflict value as shown: redacted already by the ledger; a patient key is hashed here too."""
    if value is None:
        return "(empty)"
    if field == "patient" or (field in TEXT_FIELDS and not str(value).startswith("len=")):
        return f"hash {short_hash(value)}"
    if isinstance(value, list):
        return " → ".join("(empty)" if v is None else str(v) for v in value)
    return str(value)


def _held(snapshot: Mapping[str, Any] | None, field: str) -> str:
    """What a canonical record (a member's last known version, or the merge base) holds in ``field``,
    redacted as conflict values are: free text as length + digest, the patient as a short hash."""
    if snapshot is None:
        return "(unknown)"
    if field == "start":
        return _display_value(field, [snapshot.get("start"), snapshot.get("end")])
    value = snapshot.get(field)
    if field in TEXT_FIELDS and value is not None:
        value = text_digest(str(value))
    return _display_value(field, value)


def _policy(config: Config, group_name: str | None, field: str, refused_by: str | None) -> str:
    if refused_by is not None:
        return (f"{refused_by} refused the write (its own rule), and syncd never retries such a write blindly: "
                "choose the version that stands")
    group = next((g for g in config.sync if g.name == group_name), None)
    if group is None:
        return "no sync group"
    owner = group.owners.get(field, "*")
    if owner == "*":
        return f"owners.{field} = \"*\": most recent change wins, but the changes' times were equal or unknown"
    return f"owners.{field} = {owner}: {owner} did not change it, so the owner rule could not decide"


async def conflict_rows(config: Config, ledger: Ledger) -> list[dict[str, Any]]:
    """Open conflicts (oldest first): the values recorded when each was opened and what each system
    holds now as far as syncd knows, side by side; the policy that could not settle it; and the
    connectors whose version can be taken."""
    async with ledger.transaction(readonly=True) as tx:
        rows = await tx.conflicts()
        cids = [c.canonical_id for c in rows]
        links = await tx.links_of(cids)
        appointments = await tx.appointments(cids)
    out = []
    for row in rows:
        appointment = appointments.get(row.canonical_id)
        group_name = appointment.sync_group if appointment is not None else None
        group = next((g for g in config.sync if g.name == group_name), None)
        members = set(group.members) if group is not None else set(config.connectors)
        linked = [lk for lk in links.get(row.canonical_id, []) if lk.connector in members]
        held = [{"side": lk.connector, "value": _held(lk.seen, row.field)} for lk in linked]
        held.append({"side": "(merged)", "value": _held(appointment.snapshot if appointment else None, row.field)})
        takeable = sorted(dict.fromkeys(lk.connector for lk in linked if lk.connector in config.connectors))
        out.append({**_conflict(row, config, group_name), "held": held, "take": takeable})
    return out


def _conflict(row: ConflictRow, config: Config, group_name: str | None) -> dict[str, Any]:
    refused_by = row.values.get("target") if isinstance(row.values.get("target"), str) else None
    recorded = {side: value for side, value in row.values.items() if side != "target"}
    values = [{"side": side, "value": _display_value(row.field, value)} for side, value in sorted(
        recorded.items(), key=lambda kv: (kv[0].startswith("("), kv[0]))]
    return {"id": row.id, "canonical_id": row.canonical_id, "field": row.field, "reason": row.reason,
            "opened": _iso(row.opened), "values": values, "refused_by": refused_by, "sync_group": group_name,
            "policy": _policy(config, group_name, row.field, refused_by), "held": [], "take": []}


# -- one appointment ----------------------------------------------------------------------------


def _history(entry: LineageRecord) -> dict[str, Any]:
    return {**history_row(entry), "action": entry.action, "rule": entry.rule}


async def appointment_view(config: Config, ledger: Ledger, ref: str) -> dict[str, Any] | None:
    """One appointment by ``NAME:EXTERNAL_ID`` (retired ids too) or canonical id; None when the ledger
    holds no such appointment. Raises :class:`RefError` for a malformed ``ref``.

    Built on :func:`syncd.lineage.lineage_view`, the very query ``syncd explain`` prints: ``links``
    (connector, external id, version, modified time, retired), ``fields`` (each ``{"value", "hash",
    "source", "changed_at", "rule"}``: values for status, times, practitioner, location and service
    type; patient and free text only as ``hash``), ``history`` (the lineage, newest first, at most
    :data:`HISTORY_LIMIT`, with ``history_total``); plus its open ``conflicts`` and unresolved
    ``dead_letters``.
    """
    view = await lineage_view(config, ledger, ref)
    if view is None:
        return None
    canonical_id = view.document["canonical_id"]
    row = view.appointment
    async with ledger.transaction(readonly=True) as tx:
        conflicts = await tx.conflicts_of([canonical_id])
        letters = await tx.dead_letters_of([canonical_id])
    history = [_history(entry) for entry in view.entries[:HISTORY_LIMIT]]
    fields = {name: {"hash": None, **f} for name, f in view.document["fields"].items()}
    return {
        "canonical_id": canonical_id,
        "sync_group": row.sync_group if row is not None else None,
        "updated_at": _iso(row.updated_at) if row is not None else None,
        "links": [{"connector": lk.connector, "external_id": lk.external_id, "version": lk.version,
                   "modified_at": _iso(lk.modified_at), "retired": lk.retired} for lk in view.links],
        "fields": fields,
        "history": history,
        "history_total": len(view.entries),
        "conflicts": [_conflict(c, config, row.sync_group if row else None) for c in conflicts],
        "dead_letters": [_letter(dl) for dl in letters],
    }
