"""The ``[options]`` of mappings/onlive.toml the connector reads, typed (checked when it is built)."""

from __future__ import annotations

from dataclasses import dataclass

__all__ = ["OnliveOptions"]


@dataclass(frozen=True)
class OnliveOptions:
    """Paging and change detection (docs/vendors/onlive.md §2, §3) and the reference search (§9)."""

    page_size: int
    """records per list page (at most 100)"""
    poll_overlap_s: float
    """the next ``updatedSince`` is the cursor minus this"""
    window_chunk_days: int
    """a window pass lists ``startFrom``/``startTo`` chunks of at most this many days"""
    window_cursor_lag_s: float
    """the cursor after a window pass: its start (Onlive's clock) minus this"""
    window_fallback_min_s: float
    """with ``updatedSince`` refused, a window pass every max(poll_interval, this)"""
    read_concurrency: int
    """single reads in flight at once (no batch read)"""
    reference_search_lag_s: float
    """the idempotency search looks back this far"""
