"""Generic plumbing shared by the five vendor sandboxes (never a vendor's protocol).

A vendor sandbox subclasses :class:`SandboxBase`, adds its vendor routes in :meth:`add_routes` and
implements the state hooks. The kit provides the control API of docs/vendors/README.md "Sandbox control API" under
``/_sandbox/``
(records, reset, requests, clock, faults, options), fault injection, a settable clock, request
counting by route template, window rate-limit counters and a webhook sender.
"""

from syncd.sandboxkit.base import Clock, Fault, SandboxBase, WindowCounter
from syncd.sandboxkit.serve import RunningSandbox, start_sandbox

__all__ = ["Clock", "Fault", "RunningSandbox", "SandboxBase", "WindowCounter", "start_sandbox"]
