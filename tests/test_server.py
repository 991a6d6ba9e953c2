"""The HTTP server of ``syncd run`` (docs/reference.md §5 and §7): webhook intake, health, metrics.

Runs on a real ledger (SQLite and PostgreSQL, via the ``ledger`` fixture), real connectors built by
``connectors.create_connector`` and a real server on 127.0.0.1 (free port), driven over HTTP.
"""

from __future__ import annotations

import asyncio
import hashlib
import hmac
import json
import os
import time
import uuid
from collections.abc import AsyncIterator, Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, cast

import aiohttp
import pytest
from sqlalchemy.engine import make_url

import connectors as connector_factory
from syncd.config import Config, load_config
from syncd.connector import Capabilities, Connector, WebhookDelivery, WebhookEvent
from syncd.errors import WebhookError
from syncd.inbox import decode_delivery, dedup_key, encode_delivery
from syncd.ledger.store import Ledger, LedgerUnavailable
from syncd.metrics import REGISTRY
from syncd.server import BATCHER_KEY, InboxBatcher, RunningServer, ServerState, start_server

SECRET = "sandbox-webhook-secret"
WRONG_SECRET = "not-the-secret"
CANARY = "CANARY-5f3a9e17"
SF_ID = "08pxx0000004KGGAA2"
SF_ID2 = "08pxx0000004KGHAA2"
ZOHO_CHANNEL = "1000000068001"
MAX_BODY = 262_144  # room for 100000-level nesting (200 kB), still far below "huge"

CONFIG_TOML = """
[ledger]
url = "{ledger_url}"

[server]
host = "127.0.0.1"
port = 0
max_body_bytes = {max_body}

[connectors.sf]
type = "salesforce_health"
base_url = "http://127.0.0.1:9"
token_url = "http://127.0.0.1:9/services/oauth2/token"
client_id = "sandbox-client"
client_secret = "sandbox-secret"
refresh_token = "sandbox-refresh"
api_version = "65.0"
webhook_secret = "{secret}"

[connectors.sfoff]
type = "salesforce_health"
base_url = "http://127.0.0.1:9"
token_url = "http://127.0.0.1:9/services/oauth2/token"
client_id = "sandbox-client"
client_secret = "sandbox-secret"
refresh_token = "sandbox-refresh"
api_version = "65.0"

[connectors.zoho]
type = "zoho_crm"
base_url = "http://127.0.0.1:9"
accounts_url = "http://127.0.0.1:9"
client_id = "sandbox-client"
client_secret = "sandbox-secret"
refresh_token = "sandbox-refresh"
webhook_secret = "{secret}"

[connectors.dent]
type = "dentally"
base_url = "http://127.0.0.1:9"
access_token = "sandbox-token"
user_agent = "syncd-tests"
webhook_secret = "{secret}"

[connectors.boom]
type = "dentally"
base_url = "http://127.0.0.1:9"
access_token = "sandbox-token"
user_agent = "syncd-tests"
webhook_secret = "{secret}"

[connectors.onl]
type = "onlive"
base_url = "http://127.0.0.1:9"
access_key_id = "OLAK7Q2N4X9EXAMPLE"
secret_access_key = "olsk/9fT3c2+a7E1b4D4e0F8a6B5c3EXAMPLE"
webhook_secret = "{secret}"
"""


def signed(body: bytes, *, ts: int | None = None, secret: str = SECRET) -> dict[str, str]:
    """Generic-scheme headers (docs/vendors/README.md "Generic webhook signature")."""
    stamp = str(int(time.time()) if ts is None else ts)
    mac = hmac.new(secret.encode(), stamp.encode() + b"." + body, hashlib.sha256).hexdigest()
    return {"X-Syncd-Timestamp": stamp, "X-Syncd-Signature": f"v1={mac}"}


def sf_body(*ids: str) -> bytes:
    return json.dumps({"ids": list(ids or (SF_ID,)), "note": CANARY}).encode()


def zoho_body(*, token: str = SECRET, channel: str = ZOHO_CHANNEL, ids: tuple[str, ...] = ("5545974000002254155",),
              operation: str = "update", server_time: int | None = None) -> bytes:
    return json.dumps(
        {
            "server_time": server_time if server_time is not None else int(time.time() * 1000),
            "query_params": {},
            "module": "Appointments__s",
            "ids": list(ids),
            "affected_fields": [CANARY],
            "operation": operation,
            "channel_id": int(channel),
            "token": token,
        }
    ).encode()


def dentally_body(event_id: str, event: str = "appointment.updated", record_id: int = 757579675) -> bytes:
    return json.dumps(
        {"id": event_id, "event": event, "created_at": "2026-11-22T10:15:03Z",
         "data": {"id": record_id, "uuid": "887372ca-aca1-418c-a952-82d152e5cf3a", "x": CANARY}}
    ).encode()


class FaultyConnector:
    """A connector whose parser fails the way the test says (bugs, hostile input, ledger loss)."""

    name = "boom"
    capabilities = Capabilities(
        webhooks=True, batch_read_size=1, batch_write_size=1, patient_change=True,
    )

    def __init__(self) -> None:
        self.error: BaseException | None = None
        self.gate: asyncio.Event | None = None
        self.entered = asyncio.Event()

    async def parse_webhook(self, headers: Any, body: bytes, *, now: Any) -> WebhookDelivery:
        self.entered.set()
        if self.gate is not None:
            await self.gate.wait()
        if self.error is not None:
            raise self.error
        return WebhookDelivery(events=[WebhookEvent("x1")], dedup_key=None, signed_timestamp=None)

    async def close(self) -> None:
        return None


@dataclass
class Env:
    url: str
    session: aiohttp.ClientSession
    ledger: Ledger
    ledger_url: str
    state: ServerState
    config: Config
    connectors: dict[str, Connector]
    server: RunningServer
    tmp_path: Path
    extra: dict[str, Any] = field(default_factory=dict)

    async def post(
        self,
        connector: str,
        body: bytes,
        headers: dict[str, str] | None = None,
        *,
        content_type: str | None = "application/json",
        chunked: bool = False,
    ) -> tuple[int, str]:
        sent = dict(headers or {})
        skip: tuple[str, ...] = ()
        if content_type is None:
            skip = ("Content-Type",)
        else:
            sent["Content-Type"] = content_type
        data: Any = body
        if chunked:

            async def gen() -> AsyncIterator[bytes]:
                for start in range(0, len(body), 16_384):
                    yield body[start : start + 16_384]

            data = gen()
        async with self.session.post(
            f"{self.url}/webhooks/{connector}", data=data, headers=sent, skip_auto_headers=skip
        ) as resp:
            return resp.status, await resp.text()

    async def get(self, path: str) -> tuple[int, str]:
        async with self.session.get(f"{self.url}{path}") as resp:
            return resp.status, await resp.text()

    async def inbox(self) -> list[Any]:
        async with self.ledger.transaction(readonly=True) as tx:
            return await tx.inbox_pending(limit=100_000)


@pytest.fixture
async def env(ledger: Ledger, ledger_url: str, tmp_path: Path) -> AsyncIterator[Env]:
    config_path = tmp_path / "config.toml"
    config_path.write_text(CONFIG_TOML.format(ledger_url=ledger_url, max_body=MAX_BODY, secret=SECRET))
    config = load_config(str(config_path), env={})
    built: dict[str, Connector] = {}
    for name, cfg in config.connectors.items():
        built[name] = connector_factory.create_connector(cfg, state=ledger.state_store(name))
    await built["boom"].close()
    built["boom"] = cast(Connector, FaultyConnector())
    await ledger.state_store("zoho").set("watch_channel_id", ZOHO_CHANNEL)
    state = ServerState(scheduler_running=True)
    server = await start_server(config, ledger, built, state, port=0, shutdown_timeout=2.0)
    session = aiohttp.ClientSession(timeout=aiohttp.ClientTimeout(total=30))
    try:
        yield Env(server.url, session, ledger, ledger_url, state, config, built, server, tmp_path)
    finally:
        await session.close()
        await server.stop()
        for connector in built.values():
            await connector.close()


def metric(connector: str, outcome: str) -> float:
    value = REGISTRY.get_sample_value(
        "syncd_webhook_events_total", {"connector": connector, "outcome": outcome}
    )
    return value or 0.0


# -- the hostile table -----------------------------------------------------------------------------


@dataclass
class Case:
    name: str
    connector: str
    body: bytes
    headers: dict[str, str]
    status: int
    content_type: str | None = "application/json"
    chunked: bool = False
    outcome: str | None = None


def hostile_cases() -> list[Case]:
    now = int(time.time())
    good = sf_body()
    deep_list = b"[" * 100_000 + b"]" * 100_000
    deep_obj = b'{"a":' * 40_000 + b"1" + b"}" * 40_000
    big = b'{"ids":["' + CANARY.encode() + b'"],"pad":"' + b"x" * (MAX_BODY * 4) + b'"}'
    truncated = good[: len(good) // 2]
    non_utf8 = b'{"ids":["08pxx0000004KGGAA2"],"n":"\xff\xfe\xc3"}'
    utf16 = json.dumps({"ids": [SF_ID]}).encode("utf-16")
    tampered_headers = signed(good)
    mac = tampered_headers["X-Syncd-Signature"]
    return [
        Case("no signature headers", "sf", good, {}, 401, outcome="rejected_401"),
        Case("signature without timestamp", "sf", good, {"X-Syncd-Signature": mac}, 401),
        Case("timestamp without signature", "sf", good, {"X-Syncd-Timestamp": str(now)}, 401),
        Case("wrong secret", "sf", good, signed(good, secret=WRONG_SECRET), 401),
        Case("timestamp 301 s old", "sf", good, signed(good, ts=now - 301), 401),
        Case("timestamp 400 s ahead", "sf", good, signed(good, ts=now + 400), 401),
        Case("timestamp not a number", "sf", good, {"X-Syncd-Timestamp": "yesterday", "X-Syncd-Signature": mac}, 401),
        Case("body tampered after signing", "sf", sf_body(SF_ID2), tampered_headers, 401),
        Case("unknown signature scheme", "sf", good, {**signed(good), "X-Syncd-Signature": mac.replace("v1=", "v9=")},
             401),
        Case("huge signature header", "sf", good, {**signed(good), "X-Syncd-Signature": "v1=" + "a" * 6000}, 401),
        Case("deep nesting unsigned (401 first)", "sf", deep_list, {}, 401),
        Case("truncated body", "sf", truncated, signed(truncated), 400, outcome="bad_request"),
        Case("non-UTF-8 body", "sf", non_utf8, signed(non_utf8), 400),
        Case("UTF-16 JSON body", "sf", utf16, signed(utf16), 400),
        Case("100000-level nested array", "sf", deep_list, signed(deep_list), 400),
        Case("40000-level nested object", "sf", deep_obj, signed(deep_obj), 400),
        Case("empty body", "sf", b"", signed(b""), 400),
        Case("JSON array at top level", "sf", b"[1,2]", signed(b"[1,2]"), 400),
        Case("ids not a list", "sf", b'{"ids":"x"}', signed(b'{"ids":"x"}'), 400),
        Case("ids not record ids", "sf", b'{"ids":["../../etc"]}', signed(b'{"ids":["../../etc"]}'), 400),
        Case("huge body with Content-Length", "sf", big, signed(big), 413, outcome="too_large"),
        Case("huge body chunked, no Content-Length", "sf", big, signed(big), 413, chunked=True),
        Case("huge body, wrong content type (413 first)", "sf", big, {}, 413, content_type="text/plain"),
        Case("text/plain", "sf", good, signed(good), 415, content_type="text/plain", outcome="unsupported_media"),
        Case("form encoded", "sf", good, signed(good), 415, content_type="application/x-www-form-urlencoded"),
        Case("no content type", "sf", good, signed(good), 415, content_type=None),
        Case("unknown connector", "nosuch", good, signed(good), 404, outcome="unknown_connector"),
        Case("webhooks disabled (no webhook_secret)", "sfoff", good, signed(good), 404),
        Case("vendor without webhooks (onlive)", "onl", good, signed(good), 404),
        Case("connector name with dots", "..%2F..%2Fetc", good, signed(good), 404),
        Case("zoho: non-JSON body (400 before token)", "zoho", b"token=" + SECRET.encode(), {}, 400),
        Case("zoho: wrong token", "zoho", zoho_body(token="wrong"), {}, 401),
        Case("zoho: unknown channel", "zoho", zoho_body(channel="42"), {}, 401),
        Case("zoho: token missing", "zoho", zoho_body(token=""), {}, 401),
        Case("zoho: deeply nested body", "zoho", deep_list, {}, 400),
        Case("dentally: wrong secret", "dent", dentally_body("evt-1"),
             signed(dentally_body("evt-1"), secret=WRONG_SECRET), 401),
        Case("dentally: no event id", "dent", b'{"event":"appointment.updated"}',
             signed(b'{"event":"appointment.updated"}'), 400),
    ]


async def test_hostile_deliveries_answer_contract_status_and_store_nothing(env: Env) -> None:
    cases = hostile_cases()
    assert len(cases) >= 20
    failures: list[str] = []
    for case in cases:
        before = metric("sf", case.outcome) if case.outcome and case.connector == "sf" else None
        status, text = await env.post(
            case.connector, case.body, case.headers, content_type=case.content_type, chunked=case.chunked
        )
        if status != case.status:
            failures.append(f"{case.name}: expected {case.status}, got {status}")
            continue
        try:
            answer = json.loads(text)
        except ValueError:
            failures.append(f"{case.name}: answer is not JSON")
            continue
        if set(answer) != {"error", "detail"} or not all(isinstance(v, str) and v for v in answer.values()):
            failures.append(f"{case.name}: error body shape {sorted(answer)}")
        if CANARY in text or SECRET in text or "6000" in text:
            failures.append(f"{case.name}: the answer echoes the request")
        for value in case.headers.values():
            if len(value) > 8 and value in text:
                failures.append(f"{case.name}: the answer echoes a header value")
        if before is not None and case.outcome is not None and metric("sf", case.outcome) != before + 1:
            failures.append(f"{case.name}: metric outcome {case.outcome} not counted")
        health, _ = await env.get("/healthz")
        if health != 200:
            failures.append(f"{case.name}: server stopped serving ({health})")
    assert not failures, "\n".join(failures)
    assert await env.inbox() == []
    # the server still takes a good delivery afterwards
    good = sf_body()
    assert await env.post("sf", good, signed(good)) == (202, '{"accepted": 1}')
    assert len(await env.inbox()) == 1


async def _raw_exchange(env: Env, head: bytes, chunks: list[bytes]) -> bytes:
    """Send a hand-made request (headers, then body chunks) and read the answer's status line."""
    port = env.server.port
    reader, writer = await asyncio.open_connection("127.0.0.1", port)
    try:
        writer.write(head)
        for chunk in chunks:
            writer.write(chunk)
            await writer.drain()
        return await asyncio.wait_for(reader.readline(), 5)
    finally:
        writer.close()
        try:
            await writer.wait_closed()
        except OSError:
            pass


async def test_declared_content_length_over_limit_is_refused_before_reading(env: Env) -> None:
    head = (
        b"POST /webhooks/sf HTTP/1.1\r\nHost: x\r\nContent-Type: application/json\r\n"
        b"Content-Length: 1000000000\r\n\r\n"
    )
    # no body is sent at all: the answer must not wait for it
    assert (await _raw_exchange(env, head, [])).startswith(b"HTTP/1.1 413")
    assert (await env.get("/healthz"))[0] == 200


async def test_endless_chunked_body_is_cut_at_the_limit(env: Env) -> None:
    head = (
        b"POST /webhooks/sf HTTP/1.1\r\nHost: x\r\nContent-Type: application/json\r\n"
        b"Transfer-Encoding: chunked\r\n\r\n"
    )
    piece = b"x" * 32_768
    chunk = f"{len(piece):x}\r\n".encode() + piece + b"\r\n"
    # a little over the limit and never terminated: the server answers once the limit is passed
    chunks = [chunk] * (MAX_BODY // len(piece) + 2)
    assert (await _raw_exchange(env, head, chunks)).startswith(b"HTTP/1.1 413")
    assert await env.inbox() == []


@pytest.mark.parametrize(
    ("error", "status"),
    [
        (RecursionError("maximum recursion depth exceeded"), 400),
        (KeyError("ids"), 400),
        (TypeError("unhashable"), 400),
        (ValueError("bad"), 400),
        (WebhookError(401, "signature_invalid", "no v1 signature matches"), 401),
        (WebhookError(500, "odd", "a connector answering an unexpected status"), 400),
        (LedgerUnavailable("ledger unreachable: OSError"), 503),
    ],
)
async def test_parser_failures_never_answer_500(env: Env, error: BaseException, status: int) -> None:
    faulty = cast(FaultyConnector, env.connectors["boom"])
    faulty.error = error
    got, text = await env.post("boom", b'{"any": "' + CANARY.encode() + b'"}')
    assert got == status
    assert set(json.loads(text)) == {"error", "detail"} and CANARY not in text
    faulty.error = None
    assert (await env.post("boom", b"{}"))[0] == 202
    assert len(await env.inbox()) == 1


# -- accepted deliveries ---------------------------------------------------------------------------


async def test_valid_delivery_is_stored_then_acknowledged_and_replay_is_stored_once(env: Env) -> None:
    body = sf_body(SF_ID, SF_ID2)
    headers = signed(body)
    accepted_before = metric("sf", "accepted")
    duplicate_before = metric("sf", "duplicate")

    status, text = await env.post("sf", body, headers)
    assert (status, json.loads(text)) == (202, {"accepted": 2})
    rows = await env.inbox()
    assert len(rows) == 1
    assert rows[0].connector == "sf"
    assert [(e.external_id, e.deleted) for e in decode_delivery(rows[0].body)] == [(SF_ID, False), (SF_ID2, False)]
    assert env.state.events_stored.is_set()
    env.state.events_stored.clear()

    # replayed delivery: accepted again with its N, stored once, no wake-up
    status, text = await env.post("sf", body, headers)
    assert (status, json.loads(text)) == (202, {"accepted": 2})
    assert len(await env.inbox()) == 1
    assert not env.state.events_stored.is_set()
    assert metric("sf", "accepted") == accepted_before + 1
    assert metric("sf", "duplicate") == duplicate_before + 1

    # a new notification about the same ids (new signed timestamp) is not a duplicate
    status, _ = await env.post("sf", body, signed(body, ts=int(time.time()) - 5))
    assert status == 202
    assert len(await env.inbox()) == 2


async def test_zoho_callback_is_accepted_and_dedup_by_timestamp_and_body(env: Env) -> None:
    body = zoho_body(ids=("5545974000002254155", "5545974000002254060"), operation="delete")
    status, text = await env.post("zoho", body)
    assert (status, json.loads(text)) == (202, {"accepted": 2})
    assert (await env.post("zoho", body))[0] == 202
    rows = await env.inbox()
    assert len(rows) == 1
    assert all(e.deleted for e in decode_delivery(rows[0].body))


async def test_dentally_dedups_on_event_id_and_ignores_other_event_types(env: Env) -> None:
    first = dentally_body("0b6f4c1e-6a0e-4c59-9f0a-2d1c7e3b9a10")
    assert await env.post("dent", first, signed(first)) == (202, '{"accepted": 1}')
    # the same event redelivered later: new timestamp, same event id -> one row
    assert await env.post("dent", first, signed(first, ts=int(time.time()) - 30)) == (202, '{"accepted": 1}')
    deleted = dentally_body("evt-deleted", event="appointment.deleted", record_id=42)
    assert await env.post("dent", deleted, signed(deleted)) == (202, '{"accepted": 1}')
    ignored = dentally_body("evt-patient", event="patient.updated")
    assert await env.post("dent", ignored, signed(ignored)) == (202, '{"accepted": 0}')
    rows = await env.inbox()
    assert len(rows) == 2
    assert {r.dedup_key for r in rows} == {"event:0b6f4c1e-6a0e-4c59-9f0a-2d1c7e3b9a10", "event:evt-deleted"}
    events = [e for r in rows for e in decode_delivery(r.body)]
    assert {(e.external_id, e.deleted) for e in events} == {("757579675", False), ("42", True)}


async def test_concurrent_deliveries_are_grouped_into_few_commits(env: Env) -> None:
    batcher = env.server.runner.app[BATCHER_KEY]
    commits_before = batcher.commits
    now = int(time.time())
    bodies = [json.dumps({"ids": [SF_ID], "n": i}).encode() for i in range(60)]
    results = await asyncio.gather(*(env.post("sf", b, signed(b, ts=now)) for b in bodies))
    assert all(status == 202 for status, _ in results)
    # the same deliveries again, concurrently with new ones: duplicates are not stored twice
    again = await asyncio.gather(*(env.post("sf", b, signed(b, ts=now)) for b in bodies[:20]))
    assert all(status == 202 for status, _ in again)
    assert len(await env.inbox()) == 60
    assert batcher.commits - commits_before < 80  # grouped: fewer transactions than deliveries


async def test_batcher_groups_one_commit_and_fails_every_waiter_alike(ledger: Ledger) -> None:
    batcher = InboxBatcher(ledger)
    items = [("sf", f"sha256:{i % 40}", b"{}") for i in range(50)]  # 10 repeats inside the group
    results = await asyncio.gather(*(batcher.put(*item) for item in items))
    assert batcher.commits == 1
    assert results == [True] * 40 + [False] * 10

    class BrokenLedger:
        def transaction(self) -> Any:
            raise LedgerUnavailable("ledger unreachable: OSError")

    broken = InboxBatcher(cast(Ledger, BrokenLedger()))
    outcomes = await asyncio.gather(*(broken.put("sf", f"k{i}", b"{}") for i in range(5)), return_exceptions=True)
    assert all(isinstance(o, LedgerUnavailable) for o in outcomes)
    await batcher.close()
    with pytest.raises(LedgerUnavailable):
        await batcher.put("sf", "late", b"{}")


# -- health, readiness, metrics --------------------------------------------------------------------


async def test_healthz_readyz_and_metrics(env: Env) -> None:
    assert await env.get("/healthz") == (200, '{"status": "ok"}')
    status, text = await env.get("/readyz")
    assert (status, json.loads(text)) == (200, {"status": "ready"})

    env.state.scheduler_running = False
    status, text = await env.get("/readyz")
    assert status == 503
    assert json.loads(text) == {"status": "unready", "failed": ["scheduler: not running"]}

    env.state.scheduler_running = True
    env.state.draining = True
    status, text = await env.get("/readyz")
    assert (status, json.loads(text)["failed"]) == (503, ["draining"])
    env.state.draining = False

    body = sf_body()
    await env.post("sf", body, signed(body))
    await env.post("nosuch", body, signed(body))
    async with env.session.get(f"{env.url}/metrics") as resp:
        assert resp.status == 200
        assert resp.headers["Content-Type"].startswith("text/plain")
        text = await resp.text()
    assert 'syncd_webhook_events_total{connector="sf",outcome="accepted"}' in text
    assert 'syncd_webhook_events_total{connector="_unknown",outcome="unknown_connector"}' in text
    for name in ("syncd_records_read_total", "syncd_writes_total", "syncd_conflicts_total", "syncd_dead_letters",
                 "syncd_poll_lag_seconds", "syncd_vendor_request_seconds"):
        assert name in text


async def test_event_hook_is_called_for_new_rows_only(env: Env) -> None:
    woken: list[str] = []
    env.state.on_event_stored = woken.append
    body = zoho_body()
    await env.post("zoho", body)
    await env.post("zoho", body)
    assert woken == ["zoho"]
    assert await env.state.wait_for_events(timeout=0.5)
    assert not await env.state.wait_for_events(timeout=0.01)


# -- ledger outage and recovery --------------------------------------------------------------------


def _pg_admin_url(ledger_url: str) -> tuple[str, str]:
    url = make_url(ledger_url)
    base = os.environ.get("SYNCD_TEST_PG", "postgresql://postgres@127.0.0.1:5432")
    return f"{base}/postgres", str(url.database)


async def _pg_exec(admin_url: str, *statements: str) -> None:
    import asyncpg

    conn = await asyncpg.connect(admin_url, timeout=5)
    try:
        for statement in statements:
            await conn.execute(statement)
    finally:
        await conn.close()


async def _make_unreachable(env: Env) -> Callable[[], Any]:
    """Cut the ledger off for real; return an async function that restores it."""
    if env.ledger.dialect == "postgresql":
        admin, name = _pg_admin_url(env.ledger_url)
        await _pg_exec(
            admin,
            f'ALTER DATABASE "{name}" WITH ALLOW_CONNECTIONS false',
            f"SELECT pg_terminate_backend(pid) FROM pg_stat_activity WHERE datname = '{name}' "
            "AND pid <> pg_backend_pid()",
        )

        async def restore_pg() -> None:
            await _pg_exec(admin, f'ALTER DATABASE "{name}" WITH ALLOW_CONNECTIONS true')

        return restore_pg
    # SQLite: close the pooled connections, then move the ledger's directory away (as when its
    # volume disappears): new connections fail with "unable to open database file"
    database = Path(str(make_url(env.ledger_url).database))
    await env.ledger.engine.dispose()
    folder = database.parent
    away = folder.with_name(folder.name + f"-away-{uuid.uuid4().hex[:6]}")
    folder.rename(away)

    async def restore_sqlite() -> None:
        away.rename(folder)

    return restore_sqlite


async def test_ledger_unavailable_answers_503_and_recovers_without_restart(env: Env) -> None:
    body = sf_body()
    assert (await env.post("sf", body, signed(body)))[0] == 202
    unavailable_before = metric("sf", "unavailable")

    restore = await _make_unreachable(env)
    try:
        status, text = await env.get("/readyz")
        assert status == 503
        answer = json.loads(text)
        assert answer["status"] == "unready"
        assert len(answer["failed"]) == 1 and answer["failed"][0].startswith("ledger: ")

        body2 = sf_body(SF_ID2)
        status, text = await env.post("sf", body2, signed(body2))
        assert status == 503
        assert json.loads(text) == {"error": "ledger_unavailable", "detail": "the ledger is unavailable; retry later"}
        assert metric("sf", "unavailable") == unavailable_before + 1
        # Zoho reads its channel id from the ledger while verifying: also 503, never 401/500
        assert (await env.post("zoho", zoho_body()))[0] == 503
        assert (await env.get("/healthz"))[0] == 200
    finally:
        await restore()

    status, _ = await env.get("/readyz")
    assert status == 200
    status, text = await env.post("sf", body2, signed(body2))
    assert (status, json.loads(text)) == (202, {"accepted": 1})
    assert len(await env.inbox()) == 2


async def test_shutdown_finishes_deliveries_in_flight(env: Env) -> None:
    faulty = cast(FaultyConnector, env.connectors["boom"])
    faulty.gate = asyncio.Event()
    request = asyncio.create_task(env.post("boom", b"{}"))
    await asyncio.wait_for(faulty.entered.wait(), 5)
    stopping = asyncio.create_task(env.server.stop())
    await asyncio.sleep(0.05)
    faulty.gate.set()
    assert await request == (202, '{"accepted": 1}')
    await stopping
    assert len(await env.inbox()) == 1


# -- inbox encoding (no server) --------------------------------------------------------------------


def test_inbox_round_trip_and_dedup_keys() -> None:
    delivery = WebhookDelivery(
        events=[WebhookEvent("a1"), WebhookEvent("b2", deleted=True)], dedup_key=None, signed_timestamp="1795345200"
    )
    raw = b'{"ids":["a1"]}'
    stored = encode_delivery(delivery, raw)
    assert json.loads(stored)["raw"] == raw.decode()
    assert [(e.external_id, e.deleted) for e in decode_delivery(stored)] == [("a1", False), ("b2", True)]
    expected = hashlib.sha256(b"1795345200." + raw).hexdigest()
    assert dedup_key(delivery, {}, raw) == f"sha256:{expected}"
    # without a verified timestamp the header is used
    bare = WebhookDelivery(events=delivery.events)
    assert dedup_key(bare, {"x-syncd-timestamp": "1795345200"}, raw) == f"sha256:{expected}"
    assert dedup_key(WebhookDelivery(events=[], dedup_key="evt-9"), {}, raw) == "event:evt-9"
    long_key = dedup_key(WebhookDelivery(events=[], dedup_key="x" * 400), {}, raw)
    assert long_key.startswith("event-sha256:") and len(long_key) <= 255
    for bad in (b"not json", b"[]", b'{"format": 99, "events": []}', b'{"format": 1, "events": [{"deleted": 1}]}'):
        with pytest.raises(ValueError):
            decode_delivery(bad)
