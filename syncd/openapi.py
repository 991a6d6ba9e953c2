"""``GET /openapi.json``: the OpenAPI 3.1 description of every route ``syncd run`` serves.

Webhook intake (with every answer it can give and the error body), ``/healthz``, ``/readyz``,
``/metrics``, this document itself and the operator console (``docs/reference.md §5``). The document
is static: it describes the console routes whether or not ``[server] console_token`` turns the
console on (every console path answers 404 while it is off), and any connector name (an unknown one,
or one with webhooks disabled, answers 404).
"""

from __future__ import annotations

from importlib import metadata
from typing import Any

__all__ = ["openapi_document"]

HTML = {"text/html": {"schema": {"type": "string"}}}
TEXT = {"text/plain": {"schema": {"type": "string"}}}
ERROR_REF = {"$ref": "#/components/schemas/Error"}
RETRY_AFTER = {"description": "Seconds to wait before trying again.",
               "schema": {"type": "string", "pattern": "^[0-9]+$"}}
LOCATION = {"description": "Where the browser goes next.", "required": True, "schema": {"type": "string"}}


def _version() -> str:
    try:
        return metadata.version("syncd")
    except metadata.PackageNotFoundError:
        return "0.0.0"


def _error(description: str, *, retry_after: bool = False) -> dict[str, Any]:
    response: dict[str, Any] = {"description": description, "content": {"application/json": {"schema": ERROR_REF}}}
    if retry_after:
        response["headers"] = {"Retry-After": {**RETRY_AFTER, "required": True}}
    return response


def _page(description: str) -> dict[str, Any]:
    return {"description": description, "content": HTML}


def _redirect(description: str) -> dict[str, Any]:
    return {"description": description, "headers": {"Location": LOCATION}}


OFF = {"description": "The console is off (`[server] console_token` is not set), or no such page.",
       "content": {**HTML, **TEXT}}
NO_SESSION = _redirect("No valid session: to the login page (`/console/login`).")
CSRF = _page("No valid session, or the form's CSRF token is missing or wrong.")
NOT_A_FORM = _page("The body is not `application/x-www-form-urlencoded` (what the console's forms send).")
TOO_LARGE = {"description": "The form is larger than the server accepts (1 MiB).", "content": {**HTML, **TEXT}}


def _form(properties: dict[str, Any], required: list[str]) -> dict[str, Any]:
    return {"required": True, "content": {"application/x-www-form-urlencoded": {"schema": {
        "type": "object", "properties": properties, "required": required}}}}


REF_PATTERN = r"^\s*(?:[a-z][a-z0-9_]{0,31}:[^\x00-\x1f\x7f]{1,255}|[A-Za-z0-9_-]{1,64})\s*$"
CSRF_PROPERTY = {"csrf": {"type": "string", "description": "The CSRF token the page's form carries."}}
ID_PARAM = {"name": "id", "in": "path", "required": True, "schema": {"type": "integer", "minimum": 0},
            "description": "The dead letter's (or conflict's) id."}


def _console_post(summary: str, properties: dict[str, Any], required: list[str], *, extra: dict[str, Any] | None = None,
                  parameters: list[dict[str, Any]] | None = None) -> dict[str, Any]:
    responses: dict[str, Any] = {
        "303": _redirect("Done (or refused by the engine): back to the list, which shows the outcome."),
        "400": _page("The form could not be read."),
        "403": CSRF,
        "404": OFF,
        "413": TOO_LARGE,
        "415": NOT_A_FORM,
        "503": _page("The daemon is stopping, or the ledger is unavailable."),
        **(extra or {}),
    }
    operation: dict[str, Any] = {"summary": summary, "tags": ["console"], "security": [{"consoleSession": []}],
                                 "requestBody": _form({**CSRF_PROPERTY, **properties}, ["csrf", *required]),
                                 "responses": responses}
    if parameters:
        operation["parameters"] = parameters
    return operation


def _console_get(summary: str, *, parameters: list[dict[str, Any]] | None = None,
                 extra: dict[str, Any] | None = None) -> dict[str, Any]:
    operation: dict[str, Any] = {
        "summary": summary, "tags": ["console"], "security": [{"consoleSession": []}],
        "responses": {"200": _page("The page."), "303": NO_SESSION, "404": OFF,
                      "503": _page("The ledger is unavailable."), **(extra or {})},
    }
    if parameters:
        operation["parameters"] = parameters
    return operation


def openapi_document() -> dict[str, Any]:
    """The OpenAPI document (a fresh dict each call)."""
    return {
        "openapi": "3.1.0",
        "info": {"title": "syncd", "version": _version(),
                 "description": "The HTTP routes of `syncd run` (docs/reference.md §5)."},
        "paths": {"/webhooks/{connector}": {"post": _webhook_operation()}, **_health_paths(), **_console_paths()},
        "components": _components(),
    }


def _webhook_operation() -> dict[str, Any]:
    """``POST /webhooks/{connector}`` (docs/reference.md §7)."""
    return {
        "summary": "Receive a vendor's webhook delivery",
        "description": (
            "Checks in this order, the first failure answering: unknown connector or webhooks disabled "
            "(404), body over `max_body_bytes` (413), not `application/json` (415), the vendor's signature, "
            "token or timestamp (401), malformed body (400), ledger unavailable or intake at its bound (503, "
            "with Retry-After). 202 once the delivery is durably stored in the ledger's inbox; a duplicate "
            "delivery is accepted and processed once. Authentication per vendor: docs/vendors/<type>.md; "
            "where a vendor has none, `X-Syncd-Timestamp` and `X-Syncd-Signature: v1=<hex HMAC-SHA256"
            "(secret, \"<timestamp>.<raw body>\")>`. Error bodies never echo the request."
        ),
        "tags": ["webhooks"],
        "parameters": [{"name": "connector", "in": "path", "required": True, "schema": {"type": "string"},
                        "description": "A configured connector name with a `webhook_secret`."}],
        "requestBody": {"required": True, "content": {"application/json": {"schema": {}}}},
        "responses": {
            "202": {"description": "Stored (N appointment events; 0 for an event type syncd ignores).",
                    "content": {"application/json": {"schema": {"$ref": "#/components/schemas/Accepted"}}}},
            "400": _error("Malformed body."),
            "401": _error("Signature or token missing or wrong, or timestamp outside ±300 s."),
            "404": _error("Unknown connector, or webhooks disabled for it."),
            "408": _error("The body did not arrive within `server.body_timeout` seconds."),
            "413": _error("Body over `max_body_bytes`."),
            "415": _error("Not `application/json`."),
            "503": _error("The ledger is unavailable or intake is at its bound; retry later.", retry_after=True),
        },
    }


def _health_paths() -> dict[str, Any]:
    """Liveness, readiness, metrics and this document."""
    return {
        "/healthz": {"get": {"summary": "Liveness", "tags": ["health"], "responses": {"200": {
            "description": "The process is alive.",
            "content": {"application/json": {"schema": {"$ref": "#/components/schemas/Health"}}}}}}},
        "/readyz": {"get": {"summary": "Readiness", "tags": ["health"], "responses": {
            "200": {"description": "The ledger is reachable and the scheduler runs.",
                    "content": {"application/json": {"schema": {"$ref": "#/components/schemas/Ready"}}}},
            "503": {"description": "A check failed (named in `failed`), or the daemon is draining.",
                    "content": {"application/json": {"schema": {"$ref": "#/components/schemas/Unready"}}}}}}},
        "/metrics": {"get": {"summary": "Prometheus metrics", "tags": ["health"], "responses": {"200": {
            "description": "Prometheus text exposition format; no label carries an appointment, patient or "
                           "external id.", "content": TEXT}}}},
        "/openapi.json": {"get": {"summary": "This document", "tags": ["meta"], "responses": {"200": {
            "description": "OpenAPI 3.1.", "content": {"application/json": {"schema": {"type": "object"}}}}}}},
    }


def _console_paths() -> dict[str, Any]:
    """The operator console's pages and forms."""
    return {
        "/console": {"get": {"summary": "The console without its trailing slash", "tags": ["console"],
                             "responses": {"308": _redirect("To `/console/`."), "404": OFF}}},
        "/console/": {"get": _console_get("Overview: connectors, sync groups, the last 24 hours")},
        "/console/login": {
            "get": {"summary": "The login form", "tags": ["console"], "responses": {
                "200": _page("The form (it sets the login CSRF cookie)."),
                "303": _redirect("Already logged in: to the overview."), "404": OFF}},
            "post": {"summary": "Log in with the console token", "tags": ["console"],
                     "requestBody": _form({"token": {"type": "string"}, **CSRF_PROPERTY}, ["token", "csrf"]),
                     "responses": {
                         "303": _redirect("Logged in: the session cookie is set; to the overview."),
                         "400": _page("The form could not be read."),
                         "401": _page("Wrong token (the login form again)."),
                         "403": _page("The login form's CSRF token is missing, wrong or expired."),
                         "404": OFF,
                         "413": TOO_LARGE,
                         "415": NOT_A_FORM,
                         "429": {"description": "Too many wrong tokens from this address: wait.", "content": HTML,
                                 "headers": {"Retry-After": {**RETRY_AFTER, "required": True}}}}},
        },
        "/console/logout": {"post": _console_post("Log out (ends the session)", {}, [])},
        "/console/deadletters": {"get": _console_get(
            "Unresolved dead letters, with Retry and Discard",
            parameters=[{"name": "connector", "in": "query", "required": False, "schema": {"type": "string"},
                         "description": "Only this connector's (a configured connector name)."},
                        {"name": "kind", "in": "query", "required": False,
                         "schema": {"type": "string", "pattern": "^[a-z_]{0,32}$"},
                         "description": "Only this kind (e.g. `missing_reference`); empty = all."}],
            extra={"400": _page("An unknown connector or a malformed kind in the filter.")})},
        "/console/deadletters/{id}/retry": {"post": _console_post(
            "Retry a dead letter (what `syncd deadletters retry ID` does)",
            {"f_connector": {"type": "string"}, "f_kind": {"type": "string"}}, [], parameters=[ID_PARAM])},
        "/console/deadletters/{id}/discard": {"post": _console_post(
            "Discard a dead letter (what `syncd deadletters discard ID` does)",
            {"f_connector": {"type": "string"}, "f_kind": {"type": "string"}}, [], parameters=[ID_PARAM])},
        "/console/conflicts": {"get": _console_get("Open conflicts, side by side, with Resolve")},
        "/console/conflicts/{id}/resolve": {"post": _console_post(
            "Resolve a conflict by taking one connector's version (what `syncd conflicts resolve ID --take NAME` "
            "does)", {"take": {"type": "string"}}, ["take"], parameters=[ID_PARAM],
            extra={"400": _page("The form could not be read, or `take` is not a configured connector.")})},
        "/console/appointments": {"get": _console_get(
            "One appointment: links, merged values with their source and rule (patient and free text only as a "
            "hash), and its lineage timeline (what `syncd explain` prints)",
            parameters=[{"name": "ref", "in": "query", "required": False,
                         "schema": {"type": "string", "pattern": REF_PATTERN},
                         "description": "A canonical id or NAME:EXTERNAL_ID (absent: the look-up form alone)."}],
            extra={"400": _page("A malformed reference."),
                   "404": _page("The ledger holds no such appointment, or the console is off.")})},
        "/console/static/{name}": {"get": {
            "summary": "The console's stylesheet and script", "tags": ["console"],
            "parameters": [{"name": "name", "in": "path", "required": True, "schema": {"type": "string"}}],
            "responses": {"200": {"description": "console.css or console.js.", "content": {
                "text/css": {"schema": {"type": "string"}}, "text/javascript": {"schema": {"type": "string"}}}},
                "404": OFF}}},
    }


def _components() -> dict[str, Any]:
    """The console session scheme and the JSON bodies the routes answer."""
    return {
        "securitySchemes": {"consoleSession": {
            "type": "apiKey", "in": "cookie", "name": "syncd_console",
            "description": "The session cookie `POST /console/login` sets (HttpOnly, SameSite=Strict)."}},
        "schemas": {
            "Error": {"type": "object", "required": ["error", "detail"], "additionalProperties": False,
                      "properties": {"error": {"type": "string", "description": "A short code."},
                                     "detail": {"type": "string"}}},
            "Accepted": {"type": "object", "required": ["accepted"], "additionalProperties": False,
                         "properties": {"accepted": {"type": "integer", "minimum": 0}}},
            "Health": {"type": "object", "required": ["status"], "properties": {"status": {"const": "ok"}}},
            "Ready": {"type": "object", "required": ["status"], "properties": {"status": {"const": "ready"}}},
            "Unready": {"type": "object", "required": ["status", "failed"], "properties": {
                "status": {"const": "unready"}, "failed": {"type": "array", "items": {"type": "string"}}}},
        },
    }
