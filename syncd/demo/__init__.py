"""``syncd demo``: the five vendor sandboxes and the real daemon in one process, with a scripted story.

What it does, in order (about 30 seconds):

1. starts one built-in sandbox per configured connector on a free port (their rate limits relaxed,
   the figures real vendors enforce stay the sandboxes' defaults), so it never collides with a
   running ``syncd sandbox``;
2. derives a temporary copy of the configuration: same connectors, groups and owners, but every
   ``base_url`` pointing at its sandbox, the sandboxes' documented credentials, a 1-second
   ``poll_interval``, a high ``max_requests_per_second`` and a fresh SQLite ledger in a temporary
   directory (removed at the end unless ``--keep``);
3. seeds invented, realistic appointments into one system of each sync group (Dentally for the
   CRM/EHR group), reference data (patients, practitioners, sites, services) into every system, and
   imports the crosswalk -- leaving out one patient's Salesforce row on purpose; as at a real go-live,
   a few of Dentally's bookings were also typed by hand into Zoho and Salesforce (no syncd reference),
   and one booking into Zoho only;
4. runs the daemon (:func:`syncd.daemon.run_daemon`, the same code as ``syncd run``): its first sync
   links the hand-typed records instead of copying them (onboarding), and while it polls the demo
   makes five scripted changes as other users would: a reschedule in the CRM, a cancellation in the
   EHR, a GET/PUT race on a target's write, a patient change that Dentally forbids in place, and the
   missing crosswalk entry from step 3; then, in the SaludYa group, a booking born in SaludYa that
   must reach its CRM with its service type (SaludYa's read-only specialty) and the group's
   ``default_location``;
5. checks each outcome (the onboarding one too) by reading the sandboxes' and the ledger's state,
   prints a summary and exits 0 when all hold (1 otherwise, naming what did not).

The live view is built from the daemon's own structured log (the ``sync_decision`` events, which carry
ids, connector names and field names only), so it shows exactly what ``syncd run`` decides. The JSON
log lines themselves go to ``syncd-demo.log`` in the temporary directory, not to the terminal. Nothing
printed here is patient data: appointments are named by ids, changes by field names.

The package, outside syncd's core (the daemon never imports it): :mod:`~syncd.demo.script` holds the
story as data (the steps in order, their titles, the texts shown), :mod:`~syncd.demo.scenarios` the
steps themselves, :mod:`~syncd.demo.seeding` the stage they play on, :mod:`~syncd.demo.runner` the run.
"""

from __future__ import annotations

from syncd.demo.data import CRM_APPOINTMENTS, OTHER_APPOINTMENTS, RECEPTION_NOTE, SEED, DemoError, demo_datasets
from syncd.demo.runner import console_for, run_demo, workspace

__all__ = [
    "CRM_APPOINTMENTS",
    "OTHER_APPOINTMENTS",
    "RECEPTION_NOTE",
    "SEED",
    "DemoError",
    "console_for",
    "demo_datasets",
    "run_demo",
    "workspace",
]
