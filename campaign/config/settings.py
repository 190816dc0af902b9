"""Settings that come from the environment: servers, addresses and secrets never live in files."""

from __future__ import annotations

import os
import secrets
from dataclasses import dataclass
from typing import Literal

DEFAULT_DB = "sqlite:///campaign.db"
DEFAULT_BASE_URL = "http://127.0.0.1:8080"
MAX_CONNECTIONS = 10  # threads beyond a few only contend for the GIL; fits the DB pool

Security = Literal["none", "starttls", "ssl"]


class SettingsError(ValueError):
    """A missing or malformed environment variable, named so the operator can fix it."""


@dataclass(frozen=True)
class SmtpSettings:
    host: str = "127.0.0.1"
    port: int = 1025
    user: str | None = None
    password: str | None = None
    security: Security = "none"
    timeout: float = 30.0
    local_hostname: str = "localhost"
    connections: int = 1  # SMTP connections one worker keeps busy at once (campaign.pool)

    @classmethod
    def from_env(cls, env: dict[str, str] | None = None) -> SmtpSettings:
        env = dict(os.environ if env is None else env)
        security = env.get("CAMPAIGN_SMTP_SECURITY", "none").lower()
        if security not in ("none", "starttls", "ssl"):
            raise SettingsError(f"CAMPAIGN_SMTP_SECURITY={security!r}: use none, starttls or ssl")
        default_port = {"none": 1025, "starttls": 587, "ssl": 465}[security]
        try:
            port = int(env.get("CAMPAIGN_SMTP_PORT", default_port))
            timeout = float(env.get("CAMPAIGN_SMTP_TIMEOUT", 30))
            connections = int(env.get("CAMPAIGN_SMTP_CONNECTIONS", 1))
        except ValueError as exc:
            raise SettingsError(
                f"CAMPAIGN_SMTP_PORT / CAMPAIGN_SMTP_TIMEOUT / CAMPAIGN_SMTP_CONNECTIONS: {exc}"
            ) from exc
        if not 1 <= connections <= MAX_CONNECTIONS:
            raise SettingsError(
                f"CAMPAIGN_SMTP_CONNECTIONS={connections}: use 1 to {MAX_CONNECTIONS}"
            )
        return cls(
            host=env.get("CAMPAIGN_SMTP_HOST", "127.0.0.1"),
            port=port,
            user=env.get("CAMPAIGN_SMTP_USER") or None,
            password=env.get("CAMPAIGN_SMTP_PASSWORD") or None,
            security=security,  # type: ignore[arg-type]
            timeout=timeout,
            local_hostname=env.get("CAMPAIGN_SMTP_HELO", "localhost"),
            connections=connections,
        )


def database_url(explicit: str | None = None) -> str:
    return explicit or os.environ.get("CAMPAIGN_DB") or DEFAULT_DB


def base_url() -> str:
    return os.environ.get("CAMPAIGN_BASE_URL", DEFAULT_BASE_URL).rstrip("/")


def api_token() -> str | None:
    """The bearer token web signups and the booking system present; None turns those off."""
    token = os.environ.get("CAMPAIGN_API_TOKEN")
    if token and len(token) < 16:
        raise SettingsError("CAMPAIGN_API_TOKEN is too short: use at least 16 characters")
    return token or None


def secret_key(*, required: bool) -> str:
    """The link-signing key. Sending needs a stable one; previews may use a throwaway."""
    key = os.environ.get("CAMPAIGN_SECRET_KEY")
    if key:
        if len(key) < 16:
            raise SettingsError("CAMPAIGN_SECRET_KEY is too short: use at least 16 characters")
        return key
    if required:
        raise SettingsError(
            "CAMPAIGN_SECRET_KEY is not set: unsubscribe and click links must be signed with a "
            "stable secret (make one: python -c 'import secrets; print(secrets.token_urlsafe(32))')"
        )
    return secrets.token_urlsafe(32)
