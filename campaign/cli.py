"""The command line: what marketers and operators type. Each command is a thin shell over the engine."""

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

from . import settings
from .catcher import Catcher, CatchHandler, Caught
from .demo import local_time, run_demo
from .dispatch import Clock, RunReport
from .leads import LeadError, add_lead, import_csv, parse_lead
from .links import LinkSigner
from .reporting import STATUS_COLUMNS, campaign_status
from .runner import Engine, run_forever, utc_now
from .preview import SAMPLE_LEAD, write_preview
from .render import LeadView, Renderer, TemplateProblem
from .schedule import LoadedSchedule, ScheduleError, load_schedule
from .settings import SettingsError, SmtpSettings
from .store import Store, StoreError

console = Console(soft_wrap=True)
errors = Console(stderr=True, soft_wrap=True)


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
def preview(app: AppContext, out: Path, lead_email: str | None, name: str | None) -> None:
    """Write every step, rendered, to files. Nothing is sent and no database is needed."""
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
@click.option("--attr", "attrs", multiple=True, metavar="KEY=VALUE",
              help="An extra attribute usable in templates (repeatable).")
def leads_add(app: AppContext, email: str, first_name: str, timezone: str | None,
              attrs: tuple[str, ...]) -> None:
    """Add one lead and enroll it in the campaign."""
    loaded = app.load()
    attributes = dict(item.partition("=")[::2] for item in attrs)
    try:
        lead = parse_lead({"email": email, "first_name": first_name, "timezone": timezone,
                           "attributes": attributes})
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
    with Progress(SpinnerColumn(), TextColumn("{task.description}"), TextColumn("{task.completed} rows"),
                  console=errors, transient=True) as progress:
        task = progress.add_task(f"importing {file.name}", total=None)
        report = import_csv(store, loaded.schedule, file, utc_now(),
                            progress=lambda n: progress.advance(task, n))
    for line, problem in report.rejected[:200]:
        errors.print(f"{file.name}:{line}: {problem}", markup=False, highlight=False)
    if len(report.rejected) > 200:
        errors.print(f"... and {len(report.rejected) - 200} more rejected rows")
    if report.fatal:
        errors.print(f"[bold red]{file.name}: {report.fatal}[/]", highlight=False)
    console.print(f"imported {report.imported}, already present {report.already_present}, "
                  f"rejected {len(report.rejected)}")
    if report.fatal:
        sys.exit(2)
    if report.rejected:
        sys.exit(1)


# -- sending -------------------------------------------------------------------------------


def engine_for(app: AppContext, store: Store, clock: Clock = utc_now) -> Engine:
    return Engine(app.schedule_path, store, SmtpSettings.from_env(),
                  LinkSigner(settings.base_url(), settings.secret_key(required=True)),
                  clock=clock)


def print_report(report: RunReport) -> None:
    console.print(f"sent {report.sent}, retrying {report.retried}, failed {report.failed} "
                  f"(bounced {report.bounced}), cancelled {report.cancelled}, "
                  f"in doubt {report.in_doubt}")
    for error in report.errors[:50]:
        errors.print(f"  {error}", markup=False, highlight=False)


@command(main, "send-due")
@click.option("--now", "at", default=None, metavar="ISO-8601",
              help="Act as if it were this moment (replays a campaign's calendar).")
@click.option("--max", "max_messages", type=int, default=None, help="Stop after this many.")
def send_due(app: AppContext, at: str | None, max_messages: int | None) -> None:
    """Send everything due now, once, and exit (non-zero if the run had to stop)."""
    app.renderer()
    moment = parse_moment(at) if at else None
    store = open_store(app)
    engine = engine_for(app, store, (lambda: moment) if moment else utc_now)
    report = engine.send_due(max_messages)
    print_report(report)
    if report.stopped:
        errors.print(f"[bold red]stopped:[/] {report.stopped}", highlight=False)
        sys.exit(1)


@command(main, "run")
@click.option("--every", "interval", type=float, default=60.0, show_default=True,
              help="Seconds between ticks.")
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
            logging.getLogger("campaign.runner").info(
                "tick: sent=%d retry=%d failed=%d stopped=%s", report.sent, report.retried,
                report.failed, report.stopped)

    count = run_forever(tick, interval, ticks)
    console.print(f"stopped after {count} tick(s)")


def parse_moment(text: str) -> datetime:
    try:
        moment = datetime.fromisoformat(text)
    except ValueError:
        raise SettingsError(f"--now {text!r} is not an ISO-8601 time (e.g. 2026-03-02T09:00Z)") from None
    return moment if moment.tzinfo else moment.replace(tzinfo=UTC)


# -- watching ------------------------------------------------------------------------------


@command(main, "status")
@click.option("--json", "as_json", is_flag=True, help="Machine-readable output.")
def status(app: AppContext, as_json: bool) -> None:
    """Per step: sent, pending, failed, unknown; and leads by status."""
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
        errors.print(f"[yellow]in doubt[/] delivery {item['id']} to {item['email']} "
                     f"({item['step_id']}), claimed {item['claimed_at']}: not resent",
                     highlight=False)


@command(main, "catcher")
@click.option("--port", type=int, default=1025, show_default=True)
@click.option("--maildir", type=click.Path(path_type=Path), default=Path("outbox"),
              show_default=True, help="Where accepted messages are stored (Maildir).")
def catcher_command(app: AppContext, port: int, maildir: Path) -> None:
    """A local SMTP server on 127.0.0.1 that keeps every message: try the engine safely."""

    def show(item: Caught) -> None:
        message = item.message
        console.print(f"{datetime.now():%H:%M:%S} to {', '.join(item.recipients)}: "
                      f"{message['Subject']}", highlight=False)

    with Catcher(CatchHandler(maildir=maildir, on_message=show), port=port) as catcher:
        console.print(f"catching mail on 127.0.0.1:{catcher.port} into {maildir}/ "
                      "(Ctrl-C to stop)")
        stop = threading.Event()
        for sig in (signal.SIGINT, signal.SIGTERM):
            signal.signal(sig, lambda *_: stop.set())
        stop.wait()


@command(main, "demo")
@click.option("--out", type=click.Path(path_type=Path), default=Path("demo-out"),
              show_default=True, help="Folder for the demo database and the caught emails.")
def demo(app: AppContext, out: Path) -> None:
    """Replay the whole series for sample leads through real SMTP, in seconds."""
    app.renderer()
    table = Table(title="Every email, as the local SMTP catcher received it")
    for column in ("#", "sent (UTC)", "lead's local time", "to", "subject"):
        table.add_column(column)
    delivered = run_demo(app.schedule_path, out)
    for number, item in enumerate(delivered, 1):
        table.add_row(str(number), f"{item.at:%a %d %b %H:%M}", local_time(item), item.email,
                      item.subject)
    console.print(table)
    console.print(f"{len(delivered)} emails delivered over real SMTP to a local catcher.\n"
                  f"Open them: [bold]{out / 'emails'}/[/] (.eml files open in any mail app); "
                  f"Maildir: {out / 'maildir'}; database: {out / 'demo.db'}.\n"
                  "Next: python run.py preview, python run.py --help")


# -- web service (lead lifecycle) ----------------------------------------------------------


# -- marketer tools (plan, simulate, schedule diff, report, new-series, preview --serve) -----


# -- operations (faults, retries, rate limits) ---------------------------------------------


# -- scale (workers, benchmarks) -----------------------------------------------------------
