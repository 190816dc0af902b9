"""`send-test`: one step sent at once to the marketer's own mailbox, as a lead would get it.

A proof is not a delivery: no row is written, no lead changes, no rate-limit slot is taken
and the series' plan is untouched, so it can be sent at any time beside a running engine.
Its subject is marked `[TEST] ` and its To is the address the proof goes to; everything
else (From, List-Unsubscribe, the links, DKIM when configured) is what the lead would get.
"""

from __future__ import annotations

import re
import secrets
from dataclasses import dataclass
from datetime import datetime
from email.utils import parseaddr
from functools import partial

from campaign.authoring.preview import PREVIEW_LEAD_ID, SAMPLE_LEAD
from campaign.config.settings import SmtpSettings
from campaign.leads.intake import normalize_email
from campaign.planner import choose_variant
from campaign.rendering import mime
from campaign.rendering.dkim import DkimSigner
from campaign.rendering.links import LinkSigner
from campaign.rendering.renderer import LeadView, Renderer, TemplateProblem, first_variant
from campaign.sending.transport import DeliveryFailure, Envelope, SmtpTransport
from campaign.store import Store

TEST_MARK = "[TEST] "
# A header field ends at a line break not followed by the white space of a folded line.
_FIELD_END = re.compile(rb"\r\n(?![ \t])")


class ProofRefused(ValueError):
    """What was asked for cannot be sent: an unknown step, a malformed address."""


class ProofFailed(RuntimeError):
    """The proof could not be made or handed over: an unknown lead, a message the lead's data
    cannot build, an SMTP server that is down or refuses it."""


@dataclass(frozen=True)
class Proof:
    """What was sent, for the command to say."""

    step_id: str
    to: str
    subject: str
    lead_email: str  # whose data filled it: the lead's, or the preview's sample lead
    sample: bool
    message_id: str


@dataclass(frozen=True)
class ProofRequest:
    step_id: str
    to: str
    lead_email: str | None = None  # None: the preview's sample lead


def send_test(
    request: ProofRequest,
    renderer: Renderer,
    store: Store | None,
    smtp: SmtpSettings,
    signer: LinkSigner,
    dkim: DkimSigner | None,
    now: datetime,
) -> Proof:
    """Render the step for the lead (or the sample) and hand it to SMTP for `request.to`."""
    schedule = renderer.schedule
    step = schedule.step(request.step_id)
    if step is None:
        steps = ", ".join(s.id for s in schedule.steps)
        raise ProofRefused(
            f"no step {request.step_id!r} in {schedule.campaign.id}; its steps are: {steps}"
        )
    try:
        to = normalize_email(request.to)
    except ValueError as exc:
        raise ProofRefused(f"--to: {exc}") from None
    lead_id, view = _whose(request.lead_email, store)
    links = signer.links(lead_id, schedule.campaign.id, step.id)
    message_id = f"<test.{secrets.token_hex(12)}@{renderer.sender_domain}>"
    try:
        # The subject this lead gets (or got) from a subject test; the sample, the first.
        chosen = partial(choose_variant, schedule.campaign.id, lead_id=lead_id)
        variant = chosen if request.lead_email else first_variant
        email = renderer.render(
            step.id, view, links, now=now, message_id=message_id, variant=variant
        )
    except (TemplateProblem, ValueError, TypeError, LookupError) as exc:
        raise ProofFailed(f"cannot build {step.id} for {view.email}: {exc}") from None
    recipient = mime.wire_address(to)
    message = mime.MimeMessage(
        marked(email.message.data, recipient, TEST_MARK + email.subject), recipient.utf8
    )
    if dkim is not None:
        message = dkim.sign(message, renderer.sender_domain)
    sender = parseaddr(schedule.sender.from_)[1]
    try:
        with SmtpTransport(smtp, per_connection=1) as transport:
            transport.send(Envelope(sender, to, message.data, message.utf8))
    except DeliveryFailure as exc:
        raise ProofFailed(
            f"the SMTP server {smtp.host}:{smtp.port} did not take the test email: {exc}"
        ) from None
    return Proof(
        step.id, to, TEST_MARK + email.subject, view.email, request.lead_email is None, message_id
    )


def _whose(lead_email: str | None, store: Store | None) -> tuple[int, LeadView]:
    """The lead whose data and links fill the proof, or the preview's sample lead."""
    if lead_email is None:
        return PREVIEW_LEAD_ID, SAMPLE_LEAD
    lead = store.leads.lead_by_email(lead_email) if store is not None else None
    if lead is None:
        raise ProofFailed(
            f"no lead {lead_email} in the database (letter case does not count); "
            "leave out --lead to use the sample lead"
        )
    return lead.id, LeadView.of(lead)


def marked(data: bytes, recipient: mime.WireAddress, subject: str) -> bytes:
    """The message with its To and Subject fields replaced, every other byte as rendered."""
    head, blank, rest = data.partition(b"\r\n\r\n")
    fields = []
    for field in _FIELD_END.split(head):
        name = field.partition(b":")[0].strip().lower()
        if name == b"to":
            field = mime.address("To", "", recipient.address, recipient.utf8)[:-2]
        elif name == b"subject":
            field = mime.unstructured("Subject", subject, recipient.utf8)[:-2]
        fields.append(field)
    return b"\r\n".join(fields) + blank + rest
