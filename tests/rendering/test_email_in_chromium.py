"""The shipped emails as received, opened in Chromium the way mail programs show them: at
600 px (desktop) and 375 px (a phone), with their `<style>` block and without it (some mobile
clients strip it, leaving only the inlined styles), in light and dark mode.

Each rendering must fit its width (no sideways scrolling, checked on the screenshot too), not
be blank, keep the same side padding in masthead, body and footer, and every piece of text
must meet WCAG AA contrast (4.5:1; 3:1 for large text) in the colours Chromium actually
computed, against the background actually behind it.
"""

from __future__ import annotations

import email
import email.policy
from collections.abc import Iterator
from email.message import EmailMessage

import lxml.html
import pytest
from playwright.sync_api import Browser, Page

from harness.browser import NEEDS_CHROMIUM, launched_chromium, png_size
from harness.mail import html_part
from harness.shipped import send_shipped_series

STEPS = ["mechanisms", "pain-types", "process", "faqs", "booking"]
WIDTHS = (600, 375)
HEIGHT = 800

pytestmark = NEEDS_CHROMIUM

# For each element with text of its own: its colour, the first opaque background behind it
# (walking up to the canvas), and whether WCAG counts it as large text.
TEXT_COLOURS = """() => {
  const rgba = s => (s.match(/[\\d.]+/g) || []).map(Number);
  const backdrop = el => {
    for (let e = el; e; e = e.parentElement) {
      const c = rgba(getComputedStyle(e).backgroundColor);
      if (c.length === 3 || (c.length === 4 && c[3] === 1)) return c.slice(0, 3);
    }
    const canvas = matchMedia('(prefers-color-scheme: dark)').matches
      && getComputedStyle(document.documentElement).colorScheme.includes('dark');
    return canvas ? [18, 18, 18] : [255, 255, 255];
  };
  const found = [];
  for (const el of document.body.querySelectorAll('*')) {
    const own = [...el.childNodes].filter(n => n.nodeType === 3 && n.textContent.trim());
    if (!own.length || !el.getClientRects().length) continue;
    const box = el.getBoundingClientRect();
    if (box.width === 0 || box.height === 0) continue;
    const style = getComputedStyle(el);
    if (style.visibility === 'hidden' || Number(style.opacity) === 0) continue;
    const size = parseFloat(style.fontSize), bold = Number(style.fontWeight) >= 700;
    found.push({
      text: own.map(n => n.textContent.trim()).join(' ').slice(0, 40),
      colour: rgba(style.color).slice(0, 3),
      background: backdrop(el),
      large: size >= 24 || (bold && size >= 18.66),
    });
  }
  return found;
}"""

PADDINGS = """() => Object.fromEntries(['masthead', 'content', 'footer'].map(name => {
  const style = getComputedStyle(document.querySelector('.' + name));
  return [name, [style.paddingLeft, style.paddingRight]];
}))"""


def luminance(rgb: list[float]) -> float:
    """WCAG 2 relative luminance of an sRGB colour."""
    channels = [c / 255 for c in rgb]
    linear = [c / 12.92 if c <= 0.04045 else ((c + 0.055) / 1.055) ** 2.4 for c in channels]
    return 0.2126 * linear[0] + 0.7152 * linear[1] + 0.0722 * linear[2]


def contrast(a: list[float], b: list[float]) -> float:
    light, dark = sorted((luminance(a), luminance(b)), reverse=True)
    return (light + 0.05) / (dark + 0.05)


def test_contrast_formula_matches_wcag() -> None:
    assert round(contrast([0, 0, 0], [255, 255, 255]), 1) == 21.0
    assert round(contrast([255, 255, 255], [0x76, 0x76, 0x76]), 2) == 4.54  # the AA grey


def without_style(html: str) -> str:
    """The email as a client that strips `<style>` shows it: inlined styles only."""
    doc = lxml.html.document_fromstring(html)
    for style in list(doc.iter("style")):
        style.drop_tree()
    return lxml.html.tostring(doc, doctype="<!DOCTYPE html>", encoding="unicode")


@pytest.fixture(scope="module")
def emails(tmp_path_factory: pytest.TempPathFactory) -> dict[str, str]:
    raw = send_shipped_series(tmp_path_factory.mktemp("sent"))
    parsed = {s: email.message_from_bytes(b, policy=email.policy.default) for s, b in raw.items()}
    assert all(isinstance(m, EmailMessage) for m in parsed.values())
    return {step: html_part(m) for step, m in parsed.items() if isinstance(m, EmailMessage)}


@pytest.fixture(scope="module")
def browser() -> Iterator[Browser]:
    yield from launched_chromium()


def opened(browser: Browser, html: str, width: int, scheme: str = "light") -> Page:
    page = browser.new_page(viewport={"width": width, "height": HEIGHT}, color_scheme=scheme)  # type: ignore[arg-type]
    page.set_content(html, wait_until="load")
    return page


@pytest.mark.parametrize("styled", [True, False], ids=["with-style", "style-stripped"])
@pytest.mark.parametrize("width", WIDTHS)
def test_fits_the_screen_and_is_not_blank(
    browser: Browser, emails: dict[str, str], width: int, styled: bool
) -> None:
    blank = opened(browser, "<!DOCTYPE html><body></body>", width)
    blank_size = len(blank.screenshot(full_page=True))
    blank.close()
    for step in STEPS:
        page = opened(browser, emails[step] if styled else without_style(emails[step]), width)
        scroll = page.evaluate("document.scrollingElement.scrollWidth")
        assert scroll <= width, f"{step} scrolls sideways at {width} px: {scroll} px wide"
        shot = page.screenshot(full_page=True)
        shot_width, shot_height = png_size(shot)
        assert shot_width == width, f"{step}: screenshot {shot_width} px wide at {width} px"
        assert shot_height > 600, f"{step}: only {shot_height} px tall"
        assert len(shot) > 5 * blank_size, f"{step} at {width} px looks blank"
        page.close()


@pytest.mark.parametrize("styled", [True, False], ids=["with-style", "style-stripped"])
@pytest.mark.parametrize("width", WIDTHS)
def test_masthead_body_and_footer_share_their_side_padding(
    browser: Browser, emails: dict[str, str], width: int, styled: bool
) -> None:
    for step in STEPS:
        page = opened(browser, emails[step] if styled else without_style(emails[step]), width)
        paddings = page.evaluate(PADDINGS)
        page.close()
        assert len({tuple(p) for p in paddings.values()}) == 1, (step, width, paddings)
        if styled and width < 600:  # the phone layout narrows them
            assert paddings["content"] == ["20px", "20px"], (step, width, paddings)


@pytest.mark.parametrize("scheme", ["light", "dark"])
@pytest.mark.parametrize("styled", [True, False], ids=["with-style", "style-stripped"])
def test_every_text_meets_wcag_aa_contrast(
    browser: Browser, emails: dict[str, str], scheme: str, styled: bool
) -> None:
    failing = []
    for step in STEPS:
        page = opened(browser, emails[step] if styled else without_style(emails[step]), 600, scheme)
        texts = page.evaluate(TEXT_COLOURS)
        page.close()
        assert len(texts) > 10, step
        for text in texts:
            ratio = contrast(text["colour"], text["background"])
            if ratio < (3.0 if text["large"] else 4.5):
                failing.append(f"{step}: {text['text']!r} {ratio:.2f}:1 {text}")
    assert not failing, "\n".join(failing)


def test_dark_mode_changes_the_colours(browser: Browser, emails: dict[str, str]) -> None:
    backgrounds = {}
    for scheme in ("light", "dark"):
        page = opened(browser, emails["booking"], 600, scheme)
        backgrounds[scheme] = page.evaluate(
            "getComputedStyle(document.querySelector('.container')).backgroundColor"
        )
        page.close()
    assert backgrounds["light"] != backgrounds["dark"], backgrounds


def test_the_preheader_is_not_shown(browser: Browser, emails: dict[str, str]) -> None:
    for step in STEPS:
        page = opened(browser, emails[step], 375)
        shown = page.evaluate("document.body.innerText")
        box = page.evaluate("document.querySelector('.preheader').getBoundingClientRect().height")
        page.close()
        assert box == 0, step
        assert "Evergreen Acupuncture" in shown.split("\n", 1)[0], shown[:80]
