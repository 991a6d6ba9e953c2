"""Which configured connectors play which part in the story, and the configuration the demo runs.

The sandboxes' documented credentials (docs/vendors/README.md "Sandbox options and credentials") come
from the vendor registry (each key's ``sandbox`` value): the demo never sends a configured credential
anywhere, so a production config cannot leak into it. So do the vendors' roles (which member of a group
holds the seeded appointments: the clinical system first; which ones are CRMs) and where a sandbox
record keeps its service, location and start.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from types import MappingProxyType
from typing import Any

from syncd import registry
from syncd.config import Config, ConnectorConfig, LedgerConfig, LogConfig, ServerConfig, SyncGroup
from syncd.demo.data import POLL_SECONDS, REQUESTS_PER_SECOND, DemoError
from syncd.demo.records import optional_text
from syncd.secret import Secret


def demo_config(base: Config, urls: Mapping[str, str], ledger_path: Path) -> Config:
    """``base`` pointed at the sandboxes (``urls``: connector name -> URL), with demo timings."""
    connectors: dict[str, ConnectorConfig] = {}
    for name, cfg in base.connectors.items():
        url = urls[name]
        sandbox_auth = registry.get(cfg.type).sandbox_auth(url)
        auth: dict[str, Secret] = {k: Secret(v) for k, v in sandbox_auth.items() if k in cfg.auth}
        connectors[name] = dataclasses.replace(
            cfg,
            base_url=url,
            poll_interval=POLL_SECONDS,
            max_requests_per_second=REQUESTS_PER_SECOND,
            webhook_secret=Secret("sandbox-webhook-secret") if cfg.webhook_secret is not None else None,
            auth=MappingProxyType(auth),
        )
    return dataclasses.replace(
        base,
        ledger=LedgerConfig(url=f"sqlite+aiosqlite:///{ledger_path}"),
        server=ServerConfig(host="127.0.0.1", port=0, max_body_bytes=base.server.max_body_bytes),
        # debug: the live view shows echoes, which are the `unchanged` decisions (logged at debug)
        log=LogConfig(level="debug", format="json"),
        connectors=MappingProxyType(connectors),
        path=None,
    )


@dataclass(frozen=True)
class CrmGroup:
    """The CRM/EHR group the five scenarios run in: connector names by role."""

    group: SyncGroup
    crm: str
    """zoho_crm: the reschedule, the race's origin and the patient change are made here"""
    ehr: str
    """dentally: holds the seeded appointments; the cancellation is made here"""
    other: str
    """salesforce_health: the race's target and the missing crosswalk entry"""

    @property
    def names(self) -> tuple[str, str, str]:
        """(crm, ehr, other)"""
        return self.crm, self.ehr, self.other


def find_crm_group(config: Config) -> CrmGroup:
    for group in config.sync:
        by_type = {config.connectors[m].type: m for m in group.members}
        if {"zoho_crm", "dentally", "salesforce_health"} <= set(by_type):
            missing = [
                by_type[t] for t in ("zoho_crm", "dentally", "salesforce_health") if by_type[t] not in group.create_in
            ]
            if missing:
                raise DemoError(f"sync group {group.name}: the demo needs create_in to include {', '.join(missing)}")
            return CrmGroup(group, by_type["zoho_crm"], by_type["dentally"], by_type["salesforce_health"])
    raise DemoError(
        "the demo needs a [[sync]] group with a zoho_crm, a dentally and a salesforce_health member "
        "(as in the repository's config.toml)"
    )


@dataclass(frozen=True)
class SaludYaGroup:
    """A group where a booking born in SaludYa must reach a CRM: connector names by role."""

    group: SyncGroup
    saludya: str
    crm: str


def find_saludya_group(config: Config) -> SaludYaGroup | None:
    """The first group with a SaludYa member and a CRM member it creates in (the repository's clinic-b)."""
    for group in config.sync:
        saludya = [m for m in group.members if config.connectors[m].type == "saludya"]
        crms = [m for m in group.members if is_crm(config.connectors[m].type) and m in group.create_in]
        if saludya and crms:
            return SaludYaGroup(group, saludya[0], crms[0])
    return None


def is_crm(vendor_type: str) -> bool:
    """The member types a clinical booking is shown reaching (the CRMs)."""
    return registry.get(vendor_type).role == "crm"


def holder_rank(vendor_type: str) -> tuple[bool, int]:
    """Which member of a group holds the seeded appointments: a clinical system first, then the
    registry's order."""
    return registry.get(vendor_type).role != "clinical", registry.types().index(vendor_type)


def crm_service_location(crm_type: str, rec: Mapping[str, Any]) -> tuple[str | None, str | None, Any] | None:
    """(service id, location id, start) of a CRM record, in the CRM's own ids (None: its vendor
    declares no sandbox record fields)."""
    fields = registry.get(crm_type).sandbox_fields
    if fields is None:
        return None
    service, location, start = fields.read(rec)
    return optional_text(service), optional_text(location), start
