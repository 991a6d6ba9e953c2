"""The running sandboxes, driven through their control API (``/_sandbox/...``) as another user would."""

from __future__ import annotations

import json
from collections.abc import Mapping
from typing import Any

import aiohttp

from syncd.demo.data import DemoError
from syncd.demo.records import is_appointment, record_id
from syncd.sandboxkit import RunningSandbox
from syncd.sandboxkit.control import edit_of, fault_of


class Sandboxes:
    """The running sandboxes, driven through their control API as another user would."""

    def __init__(self, running: Mapping[str, RunningSandbox]) -> None:
        self.running = dict(running)
        self.session: aiohttp.ClientSession | None = None

    async def __aenter__(self) -> Sandboxes:
        self.session = aiohttp.ClientSession(timeout=aiohttp.ClientTimeout(total=10))
        return self

    async def __aexit__(self, *exc: object) -> None:
        if self.session is not None:
            await self.session.close()

    async def control(self, name: str, method: str, path: str, body: Any = None) -> Any:
        assert self.session is not None
        async with self.session.request(method, self.running[name].url + path, json=body) as answer:
            text = await answer.text()
            if answer.status >= 300:
                raise DemoError(f"{name} sandbox: {method} {path} answered {answer.status}")
            return json.loads(text) if text else None

    async def appointments(self, name: str) -> list[dict[str, Any]]:
        records = (await self.control(name, "GET", "/_sandbox/records"))["records"]
        return [r for r in records if is_appointment(r) and not r.get("_deleted_at")]

    async def record(self, name: str, external_id: str) -> dict[str, Any] | None:
        for rec in (await self.control(name, "GET", "/_sandbox/records"))["records"]:
            if record_id(rec) == external_id:
                return dict(rec)
        return None

    async def edit(self, name: str, external_id: str, changes: Mapping[str, Any]) -> None:
        """Another user edits the record in the vendor's system (bumps its version)."""
        full = await self.record(name, external_id)
        if full is None:
            raise DemoError(f"{name} has no appointment {external_id}")
        await self.control(name, "POST", "/_sandbox/records", {"records": [edit_of(full, changes)]})

    async def fault(self, name: str, method: str, path: str, action: Mapping[str, Any], times: int = 1) -> None:
        await self.control(name, "POST", "/_sandbox/faults", fault_of(method, path, action, times))
