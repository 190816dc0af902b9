"""What monitors read: GET /healthz for load balancers and uptime checks, GET /metrics for
Prometheus.

/healthz needs no token (a load balancer cannot send one) and so says nothing secret: no
address, no setting, no SMTP reply (those are for `status`). It answers 503 when this
service cannot do its work: the database cannot be read, or the schedule on disk is broken
(links keep working on the last good version meanwhile, but signups and the sender wait).
The last run and the circuit breaker are reported, never a reason for 503: the sender is
another process, and a relay that is down is not this service's failure.

/metrics takes the API's bearer token; `CAMPAIGN_METRICS_ADDRESS` serves the same registry
without one on an address of its own (`cli.operations`).
"""

from __future__ import annotations

import logging
from collections.abc import Callable
from dataclasses import dataclass
from datetime import datetime
from typing import Any

from prometheus_client.exposition import choose_encoder
from prometheus_client.registry import CollectorRegistry
from starlette.concurrency import run_in_threadpool
from starlette.requests import Request
from starlette.responses import JSONResponse, Response

from campaign.config.schedule import ScheduleError
from campaign.model import Clock
from campaign.rendering.renderer import Renderer, TemplateProblem
from campaign.sending.breaker import Breaker
from campaign.store import DatabaseError, Store

log = logging.getLogger("campaign.web.health")
_REASON_CHARS = 300  # a database error's first line, enough to tell refused from missing


def _database_problem(exc: Exception) -> str:
    """The driver's own first line (SQLAlchemy's wrapper adds the SQL and a link)."""
    cause = getattr(exc, "orig", None) or exc
    lines = str(cause).strip().splitlines() or [type(cause).__name__]
    return lines[0][:_REASON_CHARS]


@dataclass
class Health:
    """GET /healthz. `current` is the series as its files are now: it raises while an edit
    is broken, where the endpoints' renderer keeps the last good version."""

    store: Store
    current: Callable[[], Renderer]
    clock: Clock

    def healthz(self, _request: Request) -> Response:
        now = self.clock()
        database = self._database()
        schedule = self._schedule()
        ok = database["ok"] and schedule["ok"]
        body: dict[str, Any] = {
            "status": "ok" if ok else "unavailable",
            "checked_at": now.isoformat(),
            "database": database,
            "schedule": schedule,
        }
        if database["ok"]:
            body.update(self._sender(now))
        return JSONResponse(body, 200 if ok else 503, headers={"Cache-Control": "no-store"})

    def _database(self) -> dict[str, Any]:
        try:
            self.store.health.ping()
        except DatabaseError as exc:
            log.error("healthz: the database cannot be read: %s", exc)
            return {"ok": False, "problem": f"cannot be read: {_database_problem(exc)}"}
        return {"ok": True}

    def _schedule(self) -> dict[str, Any]:
        try:
            schedule = self.current().schedule
        except (ScheduleError, TemplateProblem) as exc:
            return {"ok": False, "problem": str(exc)}
        return {"ok": True, "series": [schedule.campaign.id]}

    def _sender(self, now: datetime) -> dict[str, Any]:
        """The runs as the senders recorded them and the breaker's state; read only when the
        database answered, and a failure between the ping and here is reported, not raised."""
        try:
            runs = self.store.health.runs()
            holding = Breaker(self.store).holding(now)
        except DatabaseError as exc:
            log.error("healthz: the runs and the breaker cannot be read: %s", exc)
            return {"runs": None, "last_run": None, "breaker": None}
        last = runs.last
        breaker: dict[str, Any] = {"state": "closed"}
        if holding is not None:
            breaker = {
                "state": "open",
                "failures": holding.failures,
                "since": holding.since.isoformat(),
                "until": holding.until.isoformat(),
            }
        return {
            "runs": runs.count,
            "last_run": None
            if last is None
            else {
                "finished_at": last.finished_at.isoformat(),
                "age_seconds": (now - last.finished_at).total_seconds(),
                "duration_seconds": last.seconds,
            },
            "breaker": breaker,
        }


@dataclass
class Metrics:
    """GET /metrics: the registry in the format the scraper asks for (Prometheus text, or
    OpenMetrics), after `authorize` (the API's bearer token check)."""

    registry: CollectorRegistry
    authorize: Callable[[Request], None]

    async def metrics(self, request: Request) -> Response:
        self.authorize(request)
        encode, content_type = choose_encoder(request.headers.get("accept", ""))
        body = await run_in_threadpool(encode, self.registry)
        return Response(body, headers={"Content-Type": content_type, "Cache-Control": "no-store"})
