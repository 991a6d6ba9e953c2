"""Helpers for the Dentally sandbox tests: a running sandbox, hand-written requests, a webhook receiver."""

from __future__ import annotations

import asyncio
import json
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from dataclasses import dataclass, field
from datetime import datetime
from typing import Any

import aiohttp
from aiohttp import web

from connectors.dentally.sandbox import DentallySandbox
from syncd.sandboxkit import start_sandbox

TOKEN = "sandbox-token"
HEADERS = {"Authorization": f"Bearer {TOKEN}", "User-Agent": "syncd-tests/1.0", "Accept": "application/json"}
APPT = 757579675
SITE = "b7d4e2a0-5c1f-4d8e-9a3b-1f2e3d4c5b6a"
SITE_2 = "0c2f7d8e-1a2b-4c3d-8e9f-a0b1c2d3e4f5"
NOW = datetime.fromisoformat("2026-11-22T10:00:00+00:00")

REFERENCE: dict[str, Any] = {
    "patients": [
        {"id": 1013, "first_name": "Test", "last_name": "One"},
        {"id": 1014, "first_name": "Test", "last_name": "Two"},
    ],
    "practitioners": [
        {"id": 52, "first_name": "Doc", "last_name": "A", "active": True},
        {"id": 53, "first_name": "Doc", "last_name": "B", "active": True},
    ],
    "sites": [{"id": SITE, "name": "Main"}, {"id": SITE_2, "name": "Annex"}],
}


def appointment(**overrides: Any) -> dict[str, Any]:
    """The seed thread's appointment 757579675 in the sandbox's record shape."""
    record: dict[str, Any] = {
        "id": APPT,
        "uuid": "887372ca-aca1-418c-a952-82d152e5cf3a",
        "start_time": "2026-12-01T09:00:00.000Z",
        "finish_time": "2026-12-01T09:30:00.000Z",
        "patient_id": 1013,
        "practitioner_id": 52,
        "site_id": SITE,
        "reason": "Exam",
        "state": "Pending",
        "notes": "",
        "metadata": {"syncd_id": "apt_01JD5K8Q2M"},
    }
    if overrides.get("state") == "Cancelled":
        record["cancellation_reason_id"] = 2
    record.update(overrides)
    return record


@dataclass
class Env:
    url: str
    sandbox: DentallySandbox


@asynccontextmanager
async def running(**options: Any) -> AsyncIterator[tuple[Env, aiohttp.ClientSession]]:
    """A sandbox on a free port, its clock at ``NOW``, reference data seeded; stopped on exit."""
    started = await start_sandbox("dentally", port=0, **options)
    assert isinstance(started.sandbox, DentallySandbox)
    started.sandbox.clock.set(NOW)
    client = aiohttp.ClientSession()
    try:
        resp = await client.post(started.url + "/_sandbox/records", json=REFERENCE)
        assert resp.status == 200, await resp.text()
        yield Env(started.url, started.sandbox), client
    finally:
        await client.close()
        await started.stop()


async def call(
    client: aiohttp.ClientSession,
    base: str,
    method: str,
    path: str,
    *,
    body: Any = None,
    params: dict[str, str] | None = None,
    headers: dict[str, str] | None = None,
    skip_user_agent: bool = False,
) -> tuple[int, Any, dict[str, str]]:
    """One hand-written request; returns (status, parsed JSON or None, headers)."""
    hdrs = dict(HEADERS if headers is None else headers)
    if body is not None:
        hdrs["Content-Type"] = "application/json"
    kwargs: dict[str, Any] = {"headers": hdrs, "params": params}
    if body is not None:
        kwargs["data"] = json.dumps(body)
    if skip_user_agent:
        kwargs["skip_auto_headers"] = ("User-Agent",)
    async with client.request(method, base + path, **kwargs) as resp:
        raw = await resp.read()
        parsed = json.loads(raw) if raw else None
        return resp.status, parsed, dict(resp.headers)


async def seed(client: aiohttp.ClientSession, base: str, *records: dict[str, Any], **extra: Any) -> None:
    resp = await client.post(base + "/_sandbox/records", json={"records": list(records), **extra})
    assert resp.status == 200, await resp.text()


async def add_fault(
    client: aiohttp.ClientSession, base: str, method: str, path: str, action: dict[str, Any], times: int = 1
) -> None:
    body = {"match": {"method": method, "path": path}, "times": times, "action": action}
    resp = await client.post(base + "/_sandbox/faults", json=body)
    assert resp.status == 200, await resp.text()


@dataclass
class Receiver:
    """A tiny webhook receiver: answers the next ``statuses`` in turn (then 200) and keeps every post."""

    statuses: list[int] = field(default_factory=list)
    posts: list[tuple[dict[str, str], bytes]] = field(default_factory=list)
    url: str = ""
    runner: web.AppRunner | None = None
    got: asyncio.Event = field(default_factory=asyncio.Event)

    async def handle(self, request: web.Request) -> web.Response:
        self.posts.append((dict(request.headers), await request.read()))
        self.got.set()
        status = self.statuses.pop(0) if self.statuses else 200
        return web.Response(status=status)

    async def start(self) -> None:
        app = web.Application()
        app.router.add_post("/hook", self.handle)
        self.runner = web.AppRunner(app, access_log=None)
        await self.runner.setup()
        site = web.TCPSite(self.runner, "127.0.0.1", 0)
        await site.start()
        server = site._server
        assert server is not None
        port = server.sockets[0].getsockname()[1]  # type: ignore[attr-defined]
        self.url = f"http://127.0.0.1:{port}/hook"

    async def stop(self) -> None:
        if self.runner is not None:
            await self.runner.cleanup()

    def events(self) -> list[dict[str, Any]]:
        return [json.loads(body) for _, body in self.posts]
