"""Crosswalk import and export (docs/reference.md §3).

The CSV has the header ``kind,key,connector,external_id``. Reference rows (patient, practitioner,
location, service) go to the ``crosswalk`` table; ``appointment`` rows link appointments that existed
in several systems before syncd started and are stored as ``links`` (the table syncd's own links
live in), so ``export`` writes every link in force, retired ids of a replace flow left out.

Import is idempotent and contradiction-safe: a row that would point a key at a second external id,
or an external id at a second key, is reported and not applied; the other rows are applied in one
transaction. With ``replace`` such a reference row (patient, practitioner, location, service) replaces
the rows it contradicts instead: the way to correct a wrong row. ``appointment`` rows are never
replaced: they are syncd's record of which records hold the same appointment. ``dry_run`` reports
the same counts and applies nothing. :func:`remove_reference` deletes one reference row. Problem
lines name the line, kind, key and connector, never a patient's external id (a vendor may identify
patients by e-mail address). A leading byte-order mark (Excel's "CSV UTF-8") is ignored.
"""

from __future__ import annotations

import csv
import io
import re
from collections.abc import Iterable, Iterator, Mapping, Sequence
from dataclasses import dataclass, field

from syncd.config import Config
from syncd.ledger.models import CrosswalkEntry, Link
from syncd.ledger.store import Ledger, Tx

__all__ = [
    "HEADER",
    "KEY_RE",
    "KINDS",
    "CrosswalkRow",
    "ImportReport",
    "RemoveReport",
    "export_csv",
    "import_rows",
    "parse_csv",
    "remove_reference",
    "sort_problems",
]

HEADER = ("kind", "key", "connector", "external_id")
KINDS = ("patient", "practitioner", "location", "service", "appointment")
KEY_RE = re.compile(r"[A-Za-z0-9_-]{1,64}")
_MAX_EXTERNAL_ID = 255


@dataclass(frozen=True, slots=True)
class CrosswalkRow:
    line: int
    kind: str
    key: str
    connector: str
    external_id: str

    def where(self) -> str:
        return f"line {self.line}: {self.kind} {self.key} on {self.connector}"


class _Rollback(Exception):
    """Raised inside a dry run's transaction so that nothing it did is committed."""


@dataclass
class ImportReport:
    added: int = 0
    unchanged: int = 0
    problems: list[str] = field(default_factory=list)
    replaced: int = 0
    """Reference rows that replaced contradicting rows (``replace``)."""

    @property
    def rejected(self) -> int:
        return len(self.problems)

    @property
    def exit_code(self) -> int:
        """0 when every row is in force, 1 when some were reported and not applied (docs/reference.md §4)."""
        return 1 if self.problems else 0


def _records(reader: Iterator[list[str]], problems: list[str]) -> Iterator[list[str]]:
    """The rows of ``reader``; a row the csv module cannot read ends the file with a problem naming it."""
    while True:
        try:
            record = next(reader)
        except StopIteration:
            return
        except csv.Error as exc:
            line = getattr(reader, "line_num", 0)
            problems.append(f"line {line}: not valid CSV ({exc}); nothing after it was read")
            return
        yield record


def parse_csv(text: str, connectors: Iterable[str]) -> tuple[list[CrosswalkRow], list[str]]:
    """Parse and validate rows (kind, key syntax, configured connector); returns (rows, problems)."""
    known = set(connectors)
    rows: list[CrosswalkRow] = []
    problems: list[str] = []
    text = text.removeprefix("\ufeff")  # Excel's "CSV UTF-8" starts with a byte-order mark
    reader = csv.reader(io.StringIO(text, newline=""))  # csv itself handles \n, \r\n and \r
    try:
        header = next(reader, None)
    except csv.Error as exc:
        return [], [f"line 1: not valid CSV ({exc}); the header must be {','.join(HEADER)}"]
    if header is None or tuple(h.strip().lower() for h in header) != HEADER:
        return [], [f"line 1: header must be {','.join(HEADER)}"]
    for index, record in enumerate(_records(reader, problems), start=2):
        if not record or all(not cell.strip() for cell in record):
            continue
        if len(record) != len(HEADER):
            problems.append(f"line {index}: expected {len(HEADER)} columns, got {len(record)}")
            continue
        kind, key, connector, external_id = (cell.strip() for cell in record)
        if kind not in KINDS:
            problems.append(f"line {index}: unknown kind {kind[:20]!r} (one of {', '.join(KINDS)})")
            continue
        if not KEY_RE.fullmatch(key):
            problems.append(f"line {index}: {kind} key is not a valid canonical key ([A-Za-z0-9_-]{{1,64}})")
            continue
        if connector not in known:
            problems.append(f"line {index}: {kind} {key}: no connector named {connector[:40]!r} in the config")
            continue
        if not external_id or len(external_id) > _MAX_EXTERNAL_ID:
            problems.append(f"line {index}: {kind} {key} on {connector}: external id must be 1-255 characters")
            continue
        rows.append(CrosswalkRow(index, kind, key, connector, external_id))
    return rows, problems


async def import_rows(
    ledger: Ledger, rows: Sequence[CrosswalkRow], config: Config, *, replace: bool = False, dry_run: bool = False
) -> ImportReport:
    """Apply rows in one transaction; contradictions are reported and not applied (with ``replace``, a
    reference row replaces what it contradicts). ``dry_run``: the same report, nothing applied."""
    report = ImportReport()
    references = [r for r in rows if r.kind != "appointment"]
    appointments = [r for r in rows if r.kind == "appointment"]
    try:
        async with ledger.transaction() as tx:
            await _import_references(tx, references, report, replace=replace)
            await _import_appointments(tx, appointments, report, config)
            if dry_run:
                raise _Rollback
    except _Rollback:
        pass
    report.problems = sort_problems(report.problems)
    return report


@dataclass
class RemoveReport:
    removed: list[CrosswalkEntry] = field(default_factory=list)
    problem: str | None = None


async def remove_reference(
    ledger: Ledger, kind: str, key: str, connector: str, *, dry_run: bool = False
) -> RemoveReport:
    """Delete the reference row ``kind``/``key`` on ``connector``. An ``appointment`` row cannot be
    removed: it links records syncd keeps in sync, and dropping it would make syncd create a duplicate."""
    report = RemoveReport()
    if kind == "appointment":
        report.problem = ("appointment rows link records syncd keeps in sync; removing one would create a "
                          "duplicate (correct the records in the vendors instead)")
        return report
    if kind not in KINDS:
        report.problem = f"unknown kind {kind[:20]!r} (one of {', '.join(k for k in KINDS if k != 'appointment')})"
        return report
    try:
        async with ledger.transaction() as tx:
            report.removed = await tx.crosswalk_remove(kind, [key], connector)
            if dry_run:
                raise _Rollback
    except _Rollback:
        pass
    if not report.removed:
        report.problem = f"no {kind} {key} on {connector} in the crosswalk"
    return report


def sort_problems(problems: Iterable[str]) -> list[str]:
    """Problem lines in file order (``line N: ...``)."""

    def line_no(problem: str) -> int:
        head = problem.split(":", 1)[0].split()
        return int(head[1]) if len(head) == 2 and head[0] == "line" and head[1].isdigit() else 0

    return sorted(problems, key=line_no)


async def _import_references(
    tx: Tx, rows: Sequence[CrosswalkRow], report: ImportReport, *, replace: bool = False
) -> None:
    by_scope: dict[tuple[str, str], list[CrosswalkRow]] = {}
    for row in rows:
        by_scope.setdefault((row.kind, row.connector), []).append(row)
    new: list[CrosswalkEntry] = []
    replacing: set[tuple[str, str, str]] = set()
    for (kind, connector), scoped in by_scope.items():
        key_to_ext = await tx.crosswalk_lookup(kind, [r.key for r in scoped], connector)
        ext_to_key = await tx.crosswalk_reverse(kind, connector, [r.external_id for r in scoped])
        stale: list[str] = []
        for row in scoped:
            current_ext = key_to_ext.get(row.key)
            current_key = ext_to_key.get(row.external_id)
            if current_ext == row.external_id and current_key == row.key:
                report.unchanged += 1
                continue
            if replace and (current_ext is not None or current_key is not None):
                # the row wins over what it contradicts, in the ledger or earlier in this file
                gone = {k for k in (row.key, current_key) if k is not None}
                stale.extend(gone)
                new = [e for e in new if not (e.kind == kind and e.connector == connector and e.key in gone)]
                if current_key is not None:
                    key_to_ext.pop(current_key, None)
                if current_ext is not None:
                    ext_to_key.pop(current_ext, None)
                replacing.add((kind, connector, row.key))
                current_ext = current_key = None
            if current_ext is not None:
                report.problems.append(f"{row.where()}: key already maps to another external id (not applied)")
                continue
            if current_key is not None:
                report.problems.append(
                    f"{row.where()}: external id already maps to {kind} {current_key} (not applied)"
                )
                continue
            key_to_ext[row.key] = row.external_id
            ext_to_key[row.external_id] = row.key
            new.append(CrosswalkEntry(kind=kind, key=row.key, connector=connector, external_id=row.external_id))
        if stale:
            await tx.crosswalk_remove(kind, stale, connector)
    await tx.crosswalk_add(new)
    replaced = sum(1 for e in new if (e.kind, e.connector, e.key) in replacing)
    report.replaced += replaced
    report.added += len(new) - replaced


@dataclass
class _LinksInForce:
    """The ledger's links of the imported appointments and external ids, kept up to date as rows are
    accepted."""

    key_to_ext: dict[tuple[str, str], str]
    """(canonical id, connector) -> external id"""
    ext_to_key: dict[tuple[str, str], tuple[str, bool]]
    """(connector, external id) -> (canonical id, retired)"""
    groups: dict[str, str]
    """canonical id -> its sync group"""

    @classmethod
    async def load(cls, tx: Tx, rows: Sequence[CrosswalkRow], config: Config) -> _LinksInForce:
        existing_by_key = await tx.links_of(list(dict.fromkeys(r.key for r in rows)))
        key_to_ext = {
            (cid, link.connector): link.external_id for cid, links in existing_by_key.items() for link in links
        }
        ext_to_key: dict[tuple[str, str], tuple[str, bool]] = {}
        by_connector: dict[str, list[str]] = {}
        for row in rows:
            by_connector.setdefault(row.connector, []).append(row.external_id)
        for connector, ext_ids in by_connector.items():
            for ext, link in (await tx.links_for(connector, ext_ids)).items():
                ext_to_key[(connector, ext)] = (link.canonical_id, link.retired)
        groups: dict[str, str] = {}
        for cid, links in existing_by_key.items():
            for link in links:
                group = config.group_of(link.connector)
                if group is not None:
                    groups.setdefault(cid, group.name)
        return cls(key_to_ext, ext_to_key, groups)

    def unchanged(self, row: CrosswalkRow) -> bool:
        current = self.ext_to_key.get((row.connector, row.external_id))
        in_force = current is not None and current[0] == row.key and not current[1]
        return in_force and self.key_to_ext.get((row.key, row.connector)) == row.external_id

    def refusal(self, row: CrosswalkRow, group_name: str) -> str | None:
        """Why ``row`` cannot be applied (None: it can)."""
        current = self.ext_to_key.get((row.connector, row.external_id))
        if current is not None and current[1]:
            return "external id was retired by a replace flow"
        if self.key_to_ext.get((row.key, row.connector)) is not None:
            return "appointment already linked to another external id"
        if current is not None:
            return f"external id already linked to appointment {current[0]}"
        known_group = self.groups.get(row.key)
        if known_group is not None and known_group != group_name:
            return f"connector is not in sync group {known_group} of this appointment"
        return None

    def accept(self, row: CrosswalkRow, group_name: str) -> None:
        self.groups[row.key] = group_name
        self.key_to_ext[(row.key, row.connector)] = row.external_id
        self.ext_to_key[(row.connector, row.external_id)] = (row.key, False)


async def _import_appointments(
    tx: Tx, rows: Sequence[CrosswalkRow], report: ImportReport, config: Config
) -> None:
    if not rows:
        return
    links = await _LinksInForce.load(tx, rows, config)
    new: list[Link] = []
    group_of_new: dict[str, str] = {}
    for row in rows:
        if links.unchanged(row):
            report.unchanged += 1
            continue
        group = config.group_of(row.connector)
        group_name = group.name if group is not None else ""
        problem = links.refusal(row, group_name)
        if problem is not None:
            report.problems.append(f"{row.where()}: {problem} (not applied)")
            continue
        links.accept(row, group_name)
        group_of_new.setdefault(row.key, group_name)
        new.append(Link(canonical_id=row.key, connector=row.connector, external_id=row.external_id))
    by_group: dict[str, list[str]] = {}
    for cid, group_name in group_of_new.items():
        by_group.setdefault(group_name, []).append(cid)
    for group_name, cids in by_group.items():
        await tx.ensure_appointments(cids, sync_group=group_name)
    await tx.upsert_links(new)
    report.added += len(new)


async def export_csv(ledger: Ledger) -> str:
    """Every crosswalk entry and every link in force as CSV (retired ids left out), sorted."""
    async with ledger.transaction(readonly=True) as tx:
        entries = await tx.crosswalk_entries()
        links = await tx.all_links()
    lines: list[tuple[str, str, str, str]] = [(e.kind, e.key, e.connector, e.external_id) for e in entries]
    lines.extend(("appointment", link.canonical_id, link.connector, link.external_id) for link in links)
    kind_order: Mapping[str, int] = {kind: i for i, kind in enumerate(KINDS)}
    lines.sort(key=lambda r: (kind_order.get(r[0], 99), r[1], r[2], r[3]))
    out = io.StringIO()
    writer = csv.writer(out, lineterminator="\n")
    writer.writerow(HEADER)
    writer.writerows(lines)
    return out.getvalue()
