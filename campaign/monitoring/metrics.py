"""The campaign's numbers in the Prometheus format, read from the database at scrape time.

The web process that serves /metrics sends nothing: the senders are other processes,
perhaps on other machines. So nothing is counted in this process's memory; each scrape
asks the database, through `campaign_status` (the numbers `status` prints) and the run tally
the senders keep (`store.health`), and the registry is our own, not prometheus_client's
process-global one. A database that cannot be read is `campaign_database_up 0`, not an
error page: the scrape itself still succeeds and says what is wrong.
"""

from __future__ import annotations

import logging
from collections.abc import Callable, Iterator, Sequence
from datetime import datetime
from typing import Any

from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily, Metric
from prometheus_client.registry import CollectorRegistry

from campaign.config.schedule import Schedule, ScheduleError
from campaign.model import Clock, DeliveryStatus
from campaign.monitoring.status import DELIVERY_COLUMNS, INBOUND_COLUMNS, campaign_status
from campaign.rendering.renderer import Renderer, TemplateProblem
from campaign.sending.breaker import Breaker
from campaign.store import DatabaseError, Store

log = logging.getLogger("campaign.monitoring.metrics")


class CampaignCollector:
    """A prometheus_client collector: every number read fresh from the store when scraped.

    `schedules` gives the series to report (each its `series` label) as last compiled;
    `check` raises when the files on disk are broken now (`campaign_schedule_valid 0`).
    """

    def __init__(
        self,
        store: Store,
        schedules: Callable[[], Sequence[Schedule]],
        check: Callable[[], object],
        clock: Clock,
    ):
        self.store = store
        self.schedules = schedules
        self.check = check
        self.clock = clock

    def collect(self) -> Iterator[Metric]:
        valid = "1 when the schedule and templates on disk compile."
        yield _gauge("campaign_schedule_valid", valid, self._valid())
        try:
            families = list(self._from_database())
            up = 1
        except DatabaseError as exc:
            log.error("metrics: the database cannot be read: %s", exc)
            families, up = [], 0
        yield _gauge("campaign_database_up", "1 when the database could be read.", up)
        yield from families

    def _valid(self) -> int:
        try:
            self.check()
        except (ScheduleError, TemplateProblem):
            return 0
        return 1

    def _series(self) -> Sequence[Schedule]:
        """The series as last compiled; none while nothing has ever compiled."""
        try:
            return self.schedules()
        except (ScheduleError, TemplateProblem):
            return []

    def _from_database(self) -> Iterator[Metric]:
        now = self.clock()
        schedules = self._series()
        snapshots = [campaign_status(self.store, schedule) for schedule in schedules]
        yield from _per_step(snapshots)
        yield from _queue(self.store, schedules, snapshots, now)
        if snapshots:  # leads and suppressions are the database's, not one series'
            yield _labelled("campaign_leads", "Leads by status.", "status", snapshots[0]["leads"])
            yield _labelled(
                "campaign_suppressed_addresses",
                "Addresses on the suppression list, by reason.",
                "reason",
                snapshots[0]["suppressed"],
            )
        yield from _runs(self.store, now)
        open_ = Breaker(self.store).holding(now) is not None
        yield _gauge(
            "campaign_sender_breaker_open",
            "1 while the sender backs off from a failing SMTP relay (the circuit breaker).",
            int(open_),
        )


def campaign_registry(
    store: Store,
    renderer: Callable[[], Renderer],
    current: Callable[[], Renderer],
    clock: Clock,
) -> CollectorRegistry:
    """A registry of our own holding only the campaign's collector: the series as
    `renderer` last compiled them, their validity as `current` finds the files now."""
    registry = CollectorRegistry(auto_describe=False)
    registry.register(CampaignCollector(store, lambda: [renderer().schedule], current, clock))
    return registry


def _gauge(name: str, documentation: str, value: float) -> GaugeMetricFamily:
    return GaugeMetricFamily(name, documentation, value=value)


def _labelled(name: str, documentation: str, label: str, counts: dict[str, int]) -> Metric:
    family = GaugeMetricFamily(name, documentation, labels=[label])
    for key, count in sorted(counts.items()):
        family.add_metric([key], count)
    return family


def _per_step(snapshots: list[dict[str, Any]]) -> Iterator[Metric]:
    deliveries = GaugeMetricFamily(
        "campaign_deliveries",
        "Deliveries by series, step and current status (unknown: in doubt, never resent).",
        labels=["series", "step", "status"],
    )
    came_back = {
        column: CounterMetricFamily(
            f"campaign_{column}_total",
            f"{column.capitalize()} that came back about a step (inbound mail, webhooks).",
            labels=["series", "step"],
        )
        for column in INBOUND_COLUMNS
    }
    for snapshot in snapshots:
        for row in snapshot["steps"]:
            labels = [snapshot["campaign"], row["step"]]
            for status in DELIVERY_COLUMNS:
                deliveries.add_metric([*labels, status], row[status])
            for column, family in came_back.items():
                family.add_metric(labels, row[column])
    yield deliveries
    yield from came_back.values()


def _queue(
    store: Store, schedules: Sequence[Schedule], snapshots: list[dict[str, Any]], now: datetime
) -> Iterator[Metric]:
    depth = GaugeMetricFamily(
        "campaign_queue_pending", "Deliveries waiting to be sent, due or not.", labels=["series"]
    )
    oldest = GaugeMetricFamily(
        "campaign_queue_oldest_due_age_seconds",
        "How long the oldest due email has waited past its due time (0: none is due).",
        labels=["series"],
    )
    for schedule, snapshot in zip(schedules, snapshots, strict=True):
        series = schedule.campaign.id
        depth.add_metric([series], sum(row[DeliveryStatus.PENDING] for row in snapshot["steps"]))
        due = store.queue.next_due_at(series)
        waited = (now - due).total_seconds() if due is not None and due <= now else 0.0
        oldest.add_metric([series], waited)
    yield depth
    yield oldest


def _runs(store: Store, now: datetime) -> Iterator[Metric]:
    runs = store.health.runs()
    yield CounterMetricFamily(
        "campaign_runs_total", "Sending runs completed, by every worker.", value=runs.count
    )
    yield CounterMetricFamily(
        "campaign_run_seconds_total", "Time spent in completed sending runs.", value=runs.seconds
    )
    if runs.last is None:
        return
    yield _gauge(
        "campaign_last_run_duration_seconds", "How long the last run took.", runs.last.seconds
    )
    yield _gauge(
        "campaign_last_run_age_seconds",
        "Time since the last run finished.",
        (now - runs.last.finished_at).total_seconds(),
    )
    yield _gauge(
        "campaign_last_run_timestamp_seconds",
        "When the last run finished (Unix time).",
        runs.last.finished_at.timestamp(),
    )
