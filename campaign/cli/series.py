"""`series pause` and `series resume`: stop a whole series for every worker, and let it go on.

The pause is kept in the database, so every `run` and `send-due` sharing it honours it at its
next reservation, wherever it runs; the emails stay queued meanwhile. `--series` of the lead
commands is checked here too, against the series the schedule file holds.
"""

from __future__ import annotations

import sys
from datetime import datetime

import click

from campaign.cli.app import AppContext, command, console, errors, main, now_option, open_store
from campaign.config.schedule import Schedule
from campaign.leads.privacy import operator
from campaign.model import utc_now


@main.group("series")
def series_group() -> None:
    """Pause and resume a whole series, for every worker sharing the database."""


def series_ids(schedule: Schedule) -> list[str]:
    """The series a schedule file holds: today one per file, its `campaign.id`."""
    return [schedule.campaign.id]


def chosen_series(schedule: Schedule, series_id: str | None) -> str:
    """The series a command acts on: the one named, which the schedule must hold, or the
    file's only one. A wrong name exits 2 naming the series there are."""
    known = series_ids(schedule)
    if series_id is None and len(known) == 1:
        return known[0]
    if series_id not in known:
        said = "no series given" if series_id is None else f"no series {series_id!r}"
        errors.print(
            f"[bold red]{said}[/] in the schedule; its series: {', '.join(known)}",
            highlight=False,
        )
        sys.exit(2)
    return series_id


def stamp(moment: datetime) -> str:
    return f"{moment:%Y-%m-%d %H:%M}Z"


@command(series_group, "pause")
@click.argument("series_id", metavar="ID")
@now_option("Record the pause at this moment")
def series_pause(app: AppContext, series_id: str, at: datetime | None) -> None:
    """Stop sending the series: every worker stops at its next reservation (what a worker
    had reserved goes back to the queue unsent) and the emails stay queued until `series
    resume`. Pausing a paused series changes nothing."""
    campaign_id = chosen_series(app.load().schedule, series_id)
    store = open_store(app)
    done = store.queue.pause_series(campaign_id, at or utc_now(), operator())
    if not done.changed:
        assert done.since is not None  # not changed: it was paused already
        console.print(
            f"series {campaign_id} is already paused since {stamp(done.since)}: nothing changed",
            markup=False,
            highlight=False,
        )
        return
    console.print(
        f"paused series {campaign_id}: nothing more is sent; {done.queued} queued email(s) "
        f"wait for `series resume {campaign_id}`"
        + (f" ({done.taken_back} reserved by a worker put back unsent)" if done.taken_back else ""),
        markup=False,
        highlight=False,
    )


@command(series_group, "resume")
@click.argument("series_id", metavar="ID")
@now_option("Record the resume at this moment")
def series_resume(app: AppContext, series_id: str, at: datetime | None) -> None:
    """Let a paused series go on: its queued emails go at their planned times, an overdue one
    at the next run; each lead still gets one step per run and the next waits its delay, so
    a long pause never sends a burst."""
    campaign_id = chosen_series(app.load().schedule, series_id)
    store = open_store(app)
    done = store.queue.resume_series(campaign_id, at or utc_now(), operator())
    if not done.changed:
        console.print(
            f"series {campaign_id} is not paused: nothing changed", markup=False, highlight=False
        )
        return
    assert done.since is not None
    console.print(
        f"resumed series {campaign_id} (paused since {stamp(done.since)}): {done.queued} "
        "queued email(s) go at their time, an overdue one at the next run",
        markup=False,
        highlight=False,
    )
