"""The web side of a lead's life, served by Starlette on the same store the sender uses:
the API for the clinic's systems (`signup.py`), the pages behind the links in the emails
(`links.py`), and how refusals are answered (`replies.py`). This module wires them into one
app and serves it.
"""

from __future__ import annotations

import logging
import re
from collections.abc import Callable

import uvicorn
from starlette.applications import Starlette
from starlette.routing import Route

from campaign.config.settings import SmtpSettings
from campaign.model import Clock
from campaign.rendering.links import LinkSigner
from campaign.rendering.renderer import Renderer
from campaign.sending.transport import Envelope, SmtpTransport
from campaign.store import Store
from campaign.web.links import LinkPages
from campaign.web.replies import error_handlers
from campaign.web.service import Service
from campaign.web.signup import LeadsApi, Mailer

MAX_BODY = 64 * 1024  # a signup is a few fields; anything larger is refused with 413


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
    service = Service(store, renderer, signer, clock)
    api = LeadsApi(service, api_token, mailer)
    links = LinkPages(service)
    routes = [
        Route("/leads", api.signup, methods=["POST"]),
        Route("/leads/{email}/converted", api.converted, methods=["POST"]),
        Route("/u/{token}", links.unsubscribe, methods=["GET", "POST"]),
        Route("/confirm/{token}", links.confirm, methods=["GET", "POST"]),
        Route("/c/{token}", links.click, methods=["GET"]),
    ]
    return Starlette(routes=routes, exception_handlers=error_handlers(), max_body_size=MAX_BODY)


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
