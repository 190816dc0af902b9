"""Conditional steps and subject tests in the dry runs: `run.py plan` shows each lead's path
with its conditions (met, still open, or already ruled out) and its own subject of a subject
test; `run.py simulate` has synthetic leads click and book at given rates and counts, per
step, who gets it, who skips it, and who gets each subject.

The series is the shipped one with step 2 (pain-types) a subject test of two subjects,
step 3 (process) sent only to leads who clicked step 1, and step 4 (faqs) only to leads whose
attribute says plan=premium. For `plan`, leads are added with the real `leads add`, step 1
goes out through the real `send-due` to the harness's SMTP catcher, and one lead clicks a
link in it through the real web app; which subject a lead gets is worked out with the
planner's own `choose_variant`.
"""

from __future__ import annotations

import math
import re
from collections import Counter
from datetime import datetime, timedelta
from pathlib import Path
from typing import Any

import pytest

from campaign.authoring.branches import Behaviour
from campaign.authoring.timeline import simulate, synthetic_leads
from campaign.config.schedule import load_schedule
from campaign.model import utc_now
from campaign.planner import choose_variant
from harness.cli import lines_of, run_py
from harness.clock import iso, utc
from harness.db import dump_tables, read_rows
from harness.mail import link_named
from harness.schedule import any_hour, edit_schedule
from harness.web import open_web

pytestmark = pytest.mark.slow  # `run.py` runs in subprocesses

SUBJECT_A = "Which kinds of back pain acupuncture can help"
SUBJECT_B = "Does acupuncture help your kind of back pain?"
BROWSER = "Mozilla/5.0 (X11; Linux x86_64; rv:125.0) Gecko/20100101 Firefox/125.0"
ABOUT_LINK = '<p><a href="https://clinic.example.com/about">About the clinic</a></p>\n'
LEADS = 400
ROW = re.compile(r"(\S+@example\.com)\s+(\d)/5 (\S+)")  # a plan row's lead and step


def branched(data: dict[str, Any]) -> None:
    """A subject test on step 2, a click condition on step 3, an attribute one on step 4."""
    steps = {step["id"]: step for step in data["steps"]}
    steps["pain-types"]["subject"] = [SUBJECT_A, SUBJECT_B]
    steps["process"]["if"] = {"clicked": "mechanisms"}
    steps["faqs"]["if"] = {"attribute": {"plan": "premium"}}


@pytest.fixture
def branched_copy(schedule_copy) -> Path:
    edit_schedule(schedule_copy.path, branched)
    return schedule_copy.path


# -- simulate ------------------------------------------------------------------------------


def simulate_output(schedule: Path, *options: str) -> str:
    result = run_py(
        "--schedule",
        str(schedule),
        "simulate",
        "--leads",
        str(LEADS),
        "--weeks",
        "4",
        "--start",
        "2026-03-02",
        "--limit",
        "0",
        *options,
        expect=0,
    )
    return result.stdout


def step_table(output: str) -> dict[str, list[str]]:
    """The per-step table: step id -> the cells after it (if, sent, skipped, clicked, booked,
    variants), split on runs of two spaces or more."""
    lines = lines_of(output)
    start = next(i for i, line in enumerate(lines) if line.startswith("Per step (leads)"))
    rows = {}
    for line in lines[start + 2 :]:
        match = re.match(r"\s*\d+/\d+ (\S+)\s+(.*)$", line)
        if match:
            rows[match[1]] = re.split(r"\s{2,}", match[2].strip())
    return rows


def counts(row: list[str]) -> list[int]:
    """The numbers of a step's row (sent, skipped if the step has a condition, clicked,
    booked) without the condition and the variants."""
    return [int(cell) for cell in row if cell.isdigit()]


def within(count: int, trials: int, rate: float, sigmas: float = 4.0) -> bool:
    spread = sigmas * math.sqrt(trials * rate * (1 - rate))
    return abs(count - trials * rate) <= spread


def test_simulate_shows_the_branches_taken_at_each_click_rate(branched_copy: Path) -> None:
    nobody = step_table(simulate_output(branched_copy, "--click-rate", "0"))
    assert nobody["process"][0] == "clicked step 1 (mechanisms)"
    sent, skipped, clicked, booked = counts(nobody["process"])
    assert sent == 0 and skipped > 100 and clicked == booked == 0
    assert counts(nobody["mechanisms"])[1:] == [0, 0]  # no one clicked or booked

    everybody = step_table(simulate_output(branched_copy, "--click-rate", "1"))
    sent, skipped, clicked, _booked = counts(everybody["process"])
    assert sent == counts(nobody["process"])[1] and skipped == 0
    step_1 = counts(everybody["mechanisms"])
    assert step_1[1] == step_1[0], "with --click-rate 1 every lead clicks step 1"

    some = step_table(simulate_output(branched_copy, "--click-rate", "0.3"))
    sent, skipped, _clicked, _booked = counts(some["process"])
    reached = sent + skipped
    assert reached == counts(nobody["process"])[1], "the same leads reach step 3 at any rate"
    assert within(sent, reached, 0.3) and 0 < sent < reached, (sent, reached)
    # Nobody has plan=premium: step 4 is skipped by every lead that reaches it.
    assert some["faqs"][0] == "attribute plan=premium"
    assert counts(some["faqs"])[0] == 0 and counts(some["faqs"])[1] > 0


def test_simulate_splits_a_subject_test_evenly_by_the_planners_choice(
    branched_copy: Path,
) -> None:
    output = simulate_output(branched_copy, "--click-rate", "0.2", "--booking-rate", "0.05")
    assert "clicking 20% and booking after 5% of their emails" in output
    row = step_table(output)["pain-types"]
    variants = dict(re.findall(r"\b([AB]) (\d+)", " ".join(row)))
    a, b = int(variants["A"]), int(variants["B"])
    assert a + b == counts(row)[0], "every lead who got step 2 got one of its subjects"
    assert within(a, a + b, 0.5), (a, b)

    # The same split, lead by lead, is the planner's choice for each synthetic lead.
    schedule = load_schedule(branched_copy).schedule
    step = schedule.steps_by_id["pain-types"]
    start = utc(2026, 3, 2)
    leads = synthetic_leads(LEADS, start, 4, seed=1)
    ids = {lead.email: lead.lead_id for lead in leads}
    rows = simulate(schedule, leads, start, start + timedelta(weeks=4), None, Behaviour(0.2, 0.05))
    got = [row for row in rows if row.step_id == "pain-types"]
    assert Counter(row.variant for row in got) == {0: a, 1: b}
    for row in got:
        assert row.variant == choose_variant(schedule.campaign.id, step, ids[row.email])
        assert row.subject == (SUBJECT_A, SUBJECT_B)[row.variant]


def test_a_booking_ends_the_series_when_the_schedule_exits_on_it(branched_copy: Path) -> None:
    table = step_table(simulate_output(branched_copy, "--booking-rate", "1"))
    sent, clicked, booked = counts(table["mechanisms"])
    assert sent == clicked == booked > 0, "a booking is a click on the booking link"
    assert counts(table["pain-types"])[0] == 0


@pytest.mark.parametrize(
    ("option", "value"),
    [("--click-rate", "1.5"), ("--click-rate", "-0.1"), ("--booking-rate", "nan")]
    + [("--booking-rate", "often")],
)
def test_a_rate_outside_0_to_1_is_refused_plainly(
    branched_copy: Path, option: str, value: str
) -> None:
    result = run_py("--schedule", str(branched_copy), "simulate", option, value, expect=2)
    error = " ".join(result.stderr.split())
    assert f"Invalid value for '{option}': '{value}' is not a rate" in error, error
    assert "from 0 to 1" in error and not result.stdout


# -- plan ----------------------------------------------------------------------------------


def test_plan_shows_each_leads_conditions_and_subject(tmp_path: Path) -> None:
    with open_web(tmp_path, change=lambda data: (branched(data), any_hour(data))) as web:
        campaign = web.campaign
        template = campaign.schedule_path.parent / "templates/emails/mechanisms.html.j2"
        source = template.read_text(encoding="utf-8")
        template.write_text(source.replace('<p class="note">', ABOUT_LINK + '<p class="note">'))
        campaign.cli("leads", "add", "ann@example.com", "--attr", "plan=premium")
        campaign.cli("leads", "add", "bob@example.com")
        sent_at = utc_now() + timedelta(minutes=1)
        campaign.send_due_cli(sent_at)
        messages = {caught.recipients[0]: caught.message for caught in campaign.catcher.messages}
        assert sorted(messages) == ["ann@example.com", "bob@example.com"]

        campaign.clock.now = sent_at + timedelta(hours=1)  # a person, long after the send
        about = link_named(messages["ann@example.com"], "About the clinic")
        answer = web.client.get(about, headers={"User-Agent": BROWSER}, follow_redirects=False)
        assert answer.status_code == 302
        clicks = read_rows(campaign.db_path, "SELECT step_id, source FROM clicks")
        assert [tuple(row) for row in clicks] == [("mechanisms", "person")]
        assert web.status("ann@example.com") == "active", "not the booking link: no conversion"

        before = dump_tables(campaign.db_path)
        result = campaign.cli("plan", "--now", iso(sent_at + timedelta(hours=2)))
        assert dump_tables(campaign.db_path) == before, "plan must not change the database"

    lines = lines_of(result.stdout)
    assert re.split(r"\s{2,}", lines[1]) == [
        "when (UTC)", "lead's local time", "to", "step", "if", "variant", "subject"
    ]  # fmt: skip
    rows = {}
    for line in lines[2:]:
        if match := ROW.search(line):
            rows[match[1], int(match[2]), match[3]] = line
    process = "clicked step 1 (mechanisms)"
    assert f"if {process}: met" in rows["ann@example.com", 3, "process"]
    assert f"if {process}: not yet clicked" in rows["bob@example.com", 3, "process"]
    assert "if attribute plan=premium: met" in rows["ann@example.com", 4, "faqs"]
    bob_faqs = rows["bob@example.com", 4, "faqs"]
    assert "skipped: attribute plan=premium is not met" in bob_faqs
    assert bob_faqs.endswith("(not sent)")

    schedule = load_schedule(campaign.schedule_path).schedule
    step = schedule.steps_by_id["pain-types"]
    ids = {row["email"]: row["id"] for row in read_rows(campaign.db_path, "SELECT * FROM leads")}
    for address, lead_id in ids.items():
        variant = choose_variant(schedule.campaign.id, step, lead_id)
        row = rows[address, 2, "pain-types"]
        name, subject = "AB"[variant], (SUBJECT_A, SUBJECT_B)[variant]
        assert re.search(rf"\s{name}\s+{re.escape(subject)}$", row), row

    # Ann gets steps 2-5, Bob 2, 3 and 5: his step 4 is a row, not an email.
    assert lines[0].startswith("acupuncture-back-pain: 7 email(s) to 2 lead(s)")
    assert "1 conditional step(s) will be skipped" in result.stdout
    assert "shown at its time as if taken" in result.stdout
    # Bob's step 5 waits its 7 days from his last email actually sent (step 3), not from a
    # step 4 he never gets; Ann's from her step 4.
    when = {key: datetime.strptime(line[:20], "%a %Y-%m-%d %H:%M") for key, line in rows.items()}
    bob_gap = when["bob@example.com", 5, "booking"] - when["bob@example.com", 3, "process"]
    ann_gap = when["ann@example.com", 5, "booking"] - when["ann@example.com", 3, "process"]
    assert (bob_gap, ann_gap) == (timedelta(days=7), timedelta(days=14))
