"""PHI never reaches the logs: the allowlist processor is the one redaction point.

The sentinels below go through every log call site syncd has (direct structlog calls with PHI
under unknown and known keys, exceptions, standard-library loggers, and the CLI commands that log)
and are looked for in the rendered stderr of the real processor chain. The same feed through the
chain *without* the allowlist leaks every sentinel, so these tests fail if the allowlist is removed.
"""

from __future__ import annotations

import json
import logging
from collections.abc import Iterator
from datetime import UTC, datetime
from pathlib import Path

import pytest
from click.testing import CliRunner

from syncd.cli import main
from syncd.logging import configure_logging, get_logger, mask_contact
from syncd.model import Appointment, Status

NAME = "Zebulon Quixote"
PHONE = "+34 611 222 333"
PHONE_DIGITS = "611222333"
EMAIL = "zebulon.quixote@example.org"
NOTE = "allergic to penicillin"
DIAGNOSIS = "acute appendicitis"
TOKEN = "tokSENTINEL9f8e7d6c5b"
SECRET = "olsk/SENTINEL+secret"
SENTINELS = (NAME, PHONE, PHONE_DIGITS, EMAIL, NOTE, DIAGNOSIS, TOKEN, SECRET)


def appointment() -> Appointment:
    return Appointment(
        status=Status.BOOKED,
        start=datetime(2026, 12, 1, 9, tzinfo=UTC),
        end=datetime(2026, 12, 1, 9, 30, tzinfo=UTC),
        patient=EMAIL,
        description=NAME,
        notes=f"{NOTE}; {DIAGNOSIS}; call {PHONE}",
    )


def feed() -> None:
    """Every kind of call a careless (or careful) call site could make."""
    log = get_logger("syncd.test", connector="onlive")
    record = {"name": NAME, "phone": PHONE, "email": EMAIL, "notes": NOTE, "diagnosis": DIAGNOSIS}
    log.info("record_read", patient_name=NAME, phone=PHONE, notes=NOTE, diagnosis=DIAGNOSIS, record=record)
    log.info("record_read", appointment=appointment(), body=json.dumps(record).encode())
    log.info(
        "http_request",
        path=f"/api/v2/appointments?email={EMAIL}&token={TOKEN}",
        url=f"https://user:{SECRET}@vendor.example/x?access_token={TOKEN}",
        http_status=200,
    )
    log.info("token_refreshed", authorization=f"Bearer {TOKEN}", access_token=TOKEN, client_secret=SECRET)
    log.warning(f"write failed for {EMAIL} at {PHONE} with Bearer {TOKEN}", connector="onlive")
    log.info(
        "written",
        external_id=EMAIL,
        canonical_id="A-1",
        status=appointment(),
        counts={"read": 3},
        fields=["notes", "patient"],
        code=f"token={TOKEN}",
        op=record,
        kind=[NAME, DIAGNOSIS],
    )
    try:
        raise ValueError(f"patient {NAME} ({EMAIL}, {PHONE}): {DIAGNOSIS}")
    except ValueError:
        log.exception("record_failed", canonical_id="A-1")
        log.error("record_failed", exc_info=True)
    std = logging.getLogger("aiohttp.access")
    std.warning("GET /x?email=%s&token=%s %s", EMAIL, TOKEN, PHONE)
    try:
        raise RuntimeError(f"{NAME} {DIAGNOSIS}")
    except RuntimeError:
        logging.getLogger("apscheduler").exception("job failed")


@pytest.fixture(autouse=True)
def _reset_logging() -> Iterator[None]:
    yield
    configure_logging("info", "json")


@pytest.mark.parametrize("fmt", ["json", "console"])
def test_no_phi_in_logs(capsys: pytest.CaptureFixture[str], fmt: str) -> None:
    """Names, phones, e-mails, notes, diagnoses and tokens never appear in rendered log output."""
    configure_logging("debug", fmt)
    feed()
    err = capsys.readouterr().err
    assert err.count("\n") >= 9, err
    for sentinel in SENTINELS:
        assert sentinel not in err, f"{sentinel!r} leaked:\n{err}"
    assert "record_read" in err and "record_failed" in err and "ValueError" in err
    if fmt == "json":
        lines = [json.loads(line) for line in err.splitlines() if line.startswith("{")]
        written = next(line for line in lines if line["event"] == "written")
        assert written["canonical_id"] == "A-1" and written["counts"] == {"read": 3}
        assert written["fields"] == ["notes", "patient"] and written["connector"] == "onlive"
        assert written["status"] == "[redacted]" and written["external_id"] == "[email]"
        http = next(line for line in lines if line["event"] == "http_request")
        assert http["path"] == "/api/v2/appointments" and http["http_status"] == 200


def test_without_the_allowlist_the_same_feed_leaks(capsys: pytest.CaptureFixture[str]) -> None:
    """Proof the test above has teeth: the chain minus the allowlist leaks every sentinel."""
    configure_logging("debug", "json", redact=False)
    feed()
    err = capsys.readouterr().err
    for sentinel in (NAME, EMAIL, NOTE, DIAGNOSIS, TOKEN, SECRET):
        assert sentinel in err, sentinel


def test_cli_call_sites_log_no_phi_or_secrets(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    """db upgrade, crosswalk import (with e-mail patient ids and a contradiction) and status."""
    config = tmp_path / "config.toml"
    config.write_text(
        f"""
[ledger]
url = "sqlite+aiosqlite:///{tmp_path}/ledger.db"
[log]
level = "debug"
[connectors.onlive]
type = "onlive"
base_url = "http://127.0.0.1:8704"
access_key_id = "${{OL_KEY}}"
secret_access_key = "${{OL_SECRET}}"
[connectors.saludya]
type = "saludya"
base_url = "http://127.0.0.1:8703"
api_key = "${{OL_KEY}}"
timezone = "America/Bogota"
[[sync]]
name = "b"
members = ["onlive", "saludya"]
""",
        encoding="utf-8",
    )
    monkeypatch.setenv("OL_KEY", TOKEN)
    monkeypatch.setenv("OL_SECRET", SECRET)
    crosswalk = tmp_path / "cw.csv"
    crosswalk.write_text(
        f"kind,key,connector,external_id\npatient,P-1,onlive,{EMAIL}\npatient,P-2,onlive,{EMAIL}\n"
        f"patient,P-3,saludya,{PHONE_DIGITS}\npatient,P-3,saludya,{NAME}\n",
        encoding="utf-8",
    )
    runner = CliRunner()
    outputs = []
    for args in (
        ["db", "upgrade"],
        ["crosswalk", "import", str(crosswalk)],
        ["status", "--json"],
        ["check-config"],
    ):
        result = runner.invoke(main, [*args, "--config", str(config)])
        assert result.exit_code in (0, 1), result.output
        outputs.append(result.output)
    text = "\n".join(outputs) + capsys.readouterr().err
    assert "crosswalk_imported" in text and "ledger_upgraded" in text
    for sentinel in SENTINELS:
        assert sentinel not in text, f"{sentinel!r} leaked:\n{text}"


def test_mask_contact() -> None:
    """Vendor messages keep their meaning, lose contact details; ids and dates survive."""
    text = f"Patient {EMAIL} / {PHONE} / (020) 7946-0958 already booked on 2026-12-01, id 5725767000000524157"
    assert mask_contact(text) == (
        "Patient [email] / [phone] / [phone] already booked on 2026-12-01, id 5725767000000524157"
    )
