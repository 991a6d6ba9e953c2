"""The ``[options]`` of mappings/salesforce_health.toml the connector reads, typed (checked when built)."""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field

__all__ = ["SalesforceOptions"]


@dataclass(frozen=True)
class SalesforceOptions:
    """The fields read (docs/vendors/salesforce_health.md §3), the replication feeds' limits and the API
    allocation (§2, §7), the status categories that lock the Connect PUT (§8)."""

    api_fields: tuple[str, ...]
    """the ServiceAppointment fields every read asks for"""
    batch_read_size: int = 200
    """ids per composite read"""
    replication_max_age_days: int = 30
    """an older cursor than this runs the window reconciliation (the feeds keep 30 days)"""
    pause_polling_above: float = 0.9
    """polling pauses while the org's daily API usage is above this share"""
    put_locked_categories: tuple[str, ...] = ()
    """StatusCategory values in which the PUT is refused: notes then go by sObject PATCH"""
    category_of: Mapping[str, str] = field(default_factory=dict)
    """Status value -> its StatusCategory"""
