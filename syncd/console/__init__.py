"""The operator console: server-rendered pages under ``/console/`` on the ``syncd run`` server.

Off (every ``/console/`` path answers 404) unless ``[server] console_token`` is set. Pages: overview
(connector states, backlogs, a 24-hour chart of writes and errors), dead letters (Retry, Discard),
conflicts (Resolve by taking one system's version) and one appointment's links and history. It shows
ids, statuses, times and counts, never patient data. The security model is in
:mod:`syncd.console.security`; ``docs/console.md`` describes it for operators.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping

from aiohttp import web

from syncd.config import Config
from syncd.connector import Connector
from syncd.ledger.store import Ledger

__all__ = ["setup_console"]


def setup_console(
    app: web.Application,
    config: Config,
    ledger: Ledger,
    connectors: Mapping[str, Connector],
    *,
    draining: Callable[[], bool] = lambda: False,
) -> bool:
    """Mount the console on ``app`` when ``[server] console_token`` is set; True when mounted.

    ``ledger`` and ``connectors`` are the daemon's own: the console's Retry, Discard and Resolve run on
    them. ``draining`` tells when the daemon is stopping (actions are refused then)."""
    if config.server.console_token is None:
        return False
    from syncd.console.security import SECURITY_HEADERS
    from syncd.console.views import PREFIX, Console

    console = Console(config, ledger, connectors, draining=draining)

    async def slash(request: web.Request) -> web.StreamResponse:
        if request.method not in ("GET", "HEAD"):
            raise web.HTTPMethodNotAllowed(request.method, ["GET", "HEAD"], headers=SECURITY_HEADERS)
        raise web.HTTPPermanentRedirect(f"{PREFIX}/", headers=SECURITY_HEADERS)

    app.router.add_route("*", PREFIX, slash)
    app.add_subapp(PREFIX, console.app())
    return True
