"""Tinybook's connector: the least a vendor needs to take part in a sync (see the package docstring)."""

from __future__ import annotations

from collections.abc import AsyncIterator, Mapping, Sequence
from datetime import datetime
from typing import Any

import aiohttp
import yarl

from syncd.config import ConnectorConfig
from syncd.connector import (
    Capabilities,
    ChangePage,
    Check,
    Remedy,
    StateStore,
    VendorRecord,
    WebhookDelivery,
    WriteKind,
    WriteOutcome,
    WriteRequest,
)
from syncd.errors import AuthFailure, MappingError, RateLimited, Rejected, Retriable, VendorError, WebhookError
from syncd.http import HttpClient, Response
from syncd.mapping import VendorMapping
from syncd.model import Appointment

__all__ = ["TinybookConnector"]

PATH = "v1/appointments"


def classify(response: Response) -> VendorError | None:
    if response.status < 300:
        return None
    if response.status == 429:
        return RateLimited("slow down", wait=response.retry_after() or 1.0, status=429)
    if response.status == 401:
        return AuthFailure("token refused", status=401)
    if response.status >= 500:
        return Retriable(f"HTTP {response.status}", status=response.status)
    return Rejected(f"HTTP {response.status}", status=response.status)


def classify_get(response: Response) -> VendorError | None:
    return None if response.status == 404 else classify(response)


class BearerToken:
    def __init__(self, token: str) -> None:
        self.token = token

    async def apply(self, method: str, url: yarl.URL, headers: dict[str, str], body: bytes) -> None:
        headers["Authorization"] = f"Bearer {self.token}"

    async def refresh(self) -> bool:
        return False


class TinybookConnector:
    capabilities = Capabilities(webhooks=False, batch_read_size=1, batch_write_size=1,
                                patient_change=True)

    def __init__(self, config: ConnectorConfig, mapping: VendorMapping, *, state: StateStore | None = None,
                 max_rate_limit_wait: float | None = None, session: aiohttp.ClientSession | None = None) -> None:
        self.name = config.name
        self.mapping = mapping
        self.page_size = int(config.options["page_size"])
        self._http = HttpClient(config.name, base_url=config.base_url, classify=classify,
                                max_requests_per_second=config.max_requests_per_second,
                                auth=BearerToken(config.auth_value("api_token")),
                                max_rate_limit_wait=max_rate_limit_wait, session=session)

    @property
    def http(self) -> HttpClient:
        return self._http

    def _record(self, raw: Mapping[str, Any]) -> VendorRecord:
        external_id, version = str(raw["id"]), str(raw["version"])
        try:
            status = self.mapping.to_canonical(str(raw["status"]))
            appointment = Appointment(status=status, start=datetime.fromisoformat(raw["start"]),
                                      end=datetime.fromisoformat(raw["end"]), native_status=str(raw["status"]))
        except (MappingError, KeyError, TypeError, ValueError) as exc:
            error = exc if isinstance(exc, MappingError) else MappingError(f"tinybook: {exc}")
            return VendorRecord(external_id, version, None, error=error)
        return VendorRecord(external_id, version, appointment, syncd_id=raw.get("ref"),
                            modified_at=datetime.fromisoformat(raw["updated_at"]))

    async def changes(self, cursor: str | None, *, since: datetime | None = None) -> AsyncIterator[ChangePage]:
        response = await self._http.request("list", "GET", PATH)
        records = [self._record(raw) for raw in response.json()["appointments"]]
        for start in range(0, max(len(records), 1), self.page_size):
            yield ChangePage(records[start:start + self.page_size], cursor="seen")

    async def read(self, external_ids: Sequence[str]) -> Mapping[str, VendorRecord]:
        out: dict[str, VendorRecord] = {}
        for external_id in external_ids:
            response = await self._http.request("read", "GET", f"{PATH}/{external_id}", classify=classify_get)
            out[external_id] = (VendorRecord(external_id, None, None, deleted=True) if response.status == 404
                                else self._record(response.json()))
        return out

    def _body(self, request: WriteRequest) -> dict[str, Any]:
        desired = request.desired
        assert desired.start is not None and desired.end is not None
        return {"status": self.mapping.to_native(desired.status), "start": desired.start.isoformat(),
                "end": desired.end.isoformat(), "ref": request.canonical_id}

    async def write(self, requests: Sequence[WriteRequest]) -> list[WriteOutcome]:
        outcomes: list[WriteOutcome] = []
        for request in requests:
            try:
                if request.kind is WriteKind.CREATE:
                    response = await self._http.request("create", "POST", PATH, json=self._body(request))
                else:
                    response = await self._http.request("update", "PATCH", f"{PATH}/{request.external_id}",
                                                        json=self._body(request))
                outcomes.append(WriteOutcome(request, record=self._record(response.json())))
            except (VendorError, MappingError) as exc:
                outcomes.append(WriteOutcome(request, error=exc))
        return outcomes

    async def find_by_reference(self, canonical_id: str, *, exclude: Sequence[str] = (),
                                desired: Appointment | None = None) -> list[VendorRecord]:
        response = await self._http.request("find", "GET", PATH, params={"ref": canonical_id})
        return [self._record(raw) for raw in response.json()["appointments"] if str(raw["id"]) not in exclude]

    def needs_replace(self, current: Appointment, desired: Appointment) -> str | None:
        return None

    def write_refusal(self, current: Appointment, desired: Appointment, *, now: datetime) -> str | None:
        return None

    async def parse_webhook(self, headers: Mapping[str, str], body: bytes, *, now: datetime) -> WebhookDelivery:
        raise WebhookError(404, "webhooks_disabled", "tinybook has no webhooks")

    async def maintain(self, public_url: str | None) -> Mapping[str, Any]:
        return {}

    def remedy(self, error: VendorError) -> Remedy | None:
        return Remedy(config_key=f"connectors.{self.name}.api_token") if isinstance(error, AuthFailure) else None

    async def diagnose(self, public_url: str | None) -> list[Check]:
        return []

    async def close(self) -> None:
        await self._http.close()
