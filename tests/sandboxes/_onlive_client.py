"""A hand-written Onlive wire client for the sandbox tests (docs/vendors/onlive.md §1), not the connector."""

from __future__ import annotations

import hashlib
import hmac
import json
from collections.abc import Sequence
from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import Any
from urllib.parse import quote

import aiohttp
import yarl

from syncd.sandboxkit import RunningSandbox

KEY_ID = "OLAK7Q2N4X9EXAMPLE"
SECRET = "olsk/9fT3c2+a7E1b4D4e0F8a6B5c3EXAMPLE"
EMPTY_SHA256 = "e3b0c44298fc1c149afbf4c8996fb92427ae41e4649b934ca495991b7852b855"
_UNSET: Any = object()


def rfc3986(text: str) -> str:
    return quote(text, safe="-_.~")


def canonical(pairs: Sequence[tuple[str, str]]) -> str:
    return "&".join(f"{k}={v}" for k, v in sorted((rfc3986(k), rfc3986(v)) for k, v in pairs))


def signature(secret: str, method: str, path: str, query: str, date: str, body: bytes) -> str:
    text = f"{method.upper()}\n{path}\n{query}\n{date}\n{hashlib.sha256(body).hexdigest()}"
    return hmac.new(secret.encode(), text.encode(), hashlib.sha256).hexdigest()


def onlive_date(when: datetime) -> str:
    return when.strftime("%Y%m%dT%H%M%SZ")


@dataclass
class Reply:
    status: int
    body: Any
    headers: Any

    @property
    def code(self) -> str | None:
        return self.body.get("code") if isinstance(self.body, dict) else None

    def fields(self) -> list[str]:
        if not isinstance(self.body, dict):
            return []
        return [e["field"] for e in self.body.get("errors") or []]


class Onlive:
    """Signs and sends requests exactly as docs/vendors/onlive.md §1 describes."""

    def __init__(self, http: aiohttp.ClientSession, running: RunningSandbox) -> None:
        self.http = http
        self.running = running
        self.base = running.url

    def now(self) -> datetime:
        return self.running.sandbox.clock.now()

    async def call(
        self,
        method: str,
        path: str,
        *,
        query: Sequence[tuple[str, str]] = (),
        body: Any = _UNSET,
        raw: bytes | None = None,
        content_type: str | None = "application/json",
        date: str | None = None,
        key_id: str = KEY_ID,
        secret: str = SECRET,
        separator: str = "=",
        authorization: str | None = None,
        extra_headers: dict[str, str] | None = None,
        omit: Sequence[str] = (),
    ) -> Reply:
        data = raw if raw is not None else (b"" if body is _UNSET else json.dumps(body).encode())
        qs = canonical(query)
        stamp = date or onlive_date(self.now())
        sig = signature(secret, method, path, qs, stamp, data)
        headers = {
            "x-onlive-site-date": stamp,
            "Authorization": authorization or f"ONLIVESITE Credential{separator}{key_id}, Signature={sig}",
            "Accept": "application/json",
        }
        if content_type is not None and data:
            headers["Content-Type"] = content_type
        headers.update(extra_headers or {})
        for name in omit:
            headers.pop(name, None)
        url = yarl.URL(self.base + path + (f"?{qs}" if qs else ""), encoded=True)
        async with self.http.request(method, url, data=data or None, headers=headers) as resp:
            text = await resp.text()
            try:
                parsed = json.loads(text) if text else None
            except json.JSONDecodeError:
                parsed = text
            return Reply(resp.status, parsed, resp.headers)

    async def control(self, method: str, path: str, body: Any = None) -> Any:
        async with self.http.request(method, self.base + path, json=body) as resp:
            assert resp.status == 200, await resp.text()
            return await resp.json()

    async def set_clock(self, when: datetime | None) -> None:
        await self.control("POST", "/_sandbox/clock", {"now": when.isoformat() if when else None})

    async def advance(self, seconds: float) -> None:
        await self.set_clock(self.now() + timedelta(seconds=seconds))

    async def fault(self, method: str, path: str, action: dict[str, Any], times: int = 1) -> None:
        await self.control("POST", "/_sandbox/faults", {"match": {"method": method, "path": path}, "times": times,
                                                        "action": action})

    async def records(self) -> dict[str, Any]:
        result: dict[str, Any] = await self.control("GET", "/_sandbox/records")
        return result

    async def record(self, rid: str) -> dict[str, Any]:
        for rec in (await self.records())["records"]:
            if rec["id"] == rid:
                return dict(rec)
        raise KeyError(rid)
