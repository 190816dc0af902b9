"""Copies of the shipped schedule for tests to edit: every test works on its own copy, never
on the repository's `schedules.yaml`, so tests can break it without affecting each other."""

from __future__ import annotations

import shutil
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import yaml

REPO = Path(__file__).resolve().parents[2]
SHIPPED = REPO / "schedules.yaml"


def copy_shipped(folder: Path) -> Path:
    """`schedules.yaml` and `templates/` copied into `folder`; the copy's schedule path."""
    shutil.copy(SHIPPED, folder / "schedules.yaml")
    shutil.copytree(REPO / "templates", folder / "templates")
    return folder / "schedules.yaml"


@dataclass
class ScheduleCopy:
    """A copy of the shipped schedule and templates, edited as text, ready to break."""

    path: Path

    @property
    def templates(self) -> Path:
        return self.path.parent / "templates" / "emails"

    def text(self) -> str:
        return self.path.read_text(encoding="utf-8")

    def edit(self, old: str, new: str) -> None:
        """Replace the first `old` with `new`; `old` must be in the file."""
        text = self.text()
        assert old in text, f"{old!r} is not in {self.path.name}; has the shipped file changed?"
        self.path.write_text(text.replace(old, new, 1), encoding="utf-8")

    def line_of(self, snippet: str) -> int:
        """The 1-based line on which `snippet` first starts in the current file."""
        text = self.text()
        assert snippet in text, f"{snippet!r} is not in {self.path.name}"
        return text[: text.index(snippet)].count("\n") + 1


def edit_schedule(path: Path, change: Callable[[dict[str, Any]], None]) -> None:
    """Rewrite a schedule copy through YAML, so edits do not depend on the file's exact text."""
    data = yaml.safe_load(path.read_text(encoding="utf-8"))
    change(data)
    path.write_text(yaml.safe_dump(data, sort_keys=False, allow_unicode=True), encoding="utf-8")


def set_yaml_block(path: Path, key: str, body: str) -> None:
    """Replace a top-level `key:` block of the schedule (up to the next blank line), keeping
    the rest of the file exactly as written, comments included."""
    text = path.read_text(encoding="utf-8")
    start = text.index(f"\n{key}:") + 1
    end = text.index("\n\n", start)
    path.write_text(f"{text[:start]}{key}:\n{body.rstrip()}{text[end:]}", encoding="utf-8")


def unthrottled(data: dict[str, Any]) -> None:
    """Rate limits high enough that hundreds of test messages go out in well under a second."""
    data["rate_limit"] = {"per_second": 10_000, "per_hour": 10_000_000, "per_connection": 1000}


def any_hour(data: dict[str, Any]) -> None:
    """A send window that is always open, for tests that must run on the real clock."""
    data["send_window"] = {
        "days": ["mon", "tue", "wed", "thu", "fri", "sat", "sun"],
        "start": "00:00",
        "end": "24:00",
    }
