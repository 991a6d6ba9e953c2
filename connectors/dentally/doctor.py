"""``syncd doctor`` for Dentally (docs/vendors/dentally.md §1, §2, §6, §7): token, scopes, reasons, quota."""

from __future__ import annotations

from typing import Any

from connectors.dentally.reads import _iso
from connectors.dentally.writes import DentallyWrites
from syncd.doctor import Diagnosis
from syncd.http import Response

#: the token scope every appointment route needs (docs/vendors/dentally.md §1)
_REQUIRED_SCOPES = ("appointment",)


class DentallyDoctor(DentallyWrites):
    """The checks of ``syncd doctor``; no write."""

    async def checks(self, d: Diagnosis, public_url: str | None) -> None:
        """Token, scopes, the cancellation reasons syncd writes, one page of the window, the hourly
        quota, and the webhook set-up (Dentally has no API for it: said, not checked). No write."""
        http = self.client.http
        answer = await d.attempt(
            "authenticate", http.request("doctor", "GET", f"{self.client.prefix}/appointment_cancellation_reasons")
        )
        if answer is None:
            d.skip_blocked("scopes", "cancellation reasons", "read", "rate limit")
        else:
            d.ok("authenticate", f"{http.base_url} accepted the token and the User-Agent")
            self._scopes(d, answer)
            self._reasons_check(d, answer)
            await self._read_check(d)
        self._webhooks_check(d, public_url)

    def _scopes(self, d: Diagnosis, answer: Response) -> None:
        scopes = set(str(answer.headers.get("X-OAuth-Scopes", "")).split())
        needed = set(_REQUIRED_SCOPES)
        if not scopes:
            d.skip("scopes", "the answer carried no X-OAuth-Scopes header")
        elif needed - scopes:
            d.fail(
                "scopes",
                f"the token has the scopes {' '.join(sorted(scopes))}; syncd needs {' '.join(sorted(needed))}",
                f"create a Dentally token with those scopes and put it in connectors.{self.name}.access_token",
                f"connectors.{self.name}.access_token",
            )
        else:
            d.ok("scopes", f"token scopes: {' '.join(sorted(scopes))}")

    def _reasons_check(self, d: Diagnosis, answer: Response) -> None:
        body = answer.json_or_none()
        items = body.get("appointment_cancellation_reasons") if isinstance(body, dict) else None
        names = {str(i.get("reason", "")).strip().lower() for i in items or [] if isinstance(i, dict)}
        defaults = self.mapping.defaults
        wanted = [str(defaults["replace_reason"]), str(defaults["fallback_cancel_reason"])]
        absent = [w for w in wanted if w.lower() not in names]
        if absent:
            d.fail(
                "cancellation reasons",
                f"the practice has no cancellation reason {', '.join(absent)}",
                "add it in Dentally (Settings > Appointments > Cancellation reasons): syncd writes it when "
                "it cancels an appointment replaced after a patient change, or whose reason matches none",
            )
        else:
            d.ok("cancellation reasons", f"{len(names)} reasons, including {', '.join(wanted)}")

    async def _read_check(self, d: Diagnosis) -> None:
        http = self.client.http
        low, high = self._window()
        page = await d.attempt(
            "read",
            http.request(
                "doctor",
                "GET",
                self.client.appointments_path,
                params={"after": _iso(low), "before": _iso(high), "page": "1", "per_page": "1"},
            ),
        )
        if page is not None:
            listing = page.json_or_none()
            meta: dict[str, Any] = {}
            if isinstance(listing, dict) and isinstance(listing.get("meta"), dict):
                meta = listing["meta"]
            d.ok(
                "read",
                f"read one page of the window ({meta.get('total', '?')} appointments between "
                f"{_iso(low)[:10]} and {_iso(high)[:10]})",
            )
            remaining, limit = page.headers.get("X-RateLimit-Remaining"), page.headers.get("X-RateLimit-Limit")
            if remaining is None or limit is None or not (remaining.isdigit() and limit.isdigit()):
                d.skip("rate limit", "no X-RateLimit headers in the answer")
            elif int(remaining) < int(limit) // 10:
                d.warn("rate limit", f"{remaining} of {limit} requests left this hour (shared with the "
                       "practice's other integrations)",
                       "syncd slows down by itself; check what else uses this token's quota")
            else:
                d.ok("rate limit", f"{remaining} of {limit} requests left this hour")

    def _webhooks_check(self, d: Diagnosis, public_url: str | None) -> None:
        hook = f"{(public_url or '<public URL>').rstrip('/')}/webhooks/{self.name}"
        if self.config.webhook_secret is None:
            d.warn(
                "webhooks",
                f"webhooks are off: changes arrive by polling every {self.config.poll_interval:g}s",
                f"set connectors.{self.name}.webhook_secret and add a webhook to {hook} in Dentally "
                "(Settings > Developer > Webhooks)",
                f"connectors.{self.name}.webhook_secret",
            )
        else:
            d.skip(
                "webhooks",
                "Dentally has no API that lists webhooks",
                f"check Settings > Developer > Webhooks: a webhook to {hook}, signed with "
                f"connectors.{self.name}.webhook_secret, active (Dentally turns it off after 50 failures)",
            )
