"""The SMTP client's own framing, against a real aiosmtpd server on loopback."""

from __future__ import annotations

import smtplib
import socket

from hypothesis import given
from hypothesis import strategies as st

from campaign.config.settings import SmtpSettings
from campaign.devtools.catcher import Catcher
from campaign.sending.transport import Envelope, SmtpTransport, dot_stuffed

LINES = st.lists(st.sampled_from(["", ".", "..", ".x", "a.", " .", "a", "\r", "\n", "x\r\n."]))


@given(LINES)
def test_dot_stuffing_matches_smtplib(parts: list[str]) -> None:
    data = "\r\n".join(parts).encode()
    assert dot_stuffed(data) == smtplib._quote_periods(data)


def test_lines_that_begin_with_a_dot_arrive_intact() -> None:
    data = (
        b".starts with a dot\r\nSubject: dots\r\n\r\n"
        b"..two\r\n.\r\nmiddle . dot\r\n.last=\r\n=2E encoded\r\n."
    )
    with Catcher() as catcher, SmtpTransport(SmtpSettings(port=catcher.port)) as transport:
        transport.send(Envelope("care@example.com", "lead@example.com", data))
        transport.send(Envelope("care@example.com", "lead@example.com", data + b"\r\n"))
        caught = [c.data for c in catcher.messages]
    assert caught == [data + b"\r\n", data + b"\r\n"]


def test_the_connection_writes_at_once() -> None:
    """The final dot is a write of its own: with Nagle's algorithm on, it waited for the
    server's delayed acknowledgement of the body (up to 40 ms a message, which halved the
    throughput of every connection). The socket must have TCP_NODELAY set."""
    with Catcher() as catcher, SmtpTransport(SmtpSettings(port=catcher.port)) as transport:
        transport.send(Envelope("care@example.com", "lead@example.com", b"Subject: x\r\n\r\nhi"))
        sock = transport._smtp.sock  # the connection kept for the next message
        assert sock is not None
        assert sock.getsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY) != 0
        assert len(catcher.messages) == 1
