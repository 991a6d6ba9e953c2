"""A config for command-line tests that never reach a vendor: a Salesforce Health org and a Dentally
practice in one sync group, at addresses nothing listens on."""

from __future__ import annotations

from pathlib import Path

_CONFIG = """
[ledger]
url = "{url}"
{log}
[connectors.sf]
type = "salesforce_health"
base_url = "http://127.0.0.1:8701"
token_url = "http://127.0.0.1:8701/services/oauth2/token"
client_id = "cid"
client_secret = "{sf_secret}"
refresh_token = "rt"
api_version = "65.0"

[connectors.dentally]
type = "dentally"
base_url = "http://127.0.0.1:8705"
access_token = "tok"
user_agent = "ua"

[[sync]]
name = "main"
members = ["sf", "dentally"]
"""

_LOG = """
[log]
level = "info"
format = "json"
"""


def write_config(path: Path, ledger_url: str, *, sf_secret: str = "cs", log: bool = False) -> Path:
    """Write the config to ``path`` (the ``[log]`` table, info in JSON, with ``log``); ``sf_secret`` may be
    a ``${NAME}`` reference."""
    path.write_text(_CONFIG.format(url=ledger_url, sf_secret=sf_secret, log=_LOG if log else ""), encoding="utf-8")
    return path
