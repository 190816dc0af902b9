"""What the web service answers when it cannot do what was asked: JSON for the API's callers,
a short page for a person who followed a link in an email.

Endpoints raise `ApiError` or `PageError` wherever they notice the problem; one handler per
kind turns it into the reply, so every refusal of a kind looks the same.
"""

from __future__ import annotations

import logging
from collections.abc import Mapping
from typing import Any

from starlette.requests import Request
from starlette.responses import HTMLResponse, JSONResponse, Response
from starlette.types import ExceptionHandler

from campaign.config.schedule import ScheduleError
from campaign.pages import PAGES
from campaign.rendering.renderer import TemplateProblem

log = logging.getLogger("campaign.web.replies")

# Pages are reached through signed links: never cached, framed, indexed or sent on as referrer.
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


async def _api_error(_request: Request, exc: Exception) -> Response:
    assert isinstance(exc, ApiError)
    return JSONResponse(exc.body, exc.status, headers=exc.headers)


async def _page_error(_request: Request, exc: Exception) -> Response:
    assert isinstance(exc, PageError)
    return page(exc.title, exc.message, status=exc.status)


async def _unavailable(request: Request, exc: Exception) -> Response:
    """The schedule or a template is broken right now: nothing is done until it is fixed."""
    log.error("schedule unusable: %s", exc)
    if request.url.path.startswith(("/leads", "/webhooks")):
        return JSONResponse({"error": "the campaign's schedule is invalid; try again later"}, 503)
    return page("Please try again later", "This link cannot be followed right now.", status=503)


def error_handlers() -> dict[Any, ExceptionHandler]:
    """Starlette's exception handlers: each refusal, and a broken schedule, as its reply."""
    return {
        ApiError: _api_error,
        PageError: _page_error,
        ScheduleError: _unavailable,
        TemplateProblem: _unavailable,
    }
