"""Undoing bounces that were the sender's fault: the leads come back into the series and the
step that bounced is sent again.

A relay that refuses every recipient alike (say, `554 5.7.1 Relay access denied`) makes the
first few leads of a run look bounced before the dispatcher sees the pattern and stops. Each
bounce's reason names its run, so the operator can take back one run's bounces at once, or
name the leads.
"""

from __future__ import annotations

from collections.abc import Sequence
from datetime import datetime

from campaign.config.schedule import Schedule
from campaign.model import LeadStatus
from campaign.sending.dispatcher import bounce_tag, lead_plan
from campaign.store import Store


def reactivate(
    store: Store,
    schedule: Schedule,
    now: datetime,
    emails: Sequence[str] = (),
    run_id: str | None = None,
) -> list[str]:
    """Reactivate the bounced leads with these addresses, or those bounced by `run_id`;
    returns the addresses reactivated."""
    tag = bounce_tag(run_id) if run_id else None
    done = []
    for lead_id, email in store.leads.bounced_leads(emails, tag):
        plan = lead_plan(schedule, store.leads.lead(lead_id), LeadStatus.ACTIVE)
        if store.queue.reactivate(lead_id, schedule.campaign.id, plan, now):
            done.append(email)
    return done
