"""The inputs the fuzzers found crashing or slipping through, kept as plain regression tests."""

from __future__ import annotations

import hashlib
import hmac
import json
from datetime import UTC, datetime

import pytest

from connectors.dentally.webhook import parse_delivery as dentally_parse
from connectors.zoho_crm.webhook import parse_callback as zoho_parse
from syncd.config import parse_config
from syncd.crosswalk import parse_csv
from syncd.errors import ConfigError, WebhookError
from tests.fuzz.test_fuzz_mappings import _read, _samples

SECRET = "fuzz-webhook-secret"
NOW = datetime(2026, 12, 8, 9, 0, tzinfo=UTC)


def _zoho(**changes: object) -> bytes:
    doc = {"token": SECRET, "channel_id": "1", "module": "Appointments__s", "ids": ["5545974000002254155"],
           "operation": "update", **changes}
    return json.dumps(doc).encode()


@pytest.mark.parametrize("changes", [{"ids": [""]}, {"ids": [True]}, {"ids": ["12a"]}, {"operation": []},
                                     {"operation": {"x": 1}}, {"token": "\ud800"}])
def test_zoho_callbacks_the_fuzzer_found(changes: dict[str, object]) -> None:
    with pytest.raises(WebhookError) as refused:
        zoho_parse(_zoho(**changes), secret=SECRET, channel_id="1", module="Appointments__s")
    assert refused.value.status in (400, 401)


@pytest.mark.parametrize("record_id", [" ", "abc", "١٢٣", True, -5, 0])
def test_dentally_deliveries_the_fuzzer_found(record_id: object) -> None:
    body = json.dumps({"id": "evt-1", "event": "appointment.updated", "data": {"id": record_id}}).encode()
    stamp = str(int(NOW.timestamp()))
    mac = hmac.new(SECRET.encode(), stamp.encode() + b"." + body, hashlib.sha256).hexdigest()
    headers = {"X-Syncd-Timestamp": stamp, "X-Syncd-Signature": f"v1={mac}"}
    with pytest.raises(WebhookError) as refused:
        dentally_parse(headers, body, secret=SECRET, now=NOW)
    assert refused.value.status == 400


def test_a_saludya_duration_past_the_calendar_is_a_dead_letter() -> None:
    raw = {**_samples("saludya")[0], "duration_minutes": 10**12}
    record = _read("saludya", raw)
    assert record.appointment is None and record.error is not None and "duration_minutes" in str(record.error)


def test_a_crosswalk_with_a_bare_carriage_return_is_a_problem_line() -> None:
    rows, problems = parse_csv('kind,key,connector,external_id\npractitioner,PR-1,sf,"a\rb"\nx\r"y', ["sf"])
    assert all(p.startswith("line ") for p in problems)
    assert [r.key for r in rows] == ["PR-1"]


def test_a_config_key_with_control_characters_is_one_escaped_line() -> None:
    with pytest.raises(ConfigError) as refused:
        parse_config({"\n": 1, "connectors": {"a\nb": {}}}, env={})
    assert all("\n" not in line for line in refused.value.problems), refused.value.problems
    assert any(line.startswith("\\n: unknown key") for line in refused.value.problems), refused.value.problems


def test_zoho_records_the_fuzzer_found() -> None:
    sample = _samples("zoho_crm")[0]
    overflow = {**sample, "Appointment_End_Time": None, "Duration": 10**12}
    record = _read("zoho_crm", overflow)
    assert record.appointment is None and record.error is not None and "Duration" in str(record.error)
    cancelled = {**sample, "Status": "Cancelled", "Cancellation_Note": 5}
    assert _read("zoho_crm", cancelled) is not None  # a non-text reason is no crash
