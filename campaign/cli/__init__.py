"""The command line: what marketers and operators type, parsed and printed. The work itself
is done by the packages each command calls.

Each module holds the commands of one audience and registers them on `main` when imported:
`leads` (adding leads), `sending` (send-due, run), `authoring` and `dry_runs` (the
marketer's tools), `operations` (status, web, catcher, demo).
"""

from campaign.cli import authoring, dry_runs, leads, operations, sending
from campaign.cli.app import main

__all__ = ["authoring", "dry_runs", "leads", "main", "operations", "sending"]
