"""Shared fixtures: the repository root and an editable copy of the shipped schedule."""

from __future__ import annotations

import shutil
from dataclasses import dataclass
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[1]


@dataclass
class ScheduleCopy:
    """`schedules.yaml` and `templates/` copied into a temporary folder, ready to break."""

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


@pytest.fixture
def schedule_copy(tmp_path: Path) -> ScheduleCopy:
    shutil.copy(REPO / "schedules.yaml", tmp_path / "schedules.yaml")
    shutil.copytree(REPO / "templates", tmp_path / "templates")
    return ScheduleCopy(tmp_path / "schedules.yaml")


# The sending tests load tests/sending_support.py as a plugin and import its helpers; have
# pytest rewrite its asserts before the first import, so failures there explain themselves.
pytest.register_assert_rewrite("sending_support")


@pytest.fixture(scope="session")
def pg_cluster():
    """A throwaway PostgreSQL server (tests/pg_support.py) shared by the session's tests."""
    from pg_support import PgCluster, find_bindir

    bindir = find_bindir()
    if bindir is None:
        pytest.skip("no PostgreSQL server binaries (initdb, pg_ctl); .ci/run installs them")
    cluster = PgCluster.start(bindir)
    try:
        yield cluster
    finally:
        cluster.stop()
