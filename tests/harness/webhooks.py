"""Provider webhooks under test: the campaign of the inbound tests (Ana and Ben sent step 1
by the real engine over SMTP to the catcher), the real app served on loopback with its
webhooks configured, and posts to it over real HTTP with the webhook credentials."""

from __future__ import annotations

import base64
import json
import sqlite3
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from datetime import timedelta
from pathlib import Path
from typing import Any

import httpx

from campaign.config.settings import WebhookSettings, webhook_settings
from campaign.web.app import create_app
from campaign.webhooks import Webhooks
from campaign.webhooks.sns import SnsFetcher
from harness.engine import Campaign, open_campaign
from harness.inbound import ANA, BEN, DAY0, WEEK, everything, last_to, start, status, steps_received
from harness.mail import BASE_URL, signer
from harness.web import API_TOKEN, ToLocalServer, serving

# Guards throwaway test databases only; not the secret of any deployment.
SECRET = "webhook-tests-secret-0123456789"
NOW = DAY0 + timedelta(hours=1)  # an hour after step 1 went out: the bounce comes back
JSON = {"Content-Type": "application/json"}


def basic(password: str, user: str = "webhook") -> dict[str, str]:
    token = base64.b64encode(f"{user}:{password}".encode()).decode()
    return {"Authorization": f"Basic {token}"}


def settings(**env: str) -> WebhookSettings:
    """The settings as the environment would give them, with the secret set."""
    return webhook_settings({"CAMPAIGN_WEBHOOK_SECRET": SECRET, **env})


@dataclass
class Hooks:
    """The campaign, and an HTTP client for its web service."""

    campaign: Campaign
    client: httpx.Client

    def message_id(self, email: str = ANA) -> str:
        """The Message-ID header of the last email sent to `email`, as the catcher got it."""
        return str(last_to(self.campaign, email).message["Message-ID"])

    def subject(self, email: str = ANA) -> str:
        return str(last_to(self.campaign, email).message["Subject"])

    def post(
        self,
        provider: str,
        body: bytes | dict[str, Any] | list[Any],
        headers: dict[str, str] | None = None,
        password: str | None = SECRET,
    ) -> httpx.Response:
        data = body if isinstance(body, bytes) else json.dumps(body).encode()
        auth = basic(password) if password is not None else {}
        return self.client.post(
            f"/webhooks/{provider}", content=data, headers={**JSON, **auth, **(headers or {})}
        )

    def status(self, email: str = ANA) -> str:
        return status(self.campaign, email)

    def state(self) -> tuple[list[tuple[Any, ...]], ...]:
        return everything(self.campaign)

    def inbound(self) -> list[tuple[Any, ...]]:
        """(kind, lead's address, step, sender, outcome) of every recorded event."""
        with sqlite3.connect(self.campaign.db_path) as db:
            return db.execute(
                "SELECT i.kind, l.email, i.step_id, i.sender, i.outcome FROM inbound_messages i"
                " LEFT JOIN leads l ON l.id = i.lead_id ORDER BY i.id"
            ).fetchall()

    def next_week(self) -> None:
        """Send what is due a week on: Ben's drip must go on whatever happened to Ana."""
        report = self.campaign.send_due(DAY0 + WEEK + timedelta(hours=1))
        assert report.ok and not report.errors, report
        assert steps_received(self.campaign, BEN) == ["mechanisms", "pain-types"]

    def ana_steps(self) -> list[str]:
        return steps_received(self.campaign, ANA)


@contextmanager
def open_hooks(
    folder: Path,
    hook_settings: WebhookSettings | None = None,
    fetcher: SnsFetcher | None = None,
    *,
    return_path: bool = False,
) -> Iterator[Hooks]:
    """Ana and Ben sent step 1 for real, then the app in front of the same store, with the
    webhooks configured by `hook_settings` (the test secret alone by default)."""
    with open_campaign(folder) as campaign:
        start(campaign, return_path)
        campaign.clock.now = NOW
        hooks = Webhooks(hook_settings or settings(), fetcher or SnsFetcher())
        app = create_app(
            campaign.store,
            campaign.engine().serving_renderer,
            signer(),
            API_TOKEN,
            campaign.clock,
            hooks,
        )
        with (
            serving(app) as port,
            httpx.Client(base_url=BASE_URL, timeout=10, transport=ToLocalServer(port)) as client,
        ):
            yield Hooks(campaign, client)
