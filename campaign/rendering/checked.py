"""A series loaded and compiled for a command, with every problem found in one pass.

A marketer who fixes one error only to meet the next on the following run loses a cycle for
each. So when the schedule file has errors but its templates can still be found, they are
compiled against a stand-in schedule (each broken setting replaced by a harmless valid
value, `ScheduleError.loaded_stand_in`) and their problems are listed with the schedule's.
Nothing compiled from a stand-in is ever sent: the error is raised either way.
"""

from __future__ import annotations

from pathlib import Path

from campaign.config.schedule import ScheduleError, ScheduleIssue, load_schedule
from campaign.rendering.renderer import Renderer, TemplateProblem

NOT_CHECKED = "templates were not checked: fix the problems above first, then check again"


def as_issue(problem: TemplateProblem) -> ScheduleIssue:
    """A template problem in the schedule's list, its file named as the marketer opens it."""
    path = f"{problem.folder}/{problem.template}" if problem.folder else problem.template
    return ScheduleIssue(path, problem.line, "", problem.message, problem.where)


def _template_issues(error: ScheduleError) -> list[ScheduleIssue]:
    """The templates' problems when the schedule has its own; a note when they could not be
    checked because the schedule could not be read far enough."""
    stand_in = error.loaded_stand_in
    if stand_in is None:
        file = error.issues[0].file if error.issues else ""
        return [ScheduleIssue(file, None, "", NOT_CHECKED)]
    try:
        Renderer(stand_in).compile_all()
    except TemplateProblem as problems:
        return [as_issue(problem) for problem in problems.each()]
    return []


def compiled_series(path: Path) -> Renderer:
    """The schedule at `path` with every step compiled; `ScheduleError` lists every problem
    of the file and its templates, `TemplateProblems` every template problem of a valid
    schedule."""
    try:
        loaded = load_schedule(path)
    except ScheduleError as error:
        raise ScheduleError([*error.issues, *_template_issues(error)]) from error
    renderer = Renderer(loaded)
    renderer.compile_all()
    return renderer
