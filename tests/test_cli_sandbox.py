"""`syncd sandbox` serves the five sandboxes, prints their URLs and stops cleanly on Ctrl-C."""

from __future__ import annotations

import asyncio
import re
import signal
import sys

import aiohttp


async def test_sandbox_command_serves_all_five_and_stops_on_ctrl_c():
    proc = await asyncio.create_subprocess_exec(
        sys.executable, "-m", "syncd", "sandbox", "--port-base", "0",
        stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.PIPE,
    )
    assert proc.stdout is not None
    urls: dict[str, str] = {}
    try:
        while len(urls) < 5:
            line = (await asyncio.wait_for(proc.stdout.readline(), 20)).decode()
            assert line, "syncd sandbox exited early"
            match = re.match(r"(\w+)\s+(http://127\.0\.0\.1:\d+)", line)
            if match:
                urls[match.group(1)] = match.group(2)
        assert set(urls) == {"salesforce_health", "zoho_crm", "saludya", "onlive", "dentally"}
        async with aiohttp.ClientSession() as session:
            for url in urls.values():
                async with session.get(url + "/_sandbox/records") as resp:
                    assert resp.status == 200
                    assert "records" in await resp.json()
        proc.send_signal(signal.SIGINT)
        out, _ = await asyncio.wait_for(proc.communicate(), 20)
        assert proc.returncode == 0
        assert b"sandboxes stopped" in out
    finally:
        if proc.returncode is None:
            proc.kill()
            await proc.wait()
