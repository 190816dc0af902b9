"""The compiled series is read again only when a file's stat changes, yet never misses an edit
made in the same clock tick as the last read (a "racily clean" file is compared by content)."""

from __future__ import annotations

import os
import time
from pathlib import Path

import pytest

from campaign.config.schedule import LoadedSchedule, ScheduleError
from campaign.rendering.renderer import Renderer, TemplateProblem
from campaign.rendering.series import CompiledSeries
from harness.schedule import ScheduleCopy

BOOKING = "{{ links.booking }}"
SAME_LENGTH_URL = "https://ex.com/a/bc"


def build(loaded: LoadedSchedule) -> Renderer:
    renderer = Renderer(loaded)
    renderer.compile_all()
    return renderer


def age(folder: Path) -> None:
    past = time.time() - 3600
    for path in [folder / "schedules.yaml", *(folder / "templates").rglob("*")]:
        if path.is_file():
            os.utime(path, (past, past))


def same_stat_edit(path: Path, old: str, new: str) -> None:
    """`old` replaced by `new` of the same length, the modification time put back."""
    assert len(old) == len(new)
    before = path.stat()
    path.write_text(path.read_text().replace(old, new, 1))
    os.utime(path, ns=(before.st_atime_ns, before.st_mtime_ns))


def booking_urls(renderer: Renderer) -> tuple[str, ...]:
    return renderer.compile("mechanisms").urls


def test_files_are_read_once_while_nothing_changes(schedule_copy: ScheduleCopy) -> None:
    age(schedule_copy.path.parent)
    series = CompiledSeries(schedule_copy.path, build)
    first = series.current()
    for _ in range(50):
        assert series.current() is first and series.last_good() is first
    assert series.reads == 1

    os.utime(schedule_copy.templates / "faqs.html.j2")  # touched, not changed
    assert series.current() is first, "an unchanged series is not compiled again"
    assert series.reads == 2


def test_an_edit_in_the_same_tick_as_the_last_read_is_seen(schedule_copy: ScheduleCopy) -> None:
    series = CompiledSeries(schedule_copy.path, build)  # files written just now
    first = series.current()
    template = schedule_copy.templates / "mechanisms.html.j2"
    same_stat_edit(template, BOOKING, SAME_LENGTH_URL)
    assert booking_urls(series.current()) == (SAME_LENGTH_URL,)
    assert booking_urls(first) != booking_urls(series.current())


def test_a_broken_edit_raises_for_the_sender_without_rereading_and_keeps_the_last_good(
    schedule_copy: ScheduleCopy,
) -> None:
    age(schedule_copy.path.parent)
    series = CompiledSeries(schedule_copy.path, build)
    good = series.current()
    template = schedule_copy.templates / "mechanisms.html.j2"
    template.write_text("{% if %}\n" + template.read_text())
    age(schedule_copy.path.parent)
    for _ in range(3):
        with pytest.raises(TemplateProblem):
            series.current()
    assert series.reads == 2, "a known problem is raised again without reading the files"
    assert series.last_good() is good

    schedule_copy.path.rename(schedule_copy.path.with_suffix(".bak"))
    with pytest.raises(ScheduleError):
        series.current()
    assert series.last_good() is good
