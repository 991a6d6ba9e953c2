"""``syncd doctor`` for Zoho CRM (docs/vendors/zoho_crm.md §1, §2, §6): token, module, field, scopes, watch."""

from __future__ import annotations

from connectors.zoho_crm.writes import ZohoWrites
from syncd.doctor import Diagnosis

STATE_CHANNEL = "watch_channel_id"


STATE_EXPIRY = "watch_channel_expiry"


class ZohoDoctor(ZohoWrites):
    """The checks of ``syncd doctor``; no write."""

    async def checks(self, d: Diagnosis, public_url: str | None) -> None:
        """Token refresh and one page of the module, the ``Syncd_Id`` field (a search that names it), the
        settings scope (appointment preferences), the watch channel for notifications. No write: the
        user's edit permission and the notifications scope show only on a write or a subscription."""
        page = await d.attempt("authenticate", self.client.list_modified(None, page=1, page_token=None))
        if page is None:
            d.skip_blocked("read", f"field {self.mapping.fields['reference']}", "settings scope", "write permission")
        else:
            d.ok(
                "authenticate",
                f"{self.config.auth_value('accounts_url')} issued an access token and "
                f"{self.client.http.base_url} accepted it",
            )
            info = self.client.info_of(page)
            d.ok(
                "read",
                f"read one page of {self.settings.module}: {len(self.client.data_of(page))} records"
                + (" (more follow)" if info.get("more_records") else ""),
            )
            field = self.mapping.fields["reference"]
            if (
                await d.attempt(
                    f"field {field}",
                    self.client.search(f"({field}:equals:syncd_doctor_probe)", op="doctor"),
                    missing=True,
                )
                is not None
            ):
                d.ok(f"field {field}", f"the {self.settings.module} module has the field {field}")
            prefs = await d.attempt("settings scope", self.client.preferences(), missing=True)
            if prefs is not None:
                d.ok(
                    "settings scope",
                    f"appointment preferences readable (mark_as_complete = {prefs.get('mark_as_complete', '?')})",
                )
            d.skip(
                "write permission",
                "shows only on a write: a user without edit rights on Appointments gets "
                "403 NO_PERMISSION on the first write, named in `syncd status`",
            )
        await self._webhooks_check(d, public_url)

    async def _webhooks_check(self, d: Diagnosis, public_url: str | None) -> None:
        key = f"connectors.{self.name}"
        if self.config.webhook_secret is None:
            d.warn(
                "webhooks",
                f"notifications are off (no webhook_secret): changes arrive by polling every "
                f"{self.config.poll_interval:g}s",
                f"set {key}.webhook_secret (1-50 characters) and [server] public_url",
                f"{key}.webhook_secret",
            )
        elif len(self.config.webhook_secret.reveal()) > 50:
            d.fail(
                "webhooks",
                "webhook_secret is longer than Zoho's 50-character watch token",
                f"use 1-50 characters in {key}.webhook_secret",
                f"{key}.webhook_secret",
            )
        elif not public_url:
            d.warn(
                "webhooks",
                "no [server] public_url: syncd cannot subscribe a watch channel, so changes arrive by polling only",
                "set [server] public_url to the HTTPS address Zoho reaches /webhooks/... at",
                "server.public_url",
            )
        else:
            expiry = await self.state.get(STATE_EXPIRY)
            if expiry:
                d.ok(
                    "webhooks",
                    f"watch channel {await self.state.get(STATE_CHANNEL)} to "
                    f"{public_url.rstrip('/')}/webhooks/{self.name}, expires {expiry} (renewed by syncd run)",
                )
            else:
                d.warn(
                    "webhooks",
                    "no watch channel yet: `syncd run` subscribes one at start (needs the "
                    "ZohoCRM.notifications.ALL scope)",
                    None,
                )
