"""Typed, immutable configuration (CONTRACT section 2).

FOUNDATION HELPER: the loader (`load_config`) and all validation go here, keeping these
dataclasses' names and fields (connectors and the engine already use them).
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field

from syncd.secret import Secret

CONNECTOR_TYPES = ("salesforce_health", "zoho_crm", "saludya", "onlive", "dentally")

#: auth keys required per connector type; every one of them is held as a Secret
AUTH_KEYS: dict[str, tuple[str, ...]] = {
    "salesforce_health": ("token_url", "client_id", "client_secret", "refresh_token", "api_version"),
    "zoho_crm": ("accounts_url", "client_id", "client_secret", "refresh_token"),
    "saludya": ("api_key",),
    "onlive": ("access_key_id", "secret_access_key"),
    "dentally": ("access_token", "user_agent"),
}


@dataclass(frozen=True)
class LedgerConfig:
    url: str = "sqlite+aiosqlite:///./syncd.db"


@dataclass(frozen=True)
class ServerConfig:
    host: str = "127.0.0.1"
    port: int = 8080
    max_body_bytes: int = 1_048_576
    public_url: str | None = None


@dataclass(frozen=True)
class LogConfig:
    level: str = "info"
    format: str = "json"


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

    def auth_value(self, key: str) -> str:
        """The revealed value of auth key ``key`` (validated present at load time)."""
        return self.auth[key].reveal()


@dataclass(frozen=True)
class SyncGroup:
    name: str
    members: tuple[str, ...]
    create_in: tuple[str, ...]
    owners: Mapping[str, str]


@dataclass(frozen=True)
class Config:
    ledger: LedgerConfig
    server: ServerConfig
    log: LogConfig
    connectors: Mapping[str, ConnectorConfig]
    sync: tuple[SyncGroup, ...]
    path: str | None = None
