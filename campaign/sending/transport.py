"""SMTP transport: one reused connection, timeouts on every call, and failures sorted by cause.

What happens to a delivery depends on *why* SMTP failed, so every failure is raised as one of
three kinds (the split django-anymail and Postfix make too):
- `TransientFailure`: the server or network may recover (refused, timeout, dropped, 4xx);
  its subclass `ServerUnavailable` means the relay failed before any recipient was named;
- `RecipientRefused`: this address is refused for good (5xx on RCPT or DATA) — a bounce;
- `AccountRefused`: the whole account is refused (5xx on AUTH, MAIL FROM or the greeting) —
  stop the batch.
- `Unsupported`: the relay cannot carry this message (a non-ASCII local part needs SMTPUTF8,
  which it does not offer) — this delivery fails at once; the others go on.
"""

from __future__ import annotations

import contextlib
import functools
import select
import smtplib
import socket
import ssl
from collections.abc import Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING

from campaign.config.settings import SmtpSettings
from campaign.rendering.mime import wire_address

if TYPE_CHECKING:
    from _typeshed import ReadableBuffer


class DeliveryFailure(Exception):
    def __init__(self, message: str, code: int | None = None):
        self.code = code
        super().__init__(message)


class TransientFailure(DeliveryFailure):
    """Try again later: nothing says the message or the recipient is at fault."""


class InDoubt(DeliveryFailure):
    """The whole message went out, then the server's answer never came (a timeout, a dropped
    connection): it may have been accepted. Sending it again could mail the lead twice."""


class ServerUnavailable(TransientFailure):
    """The relay failed before any recipient was named (unreachable, a timeout, a 4xx greeting,
    EHLO, AUTH or MAIL FROM, a dropped session): nothing is known about the message, so it
    costs no attempt; every message would fail alike, so the whole sender backs off."""


class _LostBeforeRecipient(ServerUnavailable):
    """The connection failed before RCPT: nothing about this message or its recipient."""


class RecipientRefused(DeliveryFailure):
    """The server refuses this recipient for good."""


class AccountRefused(DeliveryFailure):
    """The server refuses us, whoever the recipient: retrying other messages is pointless."""


class Unsupported(DeliveryFailure):
    """The relay cannot carry this message: it needs SMTPUTF8 (the recipient's local part is
    not ASCII) and the relay does not offer it. Retrying cannot help, and neither the address
    nor the account is at fault, so nothing is retried, bounced or stopped."""


@dataclass(frozen=True)
class Envelope:
    sender: str
    recipient: str
    data: bytes
    utf8: bool = False


@functools.cache
def tls_context() -> ssl.SSLContext:
    """Verifies the certificate and the host name. Loading the CA store costs ~20 ms, so it
    happens once per process, not once per connection (a plain connection needs none)."""
    return ssl.create_default_context()


class _Smtp(smtplib.SMTP):
    """smtplib's DATA, noting the moment the whole message (up to the final dot) has been
    handed to the server: a failure before it means "not delivered", after it "in doubt".
    Only a missing answer to a message the server could have read to its end is in doubt."""

    handed_over = False  # reset by the transport before each message
    recipient_named = False  # likewise: RCPT was sent, so a failure may concern the recipient

    def _get_socket(self, host: str, port: int, timeout: float) -> socket.socket:
        """The connection, with Nagle's algorithm off: the final dot goes in a write of its
        own (below), and held back until the server acknowledged the body, which it delays
        by up to 40 ms, it would cost that on every message."""
        sock = super()._get_socket(host, port, timeout)  # type: ignore[misc]
        sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        return sock

    def rcpt(self, recip: str, options: Sequence[str] = ()) -> tuple[int, bytes]:
        self.recipient_named = True
        return super().rcpt(recip, options)

    def data(self, msg: ReadableBuffer | str) -> tuple[int, bytes]:  # as smtplib.SMTP.data
        self.putcmd("data")
        code, reply = self.getreply()
        if code != 354:
            raise smtplib.SMTPDataError(code, reply)
        # `sendmail` hands over bytes already; `bytes()` of bytes is the same object.
        body = dot_stuffed(msg.encode("ascii") if isinstance(msg, str) else bytes(msg))
        if not body.endswith(b"\r\n"):
            body += b"\r\n"
        # The final dot goes in a send of its own, and only to a server still listening: a
        # server that hung up (or spoke) before it cannot have accepted the message, while
        # one that got the whole message and hung up might have.
        self.send(body)
        if self.sock is not None and _peer_closed_or_spoke(self.sock):
            raise smtplib.SMTPServerDisconnected("connection lost before the end of the message")
        self.send(b".\r\n")
        self.handed_over = True
        try:
            return self.getreply()
        except smtplib.SMTPServerDisconnected as exc:
            # A reset, unlike a plain close, means the server's side closed with some of our
            # bytes unread; the final dot was the last of them, so it never read the end of
            # the message and cannot have accepted it.
            if not isinstance(exc.__context__, ConnectionResetError):
                raise
            self.handed_over = False
            raise smtplib.SMTPServerDisconnected(
                f"connection lost before the end of the message was read: {exc}"
            ) from exc


def _peer_closed_or_spoke(sock: socket.socket) -> bool:
    """Whether the server closed the connection or sent anything while it should be silently
    reading the message. Asks the kernel without waiting; a false alarm only costs a retry,
    since the final dot is then never sent."""
    if isinstance(sock, ssl.SSLSocket) and sock.pending():
        return True
    poller = select.poll()
    poller.register(sock, select.POLLIN | select.POLLERR | select.POLLHUP)
    return bool(poller.poll(0))


class _SmtpSsl(_Smtp, smtplib.SMTP_SSL):
    pass


def dot_stuffed(data: bytes) -> bytes:
    """Every line that begins with a dot gets a second one (RFC 5321 4.5.2).

    What smtplib does with the regex `(?m)^\\.`, which tests every position of the message
    and cost about 75 µs for a 9 KB email; `bytes.replace` does the same in a few.
    """
    if data.startswith(b"."):
        data = b"." + data
    return data.replace(b"\n.", b"\n..")


def _text(reply: bytes | str) -> str:
    return reply.decode("utf-8", "replace") if isinstance(reply, bytes) else str(reply)


class SmtpTransport:
    """One SMTP connection, opened lazily, renewed after `per_connection` messages or a failure."""

    def __init__(self, settings: SmtpSettings, per_connection: int = 100):
        self.settings = settings
        self.per_connection = per_connection
        self._smtp: _Smtp | _SmtpSsl | None = None
        self._sent_on_connection = 0

    def __enter__(self) -> SmtpTransport:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def _connect(self) -> _Smtp | _SmtpSsl:
        s = self.settings
        context = tls_context() if s.security != "none" else None
        try:
            if s.security == "ssl":
                smtp: _Smtp | _SmtpSsl = _SmtpSsl(
                    s.host,
                    s.port,
                    timeout=s.timeout,
                    local_hostname=s.local_hostname,
                    context=context,
                )
            else:
                smtp = _Smtp(s.host, s.port, timeout=s.timeout, local_hostname=s.local_hostname)
            self._hello(smtp)
            if s.security == "starttls":
                smtp.starttls(context=context)
                self._hello(smtp)
        except smtplib.SMTPResponseException as exc:
            kind = AccountRefused if exc.smtp_code >= 500 else ServerUnavailable
            raise kind(
                f"SMTP server greeted with {exc.smtp_code}: {_text(exc.smtp_error)}", exc.smtp_code
            ) from exc
        except OSError as exc:  # refused, unreachable, timed out, disconnected
            raise ServerUnavailable(f"cannot connect to {s.host}:{s.port}: {exc}") from exc
        if s.user and s.password:
            try:
                smtp.login(s.user, s.password)
            except OSError as exc:  # smtplib's own errors are OSErrors too
                self._drop(smtp)
                raise self._login_failure(exc) from exc
        return smtp

    @staticmethod
    def _login_failure(exc: OSError) -> DeliveryFailure:
        """535 refuses the account for good and 454 only for now; a server that offers no AUTH
        (or no method in common) needs a settings change, so that stops the batch too."""
        if isinstance(exc, smtplib.SMTPResponseException):
            kind = AccountRefused if exc.smtp_code >= 500 else ServerUnavailable
            return kind(f"login refused ({exc.smtp_code}): {_text(exc.smtp_error)}", exc.smtp_code)
        if isinstance(exc, smtplib.SMTPException) and not isinstance(
            exc, smtplib.SMTPServerDisconnected
        ):
            return AccountRefused(f"login impossible: {exc}")
        return ServerUnavailable(f"login failed: {exc}")

    @staticmethod
    def _hello(smtp: smtplib.SMTP) -> None:
        """EHLO (HELO for a server without ESMTP); a refusal raises with the server's code.

        `smtp.ehlo()` alone returns a refusal instead of raising, and smtplib would then go
        on to MAIL FROM and misreport the server's "503 send EHLO first" as a sender refusal.
        """
        code, reply = smtp.ehlo()
        if code in (500, 502):  # command not recognised: an SMTP server from before ESMTP
            code, reply = smtp.helo()
        if not 200 <= code < 300:
            raise smtplib.SMTPHeloError(code, reply)

    def send(self, envelope: Envelope) -> None:
        """Hand one message to the server or raise a `DeliveryFailure` saying why not.

        A kept connection found closed before any recipient was named (servers drop idle
        clients) says nothing yet about the server: the message is tried once more on a
        fresh connection, whose failure then does.
        """
        reused = self._smtp is not None and self._sent_on_connection < self.per_connection
        try:
            self._send(envelope)
        except _LostBeforeRecipient:
            if not reused:
                raise
            self._send(envelope)

    def _send(self, envelope: Envelope) -> None:
        """One SMTP transaction. Longer than most: each smtplib error is mapped to one of our
        failure kinds side by side, so the mapping reads as one table."""
        if self._smtp is None or self._sent_on_connection >= self.per_connection:
            self.close()
            self._smtp = self._connect()
            self._sent_on_connection = 0
        smtp = self._smtp
        smtp.handed_over = smtp.recipient_named = False
        sender, recipient = wire_address(envelope.sender), wire_address(envelope.recipient)
        utf8 = envelope.utf8 or sender.utf8 or recipient.utf8
        if utf8 and not smtp.has_extn("smtputf8"):
            raise Unsupported(
                f"the SMTP server does not offer SMTPUTF8, which {envelope.recipient} needs "
                "(its local part is not ASCII)"
            )
        options = ["SMTPUTF8"] if utf8 else []
        try:
            refused = smtp.sendmail(
                sender.address, [recipient.address], envelope.data, mail_options=options
            )
        except smtplib.SMTPRecipientsRefused as exc:
            code, reply = exc.recipients.get(recipient.address, (550, b"refused"))
            self._after_refusal(code)
            raise self._recipient_failure(code, reply, "RCPT") from exc
        except smtplib.SMTPSenderRefused as exc:
            self.close()
            kind = AccountRefused if exc.smtp_code >= 500 else ServerUnavailable
            raise kind(
                f"MAIL FROM refused ({exc.smtp_code}): {_text(exc.smtp_error)}", exc.smtp_code
            ) from exc
        except smtplib.SMTPDataError as exc:
            self._after_refusal(exc.smtp_code)
            raise self._recipient_failure(exc.smtp_code, exc.smtp_error, "DATA") from exc
        except smtplib.SMTPResponseException as exc:  # a refused EHLO, before MAIL FROM
            self.close()
            if exc.smtp_code >= 500:
                raise AccountRefused(
                    f"server refused ({exc.smtp_code}): {_text(exc.smtp_error)}", exc.smtp_code
                ) from exc
            raise ServerUnavailable(
                f"server answered {exc.smtp_code}: {_text(exc.smtp_error)}", exc.smtp_code
            ) from exc
        except OSError as exc:  # disconnected, reset, timed out: every smtplib error is an OSError
            self.close()
            reason = str(exc) or type(exc).__name__
            if smtp.handed_over:
                raise InDoubt(f"no answer once the whole message was sent: {reason}") from exc
            if not smtp.recipient_named:
                raise _LostBeforeRecipient(f"connection lost: {reason}") from exc
            raise TransientFailure(f"connection lost: {reason}") from exc
        if refused:
            code, reply = refused[recipient.address]
            raise self._recipient_failure(code, reply, "RCPT")
        self._sent_on_connection += 1

    def _after_refusal(self, code: int) -> None:
        if code == 421:  # the server is closing the connection
            self.close()
            return
        try:  # smtplib leaves the transaction open after a refusal
            if self._smtp is not None:
                self._smtp.rset()
        except OSError:
            self.close()

    @staticmethod
    def _recipient_failure(code: int, reply: bytes | str, stage: str) -> DeliveryFailure:
        text = f"{stage} refused ({code}): {_text(reply)}"
        return RecipientRefused(text, code) if code >= 500 else TransientFailure(text, code)

    @staticmethod
    def _drop(smtp: smtplib.SMTP) -> None:
        with contextlib.suppress(OSError):
            smtp.close()

    def close(self) -> None:
        if self._smtp is None:
            return
        smtp, self._smtp = self._smtp, None
        try:
            smtp.quit()
        except OSError:
            self._drop(smtp)
