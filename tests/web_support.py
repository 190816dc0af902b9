"""The web lifecycle under test: the sending tests' campaign (a real SMTP catcher on loopback, a
real SQLite file, the real Engine) with the Starlette app served by uvicorn on 127.0.0.1 in
front of the same store, reached over real HTTP with httpx, plus readers for the links in the
emails that arrived.
"""

from __future__ import annotations

import base64
import json
import re
import sqlite3
import threading
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from email.message import EmailMessage
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

import httpx
import lxml.html
import uvicorn
from sending_support import HTTPS_BASE, Campaign, html_part, open_campaign, wait_for
from starlette.applications import Starlette

from campaign.config.settings import SmtpSettings
from campaign.devtools.catcher import free_port
from campaign.web.app import create_app, smtp_mailer

# Authorises signups against throwaway databases only; not a token of any deployment.
API_TOKEN = "web-tests-api-token-0123456789"
AUTH = {"Authorization": f"Bearer {API_TOKEN}"}
START = datetime(2026, 3, 2, 16, 0, tzinfo=UTC)  # a Monday, 10:00 in Chicago: the window is open
WEEK = timedelta(days=7)
ONE_CLICK = {"List-Unsubscribe": "One-Click"}  # the body RFC 8058 mailbox providers POST


@dataclass
class Web:
    """One campaign and the web service in front of it; the clock moves only when told to."""

    campaign: Campaign
    client: httpx.Client

    def signup(self, email: str, **fields: Any) -> httpx.Response:
        return self.client.post("/leads", json={"email": email, **fields}, headers=AUTH)

    def send(self, after: timedelta = timedelta(0)) -> list[EmailMessage]:
        """Move the clock on by `after`, send what is due then, return what arrived."""
        before = len(self.campaign.catcher.messages)
        report = self.campaign.send_due(self.campaign.clock[0] + after)
        assert report.ok and not report.errors, report
        return [caught.message for caught in self.campaign.catcher.messages[before:]]

    def status(self, email: str) -> str:
        lead = self.campaign.store.lead_by_email(email)
        assert lead is not None, f"no lead {email}"
        return lead.status

    def rows(self, query: str) -> list[sqlite3.Row]:
        """Rows read straight from the SQLite file, not through the code under test."""
        with sqlite3.connect(self.campaign.db_path) as db:
            db.row_factory = sqlite3.Row
            return db.execute(query).fetchall()


class ToLocalServer(httpx.HTTPTransport):
    """Sends requests for the public base URL to the local server, as a TLS proxy in front of
    it would, so the links in received emails can be followed exactly as they are."""

    def __init__(self, port: int):
        super().__init__()
        self.port = port

    def handle_request(self, request: httpx.Request) -> httpx.Response:
        request.url = request.url.copy_with(scheme="http", host="127.0.0.1", port=self.port)
        return super().handle_request(request)


@contextmanager
def serving(app: Starlette) -> Iterator[int]:
    """The app on uvicorn at 127.0.0.1 on a free port, in a thread; yields the port."""
    server = uvicorn.Server(
        uvicorn.Config(app, host="127.0.0.1", port=free_port(), log_level="warning", lifespan="off")
    )
    thread = threading.Thread(target=server.run, name="uvicorn", daemon=True)
    thread.start()
    try:
        wait_for(lambda: server.started or not thread.is_alive(), 10, "uvicorn to start")
        assert server.started, "uvicorn did not start"
        yield server.config.port
    finally:
        server.should_exit = True
        thread.join(10)


@contextmanager
def open_web(
    folder: Path,
    *,
    api_token: str | None = API_TOKEN,
    change: Callable[[dict[str, Any]], None] | None = None,
) -> Iterator[Web]:
    """A campaign copied into `folder` (optionally edited), its catcher running, and the app."""
    with open_campaign(folder) as campaign:
        if change is not None:
            campaign.edit(change)
        campaign.clock[0] = START
        app = create_app(
            campaign.store,
            campaign.engine().renderer,
            campaign.signer(),
            api_token,
            lambda: campaign.clock[0],
            smtp_mailer(SmtpSettings(port=campaign.catcher.port)),
        )
        with (
            serving(app) as port,
            httpx.Client(base_url=HTTPS_BASE, timeout=10, transport=ToLocalServer(port)) as client,
        ):
            yield Web(campaign, client)


def unsubscribe_url(message: EmailMessage) -> str:
    """The https target of `List-Unsubscribe: <https://…>, <mailto:…>` (RFC 2369)."""
    targets = re.findall(r"<([^<>]+)>", str(message["List-Unsubscribe"]))
    https = [target for target in targets if target.startswith("https://")]
    assert len(https) == 1, targets
    return https[0]


def anchors(message: EmailMessage) -> list[tuple[str, str]]:
    """(text, href) of every link in the HTML part, in document order."""
    doc = lxml.html.document_fromstring(html_part(message))
    return [(" ".join(a.text_content().split()), a.get("href", "")) for a in doc.iter("a")]


def link_named(message: EmailMessage, text: str) -> str:
    found = [href for label, href in anchors(message) if label == text]
    assert found, f"no link {text!r} in {anchors(message)}"
    return found[0]


def token_of(url: str) -> str:
    return urlsplit(url).path.rpartition("/")[2]


def with_payload(token: str, change: Callable[[list[Any]], None]) -> str:
    """The token with its signed payload edited and the old signature kept: a forgery."""
    payload, _, signature = token.rpartition(".")
    assert not payload.startswith("."), "payload is compressed; edit it another way"
    data = json.loads(base64.urlsafe_b64decode(payload + "=" * (-len(payload) % 4)))
    change(data)
    raw = json.dumps(data, separators=(",", ":")).encode()
    return f"{base64.urlsafe_b64encode(raw).rstrip(b'=').decode()}.{signature}"


def flip(text: str, index: int) -> str:
    """`text` with one character changed (to a different base64 character)."""
    return text[:index] + ("A" if text[index] != "A" else "B") + text[index + 1 :]
