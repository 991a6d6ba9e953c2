"""The administrator's commands over real sandboxes and a real ledger (SQLite and PostgreSQL):
``deadletters show`` and ``retry --dry-run``, the crosswalk corrections (``--dry-run``, ``--replace``,
``remove``, Excel's byte-order mark), read-only commands without vendor secrets, progress on a
terminal only, and human output without Python reprs or patient data."""

from __future__ import annotations

import asyncio
import json
import os
import pty
import re
import sys
from collections.abc import AsyncIterator
from pathlib import Path

import pytest
from click.testing import CliRunner

from syncd.cli import main
from tests.scenarios.harness import World, pair_world

MEMBERS = {"sf": "salesforce_health", "dentally": "dentally"}
REPR = re.compile(r"\{'|=None\b|\bNone\b|\[\]|\(\)")


async def _world(tmp_path: Path, ledger_url: str) -> World:
    w = await pair_world(tmp_path, ledger_url, MEMBERS, source="sf", n=2)
    try:
        await w.import_crosswalk(skip=[("dentally", "patient", w.dataset.appointments[0].patient)])
        first = await w.resync()
        assert first.exit_code == 1, first.document
    except BaseException:
        await w.stop()
        raise
    return w


@pytest.fixture
async def world(tmp_path: Path, ledger_url: str) -> AsyncIterator[World]:
    """Salesforce holds two appointments; the first one's patient has no Dentally crosswalk row, so the
    first resync dead-letters the creates of that patient's appointments in Dentally."""
    w = await _world(tmp_path, ledger_url)
    try:
        yield w
    finally:
        await w.stop()


@pytest.fixture
async def sqlite_world(tmp_path: Path) -> AsyncIterator[World]:
    """The same on SQLite only, for tests where the ledger's database does not matter."""
    w = await _world(tmp_path, f"sqlite+aiosqlite:///{tmp_path / 'ledger.db'}")
    try:
        yield w
    finally:
        await w.stop()


async def cli(config: Path, *args: str) -> tuple[int, str, str]:
    """``syncd --config <file> <args>`` in this process (in a worker thread: the sandboxes serve on this
    test's event loop): (exit code, stdout, stderr)."""
    result = await asyncio.to_thread(CliRunner().invoke, main, ["--config", str(config), *args])
    return result.exit_code, result.stdout, result.stderr


def _missing_row(world: World) -> tuple[str, str]:
    patient = world.dataset.appointments[0].patient
    return patient, world.external("dentally", "patient", patient)


async def test_deadletters_show_names_the_source_record_redacted_values_and_the_next_step(world: World) -> None:
    code, out, _ = await cli(world.config_path, "deadletters", "list", "--json")
    letters = json.loads(out)["dead_letters"]
    assert code == 0 and letters
    letter = letters[0]
    code, out, _ = await cli(world.config_path, "deadletters", "show", str(letter["id"]), "--json")
    doc = json.loads(out)["dead_letter"]
    assert code == 0 and doc["id"] == letter["id"] and doc["kind"] == "missing_reference"
    sf_id = await world.link(doc["canonical_id"], "sf")
    assert doc["source"] == {"connector": "sf", "external_id": sf_id}
    assert doc["systems"]["sf"]["external_id"] == sf_id
    values = doc["systems"]["canonical"]["values"]
    assert values["status"] == "booked" and values["patient"] == world.dataset.appointments[0].patient
    assert values["notes"] is None or values["notes"].startswith("len=")  # free text: length and digest only
    assert "syncd crosswalk import" in doc["next"] and f"syncd deadletters retry {letter['id']}" in doc["next"]

    code, human, _ = await cli(world.config_path, "deadletters", "show", str(letter["id"]))
    assert code == 0 and f"dead letter #{letter['id']} (open): missing_reference on dentally" in human
    assert f"source record: sf {sf_id}" in human and "next: import the missing crosswalk row" in human
    code, listing, _ = await cli(world.config_path, "deadletters", "list")
    for text in (human, listing):
        assert not REPR.search(text), text
    for appointment in world.dataset.appointments:  # no free text or name of the seeded data
        assert not appointment.notes or appointment.notes not in human
    for person in world.dataset.patients:
        for value in (person.family, person.email, person.phone):
            assert value not in human and value not in listing
    code, out, _ = await cli(world.config_path, "deadletters", "show", "424242")
    assert code == 1 and out == ""


async def test_retry_dry_run_says_what_it_would_do_and_changes_nothing(world: World, tmp_path: Path) -> None:
    before = await world.write_requests("dentally")
    code, out, _ = await cli(world.config_path, "deadletters", "retry", "--all", "--dry-run", "--json")
    doc = json.loads(out)
    assert code == 0 and doc["dry_run"] is True and doc["results"], doc
    assert all(r["result"] == "would retry" and r["would"] for r in doc["results"]), doc
    assert await world.write_requests("dentally") == before
    assert len(await world.dead_letters()) == len(doc["results"])  # still open
    # fix the cause, retry for real: done
    patient, external = _missing_row(world)
    fix = tmp_path / "fix.csv"
    fix.write_text(f"kind,key,connector,external_id\npatient,{patient},dentally,{external}\n", encoding="utf-8")
    assert (await cli(world.config_path, "crosswalk", "import", str(fix)))[0] == 0
    code, out, _ = await cli(world.config_path, "deadletters", "retry", "--all", "--json")
    assert code == 0 and all(r["result"] == "done" for r in json.loads(out)["results"]), out
    assert await world.dead_letters() == []


async def test_crosswalk_dry_run_replace_remove_and_excel_bom(world: World, tmp_path: Path) -> None:
    patient, external = _missing_row(world)
    excel = tmp_path / "excel.csv"  # Excel's "CSV UTF-8": a byte-order mark, CRLF line ends
    excel.write_bytes(f"\ufeffkind,key,connector,external_id\r\npatient,{patient},dentally,99999\r\n".encode())
    code, out, _ = await cli(world.config_path, "crosswalk", "import", str(excel), "--dry-run", "--json")
    assert code == 0 and json.loads(out) == {"added": 1, "dry_run": True, "not_applied": 0, "ok": True,
                                             "problems": [], "replaced": 0, "unchanged": 0}
    assert (await cli(world.config_path, "crosswalk", "export"))[1].count(f"patient,{patient},dentally") == 0
    assert (await cli(world.config_path, "crosswalk", "import", str(excel)))[0] == 0  # a wrong id, imported

    right = tmp_path / "right.csv"
    right.write_text(f"kind,key,connector,external_id\npatient,{patient},dentally,{external}\n", encoding="utf-8")
    code, _, err = await cli(world.config_path, "crosswalk", "import", str(right))
    assert code == 1 and "key already maps to another external id (not applied)" in err
    code, out, _ = await cli(world.config_path, "crosswalk", "import", str(right), "--replace")
    assert code == 0 and "0 added, 1 replaced, 0 already present, 0 not applied" in out
    exported = (await cli(world.config_path, "crosswalk", "export"))[1]
    assert f"patient,{patient},dentally,{external}" in exported and "99999" not in exported

    code, out, _ = await cli(world.config_path, "crosswalk", "remove", "patient", patient, "dentally", "--dry-run")
    assert code == 0 and f"would remove patient {patient} on dentally" in out
    assert f"patient,{patient},dentally" in (await cli(world.config_path, "crosswalk", "export"))[1]
    code, out, _ = await cli(world.config_path, "crosswalk", "remove", "patient", patient, "dentally", "--json")
    assert code == 0 and json.loads(out)["removed"] == [{"connector": "dentally", "key": patient, "kind": "patient"}]
    assert f"patient,{patient},dentally" not in (await cli(world.config_path, "crosswalk", "export"))[1]
    code, _, err = await cli(world.config_path, "crosswalk", "remove", "patient", patient, "dentally")
    assert code == 1 and "no patient" in err
    code, _, err = await cli(world.config_path, "crosswalk", "remove", "appointment", "A-1", "sf")
    assert code == 1 and "would create a duplicate" in err


async def test_read_only_commands_run_without_vendor_secrets(sqlite_world: World, tmp_path: Path) -> None:
    """Every secret of the config as ${NAME} with nothing in the environment: what reads the ledger
    runs; what talks to a vendor stops with the config error naming the variable."""
    world = sqlite_world
    text = world.config_path.read_text(encoding="utf-8")
    for key in ("client_secret", "refresh_token", "access_token", "webhook_secret"):
        text = re.sub(rf'^{key} = ".*"$', f'{key} = "${{SECRET_{key.upper()}}}"', text, flags=re.M)
    world.config_path.write_text(text, encoding="utf-8")
    for args in (("status",), ("deadletters", "list"), ("conflicts", "list"), ("crosswalk", "export"),
                 ("deadletters", "show", "1"), ("deadletters", "retry", "--all", "--dry-run"), ("db", "upgrade")):
        code, out, err = await cli(world.config_path, *args, "--json")
        assert code in (0, 1) and json.loads(out), (args, err[-1000:])
        assert "SECRET_" not in err, (args, err)
    for args in (("resync",), ("check-config",), ("doctor",)):
        code, out, err = await cli(world.config_path, *args, "--json")
        doc = json.loads(out)
        assert code == 2 and doc["error"]["code"] == "config_error", (args, out)
        assert any("environment variable SECRET_CLIENT_SECRET is not set" in p for p in doc["error"]["problems"])


def _run_on_a_terminal(args: list[str], cwd: Path) -> tuple[int, str]:
    """Run syncd with its stderr on a pseudo-terminal; (exit code, what the terminal showed)."""
    import subprocess

    leader, follower = pty.openpty()
    env = {**os.environ, "COLUMNS": "120", "TERM": "xterm"}
    proc = subprocess.Popen([sys.executable, "-m", "syncd", *args], stdin=subprocess.DEVNULL,
                            stdout=subprocess.DEVNULL, stderr=follower, cwd=cwd, env=env)
    os.close(follower)
    chunks: list[bytes] = []
    while True:
        try:
            data = os.read(leader, 65536)
        except OSError:
            break
        if not data:
            break
        chunks.append(data)
    os.close(leader)
    return proc.wait(timeout=120), b"".join(chunks).decode(errors="replace")


async def test_progress_shows_on_a_terminal_and_never_under_json_or_in_a_pipe(
    sqlite_world: World, tmp_path: Path
) -> None:
    world = sqlite_world
    config = str(world.config_path)
    code, shown = await asyncio.to_thread(_run_on_a_terminal, ["resync", "--config", config], tmp_path)
    assert code in (0, 1) and "resync" in shown and "\x1b[" in shown, shown[-2000:]  # a live line (ANSI)
    code, shown = await asyncio.to_thread(_run_on_a_terminal, ["resync", "--json", "--config", config], tmp_path)
    assert "\x1b[" not in shown and "⠋" not in shown
    code, _, err = await cli(world.config_path, "resync")  # not a terminal: logs only, no live line
    assert "\x1b[" not in err
