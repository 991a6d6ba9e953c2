"""The ``[options]`` of mappings/zoho_crm.toml the connector reads, typed (checked when it is built)."""

from __future__ import annotations

from dataclasses import dataclass

__all__ = ["ZohoOptions"]


@dataclass(frozen=True)
class ZohoOptions:
    """The module, batch and page sizes (docs/vendors/zoho_crm.md §3, §4), the change-detection limits
    (§2) and the watch channel (§2 a)."""

    module: str
    """the API name of the Appointments module (``Appointments__s``)"""
    batch_read_size: int
    """ids per ``GET ?ids=`` (at most 100)"""
    batch_write_size: int
    """records per create or update call (at most 100)"""
    page_size: int
    """records per list page (at most 200)"""
    discrete_page_limit: int
    """past this many records the modified-since list switches to ``page_token`` paging"""
    search_max_page: int
    """the search API's last page: a window chunk holding more is split"""
    search_lag_s: float
    """how long the reference search waits for a create to show in search (§9)"""
    window_chunk_days: int
    reconcile_cursor_lag_s: float
    """the cursor after a window pass: its start minus this"""
    preferences_ttl_s: float
    """how long the appointment preferences (auto-complete) are cached"""
    watch_days: int
    """a watch channel's lifetime when syncd subscribes it"""
    watch_renew_below_s: float
    """the channel is renewed once it has less than this left"""
    watch_events: tuple[str, ...]
