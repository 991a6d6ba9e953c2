"""Who holds a ledger claim or lease: ``<kind>:<host>:<pid>`` (``run``, ``resync``, ``retry``, ...).

A process killed with SIGKILL (or that crashed) leaves its claims behind until they expire. One of this
host whose process is gone is known to be dead, so its claims can be taken over at once instead of
leaving its records unwritten for the claim's lifetime (a rerun right after a crash).
"""

from __future__ import annotations

import os
import socket
from pathlib import Path

__all__ = ["holder_is_dead", "holder_name"]


def holder_name(kind: str) -> str:
    return f"{kind}:{socket.gethostname()}:{os.getpid()}"


def holder_is_dead(holder: str, *, kinds: tuple[str, ...] | None = None, own_pid_is_dead: bool = False) -> bool:
    """True when ``holder`` names a process of this host (of one of ``kinds``, when given) that no
    longer runs ``syncd``: gone, or its pid reused by an unrelated process. Another host's holder, or a
    process that cannot be checked, counts as alive. ``own_pid_is_dead``: this very process's holder
    names an earlier life of it (a lease left by a predecessor with a recycled pid)."""
    kind, _, rest = holder.partition(":")
    host, _, pid_text = rest.rpartition(":")
    if (kinds is not None and kind not in kinds) or host != socket.gethostname() or not pid_text.isdigit():
        return False
    pid = int(pid_text)
    if pid == os.getpid():
        return own_pid_is_dead
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return True
    except PermissionError:
        return False  # alive, another user's process
    try:
        cmdline = Path(f"/proc/{pid}/cmdline").read_bytes()
    except OSError:
        return False  # no /proc: the process is alive, assume it is syncd
    return b"syncd" not in cmdline  # the pid was reused by an unrelated process
