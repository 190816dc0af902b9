"""Time under the test's control: the engine reads a clock the test moves by hand, so a run
replays the same way on any day, and waits on real time are bounded and named."""

from __future__ import annotations

import time
from collections.abc import Callable
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta

# Seconds after which a refusal that should be quick counts as hanging. Far above any honest
# run on a loaded, shared machine and far below forever: these checks catch a missing bound,
# they do not measure speed (bench/ does).
NO_HANG = 30.0

# Wednesday 4 March 2026, 10:00 in Chicago: inside the send window, step 1 due at once.
T0 = datetime(2026, 3, 4, 16, 0, tzinfo=UTC)


def utc(year: int, month: int, day: int, hour: int = 0, minute: int = 0) -> datetime:
    return datetime(year, month, day, hour, minute, tzinfo=UTC)


def iso(moment: datetime) -> str:
    return moment.astimezone(UTC).isoformat()


@dataclass
class ManualClock:
    """A clock for the engine (call it for the time) that moves only when the test moves it."""

    now: datetime = T0

    def __call__(self) -> datetime:
        return self.now

    def advance(self, delta: timedelta) -> None:
        self.now += delta


def wait_for(condition: Callable[[], bool], timeout: float, what: str) -> None:
    """Poll a condition until a deadline; fail naming what never happened."""
    deadline = time.monotonic() + timeout
    while not condition():
        assert time.monotonic() < deadline, f"timed out after {timeout:.0f}s waiting for {what}"
        time.sleep(0.01)
