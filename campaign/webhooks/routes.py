"""The webhook routes the web service mounts: one per provider, each `POST
/webhooks/{provider}`, all sharing one secret and one SNS fetcher."""

from __future__ import annotations

from dataclasses import dataclass, field

from starlette.routing import Route

from campaign.config.settings import WebhookSettings
from campaign.web.service import Service
from campaign.webhooks.base import MAX_WEBHOOK_BODY, Endpoint, Provider
from campaign.webhooks.mailgun import MailgunWebhook
from campaign.webhooks.postmark import PostmarkWebhook
from campaign.webhooks.sendgrid import SendGridWebhook
from campaign.webhooks.ses import SesWebhook
from campaign.webhooks.sns import SnsFetcher


@dataclass
class Webhooks:
    """What the webhooks are configured with: the settings from the environment, and how
    SNS certificates and subscriptions are fetched (tests pass a fetcher that also reaches
    a local server)."""

    settings: WebhookSettings = field(default_factory=WebhookSettings)
    fetcher: SnsFetcher = field(default_factory=SnsFetcher)

    def providers(self) -> list[Provider]:
        return [
            SesWebhook(self.fetcher, self.settings.sns_signatures),
            PostmarkWebhook(),
            SendGridWebhook(self.settings.sendgrid_key),
            MailgunWebhook(self.settings.mailgun_signing_key),
        ]


def webhook_routes(service: Service, webhooks: Webhooks | None = None) -> list[Route]:
    """The routes; without `webhooks` (no secret configured) every one answers 503."""
    webhooks = webhooks or Webhooks()
    return [
        Route(
            f"/webhooks/{provider.name}",
            Endpoint(provider, service, webhooks.settings.secret).receive,
            methods=["POST"],
            max_body_size=MAX_WEBHOOK_BODY,
        )
        for provider in webhooks.providers()
    ]
