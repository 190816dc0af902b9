"""Hostile input: broken or malicious schedules, templates, CSV files and lead fields.

Each case must end in a clear error that names where the problem is (file, line, field),
a non-zero exit from the command line, and no change to any other lead's data or state.
Cases already covered by test_schedule.py, test_render.py and test_leads_import.py (tabs,
duplicate keys, the 1 MB limit, bad delays, a misspelt field, `<script>` in a name, a
Latin-1 row, a missing `email` column) are not repeated here.
"""

from __future__ import annotations

import re
import time
from datetime import UTC, datetime
from email import message_from_bytes
from email.policy import default as default_policy

import pytest
from click.testing import Result
from hypothesis import given, settings
from hypothesis import strategies as st

from campaign.config.schedule import ScheduleError, load_schedule
from campaign.devtools.catcher import Catcher
from campaign.leads.intake import first_delivery
from campaign.model import NewLead
from campaign.rendering.renderer import LeadView, Links, Renderer, TemplateProblem
from harness.cli import invoke
from harness.clock import NO_HANG, T0
from harness.rig import Rig
from harness.schedule import REPO, set_yaml_block

HEADING = "<h2>What is acupuncture?</h2>"


def cli(rig: Rig, *args: str, port: int = 1) -> Result:
    env = {"CAMPAIGN_DB": rig.url, "CAMPAIGN_SMTP_PORT": str(port)}
    return invoke("--schedule", str(rig.schedule_path), *args, env=env)


@pytest.fixture
def rig(schedule_copy, tmp_path) -> Rig:
    set_yaml_block(schedule_copy.path, "rate_limit", "  per_connection: 100")
    rig = Rig(schedule_copy.path, tmp_path / "campaign.db")
    rig.add("ann@example.com", name="Ann", plan="gold")
    rig.add("bob@example.com", name="Bob")
    return rig


# --- schedules.yaml: wrong types, huge numbers, zero and negative values -------------------

YAML_CASES = {
    # name: (old text, new text, field, words in the message)
    "steps-not-a-list": ("steps:\n", "steps: 5\nold_steps:\n", "steps", "steps must be a list"),
    "attempts-as-words": (
        "  attempts: 6",
        "  attempts: six",
        "retry.attempts",
        "must be a whole number",
    ),
    "rate-as-a-list": (
        "  per_second: 20",
        "  per_second: [20]",
        "rate_limit.per_second",
        "rate_limit.per_second must be a number",
    ),
    "days-as-a-boolean": (
        "days: [mon, tue, wed, thu, fri]",
        "days: yes",
        "send_window.days",
        "send_window.days must be a list",
    ),
    "subject-as-a-mapping": (
        "subject: How acupuncture eases back pain",
        "subject: {a: 1}",
        "steps[0].subject",
        "subject must be text",
    ),
    "start-as-a-date": (
        'start: "09:00"',
        "start: 2024-01-01",
        "send_window.start",
        "must be a time of day like 09:00",
    ),
    "python-object-tag": (
        "  per_second: 20",
        "  per_second: !!python/object/apply:os.system ['echo pwned']",
        "rate_limit.per_second",
        "must be a number",
    ),
    "huge-integer": (
        "  per_hour: 20000",
        "  per_hour: " + "9" * 60,
        "rate_limit.per_hour",
        "rate_limit.per_hour must be at most 10000000",
    ),
    "infinite-float": (
        "  per_second: 20",
        "  per_second: 1.0e+400",
        "rate_limit.per_second",
        "rate_limit.per_second must be at most 10000",
    ),
    "huge-delay": (
        "first_delay: 1m",
        "first_delay: 999999w",
        "retry.first_delay",
        "longer than ten years",
    ),
    "huge-bare-number-delay": (
        "max_delay: 6h",
        "max_delay: 100000000",
        "retry.max_delay",
        "far too long",
    ),
    "negative-retry-delay": (
        "first_delay: 1m",
        "first_delay: -1m",
        "retry.first_delay",
        "is not a delay",
    ),
    "zero-attempts": (
        "  attempts: 6",
        "  attempts: 0",
        "retry.attempts",
        "retry.attempts must be at least 1",
    ),
    "zero-rate": (
        "  per_second: 20",
        "  per_second: 0",
        "rate_limit.per_second",
        "must be more than 0",
    ),
    "negative-per-connection": (
        "  per_connection: 100",
        "  per_connection: -5",
        "rate_limit.per_connection",
        "rate_limit.per_connection must be more than 0",
    ),
}


@pytest.mark.parametrize("case", list(YAML_CASES))
def test_hostile_schedule_values_are_named_by_line_and_field(schedule_copy, case: str) -> None:
    old, new, field, words = YAML_CASES[case]
    schedule_copy.edit(old, new)
    line = schedule_copy.line_of(new.strip().splitlines()[0])
    with pytest.raises(ScheduleError) as caught:
        load_schedule(schedule_copy.path)
    found = [i for i in caught.value.issues if i.field == field]
    assert found, str(caught.value)
    assert found[0].line == line, str(found[0])
    assert words in found[0].message, str(found[0])
    # A step's own settings are named by the step, counted from 1, then the setting.
    named = "step 1 (mechanisms): subject" if field.startswith("steps[0]") else field
    assert str(found[0]).startswith(f"schedules.yaml:{line}: {named}"), str(found[0])


def test_ten_megabyte_schedule_is_refused_quickly_by_the_cli(rig: Rig) -> None:
    rig.schedule_path.write_text(rig.schedule_path.read_text() + "#" * 10_000_000 + "\n")
    started = time.perf_counter()
    result = cli(rig, "schedule", "check")
    assert time.perf_counter() - started < NO_HANG
    assert result.exit_code == 2, result.output
    assert "schedules.yaml: is larger than 1000 kB" in result.stderr, result.stderr


# --- templates: sandbox escapes, resource bombs, loops, unknown names ---------------------

TEMPLATE_CASES = {
    # name: (what replaces nothing but is inserted before the heading, words in the error)
    "str-mro": ("{{ ''.__class__.__mro__ }}", "unsafe"),
    "cycler-globals": ("{{ cycler.__init__.__globals__ }}", "unsafe"),
    "lipsum-globals": ("{{ lipsum.__globals__['os'].system('id') }}", "unsafe"),
    "subclasses": (
        "{% for c in [].__class__.__base__.__subclasses__() %}{{ c }}{% endfor %}",
        "unsafe",
    ),
    "format-string": ("{{ '{0.__class__.__init__.__globals__}'.format(clinic) }}", "unsafe"),
    "template-context": ("{{ self._TemplateReference__context }}", "unsafe"),
    "attr-filter": ("{{ lead|attr('__class__') }}", "unsafe"),
    "huge-range": ("{% for i in range(10**9) %}{% endfor %}", "Range too big"),
    "huge-string": ("{{ 'x' * 10**10 }}", "would build more than"),
    "huge-list": ("{{ [1, 2] * 10**9 }}", "would build more than"),
    "huge-power": ("{{ 9 ** 999999999 }}", "too large"),
    "unknown-variable": ("{{ favourite_colour }}", "`favourite_colour` is not a name"),
    "unknown-clinic-field": ("{{ clinic.phone }}", "`clinic.phone` does not exist"),
    "unknown-lead-field": ("{{ lead.nickname }}", "`lead.nickname` does not exist"),
    "missing-include": ('{% include "nope.html.j2" %}', "'nope.html.j2' not found"),
    "include-itself": ('{% include "mechanisms.html.j2" %}', "in a loop"),
}


def break_template(rig: Rig, snippet: str, name: str = "mechanisms.html.j2") -> int:
    path = rig.schedule_path.parent / "templates" / "emails" / name
    source = path.read_text()
    assert HEADING in source
    path.write_text(source.replace(HEADING, f"{snippet}\n{HEADING}", 1))
    return source[: source.index(HEADING)].count("\n") + 1


@pytest.mark.parametrize("case", list(TEMPLATE_CASES))
def test_hostile_template_is_refused_naming_file_and_line(rig: Rig, case: str) -> None:
    snippet, words = TEMPLATE_CASES[case]
    line = break_template(rig, snippet)
    started = time.perf_counter()
    with pytest.raises(TemplateProblem) as caught:
        Renderer(load_schedule(rig.schedule_path)).compile_all()
    assert time.perf_counter() - started < NO_HANG, "refusing took too long"
    problem = caught.value
    assert problem.template == "mechanisms.html.j2", problem
    assert problem.line in (line, None), problem
    if words not in ("in a loop", "'nope.html.j2' not found"):
        assert problem.line == line, problem  # the line is known for everything but loops
    assert words in problem.message, problem
    result = cli(rig, "schedule", "check")
    assert result.exit_code == 2, result.output
    stderr = " ".join(result.stderr.split())
    assert f"problem(s) in the templates: {' '.join(str(problem).split())}" in stderr, stderr


def test_templates_including_each_other_in_a_loop(rig: Rig) -> None:
    folder = rig.schedule_path.parent / "templates" / "emails"
    (folder / "ping.html.j2").write_text('{% include "pong.html.j2" %}')
    (folder / "pong.html.j2").write_text('{% include "ping.html.j2" %}')
    break_template(rig, '{% include "ping.html.j2" %}')
    with pytest.raises(TemplateProblem) as caught:
        Renderer(load_schedule(rig.schedule_path)).compile("mechanisms")
    assert "mechanisms.html.j2" in str(caught.value) and "loop" in str(caught.value)


def test_layout_extending_a_step_that_extends_it(rig: Rig) -> None:
    layout = rig.schedule_path.parent / "templates" / "emails" / "layout.html.j2"
    layout.write_text('{% extends "mechanisms.html.j2" %}\n' + layout.read_text())
    with pytest.raises(TemplateProblem) as caught:
        Renderer(load_schedule(rig.schedule_path)).compile("mechanisms")
    assert "mechanisms.html.j2" in str(caught.value) and "loop" in str(caught.value)


def test_unknown_placeholder_in_a_subject_names_the_step(rig: Rig) -> None:
    set_subject = "subject: How acupuncture eases back pain"
    text = rig.schedule_path.read_text()
    rig.schedule_path.write_text(text.replace(set_subject, 'subject: "Hi {{ lead.nickname }}"', 1))
    result = cli(rig, "schedule", "check")
    assert result.exit_code == 2, result.output
    stderr = " ".join(result.stderr.split())
    line = rig.schedule_path.read_text().splitlines().index('    subject: "Hi {{ lead.nickname }}"')
    assert (
        f"schedules.yaml:{line + 1}: step 1 (mechanisms): the subject: `lead.nickname` does not "
        "exist. There are: lead.email, lead.first_name, lead.timezone"
    ) in stderr, stderr


BOMB = "".join(
    [f"l0: &l0 [{', '.join(['lol'] * 9)}]\n"]
    + [f"l{n}: &l{n} [{', '.join([f'*l{n - 1}'] * 9)}]\n" for n in range(1, 10)]
)


@pytest.mark.parametrize(
    "breakage", ["alias-bomb", "wrong-type", "sandbox-escape", "template-loop"]
)
def test_send_due_with_a_hostile_edit_sends_nothing_and_changes_nothing(
    rig: Rig, breakage: str
) -> None:
    if breakage == "alias-bomb":
        rig.schedule_path.write_text(BOMB + rig.schedule_path.read_text())
    elif breakage == "wrong-type":
        set_yaml_block(rig.schedule_path, "retry", "  attempts: [6]")
    elif breakage == "sandbox-escape":
        break_template(rig, "{{ cycler.__init__.__globals__.os.system('id') }}")
    else:
        break_template(rig, '{% include "mechanisms.html.j2" %}')
    before = rig.snapshot()
    with Catcher() as catcher:
        result = cli(rig, "send-due", "--now", T0.isoformat(), port=catcher.port)
        assert catcher.messages == []
    assert result.exit_code == 2, result.output
    assert "schedules.yaml" in result.stderr or "mechanisms.html.j2" in result.stderr
    assert rig.snapshot() == before


# --- CSV imports ---------------------------------------------------------------------------

HOSTILE_CSV = b"".join(
    [
        "\ufeffemail,first_name,plan\n".encode(),  # 1: a byte-order mark before the header
        b"ann@example.com,Mallory,platinum\n",  # 2: an existing lead: left exactly as it was
        b"nul@example.com,Nu\x00ll,\n",  # 3
        b'crlf@example.com,"Eve\r\nBcc: victim@example.com",\n',  # 4-5
        b"big@example.com," + b"x" * 1_000_000 + b",\n",  # 6
        "latin@example.com,Jos\xe9,\n".encode("latin-1"),  # 7
        b'"""john doe""@example.com",Quoted,\n',  # 8: a quoted local part
        b"two@@example.com,Two,\n",  # 9
        b"x@example.com\r\nBcc: victim@example.com,Inject,\n",  # 10-11
        "user@b\u00fccher.example,Idn,\n".encode(),  # 12: an IDN domain: accepted
        "j\u00f6rg@example.com,J\u00f6rg,\n".encode(),  # 13: a non-ASCII local part: accepted
        b"moustache@example.com,{{ 7*7 }},\n",  # 14: accepted, printed literally later
        b"script@example.com,<script>alert(1)</script>,\n",  # 15: accepted, escaped later
    ]
)
CSV_REJECTED = {
    "3": "control characters",
    "4": "control characters",
    "6": "field larger than field limit",
    "7": "not UTF-8",
    "8": "not a valid email address",
    "9": "not a valid email address",
    "10": "has 1 fields but the header has 3",
    "11": "not a valid email address",
}
CSV_ACCEPTED = {
    "user@b\u00fccher.example": "Idn",
    "j\u00f6rg@example.com": "J\u00f6rg",
    "moustache@example.com": "{{ 7*7 }}",
    "script@example.com": "<script>alert(1)</script>",
}


def test_hostile_csv_rejects_bad_rows_by_line_and_leaves_other_leads_alone(rig: Rig) -> None:
    path = rig.db_path.parent / "hostile.csv"
    path.write_bytes(HOSTILE_CSV)
    existing = rig.snapshot()
    result = cli(rig, "leads", "import", str(path))
    assert result.exit_code == 1, result.output
    named = dict(re.findall(r"^hostile\.csv:(\d+): (.*)$", result.stderr, re.M))
    for line, words in CSV_REJECTED.items():
        assert words in named.get(line, ""), f"line {line}: {named.get(line)!r}\n{result.stderr}"
    assert len(result.stderr) < 10_000, "a 1 MB field must not be echoed back"
    assert "imported 4, already present 1" in result.stdout, result.stdout
    after = rig.snapshot()
    assert after[0][:2] == existing[0] and after[1][:2] == existing[1], "existing leads changed"
    for email, name in CSV_ACCEPTED.items():
        lead = rig.store.leads.lead_by_email(email)
        assert lead is not None and lead.first_name == name, email
    assert rig.store.leads.lead_by_email("victim@example.com") is None
    # A file without a header is refused as a whole; nothing changes.
    path.write_text("carl@example.com,Carl\n")
    result = cli(rig, "leads", "import", str(path))
    assert result.exit_code == 2 and "no 'email' column" in result.stderr, result.output
    assert rig.snapshot() == after


def test_header_injection_in_a_lead_added_on_the_command_line_is_refused(rig: Rig) -> None:
    before = rig.snapshot()
    for args in (
        ["eve@example.com", "--name", "Eve\r\nBcc: victim@example.com"],
        ["eve@example.com\r\nBcc: victim@example.com"],
        ["eve@example.com", "--attr", "plan=gold\nBcc: victim@example.com"],
    ):
        result = cli(rig, "leads", "add", *args)
        assert result.exit_code == 2, (args, result.output)
        assert "rejected" in result.stderr, result.stderr
    assert rig.snapshot() == before


# --- lead fields that reach a real SMTP server --------------------------------------------

SNEAKY = {
    # email: first name as stored (bypassing validation, as an older import might have)
    "eve@example.com": "Eve\r\nBcc: victim@example.com",
    "mallory@example.com": '"Mallory" <victim@example.com>, Trent',
    "tpl@example.com": "{{ 7*7 }}{% if true %}yes{% endif %}",
    "xss@example.com": "<script>alert(1)</script><img src=x onerror=alert(2)>",
    "sep@example.com": "Line\u2028Break\u0085Next\x0bTab\x0cFeed",
    "subj@example.com": "=?utf-8?q?Bcc=3A_victim=40example=2Ecom?=",
}


def test_lead_fields_never_become_headers_recipients_or_template_code(rig: Rig) -> None:
    schedule = rig.schedule
    planned = first_delivery(schedule, None, rig.clock.now)
    rig.store.leads.add_leads(
        [NewLead(email, name, None, {"plan": name}, planned) for email, name in SNEAKY.items()],
        schedule.campaign.id,
        rig.clock.now,
    )
    with Catcher() as catcher:
        report = rig.run(catcher.port)
        assert report.sent == len(SNEAKY) + 2 and not report.errors, report
        received = {m.recipients[0]: m for m in catcher.messages}
    assert all(len(m.recipients) == 1 for m in received.values())
    assert "victim@example.com" not in received
    for email in SNEAKY:
        message = received[email].message
        assert message["Bcc"] is None and message["Cc"] is None, email
        assert [a.addr_spec for a in message["To"].addresses] == [email], str(message["To"])
        head = received[email].data.split(b"\r\n\r\n", 1)[0]
        names = [
            line.split(b":", 1)[0].lower() for line in head.split(b"\r\n") if line[:1] not in b" \t"
        ]
        assert b"bcc" not in names and names.count(b"to") == 1, head.decode(errors="replace")
        text = message.get_body(("plain",)).get_content()
        assert f"Hi {' '.join(SNEAKY[email].split())}," in text, email
        html = message.get_body(("html",)).get_content()
        assert "<script" not in html.lower() and "<img" not in html.lower(), email
    tpl = received["tpl@example.com"].message
    for part in ("plain", "html"):
        body = tpl.get_body((part,)).get_content()
        assert "Hi {{ 7*7 }}{% if true %}yes{% endif %}," in body, part
        assert "Hi 49" not in body, part


def test_internationalised_addresses_are_delivered_over_smtputf8(rig: Rig) -> None:
    """A non-ASCII local part goes out over SMTPUTF8; an ASCII one at an international
    domain in the domain's ASCII form (IDNA), which needs no SMTPUTF8."""
    emails = [
        "j\u00f6rg@b\u00fccher.example",
        "user@b\u00fccher.example",
        "\u7528\u6237@example.com",
    ]
    on_the_wire = [emails[0], "user@xn--bcher-kva.example", emails[2]]
    rig.add(*emails, name="J\u00f6rg")
    with Catcher() as catcher:
        report = rig.run(catcher.port)
        assert report.sent == len(emails) + 2 and not report.errors, report
        received = sorted(m.recipients[0] for m in catcher.messages)
    assert received == sorted([*on_the_wire, "ann@example.com", "bob@example.com"])
    assert all(rig.row(e)["status"] == "sent" for e in emails)


# --- hypothesis: no lead input crashes the renderer ---------------------------------------

NAMES = st.text(max_size=300)
ATTRIBUTES = st.dictionaries(
    st.from_regex(r"[a-z_][a-z0-9_]{0,20}", fullmatch=True), st.text(max_size=200), max_size=4
)
EMAILS = st.sampled_from(
    ["sam@example.org", "j\u00f6rg@b\u00fccher.example", "first.last+tag@sub.example.com"]
)


@pytest.fixture(scope="module")
def shipped() -> Renderer:
    renderer = Renderer(load_schedule(REPO / "schedules.yaml"))
    renderer.compile_all()
    return renderer


@pytest.mark.slow
@settings(max_examples=200, deadline=None)
@given(
    name=NAMES,
    attributes=ATTRIBUTES,
    email=EMAILS,
    step=st.sampled_from(["mechanisms", "pain-types", "process", "faqs", "booking"]),
)
def test_no_lead_input_crashes_the_renderer(
    shipped: Renderer, name: str, attributes: dict[str, str], email: str, step: str
) -> None:
    rendered = shipped.render(
        step,
        LeadView(email, name, "", attributes),
        Links(unsubscribe="https://links.example.com/u/t"),
        now=datetime(2026, 3, 4, 16, 0, tzinfo=UTC),
    )
    assert "<script" not in rendered.html.lower()
    raw = rendered.message.as_bytes()
    assert b"\r\n" in raw and not re.search(rb"(?<!\r)\n|\r(?!\n)", raw)
    assert max(len(line) for line in raw.split(b"\r\n")) <= 998
    message = message_from_bytes(raw, policy=default_policy)
    # The parser reads raw UTF-8 (an SMTPUTF8 message) as surrogate escapes: undo that.
    to = [a.addr_spec.encode("utf-8", "surrogateescape").decode() for a in message["To"].addresses]
    assert to == [email]
    assert message["Bcc"] is None and message["Cc"] is None
    shown = " ".join(name.split())
    if shown:
        assert shown in message.get_body(("plain",)).get_content().replace("\r\n", "\n")
