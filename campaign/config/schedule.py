"""Loading and validating `schedules.yaml`, the file marketers edit.

A marketer's typo must never reach a lead, so loading is strict (unknown keys, duplicate
keys and wrong types are errors) and every problem is reported at once with the file,
the line and the field, the way a compiler reports errors.
"""

from __future__ import annotations

import copy
import hashlib
import re
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from datetime import date, datetime, time, timedelta
from email.utils import getaddresses
from enum import StrEnum
from functools import cache, cached_property, partial
from pathlib import Path
from typing import Annotated, Any, Literal, get_args
from zoneinfo import ZoneInfo, ZoneInfoNotFoundError

import yaml
from email_validator import EmailNotValidError, validate_email
from pydantic import (
    AfterValidator,
    BaseModel,
    BeforeValidator,
    ConfigDict,
    Discriminator,
    Field,
    HttpUrl,
    Tag,
    ValidationError,
    field_validator,
    model_validator,
)
from pydantic_core import ErrorDetails

from campaign.config import wording, yaml_errors
from campaign.model import CONFIRM_STEP  # the double opt-in email's id; no series step may use it

MAX_SCHEDULE_BYTES = 1_000_000
MAX_YAML_NODES = 50_000
WEEKDAYS = ("mon", "tue", "wed", "thu", "fri", "sat", "sun")
EXIT_REASONS = ("converted", "unsubscribed", "bounced", "replied")
ALWAYS_EXIT = ("unsubscribed", "bounced")
_DELAY_PART = re.compile(r"(\d+)\s*([wdhm])")
_DELAY_FULL = re.compile(r"^\s*(\d+\s*[wdhm]\s*)+$")
_SLUG = r"^[a-z0-9][a-z0-9-]*$"
_UNITS = {"w": "weeks", "d": "days", "h": "hours", "m": "minutes"}


@dataclass(frozen=True)
class ScheduleIssue:
    """One problem in a schedule file, pointing at the line a marketer must fix."""

    file: str
    line: int | None
    field: str  # the setting's path, `steps[1].subject`, for programs and tests
    message: str  # a sentence that names the setting, so it reads alone
    where: str = ""  # `step 2 (pain-types)` when the problem is in a step

    @property
    def text(self) -> str:
        """The problem without its file and line, as the live preview shows it."""
        return f"{self.where}: {self.message}" if self.where else self.message

    def __str__(self) -> str:
        place = f"{self.file}:{self.line}" if self.line else self.file
        return f"{place}: {self.text}"


class WarningKind(StrEnum):
    """What a warning is about. A warning never stops a send (`schedule check` exits 0), but
    `schedule check --strict` makes each an error, for CI."""

    LONG_SUBJECT = "long subject"  # inboxes cut a subject at about 60 characters
    NO_PREHEADER = "no preheader"  # the inbox then shows the email's first words instead
    LONG_PREHEADER = "long preheader"  # inboxes show about 100 characters
    LONG_EMAIL = "long email"  # over ~350 words, readers stop reading
    HEAVY_HTML = "heavy HTML"  # Gmail clips an HTML part over 102 KB
    TIMING = "timing"  # the text names a time the schedule contradicts
    INHERITED = "inherited"  # a value new-series copied from another series, not yet reviewed
    # A teaser names the next step, which has a condition: leads who skip it read about an
    # email they will not get.
    CONDITIONAL_TEASER = "conditional teaser"


@dataclass(frozen=True)
class ScheduleWarning:
    """Something that will not break the series but a reader or a filter will notice, kept
    apart from `ScheduleIssue` (an error) so nothing can mistake one for the other."""

    kind: WarningKind
    file: str
    line: int | None
    where: str  # "step 2 (pain-types)" or a setting like "sender.from"
    message: str

    def __str__(self) -> str:
        place = f"{self.file}:{self.line}" if self.line else self.file
        return (
            f"{place}: {self.where}: {self.message}" if self.where else f"{place}: {self.message}"
        )


MAX_SUBJECT = 60
MAX_PREHEADER = 100
INHERITED_FIELDS = (
    "sender.from",
    "sender.reply_to",
    "clinic.name",
    "clinic.postal_address",
    "booking_url",
)


def variant_name(index: int) -> str:
    """A subject test's variants as marketers call them: A, B, C…"""
    return chr(ord("A") + index)


def step_label(number: int, step_id: str) -> str:
    """A step as a marketer counts it: `step 2 (pain-types)`, from 1."""
    return f"step {number} ({step_id})"


class _FieldValueError(ValueError):
    """A model-level problem that belongs to one nested field, so its line can be shown."""

    def __init__(self, where: tuple[str | int, ...], message: str):
        super().__init__(message)
        self.where = where


class ScheduleError(Exception):
    """Every problem found in a schedule, so the marketer fixes them in one pass.

    `stand_in` is the schedule with each broken setting replaced by a harmless valid value,
    when there is one: good enough to check the templates in the same pass, never to send.
    """

    def __init__(self, issues: Iterable[ScheduleIssue], stand_in: Schedule | None = None):
        self.issues = list(issues)
        self.stand_in = stand_in
        self.loaded_stand_in: LoadedSchedule | None = None  # set by `load_schedule`
        super().__init__("\n".join(str(issue) for issue in self.issues))


def parse_delay(value: Any) -> timedelta:
    """Read a delay such as `7d`, `12h`, `30m`, `1w` or `1d12h` (a bare number is days)."""
    if isinstance(value, bool):
        raise ValueError("a delay is a duration such as 7d, 12h or 30m")
    if isinstance(value, int):
        value = f"{value}d"
    if isinstance(value, timedelta):
        return value
    if not isinstance(value, str) or not _DELAY_FULL.match(value):
        raise ValueError(f"{value!r} is not a delay; write it like 7d, 12h, 30m or 1w")
    parts: dict[str, int] = {}
    for amount, unit in _DELAY_PART.findall(value):
        if len(amount) > 6:
            raise ValueError(f"{value!r} is far too long a delay")
        parts[_UNITS[unit]] = parts.get(_UNITS[unit], 0) + int(amount)
    delay = timedelta(**parts)
    if delay > timedelta(days=3650):
        raise ValueError(f"{value!r} is longer than ten years")
    return delay


def format_delay(delay: timedelta) -> str:
    """The inverse of `parse_delay`, for messages and previews."""
    minutes = int(delay.total_seconds() // 60)
    if minutes == 0:
        return "0d"
    out = []
    for unit, size in (("d", 1440), ("h", 60), ("m", 1)):
        amount, minutes = divmod(minutes, size)
        if amount:
            out.append(f"{amount}{unit}")
    return "".join(out)


def format_clock(value: time) -> str:
    """A window bound as a marketer writes it (`09:00`, `24:00`), for messages and new files."""
    return "24:00" if value == time.max else f"{value:%H:%M}"


def _check_zone(name: str) -> str:
    try:
        ZoneInfo(name)
    except (ZoneInfoNotFoundError, ValueError):
        raise ValueError(f"{name!r} is not a known time zone (like Europe/London)") from None
    return name


def check_address(value: str) -> str:
    """Accept `Name <addr>` or `addr`; refuse anything an SMTP server or a header would choke on."""
    if any(ch in value for ch in "\r\n\0"):
        raise ValueError("an address may not contain line breaks")
    parsed = getaddresses([value])
    if len(parsed) != 1 or not parsed[0][1]:
        raise ValueError(f"{value!r} is not one email address")
    try:
        validate_email(parsed[0][1], check_deliverability=False)
    except EmailNotValidError as exc:
        raise ValueError(f"{value!r} is not a valid email address: {exc}") from None
    return value


def _single_line(value: str) -> str:
    if any(ch in value for ch in "\r\n\0"):
        raise ValueError("must be on one line (line breaks would break the email header)")
    return value


def _parse_clock(value: Any) -> Any:
    if isinstance(value, int) and not isinstance(value, bool):
        # YAML 1.1 reads 09:00 unquoted as a base-60 number (540); turn it back into a time.
        hours, minutes = divmod(value, 60)
        return time(hours, minutes) if 0 <= hours < 24 else value
    if value == "24:00":
        return time.max
    return value


Delay = Annotated[timedelta, BeforeValidator(parse_delay)]
Zone = Annotated[str, AfterValidator(_check_zone)]
Address = Annotated[str, AfterValidator(check_address)]
OneLine = Annotated[str, AfterValidator(_single_line)]
Clock = Annotated[time, BeforeValidator(_parse_clock)]


class _Model(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True, populate_by_name=True)


class CampaignInfo(_Model):
    id: Annotated[str, Field(pattern=_SLUG, max_length=64)]
    name: Annotated[OneLine, Field(min_length=1, max_length=200)]


def check_return_path(value: str) -> str:
    """A bare ASCII `local@domain` without `+`: the engine writes `local+TOKEN@domain` (VERP),
    so the local part must leave room for the token (64 characters in all, RFC 5321)."""
    value = check_address(value)
    local, _, domain = value.rpartition("@")
    if value != value.strip() or "<" in value or not value.isascii() or "+" in local:
        raise ValueError(
            f"{value!r}: write a bare ASCII address without '+', like bounces@bounce.example.com"
        )
    if len(local) > 30 or not domain:
        raise ValueError(f"{value!r}: the local part leaves no room for the delivery's token")
    return value.lower()


class Sender(_Model):
    from_: Annotated[Address, Field(alias="from")]
    reply_to: Address | None = None
    # The envelope sender (MAIL FROM) as `local+TOKEN@domain`, naming the delivery, so that a
    # bounce finds its lead even when its text is unreadable (campaign.inbound.verp).
    return_path: Annotated[str, AfterValidator(check_return_path)] | None = None


class Inbound(_Model):
    """What mail that comes back does to a lead (campaign.inbound)."""

    # Emails in a row (the lead's last ones sent) that each soft-bounced before the lead
    # counts as bounced: a mailbox full for weeks is as good as gone.
    soft_bounce_limit: Annotated[int, Field(ge=1, le=20)] = 3


class Clinic(_Model):
    name: Annotated[OneLine, Field(min_length=1, max_length=200)]
    postal_address: Annotated[OneLine, Field(min_length=5, max_length=300)]


class SendWindow(_Model):
    """When emails may arrive, in each lead's own time zone."""

    days: Annotated[list[Literal[WEEKDAYS]], Field(min_length=1)]  # type: ignore[valid-type]
    start: Clock = time(9, 0)
    end: Clock = time(17, 0)

    @field_validator("days", mode="before")
    @classmethod
    def _lowercase(cls, value: Any) -> Any:
        if isinstance(value, list):
            return [v.strip().lower()[:3] if isinstance(v, str) else v for v in value]
        return value

    @model_validator(mode="after")
    def _not_empty(self) -> SendWindow:
        if self.end <= self.start:
            raise ValueError(
                f"the window is empty: end {self.end:%H:%M} is not after start {self.start:%H:%M}"
            )
        return self

    @cached_property
    def weekdays(self) -> frozenset[int]:
        return frozenset(WEEKDAYS.index(day) for day in self.days)


# A schedule must open at least once in this many days whatever its closed dates, so that
# finding the next opening always ends (`Schedule._opens_again`, `planner.next_opening`).
MAX_CLOSED_RUN = 366
MAX_CLOSED_DATES = 1000


def _closed_date(value: Any) -> Any:
    """A closed day as YAML reads it (2026-12-25 is already a date) or as quoted text; a time
    of day makes no sense for a whole closed day."""
    if isinstance(value, datetime):
        raise ValueError(
            f"{value.isoformat(sep=' ')} has a time; write the day only, like 2026-12-25"
        )
    if isinstance(value, date):
        return value
    if isinstance(value, str):
        try:
            return date.fromisoformat(value.strip())
        except ValueError:
            pass
    raise ValueError(f"{value!r} is not a date; write it like 2026-12-25 (year-month-day)")


ClosedDate = Annotated[date, BeforeValidator(_closed_date)]


@cache
def _supported_calendars() -> dict[str, list[str]]:
    """The countries the `holidays` package knows, with their subdivisions. Imported only
    for a schedule that names holidays: the package takes a moment to load."""
    import holidays as calendars

    return dict(calendars.list_supported_countries())


@cache
def holiday_names(country: str, subdivision: str | None, year: int) -> dict[date, str]:
    """One year's public holidays, computed once per process; a new calendar object per
    year, so threads never share one that is still filling in its years."""
    import holidays as calendars

    found = calendars.country_holidays(country, subdiv=subdivision, years=year)
    return {day: str(name) for day, name in found.items()}


class Holidays(_Model):
    """A country's public holidays (and its subdivision's, like a US state), no email
    landing on one: `holidays: {country: US, subdivision: IL}`."""

    country: Annotated[str, Field(min_length=2, max_length=3)]
    subdivision: Annotated[str, Field(min_length=1, max_length=40)] | None = None

    @field_validator("country", mode="before")
    @classmethod
    def _upper(cls, value: Any) -> Any:
        return value.strip().upper() if isinstance(value, str) else value

    @model_validator(mode="after")
    def _known(self) -> Holidays:
        known = _supported_calendars()
        if self.country not in known:
            close = wording.did_you_mean(self.country, list(known))
            raise _FieldValueError(
                ("country",),
                f"{self.country!r} is not a country the holidays calendar knows; write its "
                f"two-letter code, like US, GB or DE.{close}",
            )
        subdivisions = known[self.country]
        if self.subdivision is not None and self.subdivision not in subdivisions:
            listing = ", ".join(subdivisions[:60]) or "none"
            raise _FieldValueError(
                ("subdivision",),
                f"{self.subdivision!r} is not a subdivision of {self.country}; "
                f"its subdivisions: {listing}",
            )
        return self

    def on(self, day: date) -> str | None:
        """The holiday's name on `day`, or None."""
        return holiday_names(self.country, self.subdivision, day.year).get(day)


class FrequencyCap(_Model):
    """At most `max` emails to one lead within any `per`, from every series together."""

    max: Annotated[int, Field(ge=1, le=100)]
    per: Delay

    @field_validator("per")
    @classmethod
    def _positive(cls, per: timedelta) -> timedelta:
        if not timedelta(minutes=1) <= per <= timedelta(days=365):
            raise ValueError(f"{format_delay(per)!r} must be from 1m to 365d, like 2d")
        return per

    def describe(self) -> str:
        """As `plan` says it: `1 per 2 days`, `3 per week`, `2 per 12 hours`."""
        seconds = int(self.per.total_seconds())
        if seconds == 7 * 86400:
            span = "week"
        elif seconds % 86400 == 0:
            span = "day" if seconds == 86400 else f"{seconds // 86400} days"
        elif seconds % 3600 == 0:
            span = "hour" if seconds == 3600 else f"{seconds // 3600} hours"
        else:
            span = format_delay(self.per)
        return f"{self.max} per {span}"


class PersonalField(_Model):
    fallback: Annotated[str, Field(max_length=200)] = ""


class RateLimit(_Model):
    per_second: Annotated[float, Field(gt=0, le=10_000)] | None = None
    per_minute: Annotated[int, Field(gt=0, le=1_000_000)] | None = None
    per_hour: Annotated[int, Field(gt=0, le=10_000_000)] | None = None
    per_connection: Annotated[int, Field(gt=0, le=100_000)] = 100


class Retry(_Model):
    attempts: Annotated[int, Field(ge=1, le=20)] = 6
    first_delay: Delay = timedelta(minutes=1)
    max_delay: Delay = timedelta(hours=6)
    # While the relay itself fails no attempt is spent; like an MTA's queue lifetime, a
    # message that has waited this long since it was due then fails instead.
    max_age: Delay = timedelta(days=5)


SubjectLine = Annotated[OneLine, Field(min_length=1, max_length=250)]
MAX_VARIANTS = 10
StepId = Annotated[str, Field(pattern=_SLUG, max_length=64)]


class SubjectVariant(_Model):
    """One subject of a subject test, and its share of the leads (weights are relative)."""

    text: SubjectLine = Field(alias="subject")
    weight: Annotated[int, Field(ge=1, le=1000)] = 1


def _variant(value: Any) -> Any:
    return {"subject": value} if isinstance(value, str) else value


Variant = Annotated[SubjectVariant, BeforeValidator(_variant)]


def _subjects_kind(value: Any) -> str:
    return "list[test]" if isinstance(value, list) else "str[one]"


# One subject, or a subject test's list: only the kind written is validated, so a mistake
# in either is reported once, in its own words. (The tags carry "[" so that error paths leave
# them out, as they do pydantic's own union branch names: see `_error_path`.)
Subjects = Annotated[
    Annotated[SubjectLine, Tag("str[one]")] | Annotated[list[Variant], Tag("list[test]")],
    Discriminator(_subjects_kind),
]


class Condition(_Model):
    """When a step is sent, judged when it falls due: otherwise it is skipped (never sent,
    never retried) and the series goes on. Exactly one of the fields is given."""

    clicked: StepId | None = None  # a person clicked a link in that step's email
    not_clicked: StepId | None = None
    clicked_link: Literal["booking"] | None = None  # that link, in any email so far
    attribute: Annotated[dict[str, OneLine], Field(min_length=1, max_length=10)] | None = None

    @model_validator(mode="after")
    def _exactly_one(self) -> Condition:
        given = [name for name in type(self).model_fields if getattr(self, name) is not None]
        if len(given) != 1:
            raise ValueError(
                "give exactly one of clicked: STEP, not_clicked: STEP, clicked_link: booking "
                f"or attribute: {{NAME: VALUE}} (found {', '.join(given) or 'none'})"
            )
        return self

    def describe(self, label: Callable[[str], str] = str) -> str:
        """As plans and reports print it: `clicked step 1 (mechanisms)`."""
        if self.clicked is not None:
            return f"clicked {label(self.clicked)}"
        if self.not_clicked is not None:
            return f"did not click {label(self.not_clicked)}"
        if self.clicked_link is not None:
            return f"clicked the {self.clicked_link} link"
        pairs = ", ".join(f"{k}={v}" for k, v in (self.attribute or {}).items())
        return f"attribute {pairs}"


class Step(_Model):
    id: StepId
    template: Annotated[str, Field(min_length=1, max_length=200)]
    # One subject, or a subject test: a list of subjects (or {subject, weight}), one per lead.
    subject: Subjects
    preheader: Annotated[OneLine, Field(max_length=250)] = ""
    delay: Delay
    condition: Condition | None = Field(default=None, alias="if")

    @field_validator("subject", mode="before")
    @classmethod
    def _a_test_has_variants(cls, value: Any) -> Any:
        if isinstance(value, list) and not 2 <= len(value) <= MAX_VARIANTS:
            raise ValueError(
                f"a subject test needs 2 to {MAX_VARIANTS} subjects (found {len(value)}); "
                "for one subject, write it as text"
            )
        return value

    @cached_property
    def subjects(self) -> tuple[SubjectVariant, ...]:
        """The step's subjects: one, or the variants of its subject test in order."""
        if isinstance(self.subject, str):
            return (SubjectVariant(text=self.subject),)
        return tuple(self.subject)

    @property
    def first_subject(self) -> str:
        return self.subjects[0].text


class Confirmation(_Model):
    """The one email a web signup gets under double opt-in; its link activates the lead."""

    template: Annotated[str, Field(min_length=1, max_length=200)]
    subject: Annotated[OneLine, Field(min_length=1, max_length=250)]
    preheader: Annotated[OneLine, Field(max_length=250)] = ""


def _default_fields() -> dict[str, PersonalField]:
    return {"first_name": PersonalField(fallback="there")}


class Schedule(_Model):
    """A validated campaign: who sends, when emails may arrive, and the steps in order."""

    campaign: CampaignInfo
    templates: str = "templates/emails"
    sender: Sender
    clinic: Clinic
    booking_url: HttpUrl
    timezone: Zone
    send_window: SendWindow
    personal_fields: dict[Annotated[str, Field(pattern=r"^[a-z_][a-z0-9_]*$")], PersonalField] = (
        Field(default_factory=_default_fields)
    )
    exit_on: list[Literal[EXIT_REASONS]] = list(EXIT_REASONS)  # type: ignore[valid-type]
    rate_limit: RateLimit = RateLimit()
    retry: Retry = Retry()
    inbound: Inbound = Inbound()
    utm: dict[str, OneLine] = Field(default_factory=dict)
    double_opt_in: bool = False
    confirm: Confirmation | None = None
    # Settings new-series copied from another series, with the value copied: `schedule
    # check` asks for a review of each while it still has that value.
    inherited: dict[Literal[INHERITED_FIELDS], str] = Field(default_factory=dict)  # type: ignore[valid-type]
    # Days no email lands on, in each lead's own time zone: dates, and a country's holidays.
    closed: Annotated[list[ClosedDate], Field(max_length=MAX_CLOSED_DATES)] = Field(
        default_factory=list
    )
    holidays: Holidays | None = None
    frequency_cap: FrequencyCap | None = None
    steps: Annotated[list[Step], Field(min_length=1, max_length=100)]

    @field_validator("exit_on")
    @classmethod
    def _opt_outs_always_exit(cls, reasons: list[str]) -> list[str]:
        missing = [reason for reason in ALWAYS_EXIT if reason not in reasons]
        if missing:
            raise ValueError(
                f"must include {' and '.join(missing)}: mailing people who unsubscribed breaks "
                "the law and mailing addresses that bounce ruins deliverability; only "
                "converted and replied may be left out (such leads then keep getting the series)"
            )
        return reasons

    @model_validator(mode="after")
    def _confirmation_for_double_opt_in(self) -> Schedule:
        if self.double_opt_in and self.confirm is None:
            raise _FieldValueError(
                ("double_opt_in",),
                "it is true but there is no confirm: section (the confirmation email's "
                "subject and template); add one or set double_opt_in: false",
            )
        if self.double_opt_in and CONFIRM_STEP in self.steps_by_id:
            index = [step.id for step in self.steps].index(CONFIRM_STEP)
            raise _FieldValueError(
                ("steps", index, "id"),
                f"{CONFIRM_STEP!r} is the confirmation email's id under double_opt_in; "
                "rename this step",
            )
        return self

    @field_validator("steps")
    @classmethod
    def _conditions_look_back(cls, steps: list[Step]) -> list[Step]:
        """A condition can only name a step sent before it: a later one is not yet known."""
        earlier: list[str] = []
        for index, step in enumerate(steps):
            condition = step.condition
            named = condition and (condition.clicked or condition.not_clicked)
            key = "clicked" if condition and condition.clicked else "not_clicked"
            if named and named not in earlier:
                where = (
                    "is this step itself"
                    if named == step.id
                    else ("comes later" if named in {s.id for s in steps} else "is not a step")
                )
                raise _FieldValueError(
                    (index, "if", key),
                    f"{named!r} {where}; a condition names an earlier step "
                    f"({', '.join(earlier) or 'none before this one'})",
                )
            earlier.append(step.id)
        return steps

    @field_validator("steps")
    @classmethod
    def _later_steps_wait(cls, steps: list[Step]) -> list[Step]:
        for index, step in enumerate(steps[1:], start=1):
            if step.delay <= timedelta(0):
                raise _FieldValueError(
                    (index, "delay"),
                    "must be more than 0 after the first step: a delay of 0 would send this "
                    "email together with the one before it",
                )
        return steps

    @model_validator(mode="after")
    def _opens_again(self) -> Schedule:
        """Closed dates may not shut the send window for a whole year: the next opening must
        always be found. Only runs of closed dates can do that (a window day comes every
        week, and holidays alone never close one for long), so only they are walked."""
        if not self.closed:
            return self
        weekdays = self.send_window.weekdays
        open_after = date.min
        for start in sorted(self.closed_dates):
            if start < open_after:
                continue  # inside a run already walked, which ended at an open day
            day = start
            while day.weekday() not in weekdays or self.is_closed(day):
                day += timedelta(days=1)
                if day - start >= timedelta(days=MAX_CLOSED_RUN):
                    raise _FieldValueError(
                        ("closed",),
                        f"from {start.isoformat()} every day of the send window is closed for "
                        f"more than {MAX_CLOSED_RUN} days; leave at least one open day a year",
                    )
            open_after = day
        return self

    @cached_property
    def closed_dates(self) -> frozenset[date]:
        return frozenset(self.closed)

    @property
    def has_closed_days(self) -> bool:
        return bool(self.closed) or self.holidays is not None

    def closed_reason(self, day: date) -> str | None:
        """Why no email lands on this local date (`closed`, or the holiday's name), or None
        when it is open."""
        if day in self.closed_dates:
            return "closed"
        holiday = self.holidays.on(day) if self.holidays is not None else None
        return f"closed ({holiday})" if holiday else None

    def is_closed(self, day: date) -> bool:
        return self.closed_reason(day) is not None

    @cached_property
    def steps_by_id(self) -> dict[str, Step]:
        return {step.id: step for step in self.steps}

    def step(self, step_id: str) -> Step | None:
        return self.steps_by_id.get(step_id)

    @cached_property
    def confirmation(self) -> Step | None:
        """The double opt-in email as a step outside the series, or None when it is off."""
        if not self.double_opt_in or self.confirm is None:
            return None
        return Step(
            id=CONFIRM_STEP,
            template=self.confirm.template,
            subject=self.confirm.subject,
            preheader=self.confirm.preheader,
            delay=timedelta(0),
        )

    @property
    def zone(self) -> ZoneInfo:
        return ZoneInfo(self.timezone)


@dataclass(frozen=True)
class LoadedSchedule:
    """A schedule with where it came from, so templates resolve beside the file."""

    schedule: Schedule
    path: Path
    source_digest: str = field(compare=False)

    @property
    def templates_dir(self) -> Path:
        return (self.path.parent / self.schedule.templates).resolve()


# --- YAML with line numbers -------------------------------------------------------------

Path_ = tuple[str | int, ...]


class _Reader:
    """Turns a composed YAML node tree into plain data, remembering each field's line.

    Building from the node tree (instead of `yaml.safe_load`) lets us refuse duplicate
    keys and alias bombs before they expand, and map validation errors back to lines.
    """

    def __init__(self, file: str):
        self.file = file
        self.lines: dict[Path_, int] = {}
        # Problems found while reading: the path, its line and the sentence for its name,
        # which is known only once the steps (and so their ids) have been read.
        self.problems: list[tuple[Path_, int, Callable[[str], str]]] = []
        self._scalars = yaml.constructor.SafeConstructor()
        self._budget = MAX_YAML_NODES

    def read(self, node: yaml.Node, path: Path_ = ()) -> Any:
        self._budget -= 1
        if self._budget < 0:
            raise _TooLarge
        self.lines.setdefault(path, node.start_mark.line + 1)
        if isinstance(node, yaml.MappingNode):
            return self._mapping(node, path)
        if isinstance(node, yaml.SequenceNode):
            return [self.read(item, (*path, i)) for i, item in enumerate(node.value)]
        try:
            return self._scalars.construct_object(node)
        except ValueError:
            # A date that does not exist (2026-02-30): the text, which validation then
            # refuses at its own line.
            if node.tag != "tag:yaml.org,2002:timestamp":
                raise
            return node.value

    def _mapping(self, node: yaml.MappingNode, path: Path_) -> dict[str, Any]:
        out: dict[str, Any] = {}
        for key_node, value_node in node.value:
            key = self._scalars.construct_object(key_node)
            if not isinstance(key, str | int):
                self._problem(
                    key_node,
                    path,
                    lambda name: f"a key in {name or 'the file'} is not a plain word",
                )
                continue
            key = str(key)
            if key in out:
                self._problem(
                    key_node, (*path, key), lambda name: f"{name} appears twice; keep one"
                )
                continue
            self.lines[(*path, key)] = key_node.start_mark.line + 1
            out[key] = self.read(value_node, (*path, key))
        return out

    def _problem(self, node: yaml.Node, path: Path_, sentence: Callable[[str], str]) -> None:
        self.problems.append((path, node.start_mark.line + 1, sentence))

    def issues(self, data: Any) -> list[ScheduleIssue]:
        """The problems found while reading, each placed in its step."""
        steps = data.get("steps") if isinstance(data, dict) else None
        return [issue_at(self, steps, path, say, line) for path, line, say in self.problems]

    def line_of(self, path: Path_) -> int | None:
        while path:
            if path in self.lines:
                return self.lines[path]
            path = path[:-1]
        return self.lines.get(())


class _TooLarge(Exception):
    pass


def dotted(path: Path_) -> str:
    """`('steps', 2, 'delay')` → `steps[2].delay`: the way a marketer reads it."""
    out = ""
    for part in path:
        out += f"[{part}]" if isinstance(part, int) else (f".{part}" if out else str(part))
    return out


def issue_at(
    reader: _Reader,
    steps: Any,
    path: Path_,
    say: Callable[[str], str] | str,
    line: int | None = None,
) -> ScheduleIssue:
    """A problem with the setting at `path`, said the way a marketer counts: a step's own
    settings name the step (`step 2 (pain-types)`) and then the setting (`subject`). `say`
    makes the sentence from the setting's name there, or is the sentence."""
    where, name = "", dotted(path)
    if len(path) >= 2 and path[0] == "steps" and isinstance(path[1], int):
        index = path[1]
        item = steps[index] if isinstance(steps, list) and index < len(steps) else None
        step_id = item.get("id") if isinstance(item, dict) else None
        valid = isinstance(step_id, str) and bool(step_id)
        where = step_label(index + 1, str(step_id)) if valid else f"step {index + 1}"
        name = dotted(path[2:]) or "the step"
    line = line if line is not None else reader.line_of(path)
    message = say if isinstance(say, str) else say(name)
    return ScheduleIssue(reader.file, line, dotted(path), message, where)


def _model_in(annotation: Any) -> type[BaseModel] | None:
    """The settings model inside an annotation (`list[Step]`, `Confirmation | None`)."""
    if isinstance(annotation, type) and issubclass(annotation, BaseModel):
        return annotation
    return next(filter(None, (_model_in(arg) for arg in get_args(annotation))), None)


def _settings_of(model: type[BaseModel]) -> dict[str, Any]:
    return {info.alias or name: info.annotation for name, info in model.model_fields.items()}


def known_settings(path: Path_) -> list[str]:
    """The settings allowed beside the one at `path`, for "did you mean" on a typo."""
    model: type[BaseModel] | None = Schedule
    for part in path[:-1]:
        if model is not None and isinstance(part, str) and part in _settings_of(model):
            model = _model_in(_settings_of(model)[part])
    return list(_settings_of(model)) if model is not None else []


def _error_path(error: ErrorDetails) -> Path_:
    """Where a validation error is, down to the field a model-level check names."""
    loc = tuple(p for p in error["loc"] if not (isinstance(p, str) and "[" in p))
    cause = error.get("ctx", {}).get("error")
    return (*loc, *cause.where) if isinstance(cause, _FieldValueError) else loc


def _pydantic_issues(exc: ValidationError, reader: _Reader, data: Any) -> list[ScheduleIssue]:
    issues = []
    for error in exc.errors():
        loc = _error_path(error)
        known = known_settings(loc)
        issues.append(
            issue_at(
                reader,
                data.get("steps"),
                loc,
                partial(wording.plain_message, error, known=known),
            )
        )
    return issues


def _template_file(templates_dir: Path, name: Any) -> Path | None:
    """The step's template file, or None when the name does not lead to one in the folder."""
    if not isinstance(name, str) or not name or "\0" in name:
        return None
    template = (templates_dir / name).resolve()
    inside = template.is_relative_to(templates_dir) and template.is_file()
    return template if inside else None


def _templates_dir(templates: Any, base_dir: Path) -> Path | None:
    if not isinstance(templates, str) or "\0" in templates:
        return None
    folder = (base_dir / templates).resolve()
    return folder if folder.is_dir() else None


def _template_issues(
    templates: Any, steps: list[tuple[Any, Any]], base_dir: Path, reader: _Reader, raw: Any
) -> list[ScheduleIssue]:
    """Step ids used twice and templates not in the folder. Run on the raw values too when
    other settings are wrong, so those problems are reported in the same pass."""
    if not isinstance(templates, str):
        return []
    templates_dir = _templates_dir(templates, base_dir)
    if templates_dir is None:
        return [
            issue_at(
                reader,
                raw,
                ("templates",),
                f"the templates folder {templates!r} was not found next to {reader.file}",
            )
        ]
    issues = []
    seen: dict[str, int] = {}
    for index, (step_id, name) in enumerate(steps):
        if isinstance(step_id, str) and step_id in seen:
            first = step_label(seen[step_id] + 1, step_id)
            issues.append(
                issue_at(
                    reader,
                    raw,
                    ("steps", index, "id"),
                    f"the id is already used by {first}; give each step its own id",
                )
            )
        if isinstance(step_id, str):
            seen.setdefault(step_id, index)
        if not isinstance(name, str) or not name:
            continue  # a missing or empty template is already reported by validation
        if _template_file(templates_dir, name) is None:
            close = wording.did_you_mean(
                name, [p.name for p in templates_dir.glob("*.j2") if p.name != "layout.html.j2"]
            )
            issues.append(
                issue_at(
                    reader,
                    raw,
                    ("steps", index, "template"),
                    f"template {name!r} not found in {templates}/.{close}",
                )
            )
    return issues


# Harmless valid values for the settings a schedule must have, put where the marketer's
# value is broken so the templates can still be checked in the same pass. Never sent.
_STAND_INS: dict[str, Any] = {
    "campaign": {"id": "series", "name": "Series"},
    "sender": {"from": "sender@example.com"},
    "clinic": {"name": "Clinic", "postal_address": "1 Example Street"},
    "booking_url": "https://example.com/",
    "timezone": "UTC",
    "send_window": {"days": list(WEEKDAYS)},
}
_STEP_STAND_INS = {"subject": "Subject", "preheader": "", "delay": "7d"}


def _stand_in(data: dict[str, Any], errors: list[Path_], base_dir: Path) -> Schedule | None:
    """The schedule with each broken setting (at `errors`) replaced by a stand-in, and the
    steps whose template cannot be found left out; None when that still does not validate."""
    data = copy.deepcopy(data)
    steps = data.get("steps")
    if not isinstance(steps, list):
        return None
    dropped: set[int] = set()
    for loc in errors:
        if len(loc) >= 2 and loc[0] == "steps" and isinstance(loc[1], int):
            item = steps[loc[1]] if loc[1] < len(steps) else None
            key = loc[2] if len(loc) > 2 else None
            if isinstance(item, dict) and key in _STEP_STAND_INS:
                item[key] = _STEP_STAND_INS[str(key)]
            elif isinstance(item, dict) and key == "id":
                item["id"] = f"step-{loc[1] + 1}"
            elif isinstance(item, dict) and isinstance(key, str) and key not in item:
                continue  # a missing optional field would not have failed
            elif isinstance(item, dict) and isinstance(key, str) and key not in Step.model_fields:
                item.pop(key)  # an unknown key
            else:
                dropped.add(loc[1])
        elif loc and isinstance(loc[0], str):
            if loc[0] in _STAND_INS:
                data[loc[0]] = copy.deepcopy(_STAND_INS[loc[0]])
            else:
                data.pop(loc[0], None)  # an optional setting goes back to its default
    templates_dir = _templates_dir(data.get("templates", "templates/emails"), base_dir)
    if templates_dir is None:
        return None
    data["steps"] = [
        item
        for index, item in enumerate(steps)
        if index not in dropped
        and isinstance(item, dict)
        and _template_file(templates_dir, item.get("template"))
    ]
    try:
        return Schedule.model_validate(data)
    except ValidationError:
        return None


def _syntax_issue(exc: yaml.MarkedYAMLError, text: str, file: str) -> ScheduleIssue:
    lines = text.splitlines()
    line, message = yaml_errors.explain(exc, lines)
    where = yaml_errors.step_at(lines, line) if line else ""
    return ScheduleIssue(file, line, "", message, where)


def _read(text: str, reader: _Reader) -> dict[str, Any]:
    """The YAML as plain data, or `ScheduleError` when it is not a mapping of settings."""
    file = reader.file
    if len(text.encode("utf-8", "replace")) > MAX_SCHEDULE_BYTES:
        raise ScheduleError(
            [ScheduleIssue(file, None, "", f"is larger than {MAX_SCHEDULE_BYTES // 1000} kB")]
        )
    try:
        node = yaml.compose(text, Loader=yaml.SafeLoader)
        data = reader.read(node) if node is not None else None
    except yaml.MarkedYAMLError as exc:
        raise ScheduleError([_syntax_issue(exc, text, file)]) from None
    except _TooLarge:
        raise ScheduleError(
            [ScheduleIssue(file, None, "", "expands to too many values (alias bomb?)")]
        ) from None
    except (yaml.YAMLError, ValueError, OverflowError) as exc:
        raise ScheduleError([ScheduleIssue(file, None, "", f"cannot be read: {exc}")]) from None
    if not isinstance(data, dict):
        raise ScheduleError(
            [ScheduleIssue(file, 1, "", "must be a mapping of settings (campaign:, steps:, ...)")]
        )
    return data


def parse_schedule(text: str, file: str, base_dir: Path) -> Schedule:
    """Validate schedule text; raise `ScheduleError` listing every problem, with a stand-in
    schedule when the templates can still be checked."""
    reader = _Reader(file)
    data = _read(text, reader)
    issues = reader.issues(data)
    schedule, broken = None, list[Path_]()
    try:
        schedule = Schedule.model_validate(data)
    except ValidationError as exc:
        issues.extend(_pydantic_issues(exc, reader, data))
        broken = [_error_path(error) for error in exc.errors()]
    raw = data.get("steps")
    templates = data.get("templates", Schedule.model_fields["templates"].default)
    steps = [
        (s.get("id"), s.get("template")) if isinstance(s, dict) else (None, None)
        for s in (raw if isinstance(raw, list) else [])
    ]
    issues.extend(_template_issues(templates, steps, base_dir, reader, raw))
    if issues:
        stand_in = _stand_in(data, broken, base_dir)
        raise ScheduleError(sorted(issues, key=lambda i: (i.line or 0, i.field)), stand_in)
    assert schedule is not None
    return schedule


def load_schedule(path: str | Path) -> LoadedSchedule:
    """Read and validate a schedule file; raise `ScheduleError` naming file, line and field."""
    path = Path(path)
    name = path.name
    try:
        raw = path.read_bytes()
    except OSError as exc:
        issue = ScheduleIssue(name, None, "", f"cannot be read: {exc.strerror}")
        raise ScheduleError([issue]) from None
    try:
        text = raw.decode("utf-8-sig")
    except UnicodeDecodeError as exc:
        issue = ScheduleIssue(name, None, "", f"is not UTF-8 text ({exc.reason})")
        raise ScheduleError([issue]) from None
    digest = hashlib.sha256(raw).hexdigest()
    try:
        schedule = parse_schedule(text, name, path.parent)
    except ScheduleError as exc:
        if exc.stand_in is not None:
            exc.loaded_stand_in = LoadedSchedule(exc.stand_in, path.resolve(), digest)
        raise
    return LoadedSchedule(schedule, path.resolve(), digest)


def setting_value(schedule: Schedule, dotted_name: str) -> str:
    """A setting by its dotted name (`sender.from`), as text; empty when unset."""
    value: Any = schedule
    for part in dotted_name.split("."):
        value = getattr(value, "from_" if part == "from" else part, None)
    return "" if value is None else str(value)


def _lines(loaded: LoadedSchedule) -> _Reader:
    """The file read again for its lines only; it was valid a moment ago."""
    reader = _Reader(loaded.path.name)
    try:
        node = yaml.compose(loaded.path.read_text(encoding="utf-8-sig"), Loader=yaml.SafeLoader)
        if node is not None:
            reader.read(node)
    except (OSError, yaml.YAMLError, _TooLarge, ValueError):
        pass  # changed under our feet: warnings then go without a line
    return reader


def setting_line(loaded: LoadedSchedule, path: Path_) -> int | None:
    """The line of a setting in a schedule that loaded, for problems found after loading
    (a subject that does not render)."""
    return _lines(loaded).line_of(path)


def schedule_warnings(loaded: LoadedSchedule) -> list[ScheduleWarning]:
    """What the schedule file alone tells: subjects and preheaders that inboxes will cut or
    miss, and values copied from another series that nobody has reviewed yet."""
    schedule, reader = loaded.schedule, _lines(loaded)
    file = reader.file
    out: list[ScheduleWarning] = []

    def warn(kind: WarningKind, path: Path_, where: str, message: str) -> None:
        out.append(ScheduleWarning(kind, file, reader.line_of(path), where, message))

    for index, step in enumerate(schedule.steps):
        where = step_label(index + 1, step.id)
        several = len(step.subjects) > 1
        for number, variant in enumerate(step.subjects):
            if len(variant.text) > MAX_SUBJECT:
                warn(
                    WarningKind.LONG_SUBJECT,
                    ("steps", index, "subject", *((number,) if several else ())),
                    where,
                    f"the subject{f' {variant_name(number)}' if several else ''} has "
                    f"{len(variant.text)} characters; inboxes cut it after about "
                    f"{MAX_SUBJECT}, so put what matters first or shorten it",
                )
        if not step.preheader.strip():
            warn(
                WarningKind.NO_PREHEADER,
                ("steps", index),
                where,
                "no preheader: the inbox will show the email's first words beside the subject "
                "instead; add a one-line summary as preheader:",
            )
        elif len(step.preheader) > MAX_PREHEADER:
            warn(
                WarningKind.LONG_PREHEADER,
                ("steps", index, "preheader"),
                where,
                f"the preheader has {len(step.preheader)} characters; inboxes show about "
                f"{MAX_PREHEADER}",
            )
    for name, copied in schedule.inherited.items():
        if setting_value(schedule, name) == copied:
            warn(
                WarningKind.INHERITED,
                tuple(name.split(".")),
                name,
                f"{copied!r} was copied from another series by new-series; check it is right "
                f"for this one, then change it or delete its line under inherited:",
            )
    return sorted(out, key=lambda w: w.line or 0)
