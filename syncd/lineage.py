"""Appointment lineage: what syncd did to one appointment and why each field holds its value.

Two halves, one module:

* **Recording.** Small pure functions that build :class:`~syncd.ledger.models.LineageEntry` rows from
  what the engine already knows at a decision (a merge result, a write outcome, a dead letter, a
  conflict, an operator's action). The engine appends them to the work it stores in the transaction
  it opens anyway (a page's reconcile, a write's outcome), so lineage costs one bulk INSERT there and
  never a commit of its own.
* **Reading.** :func:`explain` is the one query behind ``syncd explain`` and the console's appointment
  page: the appointment's links, each field's current value with the system whose change set it, when
  it changed there and the rule that chose it, and the history newest first (docs/reference.md §4).

Patient data never enters a lineage row: ids, field names, statuses, times, counts and rule names
only. In :func:`explain`, status, times, practitioner, location and service type are shown; the
patient and the free-text fields only as a short hash that changes when they do.

Rules (the ``rule`` of a field): ``created`` (the value it was first seen with), ``only_change`` (one
side changed it), ``owner`` (the group's ``owners``), ``newest`` (most recent change), ``status_rank``
(status progress wins), ``resolved`` (settled by hand). History is pruned by age: ``[ledger]
history_days`` (:func:`prune`).
"""

from __future__ import annotations

import hashlib
import json
import re
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from typing import Any

from syncd.config import Config
from syncd.engine.merge import LEDGER_SIDE, MergeResult
from syncd.ledger.models import AppointmentRow, LineageEntry, Link, utcnow
from syncd.ledger.store import Ledger, LineageRecord, Tx
from syncd.logging import mask_contact
from syncd.model import SYNC_FIELDS, TEXT_FIELDS, Appointment

__all__ = [
    "HASHED_FIELDS",
    "KINDS",
    "PRUNE_BATCH",
    "RULES",
    "LineageView",
    "RefError",
    "action",
    "conflict",
    "created",
    "dead_letter",
    "explain",
    "history_row",
    "lineage_view",
    "merged",
    "parse_ref",
    "prune",
    "resolved",
    "short_hash",
    "written",
]

KINDS = ("read", "merge", "write", "conflict", "dead_letter", "resolve", "retry", "discard")
RULES = ("created", "only_change", "owner", "newest", "status_rank", "resolved")
HASHED_FIELDS: tuple[str, ...] = ("patient", *TEXT_FIELDS)
"""Shown only as a short hash: the patient reference and the free-text fields."""
PRUNE_BATCH = 10_000
"""At most this many entries go per :func:`prune` call (one bounded DELETE); the next call goes on."""

_MERGE_RULES = {"status-progress": "status_rank", "terminal": "status_rank", "owner": "owner",
                "most-recent": "newest"}
CANONICAL_ID_RE = re.compile(r"[A-Za-z0-9_-]{1,64}")
EXTERNAL_ID_RE = re.compile(r"[^\x00-\x1f\x7f]{1,255}")


def _iso(value: datetime | None) -> str | None:
    return None if value is None else value.astimezone(UTC).strftime("%Y-%m-%dT%H:%M:%SZ")


def _detail(text: str | None, *, vendor_text: bool = False) -> str | None:
    """A detail as stored: at most 255 characters; text that quotes a vendor (its error message) with
    e-mail addresses and phone numbers masked. Details syncd composes carry ids, names of fields and
    connectors, and counts only (not masked: an external id may look like a phone number)."""
    if text is None:
        return None
    return (mask_contact(text) if vendor_text else text)[:255]


def short_hash(value: Any) -> str | None:
    """A short digest of a value that must not be shown (None stays None); changes when the value does."""
    if value is None:
        return None
    text = value if isinstance(value, str) else json.dumps(value, sort_keys=True, default=str)
    return hashlib.sha256(text.encode()).hexdigest()[:6]


def _source(connector: str, changed_at: datetime | None, rule: str) -> dict[str, Any]:
    return {"source": connector, "changed_at": _iso(changed_at or utcnow()), "rule": rule}


# -- recording -----------------------------------------------------------------------------------


def created(cid: str, source: str, appointment: Appointment, changed_at: datetime | None, *,
            linked: str | None = None) -> LineageEntry:
    """``source``'s record seen for the first time: it is the appointment's first version (every field
    has rule ``created``); ``linked``: how onboarding or the crosswalk found its id."""
    sources = {name: _source(source, changed_at, "created") for name in SYNC_FIELDS}
    detail = f"first seen; linked by {linked}" if linked else "first seen: the appointment's first version"
    return LineageEntry(canonical_id=cid, kind="read", action="linked" if linked else "seen-new", connector=source,
                        fields=[n for n in SYNC_FIELDS if getattr(appointment, n) is not None],
                        outcome="created", rule="created", detail=detail, sources=sources)


def _rules(result: MergeResult) -> dict[str, str]:
    """field -> rule for each field the merge changed (a conflict settled on the slot covers both ends)."""
    settled = {c.field: _MERGE_RULES.get(c.rule, c.rule) for c in result.conflicts if c.winner is not None}
    out = {}
    for name in result.changed:
        unit = "start" if name == "end" else name
        out[name] = settled.get(unit, "only_change")
    return out


def merged(cid: str, source: str, result: MergeResult, modified: Mapping[str, datetime | None], *,
           detail: str | None = None) -> list[LineageEntry]:
    """A record of ``source`` merged into the appointment: what was read, what the merge took (with the
    source and rule per field), each conflict (settled by a rule, or left open) and what it refused.
    ``modified``: connector -> its record's modified time (when the change was made there)."""
    now = utcnow()
    own = [name for name in result.changed if result.sources.get(name) in (source, LEDGER_SIDE, "", None)]
    proposed = list(dict.fromkeys([*own, *(c.field for c in result.conflicts),
                                   *(name for who, name, _ in result.ignored if who == source)]))
    when = modified.get(source)
    read_detail = f"modified there at {_iso(when)}" if when is not None else "read"
    if detail:
        read_detail = f"{detail}; {read_detail}"
    entries = [LineageEntry(at=now, canonical_id=cid, kind="read", action="read", connector=source,
                            fields=proposed, outcome="changed" if proposed else "no change",
                            detail=_detail(read_detail))]
    if result.changed:
        rules = _rules(result)
        sources = {}
        for name in result.changed:
            who = result.sources.get(name) or source
            if who == LEDGER_SIDE:
                who = source
            sources[name] = _source(who, modified.get(who), rules[name])
        distinct = set(rules.values())
        summary = ", ".join(f"{name}: {rule}" + ("" if sources[name]["source"] == source else
                                                 f" ({sources[name]['source']})") for name, rule in rules.items())
        entries.append(LineageEntry(at=now, canonical_id=cid, kind="merge", action="merged", connector=source,
                                    fields=list(result.changed), outcome="merged",
                                    rule=distinct.pop() if len(distinct) == 1 else None,
                                    detail=_detail(summary), sources=sources))
    for c in result.conflicts:
        sides = sorted(n for n in c.values if not n.startswith("("))
        rule = _MERGE_RULES.get(c.rule)
        if c.winner is None:
            text = f"{c.field} changed on {', '.join(sides)}; no policy settled it (equal or unknown times)"
        else:
            winner = "the other members" if c.winner == LEDGER_SIDE else c.winner
            text = f"{c.field} changed on {', '.join(sides)}: {winner} won by {rule or c.rule}"
        connector = source if c.winner in (None, LEDGER_SIDE) else c.winner
        entries.append(LineageEntry(at=now, canonical_id=cid, kind="conflict", action="conflict-" + c.rule,
                                    connector=connector, fields=[c.field],
                                    outcome="open" if c.winner is None else "settled", rule=rule,
                                    detail=_detail(text.replace(LEDGER_SIDE, "the other members"))))
    for who, name, why in result.ignored:
        entries.append(LineageEntry(at=now, canonical_id=cid, kind="merge", action="ignored", connector=who,
                                    fields=[name], outcome="ignored", detail=_detail(why)))
    return entries


def written(cid: str, target: str, op: str, fields: Iterable[str], *, outcome: str = "ok",
            detail: str | None = None) -> LineageEntry:
    """A write to ``target`` (``op``: create, update, cancel, replaced) and its outcome."""
    return LineageEntry(canonical_id=cid, kind="write", action=op, connector=target,
                        fields=[f for f in SYNC_FIELDS if f in set(fields)], outcome=outcome[:32],
                        detail=_detail(detail))


def conflict(cid: str, connector: str | None, field: str, *, outcome: str = "open",
             detail: str | None = None, vendor_text: bool = True) -> LineageEntry:
    """A conflict opened outside a merge (a target refused a write, several records matched).
    ``vendor_text``: the detail quotes a vendor's message (contacts are masked)."""
    return LineageEntry(canonical_id=cid, kind="conflict", action="conflict-open", connector=connector,
                        fields=[field], outcome=outcome, detail=_detail(detail, vendor_text=vendor_text))


def dead_letter(cid: str | None, connector: str, kind: str, reason: str) -> LineageEntry | None:
    """A record dead-lettered (None when it has no canonical id yet: nothing to attach it to)."""
    if not cid:
        return None
    return LineageEntry(canonical_id=cid, kind="dead_letter", action="dead_letter", connector=connector,
                        outcome=kind[:32], detail=_detail(f"{kind}: {reason}", vendor_text=True))


def resolved(cid: str, take: str, fields: Sequence[str], changed_at: datetime | None,
             detail: str) -> LineageEntry:
    """A conflict settled by hand by taking ``take``'s version: the fields' rule is ``resolved``."""
    return LineageEntry(canonical_id=cid, kind="merge", action="resolved", connector=take, fields=list(fields),
                        outcome="resolved", rule="resolved", detail=_detail(detail),
                        sources={name: _source(take, changed_at, "resolved") for name in fields})


def action(cid: str, kind: str, connector: str | None, outcome: str, detail: str) -> LineageEntry:
    """An operator's action (``kind``: retry, discard, resolve), from the command line or the console."""
    return LineageEntry(canonical_id=cid, kind=kind, action=kind, connector=connector, outcome=outcome[:32],
                        detail=_detail(detail, vendor_text=True))


async def prune(ledger: Ledger, history_days: int, *, now: datetime | None = None) -> int:
    """Delete lineage older than ``history_days`` (at most :data:`PRUNE_BATCH` entries, one DELETE)."""
    cutoff = (now or utcnow()) - timedelta(days=history_days)
    async with ledger.transaction() as tx:
        return await tx.prune_lineage(cutoff, limit=PRUNE_BATCH)


# -- reading -------------------------------------------------------------------------------------


class RefError(ValueError):
    """A malformed appointment reference (neither a canonical id nor ``NAME:EXTERNAL_ID``)."""


def parse_ref(ref: str, connectors: Iterable[str]) -> tuple[str | None, str]:
    """``(connector, external_id)`` for ``NAME:EXTERNAL_ID``, ``(None, canonical_id)`` for a canonical id."""
    text = ref.strip()
    if not text:
        raise RefError("give a canonical id or NAME:EXTERNAL_ID")
    name, sep, external = text.partition(":")
    if sep:
        if name not in set(connectors):
            raise RefError(f"NAME in NAME:EXTERNAL_ID is not a configured connector (known: "
                           f"{', '.join(sorted(connectors)) or 'none'})")
        if not EXTERNAL_ID_RE.fullmatch(external):
            raise RefError("EXTERNAL_ID in NAME:EXTERNAL_ID must be 1-255 printable characters")
        return name, external
    if not CANONICAL_ID_RE.fullmatch(text):
        raise RefError("a canonical id matches [A-Za-z0-9_-]{1,64}; otherwise give NAME:EXTERNAL_ID")
    return None, text


async def _canonical_id(tx: Tx, connector: str | None, key: str) -> str | None:
    if connector is None:
        return key
    link = (await tx.links_for(connector, [key])).get(key)
    if link is not None:
        return link.canonical_id
    # a record dead-lettered before it was linked, whose letter names the appointment
    letters = [dl for dl in await tx.dead_letters(connector=connector) if dl.external_id == key and dl.canonical_id]
    return letters[0].canonical_id if letters else None


def _field_value(name: str, snapshot: Mapping[str, Any] | None) -> dict[str, Any]:
    value = (snapshot or {}).get(name)
    if name in HASHED_FIELDS:
        return {"value": None, "hash": short_hash(value)}
    return {"value": value}


def history_row(entry: LineageRecord) -> dict[str, Any]:
    """One history entry as docs/reference.md §4 prints it."""
    return {"at": _iso(entry.at), "kind": entry.kind, "connector": entry.connector, "fields": list(entry.fields),
            "outcome": entry.outcome, "detail": entry.detail}


@dataclass(frozen=True, slots=True)
class LineageView:
    """What :func:`lineage_view` read: the §4 ``document`` and the rows it was built from."""

    document: dict[str, Any]
    entries: list[LineageRecord]
    appointment: AppointmentRow | None
    links: list[Link]


async def lineage_view(config: Config, ledger: Ledger, ref: str) -> LineageView | None:
    """One appointment's lineage (``NAME:EXTERNAL_ID``, retired ids too, or a canonical id), or None when
    the ledger holds no such appointment. Raises :class:`RefError` for a malformed ``ref``. One indexed
    query for the history; a field's source is the newest entry that set it."""
    connector, key = parse_ref(ref, config.connectors)
    async with ledger.transaction(readonly=True) as tx:
        cid = await _canonical_id(tx, connector, key)
        if cid is None:
            return None
        row = (await tx.appointments([cid])).get(cid)
        links = (await tx.links_of([cid], include_retired=True)).get(cid, [])
        if row is None and not links:
            return None
        entries = await tx.lineage_of(cid)
    snapshot = row.snapshot if row is not None else None
    provenance: dict[str, dict[str, Any]] = {}
    for entry in entries:  # newest first: the first entry that set a field is the one in force
        if not entry.sources_json or entry.sources_json == "{}":
            continue
        for name, source in entry.sources.items():
            if name not in provenance and isinstance(source, Mapping):
                provenance[name] = dict(source)
        if len(provenance) == len(SYNC_FIELDS):
            break
    fields: dict[str, dict[str, Any]] = {}
    for name in SYNC_FIELDS:
        known = provenance.get(name, {})
        fields[name] = {**_field_value(name, snapshot), "source": known.get("source"),
                        "changed_at": known.get("changed_at"), "rule": known.get("rule")}
    links = sorted(links, key=lambda lk: (lk.connector, lk.retired, lk.external_id))
    document: dict[str, Any] = {
        "canonical_id": cid,
        "links": [{"connector": lk.connector, "external_id": lk.external_id, "retired": lk.retired} for lk in links],
        "fields": fields,
        "history": [history_row(entry) for entry in entries],
    }
    return LineageView(document, entries, row, links)


async def explain(config: Config, ledger: Ledger, ref: str) -> dict[str, Any] | None:
    """The ``syncd explain --json`` document (docs/reference.md §4) of ``ref``, or None when unknown;
    :class:`RefError` when ``ref`` is malformed. The console's appointment page reads the same view."""
    view = await lineage_view(config, ledger, ref)
    return None if view is None else view.document
