"""The command line: check-config, db upgrade, crosswalk import/export, status (docs/reference.md §4)."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest
from click.testing import CliRunner, Result

from syncd.cli import main

REPO = Path(__file__).resolve().parent.parent

CONFIG = """
[ledger]
url = "{url}"

[log]
level = "info"
format = "json"

[connectors.sf]
type = "salesforce_health"
base_url = "http://127.0.0.1:8701"
token_url = "http://127.0.0.1:8701/services/oauth2/token"
client_id = "cid"
client_secret = "${{SF_SECRET}}"
refresh_token = "rt"
api_version = "65.0"

[connectors.dentally]
type = "dentally"
base_url = "http://127.0.0.1:8705"
access_token = "tok"
user_agent = "ua"

[[sync]]
name = "main"
members = ["sf", "dentally"]
"""


@pytest.fixture
def config_path(tmp_path: Path, ledger_url: str, monkeypatch: pytest.MonkeyPatch) -> str:
    path = tmp_path / "config.toml"
    path.write_text(CONFIG.format(url=ledger_url), encoding="utf-8")
    monkeypatch.setenv("SF_SECRET", "sf-secret-value")
    monkeypatch.chdir(tmp_path)
    return str(path)


def invoke(*args: str) -> Result:
    return CliRunner().invoke(main, list(args))


def test_db_upgrade_twice_then_status_json(config_path: str) -> None:
    """`db upgrade` migrates once, the second run is a no-op; `status --json` prints one document."""
    first = invoke("db", "upgrade", "--config", config_path)
    assert first.exit_code == 0, first.output
    assert "upgraded from empty to revision" in first.stdout
    second = invoke("--config", config_path, "db", "upgrade")
    assert second.exit_code == 0, second.output
    assert "already at revision" in second.stdout
    status = invoke("status", "--json", "--config", config_path)
    assert status.exit_code == 0, status.output
    document = json.loads(status.stdout)
    assert set(document["connectors"]) == {"sf", "dentally"}
    sf = document["connectors"]["sf"]
    assert sf["last_success_at"] is None and sf["inbox_pending"] == 0 and sf["sync_group"] == "main"
    assert document["dead_letters"] == 0 and document["open_conflicts"] == 0
    human = invoke("status", "--config", config_path)
    assert human.exit_code == 0 and "dentally" in human.stdout and "never" in human.stdout
    assert "sf-secret-value" not in status.output + human.output + first.output


def test_crosswalk_import_export_exit_codes(config_path: str, tmp_path: Path) -> None:
    """Import exits 0 and is idempotent; a contradicting row is reported and exits 1; export round-trips."""
    good = tmp_path / "cw.csv"
    good.write_text(
        "kind,key,connector,external_id\n"
        "patient,P-1,sf,001A\npatient,P-1,dentally,41\nappointment,A-1,sf,08pA\nappointment,A-1,dentally,77\n",
        encoding="utf-8",
    )
    first = invoke("crosswalk", "import", str(good), "--config", config_path)
    assert first.exit_code == 0, first.output
    assert "4 added, 0 already present, 0 not applied" in first.stdout
    again = invoke("crosswalk", "import", str(good), "--config", config_path)
    assert again.exit_code == 0 and "0 added, 4 already present" in again.stdout
    bad = tmp_path / "bad.csv"
    bad.write_text("kind,key,connector,external_id\npatient,P-1,sf,001B\npatient,P-2,sf,001C\n", encoding="utf-8")
    result = invoke("crosswalk", "import", str(bad), "--config", config_path)
    assert result.exit_code == 1
    assert result.stderr.splitlines()[0] == (
        "line 2: patient P-1 on sf: key already maps to another external id (not applied)"
    )
    out = invoke("crosswalk", "export", "--config", config_path)
    assert out.exit_code == 0
    assert out.stdout.splitlines() == [
        "kind,key,connector,external_id",
        "patient,P-1,dentally,41",
        "patient,P-1,sf,001A",
        "patient,P-2,sf,001C",
        "appointment,A-1,dentally,77",
        "appointment,A-1,sf,08pA",
    ]
    target = tmp_path / "out.csv"
    assert invoke("crosswalk", "export", str(target), "--config", config_path).exit_code == 0
    assert target.read_text(encoding="utf-8") == out.stdout


def test_status_before_upgrade_exits_3_without_creating_the_ledger(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    path = tmp_path / "config.toml"
    path.write_text(CONFIG.format(url=f"sqlite+aiosqlite:///{tmp_path}/ledger.db"), encoding="utf-8")
    monkeypatch.setenv("SF_SECRET", "x")
    result = invoke("status", "--config", str(path))
    assert result.exit_code == 3
    assert "syncd db upgrade" in result.stderr
    assert not (tmp_path / "ledger.db").exists()


def test_unreachable_ledger_exits_3(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    path = tmp_path / "config.toml"
    path.write_text(CONFIG.format(url="postgresql+asyncpg://syncd:pw-777@127.0.0.1:1/syncd"), encoding="utf-8")
    monkeypatch.setenv("SF_SECRET", "x")
    result = invoke("db", "upgrade", "--config", str(path))
    assert result.exit_code == 3
    assert "unreachable" in result.stderr and "pw-777" not in result.output


def test_config_from_environment_variable(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    path = tmp_path / "elsewhere.toml"
    path.write_text(CONFIG.format(url="sqlite+aiosqlite:///./x.db"), encoding="utf-8")
    monkeypatch.setenv("SF_SECRET", "x")
    monkeypatch.setenv("SYNCD_CONFIG", str(path))
    monkeypatch.chdir(tmp_path)
    result = invoke("check-config")
    assert result.exit_code == 0, result.output
    assert "2 connectors (sf, dentally)" in result.stdout


def test_check_config_validates_a_crosswalk_file(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    path = tmp_path / "config.toml"
    path.write_text(CONFIG.format(url="sqlite+aiosqlite:///./x.db"), encoding="utf-8")
    monkeypatch.setenv("SF_SECRET", "x")
    cw = tmp_path / "cw.csv"
    cw.write_text("kind,key,connector,external_id\npatient,P-1,zoho,1\n", encoding="utf-8")
    result = invoke("check-config", "--config", str(path), "--crosswalk", str(cw))
    assert result.exit_code == 2
    assert result.stderr.strip() == "crosswalk line 2: patient P-1: no connector named 'zoho' in the config"


def test_only_working_commands_are_registered() -> None:
    result = invoke("--help")
    assert result.exit_code == 0
    for name in ("check-config", "db", "crosswalk", "status"):
        assert name in result.stdout


def test_python_dash_m_is_the_same_program() -> None:
    env = {**os.environ, "SYNCD_CONFIG": str(REPO / "config.toml")}
    done = subprocess.run(
        [sys.executable, "-m", "syncd", "check-config"], capture_output=True, text=True, env=env, timeout=60
    )
    assert done.returncode == 0, done.stderr
    assert done.stdout.startswith("config OK:")
