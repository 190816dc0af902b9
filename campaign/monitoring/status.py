"""What the campaign has done so far, per step and per lead status, what mail came back, for
people and monitors, whether the sender is backing off from a failing SMTP relay, and what
is paused."""

from __future__ import annotations

from typing import Any

from campaign.config.schedule import Schedule
from campaign.inbound.classify import Kind
from campaign.model import DeliveryStatus
from campaign.sending import breaker
from campaign.store import Store

DELIVERY_COLUMNS = tuple(status.value for status in DeliveryStatus)
# `clicked`: leads who clicked a link in the step (people); `scanned`: leads whose links in it
# a link scanner opened (`web.scanners`), never a conversion; `converted`: conversions
# credited to the step (the last step a person clicked before booking, else the last sent).
ENGAGEMENT_COLUMNS = ("clicked", "scanned", "converted")
# Mail that came back about the step, after it was sent (`campaign.inbound`, webhooks), by
# the kinds each column counts.
INBOUND_COLUMNS = {
    "bounces": (Kind.HARD_BOUNCE, Kind.SOFT_BOUNCE),
    "complaints": (Kind.COMPLAINT,),
    "replies": (Kind.REPLY,),
}
# The terminal table's columns; each row (and `status --json`) also has INBOUND_COLUMNS,
# which the terminal shows in total on a line of their own, so the table fits 120 columns.
STATUS_COLUMNS = (*DELIVERY_COLUMNS, *ENGAGEMENT_COLUMNS)


def campaign_status(store: Store, schedule: Schedule) -> dict[str, Any]:
    campaign_id = schedule.campaign.id
    counts = store.reads.delivery_counts(campaign_id)
    engagement = store.reads.engagement_counts(campaign_id)
    inbound = store.inbound.counts(campaign_id)
    current = [step.id for step in schedule.steps]
    if schedule.confirmation is not None:  # the double opt-in email, queued like the steps
        current.insert(0, schedule.confirmation.id)
    step_ids = current + sorted(set(counts) - set(current))  # removed steps still have history
    steps = []
    for step_id in step_ids:
        row: dict[str, Any] = {"step": step_id, "in_schedule": step_id in current}
        row.update({status: counts.get(step_id, {}).get(status, 0) for status in DELIVERY_COLUMNS})
        row.update({name: engagement.get(step_id, {}).get(name, 0) for name in ENGAGEMENT_COLUMNS})
        row.update(_came_back(inbound.get(step_id, {})))
        steps.append(row)
    return {
        "campaign": campaign_id,
        "steps": steps,
        "leads": store.reads.lead_counts(),
        # Addresses on the suppression list, per reason (bounced, complained, unsubscribed).
        "suppressed": store.suppressions.counts(),
        # Every inbound message and webhook event recorded, per kind, steps or none.
        "inbound": _by_kind(inbound),
        "unknown": store.reads.deliveries_with_status(campaign_id, DeliveryStatus.UNKNOWN),
        "sender": sender_state(store),
        "paused": paused_state(store, campaign_id),
    }


def paused_state(store: Store, campaign_id: str) -> dict[str, Any]:
    """Whether the series is paused (`series pause`) and since when, and how many of its
    leads are paused one by one (`leads pause`)."""
    since = store.meta.series_paused_since(campaign_id)
    return {
        "series_since": None if since is None else since.isoformat(),
        "leads": store.queue.paused_leads(campaign_id),
    }


def _came_back(kinds: dict[str, int]) -> dict[str, int]:
    return {
        name: sum(kinds.get(k, 0) for k in counted) for name, counted in INBOUND_COLUMNS.items()
    }


def _by_kind(counts: dict[str, dict[str, int]]) -> dict[str, int]:
    totals: dict[str, int] = {}
    for kinds in counts.values():
        for kind, n in kinds.items():
            totals[kind] = totals.get(kind, 0) + n
    return dict(sorted(totals.items()))


def sender_state(store: Store) -> dict[str, Any]:
    """`ok`, or the SMTP relay's failures in a row and until when the sender backs off."""
    state = breaker.read(store)
    return {"state": "ok"} if state is None else state.as_json()
