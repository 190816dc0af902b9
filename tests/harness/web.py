"""The web lifecycle under test: a campaign (a real SMTP catcher on loopback, a real SQLite
file, the real Engine) with the Starlette app served by uvicorn on 127.0.0.1 in front of the
same store, reached over real HTTP with httpx; and the wait for a web server that `run.py`
started in a subprocess.
"""

from __future__ import annotations

import socket
import sqlite3
import subprocess
import threading
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from email.message import EmailMessage
from pathlib import Path
from typing import Any

import httpx
import uvicorn
from starlette.types import ASGIApp

from campaign.web.app import create_app
from harness.clock import wait_for
from harness.db import read_rows
from harness.engine import Campaign, open_campaign
from harness.mail import BASE_URL, signer

# Authorises signups against throwaway databases only; not a token of any deployment.
API_TOKEN = "web-tests-api-token-0123456789"
AUTH = {"Authorization": f"Bearer {API_TOKEN}"}
START = datetime(2026, 3, 2, 16, 0, tzinfo=UTC)  # a Monday, 10:00 in Chicago: the window is open
WEEK = timedelta(days=7)
ONE_CLICK = {"List-Unsubscribe": "One-Click"}  # the body RFC 8058 mailbox providers POST
CONFIRM_SUBJECT = "Please confirm your subscription"
CONFIRM_BUTTON = "Yes, send me the emails"
CONFIRM_TEMPLATE = """{% extends "layout.html.j2" %}
{% block body %}
<p>Hi {{ lead.first_name }},</p>
<p>Please confirm that you want our five emails about back pain.</p>
<p><a class="button" href="{{ links.confirm }}">Yes, send me the emails</a></p>
{% endblock %}
"""


def double_opt_in(data: dict[str, Any]) -> None:
    """A schedule edit: web signups stay pending until they confirm by email."""
    data["double_opt_in"] = True
    data["confirm"] = {"subject": CONFIRM_SUBJECT, "template": "confirm.html.j2"}


def ask_to_confirm(campaign: Campaign) -> None:
    """Turn double opt-in on in the campaign's schedule, with its confirmation template."""
    campaign.edit(double_opt_in)
    template = campaign.schedule_path.parent / "templates/emails/confirm.html.j2"
    template.write_text(CONFIRM_TEMPLATE, encoding="utf-8")


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
        report = self.campaign.send_due(self.campaign.clock.now + after)
        assert report.ok and not report.errors, report
        return [caught.message for caught in self.campaign.catcher.messages[before:]]

    def status(self, email: str) -> str:
        lead = self.campaign.store.leads.lead_by_email(email)
        assert lead is not None, f"no lead {email}"
        return lead.status

    def rows(self, query: str) -> list[sqlite3.Row]:
        """Rows read straight from the SQLite file, not through the code under test."""
        return read_rows(self.campaign.db_path, query)


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
def serving(app: ASGIApp) -> Iterator[int]:
    """The app on uvicorn in a thread, on a loopback socket bound before the thread starts, so
    it accepts connections at once; yields the port."""
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        sock.listen(64)
        server = uvicorn.Server(uvicorn.Config(app, log_level="warning", lifespan="off"))
        thread = threading.Thread(target=server.run, kwargs={"sockets": [sock]}, daemon=True)
        thread.start()
        try:
            yield sock.getsockname()[1]
        finally:
            server.should_exit = True
            thread.join(timeout=10)
            assert not thread.is_alive(), "the web server did not stop"


def wait_listening(process: subprocess.Popen[str], url: str, timeout: float = 30) -> None:
    """Wait until the web server `process` started answers `url`; fail with its output if
    it exits first."""

    def answers() -> bool:
        assert process.poll() is None, process.communicate(timeout=5)
        try:
            httpx.get(url, timeout=1)
        except httpx.TransportError:
            return False
        return True

    wait_for(answers, timeout, f"{url} to answer")


@contextmanager
def open_web(
    folder: Path,
    *,
    api_token: str | None = API_TOKEN,
    change: Callable[[dict[str, Any]], None] | None = None,
    confirmations: bool = False,
) -> Iterator[Web]:
    """A campaign copied into `folder` (optionally edited; with `confirmations`, under double
    opt-in), its catcher running, and the app."""
    with open_campaign(folder) as campaign:
        if change is not None:
            campaign.edit(change)
        if confirmations:
            ask_to_confirm(campaign)
        campaign.clock.now = START
        app = create_app(
            campaign.store,
            campaign.engine().serving_renderer,
            signer(),
            api_token,
            campaign.clock,
        )
        with (
            serving(app) as port,
            httpx.Client(base_url=BASE_URL, timeout=10, transport=ToLocalServer(port)) as client,
        ):
            yield Web(campaign, client)
