"""The connector toolkit: what the five vendor connectors share, so that each ``connectors/<type>/``
holds only its vendor's wire and rules (docs/architecture.md "Adding a vendor").

- :mod:`syncd.connectorkit.base`: construction from config (:class:`ConnectorBase`, :func:`vendor_http`,
  :class:`VendorClient`), typed options (:func:`load_options`), the sync window and paging helpers.
- :mod:`syncd.connectorkit.webhooks`: the one HMAC/timestamp webhook verification
  (:class:`HmacScheme`, parametrised by header names and signing string) and JSON body parsing.
- :mod:`syncd.connectorkit.mapper`: what every mapper holds (:class:`MapperBase`).
- :mod:`syncd.connectorkit.errors`: error classification helpers (HTTP status -> error kind).

Nothing here knows a vendor: every figure, header name and code comes from the connector that uses it.
"""

from __future__ import annotations

from syncd.connectorkit.base import (
    ConnectorBase,
    HttpSetup,
    VendorClient,
    chunks,
    load_options,
    refresh_token_form,
    vendor_http,
    window_bounds,
)
from syncd.connectorkit.errors import StatusRules, error_for, non_json_text, reset_wait
from syncd.connectorkit.mapper import MapperBase
from syncd.connectorkit.webhooks import GENERIC, HmacScheme, header, json_object, require_secret

__all__ = [
    "GENERIC",
    "ConnectorBase",
    "HmacScheme",
    "HttpSetup",
    "MapperBase",
    "StatusRules",
    "VendorClient",
    "chunks",
    "error_for",
    "header",
    "json_object",
    "load_options",
    "non_json_text",
    "refresh_token_form",
    "require_secret",
    "reset_wait",
    "vendor_http",
    "window_bounds",
]
