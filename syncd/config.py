"""Typed, immutable configuration (docs/reference.md §2).

``load_config`` reads the TOML file once at start-up, replaces every ``${NAME}`` with the
environment variable NAME or, where that is unset, with the systemd credential of that name (the
file ``$CREDENTIALS_DIRECTORY/NAME``, from the unit's ``LoadCredential=``, less one trailing
newline), validates every key and returns frozen objects. Every problem found is reported (not only
the first), one line each, as ``<dotted.key>: <message>``, through a single
:class:`syncd.errors.ConfigError`; the CLI prints the lines and exits 2 before touching the ledger
or the network. An unknown key or value gets a did-you-mean suggestion naming the closest valid one.

Secrets (auth keys, webhook secrets, the console token, a password inside the ledger URL) are held
so that printing the config object never shows them.
"""

from __future__ import annotations

import difflib
import os
import re
import tomllib
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from types import MappingProxyType
from typing import Any
from urllib.parse import urlsplit
from zoneinfo import ZoneInfo, ZoneInfoNotFoundError

from syncd import registry
from syncd.errors import ConfigError
from syncd.model import SYNC_FIELDS
from syncd.secret import Secret, UnresolvedSecret
from syncd.vendor import OptionValue, TypeDefaults, VendorPackage

__all__ = [
    "CONNECTOR_KEYS",
    "CONNECTOR_NAME_RE",
    "LEDGER_KEYS",
    "LOG_KEYS",
    "SERVER_KEYS",
    "SYNC_KEYS",
    "TOP_LEVEL_KEYS",
    "Config",
    "ConnectorConfig",
    "LedgerConfig",
    "LogConfig",
    "ServerConfig",
    "SyncGroup",
    "ledger_url_problems",
    "load_config",
    "mask_url",
    "parse_config",
    "resolve_config_path",
    "resolve_sqlite_url",
]

# The connector types, each type's own keys (which are secrets, their types and defaults) and the
# per-type defaults come from the vendor registry (syncd/registry.py, one declaration per
# connectors/<type>/__init__.py), read at parse time.

#: The keys each table accepts: the one list the parser checks against (any other key is an
#: "unknown key" problem) and that docs/configuration.md is tested against (tests/test_docs.py).
TOP_LEVEL_KEYS: tuple[str, ...] = ("ledger", "server", "log", "connectors", "sync")
LEDGER_KEYS: tuple[str, ...] = ("url", "history_days")
SERVER_KEYS: tuple[str, ...] = (
    "host",
    "port",
    "max_body_bytes",
    "public_url",
    "console_token",
    "header_timeout",
    "body_timeout",
    "max_connections",
    "max_pending_deliveries",
    "max_inbox_backlog",
)
LOG_KEYS: tuple[str, ...] = ("level", "format")
CONNECTOR_KEYS: tuple[str, ...] = (
    "type",
    "base_url",
    "poll_interval",
    "timezone",
    "webhook_secret",
    "max_requests_per_second",
    "window_past_days",
    "window_future_days",
    "default_location",
)
"""Keys of every ``[connectors.<name>]`` table; the type's registry declaration adds its own keys."""
SYNC_KEYS: tuple[str, ...] = ("name", "members", "create_in", "owners")

CONNECTOR_NAME_RE = re.compile(r"[a-z][a-z0-9_]{0,31}")
CANONICAL_KEY_RE = re.compile(r"[A-Za-z0-9_-]{1,64}")
"""A crosswalk key (docs/reference.md §3)."""
_ENV_NAME_RE = re.compile(r"[A-Za-z_][A-Za-z0-9_]*")
_SHOWN_NAME_RE = re.compile(r"[A-Z_][A-Z0-9_]*")
"""An unterminated reference is echoed in its error only when it looks like a variable name."""
CREDENTIALS_DIRECTORY = "CREDENTIALS_DIRECTORY"
"""Set by systemd for a unit with ``LoadCredential=`` (a directory holding one file per credential)."""
LEDGER_SCHEMES = ("sqlite+aiosqlite://", "postgresql+asyncpg://")
LOG_LEVELS = ("debug", "info", "warning", "error")
LOG_FORMATS = ("auto", "json", "console")
"""``auto`` (the default): human-readable on a terminal, JSON lines otherwise."""
CONSOLE_TOKEN_MIN = 16


def mask_url(url: str) -> str:
    """``url`` with the password (if any) replaced by ``***``: safe to print and log."""
    try:
        parts = urlsplit(url)
    except ValueError:
        return "***"
    if parts.password is None:
        return url
    netloc = parts.netloc
    userinfo, _, hostport = netloc.rpartition("@")
    user = userinfo.split(":", 1)[0]
    return parts._replace(netloc=f"{user}:***@{hostport}").geturl()


SQLITE_PREFIX = "sqlite+aiosqlite:///"

#: ``?name=value`` options a ledger URL may carry: what the driver accepts, and what to write for the
#: libpq spellings people copy from other tools (docs/configuration.md, [ledger])
POSTGRES_URL_OPTIONS: dict[str, tuple[str, ...] | None] = {
    "ssl": ("disable", "allow", "prefer", "require", "verify-ca", "verify-full"),
    "timeout": None,
    "command_timeout": None,
    "prepared_statement_cache_size": None,
    "target_session_attrs": ("any", "primary", "standby", "read-write", "read-only", "prefer-standby"),
    "passfile": None,
}
SQLITE_URL_OPTIONS: dict[str, tuple[str, ...] | None] = {"timeout": None}
_LIBPQ_SPELLINGS = {
    "sslmode": "ssl",
    "connect_timeout": "timeout",
    "sslrootcert": None,
    "sslcert": None,
    "sslkey": None,
    "application_name": None,
    "options": None,
}
_NUMERIC_URL_OPTIONS = ("timeout", "command_timeout", "prepared_statement_cache_size")


def ledger_url_problems(url: str) -> list[str]:
    """What is wrong with the ``?options`` of a ledger URL (empty: nothing): an option the driver
    (asyncpg, aiosqlite) does not take is named with the accepted ones and what to write instead."""
    from urllib.parse import parse_qsl

    sqlite_url = url.startswith(SQLITE_PREFIX.rstrip("/"))
    accepted = SQLITE_URL_OPTIONS if sqlite_url else POSTGRES_URL_OPTIONS
    driver = "aiosqlite (SQLite)" if sqlite_url else "asyncpg (PostgreSQL)"
    query = urlsplit(url).query if not sqlite_url else url.partition("?")[2]
    problems: list[str] = []
    try:
        pairs = parse_qsl(query, keep_blank_values=True, strict_parsing=bool(query))
    except ValueError:
        return [f"the ?options part is malformed (write ?name=value&name=value; {driver} accepts: "
                f"{', '.join(accepted)})"]
    for name, value in pairs:
        if name in accepted:
            allowed = accepted[name]
            if allowed is not None and value not in allowed:
                problems.append(f"option {name}={value!r} is not valid (one of {', '.join(allowed)})")
            elif name in _NUMERIC_URL_OPTIONS and not _is_number(value):
                problems.append(f"option {name}={value!r} must be a number")
            continue
        instead = _LIBPQ_SPELLINGS.get(name, "") if not sqlite_url else ""
        if instead:
            hint = f"write ?{instead}={value} instead"
        elif name in _LIBPQ_SPELLINGS:
            hint = "it is a libpq option the asyncpg driver does not take; leave it out"
        else:
            hint = f"leave it out{_did_you_mean(name, list(accepted))}"
        problems.append(f"option {name!r} is not accepted by {driver} ({hint}); accepted options: "
                        f"{', '.join(accepted)}")
    return problems


def _is_number(text: str) -> bool:
    try:
        float(text)
    except ValueError:
        return False
    return True


def resolve_sqlite_url(url: str, base_dir: str | os.PathLike[str] | None) -> str:
    """``url`` with a relative SQLite file path made absolute against ``base_dir`` (the config
    file's directory), so that ``sqlite+aiosqlite:///./syncd.db`` names one file whatever the working
    directory. Absolute paths, ``:memory:``, ``file:`` URIs and other databases are left as they are."""
    if base_dir is None or not url.startswith(SQLITE_PREFIX):
        return url
    database, sep, query = url[len(SQLITE_PREFIX):].partition("?")
    if not database or database == ":memory:" or database.startswith(("/", "file:")):
        return url
    return SQLITE_PREFIX + os.path.normpath(os.path.join(os.path.abspath(base_dir), database)) + sep + query


@dataclass(frozen=True)
class LedgerConfig:
    url: str = "sqlite+aiosqlite:///./syncd.db"
    """A relative SQLite path is resolved against the config file's directory at load time."""
    history_days: int = 90
    """Lineage (``syncd explain``) older than this many days is pruned by the daemon and by resync."""

    def __repr__(self) -> str:
        return f"LedgerConfig(url={mask_url(self.url)!r})"


@dataclass(frozen=True)
class ServerConfig:
    host: str = "127.0.0.1"
    port: int = 8080
    max_body_bytes: int = 1_048_576
    public_url: str | None = None
    console_token: Secret | None = None
    """Turns the operator console on (``/console/``, docs/console.md); None = the console is off."""
    header_timeout: float = 10.0
    """Seconds a connection may take to send a request's headers (from opening, or from the previous
    answer on a kept-alive connection); then it is closed."""
    body_timeout: float = 30.0
    """Seconds a webhook body may take to arrive in full; then 408 and the connection is closed."""
    max_connections: int = 512
    """Open connections at most; one more is answered 503 + Retry-After and closed."""
    max_pending_deliveries: int = 2000
    """Webhook deliveries waiting for their inbox commit at most; more are answered 503 + Retry-After."""
    max_inbox_backlog: int = 50_000
    """Unprocessed inbox rows at most; over it, deliveries are answered 503 + Retry-After and
    ``/readyz`` is 503 until the engine has caught up."""


@dataclass(frozen=True)
class LogConfig:
    level: str = "info"
    format: str = "auto"
    """``auto`` (key absent): console on a terminal, else json; or ``json`` / ``console`` always."""


@dataclass(frozen=True)
class ConnectorConfig:
    name: str
    type: str
    base_url: str
    poll_interval: float = 60.0
    timezone: str = "UTC"
    webhook_secret: Secret | None = None
    max_requests_per_second: float = 5.0
    window_past_days: int = 7
    window_future_days: int = 90
    auth: Mapping[str, Secret] = field(default_factory=dict)
    """the type's secret keys (its registry declaration)"""
    default_location: str | None = None
    """Crosswalk key (kind ``location``) of the location at which every appointment of this system takes
    place, for a system that stores none: read into the canonical record, so that a target requiring a
    location can be written. None: not set."""
    options: Mapping[str, str | int | float | bool] = field(default_factory=dict)
    """the type's non-secret keys (its registry declaration), defaults filled in"""

    def auth_value(self, key: str) -> str:
        """The revealed value of auth key ``key`` (validated present at load time)."""
        return self.auth[key].reveal()


@dataclass(frozen=True)
class SyncGroup:
    name: str
    members: tuple[str, ...]
    create_in: tuple[str, ...]
    owners: Mapping[str, str]
    """Every canonical sync field -> owning member, or ``"*"`` (most recent change wins)."""


@dataclass(frozen=True)
class Config:
    ledger: LedgerConfig
    server: ServerConfig
    log: LogConfig
    connectors: Mapping[str, ConnectorConfig]
    sync: tuple[SyncGroup, ...]
    path: str | None = None

    def group_of(self, connector: str) -> SyncGroup | None:
        """The sync group ``connector`` belongs to (a connector is in at most one)."""
        for group in self.sync:
            if connector in group.members:
                return group
        return None


def resolve_config_path(cli_value: str | None) -> str:
    """``--config`` if given, else ``$SYNCD_CONFIG``, else ``./config.toml``."""
    if cli_value:
        return cli_value
    return os.environ.get("SYNCD_CONFIG") or "config.toml"


def load_config(path: str | None = None, env: Mapping[str, str] | None = None, *, secrets: bool = True) -> Config:
    """Read, interpolate and validate the config file; raise ConfigError listing every problem.

    ``secrets=False`` is for commands that need no vendor secret (``status``, ``deadletters list``
    ...): a secret key whose ``${NAME}`` cannot be resolved is still checked for presence and type,
    but holds an :class:`syncd.secret.UnresolvedSecret` instead of failing the load."""
    resolved = resolve_config_path(path)
    try:
        text = Path(resolved).read_text(encoding="utf-8")
    except FileNotFoundError:
        raise ConfigError([f"config: file not found: {resolved}"]) from None
    except (OSError, UnicodeDecodeError) as exc:
        raise ConfigError([f"config: cannot read {resolved}: {type(exc).__name__}"]) from None
    try:
        raw = tomllib.loads(text)
    except tomllib.TOMLDecodeError as exc:
        raise ConfigError([f"config: invalid TOML: {exc}"]) from None
    return parse_config(raw, env=env, path=resolved, secrets=secrets)


def parse_config(
    raw: Mapping[str, Any], env: Mapping[str, str] | None = None, path: str | None = None, *, secrets: bool = True
) -> Config:
    """Validate an already parsed TOML document (see :func:`load_config`)."""
    parser = _Parser(os.environ if env is None else env)
    parser.require_secrets = secrets
    return parser.parse(raw, path)


# -- validation --------------------------------------------------------------------------------


class _Missing:
    pass


_MISSING = _Missing()


@dataclass(frozen=True)
class _Problem:
    message: str


def _did_you_mean(name: str, candidates: tuple[str, ...] | list[str]) -> str:
    """``"; did you mean 'x'?"`` for the closest of ``candidates`` (difflib), else ``""``."""
    close = difflib.get_close_matches(name, list(candidates), n=1, cutoff=0.6)
    if not close:
        close = [c for c in candidates if c.lower() == name.lower() or c.replace("_", "") == name.replace("_", "")]
    return f"; did you mean {close[0]!r}?" if close else ""


def _auth_keys_elsewhere(ctype: str) -> dict[str, str]:
    """Auth keys of the other connector types -> ``"type <t>"`` (a key pasted from another vendor's table)."""
    out: dict[str, str] = {}
    for other, keys in registry.auth_keys().items():
        if other != ctype:
            for key in keys:
                out.setdefault(key, f"type {other}")
    return out


class _Parser:
    def __init__(self, env: Mapping[str, str]) -> None:
        self.env = env
        self.problems: list[str] = []
        self.credentials: dict[str, str | _Problem] = {}
        """credential name -> its content (or why it cannot be had), each file read once"""
        #: connector names declared with a valid name (even if their table has problems), so that
        #: a broken connector is not reported a second time as a dangling reference
        self.declared: set[str] = set()
        #: False: an unresolvable ``${NAME}`` in a secret is deferred (see :func:`load_config`)
        self.require_secrets = True

    def fail(self, key: str, message: str) -> None:
        """Record one problem line; a key or message holding control characters (a hostile or broken
        file) is shown escaped, so that each problem stays one line."""
        line = f"{key}: {message}"
        if not line.isprintable():
            line = "".join(ch if ch.isprintable() else ch.encode("unicode_escape").decode("ascii") for ch in line)
        self.problems.append(line)

    # primitive readers: each returns _MISSING after recording a problem (or when absent)
    def interpolate(self, key: str, value: str) -> str | _Missing:
        """Replace every ``${NAME}``; the substituted text is never scanned again."""
        if "${" not in value:
            return value
        out: list[str] = []
        problems: list[str] = []
        pos = 0
        while (start := value.find("${", pos)) >= 0:
            out.append(value[pos:start])
            end = value.find("}", start + 2)
            if end < 0:
                rest = value[start + 2:]
                hint = f' (write "${{{rest}}}")' if _SHOWN_NAME_RE.fullmatch(rest) else ""
                problems.append(f'unterminated variable reference: "${{" without a closing "}}"{hint}')
                pos = len(value)
                break
            name = value[start + 2:end]
            pos = end + 1
            if not _ENV_NAME_RE.fullmatch(name):
                problems.append(f"invalid variable reference ${{{name}}}")
                continue
            resolved = self.lookup(name)
            if isinstance(resolved, _Problem):
                problems.append(resolved.message)
            else:
                out.append(resolved)
        out.append(value[pos:])
        for message in problems:
            self.fail(key, message)
        return _MISSING if problems else "".join(out)

    def lookup(self, name: str) -> str | _Problem:
        """Environment variable ``name``, else the systemd credential file ``$CREDENTIALS_DIRECTORY/name``
        (its content less one trailing newline, ``\\n`` or ``\\r\\n``)."""
        if name in self.env:
            return self.env[name]
        if name not in self.credentials:
            self.credentials[name] = self._read_credential(name)
        return self.credentials[name]

    def _read_credential(self, name: str) -> str | _Problem:
        directory = self.env.get(CREDENTIALS_DIRECTORY)
        if not directory:
            return _Problem(
                f"environment variable {name} is not set (set it, or give it to syncd as a systemd "
                f"credential: LoadCredential={name}:/path/to/file)"
            )
        path = Path(directory) / name
        try:
            data = path.read_bytes()
        except (FileNotFoundError, NotADirectoryError):
            return _Problem(
                f"environment variable {name} is not set and there is no credential file {path} "
                f"(check LoadCredential={name}:... in the unit)"
            )
        except OSError as exc:
            return _Problem(f"cannot read credential file {path} ({type(exc).__name__})")
        try:
            text = data.decode("utf-8")
        except UnicodeDecodeError:
            return _Problem(f"credential file {path} is not UTF-8 text")
        if text.endswith("\r\n"):
            return text[:-2]
        return text[:-1] if text.endswith("\n") else text

    def secret(self, key: str, value: object, *, empty: str = "must not be empty") -> Secret | _Missing:
        """A secret value; with ``require_secrets`` off, an interpolation problem is deferred into an
        :class:`UnresolvedSecret` (structure and type are still checked)."""
        before = len(self.problems)
        text = self.string(key, value)
        if isinstance(text, str):
            if not text:
                self.fail(key, empty)
                return _MISSING
            return Secret(text)
        if not self.require_secrets and isinstance(value, str) and len(self.problems) > before:
            deferred = self.problems[before:]
            del self.problems[before:]
            return UnresolvedSecret(deferred)
        return _MISSING

    def table(self, key: str, value: object) -> Mapping[str, Any] | _Missing:
        if not isinstance(value, Mapping):
            self.fail(key, f"expected a table, got {_type_name(value)}")
            return _MISSING
        return value

    def unknown_keys(
        self,
        prefix: str,
        table: Mapping[str, Any],
        allowed: tuple[str, ...],
        *,
        elsewhere: Mapping[str, str] | None = None,
    ) -> None:
        """One problem per key not in ``allowed``, naming the closest valid key (or listing them);
        ``elsewhere`` maps keys valid in another kind of table (another connector type) to that kind."""
        for name in table:
            if name in allowed:
                continue
            key = f"{prefix}.{name}" if prefix else name
            suggestion = _did_you_mean(name, allowed)
            if suggestion:
                self.fail(key, f"unknown key{suggestion}")
            elif elsewhere and name in elsewhere:
                self.fail(key, f"unknown key here: {name!r} is a key of {elsewhere[name]}")
            else:
                self.fail(key, f"unknown key (valid keys: {', '.join(allowed)})")

    def string(self, key: str, value: object) -> str | _Missing:
        if not isinstance(value, str):
            self.fail(key, f"expected a string, got {_type_name(value)}")
            return _MISSING
        return self.interpolate(key, value)

    def integer(
        self, key: str, value: object, *, minimum: int | None = None, maximum: int | None = None
    ) -> int | _Missing:
        if isinstance(value, str) and "${" in value:
            text = self.interpolate(key, value)
            if isinstance(text, _Missing):
                return _MISSING
            try:
                value = int(text)
            except ValueError:
                self.fail(key, "expected an integer")
                return _MISSING
        if isinstance(value, bool) or not isinstance(value, int):
            self.fail(key, f"expected an integer, got {_type_name(value)}")
            return _MISSING
        if minimum is not None and value < minimum:
            self.fail(key, f"must be >= {minimum}, got {value}")
            return _MISSING
        if maximum is not None and value > maximum:
            self.fail(key, f"must be <= {maximum}, got {value}")
            return _MISSING
        return value

    def number(self, key: str, value: object) -> float | _Missing:
        if isinstance(value, str) and "${" in value:
            text = self.interpolate(key, value)
            if isinstance(text, _Missing):
                return _MISSING
            try:
                value = float(text)
            except ValueError:
                self.fail(key, "expected a number")
                return _MISSING
        if isinstance(value, bool) or not isinstance(value, int | float):
            self.fail(key, f"expected a number, got {_type_name(value)}")
            return _MISSING
        if value != value or value in (float("inf"), float("-inf")):
            self.fail(key, "expected a finite number")
            return _MISSING
        return float(value)

    def positive(self, key: str, value: object) -> float | _Missing:
        """A number of seconds > 0."""
        number = self.number(key, value)
        if isinstance(number, float) and number <= 0:
            self.fail(key, f"must be a positive number of seconds, got {number:g}")
            return _MISSING
        return number

    def choice(self, key: str, value: object, choices: tuple[str, ...]) -> str | _Missing:
        text = self.string(key, value)
        if isinstance(text, _Missing):
            return _MISSING
        if text not in choices:
            self.fail(key, f"must be one of {', '.join(choices)}, got {text!r}{_did_you_mean(text, choices)}")
            return _MISSING
        return text

    def http_url(self, key: str, value: object) -> str | _Missing:
        text = self.string(key, value)
        if isinstance(text, _Missing):
            return _MISSING
        parts = urlsplit(text)
        if parts.scheme not in ("http", "https") or not parts.netloc:
            self.fail(key, "must be an http:// or https:// URL")
            return _MISSING
        return text

    def string_list(self, key: str, value: object) -> list[str] | _Missing:
        if not isinstance(value, list):
            self.fail(key, f"expected an array of strings, got {_type_name(value)}")
            return _MISSING
        out: list[str] = []
        ok = True
        for index, item in enumerate(value):
            text = self.string(f"{key}[{index}]", item)
            if isinstance(text, _Missing):
                ok = False
            else:
                out.append(text)
        return out if ok else _MISSING

    # sections -----------------------------------------------------------------------------------
    def parse(self, raw: Mapping[str, Any], path: str | None) -> Config:
        self.unknown_keys("", raw, TOP_LEVEL_KEYS)
        ledger = self.ledger(raw.get("ledger", {}))
        if ledger is not None and path is not None:
            # a relative SQLite path names a file beside the config, not in the working directory
            ledger = LedgerConfig(url=resolve_sqlite_url(ledger.url, os.path.dirname(os.path.abspath(path))),
                                  history_days=ledger.history_days)
        server = self.server(raw.get("server", {}))
        log = self.log(raw.get("log", {}))
        connectors = self.connectors(raw.get("connectors", _MISSING))
        groups = self.groups(raw.get("sync", []), connectors)
        if self.problems:
            raise ConfigError(self.problems)
        assert ledger is not None and server is not None and log is not None
        return Config(
            ledger=ledger,
            server=server,
            log=log,
            connectors=MappingProxyType(connectors),
            sync=tuple(groups),
            path=path,
        )

    def ledger(self, value: object) -> LedgerConfig | None:
        table = self.table("ledger", value)
        if isinstance(table, _Missing):
            return None
        self.unknown_keys("ledger", table, LEDGER_KEYS)
        defaults = LedgerConfig()
        days = self.integer("ledger.history_days", table.get("history_days", defaults.history_days), minimum=1)
        if "url" not in table:
            return None if isinstance(days, _Missing) else LedgerConfig(history_days=days)
        url = self.string("ledger.url", table["url"])
        if isinstance(url, _Missing) or isinstance(days, _Missing):
            return None
        if not url.startswith(LEDGER_SCHEMES):
            self.fail("ledger.url", f"must start with {' or '.join(LEDGER_SCHEMES)}")
            return None
        for problem in ledger_url_problems(url):
            self.fail("ledger.url", problem)
        if any(p.startswith("ledger.url") for p in self.problems):
            return None
        return LedgerConfig(url=url, history_days=days)

    def server(self, value: object) -> ServerConfig | None:
        table = self.table("server", value)
        if isinstance(table, _Missing):
            return None
        self.unknown_keys("server", table, SERVER_KEYS)
        defaults = ServerConfig()
        host = self.string("server.host", table.get("host", defaults.host))
        port = self.integer("server.port", table.get("port", defaults.port), minimum=0, maximum=65535)
        max_body = self.integer(
            "server.max_body_bytes", table.get("max_body_bytes", defaults.max_body_bytes), minimum=1
        )
        public_url: str | _Missing | None = None
        if "public_url" in table:
            public_url = self.http_url("server.public_url", table["public_url"])
        token: Secret | _Missing | None = None
        if "console_token" in table:
            token = self.secret("server.console_token", table["console_token"])
            if (isinstance(token, Secret) and not isinstance(token, UnresolvedSecret)
                    and len(token.reveal()) < CONSOLE_TOKEN_MIN):
                self.fail("server.console_token", f"must be at least {CONSOLE_TOKEN_MIN} characters (e.g. the output "
                          "of `openssl rand -hex 32`); leave the key out to keep the console off")
                token = _MISSING
        header_timeout = self.positive("server.header_timeout", table.get("header_timeout", defaults.header_timeout))
        body_timeout = self.positive("server.body_timeout", table.get("body_timeout", defaults.body_timeout))
        max_connections = self.integer(
            "server.max_connections", table.get("max_connections", defaults.max_connections), minimum=1
        )
        max_pending = self.integer(
            "server.max_pending_deliveries",
            table.get("max_pending_deliveries", defaults.max_pending_deliveries),
            minimum=1,
        )
        max_backlog = self.integer(
            "server.max_inbox_backlog", table.get("max_inbox_backlog", defaults.max_inbox_backlog), minimum=1
        )
        limits = (header_timeout, body_timeout, max_connections, max_pending, max_backlog)
        if any(isinstance(v, _Missing) for v in (host, port, max_body, public_url, token, *limits)):
            return None
        assert isinstance(host, str) and isinstance(port, int) and isinstance(max_body, int)
        assert isinstance(header_timeout, float) and isinstance(body_timeout, float)
        assert isinstance(max_connections, int) and isinstance(max_pending, int) and isinstance(max_backlog, int)
        return ServerConfig(
            host=host,
            port=port,
            max_body_bytes=max_body,
            public_url=public_url if isinstance(public_url, str) else None,
            console_token=token if isinstance(token, Secret) else None,
            header_timeout=header_timeout,
            body_timeout=body_timeout,
            max_connections=max_connections,
            max_pending_deliveries=max_pending,
            max_inbox_backlog=max_backlog,
        )

    def log(self, value: object) -> LogConfig | None:
        table = self.table("log", value)
        if isinstance(table, _Missing):
            return None
        self.unknown_keys("log", table, LOG_KEYS)
        level = self.choice("log.level", table.get("level", "info"), LOG_LEVELS)
        fmt = self.choice("log.format", table.get("format", "auto"), LOG_FORMATS)
        if isinstance(level, _Missing) or isinstance(fmt, _Missing):
            return None
        return LogConfig(level=level, format=fmt)

    def connectors(self, value: object) -> dict[str, ConnectorConfig]:
        if isinstance(value, _Missing):
            self.fail("connectors", "at least one connector is required")
            return {}
        table = self.table("connectors", value)
        if isinstance(table, _Missing):
            return {}
        if not table:
            self.fail("connectors", "at least one connector is required")
        out: dict[str, ConnectorConfig] = {}
        for name, body in table.items():
            key = f"connectors.{name}"
            if not CONNECTOR_NAME_RE.fullmatch(name):
                self.fail(key, "connector name must match [a-z][a-z0-9_]{0,31}")
                continue
            self.declared.add(name)
            conn = self.connector(key, name, body)
            if conn is not None:
                out[name] = conn
        return out

    def connector(self, key: str, name: str, value: object) -> ConnectorConfig | None:
        table = self.table(key, value)
        if isinstance(table, _Missing):
            return None
        package = self.vendor_package(key, table)
        if package is None:
            return None
        before = len(self.problems)
        base_url: str | _Missing = _MISSING
        if "base_url" not in table:
            self.fail(f"{key}.base_url", "required key is missing")
        else:
            base_url = self.http_url(f"{key}.base_url", table["base_url"])
        poll, rps = self.pacing(key, table, package.defaults)
        timezone = self.connector_timezone(key, table, package)
        webhook_secret = self.webhook_secret(key, table)
        default_location = self.default_location(key, table)
        past = self.integer(f"{key}.window_past_days", table.get("window_past_days", 7), minimum=0)
        future = self.integer(f"{key}.window_future_days", table.get("window_future_days", 90), minimum=0)
        auth, vendor_options = self.vendor_keys(key, table, package)
        if len(self.problems) != before:
            return None
        assert isinstance(base_url, str) and isinstance(poll, float) and isinstance(rps, float)
        assert isinstance(timezone, str) and isinstance(past, int) and isinstance(future, int)
        return ConnectorConfig(
            name=name,
            type=package.type,
            base_url=base_url,
            poll_interval=poll,
            timezone=timezone,
            webhook_secret=webhook_secret,
            max_requests_per_second=rps,
            window_past_days=past,
            window_future_days=future,
            auth=MappingProxyType(auth),
            default_location=default_location if isinstance(default_location, str) else None,
            options=MappingProxyType(vendor_options),
        )

    def vendor_package(self, key: str, table: Mapping[str, Any]) -> VendorPackage | None:
        """The connector's ``type`` from the registry, and no key that type does not take."""
        vendor_types = registry.types()
        if "type" not in table:
            self.fail(f"{key}.type", f"required key is missing (one of {', '.join(vendor_types)})")
            return None
        ctype = self.choice(f"{key}.type", table["type"], vendor_types)
        if isinstance(ctype, _Missing):
            return None
        package = registry.get(ctype)
        self.unknown_keys(key, table, CONNECTOR_KEYS + package.key_names, elsewhere=_auth_keys_elsewhere(ctype))
        return package

    def pacing(
        self, key: str, table: Mapping[str, Any], defaults: TypeDefaults
    ) -> tuple[float | _Missing, float | _Missing]:
        """``poll_interval`` (>= 0) and ``max_requests_per_second`` (> 0), the vendor's defaults if absent."""
        poll = self.number(f"{key}.poll_interval", table.get("poll_interval", defaults.poll_interval))
        if isinstance(poll, float) and poll < 0:
            self.fail(f"{key}.poll_interval", "must be >= 0 (0 = never poll)")
        rps = self.number(
            f"{key}.max_requests_per_second",
            table.get("max_requests_per_second", defaults.max_requests_per_second),
        )
        if isinstance(rps, float) and rps <= 0:
            self.fail(f"{key}.max_requests_per_second", "must be a positive number")
        return poll, rps

    def connector_timezone(self, key: str, table: Mapping[str, Any], package: VendorPackage) -> str | _Missing:
        """``timezone``: required where the vendor has no default (its clinic's IANA zone)."""
        if "timezone" in table:
            return self.timezone(f"{key}.timezone", table["timezone"])
        if package.defaults.timezone is None:
            self.fail(f"{key}.timezone", f"required for type {package.type} (the clinic's IANA zone)")
            return _MISSING
        return package.defaults.timezone

    def webhook_secret(self, key: str, table: Mapping[str, Any]) -> Secret | None:
        """``webhook_secret``; absent: the connector takes no webhooks."""
        if "webhook_secret" not in table:
            return None
        secret = self.secret(f"{key}.webhook_secret", table["webhook_secret"],
                             empty="must not be empty (leave the key out to disable webhooks)")
        return secret if isinstance(secret, Secret) else None

    def default_location(self, key: str, table: Mapping[str, Any]) -> str | _Missing | None:
        """``default_location``: a crosswalk key of kind location, or None."""
        if "default_location" not in table:
            return None
        default_location = self.string(f"{key}.default_location", table["default_location"])
        if isinstance(default_location, str) and not CANONICAL_KEY_RE.fullmatch(default_location):
            self.fail(f"{key}.default_location", "must be a crosswalk key (kind location) matching "
                      "[A-Za-z0-9_-]{1,64}, e.g. \"LOC-1\"")
        return default_location

    def vendor_keys(
        self, key: str, table: Mapping[str, Any], package: VendorPackage
    ) -> tuple[dict[str, Secret], dict[str, OptionValue]]:
        """The type's own keys: secrets (required unless defaulted) and typed options."""
        auth: dict[str, Secret] = {}
        vendor_options: dict[str, OptionValue] = {}
        for spec in package.keys:
            dotted = f"{key}.{spec.name}"
            if spec.name not in table:
                if spec.default is None:
                    self.fail(dotted, f"required for type {package.type}")
                elif spec.secret:
                    auth[spec.name] = Secret(str(spec.default))
                else:
                    vendor_options[spec.name] = spec.default
                continue
            raw = table[spec.name]
            if spec.secret:
                value = self.secret(dotted, raw)
                if isinstance(value, Secret):
                    auth[spec.name] = value
                continue
            option = self.option(dotted, raw, spec.kind)
            if not isinstance(option, _Missing):
                vendor_options[spec.name] = option
        return auth, vendor_options

    def option(self, key: str, value: object, kind: type[OptionValue]) -> OptionValue | _Missing:
        if kind is bool:
            if isinstance(value, bool):
                return value
            self.fail(key, f"expected true or false, got {_type_name(value)}")
            return _MISSING
        if kind is int:
            return self.integer(key, value)
        if kind is float:
            return self.number(key, value)
        return self.string(key, value)

    def timezone(self, key: str, value: object) -> str | _Missing:
        text = self.string(key, value)
        if isinstance(text, _Missing):
            return _MISSING
        try:
            ZoneInfo(text)
        except (ZoneInfoNotFoundError, ValueError):
            self.fail(key, f"unknown IANA time zone {text!r}")
            return _MISSING
        return text

    def groups(self, value: object, connectors: Mapping[str, ConnectorConfig]) -> list[SyncGroup]:
        if not isinstance(value, list):
            self.fail("sync", f"expected an array of tables ([[sync]]), got {_type_name(value)}")
            return []
        groups: list[SyncGroup] = []
        names: set[str] = set()
        member_of: dict[str, str] = {}
        for index, body in enumerate(value):
            key = f"sync[{index}]"
            group = self.group(key, body, connectors)
            if group is None:
                continue
            if group.name in names:
                self.fail(f"{key}.name", f"duplicate sync group name {group.name!r}")
                continue
            names.add(group.name)
            clash = False
            for member in group.members:
                if member in member_of:
                    self.fail(f"{key}.members", f"connector {member!r} is already in sync group {member_of[member]!r}")
                    clash = True
            if clash:
                continue
            member_of.update(dict.fromkeys(group.members, group.name))
            groups.append(group)
        return groups

    def group(self, key: str, value: object, connectors: Mapping[str, ConnectorConfig]) -> SyncGroup | None:
        table = self.table(key, value)
        if isinstance(table, _Missing):
            return None
        self.unknown_keys(key, table, SYNC_KEYS)
        before = len(self.problems)
        name: str | _Missing = _MISSING
        if "name" not in table:
            self.fail(f"{key}.name", "required key is missing")
        else:
            name = self.string(f"{key}.name", table["name"])
            if isinstance(name, str) and not name:
                self.fail(f"{key}.name", "must not be empty")
        members: list[str] | _Missing = _MISSING
        if "members" not in table:
            self.fail(f"{key}.members", "required key is missing")
        else:
            members = self.string_list(f"{key}.members", table["members"])
        if isinstance(members, list):
            self.references(f"{key}.members", members, "connector", self.declared)
            if len(set(members)) != len(members):
                self.fail(f"{key}.members", "a connector is listed twice")
            elif len(members) < 2:
                self.fail(f"{key}.members", "a sync group needs at least 2 members")
        member_set = set(members) if isinstance(members, list) else set()
        create_in: list[str] | _Missing = list(members) if isinstance(members, list) else _MISSING
        if "create_in" in table:
            create_in = self.string_list(f"{key}.create_in", table["create_in"])
            if isinstance(create_in, list):
                self.references(f"{key}.create_in", create_in, "member", member_set)
        owners: dict[str, str] = dict.fromkeys(SYNC_FIELDS, "*")
        if "owners" in table:
            owners_table = self.table(f"{key}.owners", table["owners"])
            if not isinstance(owners_table, _Missing):
                for field_name, owner in owners_table.items():
                    okey = f"{key}.owners.{field_name}"
                    if field_name not in SYNC_FIELDS:
                        self.fail(okey, f"unknown canonical field (one of {', '.join(SYNC_FIELDS)})"
                                        f"{_did_you_mean(field_name, SYNC_FIELDS)}")
                        continue
                    text = self.string(okey, owner)
                    if isinstance(text, str):
                        if text != "*" and text not in member_set:
                            self.fail(okey, f"{text!r} is not a member of this sync group (or \"*\")")
                        else:
                            owners[field_name] = text
        if len(self.problems) != before:
            return None
        assert isinstance(name, str) and isinstance(members, list) and isinstance(create_in, list)
        return SyncGroup(
            name=name,
            members=tuple(members),
            create_in=tuple(dict.fromkeys(create_in)),
            owners=MappingProxyType(owners),
        )

    def references(self, key: str, names: list[str], what: str, allowed: set[str]) -> None:
        for index, name in enumerate(names):
            if name in allowed:
                continue
            if what == "member" and name in self.declared:
                self.fail(f"{key}[{index}]", f"connector {name!r} is not a member of this sync group")
            else:
                self.fail(f"{key}[{index}]", f"no connector named {name!r}{_did_you_mean(name, sorted(self.declared))}")


_TYPE_NAMES: dict[type, str] = {
    str: "a string",
    int: "an integer",
    float: "a number",
    bool: "a boolean",
    list: "an array",
    dict: "a table",
}


def _type_name(value: object) -> str:
    return _TYPE_NAMES.get(type(value), type(value).__name__)
