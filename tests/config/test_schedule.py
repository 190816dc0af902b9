"""Loading `schedules.yaml`: the shipped file loads, and every kind of mistake is reported
with the file, the line and the field a marketer must fix."""

from __future__ import annotations

import re
import time
from datetime import timedelta
from pathlib import Path

import pytest

from campaign.config.schedule import ScheduleError, ScheduleIssue, load_schedule
from harness.cli import run_py
from harness.clock import NO_HANG
from harness.schedule import SHIPPED

# Anchors that pick one step's line out of the shipped file (steps[2] is `process`).
PROCESS_DELAY = (
    "preheader: Fine needles, a mild tingling, and 20–30 minutes to relax.\n    delay: 7d"
)
PROCESS_TEMPLATE = "template: process.html.j2"


def issues_of(path: Path) -> list[ScheduleIssue]:
    with pytest.raises(ScheduleError) as caught:
        load_schedule(path)
    issues = caught.value.issues
    assert issues, "a ScheduleError must carry at least one issue"
    assert str(caught.value) == "\n".join(str(i) for i in issues)
    return issues


def only_issue(path: Path, field: str) -> ScheduleIssue:
    """The single issue about `field` (other issues may exist, e.g. a companion 'is required')."""
    issues = issues_of(path)
    found = [i for i in issues if i.field == field]
    listing = "\n".join(str(i) for i in issues)
    assert len(found) == 1, f"expected one issue for {field!r}, got:\n{listing}"
    return found[0]


def check(issue: ScheduleIssue, *, line: int, field: str, says: tuple[str, ...]) -> None:
    assert issue.file == "schedules.yaml", str(issue)
    assert issue.line == line, f"expected line {line}: {issue}"
    assert issue.field == field, str(issue)
    for words in says:
        assert words.lower() in issue.message.lower(), f"expected {words!r} in: {issue}"
    # A step's settings are named by the step as a marketer counts it, from 1.
    step = re.match(r"steps\[(\d+)\]", field)
    if step:
        assert issue.where.startswith(f"step {int(step[1]) + 1} ("), str(issue)
    place = f"schedules.yaml:{line}: "
    assert str(issue).startswith(place + (f"{issue.where}: " if issue.where else "")), str(issue)


# --- the shipped file ---------------------------------------------------------------------


def test_shipped_schedule_loads_five_weekly_steps() -> None:
    loaded = load_schedule(SHIPPED)
    steps = loaded.schedule.steps
    assert [s.id for s in steps] == ["mechanisms", "pain-types", "process", "faqs", "booking"]
    assert [s.delay for s in steps] == [timedelta(0)] + [timedelta(days=7)] * 4
    assert all((loaded.templates_dir / s.template).is_file() for s in steps)
    assert loaded.schedule.timezone == "America/Chicago"
    assert loaded.schedule.send_window.weekdays == frozenset(range(5))


def test_copy_fixture_loads_unchanged(schedule_copy) -> None:
    loaded = load_schedule(schedule_copy.path)
    assert loaded.templates_dir == schedule_copy.templates.resolve()
    assert len(loaded.schedule.steps) == 5


# --- one test per kind of mistake ---------------------------------------------------------


def test_unknown_key_in_a_step(schedule_copy) -> None:
    schedule_copy.edit("    subject: How acupuncture", "    subjekt: How acupuncture")
    issue = only_issue(schedule_copy.path, "steps[0].subjekt")
    check(
        issue,
        line=schedule_copy.line_of("subjekt:"),
        field="steps[0].subjekt",
        says=("subjekt is not a setting here", "did you mean `subject`?"),
    )
    # The real key is now missing, and that is reported against the same step.
    missing = only_issue(schedule_copy.path, "steps[0].subject")
    assert "subject is missing" in missing.message
    assert missing.line == schedule_copy.line_of("  - id: mechanisms")


def test_unknown_top_level_key(schedule_copy) -> None:
    schedule_copy.edit("booking_url:", "bookng_url:")
    check(
        only_issue(schedule_copy.path, "bookng_url"),
        line=schedule_copy.line_of("bookng_url:"),
        field="bookng_url",
        says=("bookng_url is not a setting here", "did you mean `booking_url`?"),
    )


def test_missing_template_file(schedule_copy) -> None:
    schedule_copy.edit(PROCESS_TEMPLATE, "template: proces.html.j2")
    check(
        only_issue(schedule_copy.path, "steps[2].template"),
        line=schedule_copy.line_of("template: proces.html.j2"),
        field="steps[2].template",
        says=("'proces.html.j2' not found", "templates/emails", "did you mean `process.html.j2`?"),
    )


def test_template_outside_the_templates_folder_is_refused(schedule_copy) -> None:
    schedule_copy.edit(PROCESS_TEMPLATE, "template: ../../schedules.yaml")
    check(
        only_issue(schedule_copy.path, "steps[2].template"),
        line=schedule_copy.line_of("template: ../../schedules.yaml"),
        field="steps[2].template",
        says=("not found",),
    )


def test_template_name_with_a_nul_byte_is_reported_not_crashed(schedule_copy) -> None:
    schedule_copy.edit(PROCESS_TEMPLATE, 'template: "process\\0.html.j2"')
    check(
        only_issue(schedule_copy.path, "steps[2].template"),
        line=schedule_copy.line_of('template: "process'),
        field="steps[2].template",
        says=("not found",),
    )


def test_missing_templates_folder(schedule_copy) -> None:
    schedule_copy.edit("templates: templates/emails", "templates: templates/mails")
    check(
        only_issue(schedule_copy.path, "templates"),
        line=schedule_copy.line_of("templates: templates/mails"),
        field="templates",
        says=("templates folder 'templates/mails' was not found",),
    )


def test_duplicate_step_id(schedule_copy) -> None:
    schedule_copy.edit("  - id: faqs", "  - id: process")
    lines = schedule_copy.text().splitlines()
    first, second = (n for n, line in enumerate(lines, 1) if line == "  - id: process")
    assert first == schedule_copy.line_of("  - id: process")
    check(
        only_issue(schedule_copy.path, "steps[3].id"),
        line=second,
        field="steps[3].id",
        says=("already used by step 3 (process)",),
    )


@pytest.mark.parametrize("delay", ["7x", "seven days", "7 days", "-7d", "1.5d"])
def test_bad_delay(schedule_copy, delay: str) -> None:
    schedule_copy.edit(PROCESS_DELAY, PROCESS_DELAY.replace("delay: 7d", f"delay: {delay}"))
    check(
        only_issue(schedule_copy.path, "steps[2].delay"),
        line=schedule_copy.line_of(f"delay: {delay}"),
        field="steps[2].delay",
        says=(f"delay: {delay!r} is not a delay", "7d"),
    )


@pytest.mark.parametrize("delay", ["0d", "0m", "0"])
def test_zero_delay_on_a_later_step(schedule_copy, delay: str) -> None:
    schedule_copy.edit(PROCESS_DELAY, PROCESS_DELAY.replace("delay: 7d", f"delay: {delay}"))
    check(
        only_issue(schedule_copy.path, "steps[2].delay"),
        line=schedule_copy.line_of(f"delay: {delay}\n\n  - id: faqs"),
        field="steps[2].delay",
        says=("more than 0", "together with the one before it"),
    )


def test_zero_delay_on_the_first_step_is_fine(schedule_copy) -> None:
    schedule_copy.edit("delay: 0d", "delay: 0m")
    assert load_schedule(schedule_copy.path).schedule.steps[0].delay == timedelta(0)


def test_unknown_time_zone(schedule_copy) -> None:
    schedule_copy.edit("timezone: America/Chicago", "timezone: America/Chicgo")
    check(
        only_issue(schedule_copy.path, "timezone"),
        line=schedule_copy.line_of("timezone: America/Chicgo"),
        field="timezone",
        says=("'America/Chicgo' is not a known time zone", "Europe/London"),
    )


def test_send_window_that_ends_before_it_starts(schedule_copy) -> None:
    schedule_copy.edit('end: "17:00"', 'end: "08:00"')
    check(
        only_issue(schedule_copy.path, "send_window"),
        line=schedule_copy.line_of("send_window:"),
        field="send_window",
        says=("window is empty", "08:00", "09:00"),
    )


def test_send_window_with_no_days(schedule_copy) -> None:
    schedule_copy.edit("days: [mon, tue, wed, thu, fri]", "days: []")
    check(
        only_issue(schedule_copy.path, "send_window.days"),
        line=schedule_copy.line_of("days: []"),
        field="send_window.days",
        says=("send_window.days needs at least 1",),
    )


def test_send_window_with_an_unknown_day(schedule_copy) -> None:
    schedule_copy.edit("days: [mon, tue, wed, thu, fri]", "days: [mon, tue, wed, thu, fry]")
    issue = only_issue(schedule_copy.path, "send_window.days[4]")
    check(
        issue,
        line=schedule_copy.line_of("days: [mon"),
        field="send_window.days[4]",
        says=("'fry'", "mon", "did you mean `fri`?"),
    )


@pytest.mark.parametrize(
    ("old", "new", "field", "says"),
    [
        (
            'from: "Evergreen Acupuncture <care@evergreen-acupuncture.example.com>"',
            'from: "Evergreen Acupuncture <care-at-evergreen>"',
            "sender.from",
            ("care-at-evergreen", "not a valid email address"),
        ),
        (
            'from: "Evergreen Acupuncture <care@evergreen-acupuncture.example.com>"',
            'from: "a@example.com, b@example.com"',
            "sender.from",
            ("not one email address",),
        ),
        (
            'reply_to: "frontdesk@evergreen-acupuncture.example.com"',
            'reply_to: "frontdesk@@evergreen"',
            "sender.reply_to",
            ("frontdesk@@evergreen",),
        ),
        (
            'reply_to: "frontdesk@evergreen-acupuncture.example.com"',
            'reply_to: "front desk at evergreen"',
            "sender.reply_to",
            ("front desk at evergreen",),
        ),
    ],
    ids=["from-no-at", "from-two-addresses", "reply-to-double-at", "reply-to-words"],
)
def test_malformed_addresses(schedule_copy, old, new, field, says) -> None:
    schedule_copy.edit(old, new)
    check(
        only_issue(schedule_copy.path, field),
        line=schedule_copy.line_of(new),
        field=field,
        says=says,
    )


def test_missing_required_field(schedule_copy) -> None:
    schedule_copy.edit("  postal_address: 12 Willow Street, Springfield, IL 62701, USA\n", "")
    check(
        only_issue(schedule_copy.path, "clinic.postal_address"),
        line=schedule_copy.line_of("clinic:"),
        field="clinic.postal_address",
        says=("clinic.postal_address is missing",),
    )


def test_duplicate_yaml_key(schedule_copy) -> None:
    schedule_copy.edit("timezone: America/Chicago", "timezone: America/Chicago\ntimezone: UTC")
    check(
        only_issue(schedule_copy.path, "timezone"),
        line=schedule_copy.line_of("timezone: UTC"),
        field="timezone",
        says=("timezone appears twice",),
    )


def test_duplicate_key_inside_a_step(schedule_copy) -> None:
    schedule_copy.edit(PROCESS_DELAY, PROCESS_DELAY + "\n    delay: 14d")
    check(
        only_issue(schedule_copy.path, "steps[2].delay"),
        line=schedule_copy.line_of("delay: 14d"),
        field="steps[2].delay",
        says=("delay appears twice",),
    )


def test_tabs_in_indentation(schedule_copy) -> None:
    schedule_copy.edit("  name: Evergreen Acupuncture\n", "\tname: Evergreen Acupuncture\n")
    issues = issues_of(schedule_copy.path)
    assert len(issues) == 1, issues
    check(
        issues[0],
        line=schedule_copy.line_of("\tname: Evergreen"),
        field="",
        says=("indented with a tab", "spaces"),
    )


def test_yaml_syntax_error(schedule_copy) -> None:
    # A colon followed by a space inside an unquoted value is the classic marketer mistake.
    schedule_copy.edit(
        "subject: What an acupuncture session is really like",
        "subject: Your session: what it is really like",
    )
    issues = issues_of(schedule_copy.path)
    assert len(issues) == 1, issues
    check(
        issues[0],
        line=schedule_copy.line_of("subject: Your session:"),
        field="",
        says=("put the subject in quotes", 'subject: "Your session: what it is really like"'),
    )
    assert issues[0].where == "step 3 (process)", issues[0]
    assert "Traceback" not in issues[0].message


def test_alias_bomb_is_refused_quickly(schedule_copy) -> None:
    lines = ['lol0: &l0 ["lol", "lol", "lol", "lol", "lol", "lol", "lol", "lol", "lol"]']
    for n in range(1, 10):
        lines.append(f"lol{n}: &l{n} [" + ", ".join([f"*l{n - 1}"] * 9) + "]")
    schedule_copy.path.write_text("\n".join(lines) + "\n" + schedule_copy.text())
    started = time.perf_counter()
    issues = issues_of(schedule_copy.path)
    elapsed = time.perf_counter() - started
    assert elapsed < NO_HANG, f"an alias bomb took {elapsed:.1f}s to refuse"
    assert len(issues) == 1, issues
    assert "too many values" in issues[0].message and "alias" in issues[0].message, issues[0]


def test_file_over_one_megabyte_is_refused(schedule_copy) -> None:
    padding = "# " + "x" * 97 + "\n"
    schedule_copy.path.write_text(schedule_copy.text() + padding * 10_500, encoding="utf-8")
    assert schedule_copy.path.stat().st_size > 1_000_000
    started = time.perf_counter()
    issues = issues_of(schedule_copy.path)
    assert time.perf_counter() - started < NO_HANG
    assert len(issues) == 1, issues
    assert issues[0].file == "schedules.yaml"
    assert "larger than 1000 kB" in issues[0].message, issues[0]


def test_not_a_mapping(schedule_copy) -> None:
    schedule_copy.path.write_text("- just\n- a list\n")
    issues = issues_of(schedule_copy.path)
    assert len(issues) == 1 and "must be a mapping" in issues[0].message, issues


def test_several_mistakes_are_all_reported_at_once(schedule_copy) -> None:
    schedule_copy.edit("    subject: How acupuncture", "    subjekt: How acupuncture")
    schedule_copy.edit(PROCESS_DELAY, PROCESS_DELAY.replace("delay: 7d", "delay: 7x"))
    schedule_copy.edit("timezone: America/Chicago", "timezone: Mars/Olympus")
    schedule_copy.edit("care@evergreen-acupuncture.example.com", "care-at-evergreen")
    schedule_copy.edit("days: [mon, tue, wed, thu, fri]", "days: []")
    schedule_copy.edit("  per_hour: 20000", "  per_hour: 20000\n  per_hour: 30000")
    schedule_copy.edit("template: faqs.html.j2", "template: faq.html.j2")
    schedule_copy.edit("  - id: booking", "  - id: mechanisms")
    lines = schedule_copy.text().splitlines()
    expected = {
        "sender.from": schedule_copy.line_of("from:"),
        "timezone": schedule_copy.line_of("timezone: Mars"),
        "send_window.days": schedule_copy.line_of("days: []"),
        "rate_limit.per_hour": schedule_copy.line_of("per_hour: 30000"),
        "steps[0].subjekt": schedule_copy.line_of("subjekt:"),
        "steps[2].delay": schedule_copy.line_of("delay: 7x"),
        "steps[3].template": schedule_copy.line_of("template: faq.html.j2"),
        "steps[4].id": len(lines) - lines[::-1].index("  - id: mechanisms"),
    }
    issues = issues_of(schedule_copy.path)
    found = {i.field: i.line for i in issues}
    listing = "\n".join(str(i) for i in issues)
    for field, line in expected.items():
        assert found.get(field) == line, f"{field} at line {line} missing from:\n{listing}"
    lines = [i.line or 0 for i in issues]
    assert lines == sorted(lines), f"issues should be in file order:\n{listing}"


# --- `schedule check` on the command line -------------------------------------------------


@pytest.mark.slow
def test_cli_check_passes_on_the_shipped_file() -> None:
    result = run_py("--schedule", str(SHIPPED), "schedule", "check")
    assert result.returncode == 0, result.stderr
    assert "ok" in result.stdout and "5 steps" in result.stdout, result.stdout
    assert "Traceback" not in result.stderr


@pytest.mark.slow
def test_cli_check_reports_problems_with_file_line_and_field(schedule_copy) -> None:
    broken = schedule_copy.path.with_name("broken.yaml")
    text = schedule_copy.text().replace(PROCESS_DELAY, PROCESS_DELAY.replace("7d", "7x"))
    text = text.replace("timezone: America/Chicago", "timezone: America/Chicgo")
    broken.write_text(text, encoding="utf-8")
    delay_line = text[: text.index("delay: 7x")].count("\n") + 1
    zone_line = text[: text.index("timezone: America/Chicgo")].count("\n") + 1

    result = run_py("--schedule", str(broken), "schedule", "check")

    assert result.returncode == 2, (result.returncode, result.stdout, result.stderr)
    stderr = " ".join(result.stderr.split())
    assert "Traceback" not in result.stderr, result.stderr
    assert "2 problem(s)" in stderr, result.stderr
    assert f"broken.yaml:{delay_line}: step 3 (process): delay: '7x' is not a delay" in stderr
    assert f"broken.yaml:{zone_line}: timezone: 'America/Chicgo'" in stderr, stderr


# --- conditions and subject tests -----------------------------------------------------------

PAIN_TYPES_DELAY = "preheader: Chronic low back pain, neck pain and sciatica"


def condition_on_pain_types(schedule_copy, condition: str) -> None:
    """`if:` written under step 2 (pain-types), as a marketer would type it."""
    schedule_copy.edit("  - id: pain-types\n", f"  - id: pain-types\n    if: {condition}\n")


def test_conditions_and_subject_tests_load(schedule_copy) -> None:
    condition_on_pain_types(schedule_copy, "{clicked: mechanisms}")
    schedule_copy.edit(
        "subject: How acupuncture eases back pain",
        'subject: ["How acupuncture eases back pain", {subject: "Why needles ease back pain", '
        "weight: 2}]",
    )
    schedule = load_schedule(schedule_copy.path).schedule
    condition = schedule.steps[1].condition
    assert condition is not None and condition.clicked == "mechanisms"
    assert [(v.text, v.weight) for v in schedule.steps[0].subjects] == [
        ("How acupuncture eases back pain", 1),
        ("Why needles ease back pain", 2),
    ]


@pytest.mark.parametrize(
    ("condition", "field", "says"),
    [
        ("{clicked: faqs}", "steps[1].if.clicked", ("'faqs' comes later", "earlier step")),
        ("{not_clicked: pain-types}", "steps[1].if.not_clicked", ("this step itself",)),
        ("{clicked: nothing-here}", "steps[1].if.clicked", ("is not a step", "mechanisms")),
        ("{clicked: mechanisms, not_clicked: mechanisms}", "steps[1].if", ("exactly one",)),
        ("{}", "steps[1].if", ("exactly one", "found none")),
        ("{clicked_link: website}", "steps[1].if.clicked_link", ("booking",)),
        ("{opened: mechanisms}", "steps[1].if.opened", ("opened",)),
    ],
)
def test_a_condition_that_cannot_be_judged(schedule_copy, condition, field, says) -> None:
    condition_on_pain_types(schedule_copy, condition)
    check(
        only_issue(schedule_copy.path, field),
        line=schedule_copy.line_of("    if: "),
        field=field,
        says=says,
    )


@pytest.mark.parametrize(
    ("subject", "field", "says"),
    [
        ('["Only one"]', "steps[0].subject", ("2 to 10 subjects", "found 1", "write it as text")),
        ('["One", ""]', "steps[0].subject[1].subject", ("must not be empty",)),
        ('["One", {subject: "Two", weight: 0}]', "steps[0].subject[1].weight", ("at least 1",)),
    ],
)
def test_a_subject_test_that_cannot_run(schedule_copy, subject, field, says) -> None:
    schedule_copy.edit("subject: How acupuncture eases back pain", f"subject: {subject}")
    issues = [i for i in issues_of(schedule_copy.path) if i.field == field]
    assert issues, [str(i) for i in issues_of(schedule_copy.path)]
    issue = issues[0]
    assert issue.line == schedule_copy.line_of(f"subject: {subject}"), str(issue)
    for words in says:
        assert words.lower() in issue.message.lower(), str(issue)
