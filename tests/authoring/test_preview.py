"""`run.py preview`: every step written as HTML, text and .eml, with an index in send order,
and no database touched."""

from __future__ import annotations

import email
import email.policy
from pathlib import Path

import lxml.html
import pytest

from campaign.config.schedule import load_schedule
from harness.cli import run_py
from harness.schedule import REPO

pytestmark = pytest.mark.slow  # `run.py preview` runs in a subprocess

STEPS = ["mechanisms", "pain-types", "process", "faqs", "booking"]


@pytest.fixture(scope="module")
def preview(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, Path, bool]:
    """Run the preview once for the module: (output folder, scratch folder, db existed before)."""
    scratch = tmp_path_factory.mktemp("preview")
    out = scratch / "out"
    repo_db = REPO / "campaign.db"
    db_before = repo_db.stat().st_mtime_ns if repo_db.exists() else None
    # If anything opened a database, it would be this file (or campaign.db in the cwd).
    probe = {"CAMPAIGN_DB": f"sqlite:///{scratch / 'probe.db'}"}
    run_py("preview", "--out", str(out), "--name", "Sam", "--no-spam-score", env=probe, expect=0)
    db_after = repo_db.stat().st_mtime_ns if repo_db.exists() else None
    return out, scratch, db_before == db_after


def test_writes_three_files_per_step_and_an_index(preview) -> None:
    out, _, _ = preview
    expected = {f"{step}.{ext}" for step in STEPS for ext in ("html", "txt", "eml")}
    expected.add("index.html")
    found = {p.name for p in out.iterdir()}
    assert found == expected, f"missing {expected - found}, unexpected {found - expected}"
    assert all((out / name).stat().st_size > 0 for name in expected)


def test_index_lists_subjects_in_send_order_with_days(preview) -> None:
    out, _, _ = preview
    schedule = load_schedule(REPO / "schedules.yaml").schedule
    doc = lxml.html.document_fromstring((out / "index.html").read_text(encoding="utf-8"))
    rows = [row for row in doc.iter("tr") if row.findall("td")]
    assert len(rows) == 5, lxml.html.tostring(doc)
    days = [int(row.findall("td")[0].text_content().strip()) for row in rows]
    subjects = [row.find(".//strong").text_content().strip() for row in rows]
    links = [row.findall("td")[3].xpath(".//a/@href") for row in rows]
    assert days == [0, 7, 14, 21, 28]
    assert subjects == [step.subject for step in schedule.steps]
    assert [ls[0] for ls in links] == [f"{step}.html" for step in STEPS]
    assert "Sam" in doc.text_content()


@pytest.mark.parametrize("step", STEPS)
def test_each_eml_is_multipart_alternative_addressed_to_sam(preview, step: str) -> None:
    out, _, _ = preview
    raw = (out / f"{step}.eml").read_bytes()
    message = email.message_from_bytes(raw, policy=email.policy.default)
    assert message.get_content_type() == "multipart/alternative"
    parts = list(message.iter_parts())
    assert [p.get_content_type() for p in parts] == ["text/plain", "text/html"]
    text = parts[0].get_content()
    assert "Hi Sam," in text, text[:200]
    assert "Sam" in parts[1].get_content()
    assert message["Subject"] and message["List-Unsubscribe"]
    assert str(message["To"]) == "Sam <alex@example.com>"
    # The .txt and .html files are the same parts as in the .eml.
    assert (out / f"{step}.txt").read_text(encoding="utf-8") == text.replace("\r\n", "\n")
    assert "Hi Sam," in (out / f"{step}.html").read_text(encoding="utf-8")


def test_no_database_was_created(preview) -> None:
    out, scratch, repo_db_untouched = preview
    assert repo_db_untouched, "preview created or changed campaign.db in the repository root"
    assert not (scratch / "probe.db").exists(), "preview opened the database from CAMPAIGN_DB"
    stray = [p for p in scratch.rglob("*") if p.suffix == ".db" or p.name.startswith("campaign.db")]
    assert not stray, stray
    assert not list(out.glob("*.db*"))
