"""The compiled series a long-running process keeps, read again only when its files change.

Compiling (parse `schedules.yaml`, render every step through premailer) takes a tenth of a
second, and even telling whether anything changed by reading and hashing every file costs
more than answering a click. So the files are *stat*ed: size, modification time and inode
of `schedules.yaml` and of every file under the templates folder. Only when one of those
changes are the files read, and compiled again only when their contents changed.

A file changed within the last two seconds is not trusted to show its next change in its
stat (a second edit in the same clock tick, with the same size, would look the same), so
its contents are compared until it settles, as git does with "racily clean" files.

Two callers want two things:

- the sender wants the series *as the files are now* (`current`): a broken edit raises, and
  nothing is sent until it is fixed;
- request handlers want an answer at once (`last_good`): they get the last version that
  compiled, never wait for a compile (a change is compiled on a background thread), and a
  broken edit is logged while they go on with the last good version.
"""

from __future__ import annotations

import logging
import stat
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

from campaign.config.schedule import LoadedSchedule, ScheduleError, load_schedule
from campaign.rendering.renderer import (
    Renderer,
    TemplateProblem,
    TemplateProblems,
    series_version,
)

log = logging.getLogger("campaign.rendering.series")

RACY_SECONDS = 2.0
Stamp = tuple[tuple[str, int, int, int], ...]  # (path, mtime ns, size, inode) per file


def files_stamp(schedule_path: Path, templates_dir: Path | None) -> Stamp:
    """What `stat` says about the schedule file and every template; a missing or unreadable
    file is a stamp of its own, so its return is seen too."""
    paths = [schedule_path]
    if templates_dir is not None and templates_dir.is_dir():
        paths += sorted(templates_dir.rglob("*"))
    entries = []
    for path in paths:
        try:
            info = path.stat()
        except OSError:
            entries.append((str(path), -1, -1, -1))
            continue
        if stat.S_ISREG(info.st_mode):
            entries.append((str(path), info.st_mtime_ns, info.st_size, info.st_ino))
    return tuple(entries)


def _settled(stamp: Stamp, taken_at: float) -> bool:
    """Whether every file was last changed long enough before `taken_at` for its stat to
    show its next change."""
    newest = max((mtime for _, mtime, _, _ in stamp), default=0)
    return newest / 1e9 < taken_at - RACY_SECONDS


def _again(problem: ScheduleError | TemplateProblem) -> ScheduleError | TemplateProblem:
    """A fresh copy of a problem already found, to raise again without reading the files."""
    if isinstance(problem, ScheduleError):
        return ScheduleError(problem.issues)
    return TemplateProblems(problem.each())


@dataclass(frozen=True)
class _Seen:
    """What the files held when last read: a compiled series or the problem with them."""

    stamp: Stamp
    settled: bool
    templates_dir: Path | None
    renderer: Renderer | None = None
    problem: ScheduleError | TemplateProblem | None = None


class CompiledSeries:
    """One schedule file and its templates, compiled once per change (see the module)."""

    def __init__(
        self,
        schedule_path: Path,
        build: Callable[[LoadedSchedule], Renderer],
        wall_clock: Callable[[], float] = time.time,  # compared with the files' mtimes
    ):
        self.schedule_path = schedule_path
        self._build = build
        self._wall_clock = wall_clock
        self._compile_lock = threading.Lock()  # one reader and compiler at a time
        self._flag_lock = threading.Lock()
        self._refreshing = False
        self._seen: _Seen | None = None
        self._good: Renderer | None = None
        self.reads = 0  # how often the files were read, for tests and curious operators

    def current(self) -> Renderer:
        """The series as the files are now; raises `ScheduleError` or `TemplateProblem` if
        they are broken (the same problem again, without reading, until a file changes)."""
        with self._compile_lock:
            seen = self._seen
            if seen is None or not self._unchanged(seen):
                seen = self._read()
            if seen.problem is not None:
                raise _again(seen.problem)
            assert seen.renderer is not None
            return seen.renderer

    def last_good(self) -> Renderer:
        """The last version that compiled, at once; a change is compiled in the background.
        Only when nothing has ever compiled does the caller wait (and get the problem)."""
        good = self._good
        if good is None:
            return self.current()
        seen = self._seen
        if seen is None or not self._unchanged(seen):
            self._refresh_in_background()
        return good

    def _unchanged(self, seen: _Seen) -> bool:
        return seen.settled and files_stamp(self.schedule_path, seen.templates_dir) == seen.stamp

    def _read(self) -> _Seen:
        """Read and compile the files (the compile lock is held). The stamp is taken first,
        so an edit made while reading shows as a change next time."""
        previous = self._seen
        templates_dir = previous.templates_dir if previous is not None else None
        taken_at = self._wall_clock()
        stamp = files_stamp(self.schedule_path, templates_dir)
        self.reads += 1
        try:
            loaded = load_schedule(self.schedule_path)
            if loaded.templates_dir != templates_dir:  # first read, or the folder moved
                templates_dir = loaded.templates_dir
                stamp = files_stamp(self.schedule_path, templates_dir)
            good = self._good
            if good is not None and good.version == series_version(loaded):
                renderer = good  # touched, not changed: keep what is compiled
            else:
                renderer = self._build(loaded)
        except (ScheduleError, TemplateProblem) as problem:
            self._seen = _Seen(stamp, _settled(stamp, taken_at), templates_dir, problem=problem)
            return self._seen
        self._good = renderer
        self._seen = _Seen(stamp, _settled(stamp, taken_at), templates_dir, renderer=renderer)
        return self._seen

    def _refresh_in_background(self) -> None:
        with self._flag_lock:
            if self._refreshing:
                return
            self._refreshing = True
        threading.Thread(target=self._refresh, name="series-refresh", daemon=True).start()

    def _refresh(self) -> None:
        try:
            self.current()
        except (ScheduleError, TemplateProblem) as exc:
            log.error("the schedule or a template is broken; still using the last good:\n%s", exc)
        except Exception:  # a refresh must never take the requests down with it
            log.exception("refreshing the compiled series failed")
        finally:
            with self._flag_lock:
                self._refreshing = False
