"""Every shipped email as a lead receives it: the shipped schedule sent to one lead by the
real engine over real SMTP to the catcher, week after week, read back as raw bytes."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from pathlib import Path

from harness.engine import open_campaign
from harness.mail import step_of

DAY0 = datetime(2026, 3, 2, 15, 30, tzinfo=UTC)  # a Monday, inside the send window
WEEKS = 8  # more than the series needs; a pass with nothing due sends nothing


def send_shipped_series(folder: Path) -> dict[str, bytes]:
    """step id → the raw message the catcher accepted, for every step of the shipped series."""
    with open_campaign(folder) as campaign:
        campaign.enroll(DAY0, ("sam@example.com", "Sam", "America/Chicago"))
        for week in range(WEEKS):
            campaign.send_due(DAY0 + timedelta(days=7 * week))
        caught = campaign.catcher.messages
    sent = {step_of(c.message): c.data for c in caught}
    assert len(sent) == len(caught), "a step arrived twice"
    return sent
