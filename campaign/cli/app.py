"""The root command and what every command shares: the schedule and database options, the
terminal, plain reports of the errors a user can fix, and the options for moments in time.

The commands themselves live beside this module, one module per audience, and register on
`main`; each one parses its options, calls the package that does the work and prints.
"""

from __future__ import annotations

import functools
import logging
import sys
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from datetime import UTC, date, datetime, timedelta
from pathlib import Path
from typing import Any

import click
from rich.console import Console
from rich.markup import escape
from rich.progress import (
    BarColumn,
    MofNCompleteColumn,
    Progress,
    SpinnerColumn,
    TextColumn,
    TimeElapsedColumn,
)

from campaign.config import settings
from campaign.config.schedule import LoadedSchedule, ScheduleError, load_schedule
from campaign.config.settings import SettingsError
from campaign.rendering.checked import compiled_series
from campaign.rendering.renderer import Renderer, TemplateProblem
from campaign.store import DatabaseError, Store, StoreError
from campaign.store.location import database_missing, database_state

# Not a terminal (CI logs, pipes): Rich would assume 80 columns and wrap tables; allow wider.
_WIDTH = None if sys.stdout.isatty() else 140
console = Console(soft_wrap=True, width=_WIDTH)
errors = Console(stderr=True, soft_wrap=True, width=_WIDTH)


@dataclass
class AppContext:
    """The root options, handed to every command."""

    schedule_path: Path
    db_url: str | None

    def load(self) -> LoadedSchedule:
        return load_schedule(self.schedule_path)

    def renderer(self) -> Renderer:
        """Every step compiled: a broken template stops the command before anything happens,
        reported with every other problem of the schedule and its templates."""
        return compiled_series(self.schedule_path)


@contextmanager
def user_errors() -> Iterator[None]:
    """Turn the errors a user can fix into a clear message and exit code 2, never a traceback."""
    try:
        yield
    except ScheduleError as exc:
        files = "schedule" if len({i.file for i in exc.issues}) == 1 else "schedule and templates"
        errors.print(f"[bold red]{len(exc.issues)} problem(s) in the {files}:[/]")
        for issue in exc.issues:
            errors.print(f"  {issue}", markup=False, highlight=False)
        sys.exit(2)
    except TemplateProblem as exc:
        found = exc.each()
        errors.print(f"[bold red]{len(found)} problem(s) in the templates:[/]")
        for one in found:
            errors.print(f"  {one}", markup=False, highlight=False)
        sys.exit(2)
    except SettingsError as exc:  # values are escaped: a setting may hold `[` or `]`
        if len(exc.problems) > 1:
            errors.print(f"[bold red]{len(exc.problems)} problems in the settings:[/]")
            for problem in exc.problems:
                errors.print(f"  {problem}", markup=False, highlight=False)
        else:
            errors.print(f"[bold red]setting error:[/] {escape(str(exc))}", highlight=False)
        sys.exit(2)
    except DatabaseError as exc:  # the database failed mid-command: disk full, read-only, gone
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
    with user_errors():  # every setting, before any command touches a file or a server
        settings.check_environment(db_url)
    ctx.obj = AppContext(schedule_path, db_url)


def _open(url: str, *, create: bool) -> Store:
    try:
        return Store.open(url, create=create)
    except (DatabaseError, StoreError) as exc:
        raise SettingsError(f"cannot open the database: {exc}") from exc


def open_store(app: AppContext, *, create_missing: bool = False) -> Store:
    """The store, its tables brought up to date, for the commands that write.

    Only the commands that take leads in (`create_missing`) may create a new SQLite file:
    `status` or `send-due` run in the wrong folder would otherwise leave an empty database
    there and report an empty campaign, hiding the real one.
    """
    url = settings.database_url(app.db_url)
    if not database_missing(url):
        return _open(url, create=True)
    if not create_missing:
        raise SettingsError(no_database(url))
    store = _open(url, create=True)
    errors.print(f"created a new database at {url}", markup=False, highlight=False)
    return store


def no_database(url: str) -> str:
    """Why a command that needs leads cannot run, and the commands that make a database."""
    return (
        f"no database at {url} ({database_state(url)}). Run this command where the campaign's "
        "database is, or point --db / CAMPAIGN_DB at it; a new one is created by adding "
        "leads (`run.py leads add EMAIL`, `leads import FILE.csv`) or by starting `run.py web`"
    )


def existing_store(app: AppContext, *, migrate: bool = False) -> Store:
    """The store, which must exist, opened without creating anything: dry runs change nothing.

    `migrate` adds tables a newer engine introduced (only for commands that may write).
    """
    url = settings.database_url(app.db_url)
    if database_missing(url):
        raise SettingsError(
            f"no database at {url}: no leads yet (add or import leads, "
            "or try `simulate` to see a schedule on synthetic leads)"
        )
    return _open(url, create=migrate)


def store_if_any(app: AppContext) -> Store | None:
    """The store when there is one, for the tools that also work without leads."""
    url = settings.database_url(app.db_url)
    return None if database_missing(url) else _open(url, create=False)


def log_to_stderr() -> None:
    """One log line per event for the long-running commands (`run`, `web`); aiosmtpd's
    per-connection lines stay quiet."""
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(levelname)s %(name)s %(message)s")
    logging.getLogger("mail.log").setLevel(logging.WARNING)


@contextmanager
def progress_bar(description: str, total: int | None) -> Iterator[Callable[[int], None]]:
    """A progress bar on stderr (nothing is drawn when stderr is not a terminal)."""
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


def parse_bound(text: str, *, end_of_day: bool = False) -> datetime:
    """`2026-03-09` (midnight UTC, or the end of that day) or a full ISO-8601 time."""
    try:
        if len(text) == 10:
            day = datetime.combine(date.fromisoformat(text), datetime.min.time(), tzinfo=UTC)
            return day + timedelta(days=1) - timedelta(microseconds=1) if end_of_day else day
        moment = datetime.fromisoformat(text)
    except ValueError:
        raise ValueError(f"{text!r} is not a date (2026-03-09) or an ISO-8601 time") from None
    return moment if moment.tzinfo else moment.replace(tzinfo=UTC)


def moment_option(
    end_of_day: bool,
) -> Callable[[click.Context, click.Parameter, str | None], datetime | None]:
    """A click callback reading `2026-03-09` or an ISO-8601 time (UTC unless it says)."""

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
