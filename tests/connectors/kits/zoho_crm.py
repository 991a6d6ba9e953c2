"""Contract kit for Zoho CRM (``Appointments__s``), seeded through the sandbox's ``/_sandbox/*`` routes."""

from __future__ import annotations

import itertools
from datetime import UTC, datetime, timedelta
from typing import Any

from connectors.zoho_crm.sandbox import seed_body
from syncd.config import ConnectorConfig
from syncd.connector import VendorRecord, WriteKind
from syncd.model import Appointment, Status
from syncd.sandboxkit import RunningSandbox
from syncd.sandboxkit.seedgen import generate
from syncd.secret import Secret
from tests.connectors.kit import KitDefaults, RuleCase, control

PATIENT = "Contacts:5545974000000413001"
PRACTITIONER = "5545974000000394001"
SERVICE = "5545974000000520101"  # the first seeded service (generate(): "Check-up", 30 minutes)
OTHER_SERVICE = "5545974000000520102"
UNKNOWN_SERVICE = "5545974000000599999"
WEBHOOK_SECRET = "sandbox-webhook-secret"

_ids = itertools.count(1)



def _future_slot(days: int = 3, hour: int = 10) -> datetime:
    base = datetime.now(UTC).replace(hour=hour, minute=0, second=0, microsecond=0)
    return base + timedelta(days=days)


class ZohoCrmKit(KitDefaults):
    vendor = "zoho_crm"
    three_pages = 2 * 200 + 1
    create_route = ("POST", "/crm/v7/Appointments__s")
    read_route = ("GET", "/crm/v7/Appointments__s")
    has_refresh = True
    token_route: str | None = "/oauth/v2/token"

    def sandbox_options(self) -> dict[str, Any]:
        return {}

    def connector_config(self, base_url: str) -> ConnectorConfig:
        return ConnectorConfig(
            name="zoho",
            type="zoho_crm",
            base_url=base_url,
            poll_interval=120.0,
            timezone="UTC",
            webhook_secret=Secret(WEBHOOK_SECRET),
            max_requests_per_second=200.0,
            auth={
                "accounts_url": Secret(base_url),
                "client_id": Secret("sandbox-client"),
                "client_secret": Secret("sandbox-secret"),
                "refresh_token": Secret("sandbox-refresh"),
            },
        )

    async def seed(self, sb: RunningSandbox, n: int) -> list[str]:
        body, _rows = seed_body(generate(n, seed=7))
        ids: list[str] = []
        for record in body["records"]:
            # unique ids and references per call, so that repeated seeding adds records
            serial = next(_ids)
            record["id"] = f"5545974000{300_000_000 + serial:09d}"
            record["Syncd_Id"] = f"seed_{serial}"
            ids.append(record["id"])
        await control(sb, "POST", "/_sandbox/records", body)
        return ids

    def new_appointment(self) -> Appointment:
        start = _future_slot()
        return Appointment(
            status=Status.BOOKED,
            start=start,
            end=start + timedelta(minutes=30),
            patient=PATIENT,
            practitioner=PRACTITIONER,
            location="Business Address",
            service_type=SERVICE,
            description="Dental check-up",
            notes="first visit",
        )



    async def vendor_edit(self, sb: RunningSandbox, external_id: str) -> None:
        await control(sb, "POST", "/_sandbox/records",
                      {"records": [{"id": external_id, "Additional_Information": f"edited {next(_ids)}"}]})


    def rule_cases(self) -> list[RuleCase]:
        def change_service(rec: VendorRecord) -> Appointment:
            assert rec.appointment is not None
            other = SERVICE if rec.appointment.service_type == OTHER_SERVICE else OTHER_SERVICE
            return rec.appointment.with_changes(service_type=other)

        def unknown_service(rec: VendorRecord) -> Appointment:
            return self.new_appointment().with_changes(service_type=UNKNOWN_SERVICE)

        return [
            # E8 (seed): Service_Name is never updatable
            RuleCase("service_not_updatable", WriteKind.UPDATE, change_service, "INVALID_DATA"),
            # E4 (seed), Completed before Appointment_End_Time: deferred, not refused (test_zoho_crm_connector)
            # part 4 create: Service_Name must be a known service
            RuleCase("create_unknown_service", WriteKind.CREATE, unknown_service, "INVALID_DATA"),
        ]

    async def expire_token(self, sb: RunningSandbox) -> None:
        # the sandbox clock passes the token's expires_in (3,600 s); the connector's own timer does not
        later = datetime.now(UTC) + timedelta(seconds=3700)
        await control(sb, "POST", "/_sandbox/clock", {"now": later.strftime("%Y-%m-%dT%H:%M:%SZ")})

    async def revoke(self, sb: RunningSandbox) -> None:
        # only documented controls: the org no longer accepts our refresh token (option), and the
        # access token in hand expires (sandbox clock), so the one refresh gets {"error":"invalid_code"}
        await control(sb, "POST", "/_sandbox/options", {"refresh_token": "revoked-elsewhere"})
        await self.expire_token(sb)


KIT = ZohoCrmKit()
