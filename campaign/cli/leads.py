"""`leads add` and `leads import`: how leads arrive from the command line; `leads reactivate`:
leads bounced by mistake come back; `leads suppressions` and `leads unsuppress`: the
addresses never mailed again, and lifting one."""

from __future__ import annotations

import json
import sys
from datetime import datetime
from pathlib import Path

import click
from rich.progress import Progress, SpinnerColumn, TextColumn

from campaign.cli.app import AppContext, command, console, errors, main, now_option, open_store
from campaign.leads.intake import (
    LeadError,
    SuppressedError,
    add_lead,
    import_csv,
    parse_lead,
)
from campaign.leads.privacy import erasure_key_from_environment, operator
from campaign.model import LeadStatus, utc_now
from campaign.sending.reactivation import reactivate
from campaign.store.audit import lead_target
from campaign.store.leads import Consent

COMMAND_LINE = Consent("command line")


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
    now = utc_now()
    try:
        lead_id, created = add_lead(
            store,
            loaded.schedule,
            lead,
            now,
            consent=COMMAND_LINE,
            erasure_key=erasure_key_from_environment(),
        )
    except SuppressedError as exc:
        errors.print(f"[bold red]not added:[/] {exc}", highlight=False)
        sys.exit(1)
    done = "added" if created else "already present; nothing changed"
    store.audit.log(operator(), "add", lead_target(lead_id), done, now)
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
        now = utc_now()
        report = import_csv(
            store,
            loaded.schedule,
            file,
            now,
            progress=lambda n: progress.advance(task, n),
            consent=Consent(f"import {file.name}"),
            erasure_key=erasure_key_from_environment(),
        )
    outcome = (
        f"imported {report.imported}, already present {report.already_present}, "
        f"rejected {len(report.rejected)}, suppressed {len(report.suppressed)}"
    )
    store.audit.log(operator(), "import", f"file {file.name}", outcome, now)
    for line, problem in report.rejected[:200]:
        errors.print(f"{file.name}:{line}: {problem}", markup=False, highlight=False)
    if len(report.rejected) > 200:
        errors.print(f"... and {len(report.rejected) - 200} more rejected rows")
    for line, why in report.suppressed[:200]:
        errors.print(f"{file.name}:{line}: skipped: {why}", markup=False, highlight=False)
    if len(report.suppressed) > 200:
        errors.print(f"... and {len(report.suppressed) - 200} more suppressed addresses")
    if report.fatal:
        errors.print(f"[bold red]{file.name}: {report.fatal}[/]", highlight=False)
    console.print(outcome)
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
    now = at or utc_now()
    done = reactivate(store, loaded.schedule, now, emails, run_id)
    if not done:
        errors.print("no bounced lead matches: nothing changed", highlight=False)
        sys.exit(1)
    for email in done:
        found = store.leads.lead_by_email(email)
        target = lead_target(found.id) if found is not None else "lead (unknown)"
        why = f"bounce undone (run {run_id})" if run_id else "bounce undone"
        store.audit.log(operator(), "reactivate", target, why, now)
    console.print(f"reactivated {len(done)} lead(s): {', '.join(done)}", highlight=False)
    missed = sorted({e.lower() for e in emails} - {e.lower() for e in done})
    if missed:
        errors.print(f"not bounced, left as they are: {', '.join(missed)}", highlight=False)


@command(leads_group, "suppressions")
@click.option("--json", "as_json", is_flag=True, help="Machine-readable output.")
@click.option("--lifted", is_flag=True, help="Also list the suppressions lifted, and why.")
def leads_suppressions(app: AppContext, as_json: bool, lifted: bool) -> None:
    """The addresses no series or import mails again: bounced, complained, unsubscribed."""
    store = open_store(app)
    found = store.suppressions.listing(lifted=lifted)
    if as_json:
        click.echo(json.dumps([s.as_json() for s in found], indent=2))
        return
    for item in found:
        line = (
            f"{item.email}  {item.reason}  since {item.created_at:%Y-%m-%d %H:%M}Z  {item.detail}"
        )
        if item.lifted_at is not None:
            line += f"  (lifted {item.lifted_at:%Y-%m-%d %H:%M}Z: {item.lifted_reason})"
        console.print(line, markup=False, highlight=False)
    console.print(f"{sum(s.lifted_at is None for s in found)} address(es) suppressed")


# What to do once an address is off the list: the lead's status stays as it was.
NEXT_STEP = {
    LeadStatus.BOUNCED: "`leads reactivate {email}` sends it the step that bounced",
    LeadStatus.UNSUBSCRIBED: "the lead stays unsubscribed; it signs up again to get emails",
    LeadStatus.COMPLAINED: "the lead stays complained; it signs up again to get emails",
}


@command(leads_group, "unsuppress")
@click.argument("email")
@click.option("--reason", required=True, help="Why this address may be mailed again (recorded).")
@now_option("Record the lifting at this moment")
def leads_unsuppress(app: AppContext, email: str, reason: str, at: datetime | None) -> None:
    """Take an address off the suppression list, recording why. The lead's status is not
    changed back: the command says what to do next."""
    if not reason.strip():
        errors.print("[bold red]--reason must say why[/]")
        sys.exit(2)
    store = open_store(app)
    now = at or utc_now()
    lifted = store.suppressions.lift(email, reason.strip(), now)
    if lifted is None:
        errors.print(f"{email} is not suppressed: nothing changed", highlight=False)
        sys.exit(1)
    found = store.leads.lead_by_email(email)
    target = lead_target(found.id) if found is not None else "an address with no lead"
    store.audit.log(operator(), "unsuppress", target, f"{lifted.reason}: {reason.strip()}", now)
    console.print(
        f"lifted: {lifted.email} ({lifted.reason} since {lifted.created_at:%Y-%m-%d %H:%M}Z); "
        f"next: {NEXT_STEP[lifted.reason].format(email=lifted.email)}",
        highlight=False,
    )
