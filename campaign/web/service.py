"""What every web endpoint works with, passed in rather than found (tests pass a fixed clock),
and the two things both the API and the links in emails do: find a lead and record a booking.
"""

from __future__ import annotations

import logging
from collections.abc import Callable
from dataclasses import dataclass

from campaign.config.schedule import Schedule
from campaign.model import Clock, Lead, LeadStatus
from campaign.rendering.links import LinkSigner
from campaign.rendering.renderer import Renderer
from campaign.store import Store

log = logging.getLogger("campaign.web.service")


@dataclass
class Service:
    """The store, the schedule, the link signer and the clock behind the endpoints.

    `renderer` returns the schedule as last compiled, at once: `Engine.serving_renderer`
    compiles an edit in the background and keeps the last good version while an edit is
    broken, so no request waits for a compile or fails on a marketer's typo.
    """

    store: Store
    renderer: Callable[[], Renderer]
    signer: LinkSigner
    clock: Clock

    def lead(self, lead_id: int) -> Lead:
        """A lead this request has just found or stored, read again as the store has it."""
        lead = self.store.leads.lead(lead_id)
        assert lead is not None, f"lead {lead_id} vanished"
        return lead

    def convert(self, schedule: Schedule, lead_id: int, step_id: str | None, source: str) -> bool:
        """Record the conversion; the series stops for the lead if `exit_on` says so."""
        stop = LeadStatus.CONVERTED in schedule.exit_on
        new = self.store.leads.record_conversion(
            lead_id, schedule.campaign.id, step_id, source, self.clock(), stop=stop
        )
        log.info(
            "converted lead=%s step=%s source=%s new=%s stop=%s",
            lead_id,
            step_id,
            source,
            new,
            stop,
        )
        return new
