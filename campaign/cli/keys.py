"""The operator's DKIM commands: `dkim keygen` makes a signing key and prints the DNS record
that publishes it. Signing itself is on as soon as CAMPAIGN_DKIM_SELECTOR and
CAMPAIGN_DKIM_PRIVATE_KEY_FILE are set (campaign.rendering.dkim)."""

from __future__ import annotations

from email.utils import parseaddr
from pathlib import Path

import click

from campaign.cli.app import AppContext, command, console, main
from campaign.config.settings import DKIM_KEY_FILE_VAR, DKIM_SELECTOR_VAR, SettingsError
from campaign.rendering.dkim import (
    KEY_BITS,
    generate_key,
    signing_domain,
    txt_record,
    valid_selector,
    write_key,
)


@main.group("dkim")
def dkim_group() -> None:
    """DKIM signing keys and their DNS records."""


@command(dkim_group, "keygen")
@click.option(
    "--selector",
    required=True,
    help="The key's name in DNS (SELECTOR._domainkey.DOMAIN), e.g. nurture2026.",
)
@click.option(
    "--domain",
    default=None,
    help="The signing domain (default: the domain of sender.from in the schedule).",
)
@click.option(
    "--out",
    "out",
    type=click.Path(path_type=Path, dir_okay=False),
    default=None,
    help="Where to write the private key (default: dkim-SELECTOR.pem); never overwritten.",
)
def keygen(app: AppContext, selector: str, domain: str | None, out: Path | None) -> None:
    """Write a new 2048-bit RSA key and print the TXT record to publish for it."""
    if not valid_selector(selector):
        raise SettingsError(f"--selector {selector!r}: use DNS labels (letters, digits, -)")
    if domain is None:
        domain = parseaddr(app.load().schedule.sender.from_)[1].rpartition("@")[2]
    domain = signing_domain(domain)
    path = out or Path(f"dkim-{selector}.pem")
    pem = generate_key(KEY_BITS)
    try:
        write_key(path, pem)
    except FileExistsError:
        raise SettingsError(
            f"{path} exists: choose another --out (a key in use must stay, or its "
            "signatures stop verifying)"
        ) from None
    except OSError as exc:
        raise SettingsError(f"cannot write {path}: {exc.strerror}") from None
    record = txt_record(selector, domain, pem)
    console.print(
        f"Wrote a {KEY_BITS}-bit RSA private key to {path} (readable by you only; keep it out "
        "of version control).",
        highlight=False,
        markup=False,
    )
    console.print(f"Publish this TXT record in the DNS of {domain}:", highlight=False, markup=False)
    console.print(f"  name:  {record.name}", highlight=False, markup=False)
    console.print(f"  value: {record.value}", highlight=False, markup=False)
    console.print(
        "In zone-file form (the value split into strings of at most 255 characters):",
        highlight=False,
        markup=False,
    )
    console.print(f"  {record.zone_line()}", highlight=False, markup=False)
    console.print(
        f"Once it resolves, sign with: {DKIM_SELECTOR_VAR}={selector} {DKIM_KEY_FILE_VAR}={path}",
        highlight=False,
        markup=False,
    )
