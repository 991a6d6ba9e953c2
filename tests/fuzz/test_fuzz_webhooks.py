"""Fuzzing every connector's webhook parser (issue 18 item 5): no input crashes it, bad input becomes
a 4xx (``WebhookError``), and what it accepts is validated before it can reach the ledger: every event
id a non-empty string that the inbox format stores and reads back."""

from __future__ import annotations

import hashlib
import hmac
import json
from datetime import UTC, datetime

from hypothesis import given
from hypothesis import strategies as st

from connectors.dentally.webhook import parse_delivery as dentally_parse
from connectors.onlive.webhook import parse_webhook as onlive_parse
from connectors.salesforce_health.webhook import parse as sf_parse
from connectors.saludya.webhook import parse_webhook as saludya_parse
from connectors.zoho_crm.webhook import parse_callback as zoho_parse
from syncd.connector import WebhookDelivery
from syncd.errors import WebhookError
from syncd.inbox import decode_delivery, dedup_key, encode_delivery
from tests.fuzz.support import FUZZ, JSON

SECRET = "fuzz-webhook-secret"
NOW = datetime(2026, 12, 8, 9, 0, tzinfo=UTC)
STAMP = str(int(NOW.timestamp()))
CHANNEL = "1000000068001"
MODULE = "Appointments__s"

HEADERS = st.dictionaries(
    st.sampled_from(["X-Syncd-Timestamp", "X-Syncd-Signature", "Content-Type", "x-syncd-timestamp", "X-Other"])
    | st.text(max_size=20),
    st.text(max_size=80), max_size=5,
)


def _signed(body: bytes, stamp: str = STAMP) -> dict[str, str]:
    mac = hmac.new(SECRET.encode(), stamp.encode() + b"." + body, hashlib.sha256).hexdigest()
    return {"X-Syncd-Timestamp": stamp, "X-Syncd-Signature": f"v1={mac}"}


def _check(delivery: WebhookDelivery, body: bytes) -> None:
    """What the receiver does next with an accepted delivery must work, and round-trip."""
    assert isinstance(delivery, WebhookDelivery)
    for event in delivery.events:
        assert isinstance(event.external_id, str) and event.external_id.strip(), event
        assert isinstance(event.deleted, bool)
    if not delivery.events:
        return
    body.decode("utf-8")  # the receiver answers 400 before storing a body that is not UTF-8
    stored = encode_delivery(delivery, body)
    assert [(e.external_id, e.deleted) for e in decode_delivery(stored)] == [
        (e.external_id, e.deleted) for e in delivery.events]
    assert 0 < len(dedup_key(delivery, {}, body)) <= 255


def _refused(exc: WebhookError) -> None:
    assert exc.status in (400, 401, 404), exc.status
    assert exc.code and exc.detail


def _bodies(document: st.SearchStrategy[object]) -> st.SearchStrategy[bytes]:
    return (st.binary(max_size=300) | document.map(lambda d: json.dumps(d).encode())
            | document.map(lambda d: json.dumps(d, ensure_ascii=False).encode("utf-8", "surrogatepass")))


SF_DOC = st.fixed_dictionaries({"ids": st.lists(
    st.text(alphabet="0123456789abcdefABCDEFxX", min_size=14, max_size=19) | JSON, max_size=8)}) | JSON
DENTALLY_DOC = st.fixed_dictionaries({
    "id": JSON | st.text(max_size=30),
    "event": st.sampled_from(["appointment.created", "appointment.updated", "appointment.deleted",
                              "patient.updated", "appointment.", ""]) | JSON,
    "data": st.fixed_dictionaries({"id": st.integers() | st.text(max_size=20) | JSON}) | JSON,
}) | JSON
ZOHO_DOC = st.fixed_dictionaries({
    "token": st.just(SECRET) | JSON,
    "channel_id": st.sampled_from([CHANNEL, int(CHANNEL)]) | JSON,
    "module": st.just(MODULE) | JSON,
    "ids": st.lists(st.text(max_size=25) | st.integers() | JSON, max_size=8) | JSON,
    "operation": st.sampled_from(["insert", "update", "delete", "create", ""]) | JSON,
    "server_time": st.integers() | JSON,
}) | JSON


@FUZZ
@given(body=_bodies(SF_DOC), headers=HEADERS, sign=st.booleans())
def test_salesforce_webhook_parser(body: bytes, headers: dict[str, str], sign: bool) -> None:
    sent = {**headers, **_signed(body)} if sign else headers
    try:
        delivery = sf_parse(SECRET, sent, body, now=NOW)
    except WebhookError as exc:
        _refused(exc)
        return
    assert sign
    _check(delivery, body)


@FUZZ
@given(body=_bodies(DENTALLY_DOC), headers=HEADERS, sign=st.booleans())
def test_dentally_webhook_parser(body: bytes, headers: dict[str, str], sign: bool) -> None:
    sent = {**headers, **_signed(body)} if sign else headers
    try:
        delivery = dentally_parse(sent, body, secret=SECRET, now=NOW)
    except WebhookError as exc:
        _refused(exc)
        return
    assert sign
    _check(delivery, body)


@FUZZ
@given(body=_bodies(ZOHO_DOC))
def test_zoho_webhook_parser(body: bytes) -> None:
    try:
        delivery = zoho_parse(body, secret=SECRET, channel_id=CHANNEL, module=MODULE)
    except WebhookError as exc:
        _refused(exc)
        return
    _check(delivery, body)


@FUZZ
@given(body=st.binary(max_size=200), headers=HEADERS)
def test_poll_only_vendors_refuse_every_delivery(body: bytes, headers: dict[str, str]) -> None:
    for parse in (onlive_parse, saludya_parse):
        try:
            parse(headers, body)
        except WebhookError as exc:
            assert exc.status == 404
        else:
            raise AssertionError("a poll-only vendor accepted a delivery")
