"""The unattended runner: it sends, stops by itself or on SIGTERM, and an invalid schedule
edit while running sends nothing at all."""

from __future__ import annotations

import signal
from collections.abc import Callable
from datetime import UTC, datetime, timedelta
from typing import Any

import pytest

from campaign.sending.runner import utc_now
from harness.clock import wait_for
from harness.engine import Campaign, subjects
from harness.schedule import any_hour

NOW = datetime(2026, 3, 2, 15, 30, tzinfo=UTC)  # Monday, inside the Chicago window


@pytest.mark.slow
def test_run_with_ticks_sends_what_is_due_and_exits(campaign: Campaign) -> None:
    campaign.edit(any_hour)  # the runner reads the real clock; let any hour be sending time
    added = campaign.cli(
        "leads",
        "add",
        "tick@example.com",
        "--name",
        "Tia",
        "--tz",
        "Europe/Paris",
        "--attr",
        "source=runner-test",
    )
    assert "added lead" in added.stdout
    campaign.enroll(utc_now() - timedelta(minutes=1), ("tock@example.com", "", None))

    result = campaign.cli("run", "--every", "0.2", "--ticks", "3", timeout=30)
    assert "stopped after 3 tick(s)" in result.stdout
    first = subjects(campaign.loaded(), "mechanisms")[0]
    assert sorted(campaign.received()) == [("tick@example.com", first), ("tock@example.com", first)]
    lead = campaign.store.leads.lead_by_email("tick@example.com")
    assert lead is not None and lead.attributes == {"source": "runner-test"}


@pytest.mark.slow
def test_run_stops_cleanly_on_sigterm(campaign: Campaign) -> None:
    campaign.edit(any_hour)
    campaign.enroll(utc_now() - timedelta(minutes=1), ("term@example.com", "Tom", None))
    runner = campaign.popen("run", "--every", "0.2")
    try:
        wait_for(lambda: len(campaign.catcher.messages) == 1, 30, "the runner's first email")
        assert runner.poll() is None, "the runner exited without being asked to"
        runner.send_signal(signal.SIGTERM)
        out, err = runner.communicate(timeout=10)
    finally:
        if runner.poll() is None:
            runner.kill()
            runner.communicate(timeout=10)
    assert runner.returncode == 0, f"{out}\n{err}"
    assert "stopped after" in out and "Traceback" not in err
    assert len(campaign.catcher.messages) == 1


def break_yaml(campaign: Campaign) -> None:
    def bad_delay(data: dict[str, Any]) -> None:
        data["steps"][1]["delay"] = "next week"

    campaign.edit(bad_delay)


def break_template(campaign: Campaign) -> None:
    template = campaign.loaded().templates_dir / "pain-types.html.j2"
    template.write_text(template.read_text(encoding="utf-8") + "{% if %}", encoding="utf-8")


@pytest.mark.parametrize(
    ("breaker", "named"),
    [(break_yaml, "step 2 (pain-types): delay"), (break_template, "pain-types.html.j2")],
    ids=["schedule", "template"],
)
def test_invalid_edit_while_running_sends_nothing(
    campaign: Campaign, breaker: Callable[[Campaign], None], named: str
) -> None:
    campaign.enroll(NOW, ("first@example.com", "Fay", None))
    assert campaign.send_due(NOW).sent == 1  # the engine was working before the edit
    files = [campaign.schedule_path, *campaign.loaded().templates_dir.glob("*.j2")]
    original = {path: path.read_bytes() for path in files}
    campaign.enroll(NOW + timedelta(hours=1), ("second@example.com", "Sid", None))

    breaker(campaign)
    report = campaign.send_due(NOW + timedelta(hours=1))
    assert report.stopped is not None and named in report.stopped, report.stopped
    assert report.sent == 0 and len(campaign.catcher.messages) == 1
    assert ("second@example.com", "mechanisms") in campaign.pending()

    for path, content in original.items():  # the marketer fixes the file
        path.write_bytes(content)
    fixed = campaign.send_due(NOW + timedelta(hours=1))
    assert fixed.ok and fixed.sent == 1
    assert campaign.received()[-1][0] == "second@example.com"
