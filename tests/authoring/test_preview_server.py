"""`run.py preview --serve`: the live preview, tested in a real headless browser.

Debian's chromium, driven by playwright (`.ci/run` installs chromium when it is missing),
loads the page from a real server on 127.0.0.1: every step's email renders in its 600 px and
375 px frames with no console error, screenshots of both are not blank, the lead picker
personalises the emails, an edit on disk shows up without restarting, and a broken
template shows its file and line on the page.
"""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path

import httpx
import pytest
from playwright.sync_api import Browser, Page

from campaign.authoring.preview_server import LivePreview, create_app
from campaign.config.schedule import load_schedule
from campaign.devtools.catcher import free_port
from campaign.store import Store
from harness.browser import NEEDS_CHROMIUM, launched_chromium, png_size
from harness.cli import start_run_py
from harness.clock import utc
from harness.engine import enroll
from harness.mail import signer
from harness.web import serving, wait_listening

WIDTHS = {"desktop": 600, "mobile": 375}
FRAME_HEIGHT = 760  # the page's CSS height for the email frames

pytestmark = NEEDS_CHROMIUM


@dataclass
class Watched:
    """Everything the browser complained about while a test ran."""

    console: list[str] = field(default_factory=list)
    failed: list[str] = field(default_factory=list)


@pytest.fixture(scope="module")
def browser() -> Iterator[Browser]:
    yield from launched_chromium()


@pytest.fixture
def store(tmp_path: Path, schedule_copy) -> Iterator[Store]:
    """A store with one real lead, so the picker offers it beside the samples."""
    opened = Store.open(f"sqlite:///{tmp_path / 'campaign.db'}")
    schedule = load_schedule(schedule_copy.path).schedule
    enroll(opened, schedule, utc(2026, 3, 2), "priya@example.com", "Priya", "Asia/Kolkata")
    yield opened
    opened.close()


@pytest.fixture
def base_url(schedule_copy, store: Store) -> Iterator[str]:
    with serving(create_app(LivePreview(schedule_copy.path, signer(), store))) as port:
        yield f"http://127.0.0.1:{port}"


@pytest.fixture
def page(browser: Browser, base_url: str) -> Iterator[tuple[Page, Watched]]:
    """A fresh browser tab, closed before the server stops; it records every error."""
    context = browser.new_context(viewport={"width": 1600, "height": 1000})
    tab = context.new_page()
    watched = Watched()
    tab.on("console", lambda m: m.type == "error" and watched.console.append(m.text))
    tab.on("pageerror", lambda exc: watched.console.append(str(exc)))
    # A request the page itself gave up by navigating away (the `/version` poll when the
    # lead picker reloads the page) is aborted by the browser, not failed by the server.
    tab.on(
        "requestfailed",
        lambda r: r.failure != "net::ERR_ABORTED" and watched.failed.append(f"{r.url} {r.failure}"),
    )
    tab.on("response", lambda r: r.status >= 400 and watched.failed.append(f"{r.url} {r.status}"))
    yield tab, watched
    context.close()


def blank_frame_png(browser: Browser, width: int) -> bytes:
    """A screenshot of an empty frame of the same size: what a blank render would weigh."""
    tab = browser.new_page()
    tab.set_content(
        f'<iframe width="{width}" style="height:{FRAME_HEIGHT}px;border:1px solid '
        '#ccc;background:#fff;display:block"></iframe>'
    )
    data = tab.locator("iframe").screenshot()
    tab.close()
    return data


def frame_state(page: Page, selector: str) -> dict:
    frame = page.locator(selector).element_handle().content_frame()
    assert frame is not None, selector
    return frame.evaluate("""() => ({
        text: document.body.innerText,
        height: document.body.getBoundingClientRect().height,
        overflow: document.documentElement.scrollWidth - document.documentElement.clientWidth,
    })""")


def test_every_step_renders_in_both_frames_without_errors(
    browser: Browser, page, base_url, schedule_copy
) -> None:
    tab, watched = page
    response = tab.goto(base_url + "/", wait_until="load")
    assert response is not None and response.status == 200
    schedule = load_schedule(schedule_copy.path).schedule
    subjects = tab.locator("#inbox .subject").all_inner_texts()
    assert subjects == [step.subject for step in schedule.steps]
    assert tab.locator("#inbox .pre").first.inner_text() == f"— {schedule.steps[0].preheader}"
    blanks = {name: len(blank_frame_png(browser, width)) for name, width in WIDTHS.items()}
    for step in schedule.steps:
        for name, width in WIDTHS.items():
            selector = f"section#{step.id} iframe.{name}"
            frame = tab.locator(selector)
            assert frame.evaluate("e => e.clientWidth") == width
            state = frame_state(tab, selector)
            assert state["text"].startswith("Evergreen Acupuncture\n"), state["text"][:80]
            assert "Hi Alex," in state["text"] and "Unsubscribe" in state["text"]
            assert state["height"] > 400
            assert state["overflow"] <= 0, f"{step.id} scrolls sideways at {width} px"
            shot = frame.screenshot()
            # The frame and its 1 px border, give or take a pixel of sub-pixel positioning.
            shot_width, shot_height = png_size(shot)
            assert abs(shot_width - (width + 2)) <= 1 and abs(shot_height - FRAME_HEIGHT - 2) <= 1
            assert len(shot) > 4 * blanks[name], f"{step.id} at {width} px looks blank"
        text_part = tab.locator(f"section#{step.id} pre.text").inner_text()
        assert text_part.startswith("Evergreen Acupuncture") and "Hi Alex," in text_part
    assert watched.console == [] and watched.failed == []


def test_lead_picker_personalises_every_frame(page, base_url) -> None:
    tab, watched = page
    tab.goto(base_url + "/", wait_until="load")
    options = tab.locator("#lead option").all_inner_texts()
    assert options[:2] == ["Alex (sample)", "no first name (shows the fallback)"]
    assert "Priya <priya@example.com>" in options  # a lead from the store
    for label, greeting in (
        ("Priya <priya@example.com>", "Hi Priya,"),
        ("no first name (shows the fallback)", "Hi there,"),
    ):
        with tab.expect_navigation(wait_until="load"):
            tab.select_option("#lead", label=label)
        assert tab.locator("#lead option:checked").inner_text() == label
        for name in WIDTHS:
            assert greeting in frame_state(tab, f"section#faqs iframe.{name}")["text"]
        assert greeting in tab.locator("section#booking pre.text").inner_text()
    assert watched.console == [] and watched.failed == []


def test_an_edit_on_disk_shows_up_without_a_restart(page, base_url, schedule_copy) -> None:
    tab, watched = page
    tab.goto(base_url + "/", wait_until="load")
    template = schedule_copy.templates / "process.html.j2"
    template.write_text(
        template.read_text(encoding="utf-8").replace(
            "{% block body %}", "{% block body %}\n<p>Fresh from the editor.</p>", 1
        ),
        encoding="utf-8",
    )
    with tab.expect_navigation(wait_until="load", timeout=15_000):
        pass  # the page polls /version and reloads itself
    assert "Fresh from the editor." in frame_state(tab, "section#process iframe.mobile")["text"]
    schedule_copy.edit(
        "subject: What an acupuncture session is really like",
        "subject: Inside a real acupuncture session",
    )
    with tab.expect_navigation(wait_until="load", timeout=15_000):
        pass
    assert "Inside a real acupuncture session" in tab.locator("#inbox").inner_text()
    assert watched.console == [] and watched.failed == []


def test_a_broken_template_shows_its_file_and_line(page, base_url, schedule_copy) -> None:
    tab, _ = page
    template = schedule_copy.templates / "faqs.html.j2"
    good = template.read_text(encoding="utf-8")
    lines = good.splitlines()
    lines.insert(4, "{% if %}")  # becomes line 5
    template.write_text("\n".join(lines) + "\n", encoding="utf-8")
    response = tab.goto(base_url + "/", wait_until="load")
    assert response is not None and response.status == 500
    problem = tab.locator("#problems").inner_text()
    assert "templates/emails/faqs.html.j2, line 5" in problem
    assert "Expected an expression" in problem or "expression" in problem.lower()
    assert "Traceback" not in tab.content()
    assert tab.locator("iframe").count() == 0
    template.write_text(good, encoding="utf-8")  # fixed: the page recovers by itself
    with tab.expect_navigation(wait_until="load", timeout=15_000):
        pass
    assert tab.locator("#problems").count() == 0
    assert tab.locator("#inbox .subject").count() == 5


def test_a_broken_schedule_shows_its_line(page, base_url, schedule_copy) -> None:
    tab, _ = page
    line = schedule_copy.line_of("    delay: 7d")
    schedule_copy.edit("    delay: 7d", "    delay: 7x")
    tab.goto(base_url + "/", wait_until="load")
    problem = tab.locator("#problems").inner_text()
    assert f"schedules.yaml, line {line}: step 2 (pain-types): delay: '7x' is not a" in problem
    assert "Traceback" not in tab.content()


def test_frames_and_text_over_http(base_url) -> None:
    with httpx.Client(base_url=base_url, timeout=10) as client:
        html = client.get("/email/booking.html", params={"lead": "sample-1"})
        assert html.status_code == 200 and "text/html" in html.headers["content-type"]
        assert "Hi Alex," in html.text
        text = client.get("/email/booking.txt", params={"lead": "sample-2"})
        assert text.headers["content-type"].startswith("text/plain")
        assert "Hi there," in text.text
        assert client.get("/email/nope.html").status_code == 404
        assert client.get("/version").json()["version"]


def test_preview_serve_command(schedule_copy, tmp_path: Path) -> None:
    """The real command: `run.py preview --serve --port P` answers on 127.0.0.1."""
    port = free_port()
    process = start_run_py(
        "--schedule",
        str(schedule_copy.path),
        "preview",
        "--serve",
        "--port",
        str(port),
        env={"CAMPAIGN_DB": f"sqlite:///{tmp_path / 'absent.db'}"},
        cwd=tmp_path,
    )
    try:
        wait_listening(process, f"http://127.0.0.1:{port}/")
        page = httpx.get(f"http://127.0.0.1:{port}/", timeout=2)
        assert page.status_code == 200
        assert "How acupuncture eases back pain" in page.text
    finally:
        process.terminate()
        process.wait(timeout=10)
    assert not (tmp_path / "absent.db").exists(), "previewing must not create a database"
