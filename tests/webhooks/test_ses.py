"""POST /webhooks/ses: Amazon SES notifications as SNS posts them, signed here with a key
and self-signed certificate made for the test, exactly as SNS signs (RSA over the canonical
string, SignatureVersion 1 with SHA-1 and 2 with SHA-256). The certificate and the
SubscribeURL are served by a local HTTP server on 127.0.0.1, reached only because the test
builds its fetcher with `test_loopback`; nothing leaves the machine."""

from __future__ import annotations

import base64
import json
import threading
from collections.abc import Iterator
from datetime import timedelta
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any

import pytest
from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import padding, rsa
from cryptography.x509.oid import NameOID

from campaign.webhooks.sns import SnsFetcher, SnsRefused, canonical
from harness.inbound import ANA, BEN, last_to
from harness.webhooks import NOW, Hooks, open_hooks, settings

KEY = rsa.generate_private_key(public_exponent=65537, key_size=2048)
DOMAIN = "evergreen-acupuncture.example.com"
TOPIC = "arn:aws:sns:us-east-1:123456789012:clinic-ses-feedback"
_NAME = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "sns.us-east-1.amazonaws.com")])
CERT = (
    x509.CertificateBuilder()
    .subject_name(_NAME)
    .issuer_name(_NAME)
    .public_key(KEY.public_key())
    .serial_number(x509.random_serial_number())
    .not_valid_before(NOW - timedelta(days=1))
    .not_valid_after(NOW + timedelta(days=365))
    .sign(KEY, hashes.SHA256())
    .public_bytes(serialization.Encoding.PEM)
)


class Amazon:
    """What SNS's hosts would serve: the signing certificate, and the SubscribeURL, whose
    every request is counted."""

    def __init__(self) -> None:
        self.requests: list[str] = []
        requests = self.requests

        class Handler(BaseHTTPRequestHandler):
            def do_GET(self) -> None:  # noqa: N802 - http.server's name
                requests.append(self.path)
                body = CERT if self.path.endswith(".pem") else b"<ConfirmSubscriptionResponse/>"
                self.send_response(200)
                self.send_header("Content-Length", str(len(body)))
                self.end_headers()
                self.wfile.write(body)

            def log_message(self, *args: Any) -> None:
                pass

        self.server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.url = f"http://127.0.0.1:{self.server.server_address[1]}"

    def __enter__(self) -> Amazon:
        threading.Thread(target=self.server.serve_forever, daemon=True).start()
        return self

    def __exit__(self, *exc: object) -> None:
        self.server.shutdown()
        self.server.server_close()


@pytest.fixture
def amazon() -> Iterator[Amazon]:
    with Amazon() as served:
        yield served


def sns(amazon: Amazon, kind: str, message_id: str, version: str = "2", **fields: str) -> dict:
    """An SNS message of `kind`, signed as SNS signs it."""
    message = {
        "Type": kind,
        "MessageId": message_id,
        "TopicArn": TOPIC,
        "Timestamp": NOW.strftime("%Y-%m-%dT%H:%M:%S.000Z"),
        "SignatureVersion": version,
        "SigningCertURL": f"{amazon.url}/SimpleNotificationService-test.pem",
        **fields,
    }
    algorithm = hashes.SHA1() if version == "1" else hashes.SHA256()
    signature = KEY.sign(canonical(message), padding.PKCS1v15(), algorithm)
    return message | {"Signature": base64.b64encode(signature).decode()}


def mail(hooks: Hooks) -> dict:
    """SES's `mail` object: our Message-ID is in commonHeaders, SES's own id beside it."""
    return {
        "timestamp": NOW.isoformat(),
        "source": "care@evergreen-acupuncture.example.com",
        "sourceArn": f"arn:aws:ses:us-east-1:123456789012:identity/{DOMAIN}",
        "sendingAccountId": "123456789012",
        "messageId": "0100018e0d4c5a4a-8e3b6c2f-7d1a-4d8e-9b2f-1a2b3c4d5e6f-000000",
        "destination": [ANA],
        "headersTruncated": False,
        "headers": [{"name": "Message-ID", "value": hooks.message_id()}],
        "commonHeaders": {
            "from": ["Evergreen Acupuncture <care@evergreen-acupuncture.example.com>"],
            "to": [ANA],
            "messageId": hooks.message_id(),
            "subject": hooks.subject(),
        },
    }


def bounce(hooks: Hooks, severity: str = "Permanent", subtype: str = "General") -> dict:
    status = "5.1.1" if severity == "Permanent" else "4.2.2"
    return {
        "notificationType": "Bounce",
        "bounce": {
            "feedbackId": "0100018e0d4c6b1f-feedback-000000",
            "bounceType": severity,
            "bounceSubType": subtype,
            "bouncedRecipients": [
                {
                    "emailAddress": ANA,
                    "action": "failed",
                    "status": status,
                    "diagnosticCode": f"smtp; 550 {status} mailbox unavailable",
                }
            ],
            "timestamp": NOW.isoformat(),
            "reportingMTA": "dsn; a8-30.smtp-out.amazonses.com",
        },
        "mail": mail(hooks),
    }


def complaint(hooks: Hooks) -> dict:
    return {
        "eventType": "Complaint",  # the event-publishing format names it so
        "complaint": {
            "feedbackId": "0100018e0d4c7c2a-complaint-000000",
            "complainedRecipients": [{"emailAddress": ANA}],
            "timestamp": NOW.isoformat(),
            "userAgent": "Mozilla/5.0",
            "complaintFeedbackType": "abuse",
        },
        "mail": mail(hooks),
    }


def notification(amazon: Amazon, ses: dict, message_id: str, version: str = "2") -> dict:
    return sns(amazon, "Notification", message_id, version, Message=json.dumps(ses))


def post(hooks: Hooks, message: dict) -> Any:
    return hooks.post("ses", message, {"x-amz-sns-message-type": message["Type"]})


def fetcher() -> SnsFetcher:
    return SnsFetcher(timeout=5, test_loopback=True)


@pytest.mark.parametrize(
    ("payload", "version", "kind", "after"),
    [(bounce, "2", "hard-bounce", "bounced"), (complaint, "1", "complaint", "complained")],
)
def test_notifications_reach_the_lead_once(
    tmp_path: Path, amazon: Amazon, payload: Any, version: str, kind: str, after: str
) -> None:
    with open_hooks(tmp_path, fetcher=fetcher()) as hooks:
        message = notification(amazon, payload(hooks), "5e2f0f1c-0001", version)
        answer = post(hooks, message)
        assert answer.status_code == 200, answer.text
        assert answer.json() == {"processed": 1, "duplicates": 0, "ignored": 0}
        assert (hooks.status(ANA), hooks.status(BEN)) == (after, "active")
        [(recorded, email, step, sender, _)] = hooks.inbound()
        assert (recorded, email, step, sender) == (kind, ANA, "mechanisms", "ses webhook")

        before = hooks.state()
        assert post(hooks, message).json()["duplicates"] == 1
        assert hooks.state() == before
        assert amazon.requests == ["/SimpleNotificationService-test.pem"]  # fetched once

        hooks.next_week()
        assert hooks.ana_steps() == ["mechanisms"]


def test_the_subscription_is_confirmed_at_its_subscribe_url(tmp_path: Path, amazon: Amazon) -> None:
    with open_hooks(tmp_path, fetcher=fetcher()) as hooks:
        confirm = f"{amazon.url}/?Action=ConfirmSubscription&TopicArn={TOPIC}&Token=2336412f37"
        message = sns(
            amazon,
            "SubscriptionConfirmation",
            "165545c9-2a5c-472c-8df2-7ff2be2b3b1b",
            Message=f"You have chosen to subscribe to the topic {TOPIC}.",
            Token="2336412f37",
            SubscribeURL=confirm,
        )
        answer = post(hooks, message)
        assert answer.status_code == 200, answer.text
        assert answer.json()["note"] == f"subscribed to {TOPIC}"
        assert amazon.requests[-1] == confirm.removeprefix(amazon.url)

        elsewhere = confirm.replace(amazon.url, "https://sns.us-east-1.amazonaws.com.evil.example")
        kept = {"Message": message["Message"], "Token": message["Token"]}
        forged = sns(amazon, "SubscriptionConfirmation", "2", SubscribeURL=elsewhere, **kept)
        count = len(amazon.requests)
        assert post(hooks, forged).status_code == 403
        assert len(amazon.requests) == count  # nothing fetched from elsewhere


def test_forged_or_altered_messages_are_refused(tmp_path: Path, amazon: Amazon) -> None:
    with open_hooks(tmp_path, fetcher=fetcher()) as hooks:
        message = notification(amazon, bounce(hooks), "5e2f0f1c-0002")
        before = hooks.state()
        altered = message | {"Message": message["Message"].replace("Permanent", "Transient")}
        other_key = rsa.generate_private_key(public_exponent=65537, key_size=2048)
        forged_signature = other_key.sign(canonical(message), padding.PKCS1v15(), hashes.SHA256())
        forged = message | {"Signature": base64.b64encode(forged_signature).decode()}
        foreign_cert = message | {"SigningCertURL": "https://certs.example.net/sns.pem"}
        plain_http = message | {
            "SigningCertURL": "http://sns.us-east-1.amazonaws.com/SimpleNotificationService.pem"
        }
        unversioned = message | {"SignatureVersion": "3"}
        for refused in (altered, forged, foreign_cert, plain_http, unversioned):
            answer = post(hooks, refused)
            assert answer.status_code == 403, answer.text
        assert hooks.state() == before

        mismatch = hooks.post(
            "ses", message, {"x-amz-sns-message-type": "SubscriptionConfirmation"}
        )
        assert mismatch.status_code == 400


def test_signatures_can_be_switched_off(tmp_path: Path, amazon: Amazon) -> None:
    """CAMPAIGN_SNS_VERIFY_SIGNATURES=0 (an SNS look-alike that does not sign): Basic
    authentication alone; a Transient bounce is a soft bounce, counted."""
    unsigned = settings(CAMPAIGN_SNS_VERIFY_SIGNATURES="0")
    with open_hooks(tmp_path, unsigned, fetcher()) as hooks:
        message = notification(amazon, bounce(hooks, "Transient", "MailboxFull"), "5e2f-3")
        message.pop("Signature")
        assert post(hooks, message).json()["processed"] == 1
        [(kind, _, _, _, outcome)] = hooks.inbound()
        assert (kind, outcome) == ("soft-bounce", "soft bounce 1 of 3 in a row")
        assert amazon.requests == []


@pytest.mark.parametrize(
    ("url", "allowed"),
    [
        ("https://sns.us-east-1.amazonaws.com/SimpleNotificationService-abc.pem", True),
        ("https://sns.cn-north-1.amazonaws.com.cn/SimpleNotificationService-abc.pem", True),
        ("http://sns.us-east-1.amazonaws.com/SimpleNotificationService-abc.pem", False),
        ("https://sns.us-east-1.amazonaws.com.evil.example/cert.pem", False),
        ("https://evil.example/sns.us-east-1.amazonaws.com/cert.pem", False),
        ("https://s3.amazonaws.com/cert.pem", False),
        ("http://127.0.0.1:8080/cert.pem", False),
        ("not a url", False),
    ],
)
def test_only_amazons_sns_hosts_are_fetched_from(url: str, allowed: bool) -> None:
    production = SnsFetcher()
    if allowed:
        assert production.check(url, "SigningCertURL") == url
    else:
        with pytest.raises(SnsRefused, match="SigningCertURL"):
            production.check(url, "SigningCertURL")


def test_the_verp_envelope_sender_names_the_email_when_headers_are_missing(
    tmp_path: Path, amazon: Amazon
) -> None:
    """With a return path configured, SES reports the VERP address as `mail.source`: the
    event finds its email even when SES left our headers out."""
    with open_hooks(tmp_path, fetcher=fetcher(), return_path=True) as hooks:
        sent = last_to(hooks.campaign, ANA)
        assert sent.sender.startswith("bounces+")
        ses = bounce(hooks)
        ses["mail"] |= {"source": sent.sender, "headers": [], "commonHeaders": {}}
        assert post(hooks, notification(amazon, ses, "5e2f0f1c-0004")).status_code == 200
        assert hooks.inbound()[0][:3] == ("hard-bounce", ANA, "mechanisms")
        assert hooks.status() == "bounced"


def test_a_bounce_naming_another_address_changes_nothing(tmp_path: Path, amazon: Amazon) -> None:
    """Our Message-ID, but another recipient as the one that failed: recorded, no lead
    changes (as for a DSN naming another address)."""
    with open_hooks(tmp_path, fetcher=fetcher()) as hooks:
        ses = bounce(hooks)
        ses["bounce"]["bouncedRecipients"][0]["emailAddress"] = "someone@example.net"
        assert post(hooks, notification(amazon, ses, "5e2f0f1c-0005")).status_code == 200
        [(kind, email, _, _, outcome)] = hooks.inbound()
        assert (kind, email) == ("hard-bounce", ANA)
        assert outcome.startswith("names someone@example.net")
        assert (hooks.status(ANA), hooks.status(BEN)) == ("active", "active")
