"""Rate limits from `schedules.yaml`: measured on a real SMTP server, held across runs and
across processes sharing the database."""

from __future__ import annotations

import subprocess
import threading
import time
from collections.abc import Iterator
from contextlib import contextmanager
from datetime import timedelta

import pytest

from campaign.config.schedule import RateLimit
from campaign.devtools.catcher import Catcher, CatchHandler
from campaign.sending.dispatcher import RESERVATION
from campaign.sending.ratelimit import MAX_WAIT, RateLimiter
from campaign.store import Store
from harness.rig import Rig
from harness.schedule import set_yaml_block
from harness.smtp import FaultServer


def rig_with(schedule_copy, tmp_path, limits: str) -> Rig:
    set_yaml_block(schedule_copy.path, "rate_limit", limits)
    return Rig(schedule_copy.path, tmp_path / "campaign.db")


EMAILS = [f"lead{n:02d}@example.com" for n in range(40)]


@contextmanager
def paced_at_twenty(schedule_copy, tmp_path) -> Iterator[tuple[Rig, Catcher]]:
    """40 leads due at `per_second: 20`, and a catcher that checks, once they are in, that
    no one-second window held more than 20 of them (plus one for timer granularity)."""
    rig = rig_with(schedule_copy, tmp_path, "  per_second: 20")
    rig.add(*EMAILS)
    arrivals: list[float] = []
    handler = CatchHandler(on_message=lambda _: arrivals.append(time.monotonic()))
    with Catcher(handler) as catcher:
        yield rig, catcher
        assert sorted(m.recipients[0] for m in catcher.messages) == EMAILS
    for index, start in enumerate(arrivals):
        in_window = [t for t in arrivals[index:] if t - start < 1.0]
        assert len(in_window) <= 21, f"{len(in_window)} messages within one second"


@pytest.mark.slow
def test_per_second_limit_is_the_rate_really_sent_at(schedule_copy, tmp_path) -> None:
    with paced_at_twenty(schedule_copy, tmp_path) as (rig, catcher):
        started = time.monotonic()
        # Two runs, like two scheduler ticks: the pacing carries over from one to the next.
        first = rig.run(catcher.port, max_messages=15)
        second = rig.run(catcher.port)
        elapsed = time.monotonic() - started
        assert (first.sent, second.sent) == (15, 25)
    assert elapsed >= 1.9, f"40 messages at 20/s took only {elapsed:.2f} s"
    assert elapsed < 6, f"40 messages at 20/s took {elapsed:.2f} s: far slower than the limit"


def test_per_second_pacing_sleeps_only_through_the_injected_function(tmp_path) -> None:
    clock = [1_800_000_000.0]
    slept: list[float] = []

    def sleep(seconds: float) -> None:
        slept.append(seconds)
        clock[0] += seconds

    store = Store.open(f"sqlite:///{tmp_path / 'campaign.db'}")
    limiter = RateLimiter(store, sleep=sleep, wall=lambda: clock[0])
    limits = RateLimit(per_second=4)
    for _ in range(9):
        assert limiter.acquire(limits, now=None) is None  # type: ignore[arg-type]
    assert slept == [pytest.approx(0.25)] * 8
    clock[0] += 10  # a quiet spell does not bank a burst
    assert limiter.acquire(limits, now=None) is None  # type: ignore[arg-type]
    assert limiter.acquire(limits, now=None) is None  # type: ignore[arg-type]
    assert slept[-1] == pytest.approx(0.25) and len(slept) == 9
    # A limit slower than MAX_WAIT pauses the run rather than blocking it.
    slow = RateLimit(per_second=1 / (MAX_WAIT * 4))
    assert limiter.acquire(slow, now=None) is None  # type: ignore[arg-type]
    reason = limiter.acquire(slow, now=None)  # type: ignore[arg-type]
    assert reason and "per_second" in reason
    assert max(slept) <= MAX_WAIT
    store.close()


@pytest.mark.slow
def test_per_second_is_one_cadence_for_every_worker_on_the_database(
    schedule_copy, tmp_path
) -> None:
    """Rate limits belong to the SMTP account: a second worker process sending at the same
    time shares the same `per_second`, it does not add its own."""
    with paced_at_twenty(schedule_copy, tmp_path) as (rig, catcher):
        other: list[subprocess.CompletedProcess] = []
        worker = threading.Thread(target=lambda: other.append(rig.send_due(catcher.port)))
        worker.start()
        here = rig.run(catcher.port)
        worker.join(timeout=60)
        assert not worker.is_alive() and other[0].returncode == 0, other
    assert here.sent > 0 and f"sent {40 - here.sent}," in other[0].stdout, other[0].stdout


@pytest.mark.slow
def test_a_pool_of_connections_takes_per_second_turns_instead_of_pausing(
    schedule_copy, tmp_path
) -> None:
    """Ten connections at 1.7 messages a second: each waits for its own turn in order. Were
    they all to book at once, the tenth slot would lie past MAX_WAIT and read as a limit
    that stops the run."""
    rig = rig_with(schedule_copy, tmp_path, "  per_second: 1.7")
    rig.connections = 10
    rig.add(*(f"lead{n:03d}@example.com" for n in range(10 * RESERVATION)))  # rows for all
    with FaultServer() as server:
        report = rig.run(server.port, max_messages=10)
    assert (report.sent, report.paused, report.stopped) == (10, None, None), report
    assert len(server.messages) == 10


def test_per_hour_budget_pauses_the_run_and_the_rest_goes_out_later(
    schedule_copy, tmp_path
) -> None:
    rig = rig_with(schedule_copy, tmp_path, "  per_hour: 5")
    emails = [f"lead{n:02d}@example.com" for n in range(12)]
    rig.add(*emails)
    with FaultServer() as server:
        report = rig.run(server.port)
        assert report.sent == 5 and report.stopped is None, report
        assert report.paused and "per_hour" in report.paused, report
        waiting = [e for e in emails if rig.row(e)["status"] == "pending"]
        assert len(waiting) == 7
        assert all(rig.row(e)["attempts"] == 0 for e in waiting), "nothing is claimed"
        rig.clock.advance(timedelta(minutes=30))
        assert rig.run(server.port).sent == 0, "the budget is an hour wide"
        rig.clock.advance(timedelta(minutes=31))
        assert rig.run(server.port).sent == 5
        rig.clock.advance(timedelta(minutes=61))
        last = rig.run(server.port)
        assert last.sent == 2 and last.paused is None, last
        assert sorted(m.recipients[0] for m in server.messages) == emails


@pytest.mark.slow
def test_budget_is_shared_with_another_process_on_the_same_database(
    schedule_copy, tmp_path
) -> None:
    rig = rig_with(schedule_copy, tmp_path, "  per_minute: 6")
    emails = [f"lead{n:02d}@example.com" for n in range(10)]
    rig.add(*emails)
    with FaultServer() as server:
        assert rig.run(server.port, max_messages=4).sent == 4
        result = rig.send_due(server.port)
        assert result.returncode == 0, (result.stdout, result.stderr)
        assert "sent 2," in result.stdout, result.stdout
        assert "per_minute" in result.stdout, result.stdout
        assert len(server.messages) == 6


def test_connection_is_renewed_every_per_connection_messages(schedule_copy, tmp_path) -> None:
    rig = rig_with(schedule_copy, tmp_path, "  per_connection: 3")
    rig.add(*(f"lead{n}@example.com" for n in range(7)))
    with FaultServer() as server:
        assert rig.run(server.port).sent == 7
        assert server.handler.commands.count("EHLO") == 3  # 3 + 3 + 1
