"""The command line: what marketers and operators type, parsed and printed. The work itself
is done by the packages each command calls.

Each module holds the commands of one audience and registers them on `main` when imported:
`leads` (adding leads), `sending` (send-due, run), `authoring` and `dry_runs` (the
marketer's tools), `operations` (status, web, catcher, demo), `keys` (dkim keygen),
`inbound` (mail that comes back).
"""

from campaign.cli import authoring, dry_runs, inbound, keys, leads, operations, sending
from campaign.cli.app import main

__all__ = ["authoring", "dry_runs", "inbound", "keys", "leads", "main", "operations", "sending"]
