"""What a client of the sandboxes' control API sends (docs/vendors/README.md "Sandbox control API"): the
demo, the scenario tests and the benchmarks drive the sandboxes as other users would."""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any


def edit_of(record: Mapping[str, Any], changes: Mapping[str, Any]) -> dict[str, Any]:
    """The ``POST /_sandbox/records`` entry that edits ``record`` as another user: its id (``Id`` or
    ``id``), its ``attributes.type`` where it has one, and ``changes`` (vendor field names)."""
    key = "Id" if "Id" in record else "id"
    entry: dict[str, Any] = {key: record[key]}
    if "attributes" in record:
        entry["attributes"] = {"type": record["attributes"]["type"]}
    entry.update(changes)
    return entry


def fault_of(method: str, path: str, action: Mapping[str, Any], times: int = 1) -> dict[str, Any]:
    """The ``POST /_sandbox/faults`` body: ``action`` on the next ``times`` requests matching ``method``
    and ``path`` (a glob)."""
    return {"match": {"method": method, "path": path}, "times": times, "action": dict(action)}
