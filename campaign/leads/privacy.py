"""A person's rights over their data: export everything held about them, erase it, and keep
an erased address from coming back by any way but the person's own new signup with consent.

An erased address stays on the suppression list only as a keyed hash (HMAC-SHA256 under a key
derived from `CAMPAIGN_SECRET_KEY`), so the list can still refuse it without holding it. Every
operator action here is written to the audit log with who did it.
"""

from __future__ import annotations

import getpass
import os
import re
from collections.abc import Iterable
from dataclasses import dataclass
from datetime import datetime
from typing import Any

from campaign.config import settings
from campaign.config.settings import SettingsError
from campaign.model import address_key
from campaign.rendering.links import LinkSigner
from campaign.store import Store
from campaign.store.audit import lead_target
from campaign.store.privacy import ErasedLead
from campaign.store.suppressions import Suppression, hashed_key

ERASURE_PURPOSE = "erased-address"  # the derived key's purpose (`LinkSigner.derived_key`)
ERASED_REFUSAL = "erased at the person's request; only a new signup with consent can bring it back"
_NOT_ONE_LINE = re.compile(r"[\x00-\x1f\x7f]")
WEB_ACTOR = "web"  # the actor of what a web signup does on its own (a consent renewed)


def operator() -> str:
    """Who the audit log says acted: `CAMPAIGN_ACTOR` if set (a shared account's real user),
    else the operating system's user name."""
    named = _NOT_ONE_LINE.sub(" ", os.environ.get("CAMPAIGN_ACTOR", "")).strip()
    if named:
        return named[:200]
    try:
        return getpass.getuser()
    except (KeyError, OSError):  # no user name in the environment nor the password database
        return f"uid {os.getuid()}" if hasattr(os, "getuid") else "unknown"


def erasure_key(signer: LinkSigner) -> bytes:
    return signer.derived_key(ERASURE_PURPOSE)


def erasure_key_from_environment() -> bytes | None:
    """The key erased addresses are hashed with, or None when `CAMPAIGN_SECRET_KEY` is unset."""
    if not os.environ.get("CAMPAIGN_SECRET_KEY", "").strip():
        return None
    return erasure_key(LinkSigner("", settings.secret_key(required=True)))


def key_needed() -> SettingsError:
    return SettingsError(
        "CAMPAIGN_SECRET_KEY is not set: erased addresses are on the suppression list only as "
        "a hash under that key, so leads cannot be added until it is set (to the same key as "
        "when they were erased)"
    )


@dataclass(frozen=True)
class ErasedAddresses:
    """Which addresses among some leads were erased: one query per batch, and none at all
    while no erased address stands on the list."""

    store: Store
    key: bytes | None
    any_erased: bool

    @classmethod
    def of(cls, store: Store, key: bytes | None) -> ErasedAddresses:
        return cls(store, key, store.suppressions.has_hashed())

    def hashed(self, email: str) -> str:
        if self.key is None:
            raise key_needed()
        return hashed_key(self.key, email)

    def among(self, emails: Iterable[str]) -> dict[str, Suppression]:
        """The erased ones, by address key."""
        if not self.any_erased:
            return {}
        by_hash = {self.hashed(e): address_key(e) for e in emails}
        found = self.store.suppressions.standing_hashed(by_hash)
        return {by_hash[h]: entry for h, entry in found.items()}


def export(store: Store, email: str, actor: str, now: datetime) -> dict[str, Any] | None:
    """Everything held about the lead with this address (None: no such lead); the export is
    itself recorded in the audit log, after it was read, so it is not in its own output."""
    found = store.privacy.export(email)
    if found is not None:
        target = lead_target(found["lead"]["id"])
        store.audit.log(actor, "export", target, "exported everything held about the lead", now)
    return found


def erase(store: Store, email: str, key: bytes, actor: str, now: datetime) -> ErasedLead | None:
    """Erase the lead with this address everywhere, in one transaction (None: no such lead)."""
    return store.privacy.erase(email, hashed_key(key, email), now, actor)


def renew_consent(
    store: Store, erased: ErasedAddresses, email: str, source: str, now: datetime
) -> bool:
    """A new signup with consent lifts an erased address's entry, recording why."""
    why = f"signed up again with consent ({source})"
    return store.suppressions.lift_hashed(erased.hashed(email), why, now)
