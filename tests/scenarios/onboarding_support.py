"""Helpers for the onboarding scenarios: appointments typed by hand into a vendor (no syncd reference),
what each vendor holds read straight from its sandbox, and a ledger wiped as if deleted.

Vendor shapes are read here from ``/_sandbox/records`` (the sandbox's own view), not through syncd's
connectors, so that a test's count of "each booking exactly once" never depends on the code under test.
"""

from __future__ import annotations

import dataclasses
import importlib
from collections import Counter
from collections.abc import Iterable, Mapping
from datetime import UTC, datetime
from typing import Any

import sqlalchemy as sa
from sqlalchemy.ext.asyncio import create_async_engine

from syncd.ledger.models import metadata
from syncd.sandboxkit.seedgen import SeedDataset
from tests.scenarios.harness import World, parse_sf_time

__all__ = ["Slot", "hand_typed", "seed_hand_typed", "slots", "wipe_ledger"]

Slot = tuple[str, str, datetime]
"""(patient, practitioner, start in UTC), each in the vendor's own ids."""

#: the field in which each vendor's seed carries syncd's reference (typed by hand: none)
_REFERENCE = {"zoho_crm": ("Syncd_Id",), "onlive": ("externalId",), "salesforce_health": ("Syncd_Id__c",)}


def _appointment_records(vendor: str, body: Mapping[str, Any]) -> list[dict[str, Any]]:
    out = []
    for record in body.get("records", []):
        attrs = record.get("attributes")
        if isinstance(attrs, Mapping) and attrs.get("type") != "ServiceAppointment":
            continue
        out.append(dict(record))
    return out


def hand_typed(world: World, name: str, indices: Iterable[int], dataset: SeedDataset | None = None
               ) -> list[dict[str, Any]]:
    """The vendor records of ``name`` for the dataset's appointments ``indices``, as staff would type
    them in (no syncd reference anywhere)."""
    data = dataset or world.dataset
    subset = dataclasses.replace(data, appointments=tuple(data.appointments[i] for i in indices))
    vendor = world.types[name]
    module = importlib.import_module(f"connectors.{vendor}.sandbox")
    body, _rows = module.seed_body(subset)
    records = _appointment_records(vendor, body)
    for record in records:
        for key in _REFERENCE.get(vendor, ()):
            record[key] = None
    return records


async def seed_hand_typed(world: World, name: str, indices: Iterable[int]) -> list[str]:
    """Seed those appointments into ``name`` by hand (its reference data must be seeded already);
    returns their external ids in order."""
    records = hand_typed(world, name, list(indices))
    await world.control(name, "POST", "/_sandbox/records", {"records": records})
    return [str(r.get("Id", r.get("id"))) for r in records]


def _utc(value: str) -> datetime:
    return datetime.fromisoformat(value.replace("Z", "+00:00")).astimezone(UTC)


def _slot(vendor: str, record: Mapping[str, Any], tz: str) -> Slot:
    if vendor == "salesforce_health":
        resources = record.get("_assigned_resources") or [""]
        return str(record["ParentRecordId"]), str(resources[0]), parse_sf_time(record["SchedStartTime"])
    if vendor == "zoho_crm":
        return (str(record["Appointment_For"]["id"]), str(record["Owner"]["id"]),
                _utc(record["Appointment_Start_Time"]))
    if vendor == "dentally":
        return str(record["patient_id"]), str(record["practitioner_id"]), _utc(record["start_time"])
    if vendor == "onlive":
        return str(record["guests"][0]["email"]).lower(), str(record["calendarIds"][0]), _utc(record["startAt"])
    if vendor == "saludya":
        from zoneinfo import ZoneInfo

        local = datetime.fromisoformat(f"{record['date']}T{record['time']}").replace(tzinfo=ZoneInfo(tz))
        return str(record["patient_id"]), str(record["doctor_id"]), local.astimezone(UTC)
    raise AssertionError(f"no slot reader for {vendor}")


def _live(vendor: str, record: Mapping[str, Any]) -> bool:
    if record.get("_deleted_at") or record.get("deletedAt"):
        return False
    attrs = record.get("attributes")
    return not (isinstance(attrs, Mapping) and attrs.get("type") != "ServiceAppointment")


async def slots(world: World, name: str) -> Counter[Slot]:
    """How many live records ``name`` holds per slot."""
    vendor = world.types[name]
    tz = world.config.connectors[name].timezone
    return Counter(_slot(vendor, r, tz) for r in await world.records(name) if _live(vendor, r))


async def wipe_ledger(url: str) -> None:
    """Drop every ledger table and the schema version: the ledger is gone, as if its file was deleted
    (works the same on SQLite and PostgreSQL); the next open creates it anew."""
    engine = create_async_engine(url)
    try:
        async with engine.begin() as conn:
            await conn.run_sync(metadata.drop_all)
            await conn.execute(sa.text("DROP TABLE IF EXISTS alembic_version"))
    finally:
        await engine.dispose()
