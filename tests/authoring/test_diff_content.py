"""`schedule diff` shows content changes beside timing: subjects, preheaders and the text of
every email whose words change, as a readable diff of what a lead will read."""

from __future__ import annotations

import shutil

from harness.cli import invoke_on, lines_of
from harness.schedule import ScheduleCopy

OLD_PREHEADER = "preheader: Fine needles, a mild tingling, and 20–30 minutes to relax."
NEW_PREHEADER = "preheader: What happens on the table, minute by minute."


def _new_version(schedule_copy: ScheduleCopy) -> ScheduleCopy:
    """A second schedule beside the first with its own copy of the templates."""
    folder = schedule_copy.path.parent
    shutil.copytree(folder / "templates", folder / "templates-new")
    new = ScheduleCopy(folder / "new.yaml")
    new.path.write_text(schedule_copy.text(), encoding="utf-8")
    new.edit("templates: templates/emails", "templates: templates-new/emails")
    return new


def test_diff_shows_preheaders_and_the_text_of_changed_emails(
    schedule_copy: ScheduleCopy,
) -> None:
    new = _new_version(schedule_copy)
    new.edit(OLD_PREHEADER, NEW_PREHEADER)
    process = new.path.parent / "templates-new" / "emails" / "process.html.j2"
    text = process.read_text(encoding="utf-8")
    process.write_text(
        text.replace("The process is virtually painless.", "Most people find it hardly hurts."),
        encoding="utf-8",
    )
    result = invoke_on(schedule_copy.path, None, "schedule", "diff", str(new.path), "--no-db")
    assert result.exit_code == 0, result.output
    lines = lines_of(result.stdout)
    assert (
        "  preheader process          'Fine needles, a mild tingling, and 20–30 minutes to "
        "relax.' -> 'What happens on the table, minute by minute.'"
    ) in lines, lines
    start = lines.index("text of step 3 (process), as a lead reads it:")
    hunk = lines[start + 1 :]
    assert any(line.startswith("  - ") and "virtually painless" in line for line in hunk)
    assert any(line.startswith("  + ") and "hardly hurts" in line for line in hunk)
    # The step before it teases it by its preheader: its text changes too, and says so.
    assert "text of step 2 (pain-types), as a lead reads it:" in lines
    assert not any(line.startswith("text of step 1 ") for line in lines)
    assert not any(line.startswith("text of step 4 ") for line in lines)


def test_unchanged_text_is_not_listed(schedule_copy: ScheduleCopy) -> None:
    new = _new_version(schedule_copy)
    result = invoke_on(schedule_copy.path, None, "schedule", "diff", str(new.path), "--no-db")
    assert result.exit_code == 0, result.output
    assert "text of step" not in result.stdout
    assert "the series is the same" in result.stdout
