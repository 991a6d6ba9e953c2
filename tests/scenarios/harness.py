"""A small world for end-to-end scenarios: real sandboxes, a real ledger, a real config file.

Everything goes through syncd's public entry points (config loading, crosswalk import, ``resync``), and
vendor-side changes are made through the sandboxes' control API, the way another user would make them.
"""

from __future__ import annotations

import asyncio
import importlib
import json
from collections.abc import AsyncIterator, Mapping, Sequence
from contextlib import asynccontextmanager
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import aiohttp

from syncd.config import Config, load_config
from syncd.crosswalk import import_rows, parse_csv
from syncd.ledger.models import AuditEntry, ConflictRow, DeadLetter, Link
from syncd.ledger.store import Ledger, Tx
from syncd.passes import PassResult, resync
from syncd.sandboxkit import RunningSandbox, start_sandbox
from syncd.sandboxkit.control import edit_of, fault_of
from syncd.sandboxkit.seedgen import SeedDataset, crosswalk_csv, generate

AUTH: dict[str, dict[str, str]] = {
    "salesforce_health": {"client_id": "sandbox-client", "client_secret": "sandbox-secret",
                          "refresh_token": "sandbox-refresh", "api_version": "65.0"},
    "zoho_crm": {"client_id": "sandbox-client", "client_secret": "sandbox-secret",
                 "refresh_token": "sandbox-refresh"},
    "saludya": {"api_key": "sandbox-key"},
    "onlive": {"access_key_id": "OLAK7Q2N4X9EXAMPLE",
               "secret_access_key": "olsk/9fT3c2+a7E1b4D4e0F8a6B5c3EXAMPLE"},
    "dentally": {"access_token": "sandbox-token", "user_agent": "syncd-tests/1.0 (ops@clinic.example)"},
}
TIMEZONES = {"salesforce_health": "UTC", "zoho_crm": "Asia/Kolkata", "saludya": "America/Bogota",
             "onlive": "Europe/Madrid", "dentally": "Europe/London"}


def zoho_time(dt: datetime) -> str:
    """A datetime as Zoho writes it (UTC, seconds, ``+00:00``), for sandbox edits."""
    return dt.astimezone(UTC).strftime("%Y-%m-%dT%H:%M:%S+00:00")


def parse_sf_time(value: str) -> datetime:
    """A Salesforce datetime (``...+0000`` or ``...Z``) as an aware datetime."""
    return datetime.fromisoformat(value.replace("+0000", "+00:00").replace("Z", "+00:00"))


def _toml_value(value: Any) -> str:
    if isinstance(value, str):
        return json.dumps(value)
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, (list, tuple)):
        return "[" + ", ".join(_toml_value(v) for v in value) + "]"
    if isinstance(value, Mapping):
        return "{ " + ", ".join(f"{k} = {_toml_value(v)}" for k, v in value.items()) + " }"
    return str(value)


@dataclass
class World:
    config_path: Path
    config: Config
    sandboxes: dict[str, RunningSandbox]
    types: dict[str, str]
    dataset: SeedDataset
    crosswalk: dict[str, list[tuple[str, str, str]]] = field(default_factory=dict)

    async def resync(self, **kw: Any) -> PassResult:
        return await resync(self.config, **kw)

    async def resync_within(self, seconds: float = 5.0, **kw: Any) -> PassResult:
        """``resync`` that fails the test (instead of hanging it) when the pass outlives ``seconds``."""
        try:
            return await asyncio.wait_for(resync(self.config, **kw), seconds)
        except TimeoutError:
            raise AssertionError(f"resync did not finish within {seconds} s") from None

    async def control(self, name: str, method: str, path: str, body: Any = None) -> Any:
        async with aiohttp.ClientSession() as s, s.request(method, self.sandboxes[name].url + path, json=body) as r:
            text = await r.text()
            assert r.status < 300, f"{name} {method} {path}: {r.status} {text[:300]}"
            return json.loads(text) if text else None

    async def records(self, name: str) -> list[dict[str, Any]]:
        return list((await self.control(name, "GET", "/_sandbox/records"))["records"])

    async def record(self, name: str, external_id: str) -> dict[str, Any]:
        for rec in await self.records(name):
            if str(rec.get("id", rec.get("Id"))) == external_id:
                return rec
        raise KeyError(f"{name} has no record {external_id}")

    async def edit(self, name: str, external_id: str, changes: Mapping[str, Any]) -> None:
        """Another user edits the record in the vendor (bumps its version and modified time)."""
        full = await self.record(name, external_id)
        await self.control(name, "POST", "/_sandbox/records", {"records": [edit_of(full, changes)]})

    async def fault(self, name: str, method: str, path: str, action: Mapping[str, Any], times: int = 1) -> None:
        await self.control(name, "POST", "/_sandbox/faults", fault_of(method, path, action, times))

    async def write_requests(self, name: str) -> int:
        rows = (await self.control(name, "GET", "/_sandbox/requests"))["requests"]
        return sum(r["count"] for r in rows if r["method"] in ("POST", "PUT", "PATCH", "DELETE")
                   and "oauth" not in r["route"])

    @asynccontextmanager
    async def reading(self) -> AsyncIterator[Tx]:
        """A read-only transaction on the world's ledger (opened for it, closed afterwards)."""
        ledger = await self.ledger()
        try:
            async with ledger.transaction(readonly=True) as tx:
                yield tx
        finally:
            await ledger.close()

    async def link(self, canonical_id: str, connector: str) -> str:
        return next(lk.external_id for lk in await self.links(canonical_id) if lk.connector == connector)

    async def canonical_of(self, connector: str, external_id: str) -> str:
        """The canonical id ``connector``'s record ``external_id`` is linked to."""
        async with self.reading() as tx:
            return (await tx.links_for(connector, [external_id]))[external_id].canonical_id

    async def links(self, canonical_id: str, *, include_retired: bool = False) -> list[Link]:
        """Every ledger link of ``canonical_id`` (retired ones too when asked)."""
        async with self.reading() as tx:
            return list((await tx.links_of([canonical_id], include_retired=include_retired)).get(canonical_id, []))

    async def dead_letters(self, connector: str | None = None) -> list[DeadLetter]:
        """Open dead letters, oldest first (of one connector when given)."""
        async with self.reading() as tx:
            return await tx.dead_letters(connector=connector)

    async def conflicts(self) -> list[ConflictRow]:
        """Open conflicts."""
        async with self.reading() as tx:
            return await tx.conflicts()

    async def audit(self, canonical_id: str) -> list[AuditEntry]:
        """The audit trail of ``canonical_id``."""
        async with self.reading() as tx:
            return list((await tx.audit_for([canonical_id])).get(canonical_id, []))

    def external(self, name: str, kind: str, key: str) -> str:
        """The seeded external id of crosswalk ``kind``/``key`` in connector ``name``."""
        return next(ext for k, c, ext in self.crosswalk[name] if k == kind and c == key)

    async def write_counts(self, name: str) -> dict[str, int]:
        """Write requests by ``METHOD route`` (token routes left out)."""
        rows = (await self.control(name, "GET", "/_sandbox/requests"))["requests"]
        return {f"{r['method']} {r['route']}": int(r["count"]) for r in rows
                if r["method"] in ("POST", "PUT", "PATCH", "DELETE") and "oauth" not in r["route"]}

    async def set_clock(self, name: str, now: datetime | None) -> None:
        """Set the sandbox's clock (``None`` restores real time)."""
        await self.control(name, "POST", "/_sandbox/clock",
                           {"now": None if now is None else now.astimezone(UTC).strftime("%Y-%m-%dT%H:%M:%SZ")})

    async def table_counts(self) -> dict[str, int]:
        import sqlalchemy as sa

        from syncd.ledger.models import metadata

        async with self.reading() as tx:
            out = {}
            for table in metadata.sorted_tables:
                out[table.name] = int((await tx.conn.execute(sa.select(sa.func.count()).select_from(table)))
                                      .scalar_one())
            return out

    async def seed(self, name: str, appointments: bool = True) -> None:
        module = importlib.import_module(f"connectors.{self.types[name]}.sandbox")
        body, rows = module.seed_body(self.dataset)
        if not appointments:
            body = {k: v for k, v in body.items() if k != "records"} | {
                "records": [r for r in body.get("records", []) if not _is_appointment(self.types[name], r)]
            }
            rows = [r for r in rows if r[0] != "appointment"]
        await self.control(name, "POST", "/_sandbox/records", body)
        self.crosswalk[name] = rows

    async def seed_holding(self, holder: str) -> None:
        """Seed ``holder`` with the data set's appointments and every other member with its reference
        data only, then import the crosswalk (reference rows)."""
        await self.seed(holder)
        for name in self.types:
            if name != holder:
                await self.seed(name, appointments=False)
        await self.import_crosswalk()

    async def import_crosswalk(self, *, appointments_for: Sequence[str] = (), skip: Sequence[tuple[str, str, str]] = ()
                               ) -> None:
        rows_by = {
            name: [r for r in rows if (r[0] != "appointment" or name in appointments_for)
                   and (name, r[0], r[1]) not in set(skip)]
            for name, rows in self.crosswalk.items()
        }
        rows, problems = parse_csv(crosswalk_csv(rows_by), self.config.connectors)
        assert not problems, problems
        ledger = await Ledger.open(self.config.ledger.url)
        try:
            await ledger.upgrade()
            report = await import_rows(ledger, rows, self.config)
            assert not report.problems, report.problems
        finally:
            await ledger.close()

    async def ledger(self) -> Ledger:
        return await Ledger.open(self.config.ledger.url)

    async def stop(self) -> None:
        for sb in self.sandboxes.values():
            await sb.stop()


def _is_appointment(vendor: str, record: Mapping[str, Any]) -> bool:
    attrs = record.get("attributes")
    if isinstance(attrs, Mapping):
        return attrs.get("type") == "ServiceAppointment"
    return True


async def make_world(
    tmp_path: Path,
    ledger_url: str,
    members: Mapping[str, str],
    *,
    n_appointments: int = 5,
    create_in: Sequence[str] | None = None,
    owners: Mapping[str, str] | None = None,
    sandbox_options: Mapping[str, Mapping[str, Any]] | None = None,
    connector_extra: Mapping[str, Mapping[str, Any]] | None = None,
    now: datetime | None = None,
) -> World:
    """Start the sandboxes for ``members`` (name -> vendor type) and write a config for them."""
    sandboxes: dict[str, RunningSandbox] = {}
    for name, vendor in members.items():
        options = {"rate_limits": False, **dict((sandbox_options or {}).get(name, {}))}
        sandboxes[name] = await start_sandbox(vendor, port=0, **options)
    lines = [f'[ledger]\nurl = "{ledger_url}"\n', '[log]\nlevel = "warning"\nformat = "json"\n']
    for name, vendor in members.items():
        url = sandboxes[name].url
        entries: dict[str, Any] = {"type": vendor, "base_url": url, "poll_interval": 60,
                                   "timezone": TIMEZONES[vendor], "max_requests_per_second": 200,
                                   **AUTH[vendor]}
        if vendor == "salesforce_health":
            entries["token_url"] = f"{url}/services/oauth2/token"
        if vendor == "zoho_crm":
            entries["accounts_url"] = url
        if vendor in ("salesforce_health", "zoho_crm", "dentally"):
            entries["webhook_secret"] = "sandbox-webhook-secret"
        entries.update((connector_extra or {}).get(name, {}))
        lines.append(f"[connectors.{name}]\n" + "".join(f"{k} = {_toml_value(v)}\n" for k, v in entries.items()))
    group: dict[str, Any] = {"name": "g", "members": list(members)}
    if create_in is not None:
        group["create_in"] = list(create_in)
    if owners:
        group["owners"] = dict(owners)
    lines.append("[[sync]]\n" + "".join(f"{k} = {_toml_value(v)}\n" for k, v in group.items()))
    path = tmp_path / "config.toml"
    path.write_text("\n".join(lines), encoding="utf-8")
    config = load_config(str(path))
    single_location = "zoho_crm" in members.values()
    dataset = generate(n_appointments, seed=7, now=now or datetime.now(UTC), locations=1 if single_location else None)
    return World(path, config, sandboxes, dict(members), dataset)


async def pair_world(
    tmp_path: Path, ledger_url: str, members: Mapping[str, str], *, source: str, n: int = 4, **kw: Any
) -> World:
    """A world whose appointments start in ``source``; the other members hold the reference data only."""
    world = await make_world(tmp_path, ledger_url, members, n_appointments=n, **kw)
    await world.seed(source)
    for name in members:
        if name != source:
            await world.seed(name, appointments=False)
    return world


@asynccontextmanager
async def synced_pair(
    tmp_path: Path, ledger_url: str, members: Mapping[str, str], *, source: str, n: int = 4
) -> AsyncIterator[World]:
    """:func:`pair_world` after a first resync has created ``source``'s appointments in every other member."""
    world = await pair_world(tmp_path, ledger_url, members, source=source, n=n)
    try:
        await world.import_crosswalk()
        first = await world.resync_within()
        assert first.exit_code == 0, first.document
        for name in members:
            if name != source:
                assert first.document["connectors"][name]["created"] == n, first.document
        yield world
    finally:
        await world.stop()
