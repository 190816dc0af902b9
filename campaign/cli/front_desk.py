"""The front desk, one lead at a time: `leads list` (who is where in the series), `leads show`
(everything held about one lead), `leads unsubscribe` (a wish taken by phone), `leads pause`
and `leads resume` (nothing sent for a while, then the series goes on without a burst) and
`send-test` (one step sent at once to a marketer's own mailbox).

Times are printed in UTC (`Z`) and, for what comes next, on the lead's own clock too, since
that is what a lead on the phone asks about.
"""

from __future__ import annotations

import json
import sys
from datetime import datetime
from functools import partial
from typing import Any

import click

from campaign.authoring.timeline import PlannedEmail, lead_emails
from campaign.cli.app import (
    AppContext,
    command,
    console,
    errors,
    existing_store,
    main,
    now_option,
    open_store,
    store_if_any,
)
from campaign.cli.leads import leads_group
from campaign.cli.sending import warn_local_links
from campaign.cli.series import chosen_series
from campaign.config import settings
from campaign.config.schedule import Schedule, variant_name
from campaign.config.settings import SmtpSettings
from campaign.leads.privacy import operator
from campaign.model import DeliveryStatus, EnrollmentState, LeadStatus, utc_now
from campaign.rendering.dkim import dkim_signer
from campaign.rendering.links import LinkSigner
from campaign.sending.dispatcher import lead_plan
from campaign.sending.proof import ProofFailed, ProofRefused, ProofRequest, send_test
from campaign.store.queue import LeadPause
from campaign.store.reads import LeadPlan
from campaign.store.records import LeadLine, LeadRecord, Unsubscribe

STATUS = click.Choice([s.value for s in LeadStatus], case_sensitive=False)
FRONT_DESK = "front desk"


def _utc(moment: datetime | None) -> str:
    return "-" if moment is None else f"{moment:%Y-%m-%d %H:%M}Z"


def _local(email: PlannedEmail, zone: str) -> str:
    return f"{email.local:%a %Y-%m-%d %H:%M} {email.local.tzname()} {zone}"


def next_email(schedule: Schedule, plan: LeadPlan, now: datetime) -> PlannedEmail | None:
    """What the lead gets next and when, as `plan` shows it: the pending row's time, an
    overdue email at the next run, else the planner's time."""
    return next(lead_emails(schedule, plan, now), None)


def _zone_name(schedule: Schedule, plan: LeadPlan) -> str:
    return plan.state.timezone or schedule.timezone


def _last_sent(plan: LeadPlan) -> tuple[str, datetime] | None:
    sent = [a for a in plan.state.history if a.status is DeliveryStatus.SENT]
    last = max(sent, key=lambda a: a.at, default=None)
    return None if last is None else (last.step_id, last.at)


def _next_json(schedule: Schedule, plan: LeadPlan, now: datetime) -> dict[str, Any] | None:
    upcoming = next_email(schedule, plan, now)
    if upcoming is None:
        return None
    return {
        "step": upcoming.step_id,
        "due_at": upcoming.at.isoformat(),
        "local": upcoming.local.isoformat(),
        "timezone": _zone_name(schedule, plan),
        "overdue": upcoming.overdue,
    }


def _next_text(schedule: Schedule, plan: LeadPlan, now: datetime) -> str:
    upcoming = next_email(schedule, plan, now)
    if upcoming is None:
        if plan.state.status is not LeadStatus.ACTIVE:
            return f"nothing: the lead is {plan.state.status}"
        return "nothing: the series is finished for this lead"
    when = "at the next run (overdue)" if upcoming.overdue else _utc(upcoming.at)
    return f"{upcoming.step_id} {when} ({_local(upcoming, _zone_name(schedule, plan))})"


def _line_json(schedule: Schedule, line: LeadLine, now: datetime) -> dict[str, Any]:
    plan = line.plan
    last = _last_sent(plan)
    return {
        "email": plan.email,
        "first_name": line.first_name,
        "status": plan.state.status.value,
        "timezone": _zone_name(schedule, plan),
        "last_sent": None if last is None else {"step": last[0], "at": last[1].isoformat()},
        "next": _next_json(schedule, plan, now),
    }


def _aligned(rows: list[list[str]]) -> list[str]:
    """Plain columns, each as wide as its longest cell, so lines can be read and grepped."""
    widths = [max(len(row[i]) for row in rows) for i in range(len(rows[0]))]
    return [
        "  ".join(c.ljust(w) for c, w in zip(row, widths, strict=True)).rstrip() for row in rows
    ]


@command(leads_group, "list")
@click.option(
    "--step", "step_id", default=None, help="Only leads waiting for (or last at) this step."
)
@click.option("--status", type=STATUS, default=None, help="Only leads with this status.")
@click.option("--limit", type=click.IntRange(1), default=50, show_default=True)
@click.option("--offset", type=click.IntRange(0), default=0, help="Skip this many leads first.")
@click.option("--json", "as_json", is_flag=True, help="Machine-readable output.")
@now_option("Say what comes next as if at this moment")
def leads_list(
    app: AppContext,
    step_id: str | None,
    status: str | None,
    limit: int,
    offset: int,
    as_json: bool,
    at: datetime | None,
) -> None:
    """Who is where: each lead's status, the last email sent and the next one, with its time
    in UTC and on the lead's clock. Leads are listed in the order they joined."""
    schedule = app.load().schedule
    known = [s.id for s in schedule.steps]
    if schedule.confirmation is not None:
        known.append(schedule.confirmation.id)
    if step_id is not None and step_id not in known:
        errors.print(
            f"[bold red]no step {step_id!r}[/] in {schedule.campaign.id}; "
            f"its steps are: {', '.join(known)}",
            highlight=False,
        )
        sys.exit(2)
    now = at or utc_now()
    store = existing_store(app)
    wanted = LeadStatus(status.lower()) if status else None
    page = store.records.page(
        schedule.campaign.id, status=wanted, step_id=step_id, offset=offset, limit=limit
    )
    more = max(page.total - offset - len(page.leads), 0)
    if as_json:
        click.echo(
            json.dumps(
                {
                    "campaign": schedule.campaign.id,
                    "total": page.total,
                    "offset": offset,
                    "more": more,
                    "leads": [_line_json(schedule, line, now) for line in page.leads],
                },
                indent=2,
            )
        )
        return
    shown = f"{offset + 1}-{offset + len(page.leads)}" if page.leads else "none"
    console.print(f"{schedule.campaign.id}: {page.total} lead(s), showing {shown}", highlight=False)
    if page.leads:
        rows = [["EMAIL", "NAME", "STATUS", "LAST SENT", "NEXT EMAIL"]]
        for line in page.leads:
            last = _last_sent(line.plan)
            rows.append(
                [
                    line.plan.email,
                    line.first_name or "-",
                    line.plan.state.status.value,
                    "-" if last is None else f"{last[0]} {_utc(last[1])}",
                    _next_text(schedule, line.plan, now),
                ]
            )
        for text in _aligned(rows):
            console.print(text, markup=False, highlight=False)
    if more:
        console.print(
            f"{more} more: --offset {offset + len(page.leads)}", markup=False, highlight=False
        )


def _record_json(schedule: Schedule, record: LeadRecord, now: datetime) -> dict[str, Any]:
    lead, plan = record.lead, record.plan
    return {
        "id": lead.id,  # how the audit log names the lead
        "email": lead.email,
        "first_name": lead.first_name,
        "timezone": lead.timezone,
        "attributes": lead.attributes,
        "status": lead.status.value,
        "status_reason": record.status_reason,
        "status_at": record.status_at.isoformat() if record.status_at else None,
        "created_at": lead.created_at.isoformat(),
        "campaign": schedule.campaign.id,
        "enrolled_at": plan.state.enrolled_at.isoformat() if plan else None,
        "enrollment": record.enrollment,
        "deliveries": [
            {
                "step": d.step_id,
                "status": d.status.value,
                "due_at": d.due_at.isoformat(),
                "sent_at": d.sent_at.isoformat() if d.sent_at else None,
                "attempts": d.attempts,
                "last_error": d.last_error,
                "smtp_code": d.smtp_code,
                "variant": None if d.variant is None else variant_name(d.variant),
            }
            for d in record.deliveries
        ],
        "clicks": [
            {
                "step": c.step_id,
                "url": c.url,
                "at": c.at.isoformat(),
                "source": c.source.value,
                "reason": c.reason,
            }
            for c in record.clicks
        ],
        "conversion": None
        if record.conversion is None
        else {
            "step": record.conversion.step_id,
            "source": record.conversion.source,
            "at": record.conversion.at.isoformat(),
        },
        "inbound": [
            {
                "received_at": m.received_at.isoformat(),
                "kind": m.kind,
                "step": m.step_id,
                "reason": m.reason,
                "outcome": m.outcome,
            }
            for m in record.inbound
        ],
        "suppressions": [s.as_json() for s in record.suppressions],
        "consents": [
            {
                "source": c.source,
                "given_at": c.given_at.isoformat(),
                "ip": c.ip,
                "user_agent": c.user_agent,
                "text": c.text,
            }
            for c in record.consents
        ],
        "next": _next_json(schedule, plan, now) if plan and not _paused(record) else None,
    }


def _record_lines(schedule: Schedule, record: LeadRecord, now: datetime) -> list[str]:
    """`leads show` for people: the lead, then each kind of history under its heading."""
    lead, plan = record.lead, record.plan
    attributes = ", ".join(f"{k}={v}" for k, v in sorted(lead.attributes.items()))
    status = f"{lead.status}"
    if record.status_at is not None:
        status += f" since {_utc(record.status_at)}"
    if record.status_reason:
        status += f": {record.status_reason}"
    lines = [
        f"{lead.email}  {lead.first_name or '(no name)'}",
        f"  time zone: {lead.timezone or f'{schedule.timezone} (the schedule default)'}",
        f"  attributes: {attributes or 'none'}",
        f"  status: {status}",
        f"  added: {_utc(lead.created_at)}",
        f"  {schedule.campaign.id}: "
        + (
            f"enrolled {_utc(plan.state.enrolled_at)} ({record.enrollment})"
            if plan is not None
            else "not enrolled"
        ),
    ]
    lines.append(f"deliveries ({len(record.deliveries)}):")
    rows = []
    for d in record.deliveries:
        when = f"sent {_utc(d.sent_at)}" if d.sent_at else f"due {_utc(d.due_at)}"
        error = f"{d.smtp_code or ''} {d.last_error}".strip() if d.last_error else ""
        step = schedule.step(d.step_id)
        if d.variant is not None and step is not None and len(step.subjects) > 1:
            error = f"subject {variant_name(d.variant)}  {error}".rstrip()
        rows.append([f"  {d.step_id}", d.status.value, when, f"attempts {d.attempts}", error])
    lines += _aligned(rows) if rows else []
    lines.append(f"clicks ({len(record.clicks)}):")
    for c in record.clicks:
        who = c.source.value + (f" ({c.reason})" if c.reason else "")
        lines.append(f"  {c.step_id}  {_utc(c.at)}  {who}  {c.url}")
    conversion = record.conversion
    lines.append(
        "conversion: none"
        if conversion is None
        else f"conversion: {_utc(conversion.at)} by {conversion.source}, "
        f"credited to {conversion.step_id or 'no step'}"
    )
    lines.append(f"inbound mail ({len(record.inbound)}):")
    for m in record.inbound:
        lines.append(
            f"  {_utc(m.received_at)}  {m.kind}  {m.step_id or '-'}  {m.reason}  -> {m.outcome}"
        )
    if not record.suppressions:
        lines.append("suppression: none")
    for s in record.suppressions:
        line = f"suppression: {s.reason} since {_utc(s.created_at)}: {s.detail or 'no detail'}"
        if s.lifted_at is not None:
            line += f" (lifted {_utc(s.lifted_at)}: {s.lifted_reason})"
        lines.append(line)
    for given in record.consents:
        web = ", ".join(
            filter(
                None,
                (
                    given.ip and f"from {given.ip}",
                    given.user_agent,
                    given.text and repr(given.text),
                ),
            )
        )
        lines.append(
            f"consent: {given.source} {_utc(given.given_at)}" + (f" ({web})" if web else "")
        )
    if not record.consents:
        lines.append("consent: no record (added before consent was recorded)")
    if _paused(record):
        lines.append(f"next: nothing while paused (`leads resume {lead.email}`)")
    else:
        lines.append(
            f"next: {_next_text(schedule, plan, now) if plan else 'nothing: not enrolled'}"
        )
    return lines


def _paused(record: LeadRecord) -> bool:
    return record.enrollment == EnrollmentState.PAUSED


@command(leads_group, "show")
@click.argument("email")
@click.option("--json", "as_json", is_flag=True, help="Machine-readable output.")
@now_option("Say what comes next as if at this moment")
def leads_show(app: AppContext, email: str, as_json: bool, at: datetime | None) -> None:
    """Everything about one lead in the series: its data and status, every email and what
    became of it, clicks, booking, mail that came back, suppression, and what comes next.
    The address matches in any letter case."""
    schedule = app.load().schedule
    store = existing_store(app)
    record = store.records.record(schedule.campaign.id, email.strip())
    if record is None:
        errors.print(
            f"[bold red]no lead {email}[/] in the database (letter case does not count)",
            highlight=False,
        )
        sys.exit(1)
    now = at or utc_now()
    if as_json:
        click.echo(json.dumps(_record_json(schedule, record, now), indent=2))
        return
    for line in _record_lines(schedule, record, now):
        console.print(line, markup=False, highlight=False)


@command(leads_group, "unsubscribe")
@click.argument("email")
@click.option(
    "--reason", default="asked the front desk", show_default=True, help="Recorded with it."
)
@now_option("Record the unsubscribe at this moment")
def leads_unsubscribe(app: AppContext, email: str, reason: str, at: datetime | None) -> None:
    """Unsubscribe a lead who asked by phone or at the desk, as the email's own link does:
    the address goes on the suppression list and emails still queued are cancelled.
    Asking again changes nothing."""
    store = open_store(app)
    why = f"{FRONT_DESK}: {reason.strip() or 'asked the front desk'}"
    done = store.records.unsubscribe(email.strip(), why, at or utc_now(), operator())
    if done is None:
        _no_lead(email)
        return
    if done.outcome is Unsubscribe.DONE:
        console.print(
            f"unsubscribed {done.email}: never mailed again; "
            f"{done.cancelled} queued email(s) cancelled",
            markup=False,
            highlight=False,
        )
        return
    console.print(
        f"{done.email} is {done.status} since {_utc(done.since)}, "
        f"so it is never mailed again already: nothing changed",
        markup=False,
        highlight=False,
    )


@command(main, "send-test")
@click.argument("step_id", metavar="STEP")
@click.option("--to", "to", required=True, help="The address the test goes to (yours).")
@click.option(
    "--lead",
    "lead_email",
    default=None,
    help="Fill it with this lead's data (default: the preview's sample lead).",
)
def send_test_command(app: AppContext, step_id: str, to: str, lead_email: str | None) -> None:
    """Send one step at once to ADDRESS, subject marked [TEST], over the SMTP server send-due
    uses (CAMPAIGN_SMTP_*). Nothing is recorded and no lead changes.

    With --lead its links are that lead's own, so you can click through them as the lead
    would: a click is then recorded as the lead's (the booking link books it) and the
    unsubscribe link unsubscribes it. Without --lead they are the sample lead's: they open
    their pages and record nothing.
    """
    renderer = app.renderer()
    warn_local_links()
    signer = LinkSigner(settings.base_url(), settings.secret_key(required=lead_email is not None))
    store = store_if_any(app) if lead_email is not None else None
    request = ProofRequest(step_id, to, lead_email)
    try:
        proof = send_test(
            request, renderer, store, SmtpSettings.from_env(), signer, dkim_signer(), utc_now()
        )
    except ProofRefused as exc:
        errors.print(f"[bold red]not sent:[/] {exc}", highlight=False)
        sys.exit(2)
    except ProofFailed as exc:
        errors.print(f"[bold red]not sent:[/] {exc}", highlight=False)
        sys.exit(1)
    whose = "the sample lead's" if proof.sample else f"{proof.lead_email}'s"
    console.print(
        f"sent {proof.step_id} to {proof.to} with {whose} data: {proof.subject!r} "
        "(nothing recorded, no lead changed)",
        markup=False,
        highlight=False,
    )


def _not_changed(found: LeadPause, campaign_id: str, wanted: str) -> str:
    """Why a pause or resume changed nothing, said from the lead's and the enrollment's
    state."""
    if found.enrollment is None:
        return f"{found.email} is not in series {campaign_id}: nothing changed"
    if found.enrollment == EnrollmentState.PAUSED:
        return f"{found.email} is already paused in {campaign_id}: nothing changed"
    if found.status is not LeadStatus.ACTIVE:
        return f"{found.email} is {found.status}: it is mailed nothing, nothing changed"
    if found.enrollment == EnrollmentState.ACTIVE:  # a resume of a lead not paused
        return f"{found.email} is not paused in {campaign_id}: nothing changed"
    return (
        f"{found.email} is {found.enrollment} in {campaign_id}, so there is nothing to "
        f"{wanted}: nothing changed"
    )


def _no_lead(email: str) -> None:
    errors.print(
        f"[bold red]no lead {email}[/] in the database (letter case does not count): "
        "nothing changed",
        highlight=False,
    )
    sys.exit(1)


SERIES_OPTION = click.option(
    "--series", "series_id", default=None, help="The series (default: the schedule's only one)."
)


@command(leads_group, "pause")
@click.argument("email")
@SERIES_OPTION
@now_option("Record the pause at this moment")
def leads_pause(app: AppContext, email: str, series_id: str | None, at: datetime | None) -> None:
    """Keep a lead in the series but send it nothing until `leads resume`: its queued email
    is taken back, even from a worker that has reserved it, and schedule edits leave it
    alone. Pausing a paused lead changes nothing."""
    campaign_id = chosen_series(app.load().schedule, series_id)
    store = open_store(app)
    found = store.queue.pause_lead(email.strip(), campaign_id, at or utc_now(), operator())
    if found is None:
        _no_lead(email)
        return
    if not found.changed:
        console.print(_not_changed(found, campaign_id, "pause"), markup=False, highlight=False)
        return
    console.print(
        f"paused {found.email} in {campaign_id}: {found.taken_back} queued email(s) taken "
        f"back, nothing is sent until `leads resume {found.email}`",
        markup=False,
        highlight=False,
    )


@command(leads_group, "resume")
@click.argument("email")
@SERIES_OPTION
@now_option("Resume at this moment")
def leads_resume(app: AppContext, email: str, series_id: str | None, at: datetime | None) -> None:
    """Put a paused lead back in the series. Its next step waits at least its delay from the
    last email actually sent: after a long pause it goes at the next run, one email, never
    the missed ones at once."""
    schedule = app.load().schedule
    campaign_id = chosen_series(schedule, series_id)
    store = open_store(app)
    now = at or utc_now()

    plan = partial(lead_plan, schedule)
    found = store.queue.resume_lead(email.strip(), campaign_id, plan, now, operator())
    if found is None:
        _no_lead(email)
        return
    if not found.changed:
        console.print(_not_changed(found, campaign_id, "resume"), markup=False, highlight=False)
        return
    planned = found.planned
    if found.in_flight:
        upcoming = "planned when the email in flight ends"
    elif planned is None:
        upcoming = "nothing: the series is finished for this lead"
    elif planned.due_at <= now:
        upcoming = f"{planned.step_id} at the next run (due {_utc(planned.due_at)})"
    else:
        upcoming = f"{planned.step_id} {_utc(planned.due_at)}"
    console.print(
        f"resumed {found.email} in {campaign_id}: next {upcoming}", markup=False, highlight=False
    )
