"""The emails as they arrive: the tests' link signing, and readers for the parts, headers and
links of a received message, so a test follows the links exactly as a recipient would."""

from __future__ import annotations

import base64
import json
import re
from collections.abc import Callable
from email.message import EmailMessage
from typing import Any
from urllib.parse import urlsplit

import lxml.html

from campaign.rendering.links import LinkSigner

BASE_URL = "https://clinic.example.com"
# Signs links in throwaway databases only; not a secret of any deployment.
SIGNING_KEY = "test-link-signing-key-0123456789abcdef"
URL = re.compile(r"https?://[^\s\"'<>()]+")


def signer() -> LinkSigner:
    return LinkSigner(BASE_URL, SIGNING_KEY)


def step_of(message: EmailMessage) -> str:
    """The step id from the `X-Campaign-Step: campaign/step` header."""
    return str(message["X-Campaign-Step"]).rpartition("/")[2]


def without_urls(text: str) -> str:
    """Per-lead unsubscribe and click URLs differ by token; compare everything else."""
    return URL.sub("<URL>", text)


def text_part(message: EmailMessage) -> str:
    """The text/plain body with the wire's CRLF line endings read back as newlines."""
    part = message.get_body(preferencelist=("plain",))
    assert part is not None, "the message has no text/plain part"
    return part.get_content().replace("\r\n", "\n")


def html_part(message: EmailMessage) -> str:
    part = message.get_body(preferencelist=("html",))
    assert part is not None, "the message has no text/html part"
    return part.get_content().replace("\r\n", "\n")


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
