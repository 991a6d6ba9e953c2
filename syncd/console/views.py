"""The console's HTTP handlers: server-rendered pages (aiohttp-jinja2, autoescaped) under ``/console/``.

Routes (relative to ``/console``): ``GET /`` overview, ``GET|POST /login``, ``POST /logout``,
``GET /deadletters`` (``?connector=&kind=``), ``POST /deadletters/{id}/retry|discard``,
``GET /conflicts``, ``POST /conflicts/{id}/resolve`` (form ``take``), ``GET /appointments``
(``?ref=``), ``GET /static/{name}``. A page without a session redirects to the login page; a POST
without a session or without its CSRF token answers 403. See :mod:`syncd.console.security`.
"""

from __future__ import annotations

import math
import re
import secrets
from collections import OrderedDict
from collections.abc import Awaitable, Callable, Mapping
from importlib import resources
from typing import Any
from urllib.parse import quote, urlencode

import aiohttp_jinja2
import jinja2
from aiohttp import web
from multidict import MultiDictProxy
from sqlalchemy.exc import SQLAlchemyError

from syncd.config import Config
from syncd.connector import Connector
from syncd.console import queries
from syncd.console.actions import ActionResult, ConsoleActions
from syncd.console.chart import layout
from syncd.console.security import (
    ABSOLUTE_TIMEOUT_S,
    COOKIE_PATH,
    CSRF_FIELD,
    IDLE_TIMEOUT_S,
    LOGIN_COOKIE,
    LOGIN_NONCE_TTL_S,
    SECURITY_HEADERS,
    SESSION_COOKIE,
    LoginThrottle,
    Session,
    SessionSigner,
    token_matches,
)
from syncd.ledger.store import Ledger, LedgerUnavailable
from syncd.logging import get_logger
from syncd.runtime import Runtime

__all__ = ["PREFIX", "Console"]

log = get_logger("syncd.console")

PREFIX = "/console"
LOGIN_PATH = f"{PREFIX}/login"
STATIC_TYPES = {"console.css": "text/css", "console.js": "text/javascript"}
KIND_RE = re.compile(r"[a-z_]{1,32}")
MAX_NOTICES = 1000
FORM_TYPE = "application/x-www-form-urlencoded"
OVERVIEW_REFRESH_S = 15

FormData = MultiDictProxy[Any]
PageHandler = Callable[[web.Request, Session], Awaitable[web.StreamResponse]]
ActionHandler = Callable[[web.Request, Session, FormData], Awaitable[web.StreamResponse]]


class _BadForm(Exception):
    def __init__(self, status: int, message: str) -> None:
        super().__init__(message)
        self.status = status
        self.message = message


async def _read_form(request: web.Request) -> FormData:
    """The POSTed form: ``application/x-www-form-urlencoded`` (what the console's forms send) only."""
    if request.content_type != FORM_TYPE:
        raise _BadForm(415, f"a console form is sent as {FORM_TYPE}")
    try:
        return await request.post()
    except web.HTTPException:
        raise
    except (ValueError, UnicodeDecodeError) as exc:
        raise _BadForm(400, f"the form could not be read ({type(exc).__name__})") from None


def _field(form: Mapping[str, Any], name: str) -> str | None:
    value = form.get(name)
    return value if isinstance(value, str) else None


def _age(seconds: float | None) -> str:
    if seconds is None:
        return "-"
    if seconds < 120:
        return f"{seconds:.0f} s"
    if seconds < 7200:
        return f"{seconds / 60:.0f} min"
    if seconds < 172800:
        return f"{seconds / 3600:.0f} h"
    return f"{seconds / 86400:.0f} d"


def _ref_url(ref: str | None) -> str:
    return f"{PREFIX}/appointments?ref={quote(ref or '', safe='')}"


FILTERS: dict[str, Callable[..., str]] = {"age": _age, "ref_url": _ref_url}


class Console:
    """The console of one daemon: its session signer, login throttle, actions and pages."""

    def __init__(self, config: Config, ledger: Ledger, connectors: Mapping[str, Connector], *,
                 draining: Callable[[], bool] = lambda: False) -> None:
        token = config.server.console_token
        assert token is not None, "the console is only built when [server] console_token is set"
        self.config = config
        self.ledger = ledger
        self._token = token.reveal()
        self.signer = SessionSigner(self._token)
        self.throttle = LoginThrottle()
        self.actions = ConsoleActions(config, Runtime(config, ledger, dict(connectors)))
        self.draining = draining
        self._notices: OrderedDict[str, tuple[str, bool, str]] = OrderedDict()
        self._static = {name: (resources.files("syncd.console") / "static" / name).read_bytes()
                        for name in STATIC_TYPES}

    # -- application ---------------------------------------------------------------------------
    def app(self) -> web.Application:
        app = web.Application(middlewares=[self._headers])
        aiohttp_jinja2.setup(app, loader=jinja2.PackageLoader("syncd.console", "templates"), autoescape=True,
                             undefined=jinja2.StrictUndefined, default_helpers=False,
                             filters=FILTERS)
        r = app.router
        r.add_get("/", self._page(self.overview))
        r.add_get("/login", self.login_page)
        r.add_post("/login", self.login)
        r.add_post("/logout", self._action(self.logout))
        r.add_get("/deadletters", self._page(self.dead_letters))
        r.add_post(r"/deadletters/{id:\d{1,18}}/retry", self._action(self.retry))
        r.add_post(r"/deadletters/{id:\d{1,18}}/discard", self._action(self.discard))
        r.add_get("/conflicts", self._page(self.conflicts))
        r.add_post(r"/conflicts/{id:\d{1,18}}/resolve", self._action(self.resolve))
        r.add_get("/appointments", self._page(self.appointment))
        r.add_get("/static/{name}", self.static)

        async def close_actions(_app: web.Application) -> None:
            await self.actions.close()

        app.on_cleanup.append(close_actions)
        return app

    @web.middleware
    async def _headers(self, request: web.Request, handler: Callable[[web.Request], Awaitable[web.StreamResponse]]
                       ) -> web.StreamResponse:
        try:
            response = await handler(request)
        except web.HTTPException as exc:
            exc.headers.update(SECURITY_HEADERS)
            raise
        except _BadForm as exc:
            response = self._render(request, "error.html", self._session(request), {
                "title": "Bad request", "message": exc.message}, status=exc.status)
        except (LedgerUnavailable, SQLAlchemyError, OSError, TimeoutError) as exc:
            log.warning("console_ledger_unavailable", error_type=type(exc).__name__)
            response = self._render(request, "error.html", None, {
                "title": "Ledger unavailable",
                "message": "The ledger cannot be reached right now; this page will work again once it is back.",
            }, status=503)
            response.headers["Retry-After"] = "5"
        response.headers.update(SECURITY_HEADERS)
        return response

    # -- sessions ------------------------------------------------------------------------------
    def _secure(self, request: web.Request) -> bool:
        public = self.config.server.public_url or ""
        return request.secure or public.startswith("https://")

    def _session(self, request: web.Request) -> Session | None:
        return self.signer.verify(request.cookies.get(SESSION_COOKIE))

    def _set_session(self, request: web.Request, response: web.StreamResponse, session: Session) -> None:
        response.set_cookie(SESSION_COOKIE, self.signer.cookie_value(session), path=COOKIE_PATH, httponly=True,
                            samesite="Strict", secure=self._secure(request), max_age=self.signer.max_age(session))

    def _page(self, handler: PageHandler) -> Callable[[web.Request], Awaitable[web.StreamResponse]]:
        async def page(request: web.Request) -> web.StreamResponse:
            session = self._session(request)
            if session is None:
                raise web.HTTPSeeOther(LOGIN_PATH)
            response = await handler(request, session)
            renewed = self.signer.touched(session)
            if renewed is not None:
                self._set_session(request, response, renewed)
            return response

        return page

    def _action(self, handler: ActionHandler) -> Callable[[web.Request], Awaitable[web.StreamResponse]]:
        async def action(request: web.Request) -> web.StreamResponse:
            session = self._session(request)
            form = await _read_form(request)
            if session is None or not self.signer.csrf_ok(session, _field(form, CSRF_FIELD)):
                log.warning("console_csrf_refused", path=request.path)
                return self._render(request, "error.html", None, {
                    "title": "Forbidden",
                    "message": "This form carries no valid CSRF token, or your session has ended. "
                               "Open the page again and repeat the action.",
                }, status=403)
            if self.draining():
                return self._render(request, "error.html", session, {
                    "title": "Stopping", "message": "syncd is shutting down; try again once it is back."},
                    status=503)
            return await handler(request, session, form)

        return action

    # -- rendering -----------------------------------------------------------------------------
    def _render(self, request: web.Request, template: str, session: Session | None, context: Mapping[str, Any],
                *, status: int = 200) -> web.Response:
        base = {
            "session": session,
            "csrf": self.signer.csrf_token(session) if session is not None else "",
            "csrf_field": CSRF_FIELD,
            "prefix": PREFIX,
            "refresh": None,
            "notice": None,
            "active": "",
        }
        return aiohttp_jinja2.render_template(template, request, {**base, **context}, status=status)

    def _notice(self, session: Session, result: ActionResult) -> str:
        key = secrets.token_urlsafe(9)
        self._notices[key] = (session.label, result.ok or result.running, result.message)
        while len(self._notices) > MAX_NOTICES:
            self._notices.popitem(last=False)
        return key

    def _take_notice(self, request: web.Request, session: Session) -> dict[str, Any] | None:
        key = request.query.get("notice")
        if not key:
            return None
        found = self._notices.get(key)
        if found is None or found[0] != session.label:
            return None
        del self._notices[key]
        return {"ok": found[1], "message": found[2]}

    def _bad_request(self, request: web.Request, session: Session | None, message: str) -> web.Response:
        return self._render(request, "error.html", session, {"title": "Bad request", "message": message}, status=400)

    # -- login ---------------------------------------------------------------------------------
    def _login(self, request: web.Request, *, status: int = 200, message: str | None = None,
               retry_after: float | None = None) -> web.Response:
        nonce = self.signer.new_login_nonce()
        response = self._render(request, "login.html", None, {
            "title": "Log in", "login_csrf": self.signer.login_csrf_token(nonce), "message": message,
            "idle_min": IDLE_TIMEOUT_S // 60, "absolute_h": ABSOLUTE_TIMEOUT_S // 3600,
        }, status=status)
        response.set_cookie(LOGIN_COOKIE, nonce, path=COOKIE_PATH, httponly=True, samesite="Strict",
                            secure=self._secure(request), max_age=LOGIN_NONCE_TTL_S)
        if retry_after is not None:
            response.headers["Retry-After"] = str(max(1, math.ceil(retry_after)))
        return response

    async def login_page(self, request: web.Request) -> web.StreamResponse:
        if self._session(request) is not None:
            raise web.HTTPSeeOther(f"{PREFIX}/")
        return self._login(request)

    async def login(self, request: web.Request) -> web.StreamResponse:
        form = await _read_form(request)
        if not self.signer.login_csrf_ok(request.cookies.get(LOGIN_COOKIE), _field(form, CSRF_FIELD)):
            log.warning("console_login", outcome="csrf_refused")
            return self._login(request, status=403, message="The login form had expired or came from elsewhere. "
                                                            "Try again.")
        address = request.remote or "unknown"
        wait = self.throttle.wait_s(address)
        if wait > 0:
            log.warning("console_login", outcome="throttled", wait_s=round(wait, 1))
            return self._login(request, status=429, retry_after=wait,
                               message=f"Too many wrong tokens from your address: wait {math.ceil(wait)} s, "
                                       "then try again.")
        if not token_matches(_field(form, "token") or "", self._token):
            delay = self.throttle.failed(address)
            log.warning("console_login", outcome="refused", wait_s=round(delay, 1))
            suffix = f" Wait {math.ceil(delay)} s before the next try." if delay else ""
            return self._login(request, status=401, message="Wrong token." + suffix)
        self.throttle.succeeded(address)
        session = self.signer.new_session()
        response = web.HTTPSeeOther(f"{PREFIX}/")
        self._set_session(request, response, session)
        response.del_cookie(LOGIN_COOKIE, path=COOKIE_PATH)
        log.info("console_login", outcome="ok")
        raise response

    async def logout(self, request: web.Request, session: Session, _form: FormData) -> web.StreamResponse:
        self.signer.revoke(session)
        response = web.HTTPSeeOther(LOGIN_PATH)
        response.del_cookie(SESSION_COOKIE, path=COOKIE_PATH)
        log.info("console_logout", outcome="ok")
        raise response

    # -- pages ---------------------------------------------------------------------------------
    async def overview(self, request: web.Request, session: Session) -> web.StreamResponse:
        data = await queries.overview(self.config, self.ledger)
        return self._render(request, "overview.html", session, {
            "title": "Overview", "active": "overview", "refresh": OVERVIEW_REFRESH_S,
            "data": data, "chart": layout(data["series"]),
        })

    async def dead_letters(self, request: web.Request, session: Session) -> web.StreamResponse:
        connector = request.query.get("connector") or None
        kind = request.query.get("kind") or None
        if connector is not None and connector not in self.config.connectors:
            return self._bad_request(request, session, "connector: not a configured connector")
        if kind is not None and not KIND_RE.fullmatch(kind):
            return self._bad_request(request, session, "kind: expected a dead-letter kind such as missing_reference")
        rows, kinds = await queries.dead_letter_rows(self.ledger, connector=connector, kind=kind)
        return self._render(request, "deadletters.html", session, {
            "title": "Dead letters", "active": "deadletters", "rows": rows, "kinds": kinds,
            "connectors": list(self.config.connectors), "filter_connector": connector or "",
            "filter_kind": kind or "", "notice": self._take_notice(request, session),
        })

    def _back_to_letters(self, form: FormData) -> str:
        query = {}
        connector, kind = _field(form, "f_connector"), _field(form, "f_kind")
        if connector and connector in self.config.connectors:
            query["connector"] = connector
        if kind and KIND_RE.fullmatch(kind):
            query["kind"] = kind
        return query_string(f"{PREFIX}/deadletters", query)

    async def retry(self, request: web.Request, session: Session, form: FormData) -> web.StreamResponse:
        result = await self.actions.retry(int(request.match_info["id"]), session.label)
        back = self._back_to_letters(form)
        raise web.HTTPSeeOther(query_string(back, {"notice": self._notice(session, result)}))

    async def discard(self, request: web.Request, session: Session, form: FormData) -> web.StreamResponse:
        result = await self.actions.discard(int(request.match_info["id"]), session.label)
        back = self._back_to_letters(form)
        raise web.HTTPSeeOther(query_string(back, {"notice": self._notice(session, result)}))

    async def conflicts(self, request: web.Request, session: Session) -> web.StreamResponse:
        rows = await queries.conflict_rows(self.config, self.ledger)
        return self._render(request, "conflicts.html", session, {
            "title": "Conflicts", "active": "conflicts", "rows": rows,
            "notice": self._take_notice(request, session),
        })

    async def resolve(self, request: web.Request, session: Session, form: FormData) -> web.StreamResponse:
        take = _field(form, "take")
        if take is None or take not in self.config.connectors:
            return self._bad_request(request, session, "take: choose one of the configured connectors")
        result = await self.actions.resolve(int(request.match_info["id"]), take, session.label)
        raise web.HTTPSeeOther(query_string(f"{PREFIX}/conflicts", {"notice": self._notice(session, result)}))

    async def appointment(self, request: web.Request, session: Session) -> web.StreamResponse:
        ref = request.query.get("ref")
        context: dict[str, Any] = {"title": "Appointment", "active": "appointment", "ref": ref or "",
                                   "view": None, "message": None}
        if ref is None:
            return self._render(request, "appointment.html", session, context)
        try:
            view = await queries.appointment_view(self.config, self.ledger, ref)
        except queries.RefError as exc:
            return self._render(request, "appointment.html", session, {**context, "message": str(exc)}, status=400)
        if view is None:
            return self._render(request, "appointment.html", session,
                                {**context, "message": "The ledger holds no such appointment."}, status=404)
        return self._render(request, "appointment.html", session, {**context, "view": view})

    async def static(self, request: web.Request) -> web.StreamResponse:
        name = request.match_info["name"]
        body = self._static.get(name)
        if body is None:
            raise web.HTTPNotFound()
        return web.Response(body=body, content_type=STATIC_TYPES[name], charset="utf-8")


def query_string(path: str, params: Mapping[str, str]) -> str:
    """``path`` with ``params`` appended as a query string (merged with one it has already)."""
    if not params:
        return path
    return f"{path}{'&' if '?' in path else '?'}{urlencode(params)}"
