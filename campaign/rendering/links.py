"""Signed, per-lead links: one-click unsubscribe, tracked clicks and double opt-in confirmation.

Tokens are signed with `CAMPAIGN_SECRET_KEY` (itsdangerous) and carry no expiry, so a link in
an old email keeps working; a forged or altered token fails the signature check.
"""

from __future__ import annotations

import hashlib
import hmac
from dataclasses import dataclass

from itsdangerous import BadSignature, URLSafeSerializer

from campaign.rendering.renderer import Links


@dataclass(frozen=True)
class LeadToken:
    """What an unsubscribe or confirmation link names: a lead in a campaign."""

    lead_id: int
    campaign_id: str


@dataclass(frozen=True)
class ClickToken:
    lead_id: int
    campaign_id: str
    step_id: str
    link: int


class InvalidToken(ValueError):
    """A token whose signature does not match: forged, altered or cut short."""


class LinkSigner:
    def __init__(self, base_url: str, secret_key: str):
        self.base_url = base_url.rstrip("/")
        self._unsubscribe = URLSafeSerializer(secret_key, salt="unsubscribe")
        self._click = URLSafeSerializer(secret_key, salt="click")
        self._confirm = URLSafeSerializer(secret_key, salt="confirm")
        self._key = secret_key.encode("utf-8")

    def derived_key(self, purpose: str) -> bytes:
        """A key of its own for each `purpose`, derived from this one: for tokens that must
        be shorter than a serializer's (the return path's, campaign.inbound.verp)."""
        return hmac.new(self._key, purpose.encode("utf-8"), hashlib.sha256).digest()

    def unsubscribe_url(self, lead_id: int, campaign_id: str) -> str:
        return f"{self.base_url}/u/{self._unsubscribe.dumps([lead_id, campaign_id])}"

    def confirm_url(self, lead_id: int, campaign_id: str) -> str:
        return f"{self.base_url}/confirm/{self._confirm.dumps([lead_id, campaign_id])}"

    def click_url(self, lead_id: int, campaign_id: str, step_id: str, link: int) -> str:
        token = self._click.dumps([lead_id, campaign_id, step_id, link])
        return f"{self.base_url}/c/{token}"

    def links(self, lead_id: int, campaign_id: str, step_id: str, *, track: bool = True) -> Links:
        unsubscribe = self.unsubscribe_url(lead_id, campaign_id)
        if not track:
            return Links(unsubscribe=unsubscribe)
        return Links(
            unsubscribe=unsubscribe,
            click=lambda index, _url: self.click_url(lead_id, campaign_id, step_id, index),
        )

    def read_unsubscribe(self, token: str) -> LeadToken:
        lead_id, campaign_id = self._load(self._unsubscribe, token, 2)
        return LeadToken(int(lead_id), str(campaign_id))

    def read_confirm(self, token: str) -> LeadToken:
        lead_id, campaign_id = self._load(self._confirm, token, 2)
        return LeadToken(int(lead_id), str(campaign_id))

    def read_click(self, token: str) -> ClickToken:
        lead_id, campaign_id, step_id, link = self._load(self._click, token, 4)
        return ClickToken(int(lead_id), str(campaign_id), str(step_id), int(link))

    @staticmethod
    def _load(serializer: URLSafeSerializer, token: str, size: int) -> list:
        try:
            data = serializer.loads(token)
        except BadSignature as exc:
            raise InvalidToken("this link is not valid (it was altered or cut short)") from exc
        if not isinstance(data, list) or len(data) != size:
            raise InvalidToken("this link is not valid")
        return data
