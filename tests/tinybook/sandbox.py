"""Tinybook's sandbox: a stateful fake of its four routes, on syncd/sandboxkit."""

from __future__ import annotations

import itertools
from typing import Any

from aiohttp import web

from syncd.sandboxkit.base import SandboxBase, json_response
from syncd.sandboxkit.seedgen import SeedDataset
from tests.tinybook import TOKEN

__all__ = ["TinybookSandbox", "create_sandbox", "seed_body"]

FIELDS = ("status", "start", "end", "ref")


class TinybookSandbox(SandboxBase):
    vendor = "tinybook"

    def reset_state(self) -> None:
        self.records: dict[str, dict[str, Any]] = {}
        self._ids = itertools.count(1)

    def add_routes(self, app: web.Application) -> None:
        app.router.add_get("/v1/appointments", self._list)
        app.router.add_get("/v1/appointments/{id}", self._get)
        app.router.add_post("/v1/appointments", self._create)
        app.router.add_patch("/v1/appointments/{id}", self._update)

    def dump(self) -> dict[str, Any]:
        return {"records": list(self.records.values())}

    def seed(self, body: dict[str, Any]) -> None:
        for raw in body.get("records", []):
            self._store(str(raw.get("id") or f"tb{next(self._ids)}"), raw, version=int(raw.get("version", 1)))

    async def mutate(self, record_id: str, changes: dict[str, Any]) -> None:
        record = self.records[record_id]
        self._store(record_id, {**record, **changes}, version=int(record["version"]) + 1)

    def rate_limit_response(self, retry_after: float) -> web.StreamResponse:
        return json_response({"error": "slow down"}, 429, {"Retry-After": str(int(retry_after))})

    def _store(self, record_id: str, raw: dict[str, Any], *, version: int) -> dict[str, Any]:
        record = {"id": record_id, **{k: raw.get(k) for k in FIELDS}, "version": version,
                  "updated_at": self.now().isoformat()}
        self.records[record_id] = record
        return record

    @staticmethod
    def _authorised(request: web.Request) -> bool:
        return request.headers.get("Authorization") == f"Bearer {TOKEN}"

    async def _list(self, request: web.Request) -> web.Response:
        if not self._authorised(request):
            return json_response({"error": "unauthorised"}, 401)
        ref = request.query.get("ref")
        return json_response({"appointments": [r for r in self.records.values() if ref is None or r["ref"] == ref]})

    async def _get(self, request: web.Request) -> web.Response:
        if not self._authorised(request):
            return json_response({"error": "unauthorised"}, 401)
        record = self.records.get(request.match_info["id"])
        return json_response(record) if record is not None else json_response({"error": "not found"}, 404)

    async def _create(self, request: web.Request) -> web.Response:
        if not self._authorised(request):
            return json_response({"error": "unauthorised"}, 401)
        body = await request.json()
        return json_response(self._store(f"tb{next(self._ids)}", body, version=1), 201)

    async def _update(self, request: web.Request) -> web.Response:
        if not self._authorised(request):
            return json_response({"error": "unauthorised"}, 401)
        record = self.records.get(request.match_info["id"])
        if record is None:
            return json_response({"error": "not found"}, 404)
        body = await request.json()
        changes = {k: v for k, v in body.items() if k in FIELDS}
        return json_response(self._store(record["id"], {**record, **changes}, version=int(record["version"]) + 1))


def create_sandbox(**options: Any) -> TinybookSandbox:
    return TinybookSandbox(**options)


def seed_body(dataset: SeedDataset) -> tuple[dict[str, Any], list[tuple[str, str, str]]]:
    """Appointments only (Tinybook keeps no references)."""
    records = [{"id": f"tb-seed-{i}", "status": "booked", "start": a.start.isoformat(), "end": a.end.isoformat()}
               for i, a in enumerate(dataset.appointments, start=1)]
    rows = [("appointment", a.key, str(r["id"])) for a, r in zip(dataset.appointments, records, strict=True)]
    return {"records": records}, rows
