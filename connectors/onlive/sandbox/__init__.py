"""The Onlive sandbox (docs/vendors/onlive.md): ``create_sandbox(**options)`` and ``seed_body(dataset)``."""

from connectors.onlive.sandbox.app import OnliveSandbox, create_sandbox
from connectors.onlive.sandbox.seed import seed_body

__all__ = ["OnliveSandbox", "create_sandbox", "seed_body"]
