"""Leads coming in: one at a time (command line, web form) or by CSV, validated the same way.

A bad row never stops an import: it is reported with its line number and skipped, the good
rows go in, and importing the same file again changes nothing. An address on the suppression
list (bounced, complained, unsubscribed) is never taken in again, by any of these ways.
"""

from __future__ import annotations

import csv
import io
import re
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field, replace
from datetime import datetime
from pathlib import Path
from typing import Annotated
from zoneinfo import ZoneInfo, ZoneInfoNotFoundError

from email_validator import EmailNotValidError, validate_email
from pydantic import AfterValidator, BaseModel, ConfigDict, Field, ValidationError

from campaign.config.schedule import Schedule
from campaign.leads.privacy import (
    ERASED_REFUSAL,
    WEB_ACTOR,
    ErasedAddresses,
    key_needed,
    renew_consent,
)
from campaign.model import LeadState, LeadStatus, NewLead, PlannedDelivery, address_key
from campaign.planner import next_delivery, plan_fingerprint, plan_key
from campaign.store import Store
from campaign.store.audit import lead_target
from campaign.store.leads import Consent
from campaign.store.suppressions import Suppression

MAX_FIELD = 200
MAX_ATTRIBUTE = 1000
MAX_FILE_BYTES = 200_000_000
_CONTROL = re.compile(r"[\x00-\x1f\x7f]")
_ATTRIBUTE_NAME = re.compile(r"^[a-z_][a-z0-9_]{0,63}$")
# Most of email_validator's time goes to checking the domain, and a list of leads shares
# few domains: an address whose domain (written in ASCII) it has accepted before, with a
# plain local part, needs no second check to get the same answer. Plain: a lower-case ASCII
# dot-atom of at most 64 characters, since email_validator lower-cases role names such as
# `Info` and `Sales`, and keeps the case of the others.
_accepted_domains: dict[str, str] = {}  # as written → as email_validator normalised it
MAX_ACCEPTED_DOMAINS = 10_000
_ATOM = r"[a-z0-9!#$%&'*+/=?^_`{|}~-]+"
_PLAIN_LOCAL = re.compile(rf"(?=.{{1,64}}\Z){_ATOM}(?:\.{_ATOM})*\Z")
# What reading a file as UTF-8 with errors="surrogateescape" leaves for bytes it could not decode.
_UNDECODED = re.compile("[\udc80-\udcff]")
BUILTIN_COLUMNS = ("email", "first_name", "timezone")


class LeadError(ValueError):
    """A lead that cannot be accepted, naming the field at fault."""

    def __init__(self, field: str, message: str):
        self.field = field
        self.message = message
        super().__init__(f"{field}: {message}")


class SuppressedError(Exception):
    """An address on the suppression list: nothing is added or changed for it."""

    def __init__(self, suppression: Suppression):
        self.suppression = suppression
        super().__init__(why_suppressed(suppression))


class ErasedError(SuppressedError):
    """An address erased at the person's request: only their own new signup with consent
    brings it back, never an operator's add or import."""

    def __init__(self, suppression: Suppression, email: str):
        super().__init__(suppression)
        self.args = (f"{email} was {ERASED_REFUSAL}",)


def why_suppressed(suppression: Suppression) -> str:
    """One line for the operator: which address, since when and why, and what lifts it."""
    return (
        f"{suppression.email} is suppressed ({suppression.reason} since "
        f"{suppression.created_at:%Y-%m-%d %H:%M}Z: {suppression.detail or 'no detail'}); "
        "`leads unsuppress` lifts it"
    )


def normalize_email(value: str) -> str:
    value = value.strip()
    if _CONTROL.search(value):
        raise ValueError("contains control characters (line breaks, tabs or NUL)")
    local, _, domain = value.rpartition("@")
    known = _accepted_domains.get(domain)
    if known is not None and _PLAIN_LOCAL.match(local) and len(value) <= 254:
        return f"{local}@{known}"
    try:
        checked = validate_email(value, check_deliverability=False)
    except EmailNotValidError as exc:
        raise ValueError(f"{value[:80]!r} is not a valid email address: {exc}") from None
    normal_local, _, normal_domain = checked.normalized.rpartition("@")
    if len(_accepted_domains) >= MAX_ACCEPTED_DOMAINS:
        _accepted_domains.clear()
    if domain.isascii():  # the length limits count an international one as written
        _accepted_domains[domain] = normal_domain.lower()
    return f"{normal_local}@{normal_domain.lower()}"


def _clean_text(value: str) -> str:
    if _CONTROL.search(value):
        raise ValueError("contains control characters (line breaks, tabs or NUL)")
    return value.strip()


def _zone(value: str | None) -> str | None:
    if not value:
        return None
    value = value.strip()
    try:
        ZoneInfo(value)
    except (ZoneInfoNotFoundError, ValueError):
        raise ValueError(f"{value[:64]!r} is not a known time zone (e.g. Europe/Paris)") from None
    return value


class LeadInput(BaseModel):
    """A lead as it arrives, before it is trusted."""

    model_config = ConfigDict(extra="forbid", str_strip_whitespace=True)

    email: Annotated[str, Field(max_length=320), AfterValidator(normalize_email)]
    first_name: Annotated[str, Field(max_length=MAX_FIELD), AfterValidator(_clean_text)] = ""
    timezone: Annotated[str | None, Field(max_length=64), AfterValidator(_zone)] = None
    attributes: dict[
        str, Annotated[str, Field(max_length=MAX_ATTRIBUTE), AfterValidator(_clean_text)]
    ] = Field(default_factory=dict)


def parse_lead(data: dict) -> LeadInput:
    """Validate one lead; raise `LeadError` naming the first bad field."""
    bad_names = [k for k in data.get("attributes", {}) if not _ATTRIBUTE_NAME.match(k)]
    if bad_names:
        raise LeadError(bad_names[0], "column names must be lower-case words (a-z, 0-9, _)")
    try:
        return LeadInput.model_validate(data)
    except ValidationError as exc:
        error = exc.errors()[0]
        name = ".".join(str(p) for p in error["loc"]) or "lead"
        raise LeadError(name, error["msg"].removeprefix("Value error, ")) from None


def first_delivery(
    schedule: Schedule, timezone: str | None, now: datetime
) -> PlannedDelivery | None:
    return next_delivery(schedule, LeadState(enrolled_at=now, timezone=timezone))


def to_new_lead(lead: LeadInput, first: PlannedDelivery | None) -> NewLead:
    return NewLead(lead.email, lead.first_name, lead.timezone, dict(lead.attributes), first)


def add_lead(
    store: Store,
    schedule: Schedule,
    lead: LeadInput,
    now: datetime,
    *,
    pending: bool = False,
    consent: Consent | None = None,
    erasure_key: bytes | None = None,
    renew: bool = False,
) -> tuple[int, bool]:
    """Insert and enroll one lead, recording its `consent`; an address already known is
    left untouched, and one on the suppression list raises `SuppressedError` (`ErasedError`
    when it was erased, unless `renew`: the person signed up again with consent, which lifts
    the erased entry). `erasure_key` is needed only once an erased address stands.

    A `pending` lead (double opt-in) gets no step of the series planned until it confirms
    its address, only the confirmation email, due now, queued in the same transaction: the
    sender delivers it like any other email, so the caller never waits on SMTP.
    """
    suppressed = store.suppressions.find(lead.email)
    if suppressed is not None:
        raise SuppressedError(suppressed)
    erased = ErasedAddresses.of(store, erasure_key)
    found = erased.among([lead.email]).get(address_key(lead.email))
    if found is not None and not renew:
        raise ErasedError(found, lead.email)
    if found is not None and consent is not None:
        renew_consent(store, erased, lead.email, consent.source, now)
    store.meta.init(plan_key(schedule), plan_fingerprint(schedule))
    new = to_new_lead(lead, first_delivery(schedule, lead.timezone, now))
    if pending:
        confirm = schedule.confirmation
        first = PlannedDelivery(confirm.id, now) if confirm is not None else None
        new = replace(new, first=first, status=LeadStatus.PENDING)
    lead_id, created = store.leads.add_leads([new], schedule.campaign.id, now, consent)[0]
    if found is not None:
        why = "an erased address signed up again with consent; its erased entry was lifted"
        store.audit.log(WEB_ACTOR, "consent-renewed", lead_target(lead_id), why, now)
    return lead_id, created


@dataclass
class ImportReport:
    imported: int = 0
    already_present: int = 0
    rejected: list[tuple[int, str]] = field(default_factory=list)
    suppressed: list[tuple[int, str]] = field(default_factory=list)  # skipped: (line, why)
    fatal: str | None = None


_LINE_END = re.compile(r"\r\n|\r|\n")  # what the csv module ends a record on
QUOTE_ADVICE = 'write a quote inside a field as two ("") or quote the whole field'


class _Lines:
    """The file's physical lines, handed to the csv reader one at a time, so that a record's
    first line is known and reading can start again on any line.

    A quote that opens a field and is never closed would make the reader take every following
    line as part of that field; starting again on the line after the quote gives every row its
    own outcome.
    """

    def __init__(self, text: str):
        self.text = text
        self.stream = io.StringIO(text, newline="")  # splits lines as the csv module does
        self.offset = 0  # where the next line starts
        self.number = 1  # the number of the next line

    def from_here(self) -> Iterator[str]:
        self.stream.seek(self.offset)
        for line in self.stream:
            self.offset += len(line)
            self.number += 1
            yield line

    def restart(self, offset: int, number: int) -> Iterator[list[str]]:
        """A fresh reader from the line at `offset`, whose number is `number`."""
        self.offset, self.number = offset, number
        return csv.reader(self.from_here(), strict=True)


def _quoting_problem(error: csv.Error, lines: int) -> str:
    """What a reader's error means for the person who wrote the file."""
    if lines > 1 or "unexpected end of data" in str(error):
        return f"a quote opens a field here and does not close it on this row; {QUOTE_ADVICE}"
    if "expected after" in str(error):
        return f"a quoted field has more text after its closing quote; {QUOTE_ADVICE}"
    return f"cannot read this row: {error}"


# What the exports of common email tools and spreadsheets call the columns the import reads.
COLUMN_ALIASES = {
    "email_address": "email",
    "e-mail": "email",
    "e-mail_address": "email",
    "firstname": "first_name",
    "given_name": "first_name",
    "time_zone": "timezone",
}


def _column(name: str) -> str:
    key = name.strip().lower().replace(" ", "_")
    return COLUMN_ALIASES.get(key, key)


def _header_columns(header: list[str]) -> list[str]:
    """The header's names as the import uses them (`Email Address` is `email`); two names that
    mean the same column would silently overwrite each other's values, so the file is refused
    naming both."""
    columns = [_column(h) for h in header]
    first_seen: dict[str, int] = {}
    for index, name in enumerate(columns):
        if not name:
            continue  # an unnamed column (a trailing comma) is ignored
        if name in first_seen:
            other = first_seen[name]
            raise LeadError(
                "line 1",
                f"columns {other + 1} ({header[other].strip()[:64]!r}) and {index + 1} "
                f"({header[index].strip()[:64]!r}) both mean {name[:64]!r}; "
                "remove or rename one of them",
            )
        first_seen[name] = index
    return columns


def read_csv(path: Path) -> Iterator[tuple[int, dict[str, str] | str]]:
    """Rows as (line number, row) or (line number, error message), never raising on bad rows.

    Every line of the file ends up in a row or in a message: a quoting problem is reported on
    the line where it starts, and reading goes on from the next line.
    """
    raw = path.read_bytes()
    if len(raw) > MAX_FILE_BYTES:
        raise LeadError("file", f"is larger than {MAX_FILE_BYTES // 1_000_000} MB")
    text = raw.decode("utf-8-sig", errors="surrogateescape")
    lines = _Lines(text)
    reader = lines.restart(0, 1)
    try:
        header = next(reader)
    except StopIteration:
        raise LeadError("file", "is empty: expected a header row with an 'email' column") from None
    except csv.Error as exc:
        raise LeadError("line 1", f"cannot read the header: {exc}") from None
    columns = _header_columns(header)
    if "email" not in columns:
        raise LeadError(
            "line 1",
            "the header row has no 'email' column "
            f"(found: {', '.join(columns)[:200] or 'nothing'})",
        )
    while True:
        offset, line = lines.offset, lines.number  # where the row starts
        try:
            values = next(reader)
        except StopIteration:
            return
        except csv.Error as exc:
            yield line, _quoting_problem(exc, lines.number - line)
            reader = _skip_line(lines, offset, line)
            continue
        if not any(v.strip() for v in values):
            continue
        if len(values) != len(columns) and lines.number - line > 1:
            # A quoted field ran over several lines into a row that does not fit the header:
            # the quote was a mistake, and the lines it took are rows of their own.
            yield line, _quoting_problem(csv.Error(), lines.number - line)
            reader = _skip_line(lines, offset, line)
            continue
        if any(_UNDECODED.search(v) for v in values):
            yield line, "is not UTF-8 text (save the file as UTF-8 and import it again)"
            continue
        if len(values) != len(columns):
            yield line, f"has {len(values)} fields but the header has {len(columns)}"
            continue
        yield line, dict(zip(columns, values, strict=True))


def _skip_line(lines: _Lines, offset: int, number: int) -> Iterator[list[str]]:
    """A reader that starts on the line after the one at `offset` (numbered `number`)."""
    found = _LINE_END.search(lines.text, offset)
    return lines.restart(found.end() if found else len(lines.text), number + 1)


def _row_lead(row: dict[str, str]) -> LeadInput | str:
    """A CSV row as a lead, or why it is refused: the built-in columns by name, every other
    column that has a value as an attribute."""
    data: dict[str, object] = {k: row[k] for k in BUILTIN_COLUMNS if k in row}
    data["attributes"] = {k: v for k, v in row.items() if k not in BUILTIN_COLUMNS and k and v}
    try:
        return parse_lead(data)
    except LeadError as exc:
        return str(exc)


@dataclass(frozen=True)
class _Batches:
    """What every batch of one import shares: where it goes, its consent, the erased list."""

    campaign_id: str
    consent: Consent | None
    erased: ErasedAddresses


def _add_batch(
    store: Store,
    into: _Batches,
    batch: list[tuple[int, NewLead]],
    now: datetime,
    report: ImportReport,
) -> None:
    """Add one batch of (line, lead), skipping and reporting each suppressed or erased
    address (one query per batch for each)."""
    suppressed = store.suppressions.standing(lead.email for _line, lead in batch)
    erased = into.erased.among(lead.email for _line, lead in batch)
    wanted = []
    for line, lead in batch:
        key = address_key(lead.email)
        found = suppressed.get(key)
        if found is not None:
            report.suppressed.append((line, why_suppressed(found)))
        elif key in erased:
            report.suppressed.append((line, f"{lead.email} was {ERASED_REFUSAL}"))
        else:
            wanted.append(lead)
    for _id, created in store.leads.add_leads(wanted, into.campaign_id, now, into.consent):
        if created:
            report.imported += 1
        else:
            report.already_present += 1


def import_csv(
    store: Store,
    schedule: Schedule,
    path: Path,
    now: datetime,
    batch_size: int = 1000,
    progress: Callable[[int], None] | None = None,
    *,
    consent: Consent | None = None,
    erasure_key: bytes | None = None,
) -> ImportReport:
    """Import the file's leads, each created with `consent` recorded; an address erased at
    the person's request is skipped like a suppressed one (`erasure_key` is needed only once
    an erased address stands)."""
    report = ImportReport()
    into = _Batches(schedule.campaign.id, consent, ErasedAddresses.of(store, erasure_key))
    if into.erased.any_erased and erasure_key is None:
        raise key_needed()  # before any row goes in, not halfway through the file
    store.meta.init(plan_key(schedule), plan_fingerprint(schedule))
    seen: dict[str, int] = {}
    batch: list[NewLead] = []
    lines: list[int] = []  # of the rows in `batch`
    # Everyone imported at once is enrolled at `now`: the first step is the same for every
    # lead in one time zone, so it is planned once per zone, not once per lead.
    firsts: dict[str | None, PlannedDelivery | None] = {}

    def flush() -> None:
        _add_batch(store, into, list(zip(lines, batch, strict=True)), now, report)
        if progress:
            progress(len(batch))
        batch.clear()
        lines.clear()

    try:
        rows = read_csv(path)
        for line, row in rows:
            lead = row if isinstance(row, str) else _row_lead(row)
            if isinstance(lead, str):
                report.rejected.append((line, lead))
                continue
            key = address_key(lead.email)  # the same lead whatever the letter case
            if key in seen:
                report.rejected.append(
                    (line, f"email: {lead.email} already appears on line {seen[key]}")
                )
                continue
            seen[key] = line
            zone = lead.timezone
            if zone not in firsts:
                firsts[zone] = first_delivery(schedule, zone, now)
            batch.append(to_new_lead(lead, firsts[zone]))
            lines.append(line)
            if len(batch) >= batch_size:
                flush()
    except LeadError as exc:
        report.fatal = str(exc)
    if batch:
        flush()
    return report
