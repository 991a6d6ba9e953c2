"""``syncd doctor`` for Salesforce Health Cloud (docs/vendors/salesforce_health.md §1, §3, §6, §7)."""

from __future__ import annotations

from datetime import UTC, datetime

from connectors.salesforce_health.create import SalesforceCreate
from connectors.salesforce_health.reads import _iso
from syncd.doctor import Diagnosis


class SalesforceDoctor(SalesforceCreate):
    """The checks of ``syncd doctor``; no write."""

    async def checks(self, d: Diagnosis, public_url: str | None) -> None:
        """Token refresh, the ``Syncd_Id__c`` field (a query that names it), read access to
        ServiceAppointment and AssignedResource, the API version, the daily API usage, and the org-side
        webhook (a Flow or Apex callout syncd cannot see). No write."""
        key = f"connectors.{self.name}"
        version = self.client.api_version
        try:
            major = float(version)
        except ValueError:
            major = 0.0
        if major < 65.0:
            d.fail(
                "api version",
                f"api_version {version!r}: the appointment-management resources need 65.0 or later",
                f'set {key}.api_version = "65.0"',
                f"{key}.api_version",
            )

        async def token() -> bool:
            await self.client.auth.ensure()
            return True

        if await d.attempt("authenticate", token()) is None:
            d.skip_blocked("field " + self.mapping.fields["reference"], "read", "permissions", "api usage")
        else:
            instance = self.client.auth.instance_url or self.config.base_url
            d.ok("authenticate", f"the token endpoint issued an access token for {instance}")
            await self._org_checks(d, instance)
        self._webhooks_check(d, public_url)

    async def _org_checks(self, d: Diagnosis, instance: str) -> None:
        key = f"connectors.{self.name}"
        if instance.rstrip("/") != self.config.base_url.rstrip("/"):
            d.warn(
                "instance url",
                f"the token's instance_url {instance} differs from base_url; syncd uses instance_url",
                f"set {key}.base_url to the org's My Domain URL",
                f"{key}.base_url",
            )
        field = self.mapping.fields["reference"]
        probe = f"SELECT Id FROM ServiceAppointment WHERE {field} = 'syncd_doctor_probe'"
        if (
            await d.attempt(f"field {field}", self.client.get_json("doctor", "query", {"q": probe}), missing=True)
            is not None
        ):
            d.ok(f"field {field}", f"ServiceAppointment.{field} exists and the integration user can query it")
        lo, hi = self.window_bounds(datetime.now(UTC))
        window = (
            f"SELECT Id, SystemModstamp FROM ServiceAppointment WHERE SchedStartTime >= {_iso(lo)} "
            f"AND SchedStartTime < {_iso(hi)} ORDER BY Id"
        )
        page = await d.attempt("read", self.client.get_json("doctor", "query", {"q": window}))
        if page is not None:
            total = page.get("totalSize", "?") if isinstance(page, dict) else "?"
            d.ok(
                "read", f"read one page of the window: {total} appointments between {_iso(lo)[:10]} and {_iso(hi)[:10]}"
            )
        resources = (
            "SELECT ServiceAppointmentId, ServiceResourceId FROM AssignedResource "
            "WHERE ServiceAppointmentId IN ('08p000000000000AAA')"
        )
        if (
            await d.attempt("permissions", self.client.get_json("doctor", "query", {"q": resources}), missing=True)
            is not None
        ):
            d.ok("permissions", "the integration user can read AssignedResource (the practitioner of each appointment)")
        usage = self.client.api_usage
        if usage is None:
            d.skip("api usage", "the answers carried no Sforce-Limit-Info header")
        elif usage[1] and usage[0] / usage[1] >= self.settings.pause_polling_above:
            d.warn(
                "api usage",
                f"{usage[0]} of {usage[1]} daily API requests used: syncd pauses polling above 90 %",
                "check which integrations spend the org's allocation",
            )
        else:
            d.ok("api usage", f"{usage[0]} of {usage[1]} daily API requests used (org-wide)")

    def _webhooks_check(self, d: Diagnosis, public_url: str | None) -> None:
        key = f"connectors.{self.name}"
        hook = f"{(public_url or '<public URL>').rstrip('/')}/webhooks/{self.name}"
        if self.config.webhook_secret is None:
            d.warn(
                "webhooks",
                f"webhooks are off: changes arrive by polling every {self.config.poll_interval:g}s",
                f"set {key}.webhook_secret and add the signed Flow or Apex callout to {hook}",
                f"{key}.webhook_secret",
            )
        else:
            d.skip(
                "webhooks",
                "the callout is a Flow or Apex trigger in the org, which syncd cannot see",
                f"check that it posts the changed ids to {hook}, signed with {key}.webhook_secret",
            )
