"""A sender killed with SIGKILL mid-batch and restarted: nobody gets an email twice, everyone
else still gets theirs, and the one message in doubt is reported, never resent."""

from __future__ import annotations

import json
import signal
import sqlite3
from collections import Counter
from datetime import UTC, datetime, timedelta

import pytest

from harness.clock import iso
from harness.engine import Campaign

pytestmark = pytest.mark.slow  # a real sender process, killed mid-batch

NOW = datetime(2026, 3, 2, 15, 30, tzinfo=UTC)  # Monday, inside the Chicago window
LEADS = 200
HOLD_AT = 20  # the catcher keeps the 20th message unanswered until the sender is dead


@pytest.mark.parametrize("handler", [{"hold_at": HOLD_AT}], indirect=True, ids=["held"])
def test_sigkill_mid_batch_then_restart(campaign: Campaign) -> None:
    emails = [f"lead{i:03d}@example.com" for i in range(LEADS)]
    campaign.enroll(
        NOW, *((email, f"Lead{i}", "America/Chicago") for i, email in enumerate(emails))
    )

    sender = campaign.popen("send-due", "--now", iso(NOW))
    try:
        assert campaign.handler.held.wait(timeout=30), "the sender never reached message 20"
        assert sender.poll() is None, "the sender finished before it could be killed"
        sender.send_signal(signal.SIGKILL)
        assert sender.wait(timeout=10) == -signal.SIGKILL
    finally:
        if sender.poll() is None:
            sender.kill()
        sender.communicate(timeout=10)
        campaign.handler.release.set()

    in_doubt = campaign.deliveries("sending")
    assert len(in_doubt) == 1, "a crash may leave at most one message in doubt"
    doubtful = in_doubt[0]["email"]
    assert campaign.received()[-1][0] == doubtful  # the server got it; the sender never knew
    assert len(campaign.deliveries("sent")) == HOLD_AT - 1

    restart = campaign.send_due_cli(NOW)
    assert f"sent {LEADS - HOLD_AT}," in restart.stdout
    received = Counter(rcpt for rcpt, _ in campaign.received())
    assert set(received) == set(emails), "every other due email still goes out"
    assert set(received.values()) == {1}, "no email twice"
    assert [r["email"] for r in campaign.deliveries("sending")] == [doubtful]

    after_lease = campaign.send_due_cli(NOW + timedelta(minutes=11))
    assert "sent 0," in after_lease.stdout and "in doubt 1" in after_lease.stdout
    assert campaign.deliveries("sending") == []
    (row,) = campaign.deliveries("unknown")
    assert row["email"] == doubtful and row["step_id"] == "mechanisms"

    status = json.loads(campaign.cli("status", "--json").stdout)
    assert [(u["email"], u["step_id"]) for u in status["unknown"]] == [(doubtful, "mechanisms")]
    mechanisms = next(s for s in status["steps"] if s["step"] == "mechanisms")
    assert (mechanisms["sent"], mechanisms["unknown"]) == (LEADS - 1, 1)
    assert len(campaign.catcher.messages) == LEADS, "the message in doubt was resent"
    assert campaign.pending()[(doubtful, "pain-types")] == NOW + timedelta(days=7)

    with sqlite3.connect(campaign.db_path) as db:
        assert db.execute("PRAGMA integrity_check").fetchall() == [("ok",)]
