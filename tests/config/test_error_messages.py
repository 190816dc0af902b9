"""Errors a marketer can act on: each names the schedule file in use, the line, the step by
number and id, what is wrong and how to fix it, and every problem shows at once. Run through
the real `run.py schedule check` on a copy of the shipped schedule, as a marketer runs it."""

from __future__ import annotations

from pathlib import Path

import pytest

from campaign.config.schedule import ScheduleError, load_schedule
from harness.cli import run_py
from harness.schedule import ScheduleCopy

PAIN_SUBJECT = "subject: Which kinds of back pain acupuncture can help"
PAIN_DELAY = (
    "preheader: Muscle strain, sciatica, herniated discs and chronic back pain.\n    delay: 7d"
)
BOOKING_URL = "booking_url: https://evergreen-acupuncture.example.com/book"


def check(schedule: Path) -> list[str]:
    """`schedule check`'s error lines, which must exit 2 without a traceback."""
    result = run_py("--schedule", str(schedule), "schedule", "check", expect=2)
    return [line.strip() for line in result.stderr.splitlines() if line.strip()]


def edit_template(copy: ScheduleCopy, name: str, old: str, new: str) -> int:
    """Replace the first `old` in a template with `new`; the line `new` starts on."""
    path = copy.templates / name
    text = path.read_text(encoding="utf-8")
    assert old in text, f"{old!r} is not in {name}; has the shipped template changed?"
    text = text.replace(old, new, 1)
    path.write_text(text, encoding="utf-8")
    return text[: text.index(new)].count("\n") + 1


def only_error(copy: ScheduleCopy) -> str:
    with pytest.raises(ScheduleError) as caught:
        load_schedule(copy.path)
    assert len(caught.value.issues) == 1, caught.value
    return str(caught.value.issues[0])


# --- YAML syntax ------------------------------------------------------------------------


@pytest.mark.slow
def test_a_colon_in_an_unquoted_subject_says_put_it_in_quotes(schedule_copy) -> None:
    schedule_copy.edit(PAIN_SUBJECT, "subject: Back pain: how acupuncture eases it")
    line = schedule_copy.line_of("subject: Back pain:")
    lines = check(schedule_copy.path)
    assert (
        f'schedules.yaml:{line}: step 2 (pain-types): the subject has ": " in it, which YAML '
        "reads as the start of another setting; put the subject in quotes: "
        'subject: "Back pain: how acupuncture eases it"'
    ) in lines, lines
    # The templates cannot be found without the file, and the marketer is told so.
    assert any("templates were not checked" in line for line in lines), lines
    assert not any("mapping values" in line for line in lines), lines


@pytest.mark.slow
def test_wrong_indentation_says_what_to_line_up_with(schedule_copy) -> None:
    schedule_copy.edit(PAIN_DELAY, PAIN_DELAY.replace("    delay: 7d", "   delay: 7d"))
    preheader = schedule_copy.line_of("preheader: Muscle strain")
    lines = check(schedule_copy.path)
    assert (
        f"schedules.yaml:{preheader + 1}: step 2 (pain-types): `delay:` is indented 3 spaces; "
        f"line it up with `preheader:` on line {preheader} (4 spaces from the left)"
    ) in lines, lines


@pytest.mark.parametrize(
    ("old", "new", "anchor", "says"),
    [
        (
            PAIN_DELAY,
            PAIN_DELAY.replace("    delay: 7d", "      delay: 7d"),
            "      delay: 7d",
            "step 2 (pain-types): `delay:` is indented further than `preheader:` on line "
            "{prev}, which already has a value; line it up with `preheader:` (4 spaces",
        ),
        (
            PAIN_SUBJECT,
            'subject: "Which kinds of back pain acupuncture can help',
            'subject: "Which kinds',
            'step 2 (pain-types): the double quote (") opened on this line is never closed',
        ),
        (
            "days: [mon, tue, wed, thu, fri]",
            "days: [mon, tue, wed, thu, fri",
            "days: [mon",
            "the `[` opened on this line is never closed; add `]`",
        ),
        (
            PAIN_DELAY,
            PAIN_DELAY.replace("    delay: 7d", "\tdelay: 7d"),
            "\tdelay: 7d",
            "step 2 (pain-types): this line is indented with a tab; YAML needs spaces",
        ),
        (
            PAIN_SUBJECT,
            'subject: "Which kinds" of back pain acupuncture can help',
            'subject: "Which kinds"',
            "step 2 (pain-types): text follows the closing quote; put the whole subject inside "
            "the quotes",
        ),
        (
            PAIN_DELAY,
            PAIN_DELAY.replace("    delay: 7d", "    - delay: 7d"),
            "    - delay: 7d",
            "step 2 (pain-types): `- ` starts a new list item here, inside the item above; "
            "remove the `- `, or line it up with the `- ` on line {item}",
        ),
    ],
    ids=["indented-too-far", "unclosed-quote", "unclosed-bracket", "tab", "after-quote", "dash"],
)
def test_common_yaml_mistakes_are_said_as_the_fix(
    schedule_copy, old: str, new: str, anchor: str, says: str
) -> None:
    schedule_copy.edit(old, new)
    line = schedule_copy.line_of(anchor)
    says = says.format(prev=line - 1, item=schedule_copy.line_of("  - id: pain-types"))
    error = only_error(schedule_copy)
    assert error.startswith(f"schedules.yaml:{line}: {says}"), error


# --- validation -------------------------------------------------------------------------


@pytest.mark.slow
def test_validation_messages_are_plain_sentences_each_with_its_line(schedule_copy) -> None:
    schedule_copy.edit(PAIN_SUBJECT, 'subject: ""')
    schedule_copy.edit(BOOKING_URL, "booking_url: evergreen-acupuncture.example.com/book")
    schedule_copy.edit('start: "09:00"', "start: 9am")
    schedule_copy.edit("  attempts: 6", "  attempts: many")
    schedule_copy.edit("template: process.html.j2", "template: process.html.j2\n    subjct: x")
    schedule_copy.edit("days: [mon, tue, wed, thu, fri]", "days: [mon, teu, wed, thu, fri]")
    line = schedule_copy.line_of
    empty = line('subject: ""')
    lines = check(schedule_copy.path)
    expected = [
        f"schedules.yaml:{line('booking_url:')}: booking_url must be a full address starting "
        "with https://, like https://clinic.example.com/book",
        f"schedules.yaml:{line('days: [mon')}: send_window.days[1]: 'teu' is not one of mon, "
        "tue, wed, thu, fri, sat, sun. Did you mean `tue`?",
        f"schedules.yaml:{line('start: 9am')}: send_window.start must be a time of day like "
        "09:00 or 17:30 (in quotes)",
        f"schedules.yaml:{line('attempts: many')}: retry.attempts must be a whole number",
        f"schedules.yaml:{empty}: step 2 (pain-types): subject must not be empty",
        f"schedules.yaml:{line('subjct: x')}: step 3 (process): subjct is not a setting here. "
        "Did you mean `subject`? Settings here: id, template, subject, preheader, delay, if.",
    ]
    for message in expected:
        assert message in lines, "\n".join(lines)
    assert lines[0] == "6 problem(s) in the schedule:", lines
    assert not any("Input should" in text or "String should" in text for text in lines), lines


# --- templates --------------------------------------------------------------------------


@pytest.mark.slow
def test_template_mistakes_suggest_the_name_meant_and_every_template_is_checked(
    schedule_copy,
) -> None:
    clinc = edit_template(
        schedule_copy, "mechanisms.html.j2", "{{ clinic.name }}</p>", "{{ clinc.name }}</p>"
    )
    boking = edit_template(
        schedule_copy, "faqs.html.j2", "{{ links.booking }}", "{{ links.boking }}"
    )
    frist = edit_template(
        schedule_copy, "process.html.j2", "{{ lead.first_name }}", "{{ lead.frist_name }}"
    )
    unclosed = (
        edit_template(
            schedule_copy,
            "pain-types.html.j2",
            "{% block body %}",
            "{% block body %}\n{% for x in [1] %}",
        )
        + 1
    )
    source = (schedule_copy.templates / "pain-types.html.j2").read_text(encoding="utf-8")
    endblock = source.splitlines().index("{% endblock %}") + 1
    endfo = edit_template(schedule_copy, "booking.html.j2", "{% endfor %}", "{% endfo %}")
    lines = check(schedule_copy.path)
    folder = "templates/emails"
    allowed = (
        "A template may use: lead, links, clinic, campaign, step, next_step, previous_step, "
        "earlier_steps, later_steps"
    )
    expected = [
        f"{folder}/mechanisms.html.j2:{clinc}: step 1 (mechanisms): `clinc` is not a name "
        f"templates know. Did you mean `clinic`? {allowed}",
        f"{folder}/faqs.html.j2:{boking}: step 4 (faqs): `links.boking` does not exist. Did you "
        "mean `links.booking`? There are: links.booking, links.unsubscribe",
        f"{folder}/process.html.j2:{frist}: step 3 (process): `lead.frist_name` does not exist. "
        "Did you mean `lead.first_name`? There are: lead.email, lead.first_name, lead.timezone "
        "(add new lead fields under personal_fields)",
        f"{folder}/pain-types.html.j2:{endblock}: step 2 (pain-types): `{{% endblock %}}` closes "
        f"a `{{% block %}}`, but the `{{% for %}}` on line {unclosed} is still open; add "
        "`{% endfor %}` before it",
        f"{folder}/booking.html.j2:{endfo}: step 5 (booking): `{{% endfo %}}` is not a Jinja "
        "tag; did you mean `{% endfor %}`?",
    ]
    for message in expected:
        assert message in lines, "\n".join(lines)
    assert lines[0] == "5 problem(s) in the templates:", lines


@pytest.mark.slow
def test_a_subject_error_names_the_schedule_file_in_use(schedule_copy) -> None:
    renamed = schedule_copy.path.with_name("sleep.yaml")
    schedule_copy.path.rename(renamed)
    copy = ScheduleCopy(renamed)
    copy.edit(PAIN_SUBJECT, 'subject: "Which kinds of pain, {{ lead.frst_name }}?"')
    lines = check(renamed)
    assert (
        f"sleep.yaml:{copy.line_of('lead.frst_name')}: step 2 (pain-types): the subject: "
        "`lead.frst_name` does not exist. Did you mean `lead.first_name`?"
    ) in " ".join(lines), lines
    assert not any("schedules.yaml" in line for line in lines), lines


def test_a_teaser_of_the_step_after_the_last_says_to_wrap_it_in_if(schedule_copy) -> None:
    from campaign.rendering.renderer import Renderer, TemplateProblem

    line = edit_template(
        schedule_copy,
        "booking.html.j2",
        "{% endblock %}",
        "{{ next_step.subject }}\n{% endblock %}",
    )
    with pytest.raises(TemplateProblem) as caught:
        Renderer(load_schedule(schedule_copy.path)).compile_all()
    assert str(caught.value) == (
        f"templates/emails/booking.html.j2:{line}: step 5 (booking): `next_step` is empty in "
        "this email (there is no such step at this end of the series); print "
        "`next_step.subject` inside {% if next_step %} … {% endif %}"
    )


# --- every problem at once --------------------------------------------------------------


@pytest.mark.slow
def test_schedule_and_template_problems_are_reported_together(schedule_copy) -> None:
    schedule_copy.edit(BOOKING_URL, "booking_url: evergreen-acupuncture.example.com/book")
    clinc = edit_template(
        schedule_copy, "mechanisms.html.j2", "{{ clinic.name }}</p>", "{{ clinc.name }}</p>"
    )
    boking = edit_template(
        schedule_copy, "booking.html.j2", "{{ links.booking }}", "{{ links.boking }}"
    )
    lines = check(schedule_copy.path)
    assert lines == [
        "3 problem(s) in the schedule and templates:",
        f"schedules.yaml:{schedule_copy.line_of('booking_url:')}: booking_url must be a full "
        "address starting with https://, like https://clinic.example.com/book",
        f"templates/emails/mechanisms.html.j2:{clinc}: step 1 (mechanisms): `clinc` is not a "
        "name templates know. Did you mean `clinic`? A template may use: lead, links, clinic, "
        "campaign, step, next_step, previous_step, earlier_steps, later_steps",
        f"templates/emails/booking.html.j2:{boking}: step 5 (booking): `links.boking` does not "
        "exist. Did you mean `links.booking`? There are: links.booking, links.unsubscribe",
    ], "\n".join(lines)


@pytest.mark.slow
def test_other_commands_show_the_same_words(schedule_copy, tmp_path: Path) -> None:
    boking = edit_template(
        schedule_copy, "faqs.html.j2", "{{ links.booking }}", "{{ links.boking }}"
    )
    result = run_py(
        "--schedule",
        str(schedule_copy.path),
        "preview",
        "--out",
        str(tmp_path / "preview"),
        "--no-spam-score",
        expect=2,
    )
    assert (
        f"templates/emails/faqs.html.j2:{boking}: step 4 (faqs): `links.boking` does not exist. "
        "Did you mean `links.booking`?"
    ) in result.stderr, result.stderr
