"""Provider webhooks: what Amazon SES (through SNS), Postmark, SendGrid and Mailgun report
after they accepted an email, as the inbound mail path would have learned it from a bounce.

`base` is the shared part: HTTP Basic authentication against CAMPAIGN_WEBHOOK_SECRET, the
body read and parsed, each provider event mapped to one `WebhookEvent`, matched to its
delivery and handed to the inbound processor (`campaign.inbound.process`), which decides
and records the outcome exactly as for mail. One module per provider reads its payloads and
checks its own signature: `ses` (with `sns` for SNS signatures and subscriptions),
`postmark`, `sendgrid`, `mailgun`.
"""

from campaign.webhooks.routes import Webhooks, webhook_routes

__all__ = ["Webhooks", "webhook_routes"]
