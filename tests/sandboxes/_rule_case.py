"""What every sandbox rule table's rows share: a request and the status it must be answered with."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any


@dataclass
class RequestCase:
    """A request to the sandbox (``body`` as JSON) and the HTTP status it must answer; a vendor's table
    adds what else it checks."""

    method: str
    path: str
    body: Any = None
    status: int = 200
