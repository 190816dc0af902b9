"""Rate limits from `schedules.yaml`, held across batches and across processes.

- `per_minute` and `per_hour` are budgets counted in the database (`deliveries.sent_at`,
  indexed), so every process sharing the database spends the same budget and a restart
  forgets nothing. They are counted on the dispatcher's clock, so a replayed calendar
  (`send-due --now`) is limited exactly like a live one. When a budget is spent the run
  pauses (nothing is claimed) and the next run carries on.
- `per_second` spaces messages evenly within this process with a one-token bucket: the
  next message may leave `1 / per_second` seconds after the previous one. Waiting for that
  slot is the only real sleeping the engine does, and it is bounded by `MAX_WAIT`.
  Each worker process paces itself, so N workers send up to N × `per_second`.
- `per_connection` is applied by the SMTP transport, which renews its connection.

Budgets are checked before each claim, so concurrent workers may overshoot a budget by at
most one message each.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from dataclasses import dataclass
from datetime import datetime, timedelta

from .schedule import RateLimit
from .store import Store

MAX_WAIT = 5.0  # seconds; a slower `per_second` pauses the run instead of blocking it
BUDGETS = (("per_minute", timedelta(minutes=1)), ("per_hour", timedelta(hours=1)))


@dataclass
class RateLimiter:
    """Decides, before each claim, whether the next message may go now."""

    store: Store
    sleep: Callable[[float], None] = time.sleep
    monotonic: Callable[[], float] = time.monotonic
    _next_slot: float | None = None

    def acquire(self, limits: RateLimit, now: datetime) -> str | None:
        """Wait for the next message's turn. None: send it; otherwise why the run must pause."""
        for name, window in BUDGETS:
            budget = getattr(limits, name)
            if budget is not None:
                used = self.store.sent_since(now - window)
                if used >= budget:
                    return f"rate limit {name}: {budget} reached ({used} sent), the rest waits"
        if limits.per_second is not None:
            return self._pace(limits.per_second)
        return None

    def _pace(self, per_second: float) -> str | None:
        current = self.monotonic()
        slot = current if self._next_slot is None else max(self._next_slot, current)
        wait = slot - current
        if wait > MAX_WAIT:
            return f"rate limit per_second: next message allowed in {wait:.0f} s"
        if wait > 0:
            self.sleep(wait)
        self._next_slot = slot + 1.0 / per_second
        return None
