"""SMTP transport: one reused connection, timeouts on every call, and failures sorted by cause.

What happens to a delivery depends on *why* SMTP failed, so every failure is raised as one of
three kinds (the split django-anymail and Postfix make too):
- `TransientFailure`: the server or network may recover (refused, timeout, dropped, 4xx);
- `RecipientRefused`: this address is refused for good (5xx on RCPT or DATA) — a bounce;
- `AccountRefused`: the whole account is refused (5xx on AUTH or MAIL FROM) — stop the batch.
"""

from __future__ import annotations

import smtplib
import socket
import ssl
from dataclasses import dataclass

from .settings import SmtpSettings


class DeliveryFailure(Exception):
    def __init__(self, message: str, code: int | None = None):
        self.code = code
        super().__init__(message)


class TransientFailure(DeliveryFailure):
    """Try again later: nothing says the message or the recipient is at fault."""


class RecipientRefused(DeliveryFailure):
    """The server refuses this recipient for good."""


class AccountRefused(DeliveryFailure):
    """The server refuses us, whoever the recipient: retrying other messages is pointless."""


@dataclass(frozen=True)
class Envelope:
    sender: str
    recipient: str
    data: bytes
    utf8: bool = False


def _text(reply: bytes | str) -> str:
    return reply.decode("utf-8", "replace") if isinstance(reply, bytes) else str(reply)


class SmtpTransport:
    """One SMTP connection, opened lazily, renewed after `per_connection` messages or a failure."""

    def __init__(self, settings: SmtpSettings, per_connection: int = 100):
        self.settings = settings
        self.per_connection = per_connection
        self._smtp: smtplib.SMTP | None = None
        self._sent_on_connection = 0

    def __enter__(self) -> SmtpTransport:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def _connect(self) -> smtplib.SMTP:
        s = self.settings
        context = ssl.create_default_context()  # verifies the certificate and the host name
        try:
            if s.security == "ssl":
                smtp: smtplib.SMTP = smtplib.SMTP_SSL(s.host, s.port, timeout=s.timeout,
                                                      local_hostname=s.local_hostname,
                                                      context=context)
            else:
                smtp = smtplib.SMTP(s.host, s.port, timeout=s.timeout,
                                    local_hostname=s.local_hostname)
            smtp.ehlo()
            if s.security == "starttls":
                smtp.starttls(context=context)
                smtp.ehlo()
        except smtplib.SMTPResponseException as exc:
            raise TransientFailure(f"SMTP server greeted with {exc.smtp_code}: "
                                   f"{_text(exc.smtp_error)}", exc.smtp_code) from exc
        except (OSError, smtplib.SMTPException) as exc:
            raise TransientFailure(f"cannot connect to {s.host}:{s.port}: {exc}") from exc
        if s.user and s.password:
            try:
                smtp.login(s.user, s.password)
            except smtplib.SMTPAuthenticationError as exc:
                self._drop(smtp)
                raise AccountRefused(f"login refused ({exc.smtp_code}): {_text(exc.smtp_error)}",
                                     exc.smtp_code) from exc
            except smtplib.SMTPResponseException as exc:
                self._drop(smtp)
                kind = AccountRefused if exc.smtp_code >= 500 else TransientFailure
                raise kind(f"login failed ({exc.smtp_code}): {_text(exc.smtp_error)}",
                           exc.smtp_code) from exc
            except (OSError, smtplib.SMTPException) as exc:
                self._drop(smtp)
                raise TransientFailure(f"login failed: {exc}") from exc
        return smtp

    def send(self, envelope: Envelope) -> None:
        """Hand one message to the server or raise a `DeliveryFailure` saying why not."""
        if self._smtp is None or self._sent_on_connection >= self.per_connection:
            self.close()
            self._smtp = self._connect()
            self._sent_on_connection = 0
        smtp = self._smtp
        options = ["SMTPUTF8"] if envelope.utf8 else []
        try:
            refused = smtp.sendmail(envelope.sender, [envelope.recipient], envelope.data,
                                    mail_options=options)
        except smtplib.SMTPRecipientsRefused as exc:
            code, reply = exc.recipients.get(envelope.recipient, (550, b"refused"))
            self._after_refusal(code)
            raise self._recipient_failure(code, reply, "RCPT") from exc
        except smtplib.SMTPSenderRefused as exc:
            self.close()
            kind = AccountRefused if exc.smtp_code >= 500 else TransientFailure
            raise kind(f"MAIL FROM refused ({exc.smtp_code}): {_text(exc.smtp_error)}",
                       exc.smtp_code) from exc
        except smtplib.SMTPDataError as exc:
            self._after_refusal(exc.smtp_code)
            raise self._recipient_failure(exc.smtp_code, exc.smtp_error, "DATA") from exc
        except smtplib.SMTPResponseException as exc:
            self.close()
            if exc.smtp_code >= 500:
                raise AccountRefused(f"server refused ({exc.smtp_code}): "
                                     f"{_text(exc.smtp_error)}", exc.smtp_code) from exc
            raise TransientFailure(f"server answered {exc.smtp_code}: {_text(exc.smtp_error)}",
                                   exc.smtp_code) from exc
        except (smtplib.SMTPServerDisconnected, OSError, socket.timeout) as exc:
            self.close()
            raise TransientFailure(f"connection lost: {exc or type(exc).__name__}") from exc
        except smtplib.SMTPException as exc:
            self.close()
            raise TransientFailure(f"SMTP error: {exc}") from exc
        if refused:
            code, reply = refused[envelope.recipient]
            raise self._recipient_failure(code, reply, "RCPT")
        self._sent_on_connection += 1

    def _after_refusal(self, code: int) -> None:
        if code == 421:  # the server is closing the connection
            self.close()
            return
        try:  # smtplib leaves the transaction open after a refusal
            if self._smtp is not None:
                self._smtp.rset()
        except (smtplib.SMTPException, OSError):
            self.close()

    @staticmethod
    def _recipient_failure(code: int, reply: bytes | str, stage: str) -> DeliveryFailure:
        text = f"{stage} refused ({code}): {_text(reply)}"
        return RecipientRefused(text, code) if code >= 500 else TransientFailure(text, code)

    @staticmethod
    def _drop(smtp: smtplib.SMTP) -> None:
        try:
            smtp.close()
        except OSError:  # pragma: no cover
            pass

    def close(self) -> None:
        if self._smtp is None:
            return
        smtp, self._smtp = self._smtp, None
        try:
            smtp.quit()
        except (smtplib.SMTPException, OSError):
            self._drop(smtp)
