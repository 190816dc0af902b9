"""What a template knows about the emails around it, taken from the schedule.

A teaser ("Coming next week: …") or a recap ("What we've covered") written by hand goes
false the moment a marketer reorders steps, changes a delay or adds a step, and nothing
notices. Templates print these values instead, so an edit to `schedules.yaml` alone keeps
every email true. Times are the schedule's delays in words; the send window may push an
email a little later (a delay of one day from a Friday arrives on Monday with a weekday
window), so templates say when an email is *due*, which is what the delay promises.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from datetime import timedelta
from typing import Any

from campaign.config.schedule import Step, format_delay, step_label

_DAY = timedelta(days=1)
_WEEK = timedelta(days=7)


def _count(amount: int, unit: str) -> str:
    return f"{amount} {unit}" if amount == 1 else f"{amount} {unit}s"


def _span(delay: timedelta) -> str:
    """A delay as a reader says it ("3 days", "2 weeks", "12 hours"), rounded to its unit."""
    if delay < timedelta(hours=1):
        return _count(max(1, round(delay / timedelta(minutes=1))), "minute")
    if delay < _DAY:
        return _count(round(delay / timedelta(hours=1)), "hour")
    if delay % _WEEK == timedelta(0):
        return _count(delay // _WEEK, "week")
    return _count(round(delay / _DAY), "day")


def coming_in(delay: timedelta) -> str:
    """When an email comes, seen from the one before it: "tomorrow", "in 3 days", "next
    week", "in 2 weeks"."""
    if delay <= timedelta(0):
        return "right away"
    if delay == _DAY:
        return "tomorrow"
    if delay == _WEEK:
        return "next week"
    return f"in {_span(delay)}"


def came(delay: timedelta) -> str:
    """When an earlier email came, seen from a later one: "yesterday", "3 days ago", "last
    week"."""
    if delay <= timedelta(0):
        return "just before this one"
    if delay == _DAY:
        return "yesterday"
    if delay == _WEEK:
        return "last week"
    return f"{_span(delay)} ago"


def _label(steps: Sequence[Step], step_id: str) -> str:
    number = next((n for n, s in enumerate(steps, 1) if s.id == step_id), 0)
    return step_label(number, step_id)


def neighbours(
    steps: Sequence[Step], number: int, subject: Callable[[Step], str]
) -> dict[str, Any]:
    """The template values for step `number` (counted from 1; 0 is the double opt-in email,
    which comes before the series): `next_step` and `previous_step` (None at either end),
    `earlier_steps` and `later_steps` in send order. Each is a mapping with `id`, `number`,
    `subject` (rendered by `subject`), `preheader`, `delay` and `when`, relative to this
    email."""

    def view(index: int, when: str) -> dict[str, Any]:
        step = steps[index]
        return {
            "id": step.id,
            "number": index + 1,
            "subject": subject(step),
            "preheader": step.preheader,
            "delay": format_delay(step.delay),
            "when": when,
            # Sent only to some leads (`if:`): a teaser may say so, or stay quiet about it.
            "condition": step.condition.describe(lambda i: _label(steps, i))
            if step.condition
            else "",
        }

    here = number - 1  # index of this email; -1 for the confirmation email
    earlier = [
        view(i, came(sum((s.delay for s in steps[i + 1 : here + 1]), timedelta(0))))
        for i in range(max(here, 0))
    ]
    later = [
        view(i, coming_in(sum((s.delay for s in steps[here + 1 : i + 1]), timedelta(0))))
        for i in range(here + 1, len(steps))
    ]
    return {
        "next_step": later[0] if later else None,
        "previous_step": earlier[-1] if earlier else None,
        "earlier_steps": earlier,
        "later_steps": later,
    }


def parse_when(phrase: str) -> tuple[timedelta, timedelta] | None:
    """The delays a time phrase in an email's text stands for, as (shortest, longest):
    "next week" is fine for a delay of 5 to 9 days, "tomorrow" for 12 to 36 hours, "in 3
    days" for 3 days up to 4. None for a phrase that is not about time."""
    words = phrase.lower().split()
    numbers = {"a": 1, "an": 1, "one": 1, "two": 2, "three": 3, "four": 4, "five": 5, "six": 6}
    if words in (["tomorrow"], ["yesterday"]):
        return timedelta(hours=12), timedelta(hours=36)
    if words in (["next", "week"], ["last", "week"]):
        return timedelta(days=5), timedelta(days=9)
    if len(words) == 3 and words[0] == "in" or len(words) == 3 and words[2] == "ago":
        amount_word, unit = (words[1], words[2]) if words[0] == "in" else (words[0], words[1])
        amount = int(amount_word) if amount_word.isdigit() else numbers.get(amount_word)
        size = {"day": _DAY, "week": _WEEK, "hour": timedelta(hours=1)}.get(unit.rstrip("s"))
        if amount is None or size is None:
            return None
        slack = timedelta(days=2) if size == _WEEK else size
        return amount * size - slack / 2, amount * size + slack
    return None
