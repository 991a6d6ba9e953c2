"""Helpers for a vendor's ``rules.py`` (the pure ``write_refusal`` decision): which native status a
change asks for, and the refusal when the vendor has none that fits."""

from __future__ import annotations

from collections.abc import Callable, Collection

from syncd.errors import MappingError
from syncd.model import Appointment

__all__ = ["STATUS_FIELDS", "wanted_status"]

STATUS_FIELDS = frozenset({"status", "cancellation_reason"})
"""The canonical fields a vendor writes as its status (a cancellation reason goes with a cancel)."""


def wanted_status(
    changed: Collection[str], desired: Appointment, to_native: Callable[[Appointment], str], *, guide: str, word: str
) -> tuple[str | None, str | None]:
    """``(native, refusal)``: the native status (the vendor's ``word`` for it) that ``desired`` asks for
    when a status field changed, else None; a refusal citing ``guide`` §9 when none fits (a waitlist)."""
    if not STATUS_FIELDS & set(changed):
        return None, None
    try:
        return to_native(desired), None
    except MappingError:
        return None, f"has no {word} that fits {desired.status.value} ({guide} §9)"
