"""What kind of message came back, read from the message alone (which delivery it is about
is `match`'s question).

In order, most authoritative first:
1. a complaint: an RFC 5965 feedback report (`multipart/report; report-type=feedback-report`);
2. a standard DSN (RFC 3464 `message/delivery-status`): each recipient's Action and Status;
3. any other bounce: when the message looks like an MTA's (null sender, MAILER-DAEMON,
   `X-Failed-Recipients`, the usual subjects), GNU Mailman's flufl.bounce detectors, which
   know dozens of formats that no hand-written regex would keep up with;
4. an auto-reply (RFC 3834 `Auto-Submitted`, `X-Autoreply`, `Precedence: auto_reply`, the
   usual vacation subjects): recorded and ignored;
5. anything else is a person's message.

A bounce is hard (5.x.x) or soft (4.x.x, and a full mailbox whatever its class: it empties);
a delay notice or a success report is neither and changes nothing.
"""

from __future__ import annotations

import enum
import re
from dataclasses import dataclass, field
from email.message import Message
from email.parser import HeaderParser
from email.utils import getaddresses, parseaddr

from flufl.bounce import all_failures

MAX_FIELD = 300  # longest reason or header value kept


class Kind(enum.StrEnum):
    """What an inbound message is."""

    HARD_BOUNCE = "hard-bounce"  # 5.x.x: the address does not work
    SOFT_BOUNCE = "soft-bounce"  # 4.x.x, mailbox full, or a bounce whose code is unreadable
    COMPLAINT = "complaint"  # the lead reported an email as spam (ARF)
    AUTO_REPLY = "auto-reply"  # out of office, vacation: ignored
    REPLY = "reply"  # a person wrote back
    # A person's or a mail program's message to an email's own return-path address, the
    # `mailto:` of its List-Unsubscribe (RFC 2369, 8058): the processor decides it, since
    # only the envelope and the match tell it from a reply.
    UNSUBSCRIBE = "unsubscribe"
    NOTICE = "notice"  # a delay warning, a success DSN, a not-spam report: nothing to do
    UNREADABLE = "unreadable"  # the message could not be interpreted at all


@dataclass(frozen=True)
class Classified:
    kind: Kind
    reason: str
    status: str | None = None  # the enhanced status code (RFC 3463), when there is one
    recipients: tuple[str, ...] = ()  # the failed recipients the report names, lower case
    # The returned message or its headers (a DSN's or ARF's third part), where the original
    # Message-ID and envelope sender are.
    original: Message | None = field(default=None, compare=False)


_STATUS = re.compile(r"\b([245])\.(\d{1,3})\.(\d{1,3})\b")
_SMTP_CODE = re.compile(r"\b([245])\d\d\b")
_MAILBOX_FULL = re.compile(
    r"mailbox (is )?full|over (the )?quota|quota exceeded|exceeded (the )?storage|"
    r"insufficient (system )?storage|mailbox size limit",
    re.IGNORECASE,
)
_MTA_SENDERS = re.compile(r"^(mailer-daemon|postmaster|mail-daemon|mailer|mdaemon)$", re.I)
_BOUNCE_SUBJECT = re.compile(
    r"undeliver|delivery status notification|failure notice|returned mail|delivery fail|"
    r"mail delivery failed|non[- ]?delivery|could not be delivered|delivery has failed",
    re.IGNORECASE,
)
_DELAY_SUBJECT = re.compile(r"delayed|warning:|delivery delay|still being retried", re.I)
_AUTO_SUBJECT = re.compile(
    r"^\s*(auto(matic)?[ -]?(reply|response|antwort)|auto:|out of (the )?office|"
    r"abwesenheit|r[ée]ponse automatique|vacation|away from (my|the) (office|desk))",
    re.IGNORECASE,
)


def header(msg: Message, name: str) -> str:
    """A header's text on one line, clipped; empty when absent or unreadable."""
    try:
        value = msg.get(name)
        text = "" if value is None else str(value)
    except Exception:  # a malformed header must not stop the rest of the message
        return ""
    return " ".join(text.split())[:MAX_FIELD]


def _report_type(msg: Message) -> str:
    if msg.get_content_type() != "multipart/report":
        return ""
    return str(msg.get_param("report-type", "") or "").lower()


def _parts(msg: Message, content_type: str) -> list[Message]:
    return [part for part in msg.walk() if part.get_content_type() == content_type]


def _blocks(part: Message) -> list[Message]:
    """The header blocks of a `message/delivery-status` or `message/feedback-report` part,
    whether the parser split them (a list) or left them as text (some MTAs encode them)."""
    payload = part.get_payload()
    if isinstance(payload, list):
        blocks = [p for p in payload if isinstance(p, Message)]
        if blocks:
            return blocks
    raw = part.get_payload(decode=True)
    text = raw.decode("utf-8", "replace") if isinstance(raw, bytes) else str(payload or "")
    text = text.replace("\r\n", "\n")
    return [HeaderParser().parsestr(block) for block in re.split(r"\n\s*\n", text) if block]


def _original(msg: Message) -> Message | None:
    """The returned message (`message/rfc822`) or its headers (`text/rfc822-headers`)."""
    for part in msg.walk():
        kind = part.get_content_type()
        if kind in ("message/rfc822", "message/rfc822-headers"):
            payload = part.get_payload()
            if isinstance(payload, list) and payload and isinstance(payload[0], Message):
                return payload[0]
        if kind == "text/rfc822-headers":
            raw = part.get_payload(decode=True)
            if isinstance(raw, bytes):
                return HeaderParser().parsestr(raw.decode("utf-8", "replace"))
    return None


def _address(value: str) -> str:
    """The address in a DSN field such as `rfc822; ana@example.com`."""
    return value.split(";", 1)[-1].strip().strip("<>").lower()


def _status_of(status: str, diagnostic: str) -> str | None:
    for text in (status, diagnostic):
        found = _STATUS.search(text)
        if found:
            return found.group(0)
    code = _SMTP_CODE.search(diagnostic)
    return f"{code.group(1)}.0.0" if code else None


def _bounce_kind(status: str | None, text: str, permanent: bool) -> Kind:
    """Hard for 5.x.x, soft for 4.x.x; a full mailbox is soft whatever its class."""
    if (status is not None and status[2:] == "2.2") or _MAILBOX_FULL.search(text):
        return Kind.SOFT_BOUNCE
    if status is not None:
        return Kind.HARD_BOUNCE if status.startswith("5") else Kind.SOFT_BOUNCE
    return Kind.HARD_BOUNCE if permanent else Kind.SOFT_BOUNCE


def _dsn(msg: Message) -> Classified | None:
    """RFC 3464: the worst recipient's outcome decides (failed over delayed over delivered).
    None when no recipient has an outcome at all: some servers send the report's frame with
    only their own fields and list the failed recipients in the text; the bounce detectors
    read those."""
    reports = _parts(msg, "message/delivery-status")
    if not reports:
        return None
    failed: list[tuple[str, str | None, str]] = []
    delayed: list[str] = []
    succeeded = False
    for block in _blocks(reports[0])[1:] or _blocks(reports[0]):
        action = header(block, "Action").lower()
        recipient = _address(
            header(block, "Final-Recipient") or header(block, "Original-Recipient")
        )
        diagnostic = header(block, "Diagnostic-Code")
        status = _status_of(header(block, "Status"), diagnostic)
        if action == "failed":
            failed.append((recipient, status, diagnostic))
        elif action == "delayed":
            delayed.append(recipient)
        elif action in ("delivered", "relayed", "expanded"):
            succeeded = True
    original = _original(msg)
    if failed:
        recipient, status, diagnostic = failed[0]
        kind = _bounce_kind(status, diagnostic, permanent=True)
        recipients = tuple(r for r, _, _ in failed if r)
        reason = f"DSN {status or 'failed'}: {diagnostic or 'no diagnostic'}"
        return Classified(kind, reason[:MAX_FIELD], status, recipients, original)
    if delayed:
        return Classified(
            Kind.NOTICE, "DSN: delivery delayed, still being tried", None, (), original
        )
    if succeeded:
        return Classified(Kind.NOTICE, "DSN: delivered or relayed", None, (), original)
    return None


def _complaint(msg: Message) -> Classified | None:
    reports = _parts(msg, "message/feedback-report")
    if not reports and _report_type(msg) != "feedback-report":
        return None
    fields = _blocks(reports[0])[0] if reports and _blocks(reports[0]) else Message()
    feedback = header(fields, "Feedback-Type").lower() or "abuse"
    recipients = tuple(
        _address(header(fields, name)) for name in ("Original-Rcpt-To",) if header(fields, name)
    )
    original = _original(msg)
    source = header(fields, "User-Agent") or header(fields, "Reporting-MTA") or "unknown reporter"
    if feedback == "not-spam":
        return Classified(Kind.NOTICE, f"ARF not-spam report ({source})", None, (), original)
    reason = f"ARF {feedback} report from {source}"
    return Classified(Kind.COMPLAINT, reason[:MAX_FIELD], None, recipients, original)


def looks_like_bounce(msg: Message) -> bool:
    """An MTA's report rather than a person's message, by the signs every MTA leaves."""
    if header(msg, "X-Failed-Recipients") or header(msg, "Return-Path") == "<>":
        return True
    name, addr = parseaddr(header(msg, "From"))
    if _MTA_SENDERS.match(addr.partition("@")[0]) or "mail delivery" in name.lower():
        return True
    return bool(_BOUNCE_SUBJECT.search(header(msg, "Subject")))


def text_parts(msg: Message, limit: int = 200_000) -> str:
    """The decoded text parts, for status codes in a bounce that is not a standard DSN."""
    pieces: list[str] = []
    for part in msg.walk():
        if part.get_content_maintype() != "text":
            continue
        raw = part.get_payload(decode=True)
        if isinstance(raw, bytes):
            pieces.append(raw.decode(part.get_content_charset() or "latin-1", "replace"))
        if sum(map(len, pieces)) > limit:
            break
    return "\n".join(pieces)[:limit]


def _other_bounce(msg: Message) -> Classified:
    """A bounce in an MTA's own format: flufl.bounce names the failed recipients and whether
    the failure is permanent; a status code or a full mailbox in the text refines it."""
    if _DELAY_SUBJECT.search(header(msg, "Subject")) and not header(msg, "X-Failed-Recipients"):
        return Classified(Kind.NOTICE, "delay warning, still being tried", original=_original(msg))
    temporary, permanent = all_failures(msg)
    recipients = tuple(
        sorted(
            r.decode("utf-8", "replace").lower() if isinstance(r, bytes) else str(r).lower()
            for r in (*permanent, *temporary)
        )
    )
    failed = header(msg, "X-Failed-Recipients")
    if failed and not recipients:
        recipients = tuple(a.lower() for _, a in getaddresses([failed]) if a)
    text = text_parts(msg)
    found = _STATUS.search(text)
    status = found.group(0) if found else None
    sender = header(msg, "From") or "an MTA"
    if not recipients and status is None:
        reason = f"a bounce of a format no detector reads, from {sender}"
        return Classified(Kind.SOFT_BOUNCE, reason[:MAX_FIELD], None, (), _original(msg))
    kind = _bounce_kind(status, text, permanent=bool(permanent) or bool(failed))
    line = next((ln.strip() for ln in text.splitlines() if status and status in ln), "")
    reason = f"bounce {status or ('permanent' if permanent else 'temporary')}: {line or sender}"
    return Classified(kind, reason[:MAX_FIELD], status, recipients, _original(msg))


def is_auto_reply(msg: Message) -> str | None:
    """Why the message is an automatic reply (RFC 3834 and the usual signs), or None."""
    auto = header(msg, "Auto-Submitted").lower()
    if auto and auto != "no":
        return f"Auto-Submitted: {auto}"
    for name in ("X-Autoreply", "X-Autorespond", "X-Autoresponder"):
        if header(msg, name):
            return f"{name} header"
    precedence = (header(msg, "Precedence") or header(msg, "X-Precedence")).lower()
    if precedence in ("auto_reply", "bulk", "junk", "list"):
        return f"Precedence: {precedence}"
    subject = header(msg, "Subject")
    if _AUTO_SUBJECT.search(subject):
        return f"subject {subject[:80]!r}"
    return None


def classify(msg: Message) -> Classified:
    """What `msg` is; never raises (an unreadable message is `UNREADABLE`, with why)."""
    try:
        complaint = _complaint(msg)
        if complaint is not None:
            return complaint
        if _report_type(msg) == "delivery-status" or _parts(msg, "message/delivery-status"):
            return _dsn(msg) or _other_bounce(msg)
        if looks_like_bounce(msg):
            return _other_bounce(msg)
        auto = is_auto_reply(msg)
        if auto is not None:
            return Classified(Kind.AUTO_REPLY, f"automatic reply ({auto})")
        return Classified(Kind.REPLY, "a message from a person")
    except Exception as exc:  # a detector choking on a broken message ends here, recorded
        return Classified(
            Kind.UNREADABLE, f"could not be read: {type(exc).__name__}: {exc}"[:MAX_FIELD]
        )
