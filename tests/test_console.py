"""The operator console over HTTP: off without a token, its login and session security, CSRF, the
response headers, Retry/Discard/Resolve through the same functions the CLI uses (and their audit
entries), and pages free of patient data.

Each test serves the real app (``syncd.server.start_server``, console included) on 127.0.0.1 with the
real connectors of a world of real sandboxes and a real ledger (SQLite and PostgreSQL where the
ledger is involved).
"""

from __future__ import annotations

import asyncio
import json
import re
from collections.abc import AsyncIterator
from dataclasses import dataclass
from http.cookies import SimpleCookie
from pathlib import Path
from typing import Any

import pytest

from syncd.config import load_config
from syncd.console.security import CONTENT_SECURITY_POLICY, SECURITY_HEADERS
from syncd.ledger.models import AuditEntry
from syncd.lineage import explain
from syncd.runtime import Runtime, open_runtime
from syncd.server import RunningServer, ServerState, start_server
from tests.console_support import (
    TOKEN,
    ConsoleClient,
    add_console_token,
    assert_no_phi,
    forbidden_texts,
    missing_patient_row,
    open_a_conflict,
)
from tests.daemon_support import cli
from tests.scenarios.harness import World, make_world

MEMBERS = {"zoho": "zoho_crm", "sf": "salesforce_health"}
PAGES = ["/console/", "/console/deadletters", "/console/conflicts", "/console/appointments"]
NOTE = "Ring the bell at the side door"


@dataclass
class Env:
    world: World
    runtime: Runtime
    server: RunningServer
    state: ServerState

    @property
    def url(self) -> str:
        return self.server.url


async def _serve(world: World) -> AsyncIterator[Env]:
    async with open_runtime(world.config) as rt:
        state = ServerState(scheduler_running=True)
        server = await start_server(world.config, rt.ledger, rt.connectors, state, port=0)
        try:
            yield Env(world, rt, server, state)
        finally:
            await server.stop()


async def _world(tmp_path: Path, ledger_url: str, *, extra: str = "") -> World:
    """Zoho holds 6 appointments; Salesforce lacks the crosswalk row of the first one's patient, so a
    first resync dead-letters what needs it and creates the rest."""
    world = await make_world(tmp_path, ledger_url, MEMBERS, n_appointments=6)
    await world.seed("zoho")
    await world.seed("sf", appointments=False)
    kind, key, _ = missing_patient_row(world, "sf")
    await world.import_crosswalk(skip=[("sf", kind, key)])
    first = await world.resync_within(30)
    assert first.exit_code == 1 and first.document["dead_letters"] >= 1, first.document
    add_console_token(world, extra=extra)
    return world


@pytest.fixture
async def env(tmp_path: Path, ledger_url: str) -> AsyncIterator[Env]:
    world = await _world(tmp_path, ledger_url)
    try:
        async for served in _serve(world):
            yield served
    finally:
        await world.stop()


@pytest.fixture
async def sqlite_env(tmp_path: Path) -> AsyncIterator[Env]:
    """The same on SQLite only, for what does not touch the ledger (login, sessions, headers)."""
    world = await _world(tmp_path, f"sqlite+aiosqlite:///{tmp_path / 'ledger.db'}")
    try:
        async for served in _serve(world):
            yield served
    finally:
        await world.stop()


def _cookie_attributes(headers: object, name: str) -> dict[str, str]:
    for raw in headers.getall("Set-Cookie", []):  # type: ignore[attr-defined]
        cookie = SimpleCookie()
        cookie.load(raw)
        if name in cookie:
            morsel = cookie[name]
            flags = {k.lower(): str(v) for k, v in morsel.items() if v}
            flags["value"] = morsel.value
            lowered = raw.lower()
            flags["httponly"] = str("httponly" in lowered)
            flags["secure"] = str("; secure" in lowered)
            return flags
    raise AssertionError(f"no Set-Cookie for {name}")


def _assert_hardened(headers: object) -> None:
    for key, value in SECURITY_HEADERS.items():
        assert headers.get(key) == value, key  # type: ignore[attr-defined]


async def _lineage(env: Env, canonical_id: str, kind: str) -> list[dict[str, Any]]:
    """The appointment's lineage entries of ``kind``, newest first, as `syncd explain` shows them."""
    document = await explain(env.world.config, env.runtime.ledger, canonical_id)
    assert document is not None
    return [h for h in document["history"] if h["kind"] == kind]


async def _audit(env: Env, canonical_id: str) -> list[AuditEntry]:
    async with env.runtime.ledger.transaction(readonly=True) as tx:
        return list((await tx.audit_for([canonical_id])).get(canonical_id, []))


# -- off unless a token is set ------------------------------------------------------------------------


async def test_console_is_off_without_a_token(tmp_path: Path) -> None:
    world = await make_world(tmp_path, f"sqlite+aiosqlite:///{tmp_path / 'ledger.db'}", MEMBERS, n_appointments=1)
    try:
        async for env in _serve(world):
            async with ConsoleClient(env.url) as client:
                for path in ["/console", "/console/", "/console/login", "/console/deadletters",
                             "/console/static/console.css", "/console/appointments?ref=A-1"]:
                    assert (await client.get(path))[0] == 404, path
                assert (await client.post("/console/login", {"token": TOKEN, "csrf": "x"}))[0] == 404
                assert (await client.post("/console/deadletters/1/retry", {"csrf": "x"}))[0] == 404
                status, body, _ = await client.get("/openapi.json")
                assert status == 200 and '"/console/"' in body
    finally:
        await world.stop()


async def test_a_short_console_token_is_a_config_error(tmp_path: Path) -> None:
    path = tmp_path / "config.toml"
    path.write_text('[server]\nconsole_token = "short"\n[connectors.sf]\ntype = "saludya"\n'
                    'base_url = "http://127.0.0.1:9"\napi_key = "k"\ntimezone = "UTC"\n', encoding="utf-8")
    code, _, err = await cli(path, "check-config")
    assert code == 2 and "server.console_token: must be at least 16 characters" in err
    assert "short" not in err  # a secret is never printed


# -- login, sessions, headers -----------------------------------------------------------------------


async def test_no_session_gets_the_login_page_which_is_hardened(sqlite_env: Env) -> None:
    async with ConsoleClient(sqlite_env.url) as client:
        for path in PAGES:
            status, _, headers = await client.get(path)
            assert status == 303 and headers["Location"] == "/console/login", path
            _assert_hardened(headers)
        status, html, headers = await client.get("/console/login")
        assert status == 200 and 'name="token"' in html and 'name="csrf"' in html
        _assert_hardened(headers)
        assert "script-src 'self'" in CONTENT_SECURITY_POLICY and "unsafe-inline" not in CONTENT_SECURITY_POLICY
        login_cookie = _cookie_attributes(headers, "syncd_console_login")
        assert login_cookie["httponly"] == "True" and login_cookie["samesite"] == "Strict"
        # nothing inline that the policy would have to allow
        assert not re.search(r"<script(?![^>]*\bsrc=)", html) and " style=" not in html and "<style" not in html
        for asset, kind in (("console.css", "text/css"), ("console.js", "text/javascript")):
            status, _, headers = await client.get(f"/console/static/{asset}")
            assert status == 200 and headers["Content-Type"].startswith(kind)
            _assert_hardened(headers)
        assert (await client.get("/console/static/other.js"))[0] == 404


async def test_wrong_token_is_refused_and_repeated_failures_are_slowed(sqlite_env: Env) -> None:
    async with ConsoleClient(sqlite_env.url) as client:
        for attempt in range(1, 4):
            status, html, _ = await client.login("not-the-token")
            assert status == 401 and "Wrong token" in html, attempt
            assert client.cookie("syncd_console") is None
        assert "Wait 1 s" in html  # the third failure from this address imposes the first wait
        # during the wait even the right token is not looked at
        status, html, headers = await client.login(TOKEN)
        assert status == 429 and int(headers["Retry-After"]) >= 1 and "Too many wrong tokens" in html
        assert client.cookie("syncd_console") is None
        await asyncio.sleep(1.2)
        status, _, headers = await client.login(TOKEN)
        assert status == 303 and headers["Location"] == "/console/"
    async with ConsoleClient(sqlite_env.url) as fresh:
        # a success forgets this address's failures: the next wrong token imposes no wait yet
        status, html, _ = await fresh.login("not-the-token")
        assert status == 401 and "Wait" not in html


async def test_login_sets_a_strict_session_cookie_and_logout_ends_it(sqlite_env: Env) -> None:
    async with ConsoleClient(sqlite_env.url) as client:
        status, _, headers = await client.login()
        assert status == 303
        session = _cookie_attributes(headers, "syncd_console")
        assert session["httponly"] == "True" and session["samesite"] == "Strict"
        assert session["path"] == "/console/" and session["secure"] == "False"  # plain HTTP here
        assert 0 < int(session["max-age"]) <= 3600
        assert TOKEN not in session["value"]
        for path in PAGES:
            status, html, headers = await client.get(path)
            assert status == 200, path
            _assert_hardened(headers)
            assert 'name="csrf"' in html  # the logout form at least
        cookie = session["value"]
        status, _, headers = await client.post("/console/logout")
        assert status == 303 and headers["Location"] == "/console/login"
        assert client.cookie("syncd_console") in (None, "")
        # the old cookie no longer opens a page
        client.session.cookie_jar.update_cookies({"syncd_console": cookie})
        assert (await client.get("/console/"))[0] == 303
        # nor does a forged one
        client.session.cookie_jar.update_cookies({"syncd_console": cookie[:-4] + "AAAA"})
        assert (await client.get("/console/"))[0] == 303


async def test_the_cookie_is_secure_when_the_public_url_is_https(tmp_path: Path) -> None:
    world = await _world(tmp_path, f"sqlite+aiosqlite:///{tmp_path / 'ledger.db'}",
                         extra='public_url = "https://syncd.example.org"')
    try:
        async for env in _serve(world):
            async with ConsoleClient(env.url) as client:
                _, _, headers = await client.get("/console/login")
                assert _cookie_attributes(headers, "syncd_console_login")["secure"] == "True"
                # the client does not send a Secure cookie back over HTTP: give the form's nonce by hand
                nonce = _cookie_attributes(headers, "syncd_console_login")["value"]
                client.session.cookie_jar.update_cookies({"syncd_console_login": nonce})
                status, _, headers = await client.post("/console/login", {"token": TOKEN})
                assert status == 303 and _cookie_attributes(headers, "syncd_console")["secure"] == "True"
    finally:
        await world.stop()


async def test_login_without_its_csrf_token_is_403(sqlite_env: Env) -> None:
    async with ConsoleClient(sqlite_env.url) as client:
        await client.get("/console/login")
        status, html, _ = await client.post("/console/login", {"token": TOKEN}, csrf=False)
        assert status == 403 and "expired or came from elsewhere" in html and client.cookie("syncd_console") is None
        status, _, _ = await client.post("/console/login", {"token": TOKEN, "csrf": "forged"}, csrf=False)
        assert status == 403 and client.cookie("syncd_console") is None


async def test_every_post_without_its_csrf_token_is_403_and_changes_nothing(env: Env) -> None:
    letters = await env.world.dead_letters()
    assert letters
    letter = letters[0].id
    async with ConsoleClient(env.url) as client, ConsoleClient(env.url) as other:
        await client.login()
        await client.get("/console/deadletters")
        await other.login()
        await other.get("/console/deadletters")
        assert other.csrf != client.csrf  # per session
        routes = [f"/console/deadletters/{letter}/retry", f"/console/deadletters/{letter}/discard",
                  "/console/conflicts/1/resolve", "/console/logout"]
        for path in routes:
            for form in ({}, {"csrf": ""}, {"csrf": "forged"}, {"csrf": other.csrf or ""}):
                status, html, headers = await client.post(path, {"take": "zoho", **form}, csrf=False)
                assert status == 403 and "CSRF" in html, (path, form)
                _assert_hardened(headers)
        # no session at all
        async with ConsoleClient(env.url) as anonymous:
            assert (await anonymous.post(f"/console/deadletters/{letter}/discard", {"csrf": "x"}))[0] == 403
        assert [dl.id for dl in await env.world.dead_letters()] == [dl.id for dl in letters]
        assert (await client.get("/console/"))[0] == 200  # still logged in: logout was refused too


async def test_a_post_that_is_not_a_form_is_refused_not_a_server_error(sqlite_env: Env) -> None:
    letter = (await sqlite_env.world.dead_letters())[0].id
    async with ConsoleClient(sqlite_env.url) as client:
        await client.login()
        await client.get("/console/deadletters")
        for path in ("/console/login", f"/console/deadletters/{letter}/discard", "/console/logout"):
            for content_type in ("multipart/form-data", "text/plain", "application/json"):
                async with client.session.post(client.base_url + path, data=f"csrf={client.csrf}".encode(),
                                               headers={"Content-Type": content_type}, allow_redirects=False) as r:
                    assert r.status == 415, (path, content_type, r.status)
        async with client.session.request("TRACE", client.base_url + "/console", allow_redirects=False) as r:
            assert r.status == 405 and "GET" in r.headers["Allow"]
        assert (await client.get("/console"))[2]["Location"] == "/console/"
    assert letter in {dl.id for dl in await sqlite_env.world.dead_letters()}


# -- the three actions ------------------------------------------------------------------------------


async def test_retry_from_the_console_completes_the_dead_letter_and_is_audited(env: Env, tmp_path: Path) -> None:
    world = env.world
    kind, key, external = missing_patient_row(world, "sf")
    letters = await world.dead_letters("sf")
    letter = letters[0]
    assert letter.canonical_id is not None and key in letter.reason
    async with ConsoleClient(env.url) as client:
        await client.login()
        status, html, _ = await client.get("/console/deadletters?connector=sf&kind=missing_reference")
        assert status == 200 and f'data-dead-letter="{letter.id}"' in html and letter.reason in html
        assert (await client.get("/console/deadletters?connector=nope"))[0] == 400
        # before the fix: Retry fails again and the letter stays
        answer = await client.post(f"/console/deadletters/{letter.id}/retry", {"f_connector": "sf"})
        assert answer[0] == 303 and answer[2]["Location"].startswith("/console/deadletters?connector=sf")
        status, html, _ = await client.follow(answer)
        assert "failed again" in html and f'data-dead-letter="{letter.id}"' in html
        # import the missing row, as an operator would, and Retry every letter from the page
        csv = tmp_path / "fix.csv"
        csv.write_text(f"kind,key,connector,external_id\n{kind},{key},sf,{external}\n", encoding="utf-8")
        assert (await cli(world.config_path, "crosswalk", "import", str(csv)))[0] == 0
        for dl in letters:
            answer = await client.post(f"/console/deadletters/{dl.id}/retry")
            status, html, _ = await client.follow(answer)
            assert f"dead letter {dl.id}: done" in html and f'data-dead-letter="{dl.id}"' not in html
        session_label = re.search(r"session ([0-9a-f]{12})", html)
    assert session_label is not None
    assert await world.dead_letters("sf") == []
    created = {r.get("Syncd_Id__c") for r in await world.records("sf")}
    assert {dl.canonical_id for dl in letters} <= created  # synced in the vendor sandbox
    entries = [e for e in await _audit(env, letter.canonical_id) if e.action == "retry"]
    assert [e.detail for e in entries] == [
        f"from the console (session {session_label.group(1)}): dead letter {letter.id} (missing_reference) "
        "retried: failed again",
        f"from the console (session {session_label.group(1)}): dead letter {letter.id} (missing_reference) "
        "retried: done"]
    assert all(TOKEN not in (e.detail or "") for e in entries)
    retries = await _lineage(env, letter.canonical_id, "retry")
    assert [(h["outcome"], h["connector"]) for h in retries] == [("done", "sf"), ("failed again", "sf")]
    assert all(f"from the console (session {session_label.group(1)})" in h["detail"] for h in retries)


async def test_discard_from_the_console_and_from_the_cli_share_one_path(env: Env) -> None:
    letters = await env.world.dead_letters()
    assert letters
    first = letters[0]
    async with ConsoleClient(env.url) as client:
        await client.login()
        await client.get("/console/deadletters")
        status, html, _ = await client.follow(await client.post(f"/console/deadletters/{first.id}/discard"))
        assert status == 200 and f"dead letter {first.id} discarded" in html
        assert f'data-dead-letter="{first.id}"' not in html
        # a second discard of the same letter says so
        status, html, _ = await client.follow(await client.post(f"/console/deadletters/{first.id}/discard"))
        assert "unknown or already resolved" in html
    assert first.id not in {dl.id for dl in await env.world.dead_letters()}
    [entry] = [e for e in await _audit(env, first.canonical_id or "") if e.action == "discard"]
    assert entry.connector == first.connector and (entry.detail or "").startswith("from the console (session ")
    [discarded] = await _lineage(env, first.canonical_id or "", "discard")
    assert discarded["connector"] == first.connector and "discarded from the console (session " in discarded["detail"]
    # the CLI's discard: the same function, the same outcome and exit codes
    code, out, _ = await cli(env.world.config_path, "deadletters", "discard", str(first.id))
    assert code == 1 and "discarded 0 of 1" in out
    rest = [dl.id for dl in await env.world.dead_letters()]
    if rest:
        code, out, _ = await cli(env.world.config_path, "deadletters", "discard", *map(str, rest))
        assert code == 0 and f"discarded {len(rest)} of {len(rest)}" in out
    assert await env.world.dead_letters() == []


async def test_resolve_from_the_console_takes_one_version_and_is_audited(env: Env) -> None:
    world = env.world
    cid = await open_a_conflict(world, note=NOTE)
    [conflict] = [c for c in await world.conflicts() if c.canonical_id == cid]
    sf_id, zoho_id = await world.link(cid, "sf"), await world.link(cid, "zoho")
    async with ConsoleClient(env.url) as client:
        await client.login()
        status, html, _ = await client.get("/console/conflicts")
        assert status == 200 and f'data-conflict="{conflict.id}"' in html
        assert NOTE not in html and "len=" in html  # free text only as length and fingerprint
        assert f"len={len(NOTE)} " in html  # Salesforce's side: the new comment, as length + digest
        assert 'name="take" value="zoho"' in html and 'name="take" value="sf"' in html
        status, _, _ = await client.post(f"/console/conflicts/{conflict.id}/resolve", {"take": "nope"})
        assert status == 400
        answer = await client.post(f"/console/conflicts/{conflict.id}/resolve", {"take": "zoho"})
        status, html, _ = await client.follow(answer)
        assert f"conflict {conflict.id} resolved: took zoho" in html and f'data-conflict="{conflict.id}"' not in html
    assert conflict.id not in {c.id for c in await world.conflicts()}
    zoho_notes = (await world.record("zoho", zoho_id)).get("Additional_Information")
    assert (await world.record("sf", sf_id)).get("Comments") == zoho_notes  # the CRM's version was written
    [entry] = [e for e in await _audit(env, cid) if e.action == "resolve"]
    assert entry.connector == "zoho" and f"conflict {conflict.id} on notes: took zoho: done" in (entry.detail or "")
    [resolved] = await _lineage(env, cid, "resolve")
    assert resolved["outcome"] == "done" and "took zoho's version from the console (session " in resolved["detail"]
    document = await explain(world.config, env.runtime.ledger, cid)
    assert document is not None and document["fields"]["notes"]["rule"] == "resolved"
    assert document["fields"]["notes"]["source"] == "zoho"


async def test_overview_shows_each_connector_with_the_daemons_runtime_state(sqlite_env: Env) -> None:
    async with sqlite_env.runtime.ledger.transaction() as tx:
        await tx.state_set("zoho", {
            "status.rate_limit": json.dumps({"blocked_for_s": 3.5, "last_signal": None, "max_requests_per_second": 2}),
            "status.subscription": json.dumps({"subscription": "active", "channel_id": "1000000068001",
                                               "expires": "2026-12-09T10:00:00Z", "renewed": False})})
        await tx.state_set("sf", {"status.subscription": json.dumps({"subscription": "not needed",
                                                                     "reason": "webhooks only"})})
    async with ConsoleClient(sqlite_env.url) as client:
        await client.login()
        status, html, _ = await client.get("/console/")
        assert status == 200
    rows = dict(re.findall(r'<tr data-connector="(\w+)">(.*?)</tr>', html, re.S))
    assert set(rows) == set(MEMBERS)
    assert "waiting 3.5 s" in rows["zoho"] and "subscription active" in rows["zoho"]
    assert "until 2026-12-09T10:00:00Z" in rows["zoho"] and "rate limited" in rows["zoho"]
    assert "state-amber" in rows["zoho"] and "state-amber" in rows["sf"]  # sf: its dead letters
    assert "subscription not needed" in rows["sf"] and "(webhooks only)" in rows["sf"]
    assert 'data-group="g"' in html and "<svg" in html and 'data-connector="sf"' in html
    assert 'data-refresh="15"' in html


async def test_resolve_while_the_chosen_system_cannot_be_read_leaves_the_conflict_open(env: Env) -> None:
    world = env.world
    cid = await open_a_conflict(world, note=NOTE)
    [conflict] = [c for c in await world.conflicts() if c.canonical_id == cid]
    await world.fault("sf", "GET", "/services/data/*/composite/sobjects/ServiceAppointment",
                      {"type": "status", "status": 401, "body": [{"errorCode": "INVALID_SESSION_ID",
                                                                  "message": "Session expired or invalid"}]},
                      times=20)
    async with ConsoleClient(env.url) as client:
        await client.login()
        await client.get("/console/conflicts")
        status, html, _ = await client.follow(
            await client.post(f"/console/conflicts/{conflict.id}/resolve", {"take": "sf"}))
        assert status == 200 and f"conflict {conflict.id} stays open: sf could not be read" in html
        assert f'data-conflict="{conflict.id}"' in html
    assert conflict.id in {c.id for c in await world.conflicts()}
    [entry] = [e for e in await _audit(env, cid) if e.action == "resolve"]
    assert "took sf: conflict" in (entry.detail or "") and "stays open" in (entry.detail or "")
    [refused] = await _lineage(env, cid, "resolve")
    assert refused["outcome"] == "refused" and "from the console (session " in refused["detail"]


# -- the appointment page and patient data -------------------------------------------------------------


async def test_appointment_page_by_id_and_by_external_id_and_bad_refs(env: Env) -> None:
    world = env.world
    cid = world.dataset.appointments[1].key
    zoho_id = await world.link(cid, "zoho")
    async with ConsoleClient(env.url) as client:
        await client.login()
        for ref in (cid, f"zoho:{zoho_id}"):
            status, html, _ = await client.get(f"/console/appointments?ref={ref}")
            assert status == 200 and f'id="canonical-id"><code>{cid}</code>' in html
            assert f'data-link="zoho:{zoho_id}"' in html and 'data-action="seen-new"' in html
            # the lineage: who set each field and by which rule, and the create carried to Salesforce
            assert '<tr data-kind="write" data-action="create">' in html
            status_row = html.split('<tr data-field="status">', 1)[1].split("</tr>", 1)[0]
            assert "<td>zoho</td>" in status_row and "<code>created</code>" in status_row
        assert (await client.get("/console/appointments?ref=zoho:0000"))[0] == 404
        assert (await client.get("/console/appointments?ref=A-999999"))[0] == 404
        assert (await client.get("/console/appointments?ref=nope:1"))[0] == 400
        assert (await client.get("/console/appointments?ref=not%20an%20id"))[0] == 400
        assert (await client.get("/console/appointments"))[0] == 200  # the form alone


async def test_no_page_shows_patient_names_contacts_or_notes(env: Env) -> None:
    world = env.world
    await open_a_conflict(world, note=NOTE)
    forbidden = forbidden_texts(world, [NOTE])
    cids = sorted({a.key for a in world.dataset.appointments} | {lk.canonical_id for lk in
                                                                  await _all_links(env)})
    async with ConsoleClient(env.url) as client:
        status, html, _ = await client.get("/console/login")
        assert_no_phi(html, forbidden, "the login page")
        await client.login()
        for path in [*PAGES, "/console/deadletters?connector=sf", *(f"/console/appointments?ref={c}" for c in cids)]:
            status, html, _ = await client.get(path)
            assert status == 200, path
            assert_no_phi(html, forbidden, path)


async def _all_links(env: Env) -> list:
    async with env.runtime.ledger.transaction(readonly=True) as tx:
        return await tx.all_links(include_retired=True)


async def test_actions_are_refused_while_the_daemon_drains(sqlite_env: Env) -> None:
    letters = await sqlite_env.world.dead_letters()
    async with ConsoleClient(sqlite_env.url) as client:
        await client.login()
        await client.get("/console/deadletters")
        sqlite_env.state.draining = True
        status, html, _ = await client.post(f"/console/deadletters/{letters[0].id}/discard")
        assert status == 503 and "shutting down" in html
    assert len(await sqlite_env.world.dead_letters()) == len(letters)


def test_config_example_documents_the_console_token() -> None:
    text = (Path(__file__).resolve().parent.parent / "config.toml").read_text(encoding="utf-8")
    assert "console_token" in text and "docs/console.md" in text
    load_config(str(Path(__file__).resolve().parent.parent / "config.toml"))
