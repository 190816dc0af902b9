"""The warnings of `schedule check`: what will not break a series but will make it read
wrong or land badly. The schedule file's own (subjects, preheaders, copied values) come from
`campaign.config.schedule`; here are those only the rendered emails show: a length readers
give up on, an HTML part Gmail clips, and a time named in the text ("next week") that the
schedule's delays contradict, the usual way a series goes quietly wrong after an edit."""

from __future__ import annotations

import re
from datetime import timedelta
from pathlib import Path

from campaign.config.schedule import (
    ScheduleWarning,
    Step,
    WarningKind,
    format_delay,
    schedule_warnings,
    step_label,
)
from campaign.rendering.renderer import CompiledStep, Renderer
from campaign.rendering.sequence import came, coming_in, parse_when

MAX_WORDS = 350
MAX_HTML_BYTES = 80_000  # Gmail clips at 102 KB; leave room for what the relay adds
_COUNT = r"(?:\d+|a|an|one|two|three|four|five|six)"
_AHEAD = re.compile(rf"\b(tomorrow|next week|in {_COUNT} (?:hours?|days?|weeks?))\b", re.I)
_BEHIND = re.compile(rf"\b(yesterday|last week|{_COUNT} (?:hours?|days?|weeks?) ago)\b", re.I)
_URL = re.compile(r"https?://\S+")


def all_warnings(renderer: Renderer) -> list[ScheduleWarning]:
    """Every warning for a series whose steps compile, the file's first."""
    compiled = renderer.compile_all()
    return schedule_warnings(renderer.loaded) + [
        warning for step in compiled for warning in content_warnings(renderer, step)
    ]


def content_warnings(renderer: Renderer, compiled: CompiledStep) -> list[ScheduleWarning]:
    """One compiled step's warnings, each pointing at its template."""
    step, steps = compiled.step, renderer.schedule.steps
    where = step_label(compiled.number, step.id)
    template = renderer.templates_dir / step.template
    out = []
    words = len(_URL.sub(" ", compiled.text).split())
    if words > MAX_WORDS:
        out.append(
            ScheduleWarning(
                WarningKind.LONG_EMAIL,
                step.template,
                None,
                where,
                f"the email has about {words} words; most readers stop before {MAX_WORDS}: "
                "move the rest to a later step or behind a link to the whole article",
            )
        )
    size = len(compiled.html.encode("utf-8"))
    if size > MAX_HTML_BYTES:
        out.append(
            ScheduleWarning(
                WarningKind.HEAVY_HTML,
                step.template,
                None,
                where,
                f"the HTML part is {size // 1000} KB; Gmail clips an email over 102 KB and "
                f"hides the rest (unsubscribe link included); keep it under "
                f"{MAX_HTML_BYTES // 1000} KB",
            )
        )
    if compiled.number >= 1:
        index = compiled.number - 1
        following = steps[index + 1] if index + 1 < len(steps) else None
        previous = steps[index - 1] if index > 0 else None
        teaser = _conditional_teaser(renderer, step, following, index + 2)
        if teaser is not None:
            out.append(ScheduleWarning(WarningKind.CONDITIONAL_TEASER, step.template, *teaser))
        for phrase in _phrases(_AHEAD, compiled.text):
            problem = _ahead(phrase, following, index + 2)
            if problem:
                out.append(_timing(template, where, phrase, problem, "next_step"))
        for phrase in _phrases(_BEHIND, compiled.text):
            problem = _behind(phrase, step, previous, index)
            if problem:
                out.append(_timing(template, where, phrase, problem, "previous_step"))
    return out


def _conditional_teaser(
    renderer: Renderer, step: Step, following: Step | None, number: int
) -> tuple[int | None, str, str] | None:
    """(line, where, message) when the template names `next_step` unconditionally and that
    step goes only to some leads: the others would read about an email they never get."""
    if following is None or following.condition is None:
        return None
    line = _names_next_step(renderer, step.template)
    if line is None:
        return None
    condition = following.condition.describe(
        lambda i: step_label(1 + [s.id for s in renderer.schedule.steps].index(i), i)
    )
    return (
        line,
        step_label(number - 1, step.id),
        f"the text names the next email, {step_label(number, following.id)}, which goes only "
        f"to some leads (if {condition}); the others skip it. Wrap the teaser in "
        "{% if not next_step.condition %} … {% endif %}, or word it for both",
    )


def _names_next_step(renderer: Renderer, template: str) -> int | None:
    """The line of the template's first `next_step` outside an `if` on its condition."""
    try:
        source = (renderer.templates_dir / template).read_text(encoding="utf-8")
    except (OSError, UnicodeDecodeError):
        return None
    if "next_step.condition" in source:
        return None  # the marketer already words it for both
    return next((n for n, text in enumerate(source.splitlines(), 1) if "next_step" in text), None)


def _phrases(pattern: re.Pattern[str], text: str) -> list[str]:
    """Each time phrase once, as written (the text part wraps lines, so join them first)."""
    found = pattern.findall(" ".join(text.split()))
    return list(dict.fromkeys(phrase.lower() for phrase in found))


def _fits(phrase: str, delay: timedelta) -> bool:
    span = parse_when(phrase)
    return span is None or span[0] <= delay <= span[1]


def _ahead(phrase: str, following: Step | None, number: int) -> str | None:
    if following is None:
        return "but no email follows this one"
    if _fits(phrase, following.delay):
        return None
    return (
        f"but {step_label(number, following.id)} comes {coming_in(following.delay)} "
        f"(delay: {format_delay(following.delay)})"
    )


def _behind(phrase: str, step: Step, previous: Step | None, index: int) -> str | None:
    if previous is None:
        return "but no email comes before this one"
    if _fits(phrase, step.delay):
        return None
    return (
        f"but {step_label(index, previous.id)} came {came(step.delay)} "
        f"(this step's delay: {format_delay(step.delay)})"
    )


def _timing(template: Path, where: str, phrase: str, problem: str, name: str) -> ScheduleWarning:
    """`name` is what the template should print instead: `next_step` or `previous_step`."""
    return ScheduleWarning(
        WarningKind.TIMING,
        template.name,
        _line_of(template, phrase),
        where,
        f"the text says “{phrase}” {problem}; print {{{{ {name}.when }}}} instead, so the "
        "text follows the schedule",
    )


def _line_of(template: Path, phrase: str) -> int | None:
    """The template line that writes the phrase, when it is written there literally."""
    try:
        lines = template.read_text(encoding="utf-8").splitlines()
    except (OSError, UnicodeDecodeError):
        return None
    return next((n for n, line in enumerate(lines, 1) if phrase in line.lower()), None)
