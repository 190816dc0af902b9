"""POST /webhooks/sendgrid: SendGrid's event webhook (a JSON array of events), signed with
a P-256 key made here as SendGrid's Signed Event Webhook signs: ECDSA over the timestamp
header followed by the body. Bounces and spam reports reach the lead their `smtp-id` (our
Message-ID) names; deliveries and opens are left out."""

from __future__ import annotations

import base64
import json
from pathlib import Path
from typing import Any

import pytest
from cryptography.hazmat.primitives import hashes
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.hazmat.primitives.serialization import Encoding, PublicFormat

from campaign.config.settings import SettingsError
from campaign.webhooks.sendgrid import SIGNATURE, TIMESTAMP
from harness.inbound import ANA, BEN
from harness.webhooks import NOW, Hooks, open_hooks, settings

KEY = ec.generate_private_key(ec.SECP256R1())
PUBLIC = base64.b64encode(
    KEY.public_key().public_bytes(Encoding.DER, PublicFormat.SubjectPublicKeyInfo)
).decode()
STAMP = str(int(NOW.timestamp()))


def signed(body: bytes, key: ec.EllipticCurvePrivateKey = KEY) -> dict[str, str]:
    signature = key.sign(STAMP.encode() + body, ec.ECDSA(hashes.SHA256()))
    return {SIGNATURE: base64.b64encode(signature).decode(), TIMESTAMP: STAMP}


def event(hooks: Hooks, kind: str, event_id: str, email: str = ANA, **extra: Any) -> dict:
    return {
        "email": email,
        "timestamp": int(NOW.timestamp()),
        "smtp-id": hooks.message_id(email),
        "event": kind,
        "category": ["nurture"],
        "sg_event_id": event_id,
        "sg_message_id": "14c5d75ce93.dfd.64b469.filter0001.16648.5515E0B88.0",
        **extra,
    }


def hard_bounce(hooks: Hooks) -> list[dict]:
    return [
        event(hooks, "processed", "cHJvY2Vzc2Vk", BEN),
        event(hooks, "delivered", "ZGVsaXZlcmVk", BEN, response="250 OK"),
        event(
            hooks,
            "bounce",
            "Ym91bmNlLTE",
            type="bounce",
            status="5.1.1",
            reason="550 5.1.1 The email account that you tried to reach does not exist",
            bounce_classification="Invalid Address",
        ),
    ]


def spam_report(hooks: Hooks) -> list[dict]:
    return [event(hooks, "spamreport", "c3BhbXJlcG9ydA")]


def body_of(events: list[dict]) -> bytes:
    return json.dumps(events).encode()


@pytest.mark.parametrize(
    ("payload", "kind", "after", "ignored"),
    [(hard_bounce, "hard-bounce", "bounced", 2), (spam_report, "complaint", "complained", 0)],
)
def test_signed_events_reach_the_lead_once(
    tmp_path: Path, payload: Any, kind: str, after: str, ignored: int
) -> None:
    with open_hooks(tmp_path, settings(CAMPAIGN_SENDGRID_VERIFICATION_KEY=PUBLIC)) as hooks:
        body = body_of(payload(hooks))
        answer = hooks.post("sendgrid", body, signed(body))
        assert answer.status_code == 200, answer.text
        assert answer.json() == {"processed": 1, "duplicates": 0, "ignored": ignored}
        assert (hooks.status(ANA), hooks.status(BEN)) == (after, "active")
        assert [row[:3] for row in hooks.inbound()] == [(kind, ANA, "mechanisms")]

        before = hooks.state()
        again = hooks.post("sendgrid", body, signed(body))
        assert again.json() == {"processed": 0, "duplicates": 1, "ignored": ignored}
        assert hooks.state() == before

        hooks.next_week()
        assert hooks.ana_steps() == ["mechanisms"]


def test_unsigned_forged_or_altered_posts_are_refused(tmp_path: Path) -> None:
    with open_hooks(tmp_path, settings(CAMPAIGN_SENDGRID_VERIFICATION_KEY=PUBLIC)) as hooks:
        body = body_of(hard_bounce(hooks))
        before = hooks.state()
        forged = signed(body, ec.generate_private_key(ec.SECP256R1()))
        altered = body.replace(b"Invalid Address", b"Invalid Addresses")
        for headers, sent in [
            ({}, body),
            (forged, body),
            (signed(body), altered),
            ({**signed(body), SIGNATURE: "not base64!"}, body),
        ]:
            answer = hooks.post("sendgrid", sent, headers)
            assert answer.status_code == 403, (headers, answer.text)
        assert hooks.state() == before
        assert hooks.status() == "active"


def test_without_a_verification_key_basic_auth_is_enough(tmp_path: Path) -> None:
    with open_hooks(tmp_path) as hooks:
        soft = event(hooks, "bounce", "YmxvY2tlZA", type="blocked", status="5.7.1", reason="spam")
        answer = hooks.post("sendgrid", [soft, event(hooks, "open", "b3Blbg")])
        assert answer.json() == {"processed": 1, "duplicates": 0, "ignored": 1}
        [(kind, _, _, _, outcome)] = hooks.inbound()
        assert (kind, outcome) == ("soft-bounce", "soft bounce 1 of 3 in a row")
        assert hooks.status() == "active"


def test_a_key_that_is_not_sendgrids_stops_the_start_up() -> None:
    for wrong in ("not base64!", base64.b64encode(b"abc").decode()):
        with pytest.raises(SettingsError, match="CAMPAIGN_SENDGRID_VERIFICATION_KEY"):
            settings(CAMPAIGN_SENDGRID_VERIFICATION_KEY=wrong)
