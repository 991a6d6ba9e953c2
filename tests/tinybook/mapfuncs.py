"""Tinybook needs no conversion functions: its times are UTC ISO 8601 already."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

FUNCTIONS: dict[str, Callable[..., Any]] = {}
NATIVE_STATUSES = frozenset({"pending", "booked", "cancelled"})
