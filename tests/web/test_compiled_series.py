"""The web service compiles the series off the request path, once per change of its files.

A click or an unsubscribe must answer at once whatever state the templates are in: while an
edit is broken (or would run for ever) the links keep working with the last good version,
and the fixed edit is picked up without a restart. While nothing changes, a click does not
read `schedules.yaml` or the templates again.
"""

from __future__ import annotations

import os
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from harness.clock import wait_for
from harness.mail import link_named, unsubscribe_url
from harness.web import ONE_CLICK, START, WEEK, Web, open_web

BOOKING_URL = "https://evergreen-acupuncture.example.com/book"
NEW_URL = "https://evergreen-acupuncture.example.com/visit"
BOOKING_LINK = '<a href="{{ links.booking }}">Book a session</a>'
BREAKAGES = {
    "syntax-error": "{% if %}",
    "endless-loops": (
        "{% for i in range(100000) %}{% for j in range(100000) %}{% endfor %}{% endfor %}"
    ),
}
PROMPT = 2.0  # seconds: a link answers well within this, whatever the templates hold


def age_files(folder: Path, seconds: float = 3600) -> None:
    """Date every file of the campaign's series an hour back, as files edited long ago are."""
    past = time.time() - seconds
    for path in [folder / "schedules.yaml", *(folder / "templates").rglob("*")]:
        if path.is_file():
            os.utime(path, (past, past))


def rewrite_keeping_stat(path: Path, text: str) -> None:
    """New contents of the same size with the old modification time: what `stat` tells
    cannot differ, so the file is only seen to change if it is read."""
    before = path.stat()
    data = text.encode()
    assert len(data) == before.st_size
    path.write_bytes(data)
    os.utime(path, ns=(before.st_atime_ns, before.st_mtime_ns))


@pytest.fixture
def web(tmp_path: Path) -> Iterator[Web]:
    with open_web(tmp_path) as opened:
        age_files(tmp_path)
        yield opened


def click(web: Web, link: str) -> tuple[int, str]:
    started = time.perf_counter()
    answer = web.client.get(link, follow_redirects=False)
    assert time.perf_counter() - started < PROMPT, "the click did not answer promptly"
    return answer.status_code, answer.headers.get("location", "").partition("?")[0]


def first_links(web: Web) -> tuple[str, str]:
    """Sign Ann up, send step 1; its booking link and its unsubscribe link."""
    assert web.signup("ann@example.com", first_name="Ann").status_code == 201
    (message,) = web.send()
    return link_named(message, "Book a session"), unsubscribe_url(message)


@pytest.mark.parametrize("breakage", list(BREAKAGES))
def test_links_answer_with_the_last_good_version_while_a_template_is_broken(
    web: Web, breakage: str
) -> None:
    booking, unsubscribe = first_links(web)
    template = web.campaign.schedule_path.parent / "templates" / "emails" / "mechanisms.html.j2"
    source = template.read_text()
    template.write_text(source.replace("<h2>", f"{BREAKAGES[breakage]}\n<h2>", 1))

    for _ in range(3):
        assert click(web, booking) == (302, BOOKING_URL)
        started = time.perf_counter()
        assert web.client.get(unsubscribe).status_code == 200
        assert time.perf_counter() - started < PROMPT
    report = web.campaign.send_due(START + WEEK)  # the sender, though, sends nothing
    assert report.sent == 0 and "mechanisms.html.j2" in (report.stopped or ""), report

    template.write_text(
        source.replace(BOOKING_LINK, BOOKING_LINK.replace("{{ links.booking }}", NEW_URL))
    )
    wait_for(lambda: click(web, booking) == (302, NEW_URL), 10, "the fixed template to be used")
    assert web.client.post(unsubscribe, data=ONE_CLICK).status_code == 200
    assert web.status("ann@example.com") == "unsubscribed"


def test_clicks_do_not_read_the_files_again_until_one_changes(web: Web) -> None:
    booking, _ = first_links(web)
    schedule = web.campaign.schedule_path
    template = schedule.parent / "templates" / "emails" / "mechanisms.html.j2"
    yaml_text, template_text = schedule.read_text(), template.read_text()
    # Broken in place, their stat unchanged: a click that read either would fail.
    rewrite_keeping_stat(schedule, "x" * len(yaml_text.encode()))
    rewrite_keeping_stat(template, "{% if %}".ljust(len(template_text.encode())))
    for _ in range(20):
        assert click(web, booking) == (302, BOOKING_URL)

    schedule.write_text(yaml_text)
    template.write_text(template_text.replace("{{ links.booking }}", NEW_URL, 1))
    wait_for(lambda: click(web, booking) == (302, NEW_URL), 10, "the edit to be picked up")
