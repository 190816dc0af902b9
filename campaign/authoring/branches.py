"""Conditional steps as the dry runs see them, before they run.

`plan` judges a step's condition on what a real lead has done so far: some are settled
already (an attribute, or a `not_clicked` step that was clicked), the rest stay open and the
step is shown as if taken. `simulate` has synthetic leads click and book at given rates,
drawn from a seeded generator per lead, and judges each condition with the planner's own
`skip_reason` as the step falls due, exactly as the dispatcher does. Nothing here does I/O.
"""

from __future__ import annotations

import enum
import random
from collections.abc import Callable
from dataclasses import dataclass, replace
from functools import partial

from campaign.authoring.preview import step_labeller
from campaign.config.schedule import Condition, Schedule, Step
from campaign.model import LeadState, LeadStatus
from campaign.planner import clicked, holds, skip_reason

# Where a synthetic lead's click lands when it is not on the booking link: any page of the
# email but that one. Not a URL, so it can never be taken for the booking link.
OTHER_LINK = "another link in the email"


class Outlook(enum.StrEnum):
    """What can be said now about a conditional step."""

    MET = "met"  # the condition holds: the step is sent
    OPEN = "open"  # not settled yet: shown as if taken
    SKIPPED = "skipped"  # false, and nothing the lead can still do makes it true


class Reaction(enum.StrEnum):
    """What a synthetic lead did with an email it got (`simulate` only)."""

    NONE = "none"
    CLICKED = "clicked"  # a link other than the booking link
    BOOKED = "booked"  # the booking link: a click that books


@dataclass(frozen=True)
class Branch:
    """A conditional step's condition, said as the marketer reads it, and what is known."""

    condition: str  # "clicked step 1 (mechanisms)"
    outlook: Outlook
    note: str = ""  # "not yet clicked"; for a skipped step, why

    @property
    def skipped(self) -> bool:
        return self.outlook is Outlook.SKIPPED

    @property
    def text(self) -> str:
        if self.skipped:
            return f"skipped: {self.note}"
        return f"if {self.condition}: {self.note or self.outlook.value}"


Judge = Callable[[Schedule, Step, LeadState], Branch | None]
# A lead's answer to the email of a step it just got: its state after, and what it did.
Answer = Callable[[str, LeadState], tuple[LeadState, Reaction]]


def unmet(condition: Condition, label: Callable[[str], str]) -> str:
    """Why a step is skipped, said without a double negative."""
    if condition.not_clicked is not None:
        return f"{label(condition.not_clicked)} was clicked"
    return f"{condition.describe(label)} is not met"


def _open_note(condition: Condition) -> str:
    return "not clicked so far" if condition.not_clicked is not None else "not yet clicked"


def known_now(schedule: Schedule, step: Step, state: LeadState) -> Branch | None:
    """`plan`'s view of a step's condition from what the lead has done so far: an attribute
    is settled, and so is a click once made; a click not yet made may still come."""
    condition = step.condition
    if condition is None:
        return None
    label = step_labeller(schedule)
    described = condition.describe(label)
    if holds(condition, state, str(schedule.booking_url)):
        return Branch(described, Outlook.MET)
    if condition.attribute is not None or (
        condition.not_clicked is not None and clicked(state, condition.not_clicked)
    ):
        return Branch(described, Outlook.SKIPPED, unmet(condition, label))
    return Branch(described, Outlook.OPEN, _open_note(condition))


def when_due(schedule: Schedule, step: Step, state: LeadState) -> Branch | None:
    """`simulate`'s view: the planner's own verdict on what the lead did by the time the
    step falls due."""
    condition = step.condition
    if condition is None:
        return None
    label = step_labeller(schedule)
    described = condition.describe(label)
    if skip_reason(schedule, step, state) is None:
        return Branch(described, Outlook.MET)
    return Branch(described, Outlook.SKIPPED, unmet(condition, label))


@dataclass(frozen=True)
class Behaviour:
    """How synthetic leads answer the emails they get: each email is clicked with
    `click_rate` and leads to a booking (a click on its booking link) with `booking_rate`,
    both drawn before the next step falls due."""

    click_rate: float = 0.0
    booking_rate: float = 0.0
    seed: int = 1

    def answers(self, schedule: Schedule, lead_id: int) -> Answer:
        """How one lead answers its emails, from a generator of its own (seeded by the
        simulation's seed and the lead), so its choices do not depend on the other leads'."""
        return partial(self.react, schedule, random.Random(f"{self.seed}:{lead_id}"))

    def react(
        self, schedule: Schedule, rng: random.Random, step_id: str, state: LeadState
    ) -> tuple[LeadState, Reaction]:
        """The lead's answer to the email of `step_id` it just got. A booking is a click on
        the booking link (so it counts for `clicked:` and `clicked_link: booking`), and ends
        the series when the schedule exits on `converted`."""
        click, book = rng.random() < self.click_rate, rng.random() < self.booking_rate
        booking_url = str(schedule.booking_url)
        if book:
            state = state.with_click(step_id, booking_url)
            if "converted" in schedule.exit_on:
                state = replace(state, status=LeadStatus.CONVERTED)
            return state, Reaction.BOOKED
        if click:
            return state.with_click(step_id, OTHER_LINK), Reaction.CLICKED
        return state, Reaction.NONE
