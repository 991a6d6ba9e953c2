"""The ``[options]`` of mappings/dentally.toml the connector reads, typed (checked when it is built)."""

from __future__ import annotations

from dataclasses import dataclass

__all__ = ["DentallyOptions"]


@dataclass(frozen=True)
class DentallyOptions:
    """Paging, the change-detection timings (docs/vendors/dentally.md §2), the reference search (§9)
    and the fields Dentally lets change outside Pending (§5)."""

    page_size: int
    """``per_page`` of every list call (the API's maximum: 100)"""
    window_chunk_days: int
    """the window is listed by ``start_time`` in chunks of at most this many days (§2 c)"""
    reconcile_every_s: float
    """the daily window reconciliation"""
    reconcile_cursor_lag_s: float
    """the cursor after a reconciliation: its start minus this"""
    incremental_overlap_s: float
    """the next ``updated_after`` is the cursor minus this"""
    window_mode_min_interval_s: float
    """with ``updated_after`` refused, reconcile every max(poll_interval, this)"""
    deletion_check_interval_s: float
    """the window count check between reconciliations (0: every pass; negative: never)"""
    reference_search_lag_s: float
    """the idempotency search starts this long before the create's attempt"""
    reference_search_default_s: float
    """and looks back this far when this process made no attempt"""
    always_editable: tuple[str, ...]
    """the wire fields a record outside Pending still takes"""
