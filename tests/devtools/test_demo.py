"""`run.py demo`: the whole series replayed over real SMTP to a local catcher, each email
written out as a file."""

from __future__ import annotations

from pathlib import Path

import pytest

from harness.cli import run_py

pytestmark = pytest.mark.slow  # the whole series, in a subprocess


def test_demo_replays_the_series_over_smtp(tmp_path: Path) -> None:
    result = run_py("demo", "--out", str(tmp_path / "demo"))
    assert result.returncode == 0, f"{result.stdout}\n{result.stderr}"
    assert "25 emails delivered" in result.stdout
    emails = sorted((tmp_path / "demo" / "emails").glob("*.eml"))
    assert len(emails) == 25 and all(path.stat().st_size > 1000 for path in emails)
    assert emails[0].name.startswith("01-") and emails[-1].name.startswith("25-")
