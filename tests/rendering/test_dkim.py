"""DKIM signing, checked the way a receiving mail server checks it: each message is taken as
the SMTP catcher received it and verified by dkimpy against the TXT record the test publishes
(a `dnsfunc` answering for `SELECTOR._domainkey.DOMAIN`), with keys made in the test.

What must hold: every email the engine sends, the double opt-in confirmation too, carries a
valid relaxed/relaxed rsa-sha256 signature from the From address's domain; the headers
DMARC and RFC 8058 rely on are covered (changing one, or adding a second From or a
List-Unsubscribe-Post, breaks it), while the refolding relays do on the way does not; and a
half or broken setting stops the start-up with the variable named, before anything is sent.
"""

from __future__ import annotations

import base64
import re
import stat
from collections.abc import Callable
from datetime import UTC, datetime
from pathlib import Path

import dkim
import pytest
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import rsa
from dkim.util import parse_tag_value

from campaign.rendering.dkim import DkimSigner
from harness.cli import invoke
from harness.clock import iso
from harness.engine import Campaign
from harness.mail import link_named
from harness.schedule import copy_shipped
from harness.web import CONFIRM_BUTTON, open_web

SELECTOR = "nurture1"
DOMAIN = "evergreen-acupuncture.example.com"  # the shipped schedule's From domain
RECORD = f"{SELECTOR}._domainkey.{DOMAIN}"
DAY0 = datetime(2026, 3, 2, 15, 30, tzinfo=UTC)  # Monday; inside every lead's window
LEADS = (
    ("ann@example.com", "Ann", "America/Chicago"),
    ("bob@example.com", "Bob O'Neil", "America/New_York"),
    ("zoe@example.org", "Zoë", "Europe/London"),
)
REQUIRED = {
    "from",
    "subject",
    "date",
    "message-id",
    "to",
    "list-unsubscribe",
    "list-unsubscribe-post",
}
DnsFunc = Callable[..., bytes | None]


def new_key() -> tuple[bytes, str]:
    """A 2048-bit RSA key made here, as PEM, and its TXT record value (RFC 6376 3.6.1)."""
    key = rsa.generate_private_key(public_exponent=65537, key_size=2048)
    pem = key.private_bytes(
        serialization.Encoding.PEM,
        serialization.PrivateFormat.PKCS8,
        serialization.NoEncryption(),
    )
    der = key.public_key().public_bytes(
        serialization.Encoding.DER, serialization.PublicFormat.SubjectPublicKeyInfo
    )
    return pem, f"v=DKIM1; k=rsa; p={base64.b64encode(der).decode()}"


def publishing(value: str, name: str = RECORD) -> DnsFunc:
    """The DNS as a receiver sees it: this one TXT record and nothing else."""

    def txt(query: bytes, timeout: float = 5) -> bytes | None:
        return value.encode() if query.decode().rstrip(".").lower() == name else None

    return txt


def signature(data: bytes) -> dict[bytes, bytes]:
    """The tags of the message's DKIM-Signature header."""
    match = re.search(rb"^DKIM-Signature:(.*?\r\n)(?![ \t])", data, re.S | re.M | re.I)
    assert match, data[:400]
    return parse_tag_value(re.sub(rb"\r\n[ \t]", b" ", match[1]).strip())


def signed_names(data: bytes) -> list[str]:
    return [name.strip().decode().lower() for name in signature(data)[b"h"].split(b":")]


def replace_header(data: bytes, name: bytes, value: bytes) -> bytes:
    """The message with the (first) `name` header's value replaced, unfolded."""
    changed, count = re.subn(
        rb"^" + name + rb":.*?\r\n(?![ \t])",
        name + b": " + value + b"\r\n",
        data,
        count=1,
        flags=re.S | re.M | re.I,
    )
    assert count == 1, name
    return changed


def add_header(data: bytes, line: bytes, top: bool) -> bytes:
    """The message with one more header line, above the others or below them."""
    if top:
        return line + b"\r\n" + data
    head, _, body = data.partition(b"\r\n\r\n")
    return head + b"\r\n" + line + b"\r\n\r\n" + body


# -- keygen, then send-due over SMTP: what arrives verifies ---------------------------------


@pytest.mark.slow
def test_keygen_then_send_due_signs_every_email(campaign: Campaign, tmp_path: Path) -> None:
    key_file = tmp_path / "dkim.pem"
    made = campaign.cli("dkim", "keygen", "--selector", SELECTOR, "--out", str(key_file))
    assert stat.S_IMODE(key_file.stat().st_mode) == 0o600, "the private key is the owner's only"
    name = re.search(r"^\s*name:\s+(\S+)$", made.stdout, re.M)
    value = re.search(r"^\s*value:\s+(v=DKIM1;.*)$", made.stdout, re.M)
    assert name and value, made.stdout
    assert name[1] == RECORD
    zone = next(line for line in made.stdout.splitlines() if " IN TXT " in line)
    strings = re.findall(r'"([^"]*)"', zone)
    assert "".join(strings) == value[1] and max(map(len, strings)) <= 255, zone
    assert f"CAMPAIGN_DKIM_SELECTOR={SELECTOR}" in made.stdout

    again = campaign.cli("dkim", "keygen", "--selector", SELECTOR, "--out", str(key_file), expect=2)
    assert "exists" in again.stderr
    before = key_file.read_bytes()

    campaign.enroll(DAY0, *LEADS)
    env = {"CAMPAIGN_DKIM_SELECTOR": SELECTOR, "CAMPAIGN_DKIM_PRIVATE_KEY_FILE": str(key_file)}
    campaign.cli("send-due", "--now", iso(DAY0), env=env)

    assert key_file.read_bytes() == before, "a second keygen never overwrites a key"
    arrived = campaign.catcher.messages
    assert sorted(c.recipients[0] for c in arrived) == sorted(email for email, _, _ in LEADS)
    dns = publishing(value[1])
    for caught in arrived:
        assert dkim.verify(caught.data, dnsfunc=dns), caught.data[:600]
        tags = signature(caught.data)
        assert (tags[b"d"], tags[b"s"]) == (DOMAIN.encode(), SELECTOR.encode())
        assert (tags[b"a"], tags[b"c"]) == (b"rsa-sha256", b"relaxed/relaxed")
        assert set(signed_names(caught.data)) >= REQUIRED
        assert signed_names(caught.data).count("list-unsubscribe-post") == 2, "over-signed"


# -- what the signature covers ----------------------------------------------------------------


@pytest.fixture
def signed_email(campaign: Campaign) -> tuple[bytes, DnsFunc]:
    """Step 1 for Ann as it arrived, signed by the engine with a key made here."""
    pem, value = new_key()
    campaign.engine().dkim = DkimSigner(SELECTOR, pem)
    campaign.enroll(DAY0, LEADS[0])
    report = campaign.send_due(DAY0)
    assert report.ok and report.sent == 1, report
    (caught,) = campaign.catcher.messages
    return caught.data, publishing(value)


@pytest.mark.parametrize(
    ("header", "value"),
    [
        (b"From", b"Evergreen Acupuncture <care@evil.example>"),
        (b"Subject", b"Something else entirely"),
        (b"Date", b"Tue, 03 Mar 2026 10:00:00 +0000"),
        (b"Message-ID", b"<other@evergreen-acupuncture.example.com>"),
        (b"To", b"Mallory <mallory@example.org>"),
        (b"List-Unsubscribe", b"<https://evil.example/u/x>"),
        (b"List-Unsubscribe-Post", b"List-Unsubscribe=Nope"),
    ],
)
def test_changing_a_signed_header_breaks_the_signature(
    signed_email: tuple[bytes, DnsFunc], header: bytes, value: bytes
) -> None:
    data, dns = signed_email
    assert dkim.verify(data, dnsfunc=dns)
    assert not dkim.verify(replace_header(data, header, value), dnsfunc=dns)


@pytest.mark.parametrize(
    "line",
    [
        b"From: Mallory <mallory@evil.example>",
        b"Reply-To: mallory@evil.example",
        b"Subject: Something else entirely",
        b"List-Unsubscribe: <https://evil.example/u/x>",
        b"List-Unsubscribe-Post: List-Unsubscribe=One-Click",
    ],
    ids=["second-from", "reply-to", "second-subject", "second-unsubscribe", "second-one-click"],
)
def test_adding_a_header_the_signature_covers_breaks_it(
    signed_email: tuple[bytes, DnsFunc], line: bytes
) -> None:
    data, dns = signed_email
    assert dkim.verify(data, dnsfunc=dns)
    for top in (True, False):
        assert not dkim.verify(add_header(data, line, top), dnsfunc=dns), (line, top)


def test_a_relay_refolding_headers_and_trailing_spaces_keeps_it_valid(
    signed_email: tuple[bytes, DnsFunc],
) -> None:
    """Relaxed canonicalisation: what relays do on the way (refolding, spaces at line ends,
    a trace header on top) changes nothing a receiver checks."""
    data, dns = signed_email
    subject = re.search(rb"^Subject: (.*?)\r\n(?![ \t])", data, re.S | re.M)
    assert subject
    refolded = replace_header(data, b"Subject", subject[1].replace(b" ", b"\r\n\t", 1))
    refolded = b"Received: from nurture by relay.example.net; Mon, 2 Mar 2026\r\n" + refolded
    head, _, body = refolded.partition(b"\r\n\r\n")
    refolded = head + b"\r\n\r\n" + body.replace(b"\r\n", b" \t\r\n", 5)  # trailing blanks
    assert refolded != data
    assert dkim.verify(refolded, dnsfunc=dns)


def test_another_key_in_dns_fails(signed_email: tuple[bytes, DnsFunc]) -> None:
    data, _ = signed_email
    _, other = new_key()
    assert not dkim.verify(data, dnsfunc=publishing(other))


# -- the double opt-in email is signed too ----------------------------------------------------


def test_the_confirmation_email_is_signed(tmp_path: Path) -> None:
    """A web signup queues its confirmation; the sender delivers it, signed like every step."""
    pem, value = new_key()
    with open_web(tmp_path, confirmations=True) as web:
        web.campaign.engine().dkim = DkimSigner(SELECTOR, pem)  # before its first render
        answer = web.signup("ann@example.com", first_name="Ann")
        assert answer.status_code == 201, answer.text
        (confirmation,) = web.send()
        assert link_named(confirmation, CONFIRM_BUTTON)
        (caught,) = web.campaign.catcher.messages
        assert dkim.verify(caught.data, dnsfunc=publishing(value)), caught.data[:600]
        assert set(signed_names(caught.data)) >= REQUIRED


# -- settings that cannot sign stop the start-up ----------------------------------------------


def _write(path: Path, data: bytes) -> str:
    path.write_bytes(data)
    return str(path)


@pytest.mark.parametrize(
    ("case", "named"),
    [
        ("selector-only", "CAMPAIGN_DKIM_PRIVATE_KEY_FILE"),
        ("key-only", "CAMPAIGN_DKIM_SELECTOR"),
        ("missing-file", "CAMPAIGN_DKIM_PRIVATE_KEY_FILE"),
        ("not-a-key", "CAMPAIGN_DKIM_PRIVATE_KEY_FILE"),
        ("public-key", "CAMPAIGN_DKIM_PRIVATE_KEY_FILE"),
        ("bad-selector", "CAMPAIGN_DKIM_SELECTOR"),
    ],
)
def test_a_broken_dkim_setting_stops_send_due_before_anything_is_sent(
    campaign: Campaign, tmp_path: Path, case: str, named: str
) -> None:
    pem, value = new_key()
    public = base64.b64decode(value.partition("p=")[2])
    key_file = _write(tmp_path / "key.pem", pem)
    env = {
        "selector-only": {"CAMPAIGN_DKIM_SELECTOR": SELECTOR},
        "key-only": {"CAMPAIGN_DKIM_PRIVATE_KEY_FILE": key_file},
        "missing-file": {
            "CAMPAIGN_DKIM_SELECTOR": SELECTOR,
            "CAMPAIGN_DKIM_PRIVATE_KEY_FILE": str(tmp_path / "nowhere.pem"),
        },
        "not-a-key": {
            "CAMPAIGN_DKIM_SELECTOR": SELECTOR,
            "CAMPAIGN_DKIM_PRIVATE_KEY_FILE": _write(tmp_path / "notes.txt", b"hello\n"),
        },
        "public-key": {
            "CAMPAIGN_DKIM_SELECTOR": SELECTOR,
            "CAMPAIGN_DKIM_PRIVATE_KEY_FILE": _write(
                tmp_path / "public.pem",
                serialization.load_der_public_key(public).public_bytes(
                    serialization.Encoding.PEM, serialization.PublicFormat.SubjectPublicKeyInfo
                ),
            ),
        },
        "bad-selector": {
            "CAMPAIGN_DKIM_SELECTOR": "two words",
            "CAMPAIGN_DKIM_PRIVATE_KEY_FILE": key_file,
        },
    }[case]
    campaign.enroll(DAY0, LEADS[0])
    result = invoke(
        "--schedule",
        str(campaign.schedule_path),
        "--db",
        f"sqlite:///{campaign.db_path}",
        "send-due",
        "--now",
        iso(DAY0),
        env={"CAMPAIGN_SMTP_PORT": str(campaign.catcher.port), **env},
    )
    assert result.exit_code == 2, result.output
    assert named in result.stderr, result.stderr
    assert "Traceback" not in result.output
    assert campaign.catcher.messages == []
    assert campaign.status_counts() == {"pending": 1}


def test_keygen_names_an_international_domain_in_ascii(tmp_path: Path) -> None:
    result = invoke(
        "--schedule",
        str(copy_shipped(tmp_path)),
        "dkim",
        "keygen",
        "--selector",
        "s2026",
        "--domain",
        "praxis-bücher.example",
        "--out",
        str(tmp_path / "k.pem"),
    )
    assert result.exit_code == 0, result.output
    assert "name:  s2026._domainkey.xn--praxis-bcher-klb.example" in result.stdout
