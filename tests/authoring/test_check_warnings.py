"""`schedule check` warnings: printed with the file and line, exit 0; `--strict` makes them
errors for CI. Each is something a reader or a filter notices but the engine can send."""

from __future__ import annotations

from datetime import UTC, datetime
from pathlib import Path

import pytest

from harness.cli import invoke_on
from harness.engine import open_campaign
from harness.schedule import SHIPPED, ScheduleCopy, copy_shipped


def _copy(folder: Path) -> ScheduleCopy:
    return ScheduleCopy(copy_shipped(folder))


def _check(schedule: ScheduleCopy, *options: str) -> tuple[int, list[str]]:
    result = invoke_on(schedule.path, None, "schedule", "check", *options)
    return result.exit_code, result.output.splitlines()


def _warnings(lines: list[str]) -> list[str]:
    return [line.removeprefix("warning ") for line in lines if line.startswith("warning ")]


def test_the_shipped_series_has_no_warnings() -> None:
    result = invoke_on(SHIPPED, None, "schedule", "check", "--strict")
    assert result.exit_code == 0, result.output
    assert "warning" not in result.output


def test_subjects_and_preheaders_inboxes_cut_or_miss(tmp_path: Path) -> None:
    schedule = _copy(tmp_path)
    long_subject = "How acupuncture eases back pain, and why it helps so many people"
    schedule.edit("subject: How acupuncture eases back pain", f"subject: {long_subject}")
    schedule.edit(
        "    preheader: Muscle strain, sciatica, herniated discs and chronic back pain.\n", ""
    )
    schedule.edit(
        "preheader: Fine needles, a mild tingling, and 20–30 minutes to relax.",
        "preheader: " + "Fine needles, a mild tingling, and twenty minutes to relax. " * 2,
    )
    code, lines = _check(schedule)
    assert code == 0, lines
    file = schedule.path.name
    assert _warnings(lines) == [
        f"{file}:{schedule.line_of(long_subject)}: step 1 (mechanisms): the subject has "
        f"{len(long_subject)} characters; inboxes cut it after about 60, so put what matters "
        "first or shorten it",
        f"{file}:{schedule.line_of('- id: pain-types')}: step 2 (pain-types): no preheader: the "
        "inbox will show the email's first words beside the subject instead; add a one-line "
        "summary as preheader:",
        f"{file}:{schedule.line_of('preheader: Fine needles')}: step 3 (process): the "
        "preheader has 119 characters; inboxes show about 100",
    ]
    assert lines[-1].startswith("ok ") and lines[-1].endswith("3 warning(s)")
    code, lines = _check(schedule, "--strict")
    assert code == 2
    assert sum(line.startswith("error ") for line in lines) == 3


def test_long_emails_and_html_gmail_would_clip(tmp_path: Path) -> None:
    schedule = _copy(tmp_path)
    faqs = schedule.templates / "faqs.html.j2"
    words = "<p>" + "Needles are fine and thin. " * 30 + "</p>\n"
    faqs.write_text(
        faqs.read_text(encoding="utf-8").replace("{% endblock %}", words * 3 + "{% endblock %}")
    )
    process = schedule.templates / "process.html.j2"
    padding = '{% for _ in range(5000) %}<span class="x"></span>{% endfor %}\n'
    process.write_text(
        process.read_text(encoding="utf-8").replace("{% endblock %}", padding + "{% endblock %}")
    )
    code, lines = _check(schedule)
    assert code == 0, lines
    found = _warnings(lines)
    assert len(found) == 2, found
    assert found[0].startswith("process.html.j2: step 3 (process): the HTML part is ")
    assert "Gmail clips an email over 102 KB" in found[0]
    assert found[1].startswith("faqs.html.j2: step 4 (faqs): the email has about ")
    assert "words; most readers stop before 350" in found[1]


@pytest.mark.slow
def test_send_due_warns_about_the_default_local_base_url(tmp_path: Path) -> None:
    """Through the real run.py, as an operator runs it."""
    with open_campaign(tmp_path) as campaign:
        at = datetime(2026, 3, 2, 15, 30, tzinfo=UTC).isoformat()
        local = campaign.cli(
            "send-due", "--now", at, env={"CAMPAIGN_BASE_URL": "http://127.0.0.1:8080"}
        )
        assert "CAMPAIGN_BASE_URL" in local.stderr and "127.0.0.1:8080" in local.stderr
        assert "leads cannot open" in local.stderr
        public = campaign.cli("send-due", "--now", at)
        assert "CAMPAIGN_BASE_URL" not in public.stderr


def test_settings_new_series_copied_are_flagged_until_edited(tmp_path: Path) -> None:
    made = invoke_on(
        SHIPPED,
        None,
        "new-series",
        str(SHIPPED.parent / "content" / "acupuncture-back-pain.txt"),
        "--id",
        "draft",
        "--out",
        str(tmp_path),
    )
    assert made.exit_code == 0, made.output
    schedule = ScheduleCopy(tmp_path / "draft.yaml")
    code, lines = _check(schedule)
    assert code == 0, lines
    flagged = [w for w in _warnings(lines) if "was copied from another series" in w]
    names = [w.split(": ")[1] for w in flagged]
    assert names == [
        "sender.from",
        "sender.reply_to",
        "clinic.name",
        "clinic.postal_address",
        "booking_url",
    ]
    assert flagged[2].startswith(f"draft.yaml:{schedule.line_of('  name: Evergreen')}: ")
    schedule.edit("  name: Evergreen Acupuncture", "  name: Willow Wellness")
    schedule.edit(
        "booking_url: https://evergreen-acupuncture.example.com/book",
        "booking_url: https://willow.example.com/book",
    )
    code, lines = _check(schedule)
    still = [w.split(": ")[1] for w in _warnings(lines) if "was copied from another" in w]
    assert still == ["sender.from", "sender.reply_to", "clinic.postal_address"]


def test_a_teaser_for_a_step_some_leads_skip(tmp_path: Path) -> None:
    """Step 1's teaser names step 2; once step 2 goes only to leads who clicked, the others
    would read about an email they never get, until the teaser is worded for both."""
    schedule = _copy(tmp_path)
    schedule.edit("  - id: pain-types\n", "  - id: pain-types\n    if: {clicked: mechanisms}\n")
    code, lines = _check(schedule)
    assert code == 0, lines
    template = schedule.templates / "mechanisms.html.j2"
    source = template.read_text(encoding="utf-8").splitlines()
    line = next(n for n, text in enumerate(source, 1) if "next_step" in text)
    assert _warnings(lines) == [
        f"mechanisms.html.j2:{line}: step 1 (mechanisms): the text names the next email, "
        "step 2 (pain-types), which goes only to some leads (if clicked step 1 (mechanisms)); "
        "the others skip it. Wrap the teaser in {% if not next_step.condition %} … "
        "{% endif %}, or word it for both"
    ]
    worded = source[line - 1].replace(
        "{% if next_step %}", "{% if next_step and not next_step.condition %}"
    )
    assert worded != source[line - 1]
    source[line - 1] = worded
    template.write_text("\n".join(source) + "\n", encoding="utf-8")
    code, lines = _check(schedule, "--strict")
    assert code == 0 and not _warnings(lines), lines
