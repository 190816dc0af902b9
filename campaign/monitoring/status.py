"""What the campaign has done so far, per step and per lead status, for people and monitors,
and whether the sender is backing off from a failing SMTP relay."""

from __future__ import annotations

from typing import Any

from campaign.config.schedule import Schedule
from campaign.model import DeliveryStatus
from campaign.sending import breaker
from campaign.store import Store

DELIVERY_COLUMNS = tuple(status.value for status in DeliveryStatus)
# `clicked`: leads who clicked a link in the step; `converted`: conversions credited to the
# step (the last step clicked before booking, else the last step sent).
ENGAGEMENT_COLUMNS = ("clicked", "converted")
STATUS_COLUMNS = (*DELIVERY_COLUMNS, *ENGAGEMENT_COLUMNS)


def campaign_status(store: Store, schedule: Schedule) -> dict[str, Any]:
    campaign_id = schedule.campaign.id
    counts = store.reads.delivery_counts(campaign_id)
    engagement = store.reads.engagement_counts(campaign_id)
    current = [step.id for step in schedule.steps]
    if schedule.confirmation is not None:  # the double opt-in email, queued like the steps
        current.insert(0, schedule.confirmation.id)
    step_ids = current + sorted(set(counts) - set(current))  # removed steps still have history
    steps = []
    for step_id in step_ids:
        row: dict[str, Any] = {"step": step_id, "in_schedule": step_id in current}
        row.update({status: counts.get(step_id, {}).get(status, 0) for status in DELIVERY_COLUMNS})
        row.update({name: engagement.get(step_id, {}).get(name, 0) for name in ENGAGEMENT_COLUMNS})
        steps.append(row)
    return {
        "campaign": campaign_id,
        "steps": steps,
        "leads": store.reads.lead_counts(),
        "unknown": store.reads.deliveries_with_status(campaign_id, DeliveryStatus.UNKNOWN),
        "sender": sender_state(store),
    }


def sender_state(store: Store) -> dict[str, Any]:
    """`ok`, or the SMTP relay's failures in a row and until when the sender backs off."""
    state = breaker.read(store)
    return {"state": "ok"} if state is None else state.as_json()
