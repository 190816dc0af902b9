"""A subject test from the YAML to the report, through the real parts: 80 leads, the real
engine sending over SMTP to the catcher, people (and one link scanner) clicking the links of
the emails they received through the real web app, one booking; then `run.py report`,
`report --json` and `report --html` in a subprocess show both variants with their numbers and
the z-test's verdict."""

from __future__ import annotations

import json
from collections import Counter
from collections.abc import Iterator
from datetime import timedelta
from email.message import EmailMessage
from pathlib import Path
from typing import Any

import lxml.html
import pytest
from statsmodels.stats.proportion import proportions_ztest

from campaign.authoring.subject_test import percent
from harness.mail import BASE_URL, link_named
from harness.web import START, Web, open_web

pytestmark = pytest.mark.slow

SUBJECTS = ["How acupuncture eases back pain", "Why needles ease back pain"]
LEADS = 80
ZONE = "America/Chicago"  # START is 10:00 there on a Monday: the send window is open
BROWSER = "Mozilla/5.0 (X11; Linux x86_64; rv:125.0) Gecko/20100101 Firefox/125.0"
ABOUT = '<p><a href="https://clinic.example.com/about">About the clinic</a></p>\n'


def subject_test(data: dict[str, Any]) -> None:
    data["steps"][0]["subject"] = list(SUBJECTS)


@pytest.fixture
def web(tmp_path: Path) -> Iterator[Web]:
    with open_web(tmp_path, change=subject_test) as web:
        # A second tracked link in step 1, so leads can click without booking.
        template = web.campaign.schedule_path.parent / "templates/emails/mechanisms.html.j2"
        source = template.read_text(encoding="utf-8")
        template.write_text(source.replace('<p class="note">', ABOUT + '<p class="note">', 1))
        yield web


def tracked(message: EmailMessage, label: str) -> str:
    link = link_named(message, label)
    assert link.startswith(f"{BASE_URL}/c/"), link
    return link


def click(web: Web, link: str, minutes: int, method: str = "GET") -> None:
    """Open `link` `minutes` after the send: long past the 10 s in which a click is taken
    for a link scanner's, and each lead's click minutes apart from the others'."""
    web.campaign.clock.now = START + timedelta(minutes=minutes)
    answer = web.client.request(
        method, link, headers={"User-Agent": BROWSER}, follow_redirects=False
    )
    assert answer.status_code == 302, answer.text


def test_report_shows_each_variant_and_the_verdict(web: Web, tmp_path: Path) -> None:
    campaign = web.campaign
    emails = [f"lead{n:02d}@example.com" for n in range(LEADS)]
    campaign.enroll(START, *((email, f"Lead{n}", ZONE) for n, email in enumerate(emails)))
    messages = web.send()
    assert len(messages) == LEADS

    # Which subject each lead got, read from the mail that arrived, is its delivery's variant.
    by_email = {caught.recipients[0]: caught.message for caught in campaign.catcher.messages}
    got = {email: SUBJECTS.index(str(m["Subject"])) for email, m in by_email.items()}
    assert len(got) == LEADS
    rows = campaign.deliveries("sent")
    assert {row["email"]: row["variant"] for row in rows} == got
    split = Counter(got.values())
    assert split[0] + split[1] == LEADS
    assert 0.35 * LEADS <= split[0] <= 0.65 * LEADS, split

    a_leads = sorted(email for email, v in got.items() if v == 0)
    b_leads = sorted(email for email, v in got.items() if v == 1)
    minute = 60
    # B: nine people open "About the clinic", a tenth books; A: two people click.
    for email in b_leads[:9] + a_leads[:2]:
        click(web, tracked(by_email[email], "About the clinic"), minute)
        minute += 1
    booker = b_leads[9]
    click(web, tracked(by_email[booker], "Book a session"), minute)
    assert web.status(booker) == "converted"
    # A link scanner's HEAD on an A lead's email is no person's click.
    click(web, tracked(by_email[a_leads[5]], "About the clinic"), minute + 1, method="HEAD")
    sources = Counter(row["source"] for row in web.rows("SELECT source FROM clicks"))
    assert sources == {"person": 12, "scanner": 1}

    sent_a, sent_b = split[0], split[1]
    _z, p_clicks = proportions_ztest([10, 2], [sent_b, sent_a])
    _z, p_bookings = proportions_ztest([1, 0], [sent_b, sent_a])

    # `report --json`: a `variants` list per step.
    result = campaign.cli("report", "--json")
    steps = {row["step"]: row for row in json.loads(result.stdout)["steps"]}
    a, b = steps["mechanisms"]["variants"]
    assert steps["pain-types"]["variants"] == []
    assert (a["variant"], a["subject"], a["sent"], a["clicked"], a["booked"]) == (
        "A",
        SUBJECTS[0],
        sent_a,
        2,
        0,
    )
    assert (b["variant"], b["subject"], b["sent"], b["clicked"], b["booked"]) == (
        "B",
        SUBJECTS[1],
        sent_b,
        10,
        1,
    )
    assert a["click_rate"] == pytest.approx(2 / sent_a)
    assert b["booking_rate"] == pytest.approx(1 / sent_b)
    assert a["clicks_vs_a"] is None and a["bookings_vs_a"] is None
    clicks_verdict = b["clicks_vs_a"]
    assert clicks_verdict["p_value"] == pytest.approx(float(p_clicks))
    assert p_clicks < 0.05 and clicks_verdict["significant"] is True
    rates = f"({percent(10 / sent_b)} vs {percent(2 / sent_a)})"
    assert clicks_verdict["verdict"].startswith(
        f"B ahead of A on clicks {rates}, significant at 95 % (p = 0.0"
    )
    bookings_verdict = b["bookings_vs_a"]
    assert bookings_verdict["p_value"] == pytest.approx(float(p_bookings))
    assert bookings_verdict["verdict"].startswith(
        f"B ahead of A on bookings ({percent(1 / sent_b)} vs 0.0 %), not yet significant at 95 %"
    )

    # The terminal: the funnel as before, then the subject test in a table of its own.
    page = tmp_path / "report.html"
    table = campaign.cli("report", "--html", str(page)).stdout
    lines = table.splitlines()
    heading = next(i for i, line in enumerate(lines) if "Subject test, step 1 (mechanisms)" in line)
    assert any("came back by mail or webhook" in line for line in lines[:heading]), "funnel first"
    below = "\n".join(lines[heading:])
    for name, subject, sent, clicked, booked in (
        ("A", SUBJECTS[0], sent_a, 2, 0),
        ("B", SUBJECTS[1], sent_b, 10, 1),
    ):
        row = next(line for line in lines[heading:] if subject in line)
        cells = [cell.strip() for cell in row.split("│")[1:-1]]
        assert cells == [
            name,
            subject,
            str(sent),
            str(clicked),
            percent(clicked / sent),
            str(booked),
            percent(booked / sent),
        ]
    assert clicks_verdict["verdict"] in below
    assert bookings_verdict["verdict"] in below
    funnel_header = next(line for line in lines[:heading] if "click rate" in line)
    assert "variant" not in funnel_header, "the funnel keeps its columns"
    funnel_width = max(len(line) for line in lines[:heading])
    assert max(len(line) for line in lines[heading:]) <= funnel_width

    # The HTML page: the same numbers and verdicts.
    doc = lxml.html.document_fromstring(page.read_text(encoding="utf-8"))
    html_rows = {
        row.get("data-variant"): {
            td.get("data-metric"): int(td.text_content()) for td in row.xpath("td[@data-metric]")
        }
        for row in doc.xpath("//table[@id='variants-mechanisms']/tbody/tr")
    }
    assert html_rows == {
        "A": {"sent": sent_a, "clicked": 2, "booked": 0},
        "B": {"sent": sent_b, "clicked": 10, "booked": 1},
    }
    verdicts = [
        (li.text_content(), li.get("class")) for li in doc.xpath("//ul[@class='verdicts']/li")
    ]
    assert verdicts == [
        (clicks_verdict["verdict"], "significant"),
        (bookings_verdict["verdict"], ""),
    ]
