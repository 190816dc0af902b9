"""The text part of an edited template: an address printed once however often it is linked,
words that HTML joins kept joined, `html-only` elements left out, and lines wrapped near 78
characters with the long tracked addresses a lead really gets."""

from __future__ import annotations

from datetime import UTC, datetime

from campaign.config.schedule import load_schedule
from campaign.rendering.renderer import LeadView, Links, Renderer
from harness.mail import URL

NOW = datetime(2026, 3, 2, 15, 0, tzinfo=UTC)
TRACKED = "https://clinic.example.com/c/" + "T" * 90  # as long as a real click token
UNSUBSCRIBE = "https://clinic.example.com/u/" + "U" * 70

EXTRA = """
<p class="html-only">Only in the HTML: the button is above.</p>
<p>Prefer the phone? <a href="{{ links.booking }}">Pick a time online</a> or
<b>call</b>. <a href="{{ links.booking }}">{{ links.booking }}</a></p>
<p>Or <a href="mailto:frontdesk@evergreen-acupuncture.example.com">write to us</a>.</p>
<ul><li>One item that goes on long enough to need a second line when it is wrapped at
seventy-eight characters, indented under its first word.</li><li>Two</li></ul>
<p>Hi {{ lead.first_name }}, this sentence is long enough that it wraps at least once when the
text part is written, and the name in it is as long as a lead may type.</p>
"""


def rendered_text(schedule_copy, first_name: str = "Sam") -> tuple[str, str]:
    template = schedule_copy.templates / "faqs.html.j2"
    source = template.read_text(encoding="utf-8")
    template.write_text(
        source.replace("{% endblock %}", EXTRA + "{% endblock %}"), encoding="utf-8"
    )
    renderer = Renderer(load_schedule(schedule_copy.path))
    links = Links(unsubscribe=UNSUBSCRIBE, click=lambda index, url: f"{TRACKED}{index}")
    email = renderer.render("faqs", LeadView("sam@example.org", first_name), links, now=NOW)
    return email.text, email.html


def test_each_address_is_printed_once(schedule_copy) -> None:
    text, html = rendered_text(schedule_copy)
    urls = [u.rstrip(".,;:") for u in URL.findall(text)]
    assert len(urls) == len(set(urls)), urls
    assert html.count(f"{TRACKED}0") >= 3, "the HTML keeps every link"
    flat = " ".join(text.split())
    assert "Prefer the phone? Pick a time online or call." in flat, flat
    assert "Or write to us (frontdesk@evergreen-acupuncture.example.com)." in flat, flat


def test_html_only_elements_stay_out_of_the_text(schedule_copy) -> None:
    text, html = rendered_text(schedule_copy)
    assert "Only in the HTML" in html
    assert "Only in the HTML" not in text


def test_lists_are_dashes_with_hanging_lines(schedule_copy) -> None:
    text, _ = rendered_text(schedule_copy)
    lines = text.splitlines()
    first = next(i for i, line in enumerate(lines) if line.startswith("- One item"))
    assert lines[first + 1].startswith("  ") and lines[first + 1].strip()
    assert any(line == "- Two" for line in lines), lines


def test_lines_stay_near_78_characters_with_real_addresses_and_names(schedule_copy) -> None:
    text, _ = rendered_text(schedule_copy, first_name="Maximiliane-Theodora")
    assert "Maximiliane-Theodora" in text
    for line in text.splitlines():
        if URL.fullmatch(line.strip().strip("().,:;")):
            continue  # an address longer than a line stands alone
        assert len(line) <= 78 + len("Maximiliane-Theodora"), line
        if "Maximiliane" not in line:
            assert len(line) <= 78, line
