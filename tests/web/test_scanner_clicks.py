"""Clicks from link scanners are not people: over real HTTP, with the links of emails really
sent over SMTP, a HEAD, a prefetch, a scanner's user agent, a click seconds after delivery
and a burst over every link of an email are recorded as a scanner's, redirected, and convert
no one; the series goes on; a person's click later converts; `report` counts both apart.
The classifier itself is checked on its own with Hypothesis."""

from __future__ import annotations

import json
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from email.message import EmailMessage
from pathlib import Path

import pytest
from hypothesis import given
from hypothesis import strategies as st

from campaign.model import ClickSource, EmailClicks
from campaign.web.scanners import (
    BURST_WINDOW,
    SCANNER_AGENTS,
    SCANNER_DELAY,
    ClickRequest,
    classify,
)
from harness.cli import invoke
from harness.mail import BASE_URL, anchors, link_named, step_of
from harness.web import START, WEEK, Web, open_web

BROWSER = (
    "Mozilla/5.0 (Windows NT 10.0; Win64; x64) AppleWebKit/537.36 (KHTML, like Gecko) "
    "Chrome/124.0.0.0 Safari/537.36"
)
EXTRA_LINKS = (
    '<p><a href="https://clinic.example.com/about">About the clinic</a> · '
    '<a href="https://clinic.example.com/faq">Questions</a></p>\n'
)


def more_links(web: Web) -> None:
    """Step 1 with three tracked links (two pages and the booking), as real emails have."""
    template = web.campaign.schedule_path.parent / "templates/emails/mechanisms.html.j2"
    source = template.read_text(encoding="utf-8")
    template.write_text(source.replace('<p class="note">', EXTRA_LINKS + '<p class="note">', 1))


@pytest.fixture
def web(tmp_path: Path) -> Iterator[Web]:
    with open_web(tmp_path) as web:
        more_links(web)
        yield web


def tracked(message: EmailMessage) -> list[str]:
    return [href for _text, href in anchors(message) if href.startswith(f"{BASE_URL}/c/")]


def open_link(
    web: Web, link: str, at: datetime, method: str = "GET", **headers: str
) -> tuple[int, str]:
    web.campaign.clock.now = at
    answer = web.client.request(
        method, link, headers={"User-Agent": BROWSER, **headers}, follow_redirects=False
    )
    return answer.status_code, answer.headers.get("location", "")


def clicks(web: Web) -> list[tuple[str, str, str | None]]:
    rows = web.rows("SELECT step_id, source, source_reason FROM clicks ORDER BY id")
    return [(row["step_id"], row["source"], row["source_reason"]) for row in rows]


def test_scanner_clicks_convert_no_one_and_a_persons_click_does(web: Web) -> None:
    assert web.signup("ann@example.com", first_name="Ann").status_code == 201
    (message,) = web.send()  # sent at START
    booking = link_named(message, "Book a session")
    links = tracked(message)
    assert len(links) == 3 and booking in links
    target = open_link(web, booking, START + timedelta(seconds=2))[1]
    assert target.startswith("https://"), "a scanner is still sent to the real page"

    hour = START + timedelta(hours=1)
    probes = [
        (booking, hour, "HEAD", {}),
        (booking, hour + timedelta(minutes=1), "GET", {"Sec-Purpose": "prefetch"}),
        (booking, hour + timedelta(minutes=2), "GET", {"Purpose": "prefetch"}),
        (booking, hour + timedelta(minutes=3), "GET", {"User-Agent": "Mimecast URL Protect"}),
    ]
    for link, at, method, headers in probes:
        assert open_link(web, link, at, method, **headers) == (302, target), headers
    burst = START + timedelta(hours=2)
    others = [link for link in links if link != booking]
    for number, link in enumerate([*others, booking]):  # every link within a second
        assert open_link(web, link, burst + number * BURST_WINDOW / 3)[0] == 302

    recorded = clicks(web)
    assert [source for _step, source, _why in recorded] == ["scanner"] * 8, recorded
    reasons = [why or "" for _step, _source, why in recorded]
    assert "after the email was sent" in reasons[0]
    assert reasons[1].startswith("HEAD request")
    assert "prefetch" in reasons[2] and "prefetch" in reasons[3]
    assert "Mimecast" in reasons[4]
    assert reasons[5:] == [
        "2 links of one email opened within 1 s",  # turned a scanner's by the second click
        "2 links of one email opened within 1 s",
        "3 links of one email opened within 1 s",
    ]
    assert web.status("ann@example.com") == "active"
    assert web.rows("SELECT * FROM conversions") == []

    # The series goes on: step 2 arrives a week later, and a person books from it.
    (second,) = web.send(after=WEEK)
    assert step_of(second) == "pain-types"
    person_at = web.campaign.clock.now + timedelta(minutes=1)
    assert open_link(web, link_named(second, "Book a session"), person_at)[0] == 302
    assert clicks(web)[-1] == ("pain-types", "person", None)
    assert web.status("ann@example.com") == "converted"
    conversions = web.rows("SELECT step_id, source FROM conversions")
    assert [tuple(row) for row in conversions] == [("pain-types", "click")]
    assert web.send(after=WEEK) == [], "booked: the series stopped"

    db = f"sqlite:///{web.campaign.db_path}"
    result = invoke("--schedule", str(web.campaign.schedule_path), "--db", db, "report", "--json")
    assert result.exit_code == 0, result.output
    steps = {row["step"]: row for row in json.loads(result.stdout)["steps"]}
    metrics = ("sent", "clicked", "scanned", "converted")
    assert [steps["mechanisms"][m] for m in metrics] == [1, 0, 1, 0]
    assert [steps["pain-types"][m] for m in metrics] == [1, 1, 0, 1]
    table = invoke("--schedule", str(web.campaign.schedule_path), "--db", db, "report")
    assert table.exit_code == 0, table.output
    assert "scanned" in table.stdout and "clicked" in table.stdout


# -- the classifier alone ------------------------------------------------------------------

SENT = datetime(2026, 3, 2, 16, 0, tzinfo=UTC)
URL = "https://book.example.com/"
browsers = st.sampled_from(
    [
        BROWSER,
        "Mozilla/5.0 (iPhone; CPU iPhone OS 17_4 like Mac OS X) AppleWebKit/605.1.15 "
        "(KHTML, like Gecko) Version/17.4 Mobile/15E148 Safari/604.1",
        "Mozilla/5.0 (X11; Linux x86_64; rv:125.0) Gecko/20100101 Firefox/125.0",
    ]
)
later = st.timedeltas(min_value=SCANNER_DELAY, max_value=timedelta(days=60))


@given(agent=browsers, after=later)
def test_a_browser_opening_one_link_after_the_delay_is_a_person(
    agent: str, after: timedelta
) -> None:
    request = ClickRequest("GET", {"user-agent": agent})
    verdict = classify(request, URL, SENT + after, EmailClicks(SENT))
    assert (verdict.source, verdict.burst) == (ClickSource.PERSON, False)


@given(
    agent=browsers,
    after=later,
    method=st.sampled_from(["HEAD", "OPTIONS", "head"]),
    scanner=st.sampled_from([fragment for fragment, _who in SCANNER_AGENTS]),
    prefix=st.text(max_size=20),
)
def test_probes_and_scanner_agents_are_scanners_whenever_they_come(
    agent: str, after: timedelta, method: str, scanner: str, prefix: str
) -> None:
    now, email = SENT + after, EmailClicks(SENT)
    probe = classify(ClickRequest(method, {"user-agent": agent}), URL, now, email)
    assert probe.source is ClickSource.SCANNER
    named = ClickRequest("GET", {"user-agent": f"{prefix}{scanner.upper()} {agent}"})
    assert classify(named, URL, now, email).source is ClickSource.SCANNER


@given(agent=browsers, early=st.timedeltas(min_value=timedelta(0), max_value=SCANNER_DELAY))
def test_a_click_seconds_after_sending_is_a_scanner(agent: str, early: timedelta) -> None:
    now = SENT + early - timedelta(microseconds=1) if early else SENT
    verdict = classify(ClickRequest("GET", {"user-agent": agent}), URL, now, EmailClicks(SENT))
    assert verdict.source is ClickSource.SCANNER


@given(
    agent=browsers,
    after=later,
    gap=st.timedeltas(min_value=timedelta(0), max_value=BURST_WINDOW),
    same=st.booleans(),
)
def test_two_links_within_the_window_are_a_burst_one_link_twice_is_not(
    agent: str, after: timedelta, gap: timedelta, same: bool
) -> None:
    now = SENT + after + gap
    other = URL if same else "https://clinic.example.com/about"
    email = EmailClicks(SENT, ((other, SENT + after),))
    verdict = classify(ClickRequest("GET", {"user-agent": agent}), URL, now, email)
    assert verdict.burst is (not same)
    assert verdict.source is (ClickSource.PERSON if same else ClickSource.SCANNER)
