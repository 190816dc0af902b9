"""DKIM signatures (RFC 6376) on finished messages, and the keys and DNS records behind them.

A receiver that finds a valid signature from the From address's own domain counts the email
as the clinic's (DMARC alignment), whichever relay carried it; without one, Gmail and Yahoo
send bulk mail to spam or refuse it. The signature covers the headers a forger or a
forwarder would change: From, Subject, Date,
Message-ID, To, Reply-To, the list headers, and List-Unsubscribe and List-Unsubscribe-Post,
which RFC 8058 requires signed before a mailbox provider shows its one-click button. A header
listed but absent (Reply-To, List-Unsubscribe-Post for a plain http link) is signed as empty,
and the headers a reader takes one of are listed twice: adding one on the way breaks the
signature too.

Signing is dkimpy's, with relaxed/relaxed canonicalisation (a relay that refolds a header or
trims trailing spaces keeps the signature valid) and rsa-sha256, the RSA step done by OpenSSL
(`_OpenSslDkim`). It runs on the finished bytes of each message: the body differs per lead
(its unsubscribe link), so there is no static part to hash once, and dkimpy takes the whole
message anyway. About 1 ms per email.
"""

from __future__ import annotations

import base64
import hashlib
import os
import re
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import dkim
import idna
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import padding, rsa
from cryptography.hazmat.primitives.asymmetric.utils import Prehashed

from campaign.config.settings import (
    DKIM_KEY_FILE_VAR,
    DKIM_SELECTOR_VAR,
    DkimSettings,
    SettingsError,
    dkim_settings,
)
from campaign.rendering.mime import MimeMessage

KEY_BITS = 2048  # RFC 8301: at least 1024, 2048 recommended; what every mailbox provider takes
MIN_KEY_BITS = 1024  # receivers ignore shorter keys (RFC 8301 3.2)
CANONICALIZATION = (b"relaxed", b"relaxed")
# Each header once, and the ones a reader takes as one value twice: a header listed once more
# than it occurs is signed as absent, so a copy added anywhere on the way (a second From, or a
# List-Unsubscribe pointing elsewhere) breaks the signature instead of being shown.
_OVER_SIGNED = (
    "From",
    "Reply-To",
    "To",
    "Subject",
    "Date",
    "Message-ID",
    "List-Unsubscribe",
    "List-Unsubscribe-Post",
)
SIGNED_HEADERS = (
    *_OVER_SIGNED,
    *_OVER_SIGNED,
    "List-Id",
    "Feedback-ID",  # Gmail's feedback loop only trusts a signed one
    "MIME-Version",
    "Content-Type",
)
_LABEL = r"[A-Za-z0-9](?:[A-Za-z0-9-]{0,61}[A-Za-z0-9])?"
_SELECTOR = re.compile(rf"{_LABEL}(?:\.{_LABEL})*\Z")
TXT_STRING = 255  # the longest string one DNS TXT record string may hold


class DkimKeyError(ValueError):
    """A private key dkimpy cannot sign with, or one too short to be trusted."""


def valid_selector(selector: str) -> bool:
    """A selector is one or more DNS labels: it names `SELECTOR._domainkey.DOMAIN`."""
    return bool(_SELECTOR.match(selector))


def signing_domain(domain: str) -> str:
    """The d= domain in its ASCII form: DNS and DKIM carry international domains as A-labels."""
    if domain.isascii():
        return domain.lower()
    return idna.encode(domain, uts46=True).decode("ascii")


def _load_rsa(pem: bytes) -> rsa.RSAPrivateKey:
    try:
        key = serialization.load_pem_private_key(pem, password=None)
    except (ValueError, TypeError) as exc:
        raise DkimKeyError(f"not an unencrypted PEM private key ({exc})") from None
    if not isinstance(key, rsa.RSAPrivateKey):
        raise DkimKeyError("not an RSA key (make one with `python run.py dkim keygen`)")
    if key.key_size < MIN_KEY_BITS:
        raise DkimKeyError(
            f"a {key.key_size}-bit RSA key is too short: receivers ignore keys under "
            f"{MIN_KEY_BITS} bits; use {KEY_BITS}"
        )
    return key


def _pkcs1(key: rsa.RSAPrivateKey) -> bytes:
    """The key as PKCS#1 PEM with LF line ends, the one form dkimpy's parser always reads."""
    return key.private_bytes(
        serialization.Encoding.PEM,
        serialization.PrivateFormat.TraditionalOpenSSL,
        serialization.NoEncryption(),
    )


class _OpenSslDkim(dkim.DKIM):
    """dkimpy's signer with the RSA step done by OpenSSL (through `cryptography`).

    dkimpy signs with Python's own `pow`, about 6 ms for a 2048-bit key: seven times what
    the engine spends on the rest of an email. OpenSSL takes 0.25 ms for the same
    RSASSA-PKCS1-v1_5 signature (deterministic: the very bytes dkimpy would write). Only
    `gen_header` is replaced, following dkimpy 1.1's own (hence the version bound in
    pyproject.toml); canonicalisation, header selection, the tag list and folding stay
    dkimpy's, and the tests verify every signature with dkimpy.
    """

    def __init__(self, message: bytes, key: rsa.RSAPrivateKey):
        super().__init__(message, signature_algorithm=b"rsa-sha256")
        self._key = key

    def gen_header(
        self,
        fields: list[tuple[bytes, bytes]],
        include_headers: tuple[bytes, ...],
        canon_policy: Any,
        header_name: bytes,
        pk: object,
        standardize: bool = False,
    ) -> bytes:
        value = dkim.fold(b"; ".join(b"=".join(x) for x in fields), namelen=len(header_name))
        unsigned = (header_name, b" " + dkim.RE_BTAG.sub(b"\\1", value))
        digest = hashlib.sha256()
        headers = canon_policy.canonicalize_headers(self.headers)
        self.signed_headers = dkim.hash_headers(
            digest, canon_policy, headers, include_headers, unsigned, dict(fields)
        )
        signature = self._key.sign(digest.digest(), padding.PKCS1v15(), Prehashed(hashes.SHA256()))
        fields = [(b"b", base64.b64encode(signature)) if k == b"b" else (k, v) for k, v in fields]
        value = b"; ".join(b"=".join(x) for x in fields) + self.linesep
        return bytes(dkim.fold(value, namelen=len(header_name), linesep=self.linesep))


class DkimSigner:
    """Signs finished messages with one selector and key, for the From address's domain."""

    def __init__(self, selector: str, private_key: bytes):
        if not valid_selector(selector):
            raise DkimKeyError(f"{selector!r} is not a selector (DNS labels: letters, digits, -)")
        self.selector = selector
        self._key = _load_rsa(private_key)
        self._pem = _pkcs1(self._key)  # dkimpy parses it too (and ignores it here)
        self._headers = [name.encode("ascii") for name in SIGNED_HEADERS]

    @classmethod
    def from_settings(cls, found: DkimSettings) -> DkimSigner:
        """The signer the environment asks for; a key that cannot sign stops the start-up."""
        if not valid_selector(found.selector):
            raise SettingsError(
                f"{DKIM_SELECTOR_VAR}={found.selector!r}: a selector is DNS labels "
                "(letters, digits and -, joined by dots)"
            )
        try:
            signer = cls(found.selector, found.private_key)
            signer.header(b"From: a@example.com\r\n\r\nkey check\r\n", "example.com")
        except (DkimKeyError, dkim.DKIMException) as exc:
            raise SettingsError(f"{DKIM_KEY_FILE_VAR}={found.key_file}: {exc}") from None
        return signer

    def header(self, message: bytes, domain: str) -> bytes:
        """The `DKIM-Signature:` header line (CRLF-terminated) for `message`, from `domain`."""
        signed: bytes = _OpenSslDkim(message, self._key).sign(
            self.selector.encode("ascii"),
            signing_domain(domain).encode("ascii"),
            self._pem,
            canonicalize=CANONICALIZATION,
            include_headers=self._headers,
        )
        return signed

    def sign(self, message: MimeMessage, domain: str) -> MimeMessage:
        """The message with its signature on top, ready for SMTP."""
        return MimeMessage(self.header(message.data, domain) + message.data, message.utf8)


# -- keys and their DNS record ---------------------------------------------------------------


def generate_key(bits: int = KEY_BITS) -> bytes:
    """A new RSA private key as PKCS#1 PEM."""
    return _pkcs1(rsa.generate_private_key(public_exponent=65537, key_size=bits))


@dataclass(frozen=True)
class TxtRecord:
    """The DNS record that publishes a key: `SELECTOR._domainkey.DOMAIN TXT "v=DKIM1; ..."`."""

    name: str
    value: str

    def zone_line(self, ttl: int = 3600) -> str:
        """The record in zone-file syntax, its value split into strings DNS can hold."""
        strings = [self.value[i : i + TXT_STRING] for i in range(0, len(self.value), TXT_STRING)]
        quoted = " ".join(f'"{s}"' for s in strings)
        return f"{self.name}. {ttl} IN TXT ( {quoted} )"


def txt_record(selector: str, domain: str, private_key: bytes) -> TxtRecord:
    """The TXT record receivers look up to check signatures made with `private_key`."""
    public = _load_rsa(private_key).public_key()
    der = public.public_bytes(
        serialization.Encoding.DER, serialization.PublicFormat.SubjectPublicKeyInfo
    )
    value = f"v=DKIM1; k=rsa; p={base64.b64encode(der).decode('ascii')}"
    return TxtRecord(f"{selector}._domainkey.{signing_domain(domain)}", value)


def write_key(path: Path, pem: bytes) -> None:
    """Write a new private key readable by its owner only; never overwrite an existing one
    (a key whose record is published would stop verifying)."""
    descriptor = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
    with os.fdopen(descriptor, "wb") as out:
        out.write(pem)


def dkim_signer(env: dict[str, str] | None = None) -> DkimSigner | None:
    """The signer `CAMPAIGN_DKIM_SELECTOR` and `CAMPAIGN_DKIM_PRIVATE_KEY_FILE` ask for, or
    None when they are unset; raises SettingsError, naming the variable, when they are wrong."""
    found = dkim_settings(env)
    return None if found is None else DkimSigner.from_settings(found)
