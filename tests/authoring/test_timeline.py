"""`run.py plan` and `run.py simulate`: the dry-run timeline.

The store is built through the real engine (leads enrolled, step 1 sent over real SMTP on an
injected clock) in early March 2026, so the timeline crosses the US (8 March) and UK
(29 March) clock changes. The expected times are worked out by hand from the schedule's
rules (weekdays 09:00-17:00 in the lead's zone, each delay counted from the real send).
"""

from __future__ import annotations

import re
import sqlite3
from datetime import timedelta
from pathlib import Path

import pytest

from campaign.authoring.timeline import (
    LeadPlan,
    PlannedEmail,
    lead_emails,
    plan_store,
    simulate,
    summarise,
    synthetic_leads,
)
from campaign.config.schedule import load_schedule
from campaign.model import LeadState, Start
from campaign.planner import lead_zone, next_opening
from campaign.store import Store
from harness.cli import block, invoke_on, lines_of
from harness.clock import utc
from harness.db import dump_tables
from harness.rig import seed_march

NOW = "2026-03-06T23:00Z"

EXPECTED = """\
when (UTC)            lead's local time     to                 step            subject
Mon 2026-03-09 09:00  Mon 09 Mar 09:00 GMT  james@example.com  1/5 mechanisms  How acupuncture eases back pain
Mon 2026-03-09 14:00  Mon 09 Mar 10:00 EDT  maria@example.com  2/5 pain-types  Which kinds of back pain acupuncture can help
Mon 2026-03-16 09:00  Mon 16 Mar 09:00 GMT  james@example.com  2/5 pain-types  Which kinds of back pain acupuncture can help
Mon 2026-03-16 14:00  Mon 16 Mar 09:00 CDT  chris@example.com  2/5 pain-types  Which kinds of back pain acupuncture can help
Mon 2026-03-16 14:00  Mon 16 Mar 10:00 EDT  maria@example.com  3/5 process     What an acupuncture session is really like
Mon 2026-03-23 09:00  Mon 23 Mar 09:00 GMT  james@example.com  3/5 process     What an acupuncture session is really like
Mon 2026-03-23 14:00  Mon 23 Mar 09:00 CDT  chris@example.com  3/5 process     What an acupuncture session is really like
Mon 2026-03-23 14:00  Mon 23 Mar 10:00 EDT  maria@example.com  4/5 faqs        Does it hurt? How many sessions? Your questions answered
Mon 2026-03-30 09:00  Mon 30 Mar 10:00 BST  james@example.com  4/5 faqs        Does it hurt? How many sessions? Your questions answered
Mon 2026-03-30 14:00  Mon 30 Mar 09:00 CDT  chris@example.com  4/5 faqs        Does it hurt? How many sessions? Your questions answered
Mon 2026-03-30 14:00  Mon 30 Mar 10:00 EDT  maria@example.com  5/5 booking     Ready for a pain-free back? Book your first session
Mon 2026-04-06 09:00  Mon 06 Apr 10:00 BST  james@example.com  5/5 booking     Ready for a pain-free back? Book your first session
Mon 2026-04-06 14:00  Mon 06 Apr 09:00 CDT  chris@example.com  5/5 booking     Ready for a pain-free back? Book your first session"""  # noqa: E501


@pytest.fixture
def store_path(schedule_copy, tmp_path: Path) -> Path:
    return seed_march(schedule_copy.path, tmp_path / "campaign.db")


def test_plan_prints_the_exact_timeline_across_dst_and_changes_nothing(
    schedule_copy, store_path: Path
) -> None:
    before = dump_tables(store_path)
    result = invoke_on(schedule_copy.path, store_path, "plan", "--now", NOW)
    assert result.exit_code == 0, result.output
    lines = lines_of(result.stdout)
    assert lines[0] == (
        "acupuncture-back-pain: 13 email(s) to 4 lead(s) from Fri 2026-03-06 "
        "23:00 UTC (a dry run: nothing is sent or changed)"
    )
    assert block(lines, "when (UTC)", 14) == EXPECTED.splitlines()
    assert "1 lead(s) are not active" in result.stdout  # Sam, unsubscribed
    assert "disagree" not in result.stdout and "replans" not in result.stdout
    # The weekly summary: Monday-based weeks, counts per step (1..5), total and a bar.
    assert summary_cells(lines) == {
        "2026-03-09": ["1", "1", "", "", "", "2"],
        "2026-03-16": ["", "2", "1", "", "", "3"],
        "2026-03-23": ["", "", "2", "1", "", "3"],
        "2026-03-30": ["", "", "", "2", "1", "3"],
        "2026-04-06": ["", "", "", "", "2", "2"],
    }
    bars = {line.split()[2]: line.count("█") for line in lines if line.startswith(" wk of ")}
    assert bars["2026-03-16"] == bars["2026-03-23"] > bars["2026-03-09"] > 0
    assert dump_tables(store_path) == before


def summary_cells(lines: list[str]) -> dict[str, list[str]]:
    """The right-aligned cells under the headers 1..5 and total, per week, read by column."""
    header = next(line for line in lines if line.startswith(" week "))
    ends = [m.end() for m in re.finditer(r"\b(1|2|3|4|5|total)\b", header)]
    table = {}
    for line in lines:
        if line.startswith(" wk of "):
            cells = [line[:end].split(" ")[-1] for end in ends]
            table[line.split()[2]] = cells
    return table


def test_plan_for_one_lead_between_dates(schedule_copy, store_path: Path) -> None:
    before = dump_tables(store_path)
    result = invoke_on(
        schedule_copy.path,
        store_path,
        "plan",
        "--now",
        NOW,
        "--lead",
        "James@example.com",
        "--from",
        "2026-03-16",
        "--until",
        "2026-03-30",
    )
    assert result.exit_code == 0, result.output
    lines = lines_of(result.stdout)
    james = [line for line in EXPECTED.splitlines() if "james@" in line]
    assert block(lines, "when (UTC)", 5)[1:] == james[1:4]  # 16, 23 and 30 March only
    assert not any("wk of" in line for line in lines)  # no summary for one lead
    assert dump_tables(store_path) == before


def test_plan_for_an_unknown_lead_or_no_database_is_a_clear_error(
    schedule_copy, store_path: Path, tmp_path: Path
) -> None:
    result = invoke_on(schedule_copy.path, store_path, "plan", "--lead", "nobody@example.com")
    assert result.exit_code == 2
    assert "no lead nobody@example.com" in result.stderr
    missing = tmp_path / "none.db"
    result = invoke_on(schedule_copy.path, missing, "plan")
    assert result.exit_code == 2
    assert "no database" in result.stderr and "simulate" in result.stderr
    assert not missing.exists(), "a dry run must not create a database"


def test_plan_after_a_timing_edit_shows_the_replanned_times(
    schedule_copy, store_path: Path
) -> None:
    """The pending rows were planned with 7-day delays; after an edit to 10 days the next
    send-due replans every lead, so the dry run must show the new times, and say so."""
    schedule_copy.edit("    delay: 7d", "    delay: 10d")  # pain-types
    result = invoke_on(
        schedule_copy.path, store_path, "plan", "--now", NOW, "--lead", "maria@example.com"
    )
    assert result.exit_code == 0, result.output
    # Maria's step 1 went Mon 2 Mar 14:00Z; ten days on is Thu 12 Mar 14:00Z (10:00 EDT).
    assert "Thu 2026-03-12 14:00  Thu 12 Mar 10:00 EDT  maria@example.com  2/5 pain-types" in (
        result.stdout
    )
    assert "the next send-due replans every lead" in result.stdout


def test_retry_time_from_the_store_is_used(schedule_copy, store_path: Path) -> None:
    """A pending row moved by a retry is when the email will really be tried."""
    loaded = load_schedule(schedule_copy.path)
    store = Store.open(f"sqlite:///{store_path}")
    at = utc(2026, 3, 9, 9, 0)
    claim = store.queue.reserve("acupuncture-back-pain", at, "test", at, 1)[0]
    assert store.queue.start(claim, at) is Start.GO
    assert claim.step_id == "mechanisms"  # James's step 1
    store.queue.record_retry(
        claim, "421 try later", 421, utc(2026, 3, 9, 9, 7), utc(2026, 3, 9, 9, 0)
    )
    emails, notes = plan_store(
        store, loaded.schedule, utc(2026, 3, 9, 9, 1), email="james@example.com"
    )
    store.close()
    assert [(e.step_id, e.at) for e in emails[:2]] == [
        ("mechanisms", utc(2026, 3, 9, 9, 7)),
        ("pain-types", utc(2026, 3, 16, 9, 7)),
    ]
    assert notes.disagree == []


def test_a_row_reserved_by_a_sender_is_still_the_plan(schedule_copy, store_path: Path) -> None:
    """During a run (or after a crashed one) reserved rows are not history: the plan still
    shows step 1 as the next email, not as sent."""
    loaded = load_schedule(schedule_copy.path)
    store = Store.open(f"sqlite:///{store_path}")
    at = utc(2026, 3, 9, 9, 0)
    assert store.queue.reserve("acupuncture-back-pain", at, "test", at, 16)
    emails, notes = plan_store(
        store, loaded.schedule, utc(2026, 3, 9, 9, 1), email="james@example.com"
    )
    store.close()
    assert [e.step_id for e in emails[:2]] == ["mechanisms", "pain-types"]
    assert notes.disagree == []


def test_an_overdue_email_goes_at_the_next_run(schedule_copy) -> None:
    schedule = load_schedule(schedule_copy.path).schedule
    lead = LeadPlan(1, "late@example.com", LeadState(utc(2026, 3, 2, 6, 0), "Europe/London"))
    now = utc(2026, 3, 4, 12, 0)  # step 1 was due Mon 2 Mar 09:00 and nothing ran since
    first, second = list(lead_emails(schedule, lead, now))[:2]
    assert (first.at, first.overdue) == (now, True)
    assert (second.at, second.overdue) == (utc(2026, 3, 11, 12, 0), False)


def test_simulate_is_deterministic_and_every_email_lands_in_the_window(schedule_copy) -> None:
    schedule = load_schedule(schedule_copy.path).schedule
    start, until = utc(2026, 3, 2), utc(2026, 4, 27)
    leads = synthetic_leads(300, start, 8, seed=7)
    assert leads == synthetic_leads(300, start, 8, seed=7)
    assert len({lead.state.timezone for lead in leads}) >= 6
    emails = simulate(schedule, leads, start, until)
    assert emails == sorted(emails, key=PlannedEmail.sort_key)
    assert all(start <= e.at <= until for e in emails)
    zones = {lead.email: lead.state.timezone for lead in leads}
    for item in emails:
        zone = lead_zone(schedule, zones[item.email])
        assert next_opening(item.at, schedule.send_window, zone) == item.at  # inside the window
    # Every lead gets step 1, and each step in order, a week or more after the last.
    by_lead: dict[str, list[PlannedEmail]] = {}
    for item in emails:
        by_lead.setdefault(item.email, []).append(item)
    # Only leads who sign up in the last days (a weekend away from a window) may get nothing.
    silent = [lead for lead in leads if lead.email not in by_lead]
    assert len(silent) < 30
    assert all(until - lead.state.enrolled_at < timedelta(days=4) for lead in silent)
    for items in by_lead.values():
        assert [i.position for i in items] == list(range(len(items)))
        assert all((b.at - a.at).days >= 7 for a, b in zip(items, items[1:], strict=False))
    weeks = summarise(emails, "week")
    assert sum(bucket.total for bucket in weeks) == len(emails)


def test_simulate_command(schedule_copy) -> None:
    argv = ["simulate", "--leads", "50", "--weeks", "3", "--seed", "3"]
    argv += ["--start", "2026-03-02", "--limit", "5"]
    result = invoke_on(schedule_copy.path, None, *argv)
    assert result.exit_code == 0, result.output
    assert "50 synthetic lead(s) signing up from 2026-03-02 over 3 week(s) (seed 3)" in (
        result.stdout
    )
    rows = [line for line in lines_of(result.stdout) if "@example.com" in line]
    assert len(rows) == 5
    assert "Emails per day" in result.stdout or "Emails per week" in result.stdout
    again = invoke_on(schedule_copy.path, None, *argv)
    assert again.stdout == result.stdout


def test_plan_reports_a_pending_row_that_disagrees_with_the_planner(
    schedule_copy, store_path: Path
) -> None:
    """Pending rows are the plan in force; one the planner would not have made is flagged
    (here moved by hand, as a buggy tool or a manual SQL fix might)."""
    with sqlite3.connect(store_path) as conn:
        moved = conn.execute(
            "UPDATE deliveries SET due_at = '2026-03-10 14:00:00.000000' WHERE status = 'pending'"
            " AND lead_id = (SELECT id FROM leads WHERE email = 'maria@example.com')"
        ).rowcount
    assert moved == 1
    result = invoke_on(schedule_copy.path, store_path, "plan", "--now", NOW)
    assert result.exit_code == 0, result.output
    assert (
        "store and planner disagree: maria@example.com: the store has pain-types at "
        "2026-03-10 14:00 UTC, the planner says pain-types at 2026-03-09 14:00 UTC"
    ) in result.stdout
    # What is listed is what the dispatcher will do: claim the row at its stored time.
    assert "Tue 2026-03-10 14:00  Tue 10 Mar 10:00 EDT  maria@example.com  2/5 pain-types" in (
        result.stdout
    )
