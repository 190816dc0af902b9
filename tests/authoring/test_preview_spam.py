"""`run.py preview` prints SpamAssassin's score of each email when SpamAssassin is installed,
counting only the rules the engine controls, and says how to get it when it is not."""

from __future__ import annotations

import re
from pathlib import Path

import pytest

from campaign.authoring import spamcheck
from harness.cli import lines_of, run_py

pytestmark = pytest.mark.slow  # `run.py preview` and spamassassin run in subprocesses

STEPS = ["mechanisms", "pain-types", "process", "faqs", "booking"]


@pytest.mark.slow
@pytest.mark.skipif(
    spamcheck.available() is None,
    reason="spamassassin not found (Debian: apt-get install spamassassin; .ci/run does)",
)
def test_preview_prints_each_emails_spam_score(tmp_path: Path) -> None:
    # SpamAssassin loads its rules for each email: seconds each, more on a busy machine.
    result = run_py("preview", "--out", str(tmp_path / "out"), expect=0, timeout=300)
    lines = lines_of(result.stdout)
    for step in STEPS:
        scored = [line for line in lines if re.match(rf"\s*{re.escape(step)}\s+spam score", line)]
        assert scored, f"no score for {step}:\n{result.stdout}"
        assert re.search(r"spam score 0\.0\b", scored[0]), scored[0]
        assert (tmp_path / "out" / f"{step}.eml").exists()


def test_preview_without_spamassassin_says_how_to_get_scores(tmp_path: Path) -> None:
    empty = tmp_path / "bin"
    empty.mkdir()
    result = run_py("preview", "--out", str(tmp_path / "out"), env={"PATH": str(empty)}, expect=0)
    assert not re.search(r"spam score -?\d", result.stdout), result.stdout
    assert "apt-get install spamassassin" in " ".join(result.stdout.split())


def test_no_spam_score_skips_it(tmp_path: Path) -> None:
    result = run_py("preview", "--out", str(tmp_path / "out"), "--no-spam-score", expect=0)
    assert "spam score" not in result.stdout, result.stdout
