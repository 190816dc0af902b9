"""What a schedule edit will change, before it is saved: for the series as written, and for
every lead already in it.

The per-lead answer comes from running the real planner (through the same dry run as
`plan`) for each enrolled lead under both schedules and comparing the emails step by step,
so it tells exactly what the dispatcher would do after the edit: which leads get a new step,
lose one, or get one earlier or later, and by how much; and, for a step still to come, whose
path changes (its `if:` changed) or who would see another subject of a subject test (the
planner's `choose_variant` under each schedule). A lead who already got a step keeps the
subject its delivery recorded, so only steps still to come are compared.
"""

from __future__ import annotations

import difflib
import re
import textwrap
from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import datetime, timedelta
from typing import Literal

from campaign.authoring.preview import sent_only_if, shares, variants_text
from campaign.authoring.timeline import LeadPlan, lead_emails, plan_in_force
from campaign.config.schedule import (
    LoadedSchedule,
    Schedule,
    SendWindow,
    Step,
    format_clock,
    format_delay,
    step_label,
    variant_name,
)
from campaign.planner import choose_variant
from campaign.rendering.renderer import OTHER_SUBJECT, CompiledStep, Renderer
from campaign.store import Store

SeriesKind = Literal[
    "campaign",
    "timezone",
    "window",
    "added",
    "removed",
    "delay",
    "order",
    "subject",
    "preheader",
    "template",
    "condition",  # an `if:` added, removed or changed
    "test",  # a subject test started or ended
    "variant",  # a subject test's subject added, removed, reworded, or the shares changed
]
# path: a step still to come whose `if:` changed; variant: a step still to come whose subject
# test now gives the lead another subject.
LeadKind = Literal["new", "lost", "moved", "path", "variant"]


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
    detail: str = ""  # what changes for a path or variant change, said for the marketer

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
    """Added, removed, moved and re-timed steps, in the new order. Longer than most: one
    branch per kind of change, each building its own line for the marketer."""
    old_days, new_days = nominal_days(old), nominal_days(new)
    old_ids = [s.id for s in old.steps]
    new_ids = [s.id for s in new.steps]
    changes = []
    for position, step in enumerate(new.steps, 1):
        day = new_days[step.id].days
        before = old.step(step.id)
        if before is None:
            condition = f", {sent_only_if(new, step.condition)}" if step.condition else ""
            changes.append(
                SeriesChange(
                    "added",
                    step.id,
                    f"as step {position}, delay {format_delay(step.delay)} (day {day}){condition}",
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
        changes += _subject_changes(before, step)
        changes += _condition_changes(old, new, before, step)
        if before.preheader != step.preheader:
            changes.append(
                SeriesChange("preheader", step.id, f"{before.preheader!r} -> {step.preheader!r}")
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


def same_variants(before: Step, after: Step) -> dict[int, int]:
    """Which subject of the old step is which of the new one (old index -> new index): the
    same words first, then a reworded subject left in the same place. A subject left out
    was removed; one not reached was added."""
    old_texts = [v.text for v in before.subjects]
    new_texts = [v.text for v in after.subjects]
    pairs = {old_texts.index(t): i for i, t in enumerate(new_texts) if t in old_texts}
    taken = set(pairs.values())
    for index in range(min(len(old_texts), len(new_texts))):
        if index not in pairs and index not in taken:
            pairs[index] = index
    return pairs


def _subject_changes(before: Step, step: Step) -> list[SeriesChange]:
    """A subject reworded, a subject test started or ended, and a test's subjects added,
    removed, reworded or given other shares of the leads."""
    old, new = before.subjects, step.subjects
    if len(old) == 1 and len(new) == 1:
        if old[0].text == new[0].text:
            return []
        return [SeriesChange("subject", step.id, f"{old[0].text!r} -> {new[0].text!r}")]
    if len(old) == 1:
        detail = f"subject test started: {variants_text(step)} (was {old[0].text!r})"
        return [SeriesChange("test", step.id, detail)]
    if len(new) == 1:
        detail = (
            f"subject test ended: every lead gets {new[0].text!r} (was {variants_text(before)})"
        )
        return [SeriesChange("test", step.id, detail)]
    pairs = same_variants(before, step)
    changes = []
    for index, variant in enumerate(new):
        if index not in pairs.values():
            changes.append(
                SeriesChange("variant", step.id, f"{variant_name(index)} added: {variant.text!r}")
            )
    for index, variant in enumerate(old):
        if index not in pairs:
            changes.append(
                SeriesChange("variant", step.id, f"{variant_name(index)} removed: {variant.text!r}")
            )
        elif old[index].text != new[pairs[index]].text:
            changes.append(
                SeriesChange(
                    "variant",
                    step.id,
                    f"{variant_name(pairs[index])} reworded: {old[index].text!r} -> "
                    f"{new[pairs[index]].text!r}",
                )
            )
    old_shares = ", ".join(f"{variant_name(i)} {share}" for i, share in enumerate(shares(before)))
    new_shares = ", ".join(f"{variant_name(i)} {share}" for i, share in enumerate(shares(step)))
    reweighted = any(old[i].weight != new[j].weight for i, j in pairs.items())
    if reweighted or old_shares != new_shares:
        what = "re-weighted" if reweighted else "shares"
        detail = f"{what}: {old_shares} -> {new_shares} of the leads still to get it"
        changes.append(SeriesChange("variant", step.id, detail))
    return changes


def _condition_changes(
    old: Schedule, new: Schedule, before: Step, step: Step
) -> list[SeriesChange]:
    """An `if:` added, removed or changed, said as when the step is sent."""
    if before.condition == step.condition:
        return []
    was = sent_only_if(old, before.condition) if before.condition else "sent to every lead"
    now = sent_only_if(new, step.condition) if step.condition else "sent to every lead"
    what = (
        "added" if before.condition is None else "removed" if step.condition is None else "changed"
    )
    return [SeriesChange("condition", step.id, f"{what}: now {now} (was {was})")]


def series_changes(old: Schedule, new: Schedule) -> list[SeriesChange]:
    """Every difference that matters to a lead: settings first, then steps in new order."""
    return _settings_changes(old, new) + _step_changes(old, new)


@dataclass(frozen=True)
class TextChange:
    """An email whose words change, as a lead reads them (its text part): a template edit,
    or a schedule edit that changes what a teaser or a recap says."""

    step: str  # "step 3 (process)", numbered in the new series
    lines: tuple[str, ...]  # "- " removed, "+ " added, "  " context, "…" between runs


def readable_text(compiled: CompiledStep) -> str:
    """A step's text part with each lead's values shown by name and links as their target."""

    def name(match: re.Match[str]) -> str:
        field = compiled.placeholders[int(match.group(1))]
        if field.startswith("click."):
            return compiled.urls[int(field.removeprefix("click."))]
        if field.startswith(OTHER_SUBJECT):  # a teaser naming a subject test's step
            return "{the lead's subject of " + field.removeprefix(OTHER_SUBJECT) + "}"
        return "{" + field + "}"

    return compiled.placeholder.sub(name, compiled.text)


def _paragraphs(text: str) -> list[str]:
    """The text's paragraphs, unwrapped; each list item is one, shown as "• item" so that
    it cannot pass for a diff's "- "."""
    units: list[str] = []
    for block in re.split(r"\n\s*\n", text):
        lines: list[str] = []
        for line in block.splitlines():
            if re.match(r"\s*[-*] ", line) and lines:
                units.append(" ".join(" ".join(lines).split()))
                lines = []
            lines.append(re.sub(r"^\s*[-*] ", "• ", line))
        if lines and " ".join(lines).strip():
            units.append(" ".join(" ".join(lines).split()))
    return units


def _diff_lines(old: str, new: str, width: int = 100) -> tuple[str, ...]:
    """A paragraph-level diff, each paragraph wrapped: a reflowed line is not a change."""
    out: list[str] = []
    diff = difflib.unified_diff(_paragraphs(old), _paragraphs(new), lineterm="", n=1)
    for line in list(diff)[2:]:
        if line.startswith("@@"):
            if out:
                out.append("…")
            continue
        mark = {"-": "- ", "+": "+ "}.get(line[:1], "  ")
        out += textwrap.wrap(
            line[1:],
            width,
            initial_indent=mark,
            subsequent_indent="  ",
            break_long_words=False,  # a link stays whole, on a line of its own
            break_on_hyphens=False,
        )
    return tuple(out)


def text_changes(old: LoadedSchedule, new: LoadedSchedule) -> list[TextChange]:
    """Every step in both series whose text part reads differently, in the new order."""
    before = {c.step.id: readable_text(c) for c in Renderer(old).compile_all()}
    changes = []
    for compiled in Renderer(new).compile_all():
        text = before.get(compiled.step.id)
        after = readable_text(compiled)
        if text is not None and text != after:
            label = step_label(compiled.number, compiled.step.id)
            changes.append(TextChange(label, _diff_lines(text, after)))
    return changes


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
            continue
        if before[step_id] != at:
            changes.append(LeadChange(lead.email, step_id, "moved", before[step_id], at))
        changes += _branch_changes(old, new, lead, step_id, at)
    changes.extend(
        LeadChange(lead.email, step_id, "lost", at, None)
        for step_id, at in before.items()
        if step_id not in after
    )
    return changes


def _subject_name(step: Step, index: int) -> str:
    text = repr(step.subjects[index].text)
    return f"{variant_name(index)} {text}" if len(step.subjects) > 1 else text


def _branch_changes(
    old: Schedule, new: Schedule, lead: LeadPlan, step_id: str, at: datetime
) -> list[LeadChange]:
    """For a step the lead is still to get under both schedules: whether its condition or
    the subject the lead is given changed."""
    before, after = old.steps_by_id[step_id], new.steps_by_id[step_id]
    changes = []
    if before.condition != after.condition:
        now = (
            sent_only_if(new, after.condition) if after.condition else "sent whatever the lead does"
        )
        was = sent_only_if(old, before.condition) if before.condition else "always sent"
        changes.append(LeadChange(lead.email, step_id, "path", None, at, f"now {now} (was {was})"))
    was_given = choose_variant(old.campaign.id, before, lead.lead_id)
    given = choose_variant(new.campaign.id, after, lead.lead_id)
    if same_variants(before, after).get(was_given) != given:
        detail = (
            f"gets subject {_subject_name(after, given)} instead of "
            f"{_subject_name(before, was_given)}"
        )
        changes.append(LeadChange(lead.email, step_id, "variant", None, at, detail))
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
