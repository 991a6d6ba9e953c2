"""The Dentally sandbox (docs/vendors/dentally.md): ``create_sandbox(**options)`` and ``seed_body(dataset)``."""

from connectors.dentally.sandbox.app import DentallySandbox, create_sandbox
from connectors.dentally.sandbox.seed import NATIVE_STATUS, seed_body

__all__ = ["NATIVE_STATUS", "DentallySandbox", "create_sandbox", "seed_body"]
