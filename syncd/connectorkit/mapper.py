"""What every vendor's mapper holds: the mapping file's tables, and a canonical appointment built from
them (``connectors/<type>/mapfuncs.py`` adds the vendor's own conversions)."""

from __future__ import annotations

from typing import Any

from syncd.errors import MappingError
from syncd.mapping import VendorMapping
from syncd.model import Appointment, InvalidAppointment

__all__ = ["MapperBase"]


class MapperBase:
    """The mapping file (``mappings/<type>.toml``) applied to one vendor's records."""

    def __init__(self, mapping: VendorMapping) -> None:
        self.mapping = mapping
        self.fields = mapping.fields
        """canonical field -> the vendor's field (``[fields]``)"""
        self.defaults = mapping.defaults
        """``[defaults]``: reasons, titles and other values syncd writes"""
        self.options = mapping.options
        """``[options]``: the vendor's own settings"""

    def appointment(self, error_field: str | None, **values: Any) -> Appointment:
        """The canonical appointment of ``values``; one the model refuses (an end before its start...)
        is a :class:`MappingError` naming the vendor and ``error_field``."""
        try:
            return Appointment(**values)
        except InvalidAppointment as exc:
            raise MappingError(f"{self.mapping.vendor}: {exc}", field=error_field) from None
