"""The web side of a lead's life, served by Starlette on the same store the sender uses:
the API for the clinic's systems (`signup.py`), the pages behind the links in the emails
(`links.py`), what monitors read (`health.py`), and how refusals are answered
(`replies.py`). This module wires them into one app and serves it.
"""

from __future__ import annotations

import logging
import math
import re
from collections.abc import Callable
from urllib.parse import quote, unquote

import uvicorn
from starlette.applications import Starlette
from starlette.routing import Route

from campaign.config.settings import WebLimits
from campaign.model import Clock
from campaign.monitoring.metrics import campaign_registry
from campaign.rendering.links import LinkSigner
from campaign.rendering.renderer import Renderer
from campaign.store import Store
from campaign.web.health import Health, Metrics
from campaign.web.limits import bounded_protocol
from campaign.web.links import LinkPages
from campaign.web.replies import error_handlers
from campaign.web.service import Service
from campaign.web.signup import LeadsApi
from campaign.webhooks import Webhooks, webhook_routes

MAX_BODY = 64 * 1024  # a signup is a few fields; anything larger is refused with 413


def create_app(
    store: Store,
    renderer: Callable[[], Renderer],
    signer: LinkSigner,
    api_token: str | None,
    clock: Clock,
    webhooks: Webhooks | None = None,
    current: Callable[[], Renderer] | None = None,
) -> Starlette:
    """The web service. `api_token` None switches the API off (503), and /metrics with it,
    and so does `webhooks` None, or one without a secret, for the provider webhooks. It
    never talks to SMTP: double opt-in emails are queued for the sender like every other
    email. `current` is the series as its files are now (`Engine.renderer`), for /healthz
    to see a broken edit; without it /healthz sees the last good version."""
    service = Service(store, renderer, signer, clock)
    api = LeadsApi(service, api_token)
    links = LinkPages(service)
    health = Health(store, current or renderer, clock)
    metrics = Metrics(campaign_registry(store, renderer, current or renderer, clock), api.authorize)
    routes = [
        Route("/healthz", health.healthz, methods=["GET"]),
        Route("/metrics", metrics.metrics, methods=["GET"]),
        Route("/leads", api.signup, methods=["POST"]),
        Route("/leads/{email}/converted", api.converted, methods=["POST"]),
        Route("/u/{token}", links.unsubscribe, methods=["GET", "POST"]),
        Route("/confirm/{token}", links.confirm, methods=["GET", "POST"]),
        Route("/c/{token}", links.click, methods=["GET"]),
        *webhook_routes(service, webhooks),
    ]
    return Starlette(routes=routes, exception_handlers=error_handlers(), max_body_size=MAX_BODY)


_KEPT = 6  # characters of a token kept in the log: enough to match it with a lead's link
_ELLIPSIS = "…"
# A link's route (`u`, `c`, `confirm`) as a whole segment wherever it stands (after any
# slash or backslash, or as a query value), then its token past any run of slashes and dot
# segments, up to the next separator.
_TOKEN_ROUTE = re.compile(
    r"(?<![^/\\?&=#;])(u|c|confirm)([/\\]+(?:\.{1,2}[/\\]+)*)"
    rf"([^/\\?&#;\s]{{{_KEPT}}})[^/\\?&#;\s]+",
    re.IGNORECASE,
)
# What the logged target keeps unescaped once decoded and redacted (quote escapes the rest).
_SAFE = "/?&=#;:@!$'()*+,~"
_DECODINGS = 8  # percent-decoding rounds at most, for a target encoded over and over


def redact_tokens(target: str) -> str:
    """The request target with only the first characters of any signed token in it.

    A full token in a log file would let anyone who reads the log unsubscribe or convert a
    lead, and a server logs whatever path it was sent (`//u/TOKEN`, `/./u/TOKEN`,
    `/%2Fu%2FTOKEN`, `/?next=/u/TOKEN`), routed or not. So the target is percent-decoded
    (again and again, for double encoding) before looking for tokens; when one is found,
    the decoded target is logged redacted and escaped again, so that no control character
    reaches the log either. A target without a token is logged exactly as it came.
    """
    decoded = target
    for _ in range(_DECODINGS):
        once = unquote(decoded)
        if once == decoded:
            break
        decoded = once
    redacted, found = _TOKEN_ROUTE.subn(rf"\1\2\3{_ELLIPSIS}", decoded)
    if not found:
        return target
    return _ELLIPSIS.join(quote(part, safe=_SAFE) for part in redacted.split(_ELLIPSIS))


class RedactTokens(logging.Filter):
    """Access logs keep the route but only the first characters of a signed token."""

    def filter(self, record: logging.LogRecord) -> bool:
        if isinstance(record.args, tuple) and len(record.args) >= 3:
            args = list(record.args)
            args[2] = redact_tokens(str(args[2]))
            record.args = tuple(args)
        return True


def serve(app: Starlette, host: str, port: int, limits: WebLimits | None = None) -> None:
    """Serve until Ctrl-C; put it behind a TLS proxy so CAMPAIGN_BASE_URL can be https.

    Every client is bounded (`CAMPAIGN_WEB_TIMEOUT`, `CAMPAIGN_WEB_MAX_CONNECTIONS`): a whole
    request within the timeout, idle keep-alive connections closed, incomplete headers at most
    16 KiB (400), and beyond the connection limit an immediate 503.
    """
    limits = limits or WebLimits.from_env()
    logging.getLogger("uvicorn.access").addFilter(RedactTokens())
    uvicorn.run(
        app,
        host=host,
        port=port,
        log_level="info",
        server_header=False,
        http=bounded_protocol(limits.timeout),
        timeout_keep_alive=max(1, math.ceil(limits.keep_alive)),
        limit_concurrency=limits.max_connections,
        h11_max_incomplete_event_size=limits.max_header_bytes,
    )
