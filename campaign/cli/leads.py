"""`leads add` and `leads import`: how leads arrive from the command line."""

from __future__ import annotations

import sys
from pathlib import Path

import click
from rich.progress import Progress, SpinnerColumn, TextColumn

from campaign.cli.app import AppContext, command, console, errors, main, open_store
from campaign.leads.intake import LeadError, add_lead, import_csv, parse_lead
from campaign.model import utc_now


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
