"""A careless operator's environment, through the real `run.py`: every `CAMPAIGN_` setting is
checked before any command does anything, a run that could build no message at all says so
in its exit code, a password never crosses the network in cleartext unless the operator says
so, and a command run in the wrong folder does not leave an empty database behind.
"""

from __future__ import annotations

import subprocess
from pathlib import Path

import pytest

from harness.cli import run_py
from harness.db import dump_tables
from harness.rig import Rig
from harness.schedule import ScheduleCopy
from harness.smtp import FaultServer

PASSWORD = "relay-password-for-tests"  # a throwaway server's, not a secret of any deployment


@pytest.fixture
def rig(schedule_copy: ScheduleCopy, tmp_path: Path) -> Rig:
    rig = Rig(schedule_copy.path, tmp_path / "campaign.db")
    rig.add("ann@example.com", name="Ann")
    rig.add("bob@example.com", name="Bob")
    return rig


def refused(result: subprocess.CompletedProcess[str], *words: str) -> None:
    """The command stopped at start-up: exit 2, no traceback, the message naming `words`."""
    assert result.returncode == 2, f"exit {result.returncode}\n{result.stdout}\n{result.stderr}"
    assert "Traceback" not in result.stderr, result.stderr
    for word in words:
        assert word in result.stderr, f"{word!r} not in:\n{result.stderr}"


# --- item 9: CAMPAIGN_BASE_URL and every other setting, checked at start-up ---------------

BAD_BASE_URLS = {
    "trailing-space": "https://go.clinic.example ",
    "trailing-cr": "https://go.clinic.example\r",
    "newline-inside": "https://go.clinic.example/\nX-Injected: 1",
    "javascript": "javascript:alert(document.cookie)//",
    "data": "data:text/html,<script>alert(1)</script>",
    "no-scheme": "go.clinic.example",
    "ftp": "ftp://go.clinic.example",
    "no-host": "https:///path",
    "space-in-host": "https://go clinic.example",
    "query": "https://go.clinic.example/?next=",
    "credentials": "https://user:pass@go.clinic.example",
    "angle-brackets": "https://go.clinic.example/a>,<javascript:alert(1)>",
    "quote": 'https://go.clinic.example/"onmouseover="alert(1)',
}


@pytest.mark.parametrize("value", BAD_BASE_URLS.values(), ids=BAD_BASE_URLS.keys())
def test_a_bad_base_url_stops_send_due_before_anything_is_sent(rig: Rig, value: str) -> None:
    """Before: a trailing space or CR made every message fail to build (one attempt spent,
    the step lost for every lead) while `send-due` exited 0, and `javascript:` went into
    `List-Unsubscribe`. Now nothing is touched and the setting is named."""
    before = rig.snapshot()
    with FaultServer() as server:
        result = rig.send_due(server.port, CAMPAIGN_BASE_URL=value)
        assert server.messages == [] and server.handler.commands == []
    refused(result, "CAMPAIGN_BASE_URL")
    assert rig.snapshot() == before


BAD_SETTINGS = {
    "port-out-of-range": ("CAMPAIGN_SMTP_PORT", "70000"),
    "port-not-a-number": ("CAMPAIGN_SMTP_PORT", "25 "),
    "timeout-nan": ("CAMPAIGN_SMTP_TIMEOUT", "nan"),
    "timeout-negative": ("CAMPAIGN_SMTP_TIMEOUT", "-1"),
    "host-with-cr": ("CAMPAIGN_SMTP_HOST", "smtp.example.com\r\nMAIL FROM:<x@y>"),
    "host-with-space": ("CAMPAIGN_SMTP_HOST", "smtp.example.com "),
    "helo-with-space": ("CAMPAIGN_SMTP_HELO", "mail example"),
    "security-typo": ("CAMPAIGN_SMTP_SECURITY", "tls"),
    "user-with-newline": ("CAMPAIGN_SMTP_USER", "me\nRCPT TO:<x@y>"),
    "secret-key-short": ("CAMPAIGN_SECRET_KEY", "short"),
    "secret-key-trailing-newline": ("CAMPAIGN_SECRET_KEY", "0123456789abcdef0123\n"),
    "connections-zero": ("CAMPAIGN_SMTP_CONNECTIONS", "0"),
}


@pytest.mark.parametrize(("name", "value"), BAD_SETTINGS.values(), ids=BAD_SETTINGS.keys())
def test_every_setting_is_checked_at_start_up(rig: Rig, name: str, value: str) -> None:
    before = rig.snapshot()
    with FaultServer() as server:
        result = rig.send_due(server.port, **{name: value})
        assert server.handler.commands == []
    refused(result, name)
    assert rig.snapshot() == before


@pytest.mark.parametrize(
    ("option", "value"),
    [
        ("CAMPAIGN_DB", "sqlite:///campaign.db "),
        ("CAMPAIGN_DB", "campaign.db"),
        ("CAMPAIGN_DB", "postgresql+psycopg://campaign:hunter2-secret@db/x\r"),
        ("--db", "mysql://db.example/campaign"),
    ],
    ids=["db-with-space", "db-not-a-url", "db-with-cr", "db-other-server"],
)
def test_the_database_url_is_checked_and_its_password_never_shown(
    schedule_copy: ScheduleCopy, tmp_path: Path, option: str, value: str
) -> None:
    args = ["--schedule", str(schedule_copy.path)]
    args += ["--db", value] if option == "--db" else []
    env = {} if option == "--db" else {option: value}
    result = run_py(*args, "status", env=env, cwd=tmp_path)
    refused(result, option)
    assert "hunter2" not in result.stderr
    assert list(tmp_path.iterdir()) == [schedule_copy.path, schedule_copy.path.parent / "templates"]


def test_settings_are_checked_even_for_commands_that_do_not_send(rig: Rig) -> None:
    """The mistake shows on the first command the operator types, not on the first send."""
    result = run_py(
        "--schedule",
        str(rig.schedule_path),
        "--db",
        rig.url,
        "status",
        env={"CAMPAIGN_BASE_URL": "https://go.clinic.example\r"},
    )
    refused(result, "CAMPAIGN_BASE_URL")


def test_a_good_environment_still_sends(rig: Rig) -> None:
    """The checks refuse nothing a real deployment writes: a path under the base URL, a
    port, a trailing slash."""
    with FaultServer() as server:
        result = rig.send_due(server.port, CAMPAIGN_BASE_URL="https://go.clinic.example:8443/nl/")
        assert result.returncode == 0, result.stderr
        assert len(server.messages) == 2
        head = server.messages[0].message
        assert "<https://go.clinic.example:8443/nl/u/" in str(head["List-Unsubscribe"])


@pytest.mark.parametrize(
    ("second", "sent", "code"),
    [("bo@example.com", [], 1), ("maria@example.com", [["maria@example.com"]], 0)],
    ids=["none-built", "some-built"],
)
def test_a_run_that_built_no_message_exits_non_zero(
    schedule_copy: ScheduleCopy, tmp_path: Path, second: str, sent: list[list[str]], code: int
) -> None:
    """No lead but Maria has a fourth letter to its name, so only her message of step 1 can
    be built: a run that sent nothing must not look like a success; one that sent something
    reports the rest and exits 0."""
    schedule_copy.edit(
        "subject: How acupuncture eases back pain", "subject: Hi {{ lead.first_name[3] }}"
    )
    rig = Rig(schedule_copy.path, tmp_path / "campaign.db")
    rig.add("al@example.com", name="Al")
    rig.add(second, name=second.split("@")[0].title())
    with FaultServer() as server:
        result = rig.send_due(server.port)
        assert [m.recipients for m in server.messages] == sent
    assert result.returncode == code, f"{result.stdout}\n{result.stderr}"
    assert "Traceback" not in result.stderr
    assert "cannot build the message" in result.stderr
    assert ("no message could be built" in result.stderr) == (code == 1), result.stderr


# --- item 13: a password in cleartext -----------------------------------------------------


def auth_env(host: str, **extra: str) -> dict[str, str]:
    return {
        "CAMPAIGN_SMTP_HOST": host,
        "CAMPAIGN_SMTP_SECURITY": "none",
        "CAMPAIGN_SMTP_USER": "clinic",
        "CAMPAIGN_SMTP_PASSWORD": PASSWORD,
        **extra,
    }


def test_a_password_is_not_sent_in_cleartext_to_a_host_that_is_not_loopback(rig: Rig) -> None:
    """`127.1` reaches the test server but is not a written loopback address (localhost,
    127.0.0.1, ::1): it stands for any relay name the engine cannot vouch for. Without the
    explicit opt-in not one command, let alone AUTH, reaches the server; with it, the same
    host gets the login and the mail, which proves the host was reachable all along."""
    before = rig.snapshot()
    with FaultServer(password=PASSWORD) as server:
        result = rig.send_due(server.port, **auth_env("127.1"))
        refused(result, "CAMPAIGN_SMTP_SECURITY", "CAMPAIGN_SMTP_ALLOW_CLEARTEXT_AUTH")
        assert "AUTH" not in server.handler.commands and server.handler.commands == []
        assert PASSWORD not in result.stderr + result.stdout
        assert rig.snapshot() == before

        opted_in = rig.send_due(
            server.port, **auth_env("127.1", CAMPAIGN_SMTP_ALLOW_CLEARTEXT_AUTH="1")
        )
        assert opted_in.returncode == 0, opted_in.stderr
        assert "AUTH" in server.handler.commands
        assert len(server.messages) == 2


@pytest.mark.parametrize("host", ["127.0.0.1", "localhost"])
def test_a_password_in_cleartext_to_loopback_needs_no_opt_in(rig: Rig, host: str) -> None:
    """A relay on the same machine (a local Postfix, an SSH tunnel) never crosses a network."""
    with FaultServer(password=PASSWORD) as server:
        result = rig.send_due(server.port, **auth_env(host))
        assert result.returncode == 0, result.stderr
        assert "AUTH" in server.handler.commands
        assert len(server.messages) == 2


def test_the_opt_in_must_say_yes_or_no(rig: Rig) -> None:
    result = rig.send_due(1, **auth_env("127.1", CAMPAIGN_SMTP_ALLOW_CLEARTEXT_AUTH="maybe"))
    refused(result, "CAMPAIGN_SMTP_ALLOW_CLEARTEXT_AUTH")


# --- item 13: no database in this folder --------------------------------------------------


@pytest.mark.parametrize(
    "args",
    [
        ("status",),
        ("status", "--json"),
        ("send-due",),
        ("run", "--ticks", "1", "--every", "0.01"),
        ("leads", "reactivate", "ann@example.com"),
    ],
    ids=["status", "status-json", "send-due", "run", "leads-reactivate"],
)
def test_read_and_send_commands_create_no_database(
    schedule_copy: ScheduleCopy, tmp_path: Path, args: tuple[str, ...]
) -> None:
    """Run in the wrong folder, these used to create an empty `campaign.db` there and report
    an empty campaign (exit 0), hiding the real database. Now they say there is none and how
    to make one, and leave the folder as it was."""
    folder = tmp_path / "elsewhere"
    folder.mkdir()
    result = run_py("--schedule", str(schedule_copy.path), *args, cwd=folder)
    refused(result, "no database", "campaign.db", "leads add", "CAMPAIGN_DB")
    assert list(folder.iterdir()) == []


def test_an_empty_file_left_by_an_older_version_is_no_database(
    schedule_copy: ScheduleCopy, tmp_path: Path
) -> None:
    (tmp_path / "campaign.db").touch()
    result = run_py("--schedule", str(schedule_copy.path), "status", cwd=tmp_path)
    refused(result, "no database")
    assert (tmp_path / "campaign.db").stat().st_size == 0


def test_adding_a_lead_creates_the_database_and_says_so(
    schedule_copy: ScheduleCopy, tmp_path: Path
) -> None:
    args = ("--schedule", str(schedule_copy.path))
    added = run_py(*args, "leads", "add", "ann@example.com", cwd=tmp_path, expect=0)
    assert "created a new database" in added.stderr
    assert (tmp_path / "campaign.db").is_file()
    again = run_py(*args, "leads", "add", "bob@example.com", cwd=tmp_path, expect=0)
    assert "created a new database" not in again.stderr
    status = run_py(*args, "status", "--json", cwd=tmp_path, expect=0)
    assert '"active": 2' in status.stdout
    assert dump_tables(tmp_path / "campaign.db")["leads"]
