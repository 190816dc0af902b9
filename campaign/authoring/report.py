"""The funnel report: per step, how many emails went out, who clicked, who left and who booked.

Sent, failed, clicked, scanned and converted per step come from `campaign_status`
(monitoring), the one source for those counts: clicks count leads, not clicks, people
(`clicked`) and link scanners (`scanned`) apart; a conversion is credited to the step the
store attributes it to, and only people convert. Unsubscribes are credited here to the last
email the lead had been sent before leaving (`leads.status_at`), the email that made them
leave. Anything that happened before the first email is shown on a line of its own. A step
with a subject test also has its variants, each judged against A (`subject_test`). Every
query only reads.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from datetime import datetime
from typing import Any

from campaign.authoring.subject_test import VariantResult, judge
from campaign.config.schedule import Schedule, Step
from campaign.monitoring.status import campaign_status
from campaign.pages import PAGES
from campaign.store import Store
from campaign.store.reads import VariantTally

BEFORE_FIRST = "(before the first email)"
# progress ticks: status, enrolled, unsubscribes, unattributed conversions, subject variants
STAGES = 5
# Per step, in order. `clicked`: leads who clicked (people); `scanned`: leads whose links a
# link scanner opened (`web.scanners`).
METRICS = ("sent", "clicked", "scanned", "unsubscribed", "converted", "failed")
# Mail that came back about the step (`campaign.inbound`, webhooks): in `--json` and the HTML
# page per step, and in total under the terminal table, which keeps to 80 columns.
CAME_BACK = ("bounces", "complaints", "replies")


@dataclass(frozen=True)
class StepFunnel:
    step: str
    number: int | None  # place in the schedule; None for a step since removed
    subject: str
    sent: int
    clicked: int
    scanned: int
    unsubscribed: int
    converted: int
    failed: int
    bounces: int = 0
    complaints: int = 0
    replies: int = 0
    # A subject test's variants, A first; empty for a step with one subject.
    variants: tuple[VariantResult, ...] = ()

    @property
    def click_rate(self) -> float:
        return self.clicked / self.sent if self.sent else 0.0


@dataclass(frozen=True)
class Funnel:
    campaign_id: str
    name: str
    enrolled: int
    steps: list[StepFunnel]
    generated_at: datetime

    def total(self, metric: str) -> int:
        return sum(getattr(step, metric) for step in self.steps)

    def as_json(self) -> dict[str, Any]:
        """For `report --json`: the same numbers as the table, per step and in total."""
        return {
            "campaign": self.campaign_id,
            "name": self.name,
            "enrolled": self.enrolled,
            "generated_at": self.generated_at.isoformat(),
            "steps": [
                {"step": s.step, "number": s.number, "subject": s.subject}
                | {metric: getattr(s, metric) for metric in (*METRICS, *CAME_BACK)}
                | {"variants": [variant.as_json() for variant in s.variants]}
                for s in self.steps
            ],
            "total": {metric: self.total(metric) for metric in (*METRICS, *CAME_BACK)},
        }


def _variants(step: Step | None, tallies: list[VariantTally]) -> tuple[VariantResult, ...]:
    """A step's subject test as the report shows it; none for a step with one subject."""
    if step is None or len(step.subjects) < 2:
        return ()
    counts = {t.variant: t for t in tallies if t.step_id == step.id}
    return judge([variant.text for variant in step.subjects], counts)


def _unsubscribes(store: Store, campaign_id: str) -> dict[str, int]:
    """Unsubscribed leads per step: the last email sent to them before they left."""
    counts: dict[str, int] = {}
    for gone in store.reads.departures(campaign_id):
        moment = gone.left_at
        before = [step for at, step in gone.sent if moment is None or at <= moment]
        step = before[-1] if before else BEFORE_FIRST
        counts[step] = counts.get(step, 0) + 1
    return counts


def build_funnel(
    store: Store, schedule: Schedule, now: datetime, progress: Callable[[int], None] | None = None
) -> Funnel:
    """Read the funnel of `schedule`'s campaign from the store (nothing is written)."""
    tick = progress or (lambda _n: None)
    campaign_id = schedule.campaign.id
    status = campaign_status(store, schedule)
    tick(1)
    enrolled = store.reads.count_enrolled(campaign_id)
    tick(1)
    unsubscribed = _unsubscribes(store, campaign_id)
    tick(1)
    unattributed = store.reads.unattributed_conversions(campaign_id)
    tick(1)
    tallies = store.reads.variant_counts(campaign_id)
    tick(1)
    numbers = {step.id: i for i, step in enumerate(schedule.steps, 1)}
    steps = [
        StepFunnel(
            row["step"],
            numbers.get(row["step"]),
            schedule.steps_by_id[row["step"]].first_subject if row["step"] in numbers else "",
            row["sent"],
            row["clicked"],
            row["scanned"],
            unsubscribed.get(row["step"], 0),
            row["converted"],
            row["failed"],
            row["bounces"],
            row["complaints"],
            row["replies"],
            _variants(schedule.steps_by_id.get(row["step"]), tallies),
        )
        for row in status["steps"]
    ]
    if unsubscribed.get(BEFORE_FIRST) or unattributed:
        steps.append(
            StepFunnel(
                BEFORE_FIRST, None, "", 0, 0, 0, unsubscribed.get(BEFORE_FIRST, 0), unattributed, 0
            )
        )
    return Funnel(campaign_id, schedule.campaign.name, enrolled, steps, now)


# -- HTML ----------------------------------------------------------------------------------


@dataclass(frozen=True)
class Bar:
    """One row of the funnel chart, already laid out (SVG user units)."""

    label: str
    value: int
    x: float
    y: float
    width: float
    css: str


def funnel_bars(funnel: Funnel, width: float = 560, row: float = 44) -> list[Bar]:
    """Enrolled, then each step's sent, then converted: centred bars narrowing like a funnel."""
    rows = [("Enrolled", funnel.enrolled, "enrolled")]
    rows += [(f"{s.number}. {s.step}", s.sent, "step") for s in funnel.steps if s.number]
    rows.append(("Converted", funnel.total("converted"), "converted"))
    scale = max(value for _label, value, _css in rows) or 1
    bars = []
    for index, (label, value, css) in enumerate(rows):
        size = max(width * value / scale, 2.0)
        bars.append(Bar(label, value, (width - size) / 2, index * row, size, css))
    return bars


def render_html(funnel: Funnel) -> str:
    """One self-contained page: inline CSS and SVG, no script, no external resource."""
    bars = funnel_bars(funnel)
    return PAGES.get_template("report.html.j2").render(
        funnel=funnel, metrics=(*METRICS, *CAME_BACK), bars=bars, chart_height=len(bars) * 44
    )
