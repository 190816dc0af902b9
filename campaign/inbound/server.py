"""`inbound serve`: an SMTP server for the bounce domain's MX, behind the usual front MTA,
handing each message to the same processor as `inbound receive`.

Its SMTP answers say what `receive`'s exit codes say: 250 once the message is recorded
(matched or not), 550 for data that is no email message (the front MTA returns it), 451
when our side failed (the database), so the front MTA keeps the message and tries again.
The processor's database work runs in a thread, never on the event loop.
"""

from __future__ import annotations

import asyncio
import logging
from typing import Any

from aiosmtpd.controller import Controller

from campaign.inbound.process import MAX_MESSAGE_BYTES, InboundProcessor, NotAMessage, Received
from campaign.store import DatabaseError

log = logging.getLogger("campaign.inbound.server")


class InboundHandler:
    """aiosmtpd's handler interface over one `InboundProcessor`."""

    def __init__(self, processor: InboundProcessor):
        self.processor = processor

    def _process(self, raw: bytes, recipients: list[str]) -> Received:
        """One message is recorded once, whatever its number of recipients: the first one
        that names a delivery (a VERP address) is passed as the envelope recipient."""
        return_path = self.processor.return_path
        rcpt = next(
            (r for r in recipients if return_path and return_path.read_address(r) is not None),
            recipients[0] if recipients else None,
        )
        return self.processor.process(raw, rcpt)

    async def handle_DATA(self, server: Any, session: Any, envelope: Any) -> str:
        raw = envelope.original_content or envelope.content
        if not isinstance(raw, bytes):
            raw = str(raw).encode("utf-8", "surrogateescape")
        recipients = [str(r) for r in envelope.rcpt_tos]
        try:
            received = await asyncio.to_thread(self._process, raw, recipients)
        except NotAMessage as exc:
            log.warning("refused: %s", exc)
            return f"550 5.6.0 not processed: {exc}"
        except DatabaseError as exc:
            log.error("database error, the sender will try again: %s", exc)
            return "451 4.3.0 the database failed; try again later"
        log.info("%s", received.line())
        return "250 2.0.0 recorded"


class InboundServer:
    """The SMTP server on `host:port`, in a background thread, started and stopped cleanly."""

    def __init__(self, processor: InboundProcessor, host: str, port: int):
        self.host = host
        self.port = port
        self._controller = Controller(
            InboundHandler(processor),
            hostname=host,
            port=port,
            data_size_limit=MAX_MESSAGE_BYTES,
            enable_SMTPUTF8=True,
            ready_timeout=10,
        )

    def __enter__(self) -> InboundServer:
        self._controller.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self._controller.stop()
