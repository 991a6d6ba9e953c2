"""PHI never reaches the logs: the allowlist processor is the one redaction point.

The sentinels below go through every log call site syncd has (direct structlog calls with PHI
under unknown and known keys, exceptions, standard-library loggers, and the CLI commands that log)
and are looked for in the rendered stderr of the real processor chain. The same feed through the
chain *without* the allowlist leaks every sentinel, so these tests fail if the allowlist is removed.
"""

from __future__ import annotations

import asyncio
import io
import json
import logging
import os
import subprocess
import sys
from collections.abc import Iterator
from datetime import UTC, datetime
from pathlib import Path

import pytest
from click.testing import CliRunner

from syncd.cli import main
from syncd.logging import configure_logging, get_logger, mask_contact, resolve_format, scrub
from syncd.model import Appointment, Status
from tests.scenarios.harness import make_world

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


# -- the phone masker never mangles times, dates, durations or ids --------------------------------

KEPT = (
    "2026-12-07",
    "2026-12-07T10:02:11Z",
    "2026-12-07T10:02:11.123456+00:00",
    "2026-12-07T10:02:11+0530",
    "2026-12-07 10:02:11",
    "next run at: 2026-12-07 10:02:11 UTC (trigger: interval[0:01:00])",
    "20261207T100211Z",
    "2026/12/07 or 07/12/2026",
    "10:02:11",
    "PT1H30M and P1DT2H",
    "retry in 0.4832342 s",
    "took 1234 ms, waited 12.5 seconds, 30 s timeout",
    "Unix time 1733565600 or 1733565600123",
    "id 5725767000000524157",
    "dentally 777123 and 4182",
    "api v65.0, python 3.11.3",
    "http://127.0.0.1:8701/services/data",
    "cursor 2026-12-07T10:02:11Z|42",
)
PHONES = (
    "+34 611 222 333",
    "611222333",
    "611 222 333",
    "611-222-333",
    "611.222.333",
    "(020) 7946-0958",
    "020 7946 0958",
    "+44 20 7946 0958",
    "+442079460958",
    "+1-202-555-0143",
    "2025550143",
    "0034 611 222 333",
    "07700 900123",
    "+34 611.222",
    "611.222.333.444",
    "tel:611222333",
)


@pytest.mark.parametrize("text", KEPT)
def test_masker_keeps_timestamps_dates_durations_and_ids(text: str) -> None:
    """Nothing that is a time, a duration or an id becomes ``[phone]`` (APScheduler's "next run at:
    2026-12-07 10:02:11" used to)."""
    assert mask_contact(text) == text
    assert scrub(text) == text


@pytest.mark.parametrize("phone", PHONES)
def test_masker_still_masks_phone_numbers_and_emails(phone: str) -> None:
    """Real phone numbers are masked, also right beside a date or a time."""
    text = f"call {phone} on 2026-12-07 10:02:11, mail {EMAIL}"
    masked = mask_contact(text)
    scheme = "tel:" if phone.startswith("tel:") else ""
    assert masked == f"call {scheme}[phone] on 2026-12-07 10:02:11, mail [email]", masked
    digits = "".join(ch for ch in phone if ch.isdigit())
    assert digits not in "".join(ch for ch in masked if ch.isdigit())


def test_timestamps_survive_the_whole_chain_while_phones_do_not(capsys: pytest.CaptureFixture[str]) -> None:
    """A standard-library line (APScheduler's words) through the real chain keeps its times."""
    configure_logging("info", "json")
    message = ('Run time of job "poll:zoho (trigger: interval[0:01:00], next run at: 2026-12-07 10:02:11 UTC)" '
               "was missed")
    logging.getLogger("apscheduler.executors.default").warning(message + " by 0:00:02.5, caller %s", PHONE)
    line = json.loads(capsys.readouterr().err.strip().splitlines()[-1])
    assert line["event"] == message + " by 0:00:02.5, caller [phone]"
    assert line["logger"] == "apscheduler.executors.default" and line["level"] == "warning"


# -- every logger follows the configuration, also one taken at import --------------------------------


def _lines(err: str) -> list[str]:
    return [line for line in err.splitlines() if line.strip()]


def test_loggers_taken_at_import_follow_the_later_configuration(capsys: pytest.CaptureFixture[str]) -> None:
    """The engine's module-level logger (taken when syncd.engine.context was imported, long before any
    config was read), a connector's structlog proxy and a standard-library logger all switch format
    and level with every configure_logging."""
    from connectors.dentally import client as dentally_client
    from syncd.engine import context as core

    def emit() -> None:
        core.log.info("sync_decision", connector="dentally", op="updated")
        core.log.bind(connector="zoho").warning("connector_stopped", kind="auth")
        dentally_client.log.info("token_checked", connector="dentally")
        logging.getLogger("aiohttp.client").warning("stdlib line")

    configure_logging("info", "console")
    emit()
    lines = _lines(capsys.readouterr().err)
    assert len(lines) == 4, lines
    assert not any(line.lstrip().startswith("{") for line in lines), lines
    assert "sync_decision" in lines[0] and "connector=dentally" in lines[0] and "[syncd.engine]" in lines[0]
    assert "connector_stopped" in lines[1] and "connector=zoho" in lines[1]

    configure_logging("info", "json")
    emit()
    docs = [json.loads(line) for line in _lines(capsys.readouterr().err)]
    assert [d["event"] for d in docs] == ["sync_decision", "connector_stopped", "token_checked", "stdlib line"]
    assert docs[0]["logger"] == "syncd.engine" and docs[1]["connector"] == "zoho"

    configure_logging("warning", "json")
    emit()
    docs = [json.loads(line) for line in _lines(capsys.readouterr().err)]
    assert [d["event"] for d in docs] == ["connector_stopped", "stdlib line"]


def test_format_auto_is_console_on_a_terminal_and_json_otherwise() -> None:
    """``auto`` decides from stderr at configuration time; json and console always win."""
    class Tty(io.StringIO):
        def isatty(self) -> bool:
            return True

    assert resolve_format("auto", Tty()) == "console"
    assert resolve_format("auto", io.StringIO()) == "json"
    assert resolve_format("json", Tty()) == "json"
    assert resolve_format("console", io.StringIO()) == "console"


def _ledger_config(tmp_path: Path, log_table: str) -> Path:
    path = tmp_path / "config.toml"
    path.write_text(
        f'[ledger]\nurl = "sqlite+aiosqlite:///{tmp_path}/ledger.db"\n{log_table}\n'
        '[connectors.dentally]\ntype = "dentally"\nbase_url = "http://127.0.0.1:8705"\n'
        'access_token = "t"\nuser_agent = "syncd-tests (ops@clinic.example)"\n'
        '[connectors.saludya]\ntype = "saludya"\nbase_url = "http://127.0.0.1:8703"\napi_key = "k"\n'
        'timezone = "America/Bogota"\n[[sync]]\nname = "g"\nmembers = ["dentally", "saludya"]\n',
        encoding="utf-8",
    )
    return path


def _run_with_stderr_on_a_terminal(args: list[str]) -> tuple[int, str]:
    """Run ``syncd ARGS`` with stderr on a pseudo-terminal: (exit code, what the terminal showed)."""
    master, slave = os.openpty()
    try:
        proc = subprocess.run([sys.executable, "-m", "syncd", *args], stdin=subprocess.DEVNULL,
                              stdout=subprocess.DEVNULL, stderr=slave, timeout=60, check=False,
                              env={**os.environ, "NO_COLOR": "1"})
        os.close(slave)
        slave = -1
        chunks = []
        while True:
            try:
                chunk = os.read(master, 65536)
            except OSError:  # EIO: the terminal's other side is closed and drained
                break
            if not chunk:
                break
            chunks.append(chunk)
    finally:
        if slave >= 0:
            os.close(slave)
        os.close(master)
    return proc.returncode, b"".join(chunks).decode(errors="replace")


@pytest.mark.parametrize("log_table", ["", '[log]\nlevel = "info"\n', '[log]\nformat = "auto"\n'])
def test_unset_format_is_human_on_a_terminal_and_json_in_a_pipe(tmp_path: Path, log_table: str) -> None:
    """A real command with ``log.format`` unset (or ``auto``): text on a terminal, JSON lines in a pipe."""
    config = _ledger_config(tmp_path, log_table)
    code, shown = _run_with_stderr_on_a_terminal(["--config", str(config), "db", "upgrade"])
    assert code == 0, shown
    lines = _lines(shown)
    assert any("ledger_upgraded" in line for line in lines), shown
    assert not any(line.lstrip().startswith("{") for line in lines), shown
    assert any("revision=" in line for line in lines), shown

    piped = subprocess.run([sys.executable, "-m", "syncd", "--config", str(config), "db", "upgrade"],
                           capture_output=True, text=True, timeout=60, check=False)
    assert piped.returncode == 0, piped.stderr
    docs = [json.loads(line) for line in _lines(piped.stderr)]
    assert any(d["event"] == "ledger_upgraded" for d in docs), piped.stderr


def test_explicit_json_wins_on_a_terminal(tmp_path: Path) -> None:
    config = _ledger_config(tmp_path, '[log]\nformat = "json"\n')
    code, shown = _run_with_stderr_on_a_terminal(["--config", str(config), "db", "upgrade"])
    assert code == 0, shown
    docs = [json.loads(line) for line in _lines(shown)]
    assert any(d["event"] == "ledger_upgraded" for d in docs), shown


async def test_console_format_covers_the_engine_lines_of_a_real_resync(tmp_path: Path) -> None:
    """``log.format = "console"``: a resync over the sandboxes logs the engine's sync decisions, and not
    one of its lines is JSON (they used to be: the engine's logger was bound before the config was read)."""
    world = await make_world(tmp_path, f"sqlite+aiosqlite:///{tmp_path / 'ledger.db'}",
                             {"zoho": "zoho_crm", "dentally": "dentally"}, n_appointments=2)
    try:
        await world.seed("zoho")
        await world.seed("dentally", appointments=False)
        await world.import_crosswalk()
        text = world.config_path.read_text(encoding="utf-8")
        world.config_path.write_text(text.replace('level = "warning"\nformat = "json"',
                                                  'level = "info"\nformat = "console"'), encoding="utf-8")
        proc = await asyncio.create_subprocess_exec(
            sys.executable, "-m", "syncd", "--config", str(world.config_path), "resync", "--json",
            stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.PIPE,
        )
        out, err = await asyncio.wait_for(proc.communicate(), 120)
    finally:
        await world.stop()
    assert proc.returncode == 0, err.decode()[-3000:]
    assert json.loads(out)["connectors"]["dentally"]["created"] == 2
    lines = _lines(err.decode())
    decisions = [line for line in lines if "sync_decision" in line]
    assert len(decisions) >= 2, lines
    assert all("[syncd.engine]" in line and "op=" in line for line in decisions), decisions
    assert not [line for line in lines if line.lstrip().startswith("{")], lines
