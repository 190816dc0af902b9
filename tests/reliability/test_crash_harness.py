"""Crash safety, proven on the real thing: `run.py send-due` in a subprocess, SIGKILLed at
random points against a real SMTP server, restarted each time; then the SMTP server itself
killed mid-run; then the database turning read-only or full mid-run.

The verdict always comes from what the SMTP server received, never from the engine's own
account: no lead gets a step twice, every lead gets it or it is reported `unknown`, each
kill leaves at most one delivery in doubt, nothing unsent is marked sent, and the SQLite
file passes `PRAGMA integrity_check`.
"""

from __future__ import annotations

import mailbox
import os
import random
import signal
import socket
import sqlite3
import subprocess
import threading
import time
from collections import Counter
from datetime import timedelta
from email.utils import parseaddr
from pathlib import Path

import pytest
from sqlalchemy import event, select
from sqlalchemy.exc import OperationalError

from campaign.devtools.catcher import Catcher, CatchHandler, Caught, free_port
from campaign.leads.intake import import_csv
from campaign.sending.breaker import BREAKER_FIRST
from campaign.sending.dispatcher import DEFAULT_LEASE
from campaign.store import Store
from campaign.store.schema import deliveries, leads
from harness.cli import start_run_py
from harness.clock import T0
from harness.db import integrity
from harness.mail import step_of
from harness.rig import Rig
from harness.schedule import set_yaml_block

pytestmark = pytest.mark.slow  # real processes, killed and restarted

LEADS = 300
MIN_KILLS = 20
TIMER_ROUND_CAP = 12  # messages: 20 rounds x 12 < LEADS
SEED = int(os.environ.get("CRASH_SEED", time.time_ns() % 1_000_000))


class KillSwitch:
    """Counts messages as the server accepts them and, when armed, kills the sender at the
    chosen one: inside the DATA handler (the message is in, the reply never leaves) or just
    after it (the sender is somewhere in its bookkeeping or the next transaction)."""

    def __init__(self) -> None:
        self.count = 0
        self.fired = threading.Event()
        self._lock = threading.Lock()
        self._target: tuple[int, int, bool] | None = None  # pid, message count, in DATA

    def arm(self, pid: int, after: int, in_data: bool) -> None:
        with self._lock:
            self.fired.clear()
            self._target = (pid, self.count + after, in_data)

    def disarm(self) -> None:
        with self._lock:
            self._target = None

    def on_message(self, _caught: Caught) -> None:
        with self._lock:
            self.count += 1
            if self._target is None or self.count < self._target[1]:
                return
            pid, _, in_data = self._target
            self._target = None
            if in_data:
                os.kill(pid, signal.SIGKILL)
            self.fired.set()


def received_step(caught: Caught) -> tuple[str, str]:
    return caught.recipients[0], step_of(caught.message)


def delivery_rows(store: Store) -> list[dict]:
    with store.db.engine.connect() as conn:
        rows = (
            conn.execute(
                select(
                    leads.c.email, deliveries.c.step_id, deliveries.c.status, deliveries.c.attempts
                )
                .join(leads, leads.c.id == deliveries.c.lead_id)
                .order_by(deliveries.c.id)
            )
            .mappings()
            .all()
        )
    return [dict(r) for r in rows]


@pytest.fixture
def harness(schedule_copy, tmp_path) -> Rig:
    # Paced a little, so kills land between messages as well as inside them.
    set_yaml_block(schedule_copy.path, "rate_limit", "  per_second: 100\n  per_connection: 50")
    rig = Rig(schedule_copy.path, tmp_path / "campaign.db")
    csv_path = tmp_path / "leads.csv"
    csv_path.write_text(
        "email,first_name\n" + "".join(f"lead{n:03d}@example.com,Lead{n}\n" for n in range(LEADS)),
        encoding="utf-8",
    )
    report = import_csv(rig.store, rig.schedule, csv_path, T0)
    assert report.imported == LEADS, report
    return rig


def send_due(rig: Rig, port: int, at, log: Path) -> subprocess.Popen:
    with log.open("ab") as out:
        return rig.start_send_due(port, at, out)


def test_sigkill_at_random_points_never_doubles_or_loses_a_message(harness: Rig, tmp_path) -> None:
    rng = random.Random(SEED)
    switch = KillSwitch()
    log = tmp_path / "send-due.log"
    kills = rounds = 0
    started = time.monotonic()
    with Catcher(CatchHandler(on_message=switch.on_message)) as catcher:
        while kills < MIN_KILLS:
            rounds += 1
            assert rounds <= 3 * MIN_KILLS, f"seed {SEED}: only {kills} kills in {rounds} runs"
            assert switch.count < LEADS, f"seed {SEED}: all sent after only {kills} kills"
            proc = send_due(harness, catcher.port, T0, log)
            try:
                mode = rng.choice(("in-data", "after-message", "after-message", "timer"))
                if mode == "timer":  # anywhere: start-up, claiming, rendering, sending
                    # A fast machine could send the whole batch before the timer; the cap keeps
                    # every round to a few messages, so twenty kills always fit in the batch.
                    switch.arm(proc.pid, TIMER_ROUND_CAP, in_data=True)
                    try:
                        proc.wait(timeout=rng.uniform(0.3, 1.5))
                    except subprocess.TimeoutExpired:
                        proc.send_signal(signal.SIGKILL)
                else:
                    switch.arm(proc.pid, rng.randint(1, 8), in_data=mode == "in-data")
                    deadline = time.monotonic() + 30
                    while not switch.fired.wait(0.01) and proc.poll() is None:
                        assert time.monotonic() < deadline, "send-due neither sent nor exited"
                    if switch.fired.is_set() and mode == "after-message":
                        time.sleep(rng.uniform(0, 0.01))  # a random point before the next one
                        proc.send_signal(signal.SIGKILL)
                proc.wait(timeout=30)
            finally:
                switch.disarm()
                if proc.poll() is None:
                    proc.kill()
                    proc.wait()
            kills += proc.returncode == -signal.SIGKILL
        # One clean run finishes the batch; one after the lease reports what is in doubt.
        for at in (T0, T0 + DEFAULT_LEASE + timedelta(minutes=1)):
            proc = send_due(harness, catcher.port, at, log)
            assert proc.wait(timeout=60) == 0, log.read_text()[-3000:]
        received = [received_step(m) for m in catcher.messages]
    elapsed = time.monotonic() - started

    context = f"seed {SEED}, {kills} kills in {rounds} runs, {elapsed:.0f} s"
    twice = [key for key, n in Counter(received).items() if n > 1]
    assert not twice, f"{context}: sent twice: {twice}"
    assert {step for _, step in received} == {"mechanisms"}, context
    got = {email for email, _ in received}
    rows = [r for r in delivery_rows(harness.store) if r["step_id"] == "mechanisms"]
    assert len(rows) == LEADS, context
    status = {r["email"]: r["status"] for r in rows}
    assert set(status.values()) <= {"sent", "unknown"}, f"{context}: {Counter(status.values())}"
    lost = [e for e, s in status.items() if e not in got and s != "unknown"]
    assert not lost, f"{context}: neither received nor reported unknown: {lost}"
    false_sent = [e for e, s in status.items() if s == "sent" and e not in got]
    assert not false_sent, f"{context}: marked sent but never received: {false_sent}"
    in_doubt = sum(s == "unknown" for s in status.values())
    assert in_doubt <= kills, f"{context}: {in_doubt} deliveries in doubt"
    # Every lead, delivered or in doubt, moves on to step 2 - planned once.
    following = [r for r in delivery_rows(harness.store) if r["step_id"] == "pain-types"]
    assert sorted(r["email"] for r in following) == sorted(status), context
    assert integrity(harness.db_path) == "ok", context
    assert elapsed < 150, f"{context}: the harness is too slow for CI"


# --- the SMTP server killed and restarted mid-run -----------------------------------------


def start_catcher(port: int, maildir: Path, log: Path) -> subprocess.Popen:
    with log.open("ab") as out:
        proc = start_run_py("catcher", "--port", str(port), "--maildir", str(maildir), output=out)
    deadline = time.monotonic() + 20
    while True:
        try:
            with socket.create_connection(("127.0.0.1", port), timeout=1) as probe:
                if probe.recv(3) == b"220":
                    return proc
        except OSError:
            pass
        assert proc.poll() is None, log.read_text()
        assert time.monotonic() < deadline, "the catcher did not start"
        time.sleep(0.05)


def test_smtp_server_killed_and_restarted_mid_run(schedule_copy, tmp_path) -> None:
    set_yaml_block(schedule_copy.path, "rate_limit", "  per_connection: 100")
    rig = Rig(schedule_copy.path, tmp_path / "campaign.db")
    emails = [f"lead{n:02d}@example.com" for n in range(30)]
    rig.add(*emails)
    port, maildir, log = free_port(), tmp_path / "maildir", tmp_path / "catcher.log"
    server = start_catcher(port, maildir, log)
    killed = []

    def kill_after_ten() -> bool:
        """Called between messages: the server dies with our connection to it open."""
        if not killed and len(mailbox.Maildir(maildir)) >= 10:
            server.send_signal(signal.SIGKILL)
            server.wait()
            killed.append(True)
        return False

    try:
        report = rig.engine(port).send_due(stop=kill_after_ten)
        assert killed and report.sent == 10, report
        # The open connection is found dead, then the server is unreachable: the run stops,
        # no message spends an attempt, and sending waits for the circuit breaker.
        assert report.retried == 0 and report.stopped, report
        assert "cannot be reached" in report.stopped
        waiting = [e for e in emails if rig.row(e)["status"] == "pending"]
        assert len(waiting) == 20
        assert all(rig.row(e)["attempts"] == 0 for e in waiting)
        server = start_catcher(port, maildir, log)
        assert rig.run(port).sent == 0, "the breaker is open: nothing is tried before it closes"
        rig.clock.advance(BREAKER_FIRST)
        report = rig.run(port)
        assert report.sent == 20 and report.stopped is None, report
    finally:
        server.kill()
        server.wait()
    received = Counter(parseaddr(m["To"])[1] for m in mailbox.Maildir(maildir))
    assert sorted(received) == emails, received
    assert set(received.values()) == {1}, "a message was delivered twice"
    assert all(rig.row(e)["status"] == "sent" for e in emails)
    assert {rig.row(e)["attempts"] for e in waiting} == {1}


# --- the database turning read-only or full mid-run ----------------------------------------


@pytest.mark.parametrize("fault", ["read-only", "disk-full"])
def test_database_failing_mid_run_never_marks_unsent_mail_sent(
    schedule_copy, tmp_path, fault: str
) -> None:
    set_yaml_block(schedule_copy.path, "rate_limit", "  per_connection: 100")
    rig = Rig(schedule_copy.path, tmp_path / "campaign.db")
    emails = [f"lead{n:03d}@example.com" for n in range(120)]
    rig.add(*emails)
    # On every connection the store uses: query_only refuses every write; a page cap of 1
    # clamps the file to its current size.
    pragma = {"read-only": "PRAGMA query_only = {}", "disk-full": "PRAGMA max_page_count = {}"}
    on, off = ("1", "0") if fault == "read-only" else ("1", "4294967294")
    used: set[sqlite3.Connection] = set()
    broken = False

    def set_broken(state: bool) -> None:
        nonlocal broken
        broken = state
        for connection in used:
            connection.execute(pragma[fault].format(on if state else off))

    @event.listens_for(rig.store.db.engine, "checkout")
    def _checkout(dbapi_connection, _record, _proxy) -> None:
        used.add(dbapi_connection)
        dbapi_connection.execute(pragma[fault].format(on if broken else off))

    def on_message(_caught: Caught) -> None:
        # The 7th message is in, and the server has not answered yet: the sender is waiting
        # for the reply, outside the database. Now the database fails.
        if len(catcher.messages) == 7:
            set_broken(True)

    catcher = Catcher(CatchHandler(on_message=on_message))
    with catcher:
        with pytest.raises(OperationalError) as caught:
            rig.run(catcher.port)
        words = {"read-only": "readonly", "disk-full": "full"}[fault]
        assert words in str(caught.value), caught.value
        first_run = [m.recipients[0] for m in catcher.messages]
        marked_sent = [e for e in emails if rig.row(e)["status"] == "sent"]
        assert set(marked_sent) <= set(first_run), "marked sent but never received"
        in_flight = [e for e in emails if rig.row(e)["status"] == "sending"]
        assert len(in_flight) <= 1 and len(first_run) - len(marked_sent) <= 1, in_flight
        # The database recovers; after the lease the one in doubt is reported, not resent.
        set_broken(False)
        rig.clock.advance(DEFAULT_LEASE + timedelta(minutes=1))
        report = rig.run(catcher.port)
        assert report.in_doubt == len(in_flight), report
        received = Counter(m.recipients[0] for m in catcher.messages)
    assert set(received.values()) == {1}, "a message was delivered twice"
    for email in emails:
        status = rig.row(email)["status"]
        assert status in ("sent", "unknown"), (email, status)
        assert (email in received) == (status == "sent" or email in first_run), email
    assert integrity(rig.db_path) == "ok"


def test_read_only_database_is_a_clear_error_and_sends_nothing(harness: Rig) -> None:
    before = harness.snapshot()
    harness.store.close()
    read_only = f"sqlite:///file:{harness.db_path}?mode=ro&uri=true"
    with Catcher() as catcher:
        result = harness.send_due(catcher.port, db=read_only)
        assert catcher.messages == []
    assert result.returncode != 0, (result.stdout, result.stderr)
    assert "readonly database" in result.stderr, result.stderr
    assert "Traceback" not in result.stderr, result.stderr
    harness.store = Store.open(harness.url)
    assert harness.snapshot() == before
