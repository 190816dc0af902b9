"""Clicks from link scanners are not people: a pure classifier of one click on a tracked link.

Security gateways (Microsoft Defender's Safe Links, Mimecast, Proofpoint, Barracuda, Cisco)
open every link of an incoming email within seconds of its delivery to check the page behind
it, and browsers and mail apps prefetch links. Such a click must never convert a lead or
end a series, but it must still be redirected (a scanner that finds no page may quarantine
the email). What gives one away, cheapest first: the request's method, a prefetch header,
a known user agent, a click too soon after the email was sent, and several links of one
email opened at once. The last can only be seen from its second click on: the store then
turns the earlier clicks of the burst into scanner clicks too (`ClickVerdict.burst`).

Nothing here does I/O or reads a clock: the endpoint passes the request's parts, the time,
and what the store read about the email (`EmailClicks`).
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from datetime import datetime, timedelta

from campaign.model import ClickSource, ClickVerdict, EmailClicks

# No person opens an email and clicks a link in it this soon after it was sent; a gateway
# scanning the email on arrival does (mautic#16263 shows clicks 1-5 s after delivery). The
# cost: someone who clicks within 10 s is counted as a scanner and does not convert by the
# click (the booking system still reports the booking).
SCANNER_DELAY = timedelta(seconds=10)
# A person opens one link at a time; a scanner opens every link of an email in a burst.
# Two different links of one email within a second cannot both be a person's.
BURST_WINDOW = timedelta(seconds=1)
BURST_LINKS = 2

# Request headers by which browsers announce a prefetch or preview, not a visit: `Purpose`
# and `Sec-Purpose` (Chrome, the Fetch standard's speculative loads), `X-Moz` (Firefox's
# link prefetching), `X-Purpose` (Safari's previews).
PREFETCH_HEADERS = ("purpose", "sec-purpose", "x-moz", "x-purpose")
PREFETCH_VALUES = ("prefetch", "prerender", "preview")

# Lower-case user-agent fragments of machines that open links, and who they are. Matched
# anywhere in the User-Agent. Not here: GoogleImageProxy, which fetches images for Gmail
# (a person opening the email), never links.
SCANNER_AGENTS: tuple[tuple[str, str], ...] = (
    ("barracuda", "Barracuda Email Protection's link protection"),
    ("mimecast", "Mimecast URL Protect"),
    ("proofpoint", "Proofpoint URL Defense"),
    ("urldefense", "Proofpoint URL Defense (urldefense.com)"),
    ("safelinks", "Microsoft Defender for Office 365 Safe Links"),
    ("bingpreview", "Microsoft's link preview (Outlook.com, Teams)"),
    ("ironport", "Cisco Secure Email (IronPort) URL filtering"),
    ("headlesschrome", "headless Chrome, as sandboxes use to open links"),
    ("phantomjs", "PhantomJS, a headless browser"),
    ("python-requests", "a script (Python requests)"),
    ("python-urllib", "a script (Python urllib)"),
    ("aiohttp", "a script (Python aiohttp)"),
    ("curl/", "a script (curl)"),
    ("wget/", "a script (wget)"),
    ("go-http-client", "a program (Go's HTTP client)"),
    ("java/", "a program (Java's HTTP client)"),
    ("libwww-perl", "a script (Perl LWP)"),
    ("googlebot", "Google's crawler"),
    ("bingbot", "Bing's crawler"),
    ("slackbot", "Slack's link preview"),
    ("facebookexternalhit", "Facebook's link preview"),
)


@dataclass(frozen=True)
class ClickRequest:
    """The parts of an HTTP request that tell a person from a machine."""

    method: str
    headers: Mapping[str, str]  # names in lower case

    @property
    def user_agent(self) -> str:
        return self.headers.get("user-agent", "").strip()


def _request_reason(request: ClickRequest) -> str | None:
    """Why the request itself shows a machine, or None."""
    if request.method.upper() != "GET":
        return f"{request.method.upper()} request (a probe, not a visit)"
    for name in PREFETCH_HEADERS:
        value = request.headers.get(name, "").lower()
        if any(word in value for word in PREFETCH_VALUES):
            return f"{name}: {value[:40]} (a prefetch)"
    agent = request.user_agent.lower()
    if not agent:
        return "no user agent (every browser sends one)"
    for fragment, who in SCANNER_AGENTS:
        if fragment in agent:
            return f"user agent of {who}"
    return None


def _burst(url: str, now: datetime, email: EmailClicks) -> int:
    """How many different links of the email were opened within `BURST_WINDOW`, this one
    included."""
    within = {u for u, at in email.recent if timedelta(0) <= now - at <= BURST_WINDOW}
    return len(within | {url})


def classify(request: ClickRequest, url: str, now: datetime, email: EmailClicks) -> ClickVerdict:
    """A person's click, or a scanner's with the first reason found."""
    links = _burst(url, now, email)
    burst = links >= BURST_LINKS
    reason = _request_reason(request)
    if reason is None and email.sent_at is not None:
        since = now - email.sent_at
        if since < SCANNER_DELAY:
            reason = f"opened {since.total_seconds():.1f} s after the email was sent"
    if reason is None and burst:
        reason = f"{links} links of one email opened within {BURST_WINDOW.total_seconds():g} s"
    if reason is None:
        return ClickVerdict(ClickSource.PERSON)
    return ClickVerdict(ClickSource.SCANNER, reason, burst)
