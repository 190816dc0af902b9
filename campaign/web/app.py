"""The web side of a lead's life: signup, double opt-in, one-click unsubscribe, tracked clicks
and conversions, served by Starlette on the same store the sender uses.

Every link in an email carries a token signed with `CAMPAIGN_SECRET_KEY` (see links.py), so no
page needs a cookie, a login or a CSRF token: the token is the authority, and an altered one is
refused with 400 before anything changes. Opening a page (GET) never unsubscribes or confirms
anyone, because mail scanners open links on their own; that takes a POST, which mailbox
providers send for RFC 8058 one-click unsubscribe and the pages' buttons send too. A click link
names (lead, campaign, step, link number), never an address, so it can only redirect to a URL
that the step's template contains: there is no open redirect.
"""

from __future__ import annotations

import hmac
import json
import logging
import re
from collections.abc import Callable, Mapping
from dataclasses import dataclass, replace
from datetime import datetime
from email.policy import SMTPUTF8
from email.utils import parseaddr
from typing import Any, TypeVar
from urllib.parse import urlsplit

import uvicorn
from starlette.applications import Starlette
from starlette.concurrency import run_in_threadpool
from starlette.requests import Request
from starlette.responses import HTMLResponse, JSONResponse, RedirectResponse, Response
from starlette.routing import Route

from campaign.config.schedule import Schedule, ScheduleError, Step
from campaign.config.settings import SmtpSettings
from campaign.leads.intake import (
    BUILTIN_COLUMNS,
    LeadError,
    LeadInput,
    add_lead,
    first_delivery,
    normalize_email,
    parse_lead,
)
from campaign.model import Lead
from campaign.pages import PAGES
from campaign.rendering.links import ClickToken, InvalidToken, LeadToken, LinkSigner
from campaign.rendering.renderer import LeadView, Renderer, TemplateProblem
from campaign.sending.transport import DeliveryFailure, Envelope, SmtpTransport
from campaign.store.queue import Store

log = logging.getLogger("campaign.web.app")
Clock = Callable[[], datetime]
Mailer = Callable[[Envelope], None]
T = TypeVar("T")

MAX_BODY = 64 * 1024  # a signup is a few fields; anything larger is refused with 413
PAGE_HEADERS = {
    "Cache-Control": "no-store",
    "Referrer-Policy": "no-referrer",
    "X-Robots-Tag": "noindex, nofollow",
    "X-Frame-Options": "DENY",
    "Content-Security-Policy": (
        "default-src 'none'; style-src 'unsafe-inline'; form-action 'self'; frame-ancestors 'none'"
    ),
}


class ApiError(Exception):
    """An API request refused; answered as JSON with this status."""

    def __init__(self, status: int, body: dict[str, Any], headers: dict[str, str] | None = None):
        super().__init__(status, body)
        self.status, self.body, self.headers = status, body, headers


class PageError(Exception):
    """A link that cannot do what it should; answered with a short page for a person."""

    def __init__(self, status: int, title: str, message: str):
        super().__init__(status, title, message)
        self.status, self.title, self.message = status, title, message


def page(
    title: str,
    message: str,
    *,
    status: int = 200,
    action: str | None = None,
    button: str = "",
    fields: Mapping[str, str] | None = None,
) -> HTMLResponse:
    """A small page, optionally with one button that POSTs `fields` to `action`."""
    body = PAGES.get_template("web_page.html.j2").render(
        title=title, message=message, action=action, button=button, fields=fields or {}
    )
    return HTMLResponse(body, status, headers=PAGE_HEADERS)


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


def is_booking(url: str, booking_url: str) -> bool:
    """Whether a link leads to the booking page: same scheme, host and path, any query (UTM)."""
    a, b = urlsplit(url), urlsplit(booking_url)
    return (a.scheme, a.netloc.lower(), a.path.rstrip("/")) == (
        b.scheme,
        b.netloc.lower(),
        b.path.rstrip("/"),
    )


def click_target(renderer: Renderer, token: ClickToken) -> str | None:
    """The URL a click token stands for: link number `token.link` of its step as compiled now
    (with its UTM parameters), or None if the campaign, the step or the link is not there."""
    schedule = renderer.schedule
    steps = [step.id for step in schedule.steps]
    if schedule.confirmation is not None:
        steps.append(schedule.confirmation.id)
    if token.campaign_id != schedule.campaign.id or token.step_id not in steps:
        return None
    urls = renderer.compile(token.step_id).urls
    return urls[token.link] if 0 <= token.link < len(urls) else None


def read_token(reader: Callable[[str], T], request: Request) -> T:
    try:
        return reader(request.path_params["token"])
    except InvalidToken as exc:
        raise PageError(400, "This link is not valid", f"{exc}. Nothing was changed.") from None


@dataclass
class Lifecycle:
    """What the endpoints do, with everything they touch passed in (tests pass a fixed clock).

    `renderer` returns the schedule as compiled now; `Engine.renderer` recompiles it when the
    files change, so a click always resolves against the templates the sender uses.
    """

    store: Store
    renderer: Callable[[], Renderer]
    signer: LinkSigner
    api_token: str | None
    clock: Clock
    mailer: Mailer | None = None

    # -- API, with the bearer token ----------------------------------------------------------

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
        renderer = self.renderer()
        schedule = renderer.schedule
        now = self.clock()
        lead_id, created = add_lead(self.store, schedule, lead, now, pending=schedule.double_opt_in)
        stored = self._lead(lead_id)
        body = lead_json(stored)
        if stored.status == "pending" and schedule.confirmation is not None:
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
        links = replace(
            self.signer.links(lead.id, campaign_id, confirmation.id),
            confirm=self.signer.confirm_url(lead.id, campaign_id),
        )
        view = LeadView(lead.email, lead.first_name, lead.timezone or "", lead.attributes)
        message = renderer.render(confirmation.id, view, links, now=now).message
        utf8 = not lead.email.isascii()
        data = message.as_bytes(policy=SMTPUTF8) if utf8 else message.as_bytes()
        try:
            self.mailer(Envelope(parseaddr(schedule.sender.from_)[1], lead.email, data, utf8))
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
        lead = self.store.lead_by_email(email)
        if lead is None:
            raise ApiError(404, {"errors": {"email": f"no lead has the address {email}"}})
        schedule = self.renderer().schedule
        step_id = self.store.attributed_step(lead.id, schedule.campaign.id)
        new = self._convert(schedule, lead.id, step_id, "booking-system")
        body = lead_json(self._lead(lead.id)) | {"step": step_id, "already_converted": not new}
        return JSONResponse(body)

    def _convert(self, schedule: Schedule, lead_id: int, step_id: str | None, source: str) -> bool:
        """Record the conversion; the series stops for the lead if `exit_on` says so."""
        stop = "converted" in schedule.exit_on
        new = self.store.record_conversion(
            lead_id, schedule.campaign.id, step_id, source, self.clock(), stop=stop
        )
        log.info(
            "converted lead=%s step=%s source=%s new=%s stop=%s",
            lead_id,
            step_id,
            source,
            new,
            stop,
        )
        return new

    # -- links in the emails -----------------------------------------------------------------

    def unsubscribe(self, request: Request) -> Response:
        """GET /u/TOKEN asks; POST /u/TOKEN (one-click, or the page's button) unsubscribes."""
        token = read_token(self.signer.read_unsubscribe, request)
        lead = self._linked_lead(token)
        done = page(
            "You are unsubscribed",
            f"{lead.email} will get no more of these emails. Sorry to see you go.",
        )
        if request.method == "POST":
            reason = f"one-click unsubscribe from {token.campaign_id}"
            if self.store.set_lead_status(lead.id, "unsubscribed", reason, self.clock()):
                log.info("unsubscribed lead=%s campaign=%s", lead.id, token.campaign_id)
            return done
        if lead.status == "unsubscribed":
            return done
        return page(
            "Unsubscribe?",
            f"Stop these emails to {lead.email}?",
            action=request.url.path,
            button="Unsubscribe",
            fields={"List-Unsubscribe": "One-Click"},
        )

    def confirm(self, request: Request) -> Response:
        """GET /confirm/TOKEN asks; POST /confirm/TOKEN (the page's button) activates the lead."""
        token = read_token(self.signer.read_confirm, request)
        lead = self._linked_lead(token)
        if request.method == "POST" and lead.status == "pending":
            schedule = self.renderer().schedule
            if token.campaign_id != schedule.campaign.id:
                raise PageError(404, "Link not found", "This series is no longer running.")
            now = self.clock()
            first = first_delivery(schedule, lead.timezone, now)
            if self.store.confirm_lead(lead.id, schedule.campaign.id, first, now):
                log.info("confirmed lead=%s", lead.id)
            lead = self._lead(lead.id)
        if lead.status == "pending":
            return page(
                "Please confirm",
                f"Send this series of emails to {lead.email}?",
                action=request.url.path,
                button="Yes, send them",
            )
        if lead.status == "active":
            return page("You are subscribed", f"Thank you: the emails will come to {lead.email}.")
        return page("Not subscribed", f"{lead.email} is {lead.status}; nothing was changed.")

    def click(self, request: Request) -> Response:
        """GET /c/TOKEN: record the click and redirect to the link the template holds."""
        token = read_token(self.signer.read_click, request)
        renderer = self.renderer()
        url = click_target(renderer, token)
        if url is None:
            raise PageError(404, "Link not found", "This link is no longer in our emails.")
        lead = self.store.lead(token.lead_id)
        if lead is not None and request.method == "GET":  # HEAD is a probe, not a person
            schedule = renderer.schedule
            self.store.record_click(lead.id, token.campaign_id, token.step_id, url, self.clock())
            if is_booking(url, str(schedule.booking_url)):
                self._convert(schedule, lead.id, token.step_id, "click")
        return RedirectResponse(url, 302, headers={"Cache-Control": "no-store"})

    def _lead(self, lead_id: int) -> Lead:
        lead = self.store.lead(lead_id)
        assert lead is not None, f"lead {lead_id} vanished"
        return lead

    def _linked_lead(self, token: LeadToken) -> Lead:
        lead = self.store.lead(token.lead_id)
        if lead is None:
            raise PageError(
                404,
                "Address not found",
                "We no longer hold this address, so it gets no emails from us.",
            )
        return lead


async def _api_error(_request: Request, exc: Exception) -> Response:
    assert isinstance(exc, ApiError)
    return JSONResponse(exc.body, exc.status, headers=exc.headers)


async def _page_error(_request: Request, exc: Exception) -> Response:
    assert isinstance(exc, PageError)
    return page(exc.title, exc.message, status=exc.status)


async def _unavailable(request: Request, exc: Exception) -> Response:
    """The schedule or a template is broken right now: nothing is done until it is fixed."""
    log.error("schedule unusable: %s", exc)
    if request.url.path.startswith("/leads"):
        return JSONResponse({"error": "the campaign's schedule is invalid; try again later"}, 503)
    return page("Please try again later", "This link cannot be followed right now.", status=503)


def create_app(
    store: Store,
    renderer: Callable[[], Renderer],
    signer: LinkSigner,
    api_token: str | None,
    clock: Clock,
    mailer: Mailer | None = None,
) -> Starlette:
    """The web service. `api_token` None switches the API off (503); `mailer` sends the
    double opt-in emails."""
    life = Lifecycle(store, renderer, signer, api_token, clock, mailer)
    routes = [
        Route("/leads", life.signup, methods=["POST"]),
        Route("/leads/{email}/converted", life.converted, methods=["POST"]),
        Route("/u/{token}", life.unsubscribe, methods=["GET", "POST"]),
        Route("/confirm/{token}", life.confirm, methods=["GET", "POST"]),
        Route("/c/{token}", life.click, methods=["GET"]),
    ]
    handlers = {
        ApiError: _api_error,
        PageError: _page_error,
        ScheduleError: _unavailable,
        TemplateProblem: _unavailable,
    }
    return Starlette(routes=routes, exception_handlers=handlers, max_body_size=MAX_BODY)


def smtp_mailer(settings: SmtpSettings) -> Mailer:
    """Sends each confirmation on its own SMTP connection: signups come one at a time, and a
    connection held open between them would be dropped by the server anyway."""

    def send(envelope: Envelope) -> None:
        with SmtpTransport(settings, per_connection=1) as transport:
            transport.send(envelope)

    return send


_TOKEN_PATH = re.compile(r"^(/(?:u|c|confirm)/)([^/?]{6})[^/?]*")


class RedactTokens(logging.Filter):
    """Access logs keep the route but only the first characters of a signed token: a full
    token in a log file would let anyone who reads the log unsubscribe or convert a lead."""

    def filter(self, record: logging.LogRecord) -> bool:
        if isinstance(record.args, tuple) and len(record.args) >= 3:
            args = list(record.args)
            args[2] = _TOKEN_PATH.sub(r"\1\2…", str(args[2]))
            record.args = tuple(args)
        return True


def serve(app: Starlette, host: str, port: int) -> None:
    """Serve until Ctrl-C; put it behind a TLS proxy so CAMPAIGN_BASE_URL can be https."""
    logging.getLogger("uvicorn.access").addFilter(RedactTokens())
    uvicorn.run(app, host=host, port=port, log_level="info", server_header=False)
