"""Conditional steps and subject tests over real SMTP and real HTTP: a lead who clicked step
1's link gets its follow-up, a lead who did not is skipped straight to the next step (never
sent the skipped one later), an attribute from the signup decides its step; a two-subject
step splits leads evenly and stably, the subject is recorded on the delivery, and a teaser
names the subject the lead will really get."""

from __future__ import annotations

from collections import Counter
from collections.abc import Iterator
from datetime import timedelta
from email.message import EmailMessage
from pathlib import Path
from typing import Any

import pytest

from campaign.planner import choose_variant
from harness.mail import BASE_URL, anchors, html_part, step_of
from harness.web import START, WEEK, Web, open_web

BROWSER = "Mozilla/5.0 (X11; Linux x86_64) AppleWebKit/537.36 Chrome/124.0 Safari/537.36"
ABOUT = '<p><a href="https://clinic.example.com/about">About the clinic</a></p>\n'
PROCESS_SUBJECTS = ["What a session is like", "Your first acupuncture visit"]
CAMPAIGN = "acupuncture-back-pain"


def branches(data: dict[str, Any]) -> None:
    """Step 2 only for leads who clicked step 1; step 4 only for leads on the premium plan;
    step 3 tests two subjects (step 2's teaser names it)."""
    data["steps"][1]["if"] = {"clicked": "mechanisms"}
    data["steps"][2]["subject"] = PROCESS_SUBJECTS
    data["steps"][3]["if"] = {"attribute": {"plan": "premium"}}


@pytest.fixture
def web(tmp_path: Path) -> Iterator[Web]:
    with open_web(tmp_path, change=branches) as web:
        template = web.campaign.schedule_path.parent / "templates/emails/mechanisms.html.j2"
        source = template.read_text(encoding="utf-8")
        template.write_text(source.replace('<p class="note">', ABOUT + '<p class="note">', 1))
        yield web


def about_link(message: EmailMessage) -> str:
    (link,) = [href for text, href in anchors(message) if text == "About the clinic"]
    assert link.startswith(f"{BASE_URL}/c/")
    return link


def by_lead(messages: list[EmailMessage]) -> dict[str, str]:
    return {str(m["To"].addresses[0].addr_spec): step_of(m) for m in messages}


def test_a_click_decides_the_follow_up_and_a_skip_goes_on_to_the_next_step(web: Web) -> None:
    assert web.signup("ann@example.com", first_name="Ann", plan="premium").status_code == 201
    assert web.signup("bob@example.com", first_name="Bob").status_code == 201
    first = web.send()
    assert by_lead(first) == {"ann@example.com": "mechanisms", "bob@example.com": "mechanisms"}
    ann_first = next(m for m in first if "ann@" in str(m["To"]))
    web.campaign.clock.now = START + timedelta(hours=3)  # a person, long after delivery
    answer = web.client.get(
        about_link(ann_first), headers={"User-Agent": BROWSER}, follow_redirects=False
    )
    assert answer.status_code in (302, 303, 307)

    # A week on: Ann clicked, so she gets step 2; Bob did not, so step 2 is skipped and step
    # 3, whose week counts from step 1 (the last email he was sent), goes in the same run.
    before = len(web.campaign.catcher.messages)
    done = web.campaign.send_due_cli(START + WEEK)
    assert "skipped 1" in done.stdout, done.stdout
    week = [c.message for c in web.campaign.catcher.messages[before:]]
    assert sorted((m["To"].addresses[0].addr_spec, step_of(m)) for m in week) == [
        ("ann@example.com", "pain-types"),
        ("bob@example.com", "process"),
    ]
    skipped = web.rows(
        "SELECT l.email, d.step_id, d.status, d.last_error, d.attempts, d.variant "
        "FROM deliveries d JOIN leads l ON l.id = d.lead_id WHERE d.status = 'skipped'"
    )
    assert [tuple(r) for r in skipped] == [
        (
            "bob@example.com",
            "pain-types",
            "skipped",
            "condition not met: clicked mechanisms",
            0,
            None,
        )
    ]

    # The rest of the calendar: nobody gets a step twice, Bob never gets step 2, and step 4
    # (premium plan only) goes to Ann alone.
    for week_number in range(2, 7):
        web.send(START + week_number * WEEK - web.campaign.clock.now)
    received = Counter(web.campaign.received())
    assert max(received.values()) == 1
    steps_of = {
        email: [step_of(c.message) for c in web.campaign.catcher.messages if email in c.recipients]
        for email in ("ann@example.com", "bob@example.com")
    }
    assert steps_of["ann@example.com"] == ["mechanisms", "pain-types", "process", "faqs", "booking"]
    assert steps_of["bob@example.com"] == ["mechanisms", "process", "booking"]
    statuses = web.rows(
        "SELECT d.step_id, d.status FROM deliveries d JOIN leads l ON l.id = d.lead_id "
        "WHERE l.email = 'bob@example.com' ORDER BY d.id"
    )
    assert [tuple(r) for r in statuses] == [
        ("mechanisms", "sent"),
        ("pain-types", "skipped"),
        ("process", "sent"),
        ("faqs", "skipped"),
        ("booking", "sent"),
    ]


def test_a_subject_test_splits_leads_stably_and_records_each_ones_subject(web: Web) -> None:
    emails = [f"lead{n:02d}@example.com" for n in range(40)]
    for email in emails:
        assert web.signup(email, first_name="Kim").status_code == 201
    web.send()
    # Everyone clicked step 1, so everyone gets step 2, whose teaser names step 3's subject.
    teasers = {}
    for caught in list(web.campaign.catcher.messages):
        web.campaign.clock.now = START + timedelta(hours=3)
        web.client.get(about_link(caught.message), headers={"User-Agent": BROWSER})
    for message in web.send(WEEK):
        teasers[message["To"].addresses[0].addr_spec] = html_part(message)
    third = {m["To"].addresses[0].addr_spec: str(m["Subject"]) for m in web.send(WEEK)}
    assert set(third) == set(emails)
    split = Counter(third.values())
    assert set(split) == set(PROCESS_SUBJECTS)
    assert min(split.values()) >= 12, split  # 40 leads, two even variants
    schedule = web.campaign.loaded().schedule
    rows = web.rows(
        "SELECT l.id, l.email, d.variant FROM deliveries d JOIN leads l ON l.id = d.lead_id "
        "WHERE d.step_id = 'process'"
    )
    for row in rows:
        chosen = choose_variant(CAMPAIGN, schedule.steps[2], row["id"])
        assert row["variant"] == chosen
        assert third[row["email"]] == PROCESS_SUBJECTS[chosen]
        # The teaser a week before named this lead's own subject, never the other one.
        other = PROCESS_SUBJECTS[1 - chosen]
        assert PROCESS_SUBJECTS[chosen] in teasers[row["email"]]
        assert other not in teasers[row["email"]]
    assert {
        r["variant"]
        for r in web.rows("SELECT variant FROM deliveries WHERE step_id = 'mechanisms'")
    } == {0}
