"""A real IMAP server for `inbound poll`: Debian's Dovecot, started in a temporary folder on
127.0.0.1 with one static login, stopped afterwards (`.ci/run` installs dovecot-imapd).

Dovecot will not keep mail as root, so when the tests run as root the mailbox belongs to
`nobody`, in a folder of its own that `nobody` can write.
"""

from __future__ import annotations

import imaplib
import os
import shutil
import signal
import subprocess
import tempfile
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path

from campaign.devtools.catcher import free_port
from harness.clock import wait_for

DOVECOT = shutil.which("dovecot") or next(
    (p for p in ("/usr/sbin/dovecot",) if Path(p).exists()), None
)
USER = "bounces"
# Only the throwaway test server knows it; not a password of any deployment.
PASSWORD = "imap-tests-password-0123"
NOBODY = 65534


@dataclass(frozen=True)
class ImapServer:
    port: int

    def env(self, **extra: str) -> dict[str, str]:
        """The settings `inbound poll` reads to reach this server."""
        return {
            "CAMPAIGN_IMAP_HOST": "127.0.0.1",
            "CAMPAIGN_IMAP_PORT": str(self.port),
            "CAMPAIGN_IMAP_SECURITY": "none",
            "CAMPAIGN_IMAP_USER": USER,
            "CAMPAIGN_IMAP_PASSWORD": PASSWORD,
            **extra,
        }

    @contextmanager
    def client(self) -> Iterator[imaplib.IMAP4]:
        imap = imaplib.IMAP4("127.0.0.1", self.port, timeout=10)
        imap.login(USER, PASSWORD)
        try:
            yield imap
        finally:
            imap.logout()

    def append(self, *messages: bytes, folder: str = "INBOX") -> None:
        with self.client() as imap:
            for message in messages:
                status, data = imap.append(folder, None, None, message)
                assert status == "OK", data

    def count(self, folder: str) -> int:
        with self.client() as imap:
            status, data = imap.select(folder, readonly=True)
            return int(data[0]) if status == "OK" and data[0] else 0

    def unseen(self, folder: str) -> int:
        with self.client() as imap:
            status, data = imap.status(folder, "(UNSEEN)")
            assert status == "OK", data
            return int(data[0].decode().rstrip(")").split()[-1])


def _config(root: Path, home: Path, port: int) -> str:
    uid = os.getuid() if os.getuid() != 0 else NOBODY
    gid = os.getgid() if os.getuid() != 0 else NOBODY
    return f"""
protocols = imap
listen = 127.0.0.1
base_dir = {root}/run
state_dir = {root}/state
log_path = {root}/dovecot.log
ssl = no
disable_plaintext_auth = no
auth_mechanisms = plain
first_valid_uid = 1
mail_location = maildir:~/Maildir
passdb {{
  driver = static
  args = password={PASSWORD}
}}
userdb {{
  driver = static
  args = uid={uid} gid={gid} home={home}/%u
}}
service imap-login {{
  chroot =
  inet_listener imap {{
    address = 127.0.0.1
    port = {port}
  }}
  inet_listener imaps {{
    port = 0
  }}
}}
service anvil {{
  chroot =
}}
"""


@contextmanager
def dovecot() -> Iterator[ImapServer]:
    assert DOVECOT is not None, "dovecot is not installed"
    root = Path(tempfile.mkdtemp(prefix="campaign-imap-"))
    home = root / "home"
    (root / "run").mkdir()
    (root / "state").mkdir()
    home.mkdir()
    root.chmod(0o755)
    home.chmod(0o777)  # the mailbox's owner (`nobody` under root) creates its folders here
    port = free_port()
    config = root / "dovecot.conf"
    config.write_text(_config(root, home, port), encoding="utf-8")
    subprocess.run([DOVECOT, "-c", str(config)], check=True, timeout=30)
    server = ImapServer(port)
    try:
        wait_for(lambda: _answers(server), 15, "dovecot listening")
        yield server
    finally:
        pid = root / "run" / "master.pid"
        if pid.exists():
            os.kill(int(pid.read_text().strip()), signal.SIGTERM)
        shutil.rmtree(root, ignore_errors=True)


def _answers(server: ImapServer) -> bool:
    try:
        with server.client():
            return True
    except (OSError, imaplib.IMAP4.error):
        return False
