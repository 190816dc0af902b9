"""The command line: what marketers and operators type. Each command is a thin shell over the engine."""

from __future__ import annotations

import functools
import sys
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import click
from rich.console import Console

from . import settings
from .links import LinkSigner
from .preview import SAMPLE_LEAD, write_preview
from .render import LeadView, Renderer, TemplateProblem
from .schedule import LoadedSchedule, ScheduleError, load_schedule
from .settings import SettingsError

console = Console()
errors = Console(stderr=True)


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
