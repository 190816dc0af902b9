"""The API for the clinic's own systems: a signup form posts new leads (and, under double
opt-in, the confirmation email goes out at once), the booking system reports conversions.

Both take the bearer token `CAMPAIGN_API_TOKEN`; without one configured they answer 503, so
an unconfigured service never accepts leads from anyone.
"""

from __future__ import annotations

import hmac
import json
import logging
from collections.abc import Callable, Mapping
from dataclasses import dataclass, replace
from datetime import datetime
from email.utils import parseaddr
from typing import Any

from starlette.concurrency import run_in_threadpool
from starlette.requests import Request
from starlette.responses import JSONResponse, Response

from campaign.config.schedule import Step
from campaign.leads.intake import (
    BUILTIN_COLUMNS,
    LeadError,
    LeadInput,
    add_lead,
    normalize_email,
    parse_lead,
)
from campaign.model import Lead, LeadStatus
from campaign.rendering.renderer import LeadView, Renderer
from campaign.sending.transport import DeliveryFailure, Envelope
from campaign.web.replies import ApiError
from campaign.web.service import Service

log = logging.getLogger("campaign.web.signup")
Mailer = Callable[[Envelope], None]


def lead_json(lead: Lead) -> dict[str, Any]:
    return {
        "id": lead.id,
        "email": lead.email,
        "first_name": lead.first_name,
        "timezone": lead.timezone,
        "attributes": dict(lead.attributes),
        "status": lead.status,
        "created_at": lead.created_at.isoformat(),
    }


def lead_from_fields(fields: Mapping[str, Any]) -> LeadInput:
    """Validate posted fields as the CSV import validates a row: email, first_name and timezone
    are the lead's own, any other field is an attribute, and empty values are left out."""
    data: dict[str, Any] = {"attributes": {}}
    for name, value in fields.items():
        if value is None or value == "":
            continue
        if isinstance(value, bool) or not isinstance(value, str | int | float):
            raise ApiError(400, {"errors": {name: "must be text"}})
        (data if name in BUILTIN_COLUMNS else data["attributes"])[name] = str(value)
    try:
        return parse_lead(data)
    except LeadError as exc:
        field = exc.field.removeprefix("attributes.")
        raise ApiError(400, {"errors": {field: exc.message}}) from None


async def posted_fields(request: Request) -> dict[str, Any]:
    """The fields of a JSON object or of an HTML form (urlencoded or multipart)."""
    kind = request.headers.get("content-type", "").partition(";")[0].strip().lower()
    if kind == "application/json":
        try:
            data = json.loads(await request.body())
        except ValueError:
            raise ApiError(400, {"errors": {"body": "is not valid JSON"}}) from None
        if not isinstance(data, dict):
            raise ApiError(400, {"errors": {"body": "must be a JSON object of fields"}})
        return data
    if kind in ("application/x-www-form-urlencoded", "multipart/form-data"):
        return dict(await request.form())
    raise ApiError(
        415,
        {
            "error": "send a JSON object or a form (application/json, "
            "application/x-www-form-urlencoded or multipart/form-data)"
        },
    )


@dataclass
class LeadsApi:
    """POST /leads and POST /leads/{email}/converted; `mailer` None sends no confirmations."""

    service: Service
    api_token: str | None
    mailer: Mailer | None = None

    def authorize(self, request: Request) -> None:
        if self.api_token is None:
            raise ApiError(503, {"error": "CAMPAIGN_API_TOKEN is not set, so this endpoint is off"})
        scheme, _, given = request.headers.get("authorization", "").partition(" ")
        valid = hmac.compare_digest(given.strip().encode(), self.api_token.encode())
        if scheme.lower() != "bearer" or not valid:
            raise ApiError(
                401,
                {"error": "send the API token as 'Authorization: Bearer TOKEN'"},
                {"WWW-Authenticate": 'Bearer realm="campaign"'},
            )

    async def signup(self, request: Request) -> Response:
        """POST /leads: 201 and the lead when new, 200 and the lead as stored when known."""
        self.authorize(request)
        lead = lead_from_fields(await posted_fields(request))
        return await run_in_threadpool(self._enroll, lead)

    def _enroll(self, lead: LeadInput) -> Response:
        renderer = self.service.renderer()
        schedule = renderer.schedule
        now = self.service.clock()
        store = self.service.store
        lead_id, created = add_lead(store, schedule, lead, now, pending=schedule.double_opt_in)
        stored = self.service.lead(lead_id)
        body = lead_json(stored)
        if stored.status == LeadStatus.PENDING and schedule.confirmation is not None:
            body["confirmation"] = self._send_confirmation(
                renderer, schedule.confirmation, stored, now
            )
        log.info("signup lead=%s created=%s status=%s", lead_id, created, stored.status)
        return JSONResponse(body, 201 if created else 200)

    def _send_confirmation(
        self, renderer: Renderer, confirmation: Step, lead: Lead, now: datetime
    ) -> str:
        """Send the double opt-in email at once; returns "sent" or why it was not sent.

        The lead stays pending either way, and posting the signup again sends it again.
        """
        if self.mailer is None:
            return "not sent: the web service has no mail server"
        schedule = renderer.schedule
        campaign_id = schedule.campaign.id
        signer = self.service.signer
        links = replace(
            signer.links(lead.id, campaign_id, confirmation.id),
            confirm=signer.confirm_url(lead.id, campaign_id),
        )
        message = renderer.render(confirmation.id, LeadView.of(lead), links, now=now).message
        sender = parseaddr(schedule.sender.from_)[1]
        try:
            self.mailer(Envelope(sender, lead.email, message.as_bytes(), message.utf8))
        except DeliveryFailure as exc:
            log.warning("confirmation not sent lead=%s error=%r", lead.id, str(exc))
            return f"not sent: {exc}"
        return "sent"

    def converted(self, request: Request) -> Response:
        """POST /leads/{email}/converted, from the booking system: the lead booked."""
        self.authorize(request)
        try:
            email = normalize_email(request.path_params["email"])
        except ValueError as exc:
            raise ApiError(400, {"errors": {"email": str(exc)}}) from None
        lead = self.service.store.leads.lead_by_email(email)
        if lead is None:
            raise ApiError(404, {"errors": {"email": f"no lead has the address {email}"}})
        schedule = self.service.renderer().schedule
        step_id = self.service.store.leads.attributed_step(lead.id, schedule.campaign.id)
        new = self.service.convert(schedule, lead.id, step_id, "booking-system")
        body = lead_json(self.service.lead(lead.id)) | {
            "step": step_id,
            "already_converted": not new,
        }
        return JSONResponse(body)
