"""Settings that come from the environment: servers, addresses and secrets never live in files.

Every `CAMPAIGN_` variable is read and checked here and nowhere else, and `check_environment`
checks them all before any command starts: a stray space or carriage return pasted into a
variable, or a link scheme no mail program should follow, stops the start-up with the
variable's name instead of breaking every message of a run. Errors never repeat a secret.
"""

from __future__ import annotations

import base64
import ipaddress
import math
import os
import re
import secrets
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from typing import Literal
from urllib.parse import urlsplit

from sqlalchemy.engine import make_url
from sqlalchemy.exc import ArgumentError

DEFAULT_DB = "sqlite:///campaign.db"
DEFAULT_BASE_URL = "http://127.0.0.1:8080"
MAX_CONNECTIONS = 10  # threads beyond a few only contend for the GIL; fits the DB pool

Security = Literal["none", "starttls", "ssl"]
Env = Mapping[str, str]

ALLOW_CLEARTEXT_AUTH = "CAMPAIGN_SMTP_ALLOW_CLEARTEXT_AUTH"
_CONTROL = re.compile(r"[\x00-\x1f\x7f]")
_HOSTNAME = re.compile(r"^(?=.{1,253}$)[A-Za-z0-9_](?:[A-Za-z0-9_.-]*[A-Za-z0-9_])?$")
_URL_PATH = re.compile(r"^[A-Za-z0-9\-._~%/]*$")  # a plain path; no quote or bracket
_TRUE, _FALSE = ("1", "true", "yes", "on"), ("", "0", "false", "no", "off")


class SettingsError(ValueError):
    """A missing or malformed environment variable, named so the operator can fix it.

    `problems` holds one line per variable when several are wrong at once."""

    def __init__(self, *problems: str):
        super().__init__("; ".join(problems))
        self.problems = list(problems)


def _environ(env: Env | None) -> Env:
    return os.environ if env is None else env


def _clean(name: str, value: str, *, secret: bool = False, spaces: bool = False) -> str:
    """`value` unless it holds a control character (a pasted CR, a newline from a file) or,
    unless `spaces`, any whitespace; a secret is never repeated in the message."""
    shown = "" if secret else f"={value!r}"
    if _CONTROL.search(value):
        raise SettingsError(f"{name}{shown} contains a control character (a line break, a tab?)")
    if value != value.strip() or (not spaces and any(c.isspace() for c in value)):
        raise SettingsError(f"{name}{shown} contains a space; remove it")
    return value


def _host(name: str, value: str) -> str:
    """A host name or an IP address, as a relay or a HELO name is written."""
    _clean(name, value)
    try:
        ipaddress.ip_address(value.strip("[]"))
        return value
    except ValueError:
        pass
    if not _HOSTNAME.match(value) or ".." in value:
        raise SettingsError(
            f"{name}={value!r} is not a host name or IP address "
            "(write an international domain in its xn-- form)"
        )
    return value


def _integer(env: Env, name: str, default: int, low: int, high: int) -> int:
    text = _clean(name, env.get(name, str(default)))
    if not text.isdigit() or not low <= int(text) <= high:
        raise SettingsError(f"{name}={text!r}: use a whole number from {low} to {high}")
    return int(text)


def _seconds(env: Env, name: str, default: float, high: float) -> float:
    text = _clean(name, env.get(name, str(default)))
    try:
        value = float(text)
    except ValueError:
        value = math.nan
    if not (math.isfinite(value) and 0 < value <= high):
        raise SettingsError(f"{name}={text!r}: use a number of seconds above 0, at most {high:g}")
    return value


def _flag(env: Env, name: str) -> bool:
    text = env.get(name, "").strip().lower()
    if text not in _TRUE + _FALSE:
        raise SettingsError(f"{name}={text!r}: use 1 (yes) or 0 (no)")
    return text in _TRUE


def is_loopback(host: str) -> bool:
    """Whether `host` is written as this machine (localhost, 127.x.x.x, ::1). Names are not
    resolved: what a name points at can change between this check and the connection."""
    name = host.lower().rstrip(".")
    if name == "localhost" or name.endswith(".localhost"):
        return True
    try:
        address = ipaddress.ip_address(name.strip("[]"))
    except ValueError:
        return False
    mapped = getattr(address, "ipv4_mapped", None)
    return address.is_loopback or (mapped is not None and mapped.is_loopback)


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
    def from_env(cls, env: Env | None = None) -> SmtpSettings:
        env = _environ(env)
        security = _clean("CAMPAIGN_SMTP_SECURITY", env.get("CAMPAIGN_SMTP_SECURITY", "none"))
        security = security.lower()
        if security not in ("none", "starttls", "ssl"):
            raise SettingsError(f"CAMPAIGN_SMTP_SECURITY={security!r}: use none, starttls or ssl")
        default_port = {"none": 1025, "starttls": 587, "ssl": 465}[security]
        user = _clean("CAMPAIGN_SMTP_USER", env.get("CAMPAIGN_SMTP_USER", ""))
        password = _clean(
            "CAMPAIGN_SMTP_PASSWORD",
            env.get("CAMPAIGN_SMTP_PASSWORD", ""),
            secret=True,
            spaces=True,
        )
        if password and not user:
            raise SettingsError(
                "CAMPAIGN_SMTP_PASSWORD is set but CAMPAIGN_SMTP_USER is not: "
                "the engine logs in only with both"
            )
        settings = cls(
            host=_host("CAMPAIGN_SMTP_HOST", env.get("CAMPAIGN_SMTP_HOST", "127.0.0.1")),
            port=_integer(env, "CAMPAIGN_SMTP_PORT", default_port, 1, 65535),
            user=user or None,
            password=password or None,
            security=security,  # type: ignore[arg-type]
            timeout=_seconds(env, "CAMPAIGN_SMTP_TIMEOUT", 30, 3600),
            local_hostname=_host("CAMPAIGN_SMTP_HELO", env.get("CAMPAIGN_SMTP_HELO", "localhost")),
            connections=_integer(env, "CAMPAIGN_SMTP_CONNECTIONS", 1, 1, MAX_CONNECTIONS),
        )
        settings.check_cleartext_auth(_flag(env, ALLOW_CLEARTEXT_AUTH))
        return settings

    def check_cleartext_auth(self, allowed: bool) -> None:
        """Refuse to log in without TLS to anything but this machine: the password would
        cross the network readable by anyone on the path, unless the operator says the
        network is private."""
        if self.security != "none" or not (self.user and self.password):
            return
        if allowed or is_loopback(self.host):
            return
        raise SettingsError(
            f"CAMPAIGN_SMTP_SECURITY=none would send CAMPAIGN_SMTP_PASSWORD in cleartext to "
            f"{self.host}, which is not this machine: use CAMPAIGN_SMTP_SECURITY=starttls or "
            f"ssl, or set {ALLOW_CLEARTEXT_AUTH}=1 if the network to the relay is private"
        )


@dataclass(frozen=True)
class WebLimits:
    """How long the web service waits on a client, and for how many at once (uvicorn's own
    defaults wait forever on a client that stops half-way through a request)."""

    timeout: float = 10.0  # to send a request's headers, or between two parts of its body
    keep_alive: float = 5.0  # an idle connection between requests
    max_connections: int = 200  # beyond this, requests are answered 503 at once
    max_header_bytes: int = 16 * 1024  # an incomplete request line and headers, at most

    @classmethod
    def from_env(cls, env: Env | None = None) -> WebLimits:
        env = _environ(env)
        timeout = _seconds(env, "CAMPAIGN_WEB_TIMEOUT", cls.timeout, 3600)
        return cls(
            timeout=timeout,
            keep_alive=min(cls.keep_alive, timeout),
            max_connections=_integer(
                env, "CAMPAIGN_WEB_MAX_CONNECTIONS", cls.max_connections, 1, 100_000
            ),
        )


def database_url(explicit: str | None = None, env: Env | None = None) -> str:
    """`--db`, else `CAMPAIGN_DB`, else `campaign.db` here; it must parse as a database URL.
    A password in the URL is never repeated in a message."""
    url = explicit or _environ(env).get("CAMPAIGN_DB") or DEFAULT_DB
    name = "--db / CAMPAIGN_DB" if explicit else "CAMPAIGN_DB"  # click reads both into one
    _clean(name, url, secret=True)
    try:
        parsed = make_url(url)
    except ArgumentError:
        parsed = None
    if parsed is None or not parsed.drivername.startswith(("sqlite", "postgresql")):
        raise SettingsError(
            f"{name} is not a database URL: write it like {DEFAULT_DB} or "
            "postgresql+psycopg://user@host:5432/campaign"
        )
    return url


def base_url(env: Env | None = None) -> str:
    """Where every link in the emails points: an http(s) address with a host and nothing a
    link could not be built on (no spaces, no user name, no query or fragment)."""
    name = "CAMPAIGN_BASE_URL"
    value = _clean(name, _environ(env).get(name, DEFAULT_BASE_URL))
    parts = urlsplit(value)
    if parts.scheme not in ("http", "https"):
        raise SettingsError(
            f"{name}={value!r}: links must start with https:// (or http:// for a local test)"
        )
    try:
        parts.port  # noqa: B018 - raises on a port that is not a number
    except ValueError:
        raise SettingsError(f"{name}={value!r}: the port is not a number from 0 to 65535") from None
    if not parts.hostname:
        raise SettingsError(f"{name}={value!r} has no host name")
    if parts.username is not None or parts.password is not None:
        raise SettingsError(f"{name}: remove the user name and password from the address")
    _host(name, parts.hostname if ":" not in parts.hostname else f"[{parts.hostname}]")
    if parts.query or parts.fragment or value.endswith(("?", "#")):
        raise SettingsError(
            f"{name}={value!r}: remove the ? or # part, links are built by adding a path"
        )
    if not _URL_PATH.match(parts.path):
        raise SettingsError(
            f"{name}={value!r}: the path may hold only letters, digits and - . _ ~ % / "
            "(a < or > would end the link in List-Unsubscribe)"
        )
    return value.rstrip("/")


def api_token(env: Env | None = None) -> str | None:
    """The bearer token web signups and the booking system present; None turns those off."""
    token = _clean("CAMPAIGN_API_TOKEN", _environ(env).get("CAMPAIGN_API_TOKEN", ""), secret=True)
    if token and len(token) < 16:
        raise SettingsError("CAMPAIGN_API_TOKEN is too short: use at least 16 characters")
    return token or None


METRICS_ADDRESS_VAR = "CAMPAIGN_METRICS_ADDRESS"


def metrics_address(env: Env | None = None) -> tuple[str, int] | None:
    """Where `web` also serves /metrics without a token (HOST:PORT, `[::1]:9100` for IPv6),
    for a Prometheus on a private network; None when unset. Only this address's network
    protects it, so the README advises a loopback or private address."""
    name = METRICS_ADDRESS_VAR
    value = _clean(name, _environ(env).get(name, ""))
    if not value:
        return None
    host, colon, port = value.rpartition(":")
    host = host.removeprefix("[").removesuffix("]")
    if not colon or not host or (":" in host and not value.startswith("[")):
        raise SettingsError(
            f"{name}={value!r}: write it as HOST:PORT, like 127.0.0.1:9100 (or [::1]:9100)"
        )
    if not port.isdigit() or not 1 <= int(port) <= 65535:
        raise SettingsError(f"{name}={value!r}: the port must be a whole number from 1 to 65535")
    return _host(name, host), int(port)


def secret_key(*, required: bool, env: Env | None = None) -> str:
    """The link-signing key. Sending needs a stable one; previews may use a throwaway."""
    key = _clean("CAMPAIGN_SECRET_KEY", _environ(env).get("CAMPAIGN_SECRET_KEY", ""), secret=True)
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


def check_environment(db: str | None = None, env: Env | None = None) -> None:
    """Every setting at once, before a command does anything: raises one SettingsError with
    a line per variable that is wrong. Whether a setting is required (the signing key to
    send) is still the command's to say."""
    checks: list[Callable[[], object]] = [
        lambda: database_url(db, env),
        lambda: base_url(env),
        lambda: SmtpSettings.from_env(env),
        lambda: secret_key(required=False, env=env),
        lambda: api_token(env),
        lambda: metrics_address(env),
        lambda: WebLimits.from_env(env),
        lambda: dkim_settings(None if env is None else dict(env)),
        lambda: webhook_settings(env),
        lambda: ImapSettings.from_env(env),
    ]
    problems: list[str] = []
    for check in checks:
        try:
            check()
        except SettingsError as exc:
            problems.extend(exc.problems)
    if problems:
        raise SettingsError(*problems)


DKIM_SELECTOR_VAR = "CAMPAIGN_DKIM_SELECTOR"
DKIM_KEY_FILE_VAR = "CAMPAIGN_DKIM_PRIVATE_KEY_FILE"


@dataclass(frozen=True)
class DkimSettings:
    """DKIM signing as the environment asks for it: the selector and the key file's bytes
    (`campaign.rendering.dkim` checks that the key can sign)."""

    selector: str
    key_file: str
    private_key: bytes


def dkim_settings(env: dict[str, str] | None = None) -> DkimSettings | None:
    """None when DKIM signing is off (neither variable set). Half a setting, or a key file
    that cannot be read, stops the start-up: mail signed with no key, or a selector whose
    key is missing, would fail DMARC at every receiver while looking configured."""
    env = dict(os.environ if env is None else env)
    selector = env.get(DKIM_SELECTOR_VAR, "").strip()
    key_file = env.get(DKIM_KEY_FILE_VAR, "").strip()
    if not selector and not key_file:
        return None
    if not key_file:
        raise SettingsError(
            f"{DKIM_SELECTOR_VAR} is set but {DKIM_KEY_FILE_VAR} is not: name the private key "
            "file that goes with the selector (make one: python run.py dkim keygen)"
        )
    if not selector:
        raise SettingsError(
            f"{DKIM_KEY_FILE_VAR} is set but {DKIM_SELECTOR_VAR} is not: name the selector "
            "whose DNS record publishes this key"
        )
    try:
        with open(key_file, "rb") as key:
            private_key = key.read()
    except OSError as exc:
        raise SettingsError(
            f"{DKIM_KEY_FILE_VAR}={key_file}: cannot read it ({exc.strerror})"
        ) from exc
    return DkimSettings(selector, key_file, private_key)


@dataclass(frozen=True)
class WebhookSettings:
    """The provider webhooks' secrets (`campaign.webhooks`). Without `secret` every webhook
    answers 503; the providers' own signatures are checked when their key is set (SNS's
    always, unless `sns_signatures` is turned off)."""

    secret: str | None = None  # the password of the HTTP Basic credentials in each URL
    mailgun_signing_key: str | None = None  # HMAC key: Mailgun's "HTTP webhook signing key"
    sendgrid_key: bytes | None = None  # DER public key: SendGrid's signed event webhook
    sns_signatures: bool = True  # verify SNS messages against Amazon's signing certificate


def webhook_settings(env: Env | None = None) -> WebhookSettings:
    """CAMPAIGN_WEBHOOK_SECRET, CAMPAIGN_MAILGUN_WEBHOOK_SIGNING_KEY,
    CAMPAIGN_SENDGRID_VERIFICATION_KEY (base64, as SendGrid shows it) and
    CAMPAIGN_SNS_VERIFY_SIGNATURES (on unless 0), each checked so that a pasted key that
    cannot verify anything stops the start-up instead of refusing every event."""
    env = _environ(env)
    secret = _clean("CAMPAIGN_WEBHOOK_SECRET", env.get("CAMPAIGN_WEBHOOK_SECRET", ""), secret=True)
    if secret and len(secret) < 16:
        raise SettingsError("CAMPAIGN_WEBHOOK_SECRET is too short: use at least 16 characters")
    if ":" in secret:
        raise SettingsError("CAMPAIGN_WEBHOOK_SECRET contains a colon, which a URL cannot carry")
    mailgun = "CAMPAIGN_MAILGUN_WEBHOOK_SIGNING_KEY"
    signing_key = _clean(mailgun, env.get(mailgun, ""), secret=True)
    verify = "CAMPAIGN_SNS_VERIFY_SIGNATURES"
    return WebhookSettings(
        secret=secret or None,
        mailgun_signing_key=signing_key or None,
        sendgrid_key=_sendgrid_key(env),
        sns_signatures=_flag(env, verify) if env.get(verify, "").strip() else True,
    )


def _sendgrid_key(env: Env) -> bytes | None:
    """The public key SendGrid signs events with: base64 of an ECDSA P-256 key."""
    from cryptography.hazmat.primitives.asymmetric import ec
    from cryptography.hazmat.primitives.serialization import load_der_public_key

    name = "CAMPAIGN_SENDGRID_VERIFICATION_KEY"
    text = _clean(name, env.get(name, ""))
    if not text:
        return None
    try:
        der = base64.b64decode(text, validate=True)
        key = load_der_public_key(der)
    except ValueError:
        key = None
    if not isinstance(key, ec.EllipticCurvePublicKey) or key.curve.name != "secp256r1":
        raise SettingsError(
            f"{name} is not SendGrid's verification key: paste the base64 public key shown "
            "under Mail Settings, Signed Event Webhook"
        )
    return der


_FOLDER = re.compile(r"^[\x20-\x7e]{1,200}$")  # printable ASCII: no IMAP modified UTF-7 needed


@dataclass(frozen=True)
class ImapSettings:
    """The bounce mailbox `inbound poll` reads (CAMPAIGN_IMAP_*); None when unset."""

    host: str
    user: str
    password: str = field(repr=False)
    port: int = 993
    security: Security = "ssl"
    folder: str = "INBOX"
    done_folder: str = "Processed"
    timeout: float = 30.0

    @classmethod
    def from_env(cls, env: Env | None = None) -> ImapSettings | None:
        env = _environ(env)
        host = env.get("CAMPAIGN_IMAP_HOST", "").strip()
        if not host:
            return None
        security = _clean("CAMPAIGN_IMAP_SECURITY", env.get("CAMPAIGN_IMAP_SECURITY", "ssl"))
        if security not in ("none", "starttls", "ssl"):
            raise SettingsError(f"CAMPAIGN_IMAP_SECURITY={security!r}: use ssl, starttls or none")
        user = _clean("CAMPAIGN_IMAP_USER", env.get("CAMPAIGN_IMAP_USER", ""))
        password = _clean(
            "CAMPAIGN_IMAP_PASSWORD", env.get("CAMPAIGN_IMAP_PASSWORD", ""), secret=True
        )
        if not (user and password):
            raise SettingsError(
                "CAMPAIGN_IMAP_HOST is set: CAMPAIGN_IMAP_USER and CAMPAIGN_IMAP_PASSWORD "
                "are needed too"
            )
        folders = {}
        for name, default in (
            ("CAMPAIGN_IMAP_FOLDER", "INBOX"),
            ("CAMPAIGN_IMAP_DONE_FOLDER", "Processed"),
        ):
            folders[name] = env.get(name, default)
            if not _FOLDER.match(folders[name]):
                raise SettingsError(f"{name}={folders[name]!r}: use a folder name in plain ASCII")
        settings = cls(
            host=_host("CAMPAIGN_IMAP_HOST", host),
            user=user,
            password=password,
            port=_integer(env, "CAMPAIGN_IMAP_PORT", 993 if security == "ssl" else 143, 1, 65535),
            security=security,  # type: ignore[arg-type]
            folder=folders["CAMPAIGN_IMAP_FOLDER"],
            done_folder=folders["CAMPAIGN_IMAP_DONE_FOLDER"],
            timeout=_seconds(env, "CAMPAIGN_IMAP_TIMEOUT", 30, 3600),
        )
        if settings.folder == settings.done_folder:
            raise SettingsError(
                "CAMPAIGN_IMAP_DONE_FOLDER is the folder being read: name another one"
            )
        if security == "none" and not (
            _flag(env, "CAMPAIGN_IMAP_ALLOW_CLEARTEXT_AUTH") or is_loopback(host)
        ):
            raise SettingsError(
                f"CAMPAIGN_IMAP_SECURITY=none would send CAMPAIGN_IMAP_PASSWORD in cleartext to "
                f"{host}, which is not this machine: use ssl or starttls, or set "
                "CAMPAIGN_IMAP_ALLOW_CLEARTEXT_AUTH=1 if the network to it is private"
            )
        return settings
