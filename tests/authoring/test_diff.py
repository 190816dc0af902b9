"""`run.py schedule diff OLD NEW`: what an edit changes, for the series as written and for
each lead already in it (the March 2026 store of `harness.rig.seed_march`).

Expected moves are worked out by hand: a delay counts from the real send and then waits for
the lead's weekday 09:00-17:00 window, so the same edit can move leads by different amounts.
"""

from __future__ import annotations

from pathlib import Path

import pytest

from campaign.authoring.diff import series_changes
from campaign.config.schedule import load_schedule
from harness.cli import invoke_on, lines_of
from harness.db import dump_tables
from harness.rig import seed_march

NOW = "2026-03-06T23:00Z"
PROCESS = """  - id: process
    template: process.html.j2
    subject: What an acupuncture session is really like
    preheader: Fine needles, a mild tingling, and 20–30 minutes to relax.
    delay: 7d
"""
STORIES = """  - id: stories
    template: process.html.j2
    subject: Stories from our patients
    delay: 3d
"""
PAIN_TYPES_DELAY = (
    "preheader: Muscle strain, sciatica, herniated discs and chronic back pain.\n    delay: 7d"
)


@pytest.fixture
def store_path(schedule_copy, tmp_path: Path) -> Path:
    return seed_march(schedule_copy.path, tmp_path / "campaign.db")


def edited(schedule_copy, old: str, new: str) -> Path:
    """A copy of the schedule beside the original (so its templates resolve), edited once."""
    text = schedule_copy.text()
    assert old in text, old
    path = schedule_copy.path.parent / "new.yaml"
    path.write_text(text.replace(old, new, 1), encoding="utf-8")
    return path


def diff(schedule_copy, new: Path, db: Path | None, *options: str) -> list[str]:
    before = dump_tables(db) if db is not None and db.exists() else None
    result = invoke_on(
        schedule_copy.path,
        db,
        "schedule",
        "diff",
        str(schedule_copy.path),
        str(new),
        "--now",
        NOW,
        *options,
    )
    assert result.exit_code == 0, result.output
    if before is not None:
        assert dump_tables(db) == before, "schedule diff must not change the database"
    return lines_of(result.stdout)


def lead_lines(lines: list[str]) -> list[str]:
    return [line.strip() for line in lines if "@example.com:" in line]


def test_delay_changed(schedule_copy, store_path: Path) -> None:
    new = edited(schedule_copy, PAIN_TYPES_DELAY, PAIN_TYPES_DELAY.replace("7d", "10d"))
    lines = diff(schedule_copy, new, store_path, "--db")
    assert "  delay     pain-types       7d -> 10d (day 7 -> day 10)" in lines
    assert "3 of 4 lead(s) in the series are affected" in lines  # Sam has unsubscribed
    leads = lead_lines(lines)
    # Maria's step 1 went Mon 2 Mar 14:00Z: ten days on is Thu 12 Mar, inside her window.
    assert (
        "maria@example.com: pain-types moves +3d "
        "(Mon 2026-03-09 14:00 UTC -> Thu 2026-03-12 14:00 UTC)"
    ) in leads
    assert (
        "maria@example.com: booking moves +3d "
        "(Mon 2026-03-30 14:00 UTC -> Thu 2026-04-02 14:00 UTC)"
    ) in leads
    # Chris's went Fri 6 Mar 22:30Z: ten days on is Mon 16 Mar 17:30 CDT, after his window, so
    # Tuesday 09:00 CDT: one day later than before, not three.
    assert (
        "chris@example.com: pain-types moves +1d "
        "(Mon 2026-03-16 14:00 UTC -> Tue 2026-03-17 14:00 UTC)"
    ) in leads
    # James has not had step 1 yet: it stays where it was, the rest move three days.
    assert not any(line.startswith("james@example.com: mechanisms") for line in leads)
    assert (
        "james@example.com: pain-types moves +3d "
        "(Mon 2026-03-16 09:00 UTC -> Thu 2026-03-19 09:00 UTC)"
    ) in leads
    assert not any(line.startswith("sam@") for line in leads)
    assert len(leads) == 12  # 4 later steps each for Maria, Chris and James


def test_step_added(schedule_copy, store_path: Path) -> None:
    new = edited(schedule_copy, "  - id: faqs\n", STORIES + "\n  - id: faqs\n")
    lines = diff(schedule_copy, new, store_path)
    assert "  added     stories          as step 4, delay 3d (day 17)" in lines
    leads = lead_lines(lines)
    assert "maria@example.com: gets stories at Thu 2026-03-19 14:00 UTC" in leads
    assert "james@example.com: gets stories at Thu 2026-03-26 09:00 UTC" in leads
    assert "chris@example.com: gets stories at Thu 2026-03-26 14:00 UTC" in leads
    # Everything after the new step waits for it: three days later.
    assert (
        "maria@example.com: faqs moves +3d (Mon 2026-03-23 14:00 UTC -> Thu 2026-03-26 14:00 UTC)"
    ) in leads
    assert "3 of 4 lead(s) in the series are affected" in lines


def test_step_removed(schedule_copy, store_path: Path) -> None:
    new = edited(schedule_copy, PROCESS + "\n", "")
    lines = diff(schedule_copy, new, store_path)
    assert "  removed   process          was step 3 (day 14)" in lines
    leads = lead_lines(lines)
    assert "maria@example.com: loses process (was Mon 2026-03-16 14:00 UTC)" in leads
    assert (
        "maria@example.com: faqs moves -7d (Mon 2026-03-23 14:00 UTC -> Mon 2026-03-16 14:00 UTC)"
    ) in leads
    assert (
        "james@example.com: booking moves -7d "
        "(Mon 2026-04-06 09:00 UTC -> Mon 2026-03-30 09:00 UTC)"
    ) in leads


def test_window_changed(schedule_copy, store_path: Path) -> None:
    new = edited(schedule_copy, 'start: "09:00"', 'start: "10:00"')
    lines = diff(schedule_copy, new, store_path)
    assert (
        "  window                     mon,tue,wed,thu,fri 09:00-17:00 -> "
        "mon,tue,wed,thu,fri 10:00-17:00"
    ) in lines
    leads = lead_lines(lines)
    # James and Chris get their emails at 09:00 local, now an hour later; Maria's arrive at
    # 10:00 EDT since the US clocks moved, which the new window still allows.
    assert (
        "james@example.com: mechanisms moves +1h "
        "(Mon 2026-03-09 09:00 UTC -> Mon 2026-03-09 10:00 UTC)"
    ) in leads
    assert (
        "chris@example.com: booking moves +1h "
        "(Mon 2026-04-06 14:00 UTC -> Mon 2026-04-06 15:00 UTC)"
    ) in leads
    assert not any(line.startswith("maria@") for line in leads)
    assert "2 of 4 lead(s) in the series are affected" in lines


def test_subject_change_moves_nobody(schedule_copy, store_path: Path) -> None:
    new = edited(
        schedule_copy,
        "subject: What an acupuncture session is really like",
        "subject: Inside an acupuncture session",
    )
    lines = diff(schedule_copy, new, store_path)
    assert any(line.startswith("  subject   process") for line in lines)
    assert "0 of 4 lead(s) in the series are affected" in lines
    assert lead_lines(lines) == []


def test_without_a_store_the_nominal_series_is_compared(schedule_copy, tmp_path: Path) -> None:
    new = edited(schedule_copy, PROCESS + "\n", "")
    missing = tmp_path / "absent.db"
    lines = diff(schedule_copy, new, missing)
    assert "  removed   process          was step 3 (day 14)" in lines
    assert "  delay" not in "\n".join(lines)
    assert any(line.startswith("no database") for line in lines)
    assert not missing.exists()
    result = invoke_on(schedule_copy.path, missing, "schedule", "diff", str(new), "--db")
    assert result.exit_code == 2 and "no database" in result.stderr


def test_one_file_is_compared_with_the_schedule_in_use(schedule_copy) -> None:
    new = edited(schedule_copy, PAIN_TYPES_DELAY, PAIN_TYPES_DELAY.replace("7d", "1w1d"))
    result = invoke_on(schedule_copy.path, None, "schedule", "diff", str(new), "--no-db")
    assert result.exit_code == 0, result.output
    assert "  delay     pain-types       7d -> 8d (day 7 -> day 8)" in lines_of(result.stdout)


def test_series_changes_cover_order_template_and_timezone(schedule_copy) -> None:
    old = load_schedule(schedule_copy.path).schedule
    swapped = schedule_copy.text().replace("template: faqs.html.j2", "template: process.html.j2")
    swapped = swapped.replace("timezone: America/Chicago", "timezone: America/Denver")
    faqs_start = swapped.index("  - id: faqs")
    booking_start = swapped.index("  - id: booking")
    faqs = swapped[faqs_start:booking_start]
    moved = swapped[:faqs_start] + swapped[booking_start:].rstrip("\n") + "\n\n" + faqs
    path = schedule_copy.path.parent / "moved.yaml"
    path.write_text(moved, encoding="utf-8")
    changes = {(c.kind, c.step) for c in series_changes(old, load_schedule(path).schedule)}
    assert changes == {
        ("timezone", None),
        ("template", "faqs"),
        ("order", "faqs"),
        ("order", "booking"),
    }
