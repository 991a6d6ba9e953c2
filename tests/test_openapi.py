"""``GET /openapi.json`` describes every route ``syncd run`` serves, and schemathesis, run against a live
daemon (real sandboxes, a real ledger, the console on and a logged-in session), finds no 5xx and no
answer that breaks the document."""

from __future__ import annotations

import asyncio
import json
import os
import sys
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import pytest

from syncd.config import load_config
from syncd.ledger.store import Ledger
from syncd.openapi import openapi_document
from syncd.server import ServerState, create_app
from tests.console_support import ConsoleClient, add_console_token, artifacts_dir, missing_patient_row
from tests.daemon_support import DaemonProcess, free_port
from tests.scenarios.harness import World, make_world

MEMBERS = {"zoho": "zoho_crm", "sf": "salesforce_health"}
METHODS = {"GET", "POST", "PUT", "PATCH", "DELETE"}

EXCLUDED_CHECKS = {
    # A webhook is accepted only with the vendor's signature (or token) over the exact body, which no
    # generated request can carry; a console form only with the session's CSRF token, which the
    # document cannot hold. Valid-looking input is rightly refused there (401/403), so "schema-valid
    # data must be accepted" does not apply to this API. Every answer is still checked against the
    # document (status, content type, headers, body schema) and for 5xx.
    "positive_data_acceptance",
}

SESSION_REFUSED = """
# A console page refuses a request without a valid session by sending the browser to the login page
# (303 See Other), which is what browsers expect; for these operations the negative-data check counts
# that answer as the refusal it is (the rest of its list, 4xx, unchanged).
[[operations]]
include-method = "GET"
include-path-regex = "^/console/(deadletters|conflicts|appointments)?$"
checks.negative_data_rejection.expected-statuses = [303, 400, 401, 403, 404, 405, 406, 409, 415, 422, 428, 429]
"""


def _settings(cookie: str, csrf: str, letters: list[int | None], refs: list[str]) -> str:
    """schemathesis.toml: the logged-in session as the document's ``consoleSession`` scheme (schemathesis
    sends it where an operation asks for it, and also tries each such operation without it and with a
    wrong one), and real values that generated requests draw from part of the time, so that requests
    reach the webhook parsers, the static files, existing appointments and dead letters, besides the
    refusals. The three actions always get the session's CSRF token, so that generated requests run
    Retry, Discard and Resolve themselves (their refusal without it is tests/test_console.py's); logout
    never does, so the session lasts the run."""
    def values(items: list[Any]) -> str:
        return "[" + ", ".join(json.dumps(i) for i in items) + "]"

    return f"""
[auth.openapi.consoleSession]
api_key = "{cookie}"

[dictionaries.connectors]
values = {values([*MEMBERS, "nope"])}
[dictionaries.assets]
values = ["console.css", "console.js"]
[dictionaries.refs]
values = {values(refs)}
[dictionaries.ids]
values = {values([*(i for i in letters if i is not None), 1, 2])}

[parameters]
"path.connector" = {{ dictionary = "connectors", probability = 0.8 }}
"path.name" = {{ dictionary = "assets", probability = 0.8 }}
"query.connector" = {{ dictionary = "connectors", probability = 0.5 }}
"query.ref" = {{ dictionary = "refs", probability = 0.6 }}

[[operations]]
include-path-regex = "^/console/(deadletters|conflicts)/"
parameters."path.id" = {{ dictionary = "ids", probability = 0.6 }}
parameters."body.csrf" = {json.dumps(csrf)}
parameters."body.take" = {{ dictionary = "connectors", probability = 0.7 }}
""" + SESSION_REFUSED


def _routes(app: object) -> set[tuple[str, str]]:
    """(method, path) of every route of an aiohttp app and its sub-apps (HEAD left out: aiohttp adds it
    to every GET)."""
    from aiohttp import web

    assert isinstance(app, web.Application)
    out: set[tuple[str, str]] = set()
    for resource in app.router.resources():
        sub = getattr(resource, "_app", None)
        if isinstance(sub, web.Application):
            out |= _routes(sub)  # a mounted sub-app's routes carry its prefix already
            continue
        for route in resource:
            if route.method in METHODS:
                out.add((route.method, resource.canonical))
            elif route.method == "*":
                out.add(("GET", resource.canonical))  # /console: GET redirects, any other method answers 405
    return out


async def test_the_document_names_every_route_the_server_serves(tmp_path: Path) -> None:
    world = await make_world(tmp_path, f"sqlite+aiosqlite:///{tmp_path / 'ledger.db'}", MEMBERS, n_appointments=1)
    try:
        add_console_token(world)
        ledger = await Ledger.open(world.config.ledger.url)
        try:
            app = create_app(world.config, ledger, {}, ServerState())
            served = _routes(app)
        finally:
            await ledger.close()
    finally:
        await world.stop()
    document = openapi_document()
    documented = {(method.upper(), path) for path, item in document["paths"].items() for method in item}
    assert served == documented
    assert document["openapi"].startswith("3.")
    webhook = document["paths"]["/webhooks/{connector}"]["post"]["responses"]
    assert set(webhook) == {"202", "400", "401", "404", "408", "413", "415", "503"}
    assert all(webhook[code]["content"]["application/json"]["schema"] == {"$ref": "#/components/schemas/Error"}
               for code in webhook if code != "202")


@pytest.fixture
async def live(tmp_path: Path) -> AsyncIterator[tuple[World, DaemonProcess]]:
    world = await make_world(tmp_path, f"sqlite+aiosqlite:///{tmp_path / 'ledger.db'}", MEMBERS, n_appointments=6,
                             connector_extra={"zoho": {"poll_interval": 5}, "sf": {"poll_interval": 0}})
    daemon = DaemonProcess(world.config_path, free_port(), tmp_path)
    try:
        await world.seed("zoho")
        await world.seed("sf", appointments=False)
        kind, key, _ = missing_patient_row(world, "sf")
        await world.import_crosswalk(skip=[("sf", kind, key)])
        await world.resync_within(60)  # leaves dead letters, so the console's lists are not empty
        add_console_token(world, port=daemon.port)
        load_config(str(world.config_path))
        daemon.start()
        await daemon.ready(timeout=30)
        yield world, daemon
    finally:
        try:
            await daemon.stop()
        finally:
            await world.stop()


async def test_schemathesis_finds_no_5xx_and_no_answer_outside_the_document(
    live: tuple[World, DaemonProcess], tmp_path: Path
) -> None:
    world, daemon = live
    async with ConsoleClient(daemon.url) as client:
        status, _, _ = await client.login()
        assert status == 303
        cookie = client.cookie("syncd_console")
        await client.get("/console/deadletters")
        csrf = client.csrf
    assert cookie and csrf
    letters = [dl.id for dl in await world.dead_letters()]
    cid = world.dataset.appointments[1].key
    refs = [cid, f"zoho:{await world.link(cid, 'zoho')}", f"sf:{await world.link(cid, 'sf')}", "A-404", "nope:1"]
    report = artifacts_dir(tmp_path) / "schemathesis"
    settings = report.parent / "schemathesis.toml"
    settings.write_text(_settings(cookie, csrf, letters, refs), encoding="utf-8")
    schemathesis = Path(sys.executable).with_name("schemathesis")
    command = [
        str(schemathesis), "--config-file", str(settings), "run", f"{daemon.url}/openapi.json",
        "--checks", "all", "--exclude-checks", ",".join(sorted(EXCLUDED_CHECKS)),
        "--max-examples", os.environ.get("SYNCD_SCHEMATHESIS_EXAMPLES", "25"),
        "--seed", "19", "--workers", "1", "--request-timeout", "30", "--max-redirects", "0",
        "--suppress-health-check", "too_slow",
        "--report", "junit,har", "--report-dir", str(report),
    ]
    proc = await asyncio.create_subprocess_exec(*command, stdout=asyncio.subprocess.PIPE,
                                                stderr=asyncio.subprocess.STDOUT, stdin=asyncio.subprocess.DEVNULL,
                                                env={**os.environ, "NO_COLOR": "1", "SCHEMATHESIS_HOOKS": ""},
                                                cwd=str(report.parent))  # its .schemathesis/ cache goes there
    out, _ = await asyncio.wait_for(proc.communicate(), 600)
    text = out.decode(errors="replace")
    (report.parent / "schemathesis.txt").write_text(text, encoding="utf-8")
    assert proc.returncode == 0, text[-6000:]
    assert "No issues found" in text or "passed" in text, text[-3000:]
    # the daemon is still serving and syncing
    assert (await daemon.get("/readyz"))[0] == 200
    assert "Traceback" not in daemon.log_text()
