"""The command line: what marketers and operators type; each command is a thin shell."""

from __future__ import annotations

import functools
import json
import logging
import signal
import sys
import threading
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import click
from rich.console import Console
from rich.progress import Progress, SpinnerColumn, TextColumn
from rich.table import Table
from sqlalchemy.exc import SQLAlchemyError

from campaign.authoring.preview import SAMPLE_LEAD, write_preview
from campaign.config import settings
from campaign.config.schedule import LoadedSchedule, ScheduleError, load_schedule
from campaign.config.settings import SettingsError, SmtpSettings
from campaign.devtools.catcher import Catcher, CatchHandler, Caught
from campaign.devtools.demo import local_time, run_demo
from campaign.leads.intake import LeadError, add_lead, import_csv, parse_lead
from campaign.monitoring.status import STATUS_COLUMNS, campaign_status
from campaign.rendering.links import LinkSigner
from campaign.rendering.renderer import LeadView, Renderer, TemplateProblem
from campaign.sending.dispatcher import Clock, RunReport
from campaign.sending.runner import Engine, run_forever, utc_now
from campaign.store.queue import Store, StoreError

# Not a terminal (CI logs, pipes): Rich would assume 80 columns and wrap tables; allow wider.
_WIDTH = None if sys.stdout.isatty() else 140
console = Console(soft_wrap=True, width=_WIDTH)
errors = Console(stderr=True, soft_wrap=True, width=_WIDTH)


@dataclass
class AppContext:
    schedule_path: Path
    db_url: str | None

    def load(self) -> LoadedSchedule:
        return load_schedule(self.schedule_path)

    def renderer(self) -> Renderer:
        renderer = Renderer(self.load())
        renderer.compile_all()  # a broken template stops the command before anything happens
        return renderer


@contextmanager
def user_errors() -> Iterator[None]:
    """Turn the errors a user can fix into a clear message and exit code 2, never a traceback."""
    try:
        yield
    except ScheduleError as exc:
        errors.print(f"[bold red]{len(exc.issues)} problem(s) in the schedule:[/]")
        for issue in exc.issues:
            errors.print(f"  {issue}", markup=False, highlight=False)
        sys.exit(2)
    except TemplateProblem as exc:
        errors.print(f"[bold red]template error:[/] {exc}", highlight=False)
        sys.exit(2)
    except SettingsError as exc:
        errors.print(f"[bold red]setting error:[/] {exc}", highlight=False)
        sys.exit(2)
    except SQLAlchemyError as exc:  # the database failed mid-command: disk full, read-only, gone
        errors.print(
            f"[bold red]database error:[/] {getattr(exc, 'orig', None) or exc}. Nothing "
            "unsent was marked sent; a message in flight turns `unknown` after its lease.",
            highlight=False,
        )
        sys.exit(1)


def command(group: click.Group, *args: Any, **kwargs: Any) -> Callable:
    """A subcommand whose user errors are reported plainly."""

    def wrap(func: Callable) -> Callable:
        @functools.wraps(func)
        def run(*a: Any, **kw: Any) -> Any:
            with user_errors():
                return func(*a, **kw)

        return group.command(*args, **kwargs)(click.pass_obj(run))

    return wrap


@click.group(context_settings={"help_option_names": ["-h", "--help"]})
@click.option(
    "--schedule",
    "schedule_path",
    envvar="CAMPAIGN_SCHEDULE",
    default="schedules.yaml",
    show_default=True,
    type=click.Path(path_type=Path),
    help="The campaign's schedule file.",
)
@click.option(
    "--db",
    "db_url",
    envvar="CAMPAIGN_DB",
    default=None,
    help=f"Database URL (default {settings.DEFAULT_DB}; postgresql+psycopg://... to scale).",
)
@click.pass_context
def main(ctx: click.Context, schedule_path: Path, db_url: str | None) -> None:
    """An email nurture campaign engine: a timed drip series from one schedule file."""
    ctx.obj = AppContext(schedule_path, db_url)


@main.group()
def schedule() -> None:
    """Check and compare schedule files."""


@command(schedule, "check")
def schedule_check(app: AppContext) -> None:
    """Validate the schedule and render every step; exit 2 on any problem."""
    renderer = app.renderer()
    sched = renderer.schedule
    console.print(
        f"[green]ok[/] {app.schedule_path}: campaign [bold]{sched.campaign.id}[/], "
        f"{len(sched.steps)} steps, templates in {sched.templates}/"
    )


@command(main, "preview")
@click.option(
    "--out",
    type=click.Path(path_type=Path),
    default=Path("preview"),
    show_default=True,
    help="Folder to write STEP.html, STEP.txt, STEP.eml and index.html into.",
)
@click.option("--lead", "lead_email", default=None, help="Preview for this email address.")
@click.option("--name", default=None, help="Preview with this first name.")
@click.option(
    "--serve", is_flag=True, help="Serve a live preview on 127.0.0.1 instead of writing files."
)
@click.option("--port", type=int, default=8025, show_default=True, help="Port for --serve.")
def preview(
    app: AppContext, out: Path, lead_email: str | None, name: str | None, serve: bool, port: int
) -> None:
    """Write every step, rendered, to files (or --serve them). Nothing is sent."""
    if serve:
        serve_preview(app, port)
        return
    renderer = app.renderer()
    lead = LeadView(
        email=lead_email or SAMPLE_LEAD.email,
        first_name=SAMPLE_LEAD.first_name if name is None else name,
    )
    signer = LinkSigner(settings.base_url(), settings.secret_key(required=False))
    written = write_preview(renderer, out, lead, signer)
    console.print(f"wrote {len(written)} files; open [bold]{out / 'index.html'}[/]")


# -- leads ---------------------------------------------------------------------------------


def open_store(app: AppContext) -> Store:
    try:
        return Store.open(settings.database_url(app.db_url))
    except (SQLAlchemyError, StoreError) as exc:
        raise SettingsError(f"cannot open the database: {exc}") from exc


@main.group("leads")
def leads_group() -> None:
    """Add and import leads (each is enrolled in the campaign at signup)."""


@command(leads_group, "add")
@click.argument("email")
@click.option("--name", "first_name", default="", help="The lead's first name.")
@click.option("--tz", "timezone", default=None, help="IANA time zone, e.g. Europe/Paris.")
@click.option(
    "--attr",
    "attrs",
    multiple=True,
    metavar="KEY=VALUE",
    help="An extra attribute usable in templates (repeatable).",
)
def leads_add(
    app: AppContext, email: str, first_name: str, timezone: str | None, attrs: tuple[str, ...]
) -> None:
    """Add one lead and enroll it in the campaign."""
    loaded = app.load()
    attributes = dict(item.partition("=")[::2] for item in attrs)
    try:
        lead = parse_lead(
            {
                "email": email,
                "first_name": first_name,
                "timezone": timezone,
                "attributes": attributes,
            }
        )
    except LeadError as exc:
        errors.print(f"[bold red]rejected:[/] {exc}", highlight=False)
        sys.exit(2)
    store = open_store(app)
    lead_id, created = add_lead(store, loaded.schedule, lead, utc_now())
    if created:
        console.print(f"added lead {lead_id} <{lead.email}> to {loaded.schedule.campaign.id}")
    else:
        console.print(f"lead {lead_id} <{lead.email}> already exists; nothing changed")


@command(leads_group, "import")
@click.argument("file", type=click.Path(exists=True, dir_okay=False, path_type=Path))
def leads_import(app: AppContext, file: Path) -> None:
    """Import leads from a CSV file with a header row (email, first_name, timezone, ...).

    Bad rows are reported with their line numbers and skipped; the rest are imported.
    Importing the same file again changes nothing.
    """
    loaded = app.load()
    store = open_store(app)
    with Progress(
        SpinnerColumn(),
        TextColumn("{task.description}"),
        TextColumn("{task.completed} rows"),
        console=errors,
        transient=True,
    ) as progress:
        task = progress.add_task(f"importing {file.name}", total=None)
        report = import_csv(
            store, loaded.schedule, file, utc_now(), progress=lambda n: progress.advance(task, n)
        )
    for line, problem in report.rejected[:200]:
        errors.print(f"{file.name}:{line}: {problem}", markup=False, highlight=False)
    if len(report.rejected) > 200:
        errors.print(f"... and {len(report.rejected) - 200} more rejected rows")
    if report.fatal:
        errors.print(f"[bold red]{file.name}: {report.fatal}[/]", highlight=False)
    console.print(
        f"imported {report.imported}, already present {report.already_present}, "
        f"rejected {len(report.rejected)}"
    )
    if report.fatal:
        sys.exit(2)
    if report.rejected:
        sys.exit(1)


# -- sending -------------------------------------------------------------------------------


def engine_for(app: AppContext, store: Store, clock: Clock = utc_now) -> Engine:
    return Engine(
        app.schedule_path,
        store,
        SmtpSettings.from_env(),
        LinkSigner(settings.base_url(), settings.secret_key(required=True)),
        clock=clock,
    )


def print_report(report: RunReport) -> None:
    console.print(
        f"sent {report.sent}, retrying {report.retried}, failed {report.failed} "
        f"(bounced {report.bounced}), cancelled {report.cancelled}, "
        f"in doubt {report.in_doubt}"
    )
    if report.paused:
        console.print(f"paused: {report.paused}", markup=False, highlight=False)
    for error in report.errors[:50]:
        errors.print(f"  {error}", markup=False, highlight=False)


def moment_option(
    end_of_day: bool,
) -> Callable[[click.Context, click.Parameter, str | None], datetime | None]:
    """A click callback reading `2026-03-09` or an ISO-8601 time (UTC unless it says)."""
    from campaign.authoring.timeline import parse_bound

    def convert(_ctx: click.Context, _param: click.Parameter, value: str | None) -> datetime | None:
        try:
            return None if value is None else parse_bound(value, end_of_day=end_of_day)
        except ValueError as exc:
            raise click.BadParameter(str(exc)) from None

    return convert


def now_option(purpose: str) -> Callable:
    """`--now`: act as if it were another moment, to replay or foresee a calendar."""
    return click.option(
        "--now",
        "at",
        default=None,
        metavar="ISO-8601",
        callback=moment_option(False),
        help=f"{purpose} (default: now).",
    )


@command(main, "send-due")
@now_option("Send what is due at this moment, replaying a campaign's calendar")
@click.option("--max", "max_messages", type=int, default=None, help="Stop after this many.")
def send_due(app: AppContext, at: datetime | None, max_messages: int | None) -> None:
    """Send everything due now, once, and exit (non-zero if the run had to stop)."""
    app.renderer()
    store = open_store(app)
    engine = engine_for(app, store, (lambda: at) if at else utc_now)
    report = engine.send_due(max_messages)
    print_report(report)
    if report.stopped:
        errors.print(f"[bold red]stopped:[/] {report.stopped}", highlight=False)
        sys.exit(1)


@command(main, "run")
@click.option(
    "--every",
    "interval",
    type=float,
    default=60.0,
    show_default=True,
    help="Seconds between ticks.",
)
@click.option("--ticks", type=int, default=None, help="Stop after this many ticks.")
def run_scheduler(app: AppContext, interval: float, ticks: int | None) -> None:
    """Run unattended: send what is due every tick until SIGINT/SIGTERM."""
    app.renderer()
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(levelname)s %(name)s %(message)s")
    store = open_store(app)
    engine = engine_for(app, store)

    def tick(stop: Callable[[], bool]) -> None:
        report = engine.send_due(stop=stop)
        if report.sent or report.failed or report.retried or report.stopped:
            logging.getLogger("campaign.sending.runner").info(
                "tick: sent=%d retry=%d failed=%d stopped=%s",
                report.sent,
                report.retried,
                report.failed,
                report.stopped,
            )

    count = run_forever(tick, interval, ticks)
    console.print(f"stopped after {count} tick(s)")


# -- watching ------------------------------------------------------------------------------


@command(main, "status")
@click.option("--json", "as_json", is_flag=True, help="Machine-readable output.")
def status(app: AppContext, as_json: bool) -> None:
    """Per step: sent, pending, failed, unknown, clicked, converted; and leads by status."""
    loaded = app.load()
    store = open_store(app)
    snapshot = campaign_status(store, loaded.schedule)
    if as_json:
        click.echo(json.dumps(snapshot, indent=2, default=str))
        return
    table = Table(title=f"{loaded.schedule.campaign.name} ({loaded.schedule.campaign.id})")
    table.add_column("step")
    for column in STATUS_COLUMNS:
        table.add_column(column, justify="right")
    for row in snapshot["steps"]:
        table.add_row(row["step"], *(str(row[c]) for c in STATUS_COLUMNS))
    console.print(table)
    console.print("leads: " + ", ".join(f"{k} {v}" for k, v in snapshot["leads"].items()))
    for item in snapshot["unknown"]:
        errors.print(
            f"[yellow]in doubt[/] delivery {item['id']} to {item['email']} "
            f"({item['step_id']}), claimed {item['claimed_at']}: not resent",
            highlight=False,
        )


@command(main, "catcher")
@click.option("--port", type=int, default=1025, show_default=True)
@click.option(
    "--maildir",
    type=click.Path(path_type=Path),
    default=Path("outbox"),
    show_default=True,
    help="Where accepted messages are stored (Maildir).",
)
def catcher_command(app: AppContext, port: int, maildir: Path) -> None:
    """A local SMTP server on 127.0.0.1 that keeps every message: try the engine safely."""

    def show(item: Caught) -> None:
        message = item.message
        console.print(
            f"{datetime.now():%H:%M:%S} to {', '.join(item.recipients)}: {message['Subject']}",
            highlight=False,
        )

    with Catcher(CatchHandler(maildir=maildir, on_message=show), port=port) as catcher:
        console.print(f"catching mail on 127.0.0.1:{catcher.port} into {maildir}/ (Ctrl-C to stop)")
        stop = threading.Event()
        for sig in (signal.SIGINT, signal.SIGTERM):
            signal.signal(sig, lambda *_: stop.set())
        stop.wait()


@command(main, "demo")
@click.option(
    "--out",
    type=click.Path(path_type=Path),
    default=Path("demo-out"),
    show_default=True,
    help="Folder for the demo database and the caught emails.",
)
def demo(app: AppContext, out: Path) -> None:
    """Replay the whole series for sample leads through real SMTP, in seconds."""
    app.renderer()
    table = Table(title="Every email, as the local SMTP catcher received it")
    for column in ("#", "sent (UTC)", "lead's local time", "to", "subject"):
        table.add_column(column)
    delivered = run_demo(app.schedule_path, out)
    for number, item in enumerate(delivered, 1):
        table.add_row(
            str(number), f"{item.at:%a %d %b %H:%M}", local_time(item), item.email, item.subject
        )
    console.print(table)
    console.print(
        f"{len(delivered)} emails delivered over real SMTP to a local catcher.\n"
        f"Open them: [bold]{out / 'emails'}/[/] (.eml files open in any mail app); "
        f"Maildir: {out / 'maildir'}; database: {out / 'demo.db'}.\n"
        "Next: python run.py preview, python run.py --help"
    )


# -- web service (lead lifecycle) ----------------------------------------------------------


@command(main, "web")
@click.option("--host", default="127.0.0.1", show_default=True, help="Address to listen on.")
@click.option("--port", type=int, default=8080, show_default=True, help="Port to listen on.")
def web(app: AppContext, host: str, port: int) -> None:
    """Serve signups, unsubscribe, click and booking links (emails point at CAMPAIGN_BASE_URL)."""
    from campaign.web.app import (  # only this command needs the web stack
        create_app,
        serve,
        smtp_mailer,
    )

    app.renderer()
    store = open_store(app)
    engine = engine_for(app, store)
    token = settings.api_token()
    if not engine.signer.base_url.startswith("https://"):
        errors.print(
            f"[yellow]warning:[/] CAMPAIGN_BASE_URL is {engine.signer.base_url}; "
            "mailbox providers offer one-click unsubscribe only for https links",
            highlight=False,
        )
    if token is None:
        errors.print(
            "[yellow]warning:[/] CAMPAIGN_API_TOKEN is not set; POST /leads and "
            "POST /leads/EMAIL/converted answer 503",
            highlight=False,
        )
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(levelname)s %(name)s %(message)s")
    serve(
        create_app(store, engine.renderer, engine.signer, token, utc_now, smtp_mailer(engine.smtp)),
        host,
        port,
    )


# -- marketer tools (plan, simulate, schedule diff, report, new-series, preview --serve) -----


def existing_store(app: AppContext, *, required: bool, migrate: bool = False) -> Store | None:
    """The store if it exists, opened without creating anything: dry runs change nothing.

    `migrate` adds tables a newer engine introduced (only for commands that may write).
    """
    from sqlalchemy.engine import make_url

    url = settings.database_url(app.db_url)
    if url.startswith("sqlite"):
        database = make_url(url).database
        if not database or not Path(database).is_file():
            if not required:
                return None
            raise SettingsError(
                f"no database at {url}: no leads yet (add or import leads, "
                "or try `simulate` to see a schedule on synthetic leads)"
            )
    try:
        return Store.open(url, create=migrate)
    except (SQLAlchemyError, StoreError) as exc:
        raise SettingsError(f"cannot open the database: {exc}") from exc


@contextmanager
def progress_bar(description: str, total: int | None) -> Iterator[Callable[[int], None]]:
    """A progress bar on stderr (nothing is drawn when stderr is not a terminal)."""
    from rich.progress import BarColumn, MofNCompleteColumn, TimeElapsedColumn

    with Progress(
        SpinnerColumn(),
        TextColumn("{task.description}"),
        BarColumn(),
        MofNCompleteColumn(),
        TimeElapsedColumn(),
        console=errors,
        transient=True,
    ) as progress:
        task = progress.add_task(description, total=total)
        yield lambda n: progress.advance(task, n)


PERIOD = click.Choice(["day", "week"])


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
    by: str | None,
    limit: int,
) -> None:
    """Every email that would go out: when (UTC and the lead's time), to whom, which step.

    Uses the real planner on the leads in the database. Nothing is sent or changed.
    """
    from campaign.authoring.timeline import (
        choose_period,
        count_enrolled,
        plan_store,
        print_emails,
        print_notes,
        print_summary,
    )
    from campaign.leads.intake import normalize_email

    loaded = app.load()
    campaign_id = loaded.schedule.campaign.id
    now = at or utc_now()
    if lead_email is not None:
        try:
            lead_email = normalize_email(lead_email)
        except ValueError as exc:
            raise click.BadParameter(str(exc), param_hint="--lead") from None
    store = existing_store(app, required=True)
    try:
        with progress_bar("planning", count_enrolled(store, campaign_id, lead_email)) as tick:
            emails, notes = plan_store(store, loaded.schedule, now, until, lead_email, tick)
    finally:
        store.close()
    if lead_email is not None and not notes.leads:
        errors.print(f"[bold red]no lead {lead_email} in {campaign_id}[/]", highlight=False)
        sys.exit(2)
    emails = [e for e in emails if start is None or e.at >= start]
    whom = lead_email or f"{notes.leads} lead(s)"
    console.print(
        f"[bold]{campaign_id}[/]: {len(emails)} email(s) to {whom} from "
        f"{max(now, start or now):%a %Y-%m-%d %H:%M} UTC"
        + (f" to {until:%a %Y-%m-%d %H:%M} UTC" if until else "")
        + " (a dry run: nothing is sent or changed)",
        highlight=False,
    )
    print_emails(console, loaded.schedule, emails, limit)
    print_notes(console, notes)
    if lead_email is None and emails:
        print_summary(console, loaded.schedule, emails, by or choose_period(emails))


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
    by: str | None,
    limit: int,
) -> None:
    """Try the schedule on synthetic leads across time zones and signup days; no database."""
    from datetime import timedelta

    from campaign.authoring.timeline import (
        choose_period,
        print_emails,
        print_summary,
        simulate,
        synthetic_leads,
    )

    loaded = app.load()
    first = start or datetime.combine(utc_now().date(), datetime.min.time(), tzinfo=UTC)
    last = first + timedelta(weeks=weeks)
    leads = synthetic_leads(count, first, weeks, seed)
    with progress_bar("simulating", count) as tick:
        emails = simulate(loaded.schedule, leads, first, last, tick)
    console.print(
        f"[bold]{loaded.schedule.campaign.id}[/]: {count} synthetic lead(s) signing "
        f"up from {first:%Y-%m-%d} over {weeks} week(s) (seed {seed}) get "
        f"{len(emails)} email(s) by {last:%Y-%m-%d}",
        highlight=False,
    )
    if limit:
        print_emails(console, loaded.schedule, emails, limit)
    if emails:
        print_summary(console, loaded.schedule, emails, by or choose_period(emails))


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

    For the series as written (steps added, removed, delays, window) and, with a database,
    for each lead already in the series: who gets a new step, loses one, or moves.
    """
    from campaign.authoring.diff import print_leads, print_series, series_changes, store_changes
    from campaign.authoring.timeline import count_enrolled

    if len(files) > 2:
        raise click.UsageError("give NEW, or OLD and NEW")
    old_path, new_path = (app.schedule_path, files[0]) if len(files) == 1 else files
    old, new = load_schedule(old_path).schedule, load_schedule(new_path).schedule
    console.print(f"[bold]{old_path} -> {new_path}[/]", highlight=False)
    print_series(console, series_changes(old, new))
    store = None if use_db is False else existing_store(app, required=bool(use_db))
    if store is None:
        console.print("no database: compared the series as written only (--db to require one)")
        return
    try:
        with progress_bar("comparing leads", count_enrolled(store, old.campaign.id)) as tick:
            found = store_changes(store, old, new, at or utc_now(), tick)
    finally:
        store.close()
    print_leads(console, found, limit)


@command(main, "report")
@click.option(
    "--html",
    "html_path",
    type=click.Path(dir_okay=False, path_type=Path),
    default=None,
    help="Also write the report as one self-contained HTML page.",
)
def report_command(app: AppContext, html_path: Path | None) -> None:
    """The funnel per step: sent, clicked, unsubscribed, converted, failed."""
    from campaign.authoring.report import STAGES, build_funnel, print_funnel, render_html

    loaded = app.load()
    store = existing_store(app, required=True, migrate=True)
    try:
        with progress_bar("reading the database", STAGES) as tick:
            funnel = build_funnel(store, loaded.schedule, utc_now(), tick)
    finally:
        store.close()
    print_funnel(console, funnel)
    if html_path is not None:
        html_path.write_text(render_html(funnel), encoding="utf-8")
        console.print(f"wrote [bold]{html_path}[/]", highlight=False)


@command(main, "new-series")
@click.argument("article", type=click.Path(exists=True, dir_okay=False, path_type=Path))
@click.option("--id", "campaign_id", required=True, help="The new campaign's id (a-z, 0-9, -).")
@click.option(
    "--out",
    type=click.Path(file_okay=False, path_type=Path),
    default=Path("."),
    show_default=True,
    help="Where ID.yaml and templates/ID/ are written.",
)
@click.option(
    "--steps",
    type=click.IntRange(1, 20),
    default=4,
    show_default=True,
    help="How many content emails (a booking email follows).",
)
@click.option("--force", is_flag=True, help="Overwrite files that already exist.")
def new_series(
    app: AppContext, article: Path, campaign_id: str, out: Path, steps: int, force: bool
) -> None:
    """Draft a weekly series from an article (.txt, .md or .html), split at its headings.

    Sender, clinic and send window are copied from the schedule in use (--schedule).
    """
    from campaign.authoring.newseries import NewSeriesError, write_series

    try:
        written = write_series(
            article, campaign_id, out, app.schedule_path, steps=steps, force=force
        )
    except NewSeriesError as exc:
        errors.print(f"[bold red]new-series:[/] {exc}", highlight=False)
        sys.exit(2)
    table = Table(title=f"Draft series {campaign_id}: {written.schedule}", title_justify="left")
    for column in ("#", "step", "delay", "subject"):
        table.add_column(column)
    for number, step in enumerate(written.steps, 1):
        table.add_row(str(number), step.id, "0d" if number == 1 else "7d", step.subject)
    console.print(table)
    console.print(
        f"templates in {written.templates}/. Next:\n"
        f"  python run.py --schedule {written.schedule} schedule check\n"
        f"  python run.py --schedule {written.schedule} preview --serve\n"
        f"  python run.py --schedule {written.schedule} simulate",
        highlight=False,
    )


def serve_preview(app: AppContext, port: int) -> None:
    """`preview --serve`: sample leads, plus the database's leads when there is one."""
    from campaign.authoring.preview_server import LivePreview, serve

    signer = LinkSigner(settings.base_url(), settings.secret_key(required=False))
    live = LivePreview(app.schedule_path, signer, existing_store(app, required=False))
    console.print(
        f"live preview of {app.schedule_path} at [bold]http://127.0.0.1:{port}/[/] "
        "(Ctrl-C to stop)",
        highlight=False,
    )
    serve(live, "127.0.0.1", port)


# -- operations (faults, retries, rate limits) ---------------------------------------------


# -- scale (workers, benchmarks) -----------------------------------------------------------
