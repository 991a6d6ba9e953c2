"""Secrets from systemd credentials (docs/reference.md §2): ``${NAME}`` falls back to
``$CREDENTIALS_DIRECTORY/NAME`` when the environment variable is unset.

A real ``syncd resync`` over the Zoho and Dentally sandboxes, every vendor secret referenced as
``${NAME}`` and none of them in the environment: the credential files (as systemd writes them for
``LoadCredential=``, with a trailing newline) authenticate; a rotated token in a file is refused by
the vendor (exit 3, naming the connector), and no secret ever reaches the output.
"""

from __future__ import annotations

import asyncio
import json
import os
import sys
from pathlib import Path

from tests.scenarios.harness import make_world

SECRETS = {
    "ZOHO_CLIENT_ID": "sandbox-client",
    "ZOHO_CLIENT_SECRET": "sandbox-secret",
    "ZOHO_REFRESH_TOKEN": "sandbox-refresh",
    "DENTALLY_ACCESS_TOKEN": "sandbox-token",
}


OUTPUT: list[str] = []


async def _syncd(config: Path, env: dict[str, str], *args: str) -> tuple[int, str, str]:
    proc = await asyncio.create_subprocess_exec(
        sys.executable, "-m", "syncd", "--config", str(config), *args,
        stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.PIPE, env=env,
    )
    out, err = await asyncio.wait_for(proc.communicate(), 120)
    assert proc.returncode is not None
    OUTPUT.extend((out.decode(), err.decode()))
    return proc.returncode, out.decode(), err.decode()


async def test_resync_authenticates_with_secrets_from_the_credentials_directory(tmp_path: Path) -> None:
    OUTPUT.clear()
    world = await make_world(tmp_path, f"sqlite+aiosqlite:///{tmp_path / 'ledger.db'}",
                             {"zoho": "zoho_crm", "dentally": "dentally"}, n_appointments=2)
    try:
        await world.seed("zoho")
        await world.seed("dentally", appointments=False)
        await world.import_crosswalk()
        text = world.config_path.read_text(encoding="utf-8")
        for name, value in SECRETS.items():
            field = {"ZOHO_CLIENT_ID": "client_id", "ZOHO_CLIENT_SECRET": "client_secret",
                     "ZOHO_REFRESH_TOKEN": "refresh_token", "DENTALLY_ACCESS_TOKEN": "access_token"}[name]
            assert f'{field} = "{value}"' in text
            text = text.replace(f'{field} = "{value}"', f'{field} = "${{{name}}}"', 1)
        world.config_path.write_text(text, encoding="utf-8")
        assert not any(value in text for value in SECRETS.values())
        creds = tmp_path / "credentials"
        creds.mkdir(mode=0o700)
        for name, value in SECRETS.items():
            (creds / name).write_text(value + "\n", encoding="utf-8")  # as LoadCredential= copies a file
        env = {k: v for k, v in os.environ.items() if k not in SECRETS}
        env["CREDENTIALS_DIRECTORY"] = str(creds)

        code, out, err = await _syncd(world.config_path, env, "check-config")
        assert code == 0, err
        code, out, err = await _syncd(world.config_path, env, "resync", "--json")
        assert code == 0, err[-3000:]
        document = json.loads(out)
        assert document["connectors"]["dentally"]["created"] == 2
        assert document["connectors"]["zoho"]["read"] == 2

        # the Dentally token rotated on the vendor's side, the credential file still holds the old one
        (creds / "DENTALLY_ACCESS_TOKEN").write_text("rotated-away-token\n", encoding="utf-8")
        code, out, err = await _syncd(world.config_path, env, "resync", "--json")
        assert code == 3, (out, err[-3000:])
        assert "dentally" in json.loads(out)["stopped"]

        # without the directory, the same config is a config error naming every key
        del env["CREDENTIALS_DIRECTORY"]
        code, out, err = await _syncd(world.config_path, env, "resync", "--json")
        assert code == 2
        keys = sorted(line.split(":", 1)[0] for line in err.splitlines() if "is not set" in line)
        assert keys == ["connectors.dentally.access_token", "connectors.zoho.client_id",
                        "connectors.zoho.client_secret", "connectors.zoho.refresh_token"]
    finally:
        await world.stop()
    shown = "\n".join(OUTPUT)
    assert len(OUTPUT) == 8
    for value in (*SECRETS.values(), "rotated-away-token"):
        assert value not in shown
