"""Conditional steps and subject tests in the pure planner: a condition is judged from what
the lead did when the step falls due, a skipped step is passed for good and sends nothing,
the step after it counts its delay from the last email actually sent, and a lead's subject
variant is a stable function of the series, the step and the lead."""

from __future__ import annotations

import subprocess
import sys
from collections import Counter
from datetime import UTC, datetime, timedelta
from typing import Any

from hypothesis import given, settings
from hypothesis import strategies as st

from campaign.config.schedule import Condition, Schedule, Step
from campaign.model import PASSED, DeliveryStatus, LeadState
from campaign.planner import choose_variant, holds, next_step, skip_reason
from harness.schedule import REPO
from tests.planner.test_planner import SHIPPED, make_schedule

ENROLLED = datetime(2026, 3, 2, 15, 0, tzinfo=UTC)  # Monday 09:00 in Chicago
BOOKING = "https://evergreen-acupuncture.example.com/book?utm_source=nurture"


def conditional(data: dict[str, Any]) -> None:
    data["steps"][1]["if"] = {"clicked": "mechanisms"}
    data["steps"][3]["if"] = {"attribute": {"plan": "premium"}}
    data["steps"][2]["subject"] = [
        "What a session is like",
        {"subject": "Your first visit", "weight": 3},
    ]


SCHEDULE = make_schedule(conditional)


def test_a_condition_is_judged_on_what_the_lead_did_by_then() -> None:
    step = SCHEDULE.steps[1]
    lead = LeadState(ENROLLED).with_sent("mechanisms", ENROLLED)
    assert skip_reason(SCHEDULE, step, lead) == "condition not met: clicked mechanisms"
    clicked = lead.with_click("mechanisms", "https://clinic.example.com/about")
    assert skip_reason(SCHEDULE, step, clicked) is None
    elsewhere = lead.with_click("pain-types", "https://clinic.example.com/about")
    assert skip_reason(SCHEDULE, step, elsewhere) is not None


def test_each_kind_of_condition() -> None:
    lead = LeadState(ENROLLED, attributes={"plan": "Premium", "city": "Springfield"})
    assert holds(Condition(attribute={"plan": "premium"}), lead, BOOKING)  # case does not count
    assert not holds(Condition(attribute={"plan": "premium", "city": "Peoria"}), lead, BOOKING)
    assert not holds(Condition(attribute={"referrer": "x"}), lead, BOOKING)  # not given: false
    assert holds(Condition(not_clicked="mechanisms"), lead, BOOKING)
    booked = lead.with_click("faqs", BOOKING.replace("utm_source=nurture", "utm_source=other"))
    assert holds(Condition(clicked_link="booking"), booked, BOOKING)
    assert not holds(Condition(not_clicked="faqs"), booked, BOOKING)
    other = lead.with_click("faqs", "https://evergreen-acupuncture.example.com/about")
    assert not holds(Condition(clicked_link="booking"), other, BOOKING)


def test_a_skipped_step_is_passed_and_the_next_counts_from_the_last_email_sent() -> None:
    first = next_step(SCHEDULE, LeadState(ENROLLED))
    assert first is not None and first.step.id == "mechanisms"
    lead = LeadState(ENROLLED).with_sent("mechanisms", ENROLLED)
    second = next_step(SCHEDULE, lead)
    assert second is not None and second.step.id == "pain-types"
    skipped = lead.with_attempt("pain-types", DeliveryStatus.SKIPPED, second.due_at)
    third = next_step(SCHEDULE, skipped)
    assert third is not None and third.step.id == "process"
    # process waits 7 days from mechanisms (the last email sent), not from the skip
    assert third.due_at == ENROLLED + SCHEDULE.steps[2].delay


@st.composite
def series(draw: st.DrawFn) -> Schedule:
    """The shipped series with random conditions on its later steps and random delays."""
    data = dict(SHIPPED)
    steps = []
    for index, step in enumerate(SHIPPED["steps"]):
        step = dict(step, delay=f"{draw(st.integers(1, 10)) if index else 0}d")
        earlier = [s["id"] for s in SHIPPED["steps"][:index]]
        kinds = [None, "attribute"] + (["clicked", "not_clicked"] if earlier else [])
        kind = draw(st.sampled_from(kinds))
        if kind == "attribute":
            step["if"] = {"attribute": {"plan": draw(st.sampled_from(["a", "b"]))}}
        elif kind is not None:
            step["if"] = {kind: draw(st.sampled_from(earlier))}
        steps.append(step)
    data["steps"] = steps
    return Schedule.model_validate(data)


@settings(max_examples=200, deadline=None)
@given(
    schedule=series(),
    plan=st.sampled_from(["a", "b", ""]),
    clicks=st.lists(st.booleans(), min_size=5, max_size=5),
    late=st.lists(st.integers(0, 72), min_size=5, max_size=5),
)
def test_driving_a_lead_through_any_conditional_series(
    schedule: Schedule, plan: str, clicks: list[bool], late: list[int]
) -> None:
    """As the dispatcher does: take the next step when due (or some hours late), judge it,
    record it sent or skipped, maybe click. No step is sent twice, a skipped step is never
    sent, each step is judged in schedule order, and every email waits its full delay from
    the last one actually sent."""
    lead = LeadState(ENROLLED, attributes={"plan": plan} if plan else {})
    for turn in range(len(schedule.steps) + 2):
        upcoming = next_step(schedule, lead)
        if upcoming is None:
            break
        at = upcoming.due_at + timedelta(hours=late[turn % 5])
        last_sent = max((a.at for a in lead.history if a.status in PASSED), default=ENROLLED)
        assert upcoming.due_at >= last_sent + upcoming.step.delay
        if skip_reason(schedule, upcoming.step, lead) is not None:
            lead = lead.with_attempt(upcoming.step.id, DeliveryStatus.SKIPPED, at)
            continue
        lead = lead.with_sent(upcoming.step.id, at)
        if clicks[turn % 5]:
            lead = lead.with_click(upcoming.step.id, "https://clinic.example.com/about")
    else:
        raise AssertionError("the series never ended")
    # Every step judged once, in order: a skipped step never comes back to be sent.
    assert [a.step_id for a in lead.history] == [s.id for s in schedule.steps]
    for attempt, step in zip(lead.history, schedule.steps, strict=True):
        assert attempt.status in (DeliveryStatus.SENT, DeliveryStatus.SKIPPED)
        if step.condition is None:
            assert attempt.status is DeliveryStatus.SENT


@given(lead_id=st.integers(1, 10**9), campaign=st.sampled_from(["a", "acupuncture-back-pain"]))
def test_the_variant_is_a_function_of_series_step_and_lead(lead_id: int, campaign: str) -> None:
    step = SCHEDULE.steps[2]
    chosen = choose_variant(campaign, step, lead_id)
    assert chosen in (0, 1)
    assert chosen == choose_variant(campaign, step, lead_id)
    assert choose_variant(campaign, SCHEDULE.steps[0], lead_id) == 0  # one subject: the first


def test_variants_follow_their_weights_and_steps_are_independent() -> None:
    step = SCHEDULE.steps[2]  # weights 1 and 3
    counts = Counter(choose_variant("acupuncture-back-pain", step, i) for i in range(1, 8001))
    assert 0.72 < counts[1] / 8000 < 0.78
    even = make_schedule(lambda d: d["steps"][1].update(subject=["A one", "B one"])).steps[1]
    both = Counter(
        (choose_variant("s", even, i), choose_variant("s", step, i)) for i in range(1, 8001)
    )
    # independent: B of one step is as likely among the leads with A of the other as overall
    assert abs(both[(0, 1)] / (both[(0, 0)] + both[(0, 1)]) - counts[1] / 8000) < 0.03


def test_the_variant_is_the_same_in_another_process() -> None:
    """No per-process salt (Python's own hash is salted): a restarted worker, or another
    machine, picks what the first one did."""
    step = {"id": "s", "template": "t", "delay": "1d", "subject": ["one", "two", "three"]}
    here = [
        choose_variant("acupuncture-back-pain", Step.model_validate(step), i) for i in range(1, 41)
    ]
    code = (
        "from campaign.config.schedule import Step\n"
        "from campaign.planner import choose_variant\n"
        f"step = Step.model_validate({step!r})\n"
        "print([choose_variant('acupuncture-back-pain', step, i) for i in range(1, 41)])"
    )
    out = subprocess.run(
        [sys.executable, "-c", code], cwd=REPO, capture_output=True, text=True, timeout=60
    )
    assert out.returncode == 0, out.stderr
    assert out.stdout.strip() == str(here)
