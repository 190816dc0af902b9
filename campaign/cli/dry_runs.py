"""The dry runs: `plan` (the store's leads), `simulate` (synthetic leads) and `schedule diff`
(what an edit changes). Each prints what would happen; none sends or changes anything.

Emails are listed as plain aligned lines, so a marketer can read, grep and diff them.
"""

from __future__ import annotations

import math
import sys
from collections.abc import Iterable, Sequence
from datetime import UTC, datetime, timedelta
from pathlib import Path

import click
from rich.console import Console
from rich.table import Table
from rich.text import Text

from campaign.authoring.branches import Behaviour
from campaign.authoring.diff import (
    LeadChange,
    SeriesChange,
    StoreDiff,
    TextChange,
    series_changes,
    store_changes,
    text_changes,
)
from campaign.authoring.timeline import (
    Period,
    PlannedEmail,
    PlanNotes,
    StepBranches,
    branch_counts,
    choose_period,
    plan_view,
    simulate,
    summarise,
    synthetic_leads,
)
from campaign.cli.app import (
    AppContext,
    command,
    console,
    errors,
    existing_store,
    main,
    moment_option,
    now_option,
    progress_bar,
    store_if_any,
)
from campaign.cli.authoring import schedule
from campaign.config.schedule import Schedule, format_delay, load_schedule, variant_name
from campaign.leads.intake import normalize_email
from campaign.model import utc_now

PERIOD = click.Choice(["day", "week"])


class Rate(click.ParamType):
    """A share of the emails, from 0 to 1."""

    name = "RATE"

    def convert(
        self, value: object, param: click.Parameter | None, ctx: click.Context | None
    ) -> float:
        if isinstance(value, float):
            return value
        try:
            rate = float(str(value))
        except ValueError:
            rate = math.nan
        if not 0 <= rate <= 1:  # NaN too
            self.fail(
                f"{value!r} is not a rate; give a share of the emails from 0 to 1, like 0.2 "
                "for one in five",
                param,
                ctx,
            )
        return rate


RATE = Rate()
STEP_COLOURS = ("green", "cyan", "magenta", "yellow", "blue", "red", "bright_green", "bright_cyan")


@command(main, "plan")
@click.option("--lead", "lead_email", default=None, help="Only this lead's emails.")
@click.option(
    "--from",
    "start",
    default=None,
    metavar="DATE",
    callback=moment_option(False),
    help="List emails from this day (YYYY-MM-DD, UTC) or ISO-8601 time.",
)
@click.option(
    "--until",
    default=None,
    metavar="DATE",
    callback=moment_option(True),
    help="List emails up to the end of this day (or this ISO-8601 time).",
)
@now_option("Plan as if it were this moment")
@click.option("--by", type=PERIOD, default=None, help="Summarise per day or per week.")
@click.option(
    "--limit",
    type=click.IntRange(0),
    default=200,
    show_default=True,
    help="List at most this many emails (0: all).",
)
def plan(
    app: AppContext,
    lead_email: str | None,
    start: datetime | None,
    until: datetime | None,
    at: datetime | None,
    by: Period | None,
    limit: int,
) -> None:
    """Every email that would go out: when (UTC and the lead's time), to whom, which step.

    Uses the real planner on the leads in the database. Nothing is sent or changed.
    """
    loaded = app.load()
    campaign_id = loaded.schedule.campaign.id
    now = at or utc_now()
    if lead_email is not None:
        try:
            lead_email = normalize_email(lead_email)
        except ValueError as exc:
            raise click.BadParameter(str(exc), param_hint="--lead") from None
    emails, notes = read_plan(app, loaded.schedule, now, lead_email, start, until)
    if lead_email is not None and not notes.leads:
        errors.print(f"[bold red]no lead {lead_email} in {campaign_id}[/]", highlight=False)
        sys.exit(2)
    whom = lead_email or f"{notes.leads} lead(s)"
    sent = [item for item in emails if not item.skipped]
    console.print(
        f"[bold]{campaign_id}[/]: {len(sent)} email(s) to {whom} from "
        f"{max(now, start or now):%a %Y-%m-%d %H:%M} UTC"
        + (f" to {until:%a %Y-%m-%d %H:%M} UTC" if until else "")
        + " (a dry run: nothing is sent or changed)",
        highlight=False,
    )
    print_emails(console, loaded.schedule, emails, limit)
    print_notes(console, notes)
    print_branch_notes(console, emails)
    if lead_email is None and sent:
        print_summary(console, loaded.schedule, sent, by or choose_period(sent))


def read_plan(
    app: AppContext,
    schedule: Schedule,
    now: datetime,
    email: str | None,
    start: datetime | None,
    until: datetime | None,
) -> tuple[list[PlannedEmail], PlanNotes]:
    """`plan`'s emails from the store, which must exist, with a progress bar while it reads."""
    store = existing_store(app)
    try:
        with progress_bar(
            "planning", store.reads.count_enrolled(schedule.campaign.id, email)
        ) as tick:
            return plan_view(
                store, schedule, now, email=email, start=start, until=until, progress=tick
            )
    finally:
        store.close()


@command(main, "simulate")
@click.option(
    "--leads",
    "count",
    type=click.IntRange(1, 1_000_000),
    default=100,
    show_default=True,
    help="How many synthetic leads sign up.",
)
@click.option(
    "--weeks",
    type=click.IntRange(1, 520),
    default=8,
    show_default=True,
    help="Signups are spread over this many weeks, and emails counted in them.",
)
@click.option("--seed", type=int, default=1, show_default=True, help="Same seed, same leads.")
@click.option(
    "--start",
    default=None,
    metavar="DATE",
    callback=moment_option(False),
    help="The first day (default: today, UTC).",
)
@click.option(
    "--click-rate",
    type=RATE,
    default=0.0,
    show_default=True,
    help="Share of the emails a lead gets that it clicks (0 to 1).",
)
@click.option(
    "--booking-rate",
    type=RATE,
    default=0.0,
    show_default=True,
    help="Share of the emails a lead gets after which it books (0 to 1).",
)
@click.option("--by", type=PERIOD, default=None, help="Summarise per day or per week.")
@click.option(
    "--limit",
    type=click.IntRange(0),
    default=20,
    show_default=True,
    help="Also list the first N emails.",
)
def simulate_command(
    app: AppContext,
    count: int,
    weeks: int,
    seed: int,
    start: datetime | None,
    click_rate: float,
    booking_rate: float,
    by: Period | None,
    limit: int,
) -> None:
    """Try the schedule on synthetic leads across time zones and signup days; no database.

    Each lead clicks an email it gets with --click-rate and books after it (a click on the
    booking link) with --booking-rate; each conditional step is judged on that as it falls
    due, and the branches and subject tests are counted per step.
    """
    loaded = app.load()
    first = start or datetime.combine(utc_now().date(), datetime.min.time(), tzinfo=UTC)
    last = first + timedelta(weeks=weeks)
    leads = synthetic_leads(count, first, weeks, seed)
    behaviour = Behaviour(click_rate, booking_rate, seed)
    with progress_bar("simulating", count) as tick:
        emails = simulate(loaded.schedule, leads, first, last, tick, behaviour)
    sent = [item for item in emails if not item.skipped]
    console.print(
        f"[bold]{loaded.schedule.campaign.id}[/]: {count} synthetic lead(s) signing "
        f"up from {first:%Y-%m-%d} over {weeks} week(s) (seed {seed}), clicking "
        f"{click_rate:.0%} and booking after {booking_rate:.0%} of their emails, get "
        f"{len(sent)} email(s) by {last:%Y-%m-%d}",
        highlight=False,
    )
    if limit:
        print_emails(console, loaded.schedule, emails, limit)
    if sent:
        print_summary(console, loaded.schedule, sent, by or choose_period(sent))
    print_branches(console, loaded.schedule, branch_counts(loaded.schedule, emails))


@command(schedule, "diff")
@click.argument(
    "files", nargs=-1, required=True, type=click.Path(exists=True, dir_okay=False, path_type=Path)
)
@click.option(
    "--db/--no-db",
    "use_db",
    default=None,
    help="Also compare every lead in the database (default: if one exists).",
)
@now_option("Compare as if it were this moment")
@click.option(
    "--limit",
    type=click.IntRange(0),
    default=50,
    show_default=True,
    help="List at most this many lead changes.",
)
def schedule_diff(
    app: AppContext, files: tuple[Path, ...], use_db: bool | None, at: datetime | None, limit: int
) -> None:
    """What an edit changes: `diff NEW` (the schedule in use vs NEW) or `diff OLD NEW`.

    For the series as written (steps added, removed, delays, window, conditions, subject
    tests) and, with a database, for each lead already in the series: who gets a new step,
    loses one, or moves, whose path changes (a step's if:) and who would see another subject.
    """
    if len(files) > 2:
        raise click.UsageError("give NEW, or OLD and NEW")
    old_path, new_path = (app.schedule_path, files[0]) if len(files) == 1 else files
    old_loaded, new_loaded = load_schedule(old_path), load_schedule(new_path)
    old, new = old_loaded.schedule, new_loaded.schedule
    console.print(f"[bold]{old_path} -> {new_path}[/]", highlight=False)
    print_series(console, series_changes(old, new), text_changes(old_loaded, new_loaded))
    store = None if use_db is False else existing_store(app) if use_db else store_if_any(app)
    if store is None:
        console.print("no database: compared the series as written only (--db to require one)")
        return
    try:
        with progress_bar("comparing leads", store.reads.count_enrolled(old.campaign.id)) as tick:
            found = store_changes(store, old, new, at or utc_now(), tick)
    finally:
        store.close()
    print_leads(console, found, limit)


# -- emails ----------------------------------------------------------------------------------


def email_rows(
    schedule: Schedule, emails: Sequence[PlannedEmail], columns: Sequence[str]
) -> list[tuple[str, ...]]:
    """The cells of each row; "if", "variant" and "note" only when `columns` has them."""
    total = len(schedule.steps)
    rows = []
    for item in emails:
        cells = {
            "when (UTC)": f"{item.at:%a %Y-%m-%d %H:%M}" + (" (due now)" if item.overdue else ""),
            "lead's local time": f"{item.local:%a %d %b %H:%M %Z}",
            "to": item.email,
            "step": f"{item.position + 1}/{total} {item.step_id}",
            "if": item.branch.text if item.branch else "",
            "variant": item.variant_name,
            "note": item.note,
            "subject": "(not sent)" if item.skipped else item.subject,
        }
        rows.append(tuple(cells[column] for column in columns))
    return rows


def email_columns(emails: Sequence[PlannedEmail]) -> tuple[str, ...]:
    """The columns of the list: a condition's, a subject test's and a note (a closed day, the
    frequency cap) only when a row has one, so a plain series reads as before."""
    branches = any(item.branch for item in emails)
    variants = any(item.variant is not None for item in emails)
    notes = any(item.note for item in emails)
    return (
        "when (UTC)",
        "lead's local time",
        "to",
        "step",
        *(("if",) if branches else ()),
        *(("variant",) if variants else ()),
        *(("note",) if notes else ()),
        "subject",
    )


def print_emails(
    console: Console, schedule: Schedule, emails: Sequence[PlannedEmail], limit: int | None
) -> None:
    """One plain, aligned line per email (plain so it can be read, grepped and diffed); a
    conditional step says its condition and what is known of it, a subject test the lead's
    variant."""
    shown = emails if not limit else emails[:limit]
    header = email_columns(shown)
    rows = [header, *email_rows(schedule, shown, header)]
    widths = [max(len(row[i]) for row in rows) for i in range(len(header) - 1)]
    for row in rows:
        cells = [cell.ljust(width) for cell, width in zip(row, widths, strict=False)]
        console.print("  ".join([*cells, row[-1]]).rstrip(), markup=False, highlight=False)
    if len(shown) < len(emails):
        console.print(
            f"... and {len(emails) - len(shown)} more (raise --limit to list them)", highlight=False
        )


def print_summary(
    console: Console,
    schedule: Schedule,
    emails: Sequence[PlannedEmail],
    by: Period,
    bar_width: int = 40,
) -> None:
    """Counts per day or week and step, with a stacked bar per period coloured by step."""
    buckets = summarise(emails, by)
    if not buckets:
        return
    step_ids = [step.id for step in schedule.steps]
    colours = {sid: STEP_COLOURS[i % len(STEP_COLOURS)] for i, sid in enumerate(step_ids)}
    table = Table(title=f"Emails per {by} (UTC)", title_justify="left", box=None)
    table.add_column(by)
    for number, _sid in enumerate(step_ids, 1):
        table.add_column(str(number), justify="right", style=colours[_sid])
    table.add_column("total", justify="right", style="bold")
    table.add_column("")
    peak = max(bucket.total for bucket in buckets)
    for bucket in buckets:
        bar = Text()
        for sid in step_ids:
            size = round(bucket.counts[sid] / peak * bar_width)
            bar.append("█" * size, style=colours[sid])
        label = f"{bucket.start:%a %Y-%m-%d}" if by == "day" else f"wk of {bucket.start:%Y-%m-%d}"
        table.add_row(
            label, *(str(bucket.counts[sid] or "") for sid in step_ids), str(bucket.total), bar
        )
    console.print(table)
    legend = Text("steps:")
    for number, sid in enumerate(step_ids, 1):
        legend.append("  ").append(f"{number} {sid}", style=colours[sid])
    console.print(legend)


def print_notes(console: Console, notes: PlanNotes) -> None:
    if notes.inactive:
        console.print(
            f"{notes.inactive} lead(s) are not active (unconfirmed, unsubscribed, "
            "bounced or converted): nothing is planned for them",
            highlight=False,
        )
    if notes.paused:
        console.print(
            f"{notes.paused} lead(s) are paused (`leads resume` lets them go on): nothing "
            "is planned for them",
            highlight=False,
        )
    if notes.in_flight:
        console.print(
            f"{notes.in_flight} lead(s) have an email being sent right now: what "
            "follows is planned when it is confirmed",
            highlight=False,
        )
    if notes.replanned:
        console.print(
            "[yellow]the schedule's timing changed since the leads were planned:[/] "
            "the next send-due replans every lead; the times above are the new plan"
        )
    for problem in notes.disagree[:20]:
        console.print(f"[yellow]store and planner disagree:[/] {problem}", highlight=False)
    if len(notes.disagree) > 20:
        console.print(f"... and {len(notes.disagree) - 20} more disagreements")


def print_branch_notes(console: Console, emails: Sequence[PlannedEmail]) -> None:
    """What `plan` assumes about conditional steps, when it lists any."""
    if not any(item.branch for item in emails):
        return
    skipped = sum(item.skipped for item in emails)
    if skipped:
        console.print(
            f"{skipped} conditional step(s) will be skipped: what the lead did (or its "
            "attributes) already rules them out",
            highlight=False,
        )
    console.print(
        "a conditional step still open is shown at its time as if taken, and the steps after "
        "it counted from it; if it is skipped when it falls due, the next step's delay counts "
        "from the last email actually sent (so it comes earlier than shown)",
        highlight=False,
    )


def print_branches(console: Console, schedule: Schedule, counts: Sequence[StepBranches]) -> None:
    """Per step: leads who got it and who skipped it, what they did, and per subject of a
    subject test how many got it."""
    table = Table(title="Per step (leads)", title_justify="left", box=None)
    for column in ("step", "if", "sent", "skipped", "clicked", "booked", "variants"):
        numeric = column in ("sent", "skipped", "clicked", "booked")
        table.add_column(column, justify="right" if numeric else "left")
    total = len(schedule.steps)
    for count in counts:
        variants = "  ".join(
            f"{variant_name(index)} {count.variants[index]}"
            for index in range(len(schedule.steps[count.position].subjects))
            if len(schedule.steps[count.position].subjects) > 1
        )
        table.add_row(
            f"{count.position + 1}/{total} {count.step_id}",
            count.condition,
            str(count.sent),
            str(count.skipped) if count.condition else "",
            str(count.clicked),
            str(count.booked),
            variants,
        )
    console.print(table)


# -- schedule changes --------------------------------------------------------------------------


def signed_delay(delta: timedelta) -> str:
    sign = "-" if delta < timedelta(0) else "+"
    return sign + format_delay(abs(delta))


def print_series(
    console: Console, changes: Sequence[SeriesChange], texts: Sequence[TextChange] = ()
) -> None:
    """The changes to the series as written, then the text of each email that reads
    differently (a template edit, or a teaser that follows a moved step)."""
    if not changes and not texts:
        console.print(
            "the series is the same (steps, delays, window, conditions, subjects, preheaders, "
            "templates and the text of every email)"
        )
        return
    if changes:
        console.print(f"[bold]{len(changes)} change(s) to the series as written:[/]")
    for change in changes:
        console.print(f"  {change}", markup=False, highlight=False)
    for text in texts:
        console.print(f"text of {text.step}, as a lead reads it:", markup=False, highlight=False)
        for line in text.lines:
            style = "red" if line.startswith("- ") else "green" if line.startswith("+ ") else ""
            console.print(
                f"  {line}", style=style or None, markup=False, highlight=False, soft_wrap=True
            )


BRANCH_KINDS = {
    "path": "the step's condition (if:) changed, so whether these leads get it or skip it "
    "is decided differently when it falls due",
    "variant": "these leads would now see another subject of the step's subject test; "
    "leads who already got the step keep the subject they saw",
}


def _shift_range(changes: Iterable[LeadChange]) -> str:
    shifts = sorted(c.shift for c in changes if c.shift is not None)
    if not shifts:
        return ""
    low, high = signed_delay(shifts[0]), signed_delay(shifts[-1])
    return low if low == high else f"{low} .. {high}"


def print_leads(console: Console, diff: StoreDiff, limit: int) -> None:
    """A count per step and kind of change, then each lead's changes (up to `limit`)."""
    changes = diff.changes
    console.print(f"[bold]{diff.affected} of {diff.leads} lead(s) in the series are affected[/]")
    if not changes:
        return
    groups: dict[tuple[str, str], list[LeadChange]] = {}
    for change in changes:
        groups.setdefault((change.step_id, change.kind), []).append(change)
    table = Table(box=None)
    for column in ("step", "change", "leads", "shift"):
        table.add_column(column, justify="right" if column == "leads" else "left")
    for (step_id, kind), items in groups.items():
        table.add_row(step_id, kind, str(len(items)), _shift_range(items))
    console.print(table)
    for kind in sorted({change.kind for change in changes} & BRANCH_KINDS.keys()):
        console.print(f"{kind}: {BRANCH_KINDS[kind]}", highlight=False)
    for change in changes[:limit]:
        console.print(f"  {describe(change)}", markup=False, highlight=False)
    if len(changes) > limit:
        console.print(f"  ... and {len(changes) - limit} more (raise --limit)")


def describe(change: LeadChange) -> str:
    when = "%a %Y-%m-%d %H:%M UTC"
    if change.kind == "new":
        return f"{change.email}: gets {change.step_id} at {change.new_at:{when}}"
    if change.kind == "lost":
        return f"{change.email}: loses {change.step_id} (was {change.old_at:{when}})"
    if change.kind in BRANCH_KINDS:
        return f"{change.email}: {change.step_id} at {change.new_at:{when}} {change.detail}"
    assert change.shift is not None
    return (
        f"{change.email}: {change.step_id} moves {signed_delay(change.shift)} "
        f"({change.old_at:{when}} -> {change.new_at:{when}})"
    )
