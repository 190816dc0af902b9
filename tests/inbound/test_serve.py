"""`run.py inbound serve`: the same processor behind an SMTP server, as the bounce domain's
MX would reach it from the front MTA: a DSN over real SMTP bounces the lead it names."""

from __future__ import annotations

import smtplib
import socket
import subprocess

import pytest

from campaign.devtools.catcher import free_port
from harness.cli import start_run_py
from harness.clock import wait_for
from harness.engine import Campaign
from harness.inbound import ANA, BEN, fill, last_to, start, status


def accepting(port: int) -> bool:
    with socket.socket() as probe:
        return probe.connect_ex(("127.0.0.1", port)) == 0


@pytest.mark.slow
def test_a_dsn_over_smtp_bounces_its_lead(campaign: Campaign) -> None:
    start(campaign)
    sent = last_to(campaign, ANA)
    port = free_port()
    server = start_run_py(
        "--schedule",
        str(campaign.schedule_path),
        "inbound",
        "serve",
        "--port",
        str(port),
        env=campaign.env(),
        output=subprocess.DEVNULL,
    )
    try:
        wait_for(lambda: accepting(port) or server.poll() is not None, 30, "inbound serve")
        assert server.poll() is None, "inbound serve exited"
        with smtplib.SMTP("127.0.0.1", port, timeout=30) as client:
            dsn = fill("postfix-dsn.eml", sent).replace(b"\n", b"\r\n")  # SMTP's line ends
            client.sendmail("", [sent.sender], dsn)
            with pytest.raises(smtplib.SMTPDataError) as refused:
                client.sendmail("", [sent.sender], b"\x00\x01binary\x00" * 10)
            assert refused.value.smtp_code == 550
    finally:
        server.terminate()
        server.wait(timeout=30)
    assert status(campaign, ANA) == "bounced"
    assert status(campaign, BEN) == "active"
