"""Config loading (docs/reference.md §2): every problem on its own line naming the key, exit 2."""

from __future__ import annotations

import dataclasses
from pathlib import Path

import pytest
from click.testing import CliRunner

from syncd import registry
from syncd.cli import main
from syncd.config import load_config, resolve_config_path
from syncd.errors import ConfigError
from syncd.secret import Secret

REPO = Path(__file__).resolve().parent.parent

BASE = """
[ledger]
url = "sqlite+aiosqlite:///./x.db"

[connectors.zoho]
type = "zoho_crm"
base_url = "http://127.0.0.1:8702"
accounts_url = "http://127.0.0.1:8702"
client_id = "cid"
client_secret = "${ZOHO_SECRET}"
refresh_token = "rt"

[connectors.dentally]
type = "dentally"
base_url = "http://127.0.0.1:8705"
access_token = "tok"
user_agent = "syncd/0.1 (ops@clinic.example)"

[[sync]]
name = "main"
members = ["zoho", "dentally"]
"""
ENV = {"ZOHO_SECRET": "s3cr3t-zoho-value"}


def write(tmp_path: Path, text: str) -> str:
    path = tmp_path / "config.toml"
    path.write_text(text, encoding="utf-8")
    return str(path)


def test_base_config_loads_with_vendor_defaults(tmp_path: Path) -> None:
    """A minimal config loads; absent keys take the per-vendor defaults of docs/vendors/."""
    config = load_config(write(tmp_path, BASE), env=ENV)
    zoho, dentally = config.connectors["zoho"], config.connectors["dentally"]
    assert (zoho.poll_interval, zoho.max_requests_per_second, zoho.timezone) == (120.0, 2.0, "UTC")
    assert (dentally.poll_interval, dentally.max_requests_per_second) == (60.0, 1.0)
    assert dentally.timezone == "Europe/London"
    assert zoho.auth_value("client_secret") == "s3cr3t-zoho-value"
    assert set(zoho.auth) == set(registry.get("zoho_crm").secret_keys)
    group = config.sync[0]
    assert group.create_in == ("zoho", "dentally")
    assert group.owners["status"] == "*"
    assert config.group_of("dentally") is group
    assert config.server.port == 8080 and config.log.format == "auto"


def test_config_objects_are_immutable_and_hide_secrets(tmp_path: Path) -> None:
    """Printing the config never shows a secret, and the objects cannot be changed."""
    text = BASE.replace(
        'url = "sqlite+aiosqlite:///./x.db"', 'url = "postgresql+asyncpg://syncd:pg-pass-123@db/syncd"'
    ).replace('user_agent = "syncd/0.1 (ops@clinic.example)"', 'user_agent = "ua"\nwebhook_secret = "whsec-999"')
    config = load_config(write(tmp_path, text), env=ENV)
    shown = repr(config) + str(config)
    for secret in ("s3cr3t-zoho-value", "pg-pass-123", "whsec-999", '"tok"', "'tok'"):
        assert secret not in shown
    assert isinstance(config.connectors["dentally"].webhook_secret, Secret)
    with pytest.raises(dataclasses.FrozenInstanceError):
        config.connectors["zoho"].base_url = "x"  # type: ignore[misc]
    with pytest.raises(TypeError):
        config.connectors["new"] = config.connectors["zoho"]  # type: ignore[index]


def test_repository_config_is_valid() -> None:
    """The repository's example config.toml loads as it is."""
    config = load_config(str(REPO / "config.toml"), env={})
    assert set(config.connectors) == {"sf", "zoho", "saludya", "onlive", "dentally"}
    assert [g.name for g in config.sync] == ["crm-ehr", "clinic-b"]
    assert config.ledger.url.startswith("sqlite+aiosqlite://")


def test_path_resolution(monkeypatch: pytest.MonkeyPatch) -> None:
    """--config, else $SYNCD_CONFIG, else ./config.toml."""
    monkeypatch.delenv("SYNCD_CONFIG", raising=False)
    assert resolve_config_path(None) == "config.toml"
    monkeypatch.setenv("SYNCD_CONFIG", "/etc/syncd.toml")
    assert resolve_config_path(None) == "/etc/syncd.toml"
    assert resolve_config_path("mine.toml") == "mine.toml"


def _replace(old: str, new: str) -> str:
    assert old in BASE
    return BASE.replace(old, new)


BROKEN: list[tuple[str, str, dict[str, str], str]] = [
    (
        "unknown-top-level-key",
        BASE + "\n[metrics]\nport = 1\n",
        ENV,
        "metrics: unknown key (valid keys: ledger, server, log, connectors, sync)",
    ),
    (
        "unknown-connector-key",
        _replace('refresh_token = "rt"', 'refresh_token = "rt"\nbase_ulr = "http://x"'),
        ENV,
        "connectors.zoho.base_ulr: unknown key; did you mean 'base_url'?",
    ),
    (
        "unset-env-variable",
        BASE,
        {},
        "connectors.zoho.client_secret: environment variable ZOHO_SECRET is not set (set it, or give it to "
        "syncd as a systemd credential: LoadCredential=ZOHO_SECRET:/path/to/file)",
    ),
    (
        "wrong-type-port",
        BASE + '\n[server]\nport = "eighty"\n',
        ENV,
        "server.port: expected an integer, got a string",
    ),
    (
        "bad-connector-name",
        _replace("[connectors.dentally]", "[connectors.Dentally-1]").replace('"dentally"]', '"Dentally-1"]'),
        ENV,
        "connectors.Dentally-1: connector name must match [a-z][a-z0-9_]{0,31}",
    ),
    (
        "unknown-connector-type",
        _replace('type = "dentally"', 'type = "dentaly"'),
        ENV,
        "connectors.dentally.type: must be one of salesforce_health, zoho_crm, saludya, onlive, dentally, "
        "got 'dentaly'; did you mean 'dentally'?",
    ),
    (
        "missing-auth-key",
        _replace('access_token = "tok"\n', ""),
        ENV,
        "connectors.dentally.access_token: required for type dentally",
    ),
    (
        "missing-base-url",
        _replace('base_url = "http://127.0.0.1:8702"\n', ""),
        ENV,
        "connectors.zoho.base_url: required key is missing",
    ),
    (
        "base-url-not-http",
        _replace('base_url = "http://127.0.0.1:8702"', 'base_url = "127.0.0.1:8702"'),
        ENV,
        "connectors.zoho.base_url: must be an http:// or https:// URL",
    ),
    (
        "sync-member-names-nothing",
        _replace('members = ["zoho", "dentally"]', 'members = ["zoho", "dentaly"]'),
        ENV,
        "sync[0].members[1]: no connector named 'dentaly'; did you mean 'dentally'?",
    ),
    (
        "owner-names-nothing",
        _replace('members = ["zoho", "dentally"]', 'members = ["zoho", "dentally"]\nowners = { status = "sf" }'),
        ENV,
        "sync[0].owners.status: 'sf' is not a member of this sync group (or \"*\")",
    ),
    (
        "owner-unknown-field",
        _replace('members = ["zoho", "dentally"]', 'members = ["zoho", "dentally"]\nowners = { colour = "*" }'),
        ENV,
        "sync[0].owners.colour: unknown canonical field (one of status, start, end, patient, practitioner, "
        "location, service_type, description, notes, cancellation_reason)",
    ),
    (
        "create-in-not-member",
        _replace('members = ["zoho", "dentally"]', 'members = ["zoho", "dentally"]\ncreate_in = ["sf"]'),
        ENV,
        "sync[0].create_in[0]: no connector named 'sf'",
    ),
    (
        "too-few-members",
        _replace('members = ["zoho", "dentally"]', 'members = ["zoho"]'),
        ENV,
        "sync[0].members: a sync group needs at least 2 members",
    ),
    (
        "negative-poll-interval",
        _replace('refresh_token = "rt"', 'refresh_token = "rt"\npoll_interval = -5'),
        ENV,
        "connectors.zoho.poll_interval: must be >= 0 (0 = never poll)",
    ),
    (
        "zero-rate",
        _replace('refresh_token = "rt"', 'refresh_token = "rt"\nmax_requests_per_second = 0'),
        ENV,
        "connectors.zoho.max_requests_per_second: must be a positive number",
    ),
    (
        "bad-timezone",
        _replace('refresh_token = "rt"', 'refresh_token = "rt"\ntimezone = "Mars/Olympus"'),
        ENV,
        "connectors.zoho.timezone: unknown IANA time zone 'Mars/Olympus'",
    ),
    (
        "saludya-needs-timezone",
        BASE + '\n[connectors.sy]\ntype = "saludya"\nbase_url = "http://127.0.0.1:8703"\napi_key = "k"\n',
        ENV,
        "connectors.sy.timezone: required for type saludya (the clinic's IANA zone)",
    ),
    (
        "ledger-scheme",
        _replace('url = "sqlite+aiosqlite:///./x.db"', 'url = "sqlite:///./x.db"'),
        ENV,
        "ledger.url: must start with sqlite+aiosqlite:// or postgresql+asyncpg://",
    ),
    (
        "log-level",
        BASE + '\n[log]\nlevel = "verbose"\n',
        ENV,
        "log.level: must be one of debug, info, warning, error, got 'verbose'",
    ),
    (
        "bool-is-not-a-number",
        _replace('refresh_token = "rt"', 'refresh_token = "rt"\nwindow_past_days = true'),
        ENV,
        "connectors.zoho.window_past_days: expected an integer, got a boolean",
    ),
    (
        "connector-in-two-groups",
        BASE + '\n[[sync]]\nname = "other"\nmembers = ["dentally", "zoho"]\n',
        ENV,
        "sync[1].members: connector 'dentally' is already in sync group 'main'",
    ),
    (
        "unterminated-reference",
        _replace('refresh_token = "rt"', 'refresh_token = "${ZOHO_REFRESH_TOKEN"'),
        ENV,
        'connectors.zoho.refresh_token: unterminated variable reference: "${" without a closing "}" '
        '(write "${ZOHO_REFRESH_TOKEN}")',
    ),
    (
        "unterminated-reference-after-a-good-one",
        _replace('client_secret = "${ZOHO_SECRET}"', 'client_secret = "${ZOHO_SECRET}-${ZOHO_SUFFIX"'),
        ENV,
        'connectors.zoho.client_secret: unterminated variable reference: "${" without a closing "}" '
        '(write "${ZOHO_SUFFIX}")',
    ),
    (
        "unterminated-reference-that-is-no-name-is-not-echoed",
        _replace('client_id = "cid"', 'client_id = "cid${not a-name"'),
        ENV,
        'connectors.zoho.client_id: unterminated variable reference: "${" without a closing "}"',
    ),
    (
        "did-you-mean-auth-key",
        _replace('access_token = "tok"', 'acess_token = "tok"'),
        ENV,
        "connectors.dentally.acess_token: unknown key; did you mean 'access_token'?",
    ),
    (
        "key-of-another-connector-type",
        _replace('access_token = "tok"', 'access_token = "tok"\napi_key = "k"'),
        ENV,
        "connectors.dentally.api_key: unknown key here: 'api_key' is a key of type saludya",
    ),
    (
        "did-you-mean-section",
        BASE + '\n[loggin]\nlevel = "info"\n',
        ENV,
        "loggin: unknown key; did you mean 'log'?",
    ),
    (
        "did-you-mean-server-key",
        BASE + "\n[server]\nmax_body_size = 10\n",
        ENV,
        "server.max_body_size: unknown key; did you mean 'max_body_bytes'?",
    ),
    (
        "did-you-mean-log-format",
        BASE + '\n[log]\nformat = "jsno"\n',
        ENV,
        "log.format: must be one of auto, json, console, got 'jsno'; did you mean 'json'?",
    ),
    (
        "did-you-mean-owner-field",
        _replace('members = ["zoho", "dentally"]', 'members = ["zoho", "dentally"]\nowners = { stauts = "zoho" }'),
        ENV,
        "sync[0].owners.stauts: unknown canonical field (one of status, start, end, patient, practitioner, "
        "location, service_type, description, notes, cancellation_reason); did you mean 'status'?",
    ),
    (
        "invalid-toml",
        BASE + "\n[server\n",
        ENV,
        "config: invalid TOML:",
    ),
]


@pytest.mark.parametrize(("text", "env", "expected"), [c[1:] for c in BROKEN], ids=[c[0] for c in BROKEN])
def test_broken_config_reports_the_key_and_exits_2(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, text: str, env: dict[str, str], expected: str
) -> None:
    """Each broken config prints its exact problem line on stderr and exits 2 (check-config)."""
    path = write(tmp_path, text)
    with pytest.raises(ConfigError) as info:
        load_config(path, env=env)
    if expected.endswith(":"):
        assert any(p.startswith(expected) for p in info.value.problems), info.value.problems
    else:
        assert expected in info.value.problems
    for name in ("ZOHO_SECRET",):
        monkeypatch.delenv(name, raising=False)
    for name, value in env.items():
        monkeypatch.setenv(name, value)
    monkeypatch.chdir(tmp_path)
    result = CliRunner().invoke(main, ["check-config", "--config", path])
    assert result.exit_code == 2, result.output
    lines = result.stderr.splitlines()
    if expected.endswith(":"):
        assert any(line.startswith(expected) for line in lines), lines
    else:
        assert expected in lines
    assert not (tmp_path / "x.db").exists(), "the ledger must not be touched"


SALUDYA = BASE + """
[connectors.sy]
type = "saludya"
base_url = "http://127.0.0.1:8703"
api_key = "k"
timezone = "America/Bogota"
default_location = "LOC-1"
"""


def test_history_days_defaults_to_90_and_is_validated(tmp_path: Path) -> None:
    """``[ledger] history_days`` (docs/configuration.md): how long lineage is kept; a positive integer."""
    assert load_config(write(tmp_path, BASE), env=ENV).ledger.history_days == 90
    url = 'url = "sqlite+aiosqlite:///./x.db"'
    with_days = BASE.replace(url, f"{url}\nhistory_days = 30")
    config = load_config(write(tmp_path, with_days), env=ENV)
    assert config.ledger.history_days == 30 and config.ledger.url.endswith("/x.db")
    for bad, problem in (("0", "ledger.history_days: must be >= 1, got 0"),
                         ('"long"', "ledger.history_days: expected an integer, got a string")):
        with pytest.raises(ConfigError) as info:
            load_config(write(tmp_path, with_days.replace("history_days = 30", f"history_days = {bad}")), env=ENV)
        assert problem in info.value.problems, info.value.problems
    only_days = BASE.replace('url = "sqlite+aiosqlite:///./x.db"', "history_days = 7")
    assert load_config(write(tmp_path, only_days), env=ENV).ledger.history_days == 7


def test_default_location_is_read_and_validated(tmp_path: Path) -> None:
    """``default_location`` (docs/reference.md §2): optional, a crosswalk key; a malformed one is a config
    error naming the key."""
    config = load_config(write(tmp_path, SALUDYA), env=ENV)
    assert config.connectors["sy"].default_location == "LOC-1"
    assert config.connectors["zoho"].default_location is None
    with pytest.raises(ConfigError) as info:
        load_config(write(tmp_path, SALUDYA.replace('"LOC-1"', '"Main street 1"')), env=ENV)
    assert [p for p in info.value.problems if p.startswith("connectors.sy.default_location: must be a crosswalk key")]
    with pytest.raises(ConfigError) as info:
        load_config(write(tmp_path, SALUDYA.replace('"LOC-1"', "1")), env=ENV)
    assert "connectors.sy.default_location: expected a string, got an integer" in info.value.problems


def test_check_config_finds_a_default_location_missing_from_the_crosswalk(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    path = write(tmp_path, SALUDYA)
    monkeypatch.setenv("ZOHO_SECRET", "x")
    monkeypatch.chdir(tmp_path)
    cw = tmp_path / "cw.csv"
    cw.write_text("kind,key,connector,external_id\nlocation,LOC-2,zoho,Business Address\n", encoding="utf-8")
    result = CliRunner().invoke(main, ["check-config", "--config", path, "--crosswalk", str(cw)])
    assert result.exit_code == 2, result.output
    assert result.stderr.splitlines() == [
        f"connectors.sy.default_location: location 'LOC-1' is not in the crosswalk {cw}; add a row "
        "location,LOC-1,<connector>,<its id there> for each member that needs a location"]
    cw.write_text("kind,key,connector,external_id\nlocation,LOC-1,zoho,Business Address\n", encoding="utf-8")
    result = CliRunner().invoke(main, ["check-config", "--config", path, "--crosswalk", str(cw)])
    assert result.exit_code == 0, result.output
    assert not (tmp_path / "x.db").exists(), "the ledger must not be touched"


def test_every_problem_is_reported_at_once(tmp_path: Path) -> None:
    """Several problems give several lines, not just the first."""
    text = _replace('base_url = "http://127.0.0.1:8705"', "base_url = 5").replace(
        'members = ["zoho", "dentally"]', 'members = ["zoho", "dentally"]\nextra = 1'
    )
    with pytest.raises(ConfigError) as info:
        load_config(write(tmp_path, text), env={})
    assert info.value.problems == [
        "connectors.zoho.client_secret: environment variable ZOHO_SECRET is not set (set it, or give it to "
        "syncd as a systemd credential: LoadCredential=ZOHO_SECRET:/path/to/file)",
        "connectors.dentally.base_url: expected a string, got an integer",
        "sync[0].extra: unknown key (valid keys: name, members, create_in, owners)",
    ]


def test_missing_file_exits_2(tmp_path: Path) -> None:
    result = CliRunner().invoke(main, ["check-config", "--config", str(tmp_path / "nope.toml")])
    assert result.exit_code == 2
    assert result.stderr.startswith("config: file not found:")


def test_env_interpolation_in_any_string(tmp_path: Path) -> None:
    """${NAME} works inside longer strings and for numbers given as strings."""
    text = _replace('base_url = "http://127.0.0.1:8705"', 'base_url = "http://${HOST}:8705"') + (
        '\n[server]\nport = "${PORT}"\n'
    )
    config = load_config(write(tmp_path, text), env={**ENV, "HOST": "10.0.0.5", "PORT": "9090"})
    assert config.connectors["dentally"].base_url == "http://10.0.0.5:8705"
    assert config.server.port == 9090


def test_an_unterminated_reference_never_passes_as_a_literal_secret(tmp_path: Path) -> None:
    """``"${SF_REFRESH_TOKEN"`` used to load as the literal secret; an unterminated reference that is
    not a variable name is reported without echoing what follows the ``${``."""
    text = _replace('refresh_token = "rt"', 'refresh_token = "${SF_REFRESH_TOKEN"').replace(
        'client_id = "cid"', 'client_id = "${s3cr3t-pasted-value"')
    with pytest.raises(ConfigError) as info:
        load_config(write(tmp_path, text), env={**ENV, "SF_REFRESH_TOKEN": "rt-value"})
    assert [p.split(":", 1)[0] for p in info.value.problems] == [
        "connectors.zoho.client_id", "connectors.zoho.refresh_token"]
    assert "s3cr3t" not in "\n".join(info.value.problems)


def test_suggestions_are_left_out_when_nothing_is_close(tmp_path: Path) -> None:
    text = _replace('refresh_token = "rt"', 'refresh_token = "rt"\nzzz = 1')
    with pytest.raises(ConfigError) as info:
        load_config(write(tmp_path, text), env=ENV)
    [problem] = info.value.problems
    assert problem.startswith("connectors.zoho.zzz: unknown key (valid keys: type, base_url, ")
    assert "did you mean" not in problem and "client_secret" in problem


# -- systemd credentials: ${NAME} from $CREDENTIALS_DIRECTORY/NAME --------------------------------


def _credentials(tmp_path: Path, files: dict[str, bytes]) -> Path:
    directory = tmp_path / "credentials"
    directory.mkdir()
    for name, content in files.items():
        (directory / name).write_bytes(content)
    return directory


def test_unset_variable_falls_back_to_the_credential_file(tmp_path: Path) -> None:
    """One trailing newline is removed (``\\n`` or ``\\r\\n``), no more; the environment wins over the file."""
    creds = _credentials(tmp_path, {"ZOHO_SECRET": b"from-file\n", "DENT_TOKEN": b"tok\n\n",
                                    "PORT": b"9091\r\n", "HOST": b"10.0.0.7"})
    text = _replace('access_token = "tok"', 'access_token = "${DENT_TOKEN}"').replace(
        'base_url = "http://127.0.0.1:8705"', 'base_url = "http://${HOST}:8705"') + '\n[server]\nport = "${PORT}"\n'
    config = load_config(write(tmp_path, text), env={"CREDENTIALS_DIRECTORY": str(creds)})
    assert config.connectors["zoho"].auth_value("client_secret") == "from-file"
    assert config.connectors["dentally"].auth_value("access_token") == "tok\n"
    assert config.connectors["dentally"].base_url == "http://10.0.0.7:8705"
    assert config.server.port == 9091
    both = load_config(write(tmp_path, text), env={"CREDENTIALS_DIRECTORY": str(creds), **ENV})
    assert both.connectors["zoho"].auth_value("client_secret") == ENV["ZOHO_SECRET"]


def test_a_variable_in_neither_place_is_a_config_error_naming_the_key(tmp_path: Path) -> None:
    creds = _credentials(tmp_path, {"OTHER": b"x\n"})
    (creds / "ZOHO_CLIENT").mkdir()  # a directory where a file should be: cannot be read
    (creds / "BINARY").write_bytes(b"\xff\xfe\x00")
    text = _replace('client_id = "cid"', 'client_id = "${ZOHO_CLIENT}"').replace(
        'refresh_token = "rt"', 'refresh_token = "${BINARY}"')
    with pytest.raises(ConfigError) as info:
        load_config(write(tmp_path, text), env={"CREDENTIALS_DIRECTORY": str(creds)})
    assert info.value.problems == [
        f"connectors.zoho.client_id: cannot read credential file {creds / 'ZOHO_CLIENT'} (IsADirectoryError)",
        f"connectors.zoho.client_secret: environment variable ZOHO_SECRET is not set and there is no "
        f"credential file {creds / 'ZOHO_SECRET'} (check LoadCredential=ZOHO_SECRET:... in the unit)",
        f"connectors.zoho.refresh_token: credential file {creds / 'BINARY'} is not UTF-8 text",
    ]


def test_check_config_reads_credentials_and_exits_2_naming_the_key(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The real command: secrets from the credentials directory pass check-config; one missing file
    fails it with exit 2 and a line naming the key, and no secret is ever printed."""
    creds = _credentials(tmp_path, {"ZOHO_SECRET": b"s3cr3t-from-credential\n"})
    path = write(tmp_path, BASE)
    monkeypatch.delenv("ZOHO_SECRET", raising=False)
    monkeypatch.setenv("CREDENTIALS_DIRECTORY", str(creds))
    result = CliRunner().invoke(main, ["check-config", "--config", path])
    assert result.exit_code == 0, result.output
    assert "config OK" in result.stdout and "s3cr3t" not in result.output
    (creds / "ZOHO_SECRET").unlink()
    result = CliRunner().invoke(main, ["check-config", "--config", path])
    assert result.exit_code == 2
    assert result.stderr.splitlines() == [
        f"connectors.zoho.client_secret: environment variable ZOHO_SECRET is not set and there is no "
        f"credential file {creds / 'ZOHO_SECRET'} (check LoadCredential=ZOHO_SECRET:... in the unit)"
    ]


@pytest.mark.parametrize(("written", "expected"), [
    ("sqlite+aiosqlite:///./x.db", "{dir}/x.db"),
    ("sqlite+aiosqlite:///x.db", "{dir}/x.db"),
    ("sqlite+aiosqlite:///../state/x.db?timeout=5", "{parent}/state/x.db?timeout=5"),
    ("sqlite+aiosqlite:////var/lib/syncd/x.db", "/var/lib/syncd/x.db"),
    ("sqlite+aiosqlite:///:memory:", ":memory:"),
])
def test_relative_sqlite_path_is_resolved_against_the_config_files_directory(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, written: str, expected: str
) -> None:
    """``./syncd.db`` names the file beside the config, whatever the working directory: a run from
    another directory must not silently start over on a new, empty ledger there."""
    etc = tmp_path / "etc"
    elsewhere = tmp_path / "elsewhere"
    etc.mkdir()
    elsewhere.mkdir()
    monkeypatch.chdir(elsewhere)
    path = write(etc, BASE.replace('url = "sqlite+aiosqlite:///./x.db"', f'url = "{written}"'))
    config = load_config(path, env=ENV)
    assert config.ledger.url == "sqlite+aiosqlite:///" + expected.format(dir=etc, parent=tmp_path)
    # a relative --config path is resolved the same way
    relative = load_config("../etc/config.toml", env=ENV)
    assert relative.ledger.url == config.ledger.url


def test_postgresql_url_is_left_as_written(tmp_path: Path) -> None:
    url = "postgresql+asyncpg://syncd@db.internal/syncd"
    config = load_config(write(tmp_path, BASE.replace("sqlite+aiosqlite:///./x.db", url)), env=ENV)
    assert config.ledger.url == url
