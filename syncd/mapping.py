"""Declarative per-vendor mappings (``mappings/<vendor>.toml``): data only.

A mapping file holds the status maps both ways, field names, defaults (e.g. the cancellation reason of a
sync-originated cancel) and free vendor options. Conversions that need code are named under
``[functions]`` (role = registered function name); the connector registers its functions and the loader
resolves the names. An unknown function, an unknown canonical status or a native status the connector
does not know is a configuration error at start-up.

```toml
vendor = "<type>"
[status.in]            # native -> canonical FHIR status
"Pending" = "pending"
[status.out]           # canonical -> native; "" = no native value fits (not written)
booked = "Pending"
[fields]               # canonical field -> vendor field
start = "start_time"
[defaults]
sync_cancel_reason = "Cancelled by syncd"
[functions]            # role -> registered function name
time_in = "local_to_utc"
[options]              # anything else the connector reads
```
"""

from __future__ import annotations

import re
import tomllib
from collections.abc import Callable, Collection, Mapping
from dataclasses import dataclass, field
from datetime import UTC, datetime
from importlib import resources
from pathlib import Path
from typing import Any

from syncd.errors import ConfigError, MappingError
from syncd.model import Status

__all__ = ["VendorMapping", "load_mapping", "offset_time_to_utc"]

_ISO_WITH_OFFSET = re.compile(r"^\d{4}-\d{2}-\d{2}T\d{2}:\d{2}:\d{2}(?:\.\d+)?(?:[+-]\d{2}:\d{2}|Z)$")
_ISO_WITH_COMPACT_OFFSET = re.compile(r"^\d{4}-\d{2}-\d{2}T\d{2}:\d{2}:\d{2}(?:\.\d+)?(?:[+-]\d{2}:?\d{2}|Z)$")


def offset_time_to_utc(
    value: Any, *, vendor: str, field: str = "datetime", compact_offset: bool = False
) -> datetime | None:
    """An ISO 8601 date-time that carries its offset (``2026-12-01T14:30:00+05:30``, ``...Z``; with
    ``compact_offset`` also ``+0530``) as a UTC instant; None for an empty value. Anything else is a
    :class:`MappingError` naming the vendor and the field, never a guess."""
    if value is None or value == "":
        return None
    pattern = _ISO_WITH_COMPACT_OFFSET if compact_offset else _ISO_WITH_OFFSET
    if not isinstance(value, str) or not pattern.match(value):
        raise MappingError(f"{vendor}: {field} is not an ISO 8601 time with offset", field=field)
    try:
        parsed = datetime.fromisoformat(value.replace("Z", "+00:00"))
    except ValueError:
        raise MappingError(f"{vendor}: {field} is not a valid time", field=field) from None
    return parsed.astimezone(UTC)

_TOP_KEYS = {"vendor", "status", "fields", "defaults", "functions", "options"}


@dataclass(frozen=True)
class VendorMapping:
    vendor: str
    status_in: Mapping[str, Status]
    status_out: Mapping[Status, str | None]
    fields: Mapping[str, str] = field(default_factory=dict)
    defaults: Mapping[str, Any] = field(default_factory=dict)
    functions: Mapping[str, Callable[..., Any]] = field(default_factory=dict)
    options: Mapping[str, Any] = field(default_factory=dict)

    def to_canonical(self, native: str) -> Status:
        """Canonical status for a native one; :class:`MappingError` when the vendor value is unknown."""
        try:
            return self.status_in[native]
        except KeyError:
            raise MappingError(f"{self.vendor}: unknown native status {native!r}", field="status") from None

    def to_native(self, status: Status) -> str:
        """Native status for a canonical one; :class:`MappingError` when no native value fits."""
        native = self.status_out.get(status)
        if not native:
            raise MappingError(f"{self.vendor}: no native status fits canonical {status.value!r}", field="status")
        return native

    def fn(self, role: str) -> Callable[..., Any]:
        return self.functions[role]


def _read(vendor: str, path: Path | None) -> tuple[dict[str, Any], str]:
    if path is not None:
        return tomllib.loads(path.read_text(encoding="utf-8")), str(path)
    ref = resources.files("mappings").joinpath(f"{vendor}.toml")
    return tomllib.loads(ref.read_text(encoding="utf-8")), f"mappings/{vendor}.toml"


def load_mapping(
    vendor: str,
    *,
    functions: Mapping[str, Callable[..., Any]],
    native_statuses: Collection[str] | None = None,
    required_functions: Collection[str] = (),
    path: Path | None = None,
) -> VendorMapping:
    """Load and validate ``mappings/<vendor>.toml``; raise :class:`ConfigError` listing every problem."""
    try:
        data, where = _read(vendor, path)
    except FileNotFoundError:
        raise ConfigError([f"mappings/{vendor}.toml: file not found"]) from None
    except tomllib.TOMLDecodeError as exc:
        raise ConfigError([f"mappings/{vendor}.toml: invalid TOML: {exc}"]) from None
    problems: list[str] = []
    for key in sorted(set(data) - _TOP_KEYS):
        problems.append(f"{where}: {key}: unknown key")
    if data.get("vendor") != vendor:
        problems.append(f"{where}: vendor: must be {vendor!r}")
    status = data.get("status", {})
    status_in: dict[str, Status] = {}
    status_out: dict[Status, str | None] = {}
    for native, canonical in dict(status.get("in", {})).items():
        try:
            status_in[native] = Status(canonical)
        except ValueError:
            problems.append(f"{where}: status.in.{native}: unknown canonical status {canonical!r}")
        if native_statuses is not None and native not in native_statuses:
            problems.append(f"{where}: status.in.{native}: unknown {vendor} status")
    for canonical, native in dict(status.get("out", {})).items():
        try:
            st = Status(canonical)
        except ValueError:
            problems.append(f"{where}: status.out.{canonical}: unknown canonical status")
            continue
        if native and native_statuses is not None and native not in native_statuses:
            problems.append(f"{where}: status.out.{canonical}: unknown {vendor} status {native!r}")
        status_out[st] = native or None
    resolved: dict[str, Callable[..., Any]] = {}
    for role, name in dict(data.get("functions", {})).items():
        if name not in functions:
            problems.append(f"{where}: functions.{role}: unknown function {name!r}")
        else:
            resolved[role] = functions[name]
    for role in required_functions:
        if role not in resolved and f"{where}: functions.{role}" not in " ".join(problems):
            problems.append(f"{where}: functions.{role}: required")
    if problems:
        raise ConfigError(problems)
    return VendorMapping(
        vendor=vendor,
        status_in=status_in,
        status_out=status_out,
        fields=dict(data.get("fields", {})),
        defaults=dict(data.get("defaults", {})),
        functions=resolved,
        options=dict(data.get("options", {})),
    )
