"""The API for the clinic's own systems: a signup form posts new leads (and, under double
opt-in, the confirmation email is queued for the sender), the booking system reports
conversions. No request here talks to SMTP: a mail server that hangs cannot hold one up.

Both take the bearer token `CAMPAIGN_API_TOKEN`; without one configured they answer 503, so
an unconfigured service never accepts leads from anyone.
"""

from __future__ import annotations

import hmac
import json
import logging
import math
from collections.abc import Mapping
from dataclasses import dataclass
from datetime import timedelta
from typing import Any, NoReturn

from starlette.concurrency import run_in_threadpool
from starlette.requests import Request
from starlette.responses import JSONResponse, Response

from campaign.leads.intake import (
    BUILTIN_COLUMNS,
    LeadError,
    LeadInput,
    SuppressedError,
    add_lead,
    normalize_email,
    parse_lead,
)
from campaign.leads.privacy import erasure_key
from campaign.model import Confirmation, Lead, LeadStatus
from campaign.store.leads import Consent
from campaign.web.replies import ApiError
from campaign.web.service import Service

log = logging.getLogger("campaign.web.signup")
# However often one address is posted, it gets one confirmation email in this time.
CONFIRM_AGAIN_AFTER = timedelta(minutes=10)
MAX_CONSENT = 1000  # the consent wording shown, or its version id
MAX_USER_AGENT = 500
WEB_FORM = "web form"


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


def consent_of(request: Request, fields: dict[str, Any]) -> Consent:
    """The consent a signup gives, taking the optional `consent` field (the wording shown,
    or its version) out of `fields`, with the peer address and user agent as the app sees
    them."""
    text = fields.pop("consent", None)
    if text is not None and not isinstance(text, str):
        raise ApiError(
            400, {"errors": {"consent": "must be text: the consent shown, or its version"}}
        )
    text = (text or "").strip() or None
    if text is not None and any(ord(ch) < 32 or ord(ch) == 127 for ch in text):
        raise ApiError(400, {"errors": {"consent": "must be one line, without control characters"}})
    if text is not None and len(text) > MAX_CONSENT:
        raise ApiError(400, {"errors": {"consent": f"is longer than {MAX_CONSENT} characters"}})
    agent = request.headers.get("user-agent", "")[:MAX_USER_AGENT] or None
    peer = request.client.host if request.client is not None else None
    return Consent(WEB_FORM, ip=peer, user_agent=agent, text=text)


def _refuse_constant(name: str) -> NoReturn:
    raise ValueError(f"{name} is not a number JSON allows")


def _finite(text: str) -> float:
    """A JSON number as a float; one too large for a float (1e999) would be stored as inf."""
    value = float(text)
    if not math.isfinite(value):
        raise ValueError(f"{text} is too large a number")
    return value


def parse_json(body: bytes) -> Any:
    """Strict JSON: `NaN` and `Infinity` (which Python's parser takes by default, and which
    would be stored as the text "nan") are refused, and so is nesting deep enough to exhaust
    the parser's recursion (64 KB of `[`): both are answered 400, not stored or a 500."""
    try:
        return json.loads(body, parse_constant=_refuse_constant, parse_float=_finite)
    except RecursionError:
        raise ApiError(400, {"errors": {"body": "nests too deeply to be a signup"}}) from None
    except ValueError as exc:  # JSONDecodeError and UnicodeDecodeError are ValueErrors too
        raise ApiError(400, {"errors": {"body": f"is not valid JSON: {exc}"}}) from None


async def posted_fields(request: Request) -> dict[str, Any]:
    """The fields of a JSON object or of an HTML form (urlencoded or multipart)."""
    kind = request.headers.get("content-type", "").partition(";")[0].strip().lower()
    if kind == "application/json":
        data = parse_json(await request.body())
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
    """POST /leads and POST /leads/{email}/converted."""

    service: Service
    api_token: str | None

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
        """POST /leads: 201 and the lead when new, 200 and the lead as stored when known, 200
        and `"status": "suppressed"` alone when the address is on the suppression list (an
        erased address too, unless the signup gives its `consent` again)."""
        self.authorize(request)
        fields = await posted_fields(request)
        consent = consent_of(request, fields)
        lead = lead_from_fields(fields)
        return await run_in_threadpool(self._enroll, lead, consent)

    def _enroll(self, lead: LeadInput, consent: Consent) -> Response:
        renderer = self.service.renderer()
        schedule = renderer.schedule
        now = self.service.clock()
        store = self.service.store
        try:
            lead_id, created = add_lead(
                store,
                schedule,
                lead,
                now,
                pending=schedule.double_opt_in,
                consent=consent,
                erasure_key=erasure_key(self.service.signer),
                # Only the person, giving consent again, brings back an erased address.
                renew=consent.text is not None,
            )
        except SuppressedError:
            # Nothing is created, queued or changed; the form learns only that this address
            # gets no emails, not why nor since when (that is for the operator's list).
            log.info("signup refused: address suppressed")
            return JSONResponse({"email": lead.email, "status": "suppressed"}, 200)
        confirmation: Confirmation | None = None
        if schedule.confirmation is not None:
            confirmation = (
                Confirmation.QUEUED  # queued with the new lead, in the same transaction
                if created
                else store.leads.queue_confirmation(
                    lead_id, schedule.campaign.id, now, CONFIRM_AGAIN_AFTER
                )
            )
        stored = self.service.lead(lead_id)
        body = lead_json(stored)
        if confirmation is not None and stored.status == LeadStatus.PENDING:
            body["confirmation"] = confirmation
        log.info(
            "signup lead=%s created=%s status=%s confirmation=%s",
            lead_id,
            created,
            stored.status,
            confirmation,
        )
        return JSONResponse(body, 201 if created else 200)

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
