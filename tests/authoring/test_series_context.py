"""Teasers and recaps come from the schedule: a marketer who reorders steps, changes a delay
or adds a step edits `schedules.yaml` only, and every email still tells the truth about the
emails around it. Sent by the real engine to the catcher and read back as a lead reads them."""

from __future__ import annotations

import shutil
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

from harness.cli import invoke_on
from harness.engine import open_campaign
from harness.mail import step_of, text_part

DAY0 = datetime(2026, 3, 2, 15, 30, tzinfo=UTC)  # a Monday, 09:30 in Chicago


def _received(folder: Path, change: Any, days: int = 70) -> dict[str, str]:
    """step id → text part, for one lead sent the edited series day after day."""
    with open_campaign(folder) as campaign:
        campaign.edit(change)
        campaign.enroll(DAY0, ("sam@example.com", "Sam", "America/Chicago"))
        for day in range(days):
            campaign.send_due(DAY0 + timedelta(days=day))
        return {step_of(c.message): text_part(c.message) for c in campaign.catcher.messages}


def _one_line(text: str) -> str:
    return " ".join(text.split())


def _reorder_retime_and_add(data: dict[str, Any]) -> None:
    steps = {step["id"]: step for step in data["steps"]}
    steps["pain-types"]["delay"] = "3d"
    steps["faqs"]["delay"] = "1d"
    extra = dict(steps["process"], id="aftercare", subject="Looking after yourself afterwards")
    extra["preheader"] = "Water, rest and a gentle walk."
    extra["delay"] = "14d"
    order = ["mechanisms", "pain-types", "faqs", "process", "aftercare", "booking"]
    data["steps"] = [steps.get(name, extra) for name in order]


def test_teasers_and_recaps_follow_an_edited_schedule(tmp_path: Path) -> None:
    texts = _received(tmp_path, _reorder_retime_and_add)
    order = ["mechanisms", "pain-types", "faqs", "process", "aftercare", "booking"]
    assert list(texts) == order
    subjects = {
        "mechanisms": "How acupuncture eases back pain",
        "pain-types": "Which kinds of back pain acupuncture can help",
        "faqs": "Does it hurt? How many sessions? Your questions answered",
        "process": "What an acupuncture session is really like",
        "aftercare": "Looking after yourself afterwards",
        "booking": "Ready for a pain-free back? Book your first session",
    }
    when = {"pain-types": "in 3 days", "faqs": "tomorrow", "process": "next week"}
    when |= {"aftercare": "in 2 weeks", "booking": "next week"}
    for index, step in enumerate(order[:-1]):
        text = _one_line(texts[step])
        following = order[index + 1]
        assert f"Coming {when[following]}: “{subjects[following]}”" in text, (step, text)
        wrong = [w for w in ("next week", "tomorrow", "in 3 days") if w != when[following]]
        assert not any(f"Coming {w}" in text for w in wrong), (step, text)
    # Each email says what came just before it, and when.
    assert f"3 days ago we looked at “{subjects['mechanisms']}”" not in _one_line(
        texts["mechanisms"]
    )
    assert f"3 days ago we looked at “{subjects['mechanisms']}”" in _one_line(texts["pain-types"])
    # The booking email's recap lists exactly the earlier emails, in the order they came.
    recap = _one_line(texts["booking"])
    positions = [recap.index(subjects[step]) for step in order[:-1]]
    assert positions == sorted(positions), recap
    assert "Week 1" not in recap and "Week 4" not in recap
    # The footer counts the series as it now is.
    assert "This is email 6 of 6." in _one_line(texts["booking"])
    assert "This is email 3 of 6." in _one_line(texts["faqs"])


def test_check_warns_when_a_template_names_a_time_its_next_step_contradicts(
    tmp_path: Path,
) -> None:
    shutil.copy(Path(__file__).parents[2] / "schedules.yaml", tmp_path / "schedules.yaml")
    shutil.copytree(Path(__file__).parents[2] / "templates", tmp_path / "templates")
    template = tmp_path / "templates" / "emails" / "mechanisms.html.j2"
    source = template.read_text(encoding="utf-8")
    template.write_text(
        source.replace("{% endblock %}", "<p>See you next week!</p>\n{% endblock %}"),
        encoding="utf-8",
    )
    schedule = tmp_path / "schedules.yaml"
    checked = invoke_on(schedule, None, "schedule", "check")
    assert checked.exit_code == 0, checked.output
    assert "warning" not in checked.output.lower(), checked.output

    text = schedule.read_text(encoding="utf-8")
    schedule.write_text(text.replace("delay: 7d", "delay: 3d", 1), encoding="utf-8")
    checked = invoke_on(schedule, None, "schedule", "check")
    assert checked.exit_code == 0, checked.output
    out = _one_line(checked.output)
    assert "step 1 (mechanisms)" in out and "“next week”" in out, out
    assert "step 2 (pain-types) comes in 3 days" in out, out
    strict = invoke_on(schedule, None, "schedule", "check", "--strict")
    assert strict.exit_code == 2, strict.output


def test_a_teaser_personalises_the_next_subject_like_the_subject_itself(tmp_path: Path) -> None:
    def personal(data: dict[str, Any]) -> None:
        data["steps"][1]["subject"] = "{{ lead.first_name }}, which back pain can it help?"

    texts = _received(tmp_path, personal, days=10)
    assert "Coming next week: “Sam, which back pain can it help?”" in _one_line(texts["mechanisms"])
