"""``syncd demo`` end to end: run as a subprocess against the repository's ``config.toml``.

One run (about 20 seconds) is shared by the tests of this module: exit 0 with the six scripted
outcomes holding, a summary naming them, and no patient data anywhere in what it printed or logged.
"""

from __future__ import annotations

import json
import os
import re
import shutil
import subprocess
import sys
from collections.abc import Iterator
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path

import pytest

from syncd.demo import RECEPTION_NOTE, demo_datasets
from syncd.sandboxkit.seedgen import NOTES

ROOT = Path(__file__).resolve().parents[1]
TIMEOUT_S = 90


@dataclass(frozen=True)
class DemoRun:
    code: int
    stdout: str
    stderr: str
    log: str


@pytest.fixture(scope="module")
def demo_run(tmp_path_factory: pytest.TempPathFactory) -> Iterator[DemoRun]:
    cwd = tmp_path_factory.mktemp("demo")
    env = {**os.environ, "COLUMNS": "200", "NO_COLOR": "1"}
    env.pop("SYNCD_CONFIG", None)
    proc = subprocess.run(
        [sys.executable, "-m", "syncd", "demo", "--config", str(ROOT / "config.toml"), "--keep"],
        cwd=cwd, env=env, capture_output=True, text=True, timeout=TIMEOUT_S, check=False,
    )
    kept = re.search(r"ledger and JSON log kept in (\S+)", proc.stdout)
    log = ""
    if kept is not None:
        workdir = Path(kept.group(1))
        log_file = workdir / "syncd-demo.log"
        log = log_file.read_text(encoding="utf-8") if log_file.exists() else ""
        shutil.rmtree(workdir, ignore_errors=True)
    yield DemoRun(proc.returncode, proc.stdout, proc.stderr, log)


def test_demo_exits_0_with_all_outcomes_holding(demo_run: DemoRun) -> None:
    assert demo_run.code == 0, demo_run.stdout[-3000:] + demo_run.stderr[-2000:]
    assert "all 7 scripted outcomes hold" in demo_run.stdout


def test_summary_shows_the_scripted_outcomes(demo_run: DemoRun) -> None:
    out = demo_run.stdout
    summary = out[out.index("What just happened:"):]
    for number, title in (
        (1, "Reschedule in the CRM (zoho)"),
        (2, "Cancellation in the EHR (dentally)"),
        (3, "GET/PUT race on a write to sf"),
        (4, "Patient change that dentally forbids in place"),
        (5, "Missing crosswalk entry (patient, sf)"),
        (6, "Onboarding: bookings typed by hand in zoho and sf linked, not copied"),
        (7, "A booking born in saludya reaches onlive with its service type"),
    ):
        assert re.search(rf"[✓✗] {number}\. {re.escape(title)}", summary), (number, summary)
    assert "What syncd wrote, per target system" in out
    for name in ("sf", "zoho", "saludya", "onlive", "dentally"):
        assert re.search(rf"│ {name}\s+│", out), name
    # the SaludYa booking reached the CRM with the service its specialty maps to, at the default location
    assert re.search(r"7\. A booking born in saludya reaches onlive with its service type: booked in saludya "
                     r"\(apt_\w+\)\s+→\s+onlive\s+\S+\s+created\s+for\s+apt_\w+\s+with\s+service\s+SVC-\d+\s+at\s+LOC-1",
                     summary), summary
    # the dead letter's reason names the missing kind, key and connector
    assert re.search(r"missing crosswalk entry: patient P-\d+ for connector sf", summary)
    # live decisions were shown: creates in the first sync, the race's re-merge
    assert re.search(r"\bzoho\s+created\s+appt apt_", out)
    assert re.search(r"\bsf\s+re-merge\s+appt apt_", out)
    # onboarding: the records typed by hand were linked in the first sync, never copied
    assert re.search(r"\bzoho\s+linked\s+appt apt_", out) and re.search(r"\bsf\s+linked\s+appt apt_", out)
    assert re.search(r"6 records typed by hand in zoho and sf linked", summary)


def test_no_patient_data_in_output_or_log(demo_run: DemoRun) -> None:
    assert demo_run.stdout
    text = "\n".join((demo_run.stdout, demo_run.stderr, demo_run.log))
    leaks: list[str] = []
    for dataset in demo_datasets(datetime.now(UTC)):
        for patient in dataset.patients:
            for value in (f"{patient.given} {patient.family}", patient.email, patient.phone):
                if value in text:
                    leaks.append(value)
            if re.search(rf"\b{re.escape(patient.family)}\b", text):
                leaks.append(patient.family)
    for note in (*(n for n in NOTES if n), RECEPTION_NOTE):
        if note in text:
            leaks.append(note)
    assert not leaks, sorted(set(leaks))


def test_no_secret_in_output_or_log(demo_run: DemoRun) -> None:
    """Credentials (the sandboxes' documented ones here) and the tokens they buy never reach a log."""
    text = "\n".join((demo_run.stdout, demo_run.stderr, demo_run.log))
    assert demo_run.log, "the daemon's JSON log was read"
    for secret in ("sandbox-secret", "sandbox-refresh", "sandbox-token", "sandbox-key", "sandbox-webhook-secret",
                   "olsk/9fT3c2+a7E1b4D4e0F8a6B5c3EXAMPLE"):
        assert secret not in text, secret
    assert not re.search(r"(?i)\b(bearer|zoho-oauthtoken)\s+\S", text)


def test_demo_json_prints_one_document_and_moves_the_live_view_to_stderr(tmp_path: Path) -> None:
    """``syncd demo --json``: stdout is exactly one document with the outcome; the live view (the same
    story) goes to stderr."""
    env = {**os.environ, "COLUMNS": "200", "NO_COLOR": "1"}
    env.pop("SYNCD_CONFIG", None)
    proc = subprocess.run(
        [sys.executable, "-m", "syncd", "demo", "--json", "--config", str(ROOT / "config.toml")],
        cwd=tmp_path, env=env, capture_output=True, text=True, timeout=TIMEOUT_S, check=False,
    )
    doc = json.loads(proc.stdout)
    assert proc.returncode == 0 and doc["ok"] is True and doc["exit_code"] == 0, proc.stderr[-3000:]
    assert doc["duration_s"] > 0 and doc["kept"] is None
    assert re.search(r"all \d+ scripted outcomes hold", proc.stderr)
