"""The command line: what marketers and operators type, parsed and printed. The work itself
is done by the packages each command calls.

Each module holds the commands of one audience and registers them on `main` when imported:
`leads` (adding leads), `sending` (send-due, run), `authoring` and `dry_runs` (the
marketer's tools), `operations` (status, web, catcher, demo), `keys` (dkim keygen),
`inbound` (mail that comes back), `front_desk` (one lead at a time: list, show,
unsubscribe, pause, resume; `send-test`), `privacy` (export, erase, the audit log),
`series` (pause and resume a whole series).
"""

from campaign.cli import (
    authoring,
    dry_runs,
    front_desk,
    inbound,
    keys,
    leads,
    operations,
    privacy,
    sending,
    series,
)
from campaign.cli.app import main

__all__ = [
    "authoring",
    "dry_runs",
    "front_desk",
    "inbound",
    "keys",
    "leads",
    "main",
    "operations",
    "privacy",
    "sending",
    "series",
]
