"""A local SMTP catcher: the embedded default for trying the engine without a mail account.

Built on aiosmtpd's handler interface: `handle_DATA` stores each accepted message in a
Maildir (any mail client, or `python -m mailbox`, can read it) and prints one line.
"""

from __future__ import annotations

import mailbox
import socket
import threading
from collections.abc import Callable
from dataclasses import dataclass, field
from email import message_from_bytes
from email.message import EmailMessage
from email.policy import default as default_policy
from pathlib import Path

from aiosmtpd.controller import Controller
from aiosmtpd.smtp import SMTP, Envelope, Session


@dataclass
class Caught:
    """One accepted message as the server saw it: envelope and raw bytes."""

    sender: str
    recipients: list[str]
    data: bytes

    @property
    def message(self) -> EmailMessage:
        return message_from_bytes(self.data, policy=default_policy)


@dataclass
class CatchHandler:
    """Keeps what arrives in memory (for tests and the demo) and, if asked, in a Maildir."""

    maildir: Path | None = None
    on_message: Callable[[Caught], None] | None = None
    caught: list[Caught] = field(default_factory=list)
    _lock: threading.Lock = field(default_factory=threading.Lock)

    async def handle_DATA(self, server: SMTP, session: Session, envelope: Envelope) -> str:
        data = envelope.original_content or envelope.content
        assert isinstance(data, bytes)
        item = Caught(str(envelope.mail_from), [str(r) for r in envelope.rcpt_tos], data)
        with self._lock:
            if self.maildir is not None:
                mailbox.Maildir(self.maildir, create=True).add(data)
            self.caught.append(item)
        if self.on_message:
            self.on_message(item)
        return "250 Message accepted for delivery"

    def messages(self) -> list[Caught]:
        with self._lock:
            return list(self.caught)


def free_port(host: str = "127.0.0.1") -> int:
    with socket.socket() as probe:
        probe.bind((host, 0))
        return probe.getsockname()[1]


class Catcher:
    """An SMTP server on loopback running in a background thread, started and stopped cleanly."""

    def __init__(
        self, handler: CatchHandler | None = None, host: str = "127.0.0.1", port: int | None = None
    ):
        self.handler = handler or CatchHandler()
        self.host = host
        self.port = port or free_port(host)
        self._controller = Controller(
            self.handler, hostname=host, port=self.port, enable_SMTPUTF8=True, ready_timeout=10
        )

    def __enter__(self) -> Catcher:
        self.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self.stop()

    def start(self) -> None:
        self._controller.start()

    def stop(self) -> None:
        self._controller.stop()

    @property
    def messages(self) -> list[Caught]:
        return self.handler.messages()
