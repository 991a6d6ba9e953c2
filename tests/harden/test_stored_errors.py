"""Stored vendor messages are reduced (docs/reference.md §7 "PHI in the ledger"): a vendor 400 whose
message carries a patient's name and a clinical note leaves neither in ``dead_letters.reason``,
``outbox.last_error`` nor ``deadletters list --json``; the vendor's code stays."""

from __future__ import annotations

import json
from pathlib import Path

import sqlalchemy as sa

from syncd.errors import Rejected
from syncd.ledger.errortext import REDACTED, reduce_vendor_message, stored_error
from tests.daemon_support import cli
from tests.scenarios.harness import make_world

SF_CREATE = "/services/data/v*/connect/health/appointment-management/appointment"
NAME = "Wilhelmina Quarterstaff"
NOTE = "suspected melanoma on left shoulder, refer urgently to dermatology"
MESSAGE = f"Patient {NAME} cannot be booked: {NOTE}. Contact wq@example.org or +44 7700 900123"


def test_reducer_keeps_codes_fixed_words_and_ids_and_drops_names_and_free_text() -> None:
    reduced = reduce_vendor_message(MESSAGE)
    for word in ("Wilhelmina", "Quarterstaff", "melanoma", "shoulder", "dermatology", "wq@", "7700"):
        assert word not in reduced, reduced
    assert reduced.startswith("Patient [redacted] cannot be booked:") and "[email]" in reduced, reduced
    # what the vendors' own fixed messages say survives word for word
    for fixed in ("The appointment can not be updated as the current status is: Completed",
                  "Doctor is not available at 10:30", "deferred until 2026-12-08T09:30:00Z",
                  "set connectors.saludya.default_location, then syncd deadletters retry",
                  "Syncd_Id__c duplicate value found: apt_01JD5K8Q2M"):
        assert reduce_vendor_message(fixed) == fixed
    error = Rejected(MESSAGE, code="FIELD_CUSTOM_VALIDATION_EXCEPTION", status=400)
    assert error.describe().startswith("FIELD_CUSTOM_VALIDATION_EXCEPTION HTTP 400: Patient [redacted]")
    assert NAME.split()[0] not in str(error) and error.message == MESSAGE  # the connector keeps the words
    assert stored_error("x" * 900) is not None and len(stored_error("x" * 900) or "") == 500
    assert REDACTED in reduce_vendor_message("Quarterstaff")


async def test_vendor_400_with_name_and_note_is_stored_reduced(tmp_path: Path, ledger_url: str) -> None:
    world = await make_world(tmp_path, ledger_url, {"zoho": "zoho_crm", "sf": "salesforce_health"}, n_appointments=2)
    try:
        await world.seed("zoho")
        await world.seed("sf", appointments=False)
        await world.import_crosswalk()
        await world.fault("sf", "POST", SF_CREATE, {"type": "status", "status": 400, "body": [
            {"errorCode": "FIELD_CUSTOM_VALIDATION_EXCEPTION", "message": MESSAGE}]}, times=50)
        result = await world.resync()
        assert result.exit_code == 1, result.document
        code, out, err = await cli(world.config_path, "deadletters", "list", "--json")
        assert code == 0, err
        letters = json.loads(out)["dead_letters"]
        assert letters and all(dl["connector"] == "sf" for dl in letters), letters
        ledger = await world.ledger()
        async with ledger.engine.connect() as conn:
            rows = [str(r) for r in (await conn.execute(sa.text(
                "SELECT reason FROM dead_letters UNION ALL SELECT COALESCE(last_error, '') FROM outbox "
                "UNION ALL SELECT reason FROM conflicts UNION ALL SELECT COALESCE(last_error, '') FROM cursors"
            ))).all()]
        stored = out + err + "\n".join(rows)
        for secret in ("Wilhelmina", "Quarterstaff", "melanoma", "shoulder", "dermatology", "wq@example", "7700 900"):
            assert secret not in stored, (secret, stored[:2000])
        assert all("FIELD_CUSTOM_VALIDATION_EXCEPTION" in dl["reason"] for dl in letters), letters
        assert all("[redacted]" in dl["reason"] for dl in letters), letters
    finally:
        await world.stop()
