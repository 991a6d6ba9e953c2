"""Tinybook: a throwaway sixth vendor that exists only for tests/test_registry.py.

It proves the vendor registry is the only list of vendors: this folder holds a whole vendor (its
declaration, a minimal connector, its mapping and a sandbox), and a test that registers :data:`PACKAGE`
with :func:`syncd.registry.register` can configure it, serve its sandbox and sync an appointment
through it without any other file of syncd knowing it exists.

Wire: ``GET /v1/appointments`` (every record, or ``?ref=<canonical id>``), ``GET /v1/appointments/{id}``
(404 = gone), ``POST /v1/appointments``, ``PATCH /v1/appointments/{id}``; ``Authorization: Bearer
<api_token>``; records ``{"id", "version", "status", "start", "end", "ref", "updated_at"}`` with
times in UTC ISO 8601.
"""

from __future__ import annotations

from pathlib import Path

from syncd.vendor import ConfigKey, TypeDefaults, VendorPackage

__all__ = ["PACKAGE", "TOKEN"]

TOKEN = "tinybook-sandbox-token"

PACKAGE = VendorPackage(
    type="tinybook",
    keys=(
        ConfigKey("api_token", sandbox=TOKEN),
        ConfigKey("page_size", secret=False, kind=int, default=50),
    ),
    defaults=TypeDefaults(poll_interval=30.0, max_requests_per_second=50.0, timezone="UTC"),
    connector="tests.tinybook.connector:TinybookConnector",
    mapfuncs="tests.tinybook.mapfuncs",
    mapping=Path(__file__).with_name("tinybook.toml"),
    sandbox="tests.tinybook.sandbox",
    sandbox_port=8799,
    webhooks="none",
    role="clinical",
)
