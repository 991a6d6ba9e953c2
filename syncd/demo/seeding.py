"""Setting the stage: which member of each group holds the seeded appointments, the seeding itself, the
bookings typed by hand before go-live, the crosswalk import, and the first sync's expected counts."""

from __future__ import annotations

import asyncio
import dataclasses
import time
from collections.abc import Mapping
from dataclasses import dataclass
from datetime import datetime, timedelta

from syncd import registry
from syncd.config import Config
from syncd.crosswalk import import_rows, parse_csv
from syncd.demo.data import CREATABLE, HAND_TYPED, DemoError, demo_datasets
from syncd.demo.records import is_appointment, record_id
from syncd.demo.roles import CrmGroup, SaludYaGroup, find_crm_group, find_saludya_group, holder_rank
from syncd.demo.sandboxes import Sandboxes
from syncd.demo.story import TypedByHand
from syncd.ledger.store import Ledger
from syncd.sandboxkit.seedgen import SeedDataset, crosswalk_csv

CrosswalkRows = dict[str, list[tuple[str, str, str]]]
"""connector name -> its (kind, key, external id) crosswalk rows"""


@dataclass(frozen=True)
class Stage:
    """Who plays which part and what each group is seeded with."""

    crm: CrmGroup
    saludya: SaludYaGroup | None
    crm_data: SeedDataset
    """the CRM/EHR group's data set (tuned for the scripted steps)"""
    datasets: dict[str, SeedDataset]
    """group name -> its data set (``""``: connectors in no group)"""
    holders: dict[str, str]
    """group name -> the member the appointments are seeded into"""
    missing_patient: str
    """the patient whose crosswalk row for the CRM/EHR group's ``other`` member is left out"""

    @property
    def saludya_dataset(self) -> SeedDataset | None:
        return None if self.saludya is None else self.datasets[self.saludya.group.name]


def set_stage(base: Config, now: datetime) -> Stage:
    crm_group = find_crm_group(base)
    crm_data, other_data = demo_datasets(now)
    datasets: dict[str, SeedDataset] = {g.name: (crm_data if g is crm_group.group else other_data) for g in base.sync}
    datasets[""] = other_data
    holders: dict[str, str] = {crm_group.group.name: crm_group.ehr}
    for g in base.sync:
        if g is not crm_group.group:
            holders[g.name] = min(g.members, key=lambda m: holder_rank(base.connectors[m].type))
    return Stage(crm_group, find_saludya_group(base), crm_data, datasets, holders, crm_data.appointments[-1].patient)


async def type_by_hand(sandboxes: Sandboxes, config: Config, crm: CrmGroup, dataset: SeedDataset) -> TypedByHand:
    """Go-live as it really happens: some of the EHR's bookings were typed into the CRM and the other
    system by hand as well (the same patient, practitioner and start; no syncd reference), and one
    booking into the CRM only. The daemon must link those, not copy them."""
    first = dataset.appointments[HAND_TYPED[0]]
    last = max(a.start for a in dataset.appointments)
    crm_only = dataclasses.replace(
        first, key="A-HAND01", start=last + timedelta(days=1), end=last + timedelta(days=1) + (first.end - first.start)
    )
    ids: dict[str, list[str]] = {}
    crm_only_id = ""
    for name in (crm.crm, crm.other):
        package = registry.get(config.connectors[name].type)
        bookings = [dataset.appointments[i] for i in HAND_TYPED] + ([crm_only] if name == crm.crm else [])
        body, _rows = package.seed_body(dataclasses.replace(dataset, appointments=tuple(bookings)))
        fields = package.sandbox_fields
        reference = fields.reference if fields is not None else None  # hand-typed records have none
        records = [
            {**r, **({reference: None} if reference is not None and reference in r else {})}
            for r in body.get("records", [])
            if is_appointment(r)
        ]
        await sandboxes.control(name, "POST", "/_sandbox/records", {"records": records})
        ids[name] = [record_id(r) for r in records[: len(HAND_TYPED)]]
        if name == crm.crm:
            crm_only_id = record_id(records[-1])
    return TypedByHand(HAND_TYPED, ids, crm_only_id)


async def seed(sandboxes: Sandboxes, config: Config, stage: Stage) -> CrosswalkRows:
    """Seed every connector: appointments into its group's holder, reference data everywhere."""
    rows_by: CrosswalkRows = {}
    for name, cfg in config.connectors.items():
        group = config.group_of(name)
        dataset = stage.datasets[group.name if group is not None else ""]
        body, rows = registry.get(cfg.type).seed_body(dataset)
        if stage.holders.get(group.name if group is not None else "") != name:
            body = dict(body)
            body["records"] = [r for r in body.get("records", []) if not is_appointment(r)]
            rows = [r for r in rows if r[0] != "appointment"]
        await sandboxes.control(name, "POST", "/_sandbox/records", body)
        rows_by[name] = list(rows)
    return rows_by


async def import_crosswalk(
    config: Config, rows_by: Mapping[str, list[tuple[str, str, str]]], skip: tuple[str, str, str]
) -> None:
    """Reference rows only (appointments get canonical ids minted by syncd), minus ``skip``."""
    kept = {
        name: [r for r in rows if r[0] != "appointment" and (name, r[0], r[1]) != skip]
        for name, rows in rows_by.items()
    }
    rows, problems = parse_csv(crosswalk_csv(kept), config.connectors)
    if problems:
        raise DemoError(f"crosswalk: {problems[0]}")
    ledger = await Ledger.open(config.ledger.url)
    try:
        await ledger.upgrade()
        report = await import_rows(ledger, rows, config)
    finally:
        await ledger.close()
    if report.problems:
        raise DemoError(f"crosswalk: {report.problems[0]}")


async def wait_initial(sandboxes: Sandboxes, expected: Mapping[str, int], timeout: float) -> str | None:
    deadline = time.monotonic() + timeout
    missing = "not checked"
    while time.monotonic() < deadline:
        short = []
        for name, count in expected.items():
            have = len(await sandboxes.appointments(name))
            if have < count:
                short.append(f"{name} {have}/{count}")
        if not short:
            return None
        missing = ", ".join(short)
        await asyncio.sleep(0.3)
    return f"first sync incomplete: {missing}"


def initial_expectations(config: Config, stage: Stage) -> dict[str, int]:
    """connector -> how many appointments the first sync must have created in it."""
    expected: dict[str, int] = {}
    for group in config.sync:
        creatable = sum(1 for a in stage.datasets[group.name].appointments if a.status in CREATABLE)
        for member in group.create_in:
            if member == stage.holders[group.name]:
                continue
            expected[member] = creatable - (1 if member == stage.crm.other and group is stage.crm.group else 0)
    return expected
