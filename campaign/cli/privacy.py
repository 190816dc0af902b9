"""`leads export` and `leads erase`: a person's right to see and to remove what is held about
them; `audit`: what operators did, and who."""

from __future__ import annotations

import json
import sys

import click

from campaign.cli.app import AppContext, command, console, errors, main, open_store
from campaign.cli.leads import leads_group
from campaign.leads import privacy
from campaign.model import utc_now


@command(leads_group, "export")
@click.argument("email")
def leads_export(app: AppContext, email: str) -> None:
    """Print, as JSON, everything held about the lead with this address: the lead, its
    attributes, consents, deliveries, clicks, conversions, inbound messages, suppression
    entries and the audit entries about it. The export is recorded in the audit log."""
    store = open_store(app)
    found = privacy.export(store, email, privacy.operator(), utc_now())
    if found is None:
        errors.print(f"no lead has the address {email}", markup=False, highlight=False)
        sys.exit(1)
    click.echo(json.dumps(found, indent=2, ensure_ascii=False, default=str))


@command(leads_group, "erase")
@click.argument("email")
@click.option("--yes", is_flag=True, help="Erase without asking to confirm.")
def leads_erase(app: AppContext, email: str, yes: bool) -> None:
    """Erase the lead with this address at the person's request, in one transaction: its
    address, name, time zone, attributes, consents and the messages it sent are removed; the
    counts stay true; the address stays on the suppression list only as a keyed hash, so no
    add or import brings it back, only the person's own new signup with consent."""
    key = privacy.erasure_key_from_environment()
    if key is None:
        errors.print(
            "[bold red]not erased:[/] CAMPAIGN_SECRET_KEY is not set; an erased address is kept "
            "on the suppression list as a hash under that key, so set it (the same key the "
            "engine signs links with) and run this again",
            highlight=False,
        )
        sys.exit(2)
    store = open_store(app)
    lead = store.leads.lead_by_email(email)
    if lead is None:
        errors.print(f"no lead has the address {email}", markup=False, highlight=False)
        sys.exit(1)
    if not yes:
        click.confirm(
            f"Erase lead {lead.id} <{lead.email}> everywhere? This cannot be undone",
            abort=True,
            err=True,
        )
    erased = privacy.erase(store, email, key, privacy.operator(), utc_now())
    if erased is None:  # erased or merged away by someone else since it was read
        errors.print(f"no lead has the address {email}", markup=False, highlight=False)
        sys.exit(1)
    console.print(
        f"erased lead {erased.lead_id}: cancelled {erased.cancelled} queued email(s), "
        f"deleted {erased.consents} consent record(s), cleared {erased.inbound} inbound "
        f"message(s); the address is suppressed as a hash",
        highlight=False,
    )


@command(main, "audit")
@click.option("--limit", default=50, show_default=True, type=click.IntRange(1, 100_000))
@click.option("--json", "as_json", is_flag=True, help="Machine-readable output.")
def audit_command(app: AppContext, limit: int, as_json: bool) -> None:
    """What operators did (imports, adds, unsubscribes, reactivations, erasures, exports),
    newest first, with when and who."""
    entries = open_store(app).audit.listing(limit)
    if as_json:
        click.echo(json.dumps([e.as_json() for e in entries], indent=2, ensure_ascii=False))
        return
    for entry in entries:
        console.print(
            f"{entry.at:%Y-%m-%d %H:%M:%S}Z  {entry.actor}  {entry.action}  {entry.target}"
            f"  {entry.detail}",
            markup=False,
            highlight=False,
        )
    console.print(f"{len(entries)} entr{'y' if len(entries) == 1 else 'ies'}", highlight=False)
