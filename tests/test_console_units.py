"""The console's building blocks: session cookies and CSRF tokens (expiry, tampering, revocation), the
login throttle (backoff, bounded memory), the connector state rules, and the ledger queries behind
the overview chart and the appointment page (SQLite and PostgreSQL)."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from typing import Any

import pytest

from syncd.config import parse_config
from syncd.console import queries
from syncd.console.chart import layout
from syncd.console.security import ABSOLUTE_TIMEOUT_S, IDLE_TIMEOUT_S, LoginThrottle, SessionSigner, token_matches
from syncd.ledger.models import AppointmentRow, AuditEntry, LineageEntry, Link
from syncd.ledger.store import Ledger

TOKEN = "0123456789abcdef-console"


class FakeClock:
    def __init__(self, now: float = 1_800_000_000.0) -> None:
        self.now = now

    def __call__(self) -> float:
        return self.now


def test_token_comparison_is_exact() -> None:
    assert token_matches(TOKEN, TOKEN)
    assert not token_matches(TOKEN[:-1], TOKEN)
    assert not token_matches(TOKEN + "x", TOKEN)
    assert not token_matches("", TOKEN)


def test_session_cookie_round_trip_idle_and_absolute_expiry() -> None:
    clock = FakeClock()
    signer = SessionSigner(TOKEN, clock=clock)
    session = signer.new_session()
    cookie = signer.cookie_value(session)
    assert signer.verify(cookie) == session
    assert TOKEN not in cookie
    # idle: unused for longer than the idle timeout
    clock.now += IDLE_TIMEOUT_S + 1
    assert signer.verify(cookie) is None
    # kept alive by use, it still ends at the absolute limit
    clock.now = 1_800_000_000.0
    current = session
    while clock.now < 1_800_000_000.0 + ABSOLUTE_TIMEOUT_S - IDLE_TIMEOUT_S / 2:
        clock.now += IDLE_TIMEOUT_S / 2
        verified = signer.verify(signer.cookie_value(current))
        assert verified is not None
        current = signer.touched(verified) or verified
    clock.now = 1_800_000_000.0 + ABSOLUTE_TIMEOUT_S + 1
    assert signer.verify(signer.cookie_value(current)) is None


def test_tampered_or_foreign_cookies_are_refused() -> None:
    clock = FakeClock()
    signer = SessionSigner(TOKEN, clock=clock)
    session = signer.new_session()
    cookie = signer.cookie_value(session)
    sid, issued, seen, mac = cookie.split(".")
    assert signer.verify(f"{sid}.{int(issued) + 3600}.{seen}.{mac}") is None  # a later issue time
    assert signer.verify(f"{sid}x.{issued}.{seen}.{mac}") is None
    assert signer.verify(cookie + "x") is None
    assert signer.verify("garbage") is None and signer.verify("") is None and signer.verify(None) is None
    # another token (rotated) invalidates every session
    assert SessionSigner(TOKEN + "-rotated", clock=clock).verify(cookie) is None


def test_revoked_sessions_stay_revoked_and_the_list_is_bounded() -> None:
    clock = FakeClock()
    signer = SessionSigner(TOKEN, clock=clock)
    session = signer.new_session()
    signer.revoke(session)
    assert signer.verify(signer.cookie_value(session)) is None
    for _ in range(10_050):
        signer.revoke(signer.new_session())
    assert len(signer._revoked) <= 10_000


def test_csrf_tokens_are_per_session_and_login_tokens_expire() -> None:
    clock = FakeClock()
    signer = SessionSigner(TOKEN, clock=clock)
    one, two = signer.new_session(), signer.new_session()
    assert signer.csrf_ok(one, signer.csrf_token(one))
    assert not signer.csrf_ok(one, signer.csrf_token(two))
    assert not signer.csrf_ok(one, None) and not signer.csrf_ok(one, "")
    nonce = signer.new_login_nonce()
    assert signer.login_csrf_ok(nonce, signer.login_csrf_token(nonce))
    assert not signer.login_csrf_ok(nonce, signer.login_csrf_token(signer.new_login_nonce()))
    assert not signer.login_csrf_ok(None, signer.login_csrf_token(nonce))
    clock.now += 3601
    assert not signer.login_csrf_ok(nonce, signer.login_csrf_token(nonce))


def test_throttle_backs_off_per_address_and_forgets() -> None:
    clock = FakeClock(0.0)
    throttle = LoginThrottle(clock=clock)
    assert [throttle.failed("10.0.0.1") for _ in range(6)] == [0.0, 0.0, 1.0, 2.0, 4.0, 8.0]
    assert throttle.wait_s("10.0.0.1") == 8.0 and throttle.wait_s("10.0.0.2") == 0.0
    for _ in range(20):
        throttle.failed("10.0.0.1")
    assert throttle.wait_s("10.0.0.1") == 60.0  # capped
    clock.now += 901
    assert throttle.wait_s("10.0.0.1") == 0.0  # forgotten after 15 min without failures
    throttle.failed("10.0.0.3")
    throttle.succeeded("10.0.0.3")
    assert len([a for a in ("10.0.0.3",) if throttle.wait_s(a)]) == 0


def test_throttle_memory_is_bounded() -> None:
    throttle = LoginThrottle(clock=FakeClock(0.0), max_entries=100)
    for i in range(1000):
        throttle.failed(f"addr-{i}")
    assert len(throttle) == 100


# -- connector state ------------------------------------------------------------------------------


def _info(**over: object) -> dict[str, object]:
    base: dict[str, object] = {"poll_interval": 60.0, "lag_s": 10.0, "last_success_at": "2026-12-01T10:00:00Z",
                               "last_error": None, "rate_limit": None, "subscription": None, "dead_letters": 0,
                               "outbox_pending": 0, "inbox_pending": 0, "open_conflicts": 0}
    base.update(over)
    return base


@pytest.mark.parametrize(("over", "level", "words"), [
    ({}, "ok", "polling"),
    ({"poll_interval": 0.0, "last_success_at": None, "lag_s": None}, "ok", "webhooks only"),
    ({"last_success_at": None, "lag_s": None}, "degraded", "not polled yet"),
    ({"last_error": "HTTP 503"}, "degraded", "last poll failed: HTTP 503"),
    ({"last_error": "HTTP 401", "last_success_at": None, "lag_s": None}, "failing", "polls failing: HTTP 401"),
    ({"last_error": "timeout", "lag_s": 600.0}, "failing", "polls failing"),
    ({"lag_s": 600.0}, "failing", "no successful poll for 600 s"),
    ({"rate_limit": {"blocked_for_s": 12.5}}, "degraded", "rate limited: waiting 12.5 s"),
    ({"subscription": {"subscription": "failed", "code": "INVALID_TOKEN"}}, "degraded", "subscription failed"),
    ({"dead_letters": 2}, "degraded", "2 dead letter(s)"),
    ({"open_conflicts": 1}, "ok", "polling"),  # an appointment's, counted in its sync group's row
    ({"outbox_pending": 500}, "degraded", "500 queued writes"),
])
def test_connector_state_rules(over: dict[str, object], level: str, words: str) -> None:
    state = queries.connector_state(_info(**over))
    assert state.level == level and words in state.reason
    assert state.colour == {"ok": "green", "degraded": "amber", "failing": "red"}[level]


# -- ledger queries -------------------------------------------------------------------------------

CONFIG = parse_config({
    "ledger": {"url": "sqlite+aiosqlite:///unused.db"},
    "connectors": {
        "sf": {"type": "saludya", "base_url": "http://127.0.0.1:9", "api_key": "k", "timezone": "UTC"},
        "dent": {"type": "dentally", "base_url": "http://127.0.0.1:9", "access_token": "t", "user_agent": "u"},
    },
    "sync": [{"name": "g", "members": ["sf", "dent"]}],
})
NOW = datetime(2026, 12, 1, 12, 30, tzinfo=UTC)


async def test_hourly_activity_buckets_writes_and_errors_by_connector(ledger: Ledger) -> None:
    at = {
        "old": NOW - timedelta(hours=30),
        "h-3": NOW.replace(minute=5) - timedelta(hours=3),
        "h-3b": NOW.replace(minute=59) - timedelta(hours=3),
        "now": NOW.replace(minute=1),
    }
    async with ledger.transaction() as tx:
        await tx.add_audit([
            AuditEntry(canonical_id="A-1", connector="sf", action="update", at=at["old"]),
            AuditEntry(canonical_id="A-1", connector="sf", action="update", at=at["h-3"]),
            AuditEntry(canonical_id="A-2", connector="sf", action="create", at=at["h-3b"]),
            AuditEntry(canonical_id="A-2", connector="sf", action="merged", at=at["h-3b"]),  # not a write
            AuditEntry(canonical_id="A-3", connector="dent", action="replaced", at=at["now"]),
        ])
    ledger.clock = lambda: at["h-3"]
    async with ledger.transaction() as tx:
        await tx.add_dead_letter("dent", "rejected", "no", canonical_id="A-3")
    ledger.clock = lambda: NOW
    data = await queries.overview(CONFIG, ledger, now=NOW)
    series = {s.connector: s for s in data["series"]}
    assert len(series["sf"].hours) == 24 and series["sf"].hours[-1] == int(NOW.timestamp()) // 3600
    assert series["sf"].writes[-4] == 2 and sum(series["sf"].writes) == 2  # the 30 h old one is outside
    assert series["dent"].writes[-1] == 1 and series["dent"].errors[-4] == 1
    rows = {r["name"]: r for r in data["connectors"]}
    assert rows["dent"]["writes_1h"] == 1 and rows["dent"]["errors_24h"] == 1 and rows["sf"]["writes_1h"] == 0
    assert rows["dent"]["state"].level == "degraded"  # a dead letter
    chart = layout(data["series"])
    [panel] = [p for p in chart.panels if p.connector == "sf"]
    tallest = max(panel.bars, key=lambda b: b.height)
    assert tallest.kind == "writes" and tallest.height == pytest.approx(40.0) and panel.peak == 2


async def test_group_figures_and_appointment_view(ledger: Ledger) -> None:
    snapshot: dict[str, Any] = {"status": "booked", "start": "2026-12-08T09:00:00Z", "end": "2026-12-08T09:30:00Z",
                "patient": "P-00001", "practitioner": "DR-1", "location": "LOC-1", "service_type": "SVC-1",
                "description": None, "notes": "Allergic to latex", "cancellation_reason": None,
                "native_status": None, "extra": {}}
    async with ledger.transaction() as tx:
        await tx.save_appointments([AppointmentRow(canonical_id="A-1", sync_group="g", snapshot=snapshot,
                                                   fingerprint="f1")])
        await tx.ensure_appointments(["A-2"], "g")  # a claim-only row: not counted
        await tx.upsert_links([Link(canonical_id="A-1", connector="sf", external_id="S1", version="3"),
                               Link(canonical_id="A-1", connector="dent", external_id="D-old", retired=True),
                               Link(canonical_id="A-1", connector="dent", external_id="D-new")])
        await tx.open_conflict("A-1", "notes", {"sf": "len=3 sha256:abc", "dent": "len=4 sha256:def"}, "both")
        t0 = datetime(2026, 12, 7, 10, 0, tzinfo=UTC)
        await tx.add_lineage([
            LineageEntry(at=t0, canonical_id="A-1", kind="read", action="seen-new", connector="sf",
                         outcome="created", sources={"status": {"source": "sf", "changed_at": "2026-12-07T09:59:00Z",
                                                                "rule": "created"}}),
            LineageEntry(at=t0 + timedelta(minutes=1), canonical_id="A-1", kind="write", action="replaced",
                         connector="dent", outcome="replaced", detail="created D-new, old D-old retired"),
            LineageEntry(at=t0 + timedelta(minutes=2), canonical_id="A-1", kind="conflict", action="conflict-owner",
                         connector="sf", fields=["notes"], outcome="settled", rule="owner")])
    async with ledger.transaction(readonly=True) as tx:
        figures = await tx.group_figures()
    assert figures["g"] == {"appointments": 1, "open_conflicts": 1}
    for ref in ("A-1", "sf:S1", "dent:D-old", "dent:D-new"):
        view = await queries.appointment_view(CONFIG, ledger, ref)
        assert view is not None and view["canonical_id"] == "A-1", ref
    assert view is not None
    assert [h["kind"] for h in view["history"]] == ["conflict", "write", "read"]  # newest first
    assert view["history"][0]["outcome"] == "settled" and view["history"][1]["outcome"] == "replaced"
    assert view["history"][1]["action"] == "replaced"
    assert {(lk["external_id"], lk["retired"]) for lk in view["links"]} == {("S1", False), ("D-old", True),
                                                                           ("D-new", False)}
    fields = view["fields"]
    assert fields["status"] == {"value": "booked", "hash": None, "source": "sf", "changed_at": "2026-12-07T09:59:00Z",
                                "rule": "created"}
    assert fields["patient"]["value"] is None and fields["patient"]["hash"] == queries.short_hash("P-00001")
    assert fields["notes"]["value"] is None and fields["notes"]["hash"] == queries.short_hash("Allergic to latex")
    assert fields["description"] == {"value": None, "hash": None, "source": None, "changed_at": None, "rule": None}
    assert "Allergic" not in repr(view) and "P-00001" not in repr(view)
    assert [c["field"] for c in view["conflicts"]] == ["notes"]
    assert await queries.appointment_view(CONFIG, ledger, "A-404") is None
    assert await queries.appointment_view(CONFIG, ledger, "sf:nope") is None
    for bad in ("", "x:1", "has space", "sf:", "a" * 65):
        with pytest.raises(queries.RefError):
            await queries.appointment_view(CONFIG, ledger, bad)


async def test_conflict_rows_side_by_side_without_free_text(ledger: Ledger) -> None:
    snapshot: dict[str, Any] = {"status": "cancelled", "start": "2026-12-08T09:00:00Z", "end": "2026-12-08T09:30:00Z",
                "patient": "P-00009", "practitioner": "DR-1", "location": None, "service_type": None,
                "description": None, "notes": "base note", "cancellation_reason": "Asked",
                "native_status": None, "extra": {}}
    seen = {**snapshot, "notes": "Call the patient back"}
    async with ledger.transaction() as tx:
        await tx.save_appointments([AppointmentRow(canonical_id="A-1", sync_group="g", snapshot=snapshot,
                                                   fingerprint="f")])
        await tx.upsert_links([Link(canonical_id="A-1", connector="sf", external_id="S1", seen=seen),
                               Link(canonical_id="A-1", connector="dent", external_id="D1", seen=snapshot)])
        await tx.open_conflict("A-1", "notes", {"target": "dent"}, "TERMINAL: cancelled")
        await tx.open_conflict("A-1", "patient", {"sf": "P-00009", "dent": "P-00010", "(base)": "P-00009"}, "x")
    rows = {r["field"]: r for r in await queries.conflict_rows(CONFIG, ledger)}
    notes = rows["notes"]
    assert notes["refused_by"] == "dent" and "dent refused the write" in notes["policy"]
    held = {h["side"]: h["value"] for h in notes["held"]}
    assert held["sf"].startswith(f"len={len('Call the patient back')} ") and held["(merged)"].startswith("len=9 ")
    assert notes["take"] == ["dent", "sf"]
    patient = rows["patient"]
    assert "P-0000" not in repr(patient)  # canonical patient keys only as hashes
    assert 'owners.patient = "*"' in patient["policy"]
    assert "Call the patient" not in repr(rows) and "base note" not in repr(rows)
