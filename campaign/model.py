"""The domain's words, shared by every package: leads, deliveries, their statuses, the clock.

Nothing here does I/O. The store builds these from rows, the planner reasons over them and
the shell (sending, web, authoring, cli) passes them around, so a status is spelt once.
"""

from __future__ import annotations

import enum
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field, replace
from datetime import UTC, datetime
from urllib.parse import urlsplit

# Injected wherever "now" matters, so that tests move time instead of sleeping for it.
Clock = Callable[[], datetime]


def utc_now() -> datetime:
    return datetime.now(UTC)


class LeadStatus(enum.StrEnum):
    """Where a lead stands with the clinic; only `active` leads are mailed."""

    ACTIVE = "active"
    PENDING = "pending"  # signed up on the web with double opt-in, not yet confirmed
    UNSUBSCRIBED = "unsubscribed"
    BOUNCED = "bounced"
    CONVERTED = "converted"
    COMPLAINED = "complained"  # reported an email as spam (ARF): never mailed again
    REPLIED = "replied"  # wrote back; the series stops (`exit_on: replied`)
    # A second row for an address already held in other letter case, kept as history when
    # the schema migration made addresses case-insensitive (store/schema.py); never mailed.
    MERGED = "merged"
    # Its personal data removed at the person's request (`leads erase`): the row stays, under
    # a placeholder address, so that counts stay true; never mailed, and never changes again.
    ERASED = "erased"


# The statuses that put the address itself on the suppression list (`store.suppressions`):
# never mailed again by any series or import until an operator lifts it.
SUPPRESSING = frozenset({LeadStatus.BOUNCED, LeadStatus.COMPLAINED, LeadStatus.UNSUBSCRIBED})


class ClickSource(enum.StrEnum):
    """Who opened a tracked link: a person, or a machine opening it for them (a security
    gateway's link scanner, a prefetch). Only a person's click converts a lead."""

    PERSON = "person"
    SCANNER = "scanner"


@dataclass(frozen=True)
class EmailClicks:
    """What the store knows about one email as a link in it is opened: when it was sent
    (None if it never was), and the clicks on it in the moments before, (url, when)."""

    sent_at: datetime | None
    recent: tuple[tuple[str, datetime], ...] = ()


@dataclass(frozen=True)
class ClickVerdict:
    """Who made a click, and why it is thought so (`web.scanners` decides)."""

    source: ClickSource
    reason: str = ""
    # The click completes a burst (several links of one email opened at once): the earlier
    # clicks of the burst were a scanner's too, though each looked like a person's alone.
    burst: bool = False


class EnrollmentState(enum.StrEnum):
    """A lead's place in one series, apart from the lead's own status."""

    ACTIVE = "active"
    EXITED = "exited"  # the lead left: unsubscribed, bounced, booked, merged
    # Kept in the series but sent nothing (`leads pause`) until resumed, which replans the
    # next step from the last email actually sent.
    PAUSED = "paused"


class DeliveryStatus(enum.StrEnum):
    """A delivery's life: `pending → claimed → sending → sent`, or `failed`, `unknown`
    (in doubt after a crash, never resent), `cancelled` (the lead left first)."""

    PENDING = "pending"
    CLAIMED = "claimed"
    SENDING = "sending"
    SENT = "sent"
    FAILED = "failed"
    UNKNOWN = "unknown"
    CANCELLED = "cancelled"
    # Its condition (`if:`) was false when it fell due: never sent, never retried, and the
    # next step's delay still counts from the last email actually sent.
    SKIPPED = "skipped"


# Planned and not yet attempted: a replan or a lead who leaves may drop these rows.
QUEUED = frozenset({DeliveryStatus.PENDING, DeliveryStatus.CLAIMED})
# Not history: planned, or never attempted.
NOT_HISTORY = frozenset({*QUEUED, DeliveryStatus.CANCELLED})
# Outcomes after which a step counts as passed: sent, given up on, or in doubt. The next
# step's delay counts from the last of these.
PASSED = frozenset({DeliveryStatus.SENT, DeliveryStatus.FAILED, DeliveryStatus.UNKNOWN})
# Outcomes after which the series has moved past a step: passed, or skipped by its condition.
SETTLED = frozenset({*PASSED, DeliveryStatus.SKIPPED})

# The double opt-in email's step id. Its delivery rows share the queue with the series but
# are not part of it: they go to `pending` leads only, and never count as a step passed.
CONFIRM_STEP = "confirm"


class Confirmation(enum.StrEnum):
    """What a double opt-in signup did about the confirmation email (`POST /leads` says)."""

    QUEUED = "queued"  # one is waiting for the sender: just queued, or queued before
    RECENTLY_SENT = "recently sent"  # one was dealt with moments ago: not again so soon


@dataclass(frozen=True)
class Attempt:
    """One delivery in a lead's history: which step, what became of it, and when."""

    step_id: str
    status: DeliveryStatus
    at: datetime


@dataclass(frozen=True)
class LeadState:
    """What the planner needs to know about a lead, read from the store by the shell: when
    it joined, its history, and what it did that a step's condition (`if:`) may ask about."""

    enrolled_at: datetime
    timezone: str | None = None
    status: LeadStatus = LeadStatus.ACTIVE
    history: tuple[Attempt, ...] = field(default_factory=tuple)
    # The links a person (not a scanner) opened: (step, url). Read only for a series with
    # conditions; the planner never needs them to say *when*.
    clicks: tuple[tuple[str, str], ...] = ()
    attributes: Mapping[str, str] = field(default_factory=dict, hash=False)
    # When the lead was mailed, by every series (this one included; in flight and in doubt
    # count too): the frequency cap counts these. Never needed for a series without a cap.
    mailed: tuple[datetime, ...] = ()

    def with_sent(self, step_id: str, at: datetime) -> LeadState:
        return self.with_attempt(step_id, DeliveryStatus.SENT, at)

    def with_attempt(
        self, step_id: str, status: DeliveryStatus, at: datetime, *, mailed: bool = False
    ) -> LeadState:
        """The lead after an attempt at a step (`mailed`: its mailbox got the email, or may
        have). Built field by field, not with `dataclasses.replace`: this runs for every
        email sent, and `replace` costs several times more."""
        return LeadState(
            self.enrolled_at,
            self.timezone,
            self.status,
            (*self.history, Attempt(step_id, status, at)),
            self.clicks,
            self.attributes,
            (*self.mailed, at) if mailed else self.mailed,
        )

    def with_click(self, step_id: str, url: str) -> LeadState:
        return replace(self, clicks=(*self.clicks, (step_id, url)))


@dataclass(frozen=True)
class Lead:
    id: int
    email: str
    first_name: str
    timezone: str | None
    attributes: dict[str, str]
    status: LeadStatus
    created_at: datetime


def is_booking(url: str, booking_url: str) -> bool:
    """Whether a link leads to the booking page: same scheme, host and path, any query (UTM)."""
    a, b = urlsplit(url), urlsplit(booking_url)
    return (a.scheme, a.netloc.lower(), a.path.rstrip("/")) == (
        b.scheme,
        b.netloc.lower(),
        b.path.rstrip("/"),
    )


def address_key(email: str) -> str:
    """What makes two addresses the same lead: letter case does not count.

    `Ana@example.com` and `ana@example.com` reach the same mailbox at every provider that
    matters, so they are one lead, mailed once; the address itself is kept as first typed.
    """
    return email.lower()


@dataclass(frozen=True)
class PlannedDelivery:
    step_id: str
    due_at: datetime


@dataclass(frozen=True)
class NewLead:
    """A validated lead with its first step already planned (by the pure planner)."""

    email: str
    first_name: str
    timezone: str | None
    attributes: dict[str, str]
    first: PlannedDelivery | None
    status: LeadStatus = LeadStatus.ACTIVE


@dataclass(frozen=True)
class Claim:
    """A delivery reserved by `worker`; it is sent only once the queue says `Start.GO`."""

    delivery_id: int
    lead_id: int
    campaign_id: str
    step_id: str
    attempts: int  # this attempt's number, counted when the row is started
    due_at: datetime
    worker: str
    # Read in the reserving transaction, so sending needs no further reads to plan what's next.
    lead: Lead
    enrolled_at: datetime | None
    history: tuple[tuple[str, str, datetime], ...]
    # The links the lead opened (step, url), people's only; read only when a step of the
    # series has a condition (`if:`) to judge.
    clicks: tuple[tuple[str, str], ...] = ()


@dataclass(frozen=True)
class Sent:
    """A message the SMTP server accepted, with the step the planner chose to follow it."""

    claim: Claim
    message_id: str
    sent_at: datetime
    following: PlannedDelivery | None


class Start(enum.Enum):
    """What the store found when it took a reserved row further: put it in flight or ended
    it unsent."""

    GO = "go"  # done: now `sending` (hand it to SMTP), or settled
    LEFT = "left"  # the lead left the series since the reservation, which cancelled it
    GONE = "gone"  # no longer this worker's: a replan or another run's sync took it back
