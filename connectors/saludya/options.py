"""The ``[options]`` of mappings/saludya.toml the connector reads, typed (checked when it is built)."""

from __future__ import annotations

from dataclasses import dataclass

__all__ = ["SaludYaOptions"]


@dataclass(frozen=True)
class SaludYaOptions:
    """The scan passes and their budget (docs/vendors/saludya.md §2), the rate-limit guard (§7), paging."""

    api_prefix: str
    """the path every route starts with"""
    page_size: int
    """``limit`` of every list call (the API's maximum: 100)"""
    hot_days: tuple[int, int]
    """the hot pass lists these days around today (every ``poll_interval``)"""
    near_days: tuple[int, int]
    """the near pass lists these days around today"""
    near_interval_s: float
    """how often the near pass runs"""
    full_interval_s: float
    """how often the full window is listed"""
    daily_call_budget: int
    """scan calls a day the passes may spend"""
    budget_factors: tuple[int, ...]
    """each interval is stretched by the smallest of these that keeps the scans within the budget"""
    guard_remaining: int
    """``X-RateLimit-Remaining`` at or below this: scan passes wait for the reset"""
    rate_limit_fallback_s: float
    """the wait after a 429 without ``Retry-After``"""
    list_required: tuple[str, ...]
    """a list item without these fields is read again by GET"""

    def days(self, kind: str) -> tuple[int, int]:
        """The days around today a ``hot`` or ``near`` pass lists."""
        return {"hot": self.hot_days, "near": self.near_days}[kind]
