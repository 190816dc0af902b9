"""Templates are bounded: loop iterations and calls, the text they build and the time they take.

A template is code a marketer edits; an endless loop or a huge string in it must end in a
clear error naming the file and line, quickly, never a hang or a raw MemoryError (a running
engine would stall every send, and `schedule check` would never return).
"""

from __future__ import annotations

import time
from dataclasses import dataclass

import pytest

from campaign.config.schedule import load_schedule
from campaign.rendering.renderer import Renderer, TemplateProblem
from campaign.rendering.sandbox import TemplateLimits
from harness.cli import run_py
from harness.clock import NO_HANG
from harness.schedule import ScheduleCopy

HEADING = "<h2>What is acupuncture?</h2>"
NESTED_LOOPS = "{% for i in range(100000) %}{% for j in range(100000) %}{% endfor %}{% endfor %}"

# name: (inserted before the heading, words in the error); each finishes on unbounded code,
# some slowly, so the test can see it pass through unrefused.
CASES = {
    "nested-loops": (
        "{% for i in range(1000) %}{% for j in range(1000) %}{% endfor %}{% endfor %}",
        "more than 100000 loop iterations and calls",
    ),
    "macro-fan-out": (
        "{% macro f(n) %}{% if n %}{{ f(n - 1) }}{{ f(n - 1) }}{% endif %}{% endmacro %}"
        "{{ f(17) }}",
        "more than 100000 loop iterations and calls",
    ),
    "many-large-expressions": ("{{ 'x' * 100000 }}" * 20, "more than 1000000 characters"),
    "large-set-block": (
        "{% set s %}{% for i in range(100) %}{{ 'x' * 100000 }}{% endfor %}{% endset %}",
        "more than 1000000 characters",
    ),
    "static-text-repeated": (
        "{% for i in range(50000) %}" + "y" * 100 + "{% endfor %}",
        "more than 1000000 characters",
    ),
    "doubling-concatenation": (
        "{% set ns = namespace(s='x') %}{% for i in range(22) %}{% set ns.s = ns.s ~ ns.s %}"
        "{% endfor %}",
        "more than 100000 characters or items",
    ),
    "doubling-addition": (
        "{% set ns = namespace(s='x') %}{% for i in range(22) %}{% set ns.s = ns.s + ns.s %}"
        "{% endfor %}",
        "more than 100000 characters or items",
    ),
    "growing-filter": (
        "{{ ('x' * 50000)|replace('x', 'xxxx') }}",
        "more than 100000 characters or items",
    ),
    "padding-method": ("{{ 'x'.ljust(10**7) }}", "more than 100000 characters or items"),
}


def insert(schedule_copy: ScheduleCopy, snippet: str) -> int:
    """`snippet` on its own line before step 1's heading; the line it is on."""
    path = schedule_copy.templates / "mechanisms.html.j2"
    source = path.read_text()
    assert HEADING in source
    path.write_text(source.replace(HEADING, f"{snippet}\n{HEADING}", 1))
    return source[: source.index(HEADING)].count("\n") + 1


@pytest.mark.parametrize("case", list(CASES))
def test_a_template_beyond_its_limits_is_refused_naming_file_and_line(
    schedule_copy: ScheduleCopy, case: str
) -> None:
    snippet, words = CASES[case]
    line = insert(schedule_copy, snippet)
    started = time.perf_counter()
    with pytest.raises(TemplateProblem) as caught:
        Renderer(load_schedule(schedule_copy.path)).compile_all()
    assert time.perf_counter() - started < NO_HANG, "refusing took too long"
    problem = caught.value
    assert (problem.template, problem.line) == ("mechanisms.html.j2", line), problem
    assert words in problem.message, problem


@dataclass
class SteppingClock:
    """A monotonic clock that moves one second each time it is read."""

    now: float = 0.0

    def __call__(self) -> float:
        self.now += 1.0
        return self.now


def test_a_template_that_takes_too_long_is_refused(schedule_copy: ScheduleCopy) -> None:
    line = insert(schedule_copy, "{% for i in range(10) %}{{ i }}{% endfor %}")
    limits = TemplateLimits(seconds=5.0, clock=SteppingClock())
    with pytest.raises(TemplateProblem) as caught:
        Renderer(load_schedule(schedule_copy.path), limits=limits).compile("mechanisms")
    problem = caught.value
    assert (problem.template, problem.line) == ("mechanisms.html.j2", line), problem
    assert "took more than 5 seconds" in problem.message, problem


def test_the_shipped_series_renders_within_the_limits(schedule_copy: ScheduleCopy) -> None:
    steps = Renderer(load_schedule(schedule_copy.path)).compile_all()
    assert [step.step.id for step in steps] == [
        "mechanisms",
        "pain-types",
        "process",
        "faqs",
        "booking",
    ]


def test_schedule_check_stops_nested_loops_quickly(schedule_copy: ScheduleCopy) -> None:
    """Ten billion iterations: without a bound, `schedule check` would never return."""
    line = insert(schedule_copy, NESTED_LOOPS)
    started = time.perf_counter()
    result = run_py(
        "--schedule", str(schedule_copy.path), "schedule", "check", expect=2, timeout=2 * NO_HANG
    )
    assert time.perf_counter() - started < NO_HANG
    stderr = " ".join(result.stderr.split())
    assert f"templates/emails/mechanisms.html.j2:{line}: step 1 (mechanisms): " in stderr, stderr
    assert "loop iterations" in stderr, stderr
