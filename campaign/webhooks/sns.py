"""Amazon SNS, the way SES reports reach a web endpoint: message signatures and
subscription confirmations.

SNS signs each message with RSA over a canonical string of its fields (SignatureVersion 1
with SHA-1, 2 with SHA-256) and names the certificate to check it with (SigningCertURL).
Anyone can post a message naming a certificate of their own, so the certificate is fetched
only over HTTPS from an SNS host of Amazon's (`sns.REGION.amazonaws.com`), with the
system's trusted CAs, and never through a redirect; the same rule holds for the
SubscribeURL a subscription is confirmed at. Certificates are kept once fetched.
"""

from __future__ import annotations

import base64
import re
import urllib.request
from collections.abc import Mapping
from typing import Any
from urllib.error import URLError
from urllib.parse import urlsplit

from cryptography import x509
from cryptography.exceptions import InvalidSignature
from cryptography.hazmat.primitives import hashes
from cryptography.hazmat.primitives.asymmetric import padding, rsa

from campaign.config.settings import is_loopback

SNS_HOST = re.compile(r"^sns\.[a-z0-9-]{1,40}\.amazonaws\.com(\.cn)?$")
MAX_RESPONSE = 64 * 1024  # a certificate or a confirmation answer is a few KB
MAX_CACHED = 32  # Amazon rotates its signing certificate rarely; a handful is plenty
_SIGNED_FIELDS = {
    "Notification": ("Message", "MessageId", "Subject", "Timestamp", "TopicArn", "Type"),
    "SubscriptionConfirmation": (
        "Message",
        "MessageId",
        "SubscribeURL",
        "Timestamp",
        "Token",
        "TopicArn",
        "Type",
    ),
}
_SIGNED_FIELDS["UnsubscribeConfirmation"] = _SIGNED_FIELDS["SubscriptionConfirmation"]
_HASHES: dict[str, type[hashes.HashAlgorithm]] = {"1": hashes.SHA1, "2": hashes.SHA256}


class SnsRefused(Exception):
    """A message whose signature or URLs cannot be trusted; says why."""


class _NoRedirects(urllib.request.HTTPRedirectHandler):
    def redirect_request(self, *args: Any, **kwargs: Any) -> None:
        return None  # a redirect is answered as the error it is for us


class SnsFetcher:
    """Fetches from Amazon's SNS hosts only: signing certificates and SubscribeURLs.

    `test_loopback` is for tests alone: it also lets plain-HTTP URLs on 127.0.0.1 through,
    so a test serves both from a local server and nothing reaches the network. It is a
    parameter, never a setting: a deployment cannot turn it on.
    """

    def __init__(self, *, timeout: float = 10.0, test_loopback: bool = False):
        self.timeout = timeout
        self.test_loopback = test_loopback
        self._opener = urllib.request.build_opener(_NoRedirects())
        self._certificates: dict[str, rsa.RSAPublicKey] = {}

    def check(self, url: str, what: str) -> str:
        """`url` when it is an SNS host's HTTPS address (or, under test, loopback's)."""
        try:
            parts = urlsplit(url)
            host = (parts.hostname or "").lower()
        except ValueError:
            raise SnsRefused(f"{what} is not a URL") from None
        if parts.scheme == "https" and SNS_HOST.match(host):
            return url
        if self.test_loopback and parts.scheme in ("http", "https") and is_loopback(host):
            return url
        raise SnsRefused(f"{what} is not an https URL on an sns.REGION.amazonaws.com host")

    def get(self, url: str, what: str) -> bytes:
        """The body at `url`, at most MAX_RESPONSE bytes, after `check`."""
        self.check(url, what)
        try:
            with self._opener.open(url, timeout=self.timeout) as response:
                return bytes(response.read(MAX_RESPONSE))
        except (URLError, OSError, ValueError) as exc:
            raise SnsRefused(f"could not fetch the {what}: {exc}") from exc

    def public_key(self, url: str) -> rsa.RSAPublicKey:
        """The RSA key of the signing certificate at `url`, fetched once."""
        key = self._certificates.get(url)
        if key is None:
            pem = self.get(url, "SigningCertURL")
            try:
                found = x509.load_pem_x509_certificate(pem).public_key()
            except ValueError:
                raise SnsRefused("the SigningCertURL holds no PEM certificate") from None
            if not isinstance(found, rsa.RSAPublicKey):
                raise SnsRefused("the signing certificate's key is not an RSA key")
            if len(self._certificates) >= MAX_CACHED:
                self._certificates.clear()
            key = self._certificates[url] = found
        return key


def canonical(message: Mapping[str, Any]) -> bytes:
    """The string SNS signs: each signed field present, as `name\\nvalue\\n`, in order."""
    names = _SIGNED_FIELDS.get(str(message.get("Type")))
    if names is None:
        raise SnsRefused(f"unknown SNS message Type {str(message.get('Type'))[:40]!r}")
    lines = []
    for name in names:
        value = message.get(name)
        if value is None and name == "Subject":
            continue  # the only optional one
        if not isinstance(value, str):
            raise SnsRefused(f"the SNS message has no {name}")
        lines.append(f"{name}\n{value}\n")
    return "".join(lines).encode("utf-8")


def verify(message: Mapping[str, Any], fetcher: SnsFetcher) -> None:
    """Raise SnsRefused unless Amazon's certificate verifies the message's signature."""
    algorithm = _HASHES.get(str(message.get("SignatureVersion")))
    if algorithm is None:
        raise SnsRefused("SignatureVersion is not 1 or 2")
    signed = canonical(message)
    cert_url = message.get("SigningCertURL")
    signature = message.get("Signature")
    if not isinstance(cert_url, str) or not isinstance(signature, str):
        raise SnsRefused("the SNS message has no Signature or SigningCertURL")
    fetcher.check(cert_url, "SigningCertURL")  # before anything is fetched
    try:
        raw = base64.b64decode(signature, validate=True)
    except ValueError:
        raise SnsRefused("the Signature is not base64") from None
    key = fetcher.public_key(cert_url)
    try:
        key.verify(raw, signed, padding.PKCS1v15(), algorithm())
    except InvalidSignature:
        raise SnsRefused("the SNS signature does not match the message") from None
