"""The SaludYa sandbox (docs/vendors/saludya.md): ``create_sandbox(**options)`` and ``seed_body(dataset)``."""

from connectors.saludya.sandbox.app import SaludYaSandbox, create_sandbox
from connectors.saludya.sandbox.seed import seed_body
from connectors.saludya.sandbox.store import LIST_FIELDS, RECORD_FIELDS

__all__ = ["LIST_FIELDS", "RECORD_FIELDS", "SaludYaSandbox", "create_sandbox", "seed_body"]
