"""What every provider webhook shares: HTTP Basic authentication against
CAMPAIGN_WEBHOOK_SECRET (401 without the right password, 503 while it is unset), a
bounded body, and hostile bodies answered 400 or ignored, never 500, changing nothing."""

from __future__ import annotations

import base64
from pathlib import Path

import pytest

from campaign.config.settings import SettingsError, WebhookSettings, webhook_settings
from campaign.webhooks.base import MAX_WEBHOOK_BODY
from harness.webhooks import SECRET, Hooks, basic, open_hooks

PROVIDERS = ("ses", "postmark", "sendgrid", "mailgun")

# Bodies no provider sends: not JSON, the wrong JSON, JSON of the wrong shapes.
HOSTILE: list[bytes] = [
    b"",
    b"not json",
    b"\xff\xfe\x00",
    b"NaN",
    b"[" * 5000 + b"]" * 5000,
    b"null",
    b"42",
    b'"text"',
    b"[]",
    b"{}",
    b'[1, null, "x", []]',
    b'{"Type": "Notification", "Message": "{\\"notificationType\\": \\"Bounce\\"}"}',
    b'{"Type": ["Notification"]}',
    b'{"RecordType": {"x": 1}}',
    b'{"RecordType": "Bounce", "Email": 5, "Content": ["<d1.abcdefabcdef@x>"]}',
    b'[{"event": "bounce", "email": ["a@b.c"], "smtp-id": {"x": 1}, "status": 5}]',
    b'{"signature": "x", "event-data": []}',
    b'{"event-data": {"event": "failed", "delivery-status": "x", "message": 3}}',
    b'{"event-data": {"event": "failed", "recipient": "ana@example.com", "severity": 1}}',
]


@pytest.fixture
def hooks(tmp_path: Path):
    with open_hooks(tmp_path) as opened:
        yield opened


@pytest.mark.parametrize("provider", PROVIDERS)
def test_every_webhook_needs_the_password(hooks: Hooks, provider: str) -> None:
    before = hooks.state()
    for password in (None, "", "wrong-password-0123456789", SECRET + "x", SECRET[:-1]):
        answer = hooks.post(provider, {}, password=password)
        assert answer.status_code == 401, (password, answer.text)
        assert answer.headers["WWW-Authenticate"] == 'Basic realm="webhooks"'
    for header in ("Bearer " + SECRET, "Basic !!!", "Basic " + base64.b64encode(b"x").decode()):
        answer = hooks.post(provider, {}, {"Authorization": header}, password=None)
        assert answer.status_code == 401, header
    assert hooks.state() == before


def test_any_user_name_with_the_password_passes(hooks: Hooks) -> None:
    answer = hooks.client.post(
        "/webhooks/postmark", json={"RecordType": "Open"}, headers=basic(SECRET, "postmark")
    )
    assert answer.status_code == 200
    assert answer.json() == {"processed": 0, "duplicates": 0, "ignored": 1}


@pytest.mark.parametrize("provider", PROVIDERS)
def test_hostile_bodies_are_refused_and_change_nothing(hooks: Hooks, provider: str) -> None:
    before = hooks.state()
    for body in HOSTILE:
        answer = hooks.post(provider, body, {"x-amz-sns-message-type": "Notification"})
        assert answer.status_code in (200, 400, 403), (body[:60], answer.text)
        if answer.status_code == 400:
            assert answer.json()["error"], body[:60]
    assert hooks.state()[:3] == before[:3]  # leads, deliveries, enrollments untouched


def test_an_oversized_body_is_refused(hooks: Hooks) -> None:
    answer = hooks.post("sendgrid", b"[" + b" " * MAX_WEBHOOK_BODY + b"]")
    assert answer.status_code == 413


def test_without_a_secret_every_webhook_answers_503(tmp_path: Path) -> None:
    with open_hooks(tmp_path, WebhookSettings()) as hooks:
        for provider in PROVIDERS:
            answer = hooks.post(provider, {})
            assert answer.status_code == 503
            assert "CAMPAIGN_WEBHOOK_SECRET" in answer.json()["error"]


@pytest.mark.parametrize(
    ("env", "problem"),
    [
        ({"CAMPAIGN_WEBHOOK_SECRET": "short"}, "too short"),
        ({"CAMPAIGN_WEBHOOK_SECRET": "has:a-colon-in-it-0123"}, "colon"),
        ({"CAMPAIGN_WEBHOOK_SECRET": "trailing-space-0123456 "}, "space"),
        ({"CAMPAIGN_MAILGUN_WEBHOOK_SIGNING_KEY": "key\r"}, "control character"),
        ({"CAMPAIGN_SNS_VERIFY_SIGNATURES": "maybe"}, "use 1"),
    ],
)
def test_bad_settings_name_their_variable(env: dict[str, str], problem: str) -> None:
    with pytest.raises(SettingsError, match=problem) as raised:
        webhook_settings(env)
    assert next(iter(env)) in str(raised.value)
    assert "0123456" not in str(raised.value)  # a secret is never repeated


def test_settings_defaults() -> None:
    assert webhook_settings({}) == WebhookSettings(None, None, None, True)
