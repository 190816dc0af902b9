"""What a schedule edit will change, before it is saved: for the series as written, and for
every lead already in it.

The per-lead answer comes from running the real planner (through the same dry run as
`plan`) for each enrolled lead under both schedules and comparing the emails step by step,
so it tells exactly what the dispatcher would do after the edit: which leads get a new step,
lose one, or get one earlier or later, and by how much.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import datetime, timedelta
from typing import Literal

from campaign.authoring.timeline import LeadPlan, lead_emails, plan_in_force
from campaign.config.schedule import Schedule, SendWindow, format_clock, format_delay
from campaign.store import Store

SeriesKind = Literal[
    "campaign", "timezone", "window", "added", "removed", "delay", "order", "subject", "template"
]
LeadKind = Literal["new", "lost", "moved"]


@dataclass(frozen=True)
class SeriesChange:
    """One difference between the two files as written, before any lead is considered."""

    kind: SeriesKind
    step: str | None
    detail: str

    def __str__(self) -> str:
        return f"{self.kind:<9} {self.step or '':<16} {self.detail}".rstrip()


@dataclass(frozen=True)
class LeadChange:
    """One email of one lead that the edit adds, removes or moves."""

    email: str
    step_id: str
    kind: LeadKind
    old_at: datetime | None
    new_at: datetime | None

    @property
    def shift(self) -> timedelta | None:
        if self.old_at is None or self.new_at is None:
            return None
        return self.new_at - self.old_at


def _window_text(window: SendWindow) -> str:
    return f"{','.join(window.days)} {format_clock(window.start)}-{format_clock(window.end)}"


def nominal_days(schedule: Schedule) -> dict[str, timedelta]:
    """When each step goes out after signup if every delay is kept exactly (no window)."""
    offsets, elapsed = {}, timedelta(0)
    for step in schedule.steps:
        elapsed += step.delay
        offsets[step.id] = elapsed
    return offsets


def _settings_changes(old: Schedule, new: Schedule) -> list[SeriesChange]:
    changes = []
    if old.campaign.id != new.campaign.id:
        changes.append(
            SeriesChange(
                "campaign",
                None,
                f"id {old.campaign.id} -> {new.campaign.id}: leads enrolled in "
                f"{old.campaign.id} get nothing more from this file",
            )
        )
    if old.timezone != new.timezone:
        changes.append(
            SeriesChange(
                "timezone",
                None,
                f"{old.timezone} -> {new.timezone} (for leads who gave no time zone)",
            )
        )
    if old.send_window != new.send_window:
        changes.append(
            SeriesChange(
                "window",
                None,
                f"{_window_text(old.send_window)} -> {_window_text(new.send_window)}",
            )
        )
    return changes


def _step_changes(old: Schedule, new: Schedule) -> list[SeriesChange]:
    old_days, new_days = nominal_days(old), nominal_days(new)
    old_ids = [s.id for s in old.steps]
    new_ids = [s.id for s in new.steps]
    changes = []
    for position, step in enumerate(new.steps, 1):
        day = new_days[step.id].days
        before = old.step(step.id)
        if before is None:
            changes.append(
                SeriesChange(
                    "added",
                    step.id,
                    f"as step {position}, delay {format_delay(step.delay)} (day {day})",
                )
            )
            continue
        if before.delay != step.delay:
            changes.append(
                SeriesChange(
                    "delay",
                    step.id,
                    f"{format_delay(before.delay)} -> {format_delay(step.delay)} "
                    f"(day {old_days[step.id].days} -> day {day})",
                )
            )
        if old_ids.index(step.id) != new_ids.index(step.id):
            changes.append(
                SeriesChange(
                    "order", step.id, f"step {old_ids.index(step.id) + 1} -> step {position}"
                )
            )
        if before.subject != step.subject:
            changes.append(
                SeriesChange("subject", step.id, f"{before.subject!r} -> {step.subject!r}")
            )
        if before.template != step.template:
            changes.append(
                SeriesChange("template", step.id, f"{before.template} -> {step.template}")
            )
    for step in old.steps:
        if new.step(step.id) is None:
            changes.append(
                SeriesChange(
                    "removed",
                    step.id,
                    f"was step {old_ids.index(step.id) + 1} (day {old_days[step.id].days})",
                )
            )
    return changes


def series_changes(old: Schedule, new: Schedule) -> list[SeriesChange]:
    """Every difference that matters to a lead: settings first, then steps in new order."""
    return _settings_changes(old, new) + _step_changes(old, new)


def lead_changes(
    old: Schedule, new: Schedule, lead: LeadPlan, now: datetime, *, trust_old: bool, trust_new: bool
) -> list[LeadChange]:
    """The emails of one lead that the edit adds, removes or moves, in the new order."""
    before = {e.step_id: e.at for e in lead_emails(old, lead, now, trust_pending=trust_old)}
    after: dict[str, datetime] = {}
    if new.campaign.id == old.campaign.id:
        after = {e.step_id: e.at for e in lead_emails(new, lead, now, trust_pending=trust_new)}
    changes = []
    for step_id, at in after.items():
        if step_id not in before:
            changes.append(LeadChange(lead.email, step_id, "new", None, at))
        elif before[step_id] != at:
            changes.append(LeadChange(lead.email, step_id, "moved", before[step_id], at))
    changes.extend(
        LeadChange(lead.email, step_id, "lost", at, None)
        for step_id, at in before.items()
        if step_id not in after
    )
    return changes


@dataclass
class StoreDiff:
    """The per-lead side of a diff: how many leads were compared and what changes for them."""

    leads: int = 0
    affected: int = 0
    changes: list[LeadChange] = field(default_factory=list)


def store_changes(
    store: Store,
    old: Schedule,
    new: Schedule,
    now: datetime,
    progress: Callable[[int], None] | None = None,
) -> StoreDiff:
    """Compare both schedules for every lead enrolled under the old one; reads only.

    Each side trusts the store's pending rows only if they were planned with that side's
    timing, exactly as the dispatcher decides whether to replan.
    """
    trust_old, trust_new = plan_in_force(store, old), plan_in_force(store, new)
    result = StoreDiff()
    for batch in store.reads.lead_plans(old.campaign.id):
        for lead in batch:
            result.leads += 1
            found = lead_changes(old, new, lead, now, trust_old=trust_old, trust_new=trust_new)
            result.affected += bool(found)
            result.changes.extend(found)
        if progress:
            progress(len(batch))
    return result
