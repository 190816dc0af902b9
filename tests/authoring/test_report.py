"""`run.py report [--html FILE]`: the funnel per step, from a store whose history is known.

The store is made through the real engine (emails sent over real SMTP, one hard bounce from
the SMTP server) and the store's own calls for clicks, conversions and unsubscribes, so the
expected numbers below can be counted by hand from `known_store`.
"""

from __future__ import annotations

from pathlib import Path

import lxml.html
import pytest

from harness.cli import invoke_on
from harness.clock import ManualClock, utc
from harness.rig import Rig
from harness.schedule import copy_shipped

CAMPAIGN = "acupuncture-back-pain"
NY = "America/New_York"
# step: sent, clicked, unsubscribed, converted, failed
EXPECTED = {
    "mechanisms": (6, 2, 1, 1, 0),
    "pain-types": (4, 1, 1, 1, 1),
    "process": (2, 1, 0, 0, 0),
    "faqs": (0, 0, 0, 0, 0),
    "booking": (0, 0, 0, 0, 0),
    "(before the first email)": (0, 0, 1, 0, 0),
}
METRICS = ("sent", "clicked", "unsubscribed", "converted", "failed")


@pytest.fixture(scope="module")
def schedule_path(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """One copy for the module: these tests only read the schedule and the store."""
    return copy_shipped(tmp_path_factory.mktemp("report"))


@pytest.fixture(scope="module")
def known_store(schedule_path: Path) -> Path:
    db = schedule_path.parent / "campaign.db"
    rig = Rig(schedule_path, db, ManualClock(utc(2026, 3, 2, 6, 0)))
    store = rig.store
    ids = {
        name: rig.add(f"{name}@example.com", name=name.title(), zone=NY)[0]
        for name in ("ann", "bob", "cat", "dan", "eve", "fay")
    }
    [gus] = rig.add("gus@example.com", name="Gus", zone="America/Los_Angeles")

    def click(name: str, step: str, *at: int) -> None:
        store.leads.record_click(ids[name], CAMPAIGN, step, "https://book.example.com", utc(*at))

    def convert(name: str, *at: int) -> None:
        step = store.leads.attributed_step(ids[name], CAMPAIGN)
        store.leads.record_conversion(ids[name], CAMPAIGN, step, "booking", utc(*at), stop=True)

    def unsubscribe(lead_id: int, *at: int) -> None:
        store.leads.set_lead_status(lead_id, "unsubscribed", "one click", utc(*at))

    assert rig.deliver(utc(2026, 3, 2, 14, 0)) == 6  # mechanisms to the six in New York
    unsubscribe(gus, 2026, 3, 2, 15, 0)  # before his first email (due 09:00 PST)
    click("ann", "mechanisms", 2026, 3, 2, 15, 0)
    click("ann", "mechanisms", 2026, 3, 2, 15, 5)  # a second click by the same lead
    click("bob", "mechanisms", 2026, 3, 2, 16, 0)
    unsubscribe(ids["cat"], 2026, 3, 3, 12, 0)  # after mechanisms
    # pain-types: Fay's mailbox does not exist (550): failed, and she bounces.
    assert rig.deliver(utc(2026, 3, 9, 14, 0), refuse="fay@example.com") == 4
    click("ann", "pain-types", 2026, 3, 9, 15, 0)
    convert("ann", 2026, 3, 9, 15, 1)  # credited to pain-types, her last click
    unsubscribe(ids["dan"], 2026, 3, 10, 12, 0)  # after pain-types
    assert rig.deliver(utc(2026, 3, 16, 14, 0)) == 2  # process to Bob and Eve
    click("eve", "process", 2026, 3, 16, 15, 0)
    convert("bob", 2026, 3, 17, 12, 0)  # credited to mechanisms, his last click
    rig.close()
    return db


def test_html_report_numbers_match_the_store(
    schedule_path: Path, known_store: Path, tmp_path: Path
) -> None:
    page_path = tmp_path / "report.html"
    result = invoke_on(schedule_path, known_store, "report", "--html", str(page_path))
    assert result.exit_code == 0, result.output
    page = page_path.read_text(encoding="utf-8")
    doc = lxml.html.document_fromstring(page)
    table = {}
    for row in doc.xpath("//table[@id='steps']/tbody/tr"):
        cells = {
            td.get("data-metric"): int(td.text_content()) for td in row.xpath("td[@data-metric]")
        }
        table[row.get("data-step")] = tuple(cells[m] for m in METRICS)
    assert table == EXPECTED
    totals = {m: int(doc.get_element_by_id(f"total-{m}").text_content()) for m in METRICS}
    assert totals == {"sent": 12, "clicked": 4, "unsubscribed": 3, "converted": 2, "failed": 1}
    assert doc.get_element_by_id("total-enrolled").text_content() == "7"
    # The funnel: enrolled, each step's sent, converted — bars narrowing with the numbers.
    rects = doc.xpath("//svg[@id='funnel']//rect")
    labels = [r.findtext("title") for r in rects]
    assert labels == [
        "Enrolled: 7",
        "1. mechanisms: 6",
        "2. pain-types: 4",
        "3. process: 2",
        "4. faqs: 0",
        "5. booking: 0",
        "Converted: 2",
    ]
    widths = [float(r.get("width")) for r in rects]
    assert widths[0] > widths[1] > widths[2] > widths[3] > widths[4]
    assert widths[1] / widths[0] == pytest.approx(6 / 7, rel=0.01)


def test_html_report_is_self_contained(
    schedule_path: Path, known_store: Path, tmp_path: Path
) -> None:
    page_path = tmp_path / "report.html"
    assert invoke_on(schedule_path, known_store, "report", "--html", str(page_path)).exit_code == 0
    page = page_path.read_text(encoding="utf-8")
    doc = lxml.html.document_fromstring(page)
    assert doc.xpath("//svg[@id='funnel']"), "the funnel chart is inline SVG"
    assert not doc.xpath("//script | //link | //img | //iframe | //object | //embed")
    assert not doc.xpath("//*[@src]")
    lowered = page.lower()
    for external in ("http://", "https://", "url(", "@import", "//cdn"):
        assert external not in lowered, external


def test_terminal_report(schedule_path: Path, known_store: Path) -> None:
    result = invoke_on(schedule_path, known_store, "report")
    assert result.exit_code == 0, result.output
    rows = {}
    for line in result.stdout.splitlines():
        cells = [cell.strip() for cell in line.split("│")[1:-1]]
        if len(cells) >= 8 and cells[1] in EXPECTED:
            numbers = [int(c) for c in cells[2:8]]  # with `scanned` third: none in this store
            assert numbers.pop(2) == 0, line
            rows[cells[1]] = tuple(numbers)
    assert rows == EXPECTED
    assert "7 leads enrolled" in result.stdout
    assert "█" in result.stdout  # the bars


def test_report_needs_a_database(schedule_path: Path, tmp_path: Path) -> None:
    missing = tmp_path / "none.db"
    result = invoke_on(schedule_path, missing, "report")
    assert result.exit_code == 2
    assert "no database" in result.stderr
    assert not missing.exists()
