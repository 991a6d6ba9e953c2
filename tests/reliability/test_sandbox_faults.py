"""The sandbox kit's probabilistic faults and signal hooks (docs/vendors/README.md "Sandbox control API")."""

from __future__ import annotations

import asyncio
import contextlib
import signal
from typing import Any

import aiohttp

from syncd.sandboxkit import start_sandbox

CREATE = {"method": "POST", "path": "/v1/appointments"}


async def _post(http: aiohttp.ClientSession, url: str, body: Any) -> tuple[int, Any]:
    async with http.post(url, json=body) as resp:
        return resp.status, await resp.json(content_type=None)


async def test_rate_and_signal_faults_are_validated_and_fire() -> None:
    running = await start_sandbox("dentally", rate_limits=False)
    try:
        async with aiohttp.ClientSession() as http:
            faults = running.url + "/_sandbox/faults"
            for bad in ({"rate": 0}, {"rate": 1.5}, {"rate": "often"}):
                status, body = await _post(http, faults, {"match": CREATE, "action": {"type": "status"}, **bad})
                assert status == 400 and "rate" in body["detail"], body
            status, body = await _post(http, faults, {"match": CREATE, "action": {"type": "signal_after_apply"}})
            assert status == 400 and "pid" in body["detail"], body
            # a rate: about that share of the matching requests, repeatably with a seed
            await _post(http, faults, {"match": {"method": "GET", "path": "/v1/appointments"}, "times": 1000,
                                       "rate": 0.3, "seed": 7, "action": {"type": "status", "status": 503}})
            statuses = []
            for _ in range(100):
                async with http.get(running.url + "/v1/appointments",
                                    headers={"Authorization": "Bearer sandbox-token"}) as resp:
                    statuses.append(resp.status)
            assert 15 <= statuses.count(503) <= 45, statuses.count(503)
            # signal_after_apply: the caller is signalled before it hears the answer
            victim = await asyncio.create_subprocess_exec("sleep", "60")
            await http.delete(faults)
            status, _ = await _post(http, faults, {"match": CREATE,
                                                   "action": {"type": "signal_after_apply", "pid": victim.pid,
                                                              "signal": int(signal.SIGTERM)}})
            assert status == 200
            answered = None
            with contextlib.suppress(aiohttp.ClientError):  # the write's answer never comes: dropped
                async with http.post(running.url + "/v1/appointments", json={},
                                     headers={"Authorization": "Bearer sandbox-token",
                                              "User-Agent": "syncd-tests/1.0 (ops@clinic.example)"}) as resp:
                    answered = resp.status
            assert answered is None, answered
            assert await asyncio.wait_for(victim.wait(), 5) == -signal.SIGTERM
            async with http.get(faults) as resp:
                assert (await resp.json())["fired"]["signal_after_apply"] == 1
    finally:
        await running.stop()
