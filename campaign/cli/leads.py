"""`leads add` and `leads import`: how leads arrive from the command line; `leads reactivate`:
leads bounced by mistake come back."""

from __future__ import annotations

import sys
from datetime import datetime
from pathlib import Path

import click
from rich.progress import Progress, SpinnerColumn, TextColumn

from campaign.cli.app import AppContext, command, console, errors, main, now_option, open_store
from campaign.leads.intake import LeadError, add_lead, import_csv, parse_lead
from campaign.model import utc_now
from campaign.sending.reactivation import reactivate


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
    store = open_store(app, create_missing=True)
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
    store = open_store(app, create_missing=True)
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


@command(leads_group, "reactivate")
@click.argument("emails", nargs=-1)
@click.option(
    "--run",
    "run_id",
    default=None,
    help="Every lead this run bounced (send-due names it when it stops).",
)
@now_option("Plan the step sent again as if at this moment")
def leads_reactivate(
    app: AppContext, emails: tuple[str, ...], run_id: str | None, at: datetime | None
) -> None:
    """Undo bounces the sender caused: the leads are active again and the step that bounced
    is sent again. Name the leads, or the run that bounced them."""
    if bool(emails) == bool(run_id):
        errors.print("[bold red]name the leads or give --run, not both or neither[/]")
        sys.exit(2)
    loaded = app.load()
    store = open_store(app)
    done = reactivate(store, loaded.schedule, at or utc_now(), emails, run_id)
    if not done:
        errors.print("no bounced lead matches: nothing changed", highlight=False)
        sys.exit(1)
    console.print(f"reactivated {len(done)} lead(s): {', '.join(done)}", highlight=False)
    missed = sorted({e.lower() for e in emails} - {e.lower() for e in done})
    if missed:
        errors.print(f"not bounced, left as they are: {', '.join(missed)}", highlight=False)
