"""Helpers for the Zoho CRM sandbox tests: a hand-written wire client and a fixed record set."""

from __future__ import annotations

import asyncio
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from typing import Any

import aiohttp
from aiohttp import web

from syncd.sandboxkit import RunningSandbox

NOW = datetime(2026, 11, 22, 10, 0, tzinfo=UTC)
MOD = "/crm/v7/Appointments__s"
CONTACT = "5545974000000412001"
ADMIN = "5545974000000393001"
SERVICE = "5545974000000520001"
# fixed seeded records
S = "5545974000002000001"  # Scheduled, tomorrow 10:00 UTC
OV = "5545974000002000002"  # ended 90 minutes ago: Overdue
RUN = "5545974000002000003"  # started 10 minutes ago, ends in 20: Overdue, not ended
X = "5545974000002000004"  # Cancelled
C = "5545974000002000005"  # Completed
R = "5545974000002000006"  # Scheduled, rescheduled once already
UNKNOWN = "5545974000009999999"
TOKEN_FORM = {
    "grant_type": "refresh_token",
    "client_id": "sandbox-client",
    "client_secret": "sandbox-secret",
    "refresh_token": "sandbox-refresh",
}


def iso(dt: datetime) -> str:
    return dt.astimezone(UTC).replace(microsecond=0).isoformat()


def base_records() -> list[dict[str, Any]]:
    def rec(rid: str, start: datetime, **extra: Any) -> dict[str, Any]:
        return {
            "id": rid,
            "Appointment_Name": "Dental check-up",
            "Appointment_For": {"module": "Contacts", "id": CONTACT},
            "Service_Name": {"id": SERVICE},
            "Owner": {"id": ADMIN},
            "Appointment_Start_Time": iso(start),
            "Location": "Business Address",
            "Syncd_Id": f"apt_{rid[-3:]}",
            "Created_Time": iso(NOW - timedelta(days=3)),
            "Modified_Time": iso(NOW - timedelta(days=3)),
            **extra,
        }

    return [
        rec(S, NOW + timedelta(days=1)),
        rec(OV, NOW - timedelta(hours=2)),
        rec(RUN, NOW - timedelta(minutes=10)),
        rec(
            X,
            NOW + timedelta(days=2),
            Status="Cancelled",
            Cancellation_Reason="By Customer",
            Cancellation_Note="Cancelled by patient",
        ),
        rec(C, NOW - timedelta(days=1), Status="Completed"),
        rec(
            R,
            NOW + timedelta(days=3),
            Reschedule_Count=1,
            Rescheduled_From=iso(NOW + timedelta(days=2)),
            Reschedule_Reason="By Team",
        ),
    ]


def new_appointment(**overrides: Any) -> dict[str, Any]:
    body: dict[str, Any] = {
        "Appointment_Name": "Check-up",
        "Appointment_For": {"module": "Contacts", "id": CONTACT},
        "Service_Name": {"id": SERVICE},
        "Owner": {"id": ADMIN},
        "Appointment_Start_Time": "2026-12-01T10:00:00+00:00",
        "Location": "Business Address",
        "Syncd_Id": "apt_new_1",
    }
    for key, value in overrides.items():
        if value is None:
            body.pop(key, None)
        else:
            body[key] = value
    return body


@dataclass
class Zoho:
    """A plain aiohttp client for one running sandbox (the wire protocol written out by hand)."""

    running: RunningSandbox
    http: aiohttp.ClientSession
    token: str = ""

    @property
    def url(self) -> str:
        return self.running.url

    async def fetch_token(self, **form: str) -> dict[str, Any]:
        async with self.http.post(self.url + "/oauth/v2/token", data={**TOKEN_FORM, **form}) as resp:
            assert resp.status == 200
            body: dict[str, Any] = await resp.json()
            return body

    async def login(self) -> None:
        self.token = (await self.fetch_token())["access_token"]

    def auth(self, token: str | None = None) -> dict[str, str]:
        return {"Authorization": f"Zoho-oauthtoken {token or self.token}", "Accept": "application/json"}

    async def call(
        self,
        method: str,
        path: str,
        body: Any = None,
        *,
        headers: dict[str, str] | None = None,
        params: dict[str, str] | None = None,
    ) -> tuple[int, Any, dict[str, str]]:
        hdrs = self.auth() if headers is None else headers
        kwargs: dict[str, Any] = {"headers": hdrs, "params": params}
        if body is not None:
            kwargs["json"] = body
        async with self.http.request(method, self.url + path, **kwargs) as resp:
            raw = await resp.read()
            parsed = None
            if raw:
                try:
                    parsed = await resp.json(content_type=None)
                except ValueError:
                    parsed = raw.decode()
            return resp.status, parsed, dict(resp.headers)

    async def control(self, method: str, path: str, body: Any = None) -> Any:
        async with self.http.request(method, self.url + "/_sandbox/" + path, json=body) as resp:
            assert resp.status == 200, await resp.text()
            return await resp.json()

    async def records(self) -> dict[str, dict[str, Any]]:
        dump = await self.control("GET", "records")
        return {r["id"]: r for r in dump["records"]}

    async def get(self, rid: str) -> dict[str, Any]:
        status, body, _ = await self.call("GET", f"{MOD}/{rid}")
        assert status == 200, (status, body)
        record: dict[str, Any] = body["data"][0]
        return record


@dataclass
class Receiver:
    """A tiny webhook receiver on 127.0.0.1, port 0."""

    received: list[dict[str, Any]] = field(default_factory=list)
    runner: web.AppRunner | None = None
    url: str = ""
    event: asyncio.Event = field(default_factory=asyncio.Event)

    async def start(self) -> None:
        app = web.Application()
        app.router.add_post("/hook", self._hook)
        self.runner = web.AppRunner(app, access_log=None)
        await self.runner.setup()
        site = web.TCPSite(self.runner, "127.0.0.1", 0)
        await site.start()
        port = site._server.sockets[0].getsockname()[1]  # type: ignore[union-attr]
        self.url = f"http://127.0.0.1:{port}/hook"

    async def _hook(self, request: web.Request) -> web.Response:
        self.received.append(await request.json())
        self.event.set()
        return web.Response(status=202)

    async def stop(self) -> None:
        if self.runner is not None:
            await self.runner.cleanup()
