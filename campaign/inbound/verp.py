"""The return path that names the delivery: `local+TOKEN@domain` (VERP).

A bounce goes to the envelope sender (MAIL FROM), so when that address names the delivery,
any bounce finds its lead and step, even one whose text no detector can read. The token is
the delivery id and a truncated HMAC (the link signer's key, derived apart for this
purpose), in lower-case base32: it survives MTAs that fold case, fits a local part (64
characters) with room to spare, and cannot be forged to bounce someone else's lead.
Making one costs one HMAC per message.
"""

from __future__ import annotations

import base64
import binascii
import hmac
import re
from dataclasses import dataclass
from functools import cached_property

from campaign.rendering.links import LinkSigner

PURPOSE = "return-path"
MAC_BYTES = 8  # 64 bits: guessing one takes far more bounces than anyone can send
MAX_ID_BYTES = 8
_TOKEN = r"[a-z2-7]{14,40}"


def _b32(data: bytes) -> str:
    return base64.b32encode(data).decode("ascii").rstrip("=").lower()


def _unb32(text: str) -> bytes:
    padded = text.upper() + "=" * (-len(text) % 8)
    return base64.b32decode(padded)


@dataclass(frozen=True)
class ReturnPath:
    """Makes and reads the VERP addresses of one configured return path."""

    local: str
    domain: str
    key: bytes

    @classmethod
    def of(cls, address: str, signer: LinkSigner) -> ReturnPath:
        local, _, domain = address.lower().rpartition("@")
        return cls(local, domain, signer.derived_key(PURPOSE))

    @cached_property
    def pattern(self) -> re.Pattern[str]:
        """A VERP address of this return path anywhere in a text (any letter case)."""
        return re.compile(
            rf"{re.escape(self.local)}\+({_TOKEN})@{re.escape(self.domain)}", re.IGNORECASE
        )

    def _mac(self, ident: bytes) -> bytes:
        return hmac.new(self.key, ident, "sha256").digest()[:MAC_BYTES]

    def token(self, delivery_id: int) -> str:
        ident = delivery_id.to_bytes(max(1, (delivery_id.bit_length() + 7) // 8), "big")
        return _b32(ident + self._mac(ident))

    def address(self, delivery_id: int) -> str:
        return f"{self.local}+{self.token(delivery_id)}@{self.domain}"

    def read_token(self, token: str) -> int | None:
        """The delivery id a token names, or None when it is damaged or forged."""
        try:
            raw = _unb32(token)
        except (binascii.Error, ValueError):
            return None
        ident, mac = raw[:-MAC_BYTES], raw[-MAC_BYTES:]
        if not 1 <= len(ident) <= MAX_ID_BYTES or not hmac.compare_digest(mac, self._mac(ident)):
            return None
        return int.from_bytes(ident, "big")

    def read_address(self, address: str) -> int | None:
        """The delivery id a whole address names (an envelope recipient), or None."""
        found = self.pattern.fullmatch(address.strip().strip("<>"))
        return self.read_token(found.group(1).lower()) if found else None

    def find(self, text: str) -> list[int]:
        """Every delivery id that a valid VERP address in `text` names, in order, once each."""
        found: list[int] = []
        for match in self.pattern.finditer(text):
            delivery = self.read_token(match.group(1).lower())
            if delivery is not None and delivery not in found:
                found.append(delivery)
        return found
