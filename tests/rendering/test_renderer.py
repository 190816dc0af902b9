"""Rendering each step: article facts, inlined CSS, a clean text part, safe personalisation,
a well-formed MIME message, template errors that name file and line, and one inlining per step."""

from __future__ import annotations

import email
import email.policy
import re
from datetime import UTC, datetime
from email.message import EmailMessage

import lxml.html
import pytest

import campaign.rendering.renderer
from campaign.config.schedule import ScheduleError, load_schedule
from campaign.rendering.renderer import LeadView, Links, RenderedEmail, Renderer, TemplateProblem
from harness.schedule import REPO

STEPS = ["mechanisms", "pain-types", "process", "faqs", "booking"]
BOOKING_URL = "https://evergreen-acupuncture.example.com/book"
UNSUBSCRIBE_URL = "https://links.example.com/u/abc123"
NOW = datetime(2025, 3, 3, 15, 0, tzinfo=UTC)
LEAD = LeadView(email="sam@example.org", first_name="Sam")
HTML_TAG = re.compile(r"<[a-zA-Z/][^>]*>")
PLACEHOLDER = re.compile(r"PH[0-9a-f]*x\d+x")


@pytest.fixture(scope="module")
def renderer() -> Renderer:
    return Renderer(load_schedule(REPO / "schedules.yaml"))


def render(renderer: Renderer, step: str, lead: LeadView = LEAD) -> RenderedEmail:
    return renderer.render(step, lead, Links(unsubscribe=UNSUBSCRIBE_URL), now=NOW)


def parsed(rendered: RenderedEmail) -> EmailMessage:
    return email.message_from_bytes(rendered.message.as_bytes(), policy=email.policy.default)


# --- each email carries its article facts -------------------------------------------------

FACTS = {
    "mechanisms": ["Qi", "meridians", "endorphins"],
    "pain-types": ["sciatica", "herniated discs", "muscle strain"],
    "process": ["20", "30", "minutes", "mild tingling"],
    "faqs": ["12", "sessions", "bruising", "licensed"],
    "booking": ["Book your first session", BOOKING_URL],
}


@pytest.mark.parametrize("step", STEPS)
def test_text_part_carries_the_article_facts(renderer: Renderer, step: str) -> None:
    text = render(renderer, step).text
    for fact in FACTS[step]:
        assert fact.lower() in text.lower(), f"{step}: {fact!r} missing from the text part"
    assert "Hi Sam," in text


def test_case_sensitive_facts(renderer: Renderer) -> None:
    assert "Qi" in render(renderer, "mechanisms").text
    assert "20–30 minutes" in render(renderer, "process").text
    assert "12 weekly sessions" in render(renderer, "faqs").text


def test_booking_link_carries_utm_parameters(renderer: Renderer) -> None:
    text = " ".join(render(renderer, "booking").text.split())  # the address has its own line
    assert f"Book your first session ({BOOKING_URL}?utm_source=nurture" in text, text
    assert "utm_content=booking" in text


# --- inlined HTML -------------------------------------------------------------------------


def _plain_class_rules() -> dict[str, list[str]]:
    """`.name { prop: value; ... }` rules of the layout's <style>, outside the @media block."""
    layout = (REPO / "templates/emails/layout.html.j2").read_text()
    css = layout[layout.index("<style>") : layout.index("@media")]
    rules = re.findall(r"^\s*\.([\w-]+)\s*\{([^}]*)\}", css, re.M)
    return {
        name: [d.split(":")[0].strip() for d in body.split(";") if ":" in d] for name, body in rules
    }


# The property that proves each class's rule reached the element.
EXPECTED_PROPERTY = {
    "masthead": "background-color",
    "content": "padding",
    "footer": "font-size",
    "button": "background-color",
    "card": "border-left",
    "preheader": "display",
}


def _style(element: lxml.html.HtmlElement) -> dict[str, str]:
    style = element.get("style") or ""
    return {
        k.strip().lower(): v.strip()
        for k, _, v in (d.partition(":") for d in style.split(";"))
        if k.strip()
    }


@pytest.mark.parametrize("step", STEPS)
def test_class_styles_are_inlined(renderer: Renderer, step: str) -> None:
    rules = _plain_class_rules()
    assert set(EXPECTED_PROPERTY) <= set(rules), rules
    doc = lxml.html.document_fromstring(render(renderer, step).html)
    body = doc.find("body")
    assert body is not None
    seen: set[str] = set()
    for element in body.iter():
        for name in (element.get("class") or "").split():
            if name not in rules:
                continue
            seen.add(name)
            style = _style(element)
            assert style, f"{step}: <{element.tag} class={name!r}> has no inline style"
            # Every property of the class rule ends up inline on the element.
            for prop in rules[name]:
                assert prop in style, f"{step}: .{name} lost {prop!r}: {element.get('style')}"
    for name in ("masthead", "content", "footer", "preheader"):
        assert name in seen, f"{step}: no element with class {name!r}"
    if step == "booking":
        assert "button" in seen
    for name in seen & set(EXPECTED_PROPERTY):
        element = body.find_class(name)[0]
        assert EXPECTED_PROPERTY[name] in _style(element), (name, element.get("style"))
    button = body.find_class("button")
    if button:
        assert _style(button[0])["background-color"] == "#bb4f38"  # 4.9:1 under white text


@pytest.mark.parametrize("step", STEPS)
def test_media_query_survives_in_a_style_element(renderer: Renderer, step: str) -> None:
    doc = lxml.html.document_fromstring(render(renderer, step).html)
    styles = [s.text_content() for s in doc.iter("style")]
    assert any("@media" in s and "max-width: 620px" in s for s in styles), styles
    assert not any(re.search(r"(^|\})\s*\.content\s*\{\s*padding:\s*32px", s) for s in styles)


@pytest.mark.parametrize("step", STEPS)
def test_text_part_is_plain_and_no_placeholders_remain(renderer: Renderer, step: str) -> None:
    rendered = render(renderer, step)
    tags = HTML_TAG.findall(rendered.text)
    assert not tags, f"{step}: HTML tags in the text part: {tags[:5]}"
    for part, value in (("subject", rendered.subject), ("html", rendered.html)):
        assert not PLACEHOLDER.search(value), f"{step}: placeholder left in {part}"
    assert not PLACEHOLDER.search(rendered.text), f"{step}: placeholder left in text"
    assert UNSUBSCRIBE_URL in rendered.text and UNSUBSCRIBE_URL in rendered.html
    assert "12 Willow Street, Springfield, IL 62701, USA" in rendered.text
    # The hidden preheader belongs in the HTML only.
    preheader = renderer.schedule.step(step).preheader
    assert preheader not in rendered.text
    assert preheader in rendered.html


# --- personal values are data, never markup, template source or headers ------------------


def test_script_in_a_name_is_escaped_in_html(renderer: Renderer) -> None:
    lead = LeadView(email="x@example.org", first_name="<script>alert(1)</script>")
    for step in STEPS:
        rendered = render(renderer, step, lead)
        assert "<script>alert(1)</script>" not in rendered.html, step
        assert "&lt;script&gt;alert(1)&lt;/script&gt;" in rendered.html, step
        assert "<script" not in rendered.html.lower(), step


def test_template_syntax_in_a_name_prints_literally(renderer: Renderer) -> None:
    lead = LeadView(email="x@example.org", first_name="{{ 7*7 }}")
    rendered = render(renderer, "mechanisms", lead)
    assert "Hi {{ 7*7 }}," in rendered.text
    assert "Hi {{ 7*7 }}," in rendered.html
    assert "49" not in rendered.text and "49" not in rendered.html


def test_line_breaks_in_a_name_do_not_inject_headers(renderer: Renderer) -> None:
    lead = LeadView(email="eve@example.org", first_name="Eve\r\nBcc: victim@example.com")
    rendered = render(renderer, "mechanisms", lead)
    raw = rendered.message.as_bytes()
    head = raw.split(b"\r\n\r\n", 1)[0]
    names = [
        line.split(b":", 1)[0].lower() for line in head.split(b"\r\n") if line[:1] not in b" \t"
    ]
    assert b"bcc" not in names, head.decode()
    assert names.count(b"to") == 1, head.decode()
    message = parsed(rendered)
    assert message["Bcc"] is None
    to = message["To"]
    assert len(to.addresses) == 1, str(to)
    assert to.addresses[0].addr_spec == "eve@example.org"
    assert "victim@example.com" not in [a.addr_spec for a in to.addresses]
    assert "\r" not in rendered.text.split("Hi ", 1)[1].split(",", 1)[0]


def test_line_breaks_in_a_step_subject_are_refused(schedule_copy) -> None:
    schedule_copy.edit(
        "subject: What an acupuncture session is really like",
        'subject: "What an acupuncture session\\r\\nBcc: victim@example.com"',
    )
    with pytest.raises(ScheduleError) as caught:
        load_schedule(schedule_copy.path)
    issues = [i for i in caught.value.issues if i.field == "steps[2].subject"]
    assert issues, str(caught.value)
    assert issues[0].line == schedule_copy.line_of('subject: "What an acupuncture session')
    assert "one line" in issues[0].message


def test_fallback_greeting_for_a_lead_without_a_name(renderer: Renderer) -> None:
    rendered = render(renderer, "mechanisms", LeadView(email="anon@example.org"))
    assert "Hi there," in rendered.text
    assert "Hi there," in rendered.html
    assert str(parsed(rendered)["To"]) == "anon@example.org"


# --- the MIME message ---------------------------------------------------------------------


@pytest.mark.parametrize("step", STEPS)
def test_message_uses_crlf_line_endings_only(renderer: Renderer, step: str) -> None:
    raw = render(renderer, step).message.as_bytes()
    assert b"\r\n" in raw
    assert not re.search(rb"(?<!\r)\n", raw), f"{step}: bare LF in the message"
    assert not re.search(rb"\r(?!\n)", raw), f"{step}: bare CR in the message"
    assert max(len(line) for line in raw.split(b"\r\n")) <= 998


@pytest.mark.parametrize("step", STEPS)
def test_message_structure_and_headers(renderer: Renderer, step: str) -> None:
    rendered = render(renderer, step)
    message = parsed(rendered)
    assert message.get_content_type() == "multipart/alternative"
    parts = list(message.iter_parts())
    assert [p.get_content_type() for p in parts] == ["text/plain", "text/html"]
    assert parts[0].get_content().replace("\r\n", "\n") == rendered.text
    assert parts[1].get_content().replace("\r\n", "\n") == rendered.html.replace("\r\n", "\n")
    for header in ("Message-ID", "Date", "From", "To", "Reply-To", "Subject", "List-Unsubscribe"):
        assert message[header], f"{step}: no {header} header"
    assert message["Subject"] == rendered.subject == renderer.schedule.step(step).subject
    assert str(message["To"]) == "Sam <sam@example.org>"
    assert message["From"].addresses[0].addr_spec == "care@evergreen-acupuncture.example.com"
    assert str(message["Reply-To"]) == "frontdesk@evergreen-acupuncture.example.com"
    assert message["Date"].datetime == NOW
    assert re.fullmatch(r"<[0-9a-f]+@evergreen-acupuncture\.example\.com>", message["Message-ID"])
    assert f"<{UNSUBSCRIBE_URL}>" in message["List-Unsubscribe"]
    assert message["List-Unsubscribe-Post"] == "List-Unsubscribe=One-Click"


def test_each_message_gets_its_own_message_id(renderer: Renderer) -> None:
    ids = {parsed(render(renderer, "faqs"))["Message-ID"] for _ in range(5)}
    assert len(ids) == 5


# --- broken templates name the file and line ----------------------------------------------


def _break_mechanisms(schedule_copy, old: str, new: str) -> tuple[Renderer, int]:
    path = schedule_copy.templates / "mechanisms.html.j2"
    source = path.read_text()
    assert old in source
    source = source.replace(old, new, 1)
    path.write_text(source)
    line = source[: source.index(new)].count("\n") + 1
    return Renderer(load_schedule(schedule_copy.path)), line


def test_misspelt_variable_names_template_and_line(schedule_copy) -> None:
    renderer, line = _break_mechanisms(
        schedule_copy, "<p>Hi {{ lead.first_name }},</p>", "<p>Hi {{ lead.frist_name }},</p>"
    )
    with pytest.raises(TemplateProblem) as caught:
        renderer.compile("mechanisms")
    problem = caught.value
    assert problem.template == "mechanisms.html.j2", problem
    assert problem.line == line, problem
    assert "`lead.frist_name` does not exist" in problem.message, problem
    assert "Did you mean `lead.first_name`?" in problem.message, problem
    assert str(problem).startswith(
        f"templates/emails/mechanisms.html.j2:{line}: step 1 (mechanisms): "
    ), problem
    # Other steps are unaffected.
    assert renderer.compile("faqs").step.id == "faqs"


def test_unclosed_if_names_template_and_line(schedule_copy) -> None:
    renderer, _ = _break_mechanisms(
        schedule_copy,
        "<h2>What is acupuncture?</h2>",
        "{% if lead.first_name %}\n<h2>What is acupuncture?</h2>",
    )
    source = (schedule_copy.templates / "mechanisms.html.j2").read_text().splitlines()
    endblock_line = source.index("{% endblock %}") + 1
    with pytest.raises(TemplateProblem) as caught:
        renderer.compile_all()
    problem = caught.value
    assert problem.template == "mechanisms.html.j2", problem
    assert problem.line == endblock_line, problem
    assert "endif" in problem.message, problem


def test_if_without_a_condition_names_template_and_line(schedule_copy) -> None:
    renderer, line = _break_mechanisms(
        schedule_copy, "<h2>What is acupuncture?</h2>", "{% if %}<h2>What is acupuncture?</h2>"
    )
    with pytest.raises(TemplateProblem) as caught:
        renderer.compile("mechanisms")
    assert (caught.value.template, caught.value.line) == ("mechanisms.html.j2", line)


# --- inlining happens once per step, not once per lead ------------------------------------


def test_premailer_runs_once_per_step_for_many_leads(monkeypatch) -> None:
    calls: list[int] = []

    class CountingPremailer(campaign.rendering.renderer.Premailer):
        def transform(self, *args, **kwargs):
            calls.append(1)
            return super().transform(*args, **kwargs)

    monkeypatch.setattr(campaign.rendering.renderer, "Premailer", CountingPremailer)
    renderer = Renderer(load_schedule(REPO / "schedules.yaml"))
    names = set()
    for n in range(50):
        lead = LeadView(email=f"lead{n}@example.org", first_name=f"Lead{n}")
        rendered = render(renderer, "process", lead)
        assert f"Hi Lead{n}," in rendered.text
        names.add(str(parsed(rendered)["To"]))
    assert len(calls) == 1, f"premailer ran {len(calls)} times for 50 leads of one step"
    assert len(names) == 50
    render(renderer, "faqs")
    assert len(calls) == 2


def test_a_subject_that_changes_what_it_is_given_changes_only_its_own_email(
    schedule_copy,
) -> None:
    schedule_copy.edit(
        "subject: How acupuncture eases back pain",
        "subject: \"{{ clinic.name }}{{ clinic.update(name='Hijacked') or '' }}\"",
    )
    renderer = Renderer(load_schedule(schedule_copy.path))
    clinic = renderer.schedule.clinic.name
    subjects = [render(renderer, "mechanisms").subject for _ in range(2)]
    assert subjects == [clinic, clinic]
