"""systemd integration without libsystemd: ``sd_notify`` over the ``NOTIFY_SOCKET`` datagram socket.

Under ``Type=notify`` systemd sets ``NOTIFY_SOCKET`` (a filesystem path, or ``@name`` for the Linux
abstract namespace) and, with ``WatchdogSec=``, ``WATCHDOG_USEC`` (and ``WATCHDOG_PID``). Outside
systemd every function here is a harmless no-op returning False / None, so callers never branch on
"am I under systemd".

Typical use in ``syncd run``::

    systemd.ready()                                   # once the HTTP server and the scheduler run
    task = asyncio.create_task(systemd.run_watchdog(lambda: engine_is_healthy()))
    ...
    systemd.stopping()                                # on SIGTERM, before draining
"""

from __future__ import annotations

import asyncio
import os
import socket
from collections.abc import Callable, Mapping

__all__ = ["notify", "ready", "run_watchdog", "status", "stopping", "watchdog", "watchdog_interval"]


def _address(value: str) -> str | None:
    if value.startswith("@"):
        return "\0" + value[1:]  # abstract namespace
    if value.startswith("/"):
        return value
    return None  # vsock and other transports are not used by syncd's unit


def notify(state: str, *, env: Mapping[str, str] | None = None) -> bool:
    """Send ``state`` (e.g. ``"READY=1"``; several assignments separated by newlines) to systemd.

    Returns True when the datagram was sent; False when ``NOTIFY_SOCKET`` is unset, unusable, or
    the send failed (a notification is never worth crashing the daemon for).
    """
    environ = os.environ if env is None else env
    target = environ.get("NOTIFY_SOCKET")
    if not target:
        return False
    address = _address(target)
    if address is None:
        return False
    try:
        with socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM | socket.SOCK_CLOEXEC) as sock:
            # never block the daemon: a receiver that stops reading fills the queue -> False, not a hang
            sock.setblocking(False)
            sock.connect(address)
            sock.sendall(state.encode("utf-8"))
    except OSError:
        return False
    return True


def ready() -> bool:
    """Tell systemd start-up is complete (``Type=notify``): the server is serving."""
    return notify("READY=1")


def watchdog() -> bool:
    """Keep-alive ping for ``WatchdogSec=``; send it only while the daemon is healthy."""
    return notify("WATCHDOG=1")


def stopping() -> bool:
    """Tell systemd the daemon is shutting down (drain in progress)."""
    return notify("STOPPING=1")


def status(text: str) -> bool:
    """Free-form one-line status shown by ``systemctl status`` (no patient data, no secrets)."""
    return notify("STATUS=" + text.replace("\n", " "))


def watchdog_interval(*, env: Mapping[str, str] | None = None) -> float | None:
    """Seconds between watchdog pings: half of ``WATCHDOG_USEC``, as systemd recommends.

    None when the watchdog is off: the variable is unset, not a positive integer, or
    ``WATCHDOG_PID`` names another process.
    """
    environ = os.environ if env is None else env
    raw = environ.get("WATCHDOG_USEC")
    if not raw:
        return None
    pid = environ.get("WATCHDOG_PID")
    if pid:
        try:
            if int(pid) != os.getpid():
                return None
        except ValueError:
            return None
    try:
        usec = int(raw)
    except ValueError:
        return None
    if usec <= 0:
        return None
    return usec / 2 / 1_000_000


async def run_watchdog(healthy: Callable[[], bool], *, interval: float | None = None) -> None:
    """Ping the watchdog every ``interval`` seconds (default :func:`watchdog_interval`) while
    ``healthy()`` is true; skip a ping when it is false, so that a stuck daemon gets restarted.

    Returns at once when the watchdog is off; otherwise runs until cancelled.
    """
    period = watchdog_interval() if interval is None else interval
    if period is None or period <= 0:
        return
    while True:
        if healthy():
            watchdog()
        await asyncio.sleep(period)
