"""``syncd doctor``: each connector's checks against its real sandbox, and the failure a sandbox can
show for each vendor (a rotated token, a missing scope, a wrong key pair). The one check no sandbox
can fail, a missing Salesforce ``Syncd_Id__c`` field, is driven at the wire's edge (aioresponses).
Doctor never writes: the sandboxes' write counters stay where they were."""

from __future__ import annotations

import asyncio
import json
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import pytest
from aioresponses import CallbackResult, aioresponses
from click.testing import CliRunner

from connectors.salesforce_health import PACKAGE as SALESFORCE_HEALTH_PACKAGE
from syncd.cli import main
from syncd.connector import CheckStatus, MemoryStateStore
from tests.connectors.test_salesforce_health_connector import QUERY, TOKEN_ANSWER, TOKEN_URL, config, fast
from tests.scenarios.harness import World, make_world

create_connector = SALESFORCE_HEALTH_PACKAGE.create_connector

ALL_FIVE = {"sf": "salesforce_health", "zoho": "zoho_crm", "saludya": "saludya", "onlive": "onlive",
            "dentally": "dentally"}


@pytest.fixture
async def world(tmp_path: Path) -> AsyncIterator[World]:
    # rate limits on, as the vendors run them: their quota headers are part of what doctor reads
    w = await make_world(tmp_path, f"sqlite+aiosqlite:///{tmp_path / 'ledger.db'}", ALL_FIVE, n_appointments=1,
                         sandbox_options={name: {"rate_limits": True} for name in ALL_FIVE})
    try:
        yield w
    finally:
        await w.stop()


async def doctor(world: World, *args: str) -> tuple[int, dict[str, Any]]:
    result = await asyncio.to_thread(CliRunner().invoke, main,
                                     ["doctor", "--json", "--config", str(world.config_path), *args])
    return result.exit_code, json.loads(result.stdout)


def _checks(report: dict[str, Any], name: str) -> dict[str, dict[str, Any]]:
    return {c["name"]: c for c in report["connectors"][name]["checks"]}


async def test_all_five_pass_and_nothing_is_written(world: World) -> None:
    before = {name: await world.write_requests(name) for name in ALL_FIVE}
    code, report = await doctor(world)
    assert code == 0 and report["ok"] is True, json.dumps(report, indent=1)
    for name in ALL_FIVE:
        checks = _checks(report, name)
        assert checks["authenticate"]["status"] == "ok" and checks["read"]["status"] == "ok", (name, checks)
        assert all(c["status"] in ("ok", "warning", "skipped") for c in checks.values()), (name, checks)
    assert _checks(report, "sf")["field Syncd_Id__c"]["status"] == "ok"
    assert _checks(report, "zoho")["field Syncd_Id"]["status"] == "ok"
    assert _checks(report, "zoho")["settings scope"]["status"] == "ok"
    assert _checks(report, "dentally")["scopes"]["status"] == "ok"
    assert _checks(report, "saludya")["quota"]["status"] == "ok"
    assert _checks(report, "onlive")["clock"]["status"] == "ok"
    assert _checks(report, "onlive")["rate limit"]["status"] == "ok"
    assert _checks(report, "dentally")["rate limit"]["status"] == "ok"
    assert _checks(report, "sf")["api usage"]["status"] == "ok"
    # webhooks set up but no public_url: Zoho cannot subscribe a watch channel, and says so
    assert _checks(report, "zoho")["webhooks"]["config_key"] == "server.public_url"
    after = {name: await world.write_requests(name) for name in ALL_FIVE}
    assert after == before


@pytest.mark.parametrize(("name", "options", "check", "key", "code"), [
    ("dentally", {"access_token": "rotated"}, "authenticate", "connectors.dentally.access_token", 3),
    ("dentally", {"token_scopes": "patient:read"}, "authenticate", "connectors.dentally.access_token", 3),
    ("saludya", {"api_keys": {"another-key": "*"}}, "authenticate", "connectors.saludya.api_key", 3),
    ("onlive", {"access_keys": {"OLAK7Q2N4X9EXAMPLE": "another-secret"}}, "authenticate",
     "connectors.onlive.secret_access_key", 3),
    ("sf", {"refresh_token": "another-refresh"}, "authenticate", "connectors.sf.refresh_token", 3),
    ("zoho", {"client_secret": "another-secret"}, "authenticate", "connectors.zoho.client_id", 3),
    ("zoho", {"scopes": ["ZohoCRM.modules.appointments.ALL", "ZohoCRM.notifications.ALL"]}, "settings scope",
     "connectors.zoho.refresh_token", 1),
])
async def test_each_vendor_names_the_setting_to_fix(
    world: World, name: str, options: dict[str, Any], check: str, key: str, code: int
) -> None:
    await world.control(name, "POST", "/_sandbox/options", options)
    exit_code, report = await doctor(world, "--connector", name)
    failed = _checks(report, name)[check]
    assert exit_code == code and report["ok"] is False, json.dumps(report, indent=1)
    assert failed["status"] == ("unreachable" if code == 3 else "failed")
    assert failed["config_key"] == key and key in failed["fix"], failed
    assert world.sandboxes[name].url in failed["detail"], failed  # the URL of the request that failed
    assert set(report["connectors"]) == {name}


async def test_a_missing_salesforce_syncd_id_field_is_missing_not_unreachable() -> None:
    """The org has no ``Syncd_Id__c`` (or the integration user cannot see it): the probe query fails with
    INVALID_FIELD, which doctor reports as something to create (exit 1), with the field's definition."""
    with aioresponses() as m:
        m.post(TOKEN_URL, payload=TOKEN_ANSWER, repeat=True)

        def answer(url: Any, **_kw: Any) -> CallbackResult:
            limits = {"Sforce-Limit-Info": "api-usage=10/100000"}
            if "Syncd_Id__c" in url.query.get("q", ""):
                error = [{"errorCode": "INVALID_FIELD", "message": "No such column Syncd_Id__c on ServiceAppointment"}]
                return CallbackResult(status=400, headers={**limits, "Content-Type": "application/json"},
                                      body=json.dumps(error))
            return CallbackResult(payload={"totalSize": 0, "done": True, "records": []}, headers=limits)

        m.get(QUERY, callback=answer, repeat=True)
        conn = fast(create_connector(config(), state=MemoryStateStore()))
        try:
            checks = {c.name: c for c in await conn.diagnose("https://syncd.clinic.example")}
        finally:
            await conn.close()
    field = checks["field Syncd_Id__c"]
    assert field.status is CheckStatus.FAILED and "INVALID_FIELD" in field.detail
    assert field.fix is not None and "Text 64, External ID, Unique" in field.fix
    assert checks["authenticate"].status is CheckStatus.OK and checks["read"].status is CheckStatus.OK
    assert checks["api usage"].status is CheckStatus.OK
    assert "https://syncd.clinic.example/webhooks/sf" in (checks["webhooks"].fix or "")

