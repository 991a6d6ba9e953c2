"""Fuzzing every mapping's vendor -> canonical direction (issue 18 item 5): whatever a vendor returns
for an appointment (a field missing, of another type, out of range, a date that is no date), the
connector turns it into a record or a dead letter (``VendorRecord.error``, a ``MappingError`` naming
the problem), never an exception that would fail the whole page, every page, forever."""

from __future__ import annotations

import copy
import importlib
from collections.abc import Mapping
from datetime import UTC, datetime
from functools import cache
from typing import Any

from hypothesis import given
from hypothesis import strategies as st

import connectors as connector_factory
from syncd.config import load_config
from syncd.connector import VendorRecord
from syncd.errors import MappingError
from syncd.model import Appointment
from syncd.sandboxkit.seedgen import generate
from tests.fuzz.support import FUZZ, JSON, SCALAR
from tests.scenarios.harness import _is_appointment

REPO_CONFIG = "config.toml"
VENDORS = {"salesforce_health": "sf", "zoho_crm": "zoho", "saludya": "saludya", "onlive": "onlive",
           "dentally": "dentally"}


@cache
def _connector(vendor: str) -> Any:
    config = load_config(REPO_CONFIG, secrets=False)
    return connector_factory.create_connector(config.connectors[VENDORS[vendor]])


@cache
def _samples(vendor: str) -> tuple[dict[str, Any], ...]:
    """Realistic records to mutate: the sandbox's seed, as its API answers them (Salesforce renders
    stored rows; the others store what they answer)."""
    module = importlib.import_module(f"connectors.{vendor}.sandbox")
    body, _rows = module.seed_body(generate(4, seed=11, now=datetime(2026, 12, 7, 9, tzinfo=UTC)))
    if vendor == "salesforce_health":
        from connectors.salesforce_health.sandbox.app import SalesforceHealthSandbox

        sandbox = SalesforceHealthSandbox()
        sandbox.seed(body)
        return tuple({**sandbox._render(rec, "v65.0"), "_assigned_resources": list(rec["_assigned"])}
                     for rec in sandbox.appts.values())
    return tuple(r for r in body.get("records", []) if _is_appointment(vendor, r))


def _mutated(draw: st.DrawFn, record: Mapping[str, Any]) -> dict[str, Any]:
    out = copy.deepcopy(dict(record))
    keys = sorted(out)
    for key in draw(st.lists(st.sampled_from(keys), max_size=len(keys), unique=True)):
        value = out[key]
        if isinstance(value, dict) and value and draw(st.booleans()):
            sub = draw(st.sampled_from(sorted(value)))
            value[sub] = draw(SCALAR | JSON)
        elif draw(st.integers(0, 4)) == 0:
            del out[key]
        else:
            out[key] = draw(SCALAR | JSON)
    for key, value in draw(st.dictionaries(st.text(max_size=12), SCALAR, max_size=2)).items():
        out.setdefault(key, value)
    return out


@st.composite
def _records(draw: st.DrawFn, vendor: str) -> dict[str, Any]:
    return _mutated(draw, draw(st.sampled_from(_samples(vendor))))


def _read(vendor: str, raw: dict[str, Any]) -> VendorRecord:
    connector = _connector(vendor)
    if vendor == "salesforce_health":
        resources = raw.get("_assigned_resources")
        listed = resources if isinstance(resources, list) else []
        external_id = raw.get("Id")
        result: VendorRecord = connector._record(str(external_id), raw, [str(r) for r in listed])
    else:
        result = connector._record(raw)
    return result


def _check(record: VendorRecord) -> None:
    assert isinstance(record, VendorRecord)
    assert isinstance(record.external_id, str)
    if record.error is not None:
        assert isinstance(record.error, MappingError) and str(record.error), record.error
        return
    if record.appointment is not None:
        appointment = record.appointment
        assert isinstance(appointment, Appointment)
        for moment in (appointment.start, appointment.end):
            assert moment is None or (isinstance(moment, datetime) and moment.utcoffset() is not None), moment
        appointment.to_json()  # what the ledger stores: must serialise


def _property(vendor: str) -> Any:
    @FUZZ
    @given(raw=_records(vendor))
    def test(raw: dict[str, Any]) -> None:
        _check(_read(vendor, raw))

    test.__name__ = f"test_{vendor}_mapping_never_raises"
    return test


test_salesforce_health_mapping = _property("salesforce_health")
test_zoho_crm_mapping = _property("zoho_crm")
test_saludya_mapping = _property("saludya")
test_onlive_mapping = _property("onlive")
test_dentally_mapping = _property("dentally")


def test_the_samples_map_cleanly() -> None:
    """The unmutated seed records map without error (so the fuzzing starts from records that work)."""
    for vendor in VENDORS:
        samples = _samples(vendor)
        assert samples, vendor
        for raw in samples:
            record = _read(vendor, raw)
            assert record.error is None and record.appointment is not None, (vendor, record.error)
