"""Every SMTP failure class, driven through the real engine against a fault-injecting server.

Each test checks what an operator would see afterwards: the delivery row (status, attempts,
last error, SMTP code, when it is retried), the lead's status, what the server received and
what was logged. The clock is moved past each retry time by hand; nothing sleeps.
"""

from __future__ import annotations

import json
import logging
import random
from contextlib import nullcontext
from datetime import timedelta

import pytest

from campaign.config.schedule import Retry
from campaign.devtools.catcher import free_port
from campaign.planner import lead_zone, next_opening
from campaign.sending.breaker import BREAKER_CAP, BREAKER_FIRST
from campaign.sending.dispatcher import (
    IN_DOUBT_STREAK,
    SAME_REFUSAL_STREAK,
    RunReport,
    backoff,
)
from harness.cli import run_py
from harness.clock import T0
from harness.mail import signer
from harness.rig import Rig
from harness.schedule import set_yaml_block
from harness.smtp import Fault, FaultServer

ATTEMPTS = 4
FIRST = timedelta(minutes=1)
CAP = timedelta(minutes=3)
PASSWORD = "hunter2-correct-horse-battery"
SLOW_TIMEOUT = 0.4  # seconds the client waits; the slow server takes three times as long


@pytest.fixture
def rig(schedule_copy, tmp_path) -> Rig:
    set_yaml_block(
        schedule_copy.path, "retry", f"  attempts: {ATTEMPTS}\n  first_delay: 1m\n  max_delay: 3m"
    )
    set_yaml_block(schedule_copy.path, "rate_limit", "  per_second: 1000\n  per_connection: 100")
    return Rig(schedule_copy.path, tmp_path / "campaign.db", timeout=2.0)


def expected_delay(attempt: int) -> timedelta:
    return min(FIRST * 2 ** (attempt - 1), CAP)


# --- transient: retried with backoff, then failed -----------------------------------------

TRANSIENT = {
    # name: (faults, greeting, needs AUTH, expected SMTP code, words in the error)
    "rcpt-450": ([Fault("RCPT", "450 4.2.1 mailbox busy", times=None)], None, False, 450, "450"),
    "rcpt-421": ([Fault("RCPT", "421 4.3.2 closing", times=None)], None, False, 421, "421"),
    "data-452": (
        [Fault("DATA", "452 4.3.1 insufficient storage", times=None)],
        None,
        False,
        452,
        "452",
    ),
    "data-421": ([Fault("DATA", "421 4.3.2 closing", times=None)], None, False, 421, "421"),
    "dropped-at-rcpt": ([Fault("RCPT", drop=True, times=None)], None, False, None, "connection"),
}
# The relay fails before any recipient is named: nothing is known about the message.
RELAY_DOWN = {
    "server-down": ([], None, False, None, "cannot connect"),
    "greeting-421": ([], "421 4.3.2 too busy, try later", False, 421, "421"),
    "ehlo-421": ([Fault("EHLO", "421 4.3.2 shutting down", times=None)], None, False, 421, "421"),
    "slow-greeting": (
        [Fault("EHLO", delay=3 * SLOW_TIMEOUT, times=None)],
        None,
        False,
        None,
        "timed out",
    ),
    "auth-454": (
        [Fault("AUTH", "454 4.7.0 temporary authentication failure", times=None)],
        None,
        True,
        454,
        "454",
    ),
    "mail-451": ([Fault("MAIL", "451 4.3.0 local problem", times=None)], None, False, 451, "451"),
    "mail-421": ([Fault("MAIL", "421 4.3.2 closing", times=None)], None, False, 421, "421"),
    "dropped-at-mail": ([Fault("MAIL", drop=True, times=None)], None, False, None, "connection"),
}
# The whole message went out and no answer came: the server may have accepted it.
IN_DOUBT = {
    "slow-answer": Fault("DATA", delay=3 * SLOW_TIMEOUT, times=None),
    "dropped-after-the-message": Fault("DATA", drop=True, times=None),
}


def serve(faults: list[Fault], greeting: str | None, auth: bool) -> FaultServer:
    return FaultServer(*faults, greeting=greeting, password=PASSWORD if auth else None)


@pytest.mark.parametrize("case", list(TRANSIENT))
def test_transient_failure_is_retried_with_backoff_then_failed(rig: Rig, case: str) -> None:
    faults, greeting, auth, code, words = TRANSIENT[case]
    email = "ann@example.com"
    rig.add(email)
    with serve(faults, greeting, auth) as server:
        for attempt in range(1, ATTEMPTS + 1):
            rig.run(server.port)
            row = rig.row(email)
            assert row["attempts"] == attempt, row
            assert row["smtp_code"] == code, row
            assert words in row["last_error"], row
            assert rig.lead_status(email) == "active"
            if attempt < ATTEMPTS:
                assert row["status"] == "pending", row
                delay = row["due_at"] - rig.clock.now
                base = expected_delay(attempt)
                assert base * 0.8 <= delay <= min(base * 1.2, CAP), (attempt, delay)
                rig.clock.now = row["due_at"]
        assert row["status"] == "failed", row
        assert row["last_error"].startswith(f"gave up after {ATTEMPTS} attempts: "), row
        assert server.messages == []
    # Giving up on one step does not end the series: the next step is planned as usual.
    following = rig.row(email, "pain-types")
    assert following["status"] == "pending" and following["attempts"] == 0


@pytest.mark.parametrize(
    "case",
    [pytest.param(c, marks=pytest.mark.slow) if c == "slow-greeting" else c for c in RELAY_DOWN],
)
def test_a_relay_failure_spends_no_attempt_and_backs_off_the_whole_sender(
    rig: Rig, case: str
) -> None:
    faults, greeting, auth, code, words = RELAY_DOWN[case]
    if auth:
        rig.user, rig.password = "clinic", PASSWORD
    if case.startswith("slow"):
        rig.timeout = SLOW_TIMEOUT
    emails = [f"lead{n}@example.com" for n in range(3)]
    rig.add(*emails)
    server = serve(faults, greeting, auth)
    port = free_port() if case == "server-down" else server.port
    with server if case != "server-down" else nullcontext():
        report = rig.run(port)
        assert report.stopped and words in report.stopped, report
        assert (report.retried, report.failed, report.sent) == (0, 0, 0), report
        rows = [rig.row(e) for e in emails]
        assert [(r["status"], r["attempts"]) for r in rows] == [("pending", 0)] * 3, rows
        assert words in rows[0]["last_error"], rows[0]
        # The breaker is open: the next tick does not even try the server.
        before = list(server.handler.commands)
        report = rig.run(port)
        assert report.stopped and "SMTP server" in report.stopped, report
        assert server.handler.commands == before
        assert all(rig.lead_status(e) == "active" for e in emails)
    with serve([], None, auth) as healthy:
        rig.clock.advance(BREAKER_FIRST)
        report = rig.run(healthy.port)
        assert (report.sent, report.stopped) == (3, None), report
    assert [rig.row(e)["attempts"] for e in emails] == [1, 1, 1]


def test_an_eight_hour_outage_loses_nothing_and_status_shows_the_breaker(rig: Rig) -> None:
    """`run` ticking every minute through eight hours of a dead relay: no message uses up
    its attempts, no lead moves on, and `status` says the sender is backing off."""
    emails = [f"lead{n}@example.com" for n in range(8)]
    rig.add(*emails)
    dead = free_port()
    tries = 0
    for _ in range(8 * 60):
        report = rig.run(dead)
        assert report.stopped and report.sent == 0, report
        tries += "no attempt spent" in report.stopped  # else the breaker held the run
        rig.clock.advance(timedelta(minutes=1))
    assert tries < 8 * 60 / 5, f"the sender tried the dead relay {tries} times"
    rows = [rig.row(e) for e in emails]
    assert [(r["status"], r["attempts"]) for r in rows] == [("pending", 0)] * 8, rows
    assert all(len(rig.rows(e)) == 1 for e in emails), "a lead moved on to its next step"
    status = run_py("--db", rig.url, "--schedule", str(rig.schedule_path), "status", "--json")
    sender = json.loads(status.stdout)["sender"]
    assert sender["state"] == "backing off" and "cannot connect" in sender["reason"], sender
    assert sender["failures"] == tries, sender
    with FaultServer() as server:
        rig.clock.advance(BREAKER_CAP)
        report = rig.run(server.port)
        assert (report.sent, report.stopped) == (8, None), report
    status = run_py("--db", rig.url, "--schedule", str(rig.schedule_path), "status", "--json")
    assert json.loads(status.stdout)["sender"] == {"state": "ok"}


def test_a_message_older_than_the_maximum_age_fails_with_the_reason(rig: Rig) -> None:
    """Like an MTA's queue lifetime: once a message has waited 5 days (the default) and
    the relay still fails, it ends `failed` saying why, and the series goes on."""
    old, young = "old@example.com", "young@example.com"
    rig.add(old)
    rig.clock.advance(timedelta(days=2))
    rig.add(young)
    rig.clock.advance(timedelta(days=3, minutes=1))
    report = rig.run(free_port())
    assert report.stopped and report.failed == 1, report
    row = rig.row(old)
    assert row["status"] == "failed", row
    assert row["last_error"].startswith("gave up after waiting 5d"), row
    assert "cannot connect" in row["last_error"], row
    assert rig.row(old, "pain-types")["status"] == "pending"
    assert (rig.row(young)["status"], rig.row(young)["attempts"]) == ("pending", 0)


@pytest.mark.parametrize("case", list(IN_DOUBT))
def test_no_answer_once_the_whole_message_is_sent_is_in_doubt_and_never_resent(
    rig: Rig, case: str
) -> None:
    """Retrying could mail the lead twice: the delivery is `unknown` at once, never tried
    again, and the lead moves on to the next step."""
    rig.timeout = SLOW_TIMEOUT
    email = "ann@example.com"
    rig.add(email)
    with FaultServer(IN_DOUBT[case]) as server:
        report = rig.run(server.port)
        assert (report.in_doubt, report.sent, report.retried) == (1, 0, 0), report
        row = rig.row(email)
        assert (row["status"], row["attempts"]) == ("unknown", 1), row
        assert "no answer once the whole message was sent" in row["last_error"], row
        rig.clock.now += timedelta(days=1)
        rig.run(server.port)
        assert rig.row(email)["attempts"] == 1
        assert server.handler.commands.count("DATA") == 1, "the message was sent again"
    assert rig.row(email, "pain-types")["status"] == "pending"


def test_a_connection_lost_before_the_final_dot_is_retried_not_in_doubt(rig: Rig) -> None:
    """The server hung up before the end of the message reached it, so it cannot have
    accepted it: an ordinary retry, and the message arrives once."""
    email = "ann@example.com"
    rig.add(email)
    with FaultServer(Fault("BODY", drop=True)) as server:
        report = rig.run(server.port)
        assert (report.retried, report.in_doubt, report.sent) == (1, 0, 0), report
        row = rig.row(email)
        assert (row["status"], row["attempts"]) == ("pending", 1), row
        assert "before the end of the message" in row["last_error"], row
        rig.clock.now = row["due_at"]
        assert rig.run(server.port).sent == 1
        assert [m.recipients for m in server.messages] == [[email]]
        assert rig.row(email)["status"] == "sent"


def test_a_run_whose_messages_keep_ending_in_doubt_stops_after_a_few(rig: Rig) -> None:
    """Every message dropped after its final dot: the run stops after a few in doubt, and
    the rest of the queue waits with its attempts untouched instead of turning `unknown`."""
    emails = [f"lead{n}@example.com" for n in range(8)]
    rig.add(*emails)
    with FaultServer(Fault("DATA", drop=True, times=None)) as server:
        report = rig.run(server.port)
    assert report.in_doubt == IN_DOUBT_STREAK, report
    assert report.stopped and "in doubt" in report.stopped, report
    rows = [rig.row(e) for e in emails]
    assert [r["status"] for r in rows] == ["unknown"] * 3 + ["pending"] * 5, rows
    assert [r["attempts"] for r in rows[3:]] == [0] * 5, rows
    assert all(rig.lead_status(e) == "active" for e in emails)


def test_transient_failures_then_success_sends_exactly_once(rig: Rig) -> None:
    email = "ben@example.com"
    rig.add(email)
    with FaultServer(Fault("RCPT", "451 4.7.1 greylisted", times=2)) as server:
        for _ in range(3):
            rig.run(server.port)
            rig.clock.now = max(rig.clock.now, rig.row(email)["due_at"])
        row = rig.row(email)
        assert (row["status"], row["attempts"], row["last_error"]) == ("sent", 3, None), row
        assert row["smtp_code"] == 250
        assert [m.recipients for m in server.messages] == [[email]]
    assert rig.row(email, "pain-types")["status"] == "pending"


def test_backoff_is_jittered_and_capped(rig: Rig) -> None:
    schedule = rig.schedule.model_copy(
        update={"retry": Retry(attempts=10, first_delay=FIRST, max_delay=CAP)}
    )
    rng = random.Random(7)
    for attempt in range(1, 10):
        delays = {backoff(attempt, schedule, rng) for _ in range(50)}
        base = expected_delay(attempt)
        assert all(base * 0.8 <= d <= min(base * 1.2, CAP) for d in delays), attempt
        assert len(delays) > 40, f"attempt {attempt}: retries would align: {sorted(delays)[:3]}"


def test_a_retry_waits_for_the_send_window(rig: Rig) -> None:
    # 16:59:30 in Chicago: a retry about a minute later falls after the window closes at 17:00.
    rig.clock.now = T0.replace(hour=22, minute=59, second=30)
    email = "late@example.com"
    rig.add(email)
    with FaultServer(Fault("RCPT", "451 4.7.1 greylisted")) as server:
        rig.run(server.port)
    due = rig.row(email)["due_at"]
    zone = lead_zone(rig.schedule, None)
    assert next_opening(due, rig.schedule.send_window, zone) == due, due  # inside the window
    assert due.astimezone(zone).strftime("%a %H:%M") == "Thu 09:00"


# --- permanent: the recipient is refused --------------------------------------------------

BOUNCES = {
    "rcpt-550": (Fault("RCPT", "550 5.1.1 no such user", recipient="eve@example.com"), 550),
    "rcpt-553": (
        Fault("RCPT", "553 5.1.3 mailbox name not allowed", recipient="eve@example.com"),
        553,
    ),
    "data-554": (Fault("DATA", "554 5.7.1 message refused", recipient="eve@example.com"), 554),
    "data-550": (Fault("DATA", "550 5.7.1 spam", recipient="eve@example.com"), 550),
}


@pytest.mark.parametrize("case", list(BOUNCES))
def test_recipient_refused_for_good_bounces_the_lead(rig: Rig, case: str) -> None:
    fault, code = BOUNCES[case]
    rig.add("eve@example.com", "fay@example.com")
    with FaultServer(fault) as server:
        report = rig.run(server.port)
        assert (report.sent, report.bounced, report.stopped) == (1, 1, None), report
        row = rig.row("eve@example.com")
        assert (row["status"], row["attempts"], row["smtp_code"]) == ("failed", 1, code), row
        assert str(code) in row["last_error"]
        assert rig.lead_status("eve@example.com") == "bounced"
        # The other lead went out on the same connection.
        assert rig.row("fay@example.com")["status"] == "sent"
        assert server.handler.commands.count("EHLO") == 1
        # No further steps for the bounced lead, however long we wait.
        rig.clock.advance(timedelta(days=60))
        for _ in range(6):
            rig.run(server.port)
            rig.clock.advance(timedelta(days=8))
        to_eve = [m for m in server.messages if "eve@example.com" in m.recipients]
        assert to_eve == []
        assert [r["step_id"] for r in rig.rows("eve@example.com")] == ["mechanisms"]
        assert rig.row("fay@example.com", "booking")["status"] == "sent"


# --- the same refusal for everyone: the sender's problem, not the recipients' --------------

RELAY_DENIED = "554 5.7.1 Relay access denied"


def refuse_everyone(rig: Rig, emails: list[str]) -> RunReport:
    """One run against a relay that refuses every recipient alike."""
    rig.add(*emails)
    with FaultServer(Fault("RCPT", RELAY_DENIED, times=None)) as server:
        report = rig.run(server.port)
        assert server.messages == []
    return report


def test_the_same_refusal_for_every_recipient_stops_the_run_as_a_sender_problem(
    rig: Rig,
) -> None:
    emails = [f"lead{n}@example.com" for n in range(6)]
    report = refuse_everyone(rig, emails)
    first = SAME_REFUSAL_STREAK - 1  # bounced before the pattern showed
    assert report.bounced == first, report
    assert report.stopped and "554" in report.stopped and "sender" in report.stopped, report
    assert report.run_id and report.run_id in report.stopped, report  # how to undo them
    statuses = [rig.lead_status(e) for e in emails]
    assert statuses == ["bounced"] * first + ["active"] * (len(emails) - first), statuses
    rest = [rig.row(e) for e in emails[first:]]
    assert [(r["status"], r["attempts"]) for r in rest] == [("pending", 0)] * len(rest), rest


def test_different_recipients_refused_differently_still_bounce_one_by_one(rig: Rig) -> None:
    emails = [f"lead{n}@example.com" for n in range(4)]
    rig.add(*emails)
    faults = [
        Fault("RCPT", f"550 5.1.1 no such user {n}", recipient=e) for n, e in enumerate(emails)
    ]
    with FaultServer(*faults) as server:
        report = rig.run(server.port)
    assert (report.bounced, report.stopped) == (4, None), report


@pytest.mark.slow
def test_leads_bounced_by_mistake_are_reactivated_by_run_or_by_lead(rig: Rig) -> None:
    rig.add("gone@example.com")
    with FaultServer(
        Fault("RCPT", "550 5.1.1 no such user", recipient="gone@example.com")
    ) as server:
        assert rig.run(server.port).bounced == 1
    emails = [f"lead{n}@example.com" for n in range(6)]
    report = refuse_everyone(rig, emails)
    assert report.bounced == SAME_REFUSAL_STREAK - 1 and report.run_id, report
    base = ["--schedule", str(rig.schedule_path), "--db", rig.url, "leads", "reactivate"]
    moment = ["--now", rig.clock.now.isoformat()]
    result = run_py(*base, "--run", report.run_id, *moment, expect=0)
    assert f"reactivated {SAME_REFUSAL_STREAK - 1} " in result.stdout, result.stdout
    assert [rig.lead_status(e) for e in emails] == ["active"] * len(emails)
    assert rig.lead_status("gone@example.com") == "bounced"  # another run's bounce stays
    # Nothing left to undo: a second time changes nothing and says so.
    again = run_py(*base, "--run", report.run_id, *moment, expect=1)
    assert "no bounced lead" in again.stderr, again.stderr
    with FaultServer() as server:
        report = rig.run(server.port)
        assert report.sent == len(emails), report
        assert sorted(m.recipients[0] for m in server.messages) == emails
    result = run_py(*base, "gone@example.com", *moment, expect=0)
    assert "reactivated 1 " in result.stdout, result.stdout
    assert rig.lead_status("gone@example.com") == "active"
    assert rig.row("gone@example.com")["status"] == "pending"
    assert rig.row("gone@example.com")["attempts"] == 0


# --- the whole account is refused ---------------------------------------------------------

ACCOUNT = {
    "auth-535": ([Fault("AUTH", "535 5.7.8 authentication credentials invalid", times=None)], 535),
    "mail-550": ([Fault("MAIL", "550 5.7.1 sender address rejected", times=None)], 550),
    "mail-553": ([Fault("MAIL", "553 5.7.1 sender not owned by user", times=None)], 553),
}


@pytest.mark.parametrize("case", list(ACCOUNT))
def test_account_refused_stops_the_batch_and_a_run_after_the_back_off_tries_again(
    rig: Rig, case: str, caplog: pytest.LogCaptureFixture
) -> None:
    faults, code = ACCOUNT[case]
    rig.user, rig.password = "clinic", PASSWORD
    emails = [f"lead{n}@example.com" for n in range(3)]
    rig.add(*emails)
    with FaultServer(*faults, password=PASSWORD) as server:
        with caplog.at_level(logging.INFO):
            report = rig.run(server.port)
        assert report.stopped and str(code) in report.stopped, report
        assert (report.sent, report.failed, report.bounced) == (0, 0, 0), report
        rows = [rig.row(e) for e in emails]
        assert [(r["status"], r["attempts"]) for r in rows] == [("pending", 0)] * 3, rows
        assert all(r["claimed_by"] is None for r in rows), rows
        assert all(rig.lead_status(e) == "active" for e in emails)
        assert server.messages == []
        loud = [r for r in caplog.records if r.levelno >= logging.ERROR]
        assert any(f"code={code}" in r.getMessage() for r in loud), caplog.text
        # The sender backs off; once the account is fixed, the first run after the back-off
        # sends everything, each in one attempt.
        server.handler.faults.clear()
        assert rig.run(server.port).sent == 0
        rig.clock.advance(BREAKER_FIRST)
        report = rig.run(server.port)
        assert report.sent == 3 and report.stopped is None, report
        assert [rig.row(e)["attempts"] for e in emails] == [1, 1, 1]
        assert sorted(m.recipients[0] for m in server.messages) == emails
    assert PASSWORD not in caplog.text


@pytest.mark.slow
def test_send_due_exits_non_zero_when_the_account_is_refused(rig: Rig) -> None:
    rig.add("zoe@example.com")
    before = rig.snapshot()
    with FaultServer(password="a-different-password") as server:
        result = rig.send_due(
            server.port, CAMPAIGN_SMTP_USER="clinic", CAMPAIGN_SMTP_PASSWORD=PASSWORD
        )
        assert server.messages == []
    assert result.returncode == 1, (result.stdout, result.stderr)
    assert "refused the account" in result.stderr and "535" in result.stderr, result.stderr
    assert "Traceback" not in result.stderr
    assert PASSWORD not in result.stdout + result.stderr
    after = rig.snapshot()
    assert after[0] == before[0]
    (row,) = [rig.row("zoe@example.com")]
    assert (row["status"], row["attempts"]) == ("pending", 0)


# --- several recipients, one connection ---------------------------------------------------


def test_mixed_outcomes_on_one_connection_are_handled_one_by_one(rig: Rig) -> None:
    outcomes = {
        "a-bounce@example.com": Fault("RCPT", "550 5.1.1 unknown user"),
        "b-grey@example.com": Fault("RCPT", "451 4.7.1 greylisted"),
        "c-spam@example.com": Fault("DATA", "554 5.7.1 looks like spam"),
        "d-full@example.com": Fault("DATA", "452 4.2.2 mailbox full"),
    }
    good = ["e-ok@example.com", "f-ok@example.com", "g-ok@example.com"]
    # The good ones are interleaved with the failing ones in the queue.
    order = [
        "a-bounce@example.com",
        "e-ok@example.com",
        "b-grey@example.com",
        "f-ok@example.com",
        "c-spam@example.com",
        "d-full@example.com",
        "g-ok@example.com",
    ]
    for email in order:
        rig.add(email)
    faults = [Fault(f.command, f.reply, recipient=email) for email, f in outcomes.items()]
    with FaultServer(*faults) as server:
        report = rig.run(server.port)
        assert server.handler.commands.count("EHLO") == 1, server.handler.commands
        assert sorted(m.recipients[0] for m in server.messages) == good
    assert (report.sent, report.retried, report.bounced) == (3, 2, 2), report
    expected = {
        "a-bounce@example.com": ("failed", 550, "bounced"),
        "b-grey@example.com": ("pending", 451, "active"),
        "c-spam@example.com": ("failed", 554, "bounced"),
        "d-full@example.com": ("pending", 452, "active"),
        **{email: ("sent", 250, "active") for email in good},
    }
    for email, (status, code, lead_status) in expected.items():
        row = rig.row(email)
        assert (row["status"], row["smtp_code"], row["attempts"]) == (status, code, 1), email
        assert rig.lead_status(email) == lead_status, email


def test_server_down_costs_no_attempt(rig: Rig) -> None:
    emails = [f"lead{n}@example.com" for n in range(5)]
    rig.add(*emails)
    report = rig.run(free_port())
    assert report.stopped and "cannot connect" in report.stopped, report
    assert [rig.row(e)["attempts"] for e in emails] == [0, 0, 0, 0, 0]
    assert all(rig.row(e)["status"] == "pending" for e in emails)
    with FaultServer() as server:
        rig.clock.advance(timedelta(minutes=5))
        report = rig.run(server.port)
        assert report.sent == 5 and report.stopped is None, report
        assert sorted(m.recipients[0] for m in server.messages) == emails


def test_a_failure_mid_run_does_not_hold_up_the_rest(rig: Rig) -> None:
    emails = [f"lead{n}@example.com" for n in range(6)]
    rig.add(*emails)
    # The third message's connection drops at RCPT; the others still go out in this run.
    with FaultServer(Fault("RCPT", drop=True, recipient=emails[2])) as server:
        report = rig.run(server.port)
        assert (report.sent, report.retried) == (5, 1), report
        row = rig.row(emails[2])
        assert (row["status"], row["attempts"]) == ("pending", 1)
        assert rig.lead_status(emails[2]) == "active"
        rig.clock.now = row["due_at"]
        assert rig.run(server.port).sent == 1
        assert sorted(m.recipients[0] for m in server.messages) == emails


# --- logs an operator can use -------------------------------------------------------------


def test_each_attempt_logs_one_line_with_outcome_and_code_and_no_secrets(
    rig: Rig, caplog: pytest.LogCaptureFixture
) -> None:
    rig.user, rig.password = "clinic", PASSWORD
    emails = ["ok@example.com", "grey@example.com", "gone@example.com", "spam@example.com"]
    ids = dict(zip(emails, rig.add(*emails), strict=True))
    faults = [
        Fault("RCPT", "451 4.7.1 greylisted", recipient="grey@example.com", times=None),
        Fault("RCPT", "550 5.1.1 no such user", recipient="gone@example.com"),
        Fault("DATA", "554 5.7.1 spam", recipient="spam@example.com"),
    ]
    with FaultServer(*faults, password=PASSWORD) as server, caplog.at_level(logging.INFO):
        rig.run(server.port)
        for _ in range(ATTEMPTS - 1):
            rig.clock.now = rig.row("grey@example.com")["due_at"]
            rig.run(server.port)
        server.add(Fault("AUTH", "535 5.7.8 bad credentials", times=None))
        rig.clock.now += timedelta(days=8)
        rig.run(server.port)
    lines = [r.getMessage() for r in caplog.records if r.name == "campaign.sending.dispatcher"]

    def line_for(email: str, outcome: str) -> list[str]:
        return [
            line
            for line in lines
            if f"outcome={outcome} " in line and f"lead={ids[email]} " in line
        ]

    for email, outcome, code in [
        ("ok@example.com", "sent", 250),
        ("grey@example.com", "retry", 451),
        ("grey@example.com", "failed", 451),
        ("gone@example.com", "bounced", 550),
        ("spam@example.com", "bounced", 554),
        ("ok@example.com", "stopped", 535),
    ]:
        found = line_for(email, outcome)
        assert found, f"no {outcome} line for {email}:\n" + "\n".join(lines)
        for line in found:
            for part in (f"code={code} ", "delivery=", "step=", "attempt=", "ms="):
                assert part in line, (part, line)
    assert len(line_for("grey@example.com", "retry")) == ATTEMPTS - 1
    assert len(line_for("ok@example.com", "sent")) == 1
    secrets = [PASSWORD]
    for lead_id in ids.values():
        unsubscribe = signer().unsubscribe_url(lead_id, rig.schedule.campaign.id)
        secrets.append(unsubscribe.rpartition("/")[2])
        for step in ("mechanisms", "pain-types"):
            click = signer().click_url(lead_id, rig.schedule.campaign.id, step, 0)
            secrets.append(click.rpartition("/")[2])
    for secret in secrets:
        assert secret not in caplog.text
