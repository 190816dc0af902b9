"""The pages behind the links in the emails: one-click unsubscribe, double opt-in confirmation
and tracked clicks.

Every link carries a token signed with `CAMPAIGN_SECRET_KEY` (see `rendering/links.py`), so no
page needs a cookie, a login or a CSRF token: the token is the authority, and an altered one is
refused with 400 before anything changes. Opening a page (GET) never unsubscribes or confirms
anyone, because mail scanners open links on their own; that takes a POST, which mailbox
providers send for RFC 8058 one-click unsubscribe and the pages' buttons send too. A click link
names (lead, campaign, step, link number), never an address, so it can only redirect to a URL
that the step's template contains: there is no open redirect. A click is recorded with who
made it (`web.scanners`): only a person's converts a lead.
"""

from __future__ import annotations

import logging
from collections.abc import Callable
from dataclasses import dataclass
from functools import partial
from typing import TypeVar

from starlette.requests import Request
from starlette.responses import RedirectResponse, Response

from campaign.leads.intake import first_delivery
from campaign.model import ClickSource, Lead, LeadStatus, is_booking
from campaign.rendering.links import ClickToken, InvalidToken, LeadToken
from campaign.rendering.renderer import Renderer
from campaign.web.replies import PageError, page
from campaign.web.scanners import BURST_WINDOW, ClickRequest, classify
from campaign.web.service import Service

log = logging.getLogger("campaign.web.links")
T = TypeVar("T")


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
class LinkPages:
    """GET and POST /u/TOKEN, GET and POST /confirm/TOKEN, GET /c/TOKEN."""

    service: Service

    def unsubscribe(self, request: Request) -> Response:
        """GET /u/TOKEN asks; POST /u/TOKEN (one-click, or the page's button) unsubscribes."""
        token = read_token(self.service.signer.read_unsubscribe, request)
        lead = self._linked_lead(token)
        done = page(
            "You are unsubscribed",
            f"{lead.email} will get no more of these emails. Sorry to see you go.",
        )
        if request.method == "POST":
            reason = f"one-click unsubscribe from {token.campaign_id}"
            leads, now = self.service.store.leads, self.service.clock()
            if leads.set_lead_status(lead.id, LeadStatus.UNSUBSCRIBED, reason, now):
                log.info("unsubscribed lead=%s campaign=%s", lead.id, token.campaign_id)
            return done
        if lead.status == LeadStatus.UNSUBSCRIBED:
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
        token = read_token(self.service.signer.read_confirm, request)
        lead = self._linked_lead(token)
        if request.method == "POST" and lead.status == LeadStatus.PENDING:
            schedule = self.service.renderer().schedule
            if token.campaign_id != schedule.campaign.id:
                raise PageError(404, "Link not found", "This series is no longer running.")
            now = self.service.clock()
            first = first_delivery(schedule, lead.timezone, now)
            if self.service.store.leads.confirm_lead(lead.id, schedule.campaign.id, first, now):
                log.info("confirmed lead=%s", lead.id)
            lead = self.service.lead(lead.id)
        if lead.status == LeadStatus.PENDING:
            return page(
                "Please confirm",
                f"Send this series of emails to {lead.email}?",
                action=request.url.path,
                button="Yes, send them",
            )
        if lead.status == LeadStatus.ACTIVE:
            return page("You are subscribed", f"Thank you: the emails will come to {lead.email}.")
        return page("Not subscribed", f"{lead.email} is {lead.status}; nothing was changed.")

    def click(self, request: Request) -> Response:
        """GET /c/TOKEN: record the click, a person's or a scanner's, and redirect to the link
        the template holds (a scanner too must find the real page). Only a person's click on
        the booking link converts, decided once the click is classified."""
        token = read_token(self.service.signer.read_click, request)
        renderer = self.service.renderer()
        url = click_target(renderer, token)
        if url is None:
            raise PageError(404, "Link not found", "This link is no longer in our emails.")
        leads = self.service.store.leads
        lead = leads.lead(token.lead_id)
        if lead is not None:
            now = self.service.clock()
            asked = ClickRequest(request.method, {k.lower(): v for k, v in request.headers.items()})
            judge = partial(classify, asked, url, now)
            verdict = leads.record_click(
                lead.id, token.campaign_id, token.step_id, url, now, judge, BURST_WINDOW
            )
            schedule = renderer.schedule
            if verdict.source is not ClickSource.PERSON:
                log.info(
                    "scanner click lead=%s step=%s: %s", lead.id, token.step_id, verdict.reason
                )
            elif is_booking(url, str(schedule.booking_url)):
                self.service.convert(schedule, lead.id, token.step_id, "click")
        return RedirectResponse(url, 302, headers={"Cache-Control": "no-store"})

    def _linked_lead(self, token: LeadToken) -> Lead:
        lead = self.service.store.leads.lead(token.lead_id)
        if lead is None:
            raise PageError(
                404,
                "Address not found",
                "We no longer hold this address, so it gets no emails from us.",
            )
        return lead
