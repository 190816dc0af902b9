"""`inbound poll`: the bounce mailbox read over IMAP, for clinics whose mail provider (Google
Workspace, Microsoft 365, a hosted mailbox) gives them a mailbox but no pipe or MX of their own.

Each message in the folder is fetched without marking it read, handed to the one processor,
and only then moved to the done folder. So a crash between the two leaves the message where
it was and the next poll processes it again, which changes nothing (the processor records a
message once, by its Message-ID). A message that is no email at all is moved too, to the
same folder, and reported: leaving it would make every later poll trip over it. A failure of
our side (the database) stops the poll with the message still in place.
"""

from __future__ import annotations

import imaplib
import re
import ssl
from collections.abc import Callable, Iterator
from contextlib import contextmanager, suppress
from dataclasses import dataclass, field

from campaign.config.settings import ImapSettings
from campaign.inbound.process import InboundProcessor, NotAMessage, Received

MAX_PER_POLL = 1000  # a backlog is worked off over several polls, each one bounded


class PollError(Exception):
    """The mailbox could not be read: cannot connect, log in, or find the folder."""


@dataclass
class PollReport:
    received: list[Received] = field(default_factory=list)
    rejected: list[str] = field(default_factory=list)  # no email message: moved, not recorded
    left: int = 0  # messages still in the folder beyond this poll's limit


@contextmanager
def _mailbox(settings: ImapSettings) -> Iterator[imaplib.IMAP4]:
    """A logged-in connection with the folder selected; logged out afterwards."""
    try:
        if settings.security == "ssl":
            context = ssl.create_default_context()
            imap: imaplib.IMAP4 = imaplib.IMAP4_SSL(
                settings.host, settings.port, ssl_context=context, timeout=settings.timeout
            )
        else:
            imap = imaplib.IMAP4(settings.host, settings.port, timeout=settings.timeout)
            if settings.security == "starttls":
                imap.starttls(ssl.create_default_context())
        imap.login(settings.user, settings.password)
    except (OSError, imaplib.IMAP4.error) as exc:
        raise PollError(f"cannot log in to {settings.host}:{settings.port}: {exc}") from exc
    try:
        status, data = imap.select(_quoted(settings.folder))
        if status != "OK":
            raise PollError(f"no folder {settings.folder!r} on {settings.host}: {_text(data)}")
        yield imap
    finally:
        with suppress(OSError, imaplib.IMAP4.error):  # a failed goodbye changes nothing
            imap.logout()


def poll(
    settings: ImapSettings,
    processor: InboundProcessor,
    limit: int = MAX_PER_POLL,
    on_message: Callable[[Received], None] | None = None,
) -> PollReport:
    """Process up to `limit` messages of the folder, oldest first, moving each when done."""
    report = PollReport()
    with _mailbox(settings) as imap:
        uids = _uids(imap)
        report.left = max(0, len(uids) - limit)
        if uids:
            _ensure_folder(imap, settings.done_folder)
        for uid in uids[:limit]:
            raw = _fetch(imap, uid)
            try:
                received = processor.process(raw)
            except NotAMessage as exc:
                report.rejected.append(f"message {uid}: {exc}")
            else:
                report.received.append(received)
                if on_message:
                    on_message(received)
            _move(imap, uid, settings.done_folder)
        if uids and not _can_move(imap):
            imap.expunge()
    return report


def _uids(imap: imaplib.IMAP4) -> list[str]:
    status, data = imap.uid("SEARCH", "ALL")
    if status != "OK":
        raise PollError(f"cannot list the folder: {_text(data)}")
    return data[0].decode().split() if data and data[0] else []


def _fetch(imap: imaplib.IMAP4, uid: str) -> bytes:
    """The whole message, left unread (`BODY.PEEK`), so a person sees it as new."""
    status, data = imap.uid("FETCH", uid, "(BODY.PEEK[])")
    for part in data or []:
        if status == "OK" and isinstance(part, tuple):
            return bytes(part[1])
    raise PollError(f"cannot fetch message {uid}: {_text(data)}")


def _can_move(imap: imaplib.IMAP4) -> bool:
    return "MOVE" in imap.capabilities


def _move(imap: imaplib.IMAP4, uid: str, folder: str) -> None:
    """MOVE (RFC 6851) where the server has it, else copy and mark deleted; the folder is
    expunged once at the end of the poll."""
    if _can_move(imap):
        status, data = imap.uid("MOVE", uid, _quoted(folder))
    else:
        status, data = imap.uid("COPY", uid, _quoted(folder))
        if status == "OK":
            status, data = imap.uid("STORE", uid, "+FLAGS", "(\\Deleted)")
    if status != "OK":
        raise PollError(f"cannot move message {uid} to {folder!r}: {_text(data)}")


def _ensure_folder(imap: imaplib.IMAP4, folder: str) -> None:
    status, data = imap.list('""', _quoted(folder))
    if status == "OK" and data and data[0]:
        return
    status, data = imap.create(_quoted(folder))
    if status != "OK":
        raise PollError(f"cannot create the folder {folder!r}: {_text(data)}")


_ATOM = re.compile(r"^[A-Za-z0-9._/-]+$")


def _quoted(folder: str) -> str:
    """A folder name as an IMAP string: as is when it is a plain atom, else quoted."""
    if _ATOM.match(folder):
        return folder
    return '"' + folder.replace("\\", "\\\\").replace('"', '\\"') + '"'


def _text(data: object) -> str:
    if isinstance(data, list) and data and isinstance(data[0], bytes):
        return data[0].decode("utf-8", "replace")
    return str(data)
