"""SMTP servers for tests, on loopback and built on aiosmtpd: nothing is mocked, every message
crosses a real socket.

`ControlledHandler` is the catcher's handler with gates, to hold a message unanswered or to
wait for several senders at once. `FaultServer` behaves like the catcher (accepts and records
every message) until a scripted fault matches: a reply such as `451 ...` or `550 ...` to one
command, optionally for one recipient only, a delay before answering (a slow server), a
dropped connection instead of an answer, a refused AUTH, a refusing greeting, or a greeting
that comes only after `greeting_delay` (a relay that never greets). A `BODY`
fault acts once the client may send the message (after `354`), before its final dot: `drop`
hangs up there, so the message cannot have been accepted. Faults are
consumed in order, so a test can say "fail twice, then accept" and watch the retries go
through. Like a real server, it hangs up after any 421 reply.
"""

from __future__ import annotations

import asyncio
import logging
import threading
import time
from dataclasses import dataclass, field
from typing import Any

from aiosmtpd.controller import Controller
from aiosmtpd.smtp import SMTP, AuthResult, Envelope, Session

from campaign.devtools.catcher import CatchHandler, Caught, free_port

COMMANDS = ("EHLO", "AUTH", "MAIL", "RCPT", "DATA", "BODY")


@dataclass
class ControlledHandler(CatchHandler):
    """The catcher's handler, able to hold one message unanswered or to wait for company.

    `hold_at=N` stores the N-th message, then keeps the sender waiting for the `250` until
    `release` is set: a client killed meanwhile leaves its delivery in doubt. `rendezvous=N`
    answers nothing until N different connections have sent a message, which proves that N
    senders were really working at the same time. Waiting is async, so other connections go on.
    """

    hold_at: int | None = None
    rendezvous: int = 1
    timeout: float = 20.0
    held: threading.Event = field(default_factory=threading.Event)
    release: threading.Event = field(default_factory=threading.Event)
    met: threading.Event = field(default_factory=threading.Event)
    peers: set[Any] = field(default_factory=set)

    async def handle_DATA(self, server: Any, session: Any, envelope: Any) -> str:
        self.peers.add(session.peer)
        if len(self.peers) >= self.rendezvous:
            self.met.set()
        await self._until(self.met)
        reply = await super().handle_DATA(server, session, envelope)
        if self.hold_at is not None and len(self.messages()) == self.hold_at:
            self.held.set()
            await self._until(self.release)
        return reply

    def open_gates(self) -> None:
        """Let every waiting connection go on, so no server thread outlives its test."""
        self.release.set()
        self.met.set()

    async def _until(self, event: threading.Event) -> None:
        deadline = time.monotonic() + self.timeout
        while not event.is_set() and time.monotonic() < deadline:
            await asyncio.sleep(0.005)


@dataclass
class Fault:
    """What the server does instead of its normal answer to one command."""

    command: str
    reply: str | None = None  # e.g. "451 4.3.0 try again later"; None keeps the normal answer
    recipient: str | None = None  # only for this recipient (RCPT, DATA); None: any
    delay: float = 0.0  # seconds to wait before answering (a slow server)
    drop: bool = False  # close the connection instead of answering
    times: int | None = 1  # how many times it fires; None: every time

    def __post_init__(self) -> None:
        if self.command not in COMMANDS:
            raise ValueError(f"unknown SMTP command {self.command!r}")


@dataclass
class FaultHandler:
    """aiosmtpd hooks that consult the script before answering each command."""

    faults: list[Fault] = field(default_factory=list)
    caught: list[Caught] = field(default_factory=list)
    commands: list[str] = field(default_factory=list)
    greeting: str | None = None  # replaces "220 ..." and closes the connection
    greeting_delay: float = 0.0  # seconds before the greeting (a relay that never greets)
    greeted: int = 0  # greetings actually sent: 0 means no client ever got an answer
    password: str | None = None  # AUTH accepts only this password (any user)
    _lock: threading.Lock = field(default_factory=threading.Lock)

    def _take(self, command: str, recipients: list[str]) -> Fault | None:
        with self._lock:
            self.commands.append(command)
            for fault in self.faults:
                if fault.command != command or fault.times == 0:
                    continue
                if fault.recipient is not None and fault.recipient not in recipients:
                    continue
                if fault.times is not None:
                    fault.times -= 1
                return fault
        return None

    async def _apply(self, server: SMTP, fault: Fault | None) -> str | None:
        """Run a fault; the reply to send, or None for the normal answer."""
        if fault is None:
            return None
        if fault.delay:
            await asyncio.sleep(fault.delay)
        assert server.transport is not None
        if fault.drop:
            server.transport.close()
            return "421 4.4.2 connection dropped"  # never reaches the client
        if fault.reply and fault.reply.startswith("421"):
            # 421 means "closing the channel": hang up once the reply has been written.
            asyncio.get_running_loop().call_soon(server.transport.close)
        return fault.reply

    async def handle_EHLO(
        self,
        server: SMTP,
        session: Session,
        envelope: Envelope,
        hostname: str,
        responses: list[str],
    ) -> list[str]:
        reply = await self._apply(server, self._take("EHLO", []))
        if reply is not None:
            return [reply]
        session.host_name = hostname
        return responses

    async def handle_MAIL(
        self, server: SMTP, session: Session, envelope: Envelope, address: str, options: list[str]
    ) -> str:
        reply = await self._apply(server, self._take("MAIL", []))
        if reply is not None:
            return reply
        envelope.mail_from = address
        envelope.mail_options.extend(options)
        return "250 OK"

    async def handle_RCPT(
        self, server: SMTP, session: Session, envelope: Envelope, address: str, options: list[str]
    ) -> str:
        reply = await self._apply(server, self._take("RCPT", [address]))
        if reply is not None:
            return reply
        envelope.rcpt_tos.append(address)
        return "250 OK"

    async def handle_DATA(self, server: SMTP, session: Session, envelope: Envelope) -> str:
        recipients = [str(r) for r in envelope.rcpt_tos]
        reply = await self._apply(server, self._take("DATA", recipients))
        if reply is not None:
            return reply
        data = envelope.original_content or envelope.content
        assert isinstance(data, bytes)
        with self._lock:
            self.caught.append(Caught(str(envelope.mail_from), recipients, data))
        return "250 Message accepted for delivery"

    def authenticate(
        self, server: SMTP, session: Session, envelope: Envelope, mechanism: str, auth_data: Any
    ) -> AuthResult:
        """aiosmtpd's authenticator: scripted AUTH faults first, then the password check."""
        fault = self._take("AUTH", [])
        if fault is not None and fault.reply:
            return AuthResult(success=False, handled=False, message=fault.reply)
        ok = self.password is not None and auth_data.password.decode() == self.password
        return AuthResult(success=ok, handled=False)

    def messages(self) -> list[Caught]:
        with self._lock:
            return list(self.caught)


class _FaultySMTP(SMTP):
    """aiosmtpd's server, except that the greeting can be replaced by a refusal and the
    connection can drop in the middle of DATA (a `BODY` fault)."""

    _greeted = False

    async def smtp_DATA(self, arg: str) -> None:
        handler: FaultHandler = self.event_handler
        recipients = [str(r) for r in self.envelope.rcpt_tos] if self.envelope else []
        fault = handler._take("BODY", recipients) if recipients else None
        if fault is not None and fault.drop:
            await self.push("354 End data with <CR><LF>.<CR><LF>")
            assert self.transport is not None
            self.transport.close()  # before the final dot: nothing was accepted
            return
        await super().smtp_DATA(arg)

    async def push(self, status: Any) -> None:
        handler: FaultHandler = self.event_handler
        if not self._greeted:
            self._greeted = True
            if handler.greeting_delay:
                await asyncio.sleep(handler.greeting_delay)
            with handler._lock:
                handler.greeted += 1
            if handler.greeting is not None:
                await super().push(handler.greeting)
                assert self.transport is not None
                self.transport.close()
                return
        await super().push(status)


class _FaultController(Controller):
    def factory(self) -> SMTP:
        return _FaultySMTP(self.handler, **self.SMTP_kwargs)


class FaultServer:
    """A fault-injecting SMTP server on a free loopback port, as a context manager."""

    def __init__(
        self,
        *faults: Fault,
        greeting: str | None = None,
        greeting_delay: float = 0.0,
        password: str | None = None,
        port: int | None = None,
        smtputf8: bool = True,  # False: a relay that does not offer SMTPUTF8, as many do not
    ):
        self.handler = FaultHandler(list(faults), greeting=greeting, password=password)
        self._greeting_delay = greeting_delay  # from `__enter__` on: the start-up probe is greeted
        self.host = "127.0.0.1"
        self.port = port or free_port()
        logging.getLogger("mail.log").setLevel(logging.CRITICAL)
        auth: dict[str, Any] = {}
        if password is not None:
            auth = {"authenticator": self.handler.authenticate, "auth_require_tls": False}
        self._controller = _FaultController(
            self.handler,
            hostname=self.host,
            port=self.port,
            enable_SMTPUTF8=smtputf8,
            ready_timeout=10,
            **auth,
        )

    def add(self, *faults: Fault) -> None:
        with self.handler._lock:
            self.handler.faults.extend(faults)

    def __enter__(self) -> FaultServer:
        self._controller.start()
        self.handler.commands.clear()  # the controller's own start-up probe is not a client
        self.handler.greeting_delay = self._greeting_delay
        self.handler.greeted = 0  # after the delay is set: a late probe greeting waits too
        return self

    def __exit__(self, *exc: object) -> None:
        self._controller.stop()

    @property
    def messages(self) -> list[Caught]:
        return self.handler.messages()
